"""The engine process: one per project and host; the lease makes one of them the scheduler.

    python -m core.engine --project DIR

It takes an exclusive lock on .sluice/engine.lock (one engine per project on a host), binds
the wake socket, takes the scheduler lease, recovers from a crash, then loops: tick, then
sleep until poked (a datagram), a job finishes, or the next deadline.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import selectors
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

from .. import identity
from ..definitions import DefinitionError, load_project
from ..service import record_event
from ..store.db import FENCE_LOCK, Database, LostLease, StoreError, StoreUnavailable, now, resolve_url
from ..times import beat_interval, lease_seconds
from ..wake import WakeSocket, poke
from .notify import Notifier
from .scheduler import Scheduler
from .sealing import Sealer

LEASE_SECONDS = lease_seconds()  # how long the scheduler lease lasts without renewal (tests shorten it)
IDLE_TICK = 1.0  # a safety net; wake-ups do the real work
SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another waits for it
TICK_GAP = 0.01  # at most one tick per this many seconds for our own jobs' endings


def lock_path(root: Path) -> Path:
    return root / ".sluice" / "engine.lock"


def info_path(root: Path) -> Path:
    return root / ".sluice" / "engine.json"


def engine_running(root: Path) -> dict | None:
    """The running engine's info, or None: the lock file tells without asking the database."""
    path = lock_path(root)
    if not path.exists():
        return None
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(info_path(root).read_text())
            except (OSError, ValueError):
                return {"pid": None}
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


class Lease:
    """The scheduler lease: one holder per database; the token fences a holder that lost it."""

    def __init__(self, db: Database, holder: str):
        self.db = db
        self.holder = holder
        self.token = 0
        self.expires = 0.0

    def acquire(self) -> bool:
        """Take or renew the lease. Two engines at once: the lease row is locked while one decides,
        so the other sees its decision. Taking it over from another holder also waits until no
        write of that holder is still under way (each holds FENCE_LOCK shared), so none of them
        can commit after this engine starts scheduling."""
        t = now()
        with self.db.write(fenced=False) as tx:
            if tx.execute(
                "INSERT INTO leases (name, holder, token, expires_at) VALUES ('scheduler', ?, 1, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (self.holder, t + LEASE_SECONDS),
            ):
                self.token = 1
            else:
                row = tx.one(f"SELECT * FROM leases WHERE name = 'scheduler'{tx.for_update}")
                assert row is not None
                if row["holder"] == self.holder:
                    token = row["token"]
                elif row["expires_at"] < t or _dead_local(row["holder"]):
                    tx.lock(FENCE_LOCK)
                    token = row["token"] + 1
                else:
                    return False
                tx.execute(
                    "UPDATE leases SET holder = ?, token = ?, expires_at = ? WHERE name = 'scheduler'",
                    (self.holder, token, t + LEASE_SECONDS),
                )
                self.token = token
        self.expires = t + LEASE_SECONDS
        return True

    def release(self) -> None:
        with self.db.write(fenced=False) as tx:
            tx.execute(
                "UPDATE leases SET expires_at = 0 WHERE name = 'scheduler' AND holder = ?", (self.holder,)
            )


def _dead_local(holder: str) -> bool:
    """A holder on this host whose process is gone (we hold the project's engine lock, so it is dead)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != identity.host() or not pid.isdigit():
        return False
    from ..agents.procs import proc_start

    state = None
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X") or proc_start(int(pid)) is None


class Engine:
    def __init__(self, root: Path):
        self.root = root
        self.project = load_project(root)
        self.db = Database(resolve_url(self.project.database, root), notifier=poke)
        self.db.ensure_schema()
        self.holder = f"{identity.host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = Lease(self.db, self.holder)
        self.stop_mode: str | None = None  # "drain" | "now"
        self.inner_r, self.inner_w = socket.socketpair()
        self.inner_r.setblocking(False)
        self.inner_w.setblocking(False)
        from ..service import Service

        self.service = Service(self.project, self.db)
        self.scheduler = Scheduler(
            self.db, self.project, wake=self._wake, service=self.service, lease=self.lease
        )

    def _wake(self) -> None:
        try:
            self.inner_w.send(b"!")
        except (BlockingIOError, OSError):
            pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_mode = (
            "now"
            if signum == signal.SIGINT and self.stop_mode
            else ("now" if signum == signal.SIGUSR1 else "drain")
        )
        self._wake()

    def register_agents(self) -> None:
        for agent in self.scheduler.agents:
            agent.register(takeover=True)

    def heartbeat(self) -> None:
        for agent in self.scheduler.agents:
            agent.heartbeat()
        self.scheduler.check_agents()

    def _try_acquire(self) -> bool:
        try:
            if self.lease.acquire():
                return True
            log("another engine holds the scheduler lease; waiting as standby")
        except StoreUnavailable as e:
            log(f"cannot use the store, waiting for it: {e}")
        return False

    def serve(self) -> int:
        # Job threads start processes and read pipes between the scheduler's Python work: with the
        # default 5 ms switch interval a Popen that waits three times for the GIL behind a busy
        # thread takes 15 ms instead of 0.2 ms (bench/README.md, issue 11)
        sys.setswitchinterval(SWITCH_INTERVAL)
        wake = WakeSocket(self.db.url)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # detached: a closing terminal must not stop us
        sel = selectors.DefaultSelector()
        sel.register(self.inner_r.fileno(), selectors.EVENT_READ, "inner")
        log(f"engine {self.holder} for {self.root} on {self.db.url}")
        while not self._try_acquire():
            if self.stop_mode:
                return 0
            sel.select(timeout=LEASE_SECONDS / 3)
        self.db.fence = self.scheduler.fence()  # from now on every write of this engine checks the lease
        if not wake.claim():  # a standby that took over owns the shared address from now on
            log("another process owns the wake-up address; falling back to the idle tick")
        sel.register(wake.sock, selectors.EVENT_READ, "wake")
        listener = None
        if self.db.dialect == "postgresql":  # wake-ups from other hosts
            from ..wake import PgListener

            listener = PgListener(self.db.conninfo)
            sel.register(listener, selectors.EVENT_READ, "pg")
        with self.db.write() as tx:
            record_event(
                tx, "engine.started", "sluice", f"engine started on {identity.host()} (pid {os.getpid()})"
            )
        recovered = self.scheduler.recover()
        if recovered:
            log(f"recovered {recovered} job(s) left running by a previous engine")
        self.register_agents()
        self.scheduler.start_agents()
        sealer = Sealer(self.db, log)
        sealer.start()
        notifier = Notifier(self.db, lambda: self.service.project, log)
        notifier.start()
        next_beat = 0.0
        outage: str | None = None  # why the store could not be used, while it cannot
        try:
            while True:
                t = time.monotonic()
                if t >= next_beat:
                    # A slow or locked store delays us; it does not make us give up our runs: only
                    # another engine holding the lease does (SPEC 9). Our lease may run out while we
                    # wait; no other engine took it if acquire() finds our name on it still.
                    try:
                        held = self.lease.acquire()
                        if held:
                            self.heartbeat()
                        if outage is not None:
                            log("the store is back")
                            outage = None
                            self.scheduler.store_ok_since = now()
                    except LostLease:
                        held = False
                    except StoreError as e:
                        if outage is None:
                            log(f"cannot use the store, waiting for it: {e}")
                            outage = str(e)
                        held = True
                    if not held:
                        log("another engine holds the scheduler lease; stopping")
                        self.scheduler.cancel_all("engine lost its lease")
                        return 1
                    next_beat = t + beat_interval()
                if self.stop_mode:
                    self.scheduler.draining = True
                    if self.stop_mode == "now":
                        self.scheduler.cancel_all("engine stopped")
                try:
                    last_tick = time.monotonic()
                    self.scheduler.tick()
                except LostLease as e:
                    log(f"{e}; stopping")
                    self.scheduler.cancel_all("engine lost its lease")
                    return 1
                except StoreUnavailable as e:
                    if outage is None:
                        log(f"cannot use the store, waiting for it: {e}")
                        outage = str(e)
                except StoreError as e:
                    log(f"tick failed: {e}")
                if self.stop_mode and not self.scheduler.busy and not self.scheduler.dirty:
                    break  # no job left running, and every run they finished is settled
                timeout = min(IDLE_TICK, max(0.0, next_beat - time.monotonic()))
                due = self.scheduler.next_deadline()
                if due is not None:
                    timeout = min(timeout, max(0.0, due - now()))
                outside = False
                for key, _ in sel.select(timeout=timeout):
                    if key.data == "wake":
                        wake.drain()
                        outside = True
                    elif key.data == "pg" and listener is not None:
                        listener.drain()
                        outside = True
                    else:
                        try:
                            while self.inner_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                if not outside and not self.stop_mode:
                    # woken by our own jobs ending: gather a few milliseconds of them into one tick
                    # (a release or a new run, from outside, is looked at at once)
                    gap = last_tick + TICK_GAP - time.monotonic()
                    if gap > 0:
                        time.sleep(gap)
        finally:
            self.scheduler.stop_agents()
            try:
                self.lease.release()
                with self.db.write() as tx:
                    record_event(tx, "engine.stopped", "sluice", f"engine stopped on {identity.host()}")
            except StoreError as e:
                log(f"could not record the stop: {e}")
            notifier.stop()
            sealer.stop()
            wake.close()
        return 0


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sluice-engine")
    ap.add_argument("--project", required=True)
    args = ap.parse_args(argv)
    root = Path(args.project).resolve()
    state = root / ".sluice"
    state.mkdir(parents=True, exist_ok=True)
    lock = open(lock_path(root), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("an engine is already running for this project")
        return 0
    try:
        engine = Engine(root)
    except DefinitionError as e:
        log(f"invalid definitions:\n{e}")
        return 2
    except StoreError as e:
        log(str(e))
        return 2
    info = {"pid": os.getpid(), "host": identity.host(), "started_at": now(), "url": engine.db.url}
    info_path(root).write_text(json.dumps(info))
    try:
        return engine.serve()
    finally:
        info_path(root).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
