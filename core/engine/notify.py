"""Notify hooks (SPEC 13): each matching event handed to a command, at least once.

The engine reads the events in chain order (sealed, so commit order, with no gaps) from where
it stopped, stored in `settings`, and records one delivery per (event, hook) before it runs
anything. A delivery is taken by moving its next attempt past the command's timeout, run
outside any transaction, and its outcome recorded (notify.sent, or notify.failed and a later
attempt with backoff, three in all). A success is recorded before the delivery is let go, so a
restarted engine never delivers it again; an engine that dies mid-delivery leaves it due again
once the timeout has passed (at least once). All of it in a thread of its own: a slow or
broken hook never delays the scheduler.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from ..definitions.objects import NotifyHook, Project
from ..service import record_event
from ..store.db import Database, StoreError, dumps, loads, now
from ..times import iso

# a hook running longer is stopped, and tried again
TIMEOUT_S = float(os.environ.get("SLUICE_NOTIFY_TIMEOUT", "30"))
ATTEMPTS = 3
# before the second and the third attempt (tests shorten them)
BACKOFF_S = tuple(float(x) for x in os.environ.get("SLUICE_NOTIFY_BACKOFF", "5,30").split(","))
INTERVAL_S = 0.5  # between looks at the events
BATCH = 500  # events read at a time
CURSOR = "notify.seq"


def hook_key(hook: NotifyHook) -> str:
    """A hook's identity across restarts and reloads: what it listens to and what it runs."""
    return hashlib.sha256(dumps({"on": sorted(hook.on), "run": hook.run}).encode()).hexdigest()[:16]


class Notifier:
    def __init__(
        self,
        db: Database,
        project: Callable[[], Project],
        log: Callable[[str], None],
        interval: float = INTERVAL_S,
    ):
        self.db = db
        self.project = project
        self.log = log
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
        self._failing = False
        # the first time notify is used, it starts with the events from when its hooks were first
        # seen (this engine's start, or the reload that added them): the past is not replayed to
        # a new hook; later restarts go on from the stored place
        self.since: float | None = now() if project().notify else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop looking. A hook still running is not waited for: its delivery is due again once
        the timeout has passed, for the next engine (at least once)."""
        self._stop.set()
        self._thread.join(2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.project().notify:
                continue
            if self.since is None:
                self.since = now()
            try:
                self.enqueue()
                while not self._stop.is_set() and self.deliver_one():
                    pass
                self._failing = False
            except StoreError as e:
                if not self._failing:
                    self.log(f"notify: cannot use the store, will try again: {e}")
                self._failing = True
            except Exception as e:  # a bug here must not end notifying for the engine's lifetime
                self.log(f"notify: {type(e).__name__}: {e}; will try again")

    # ------------------------------------------------------------ events to deliveries

    def enqueue(self) -> int:
        """Record a delivery for each new event a hook listens to; returns how many."""
        hooks = [(hook_key(h), set(h.on)) for h in self.project().notify]
        made = 0
        with self.db.write(fenced=False) as tx:
            tx.lock("notify:cursor")
            row = tx.one(f"SELECT value FROM settings WHERE name = ?{tx.for_update}", (CURSOR,))
            if row is None:
                head = tx.one(
                    "SELECT COALESCE(MAX(seq), 0) AS s FROM events WHERE at < ?", (self.since or now(),)
                )
                seq = int(head["s"]) if head else 0
                tx.execute("INSERT INTO settings (name, value) VALUES (?, ?)", (CURSOR, str(seq)))
            else:
                seq = int(row["value"])
            events = tx.all(
                "SELECT id, kind, seq FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, BATCH)
            )
            if not events:
                return 0
            rows = [
                {"e": e["id"], "h": key, "t": now()}
                for e in events
                if not e["kind"].startswith("notify.")  # a hook's own outcome never notifies (no loops)
                for key, kinds in hooks
                if e["kind"] in kinds
            ]
            for r in rows:
                made += tx.execute(
                    "INSERT INTO notify_deliveries (event_id, hook, status, attempts, next_at) "
                    "VALUES (:e, :h, 'pending', 0, :t) ON CONFLICT (event_id, hook) DO NOTHING",
                    r,
                )
            tx.execute("UPDATE settings SET value = ? WHERE name = ?", (str(events[-1]["seq"]), CURSOR))
        return made

    # ------------------------------------------------------------ deliveries to commands

    def deliver_one(self) -> bool:
        """Take the oldest delivery that is due and run its hook; False when none is due."""
        t = now()
        with self.db.write(fenced=False) as tx:
            job = tx.one(
                "SELECT * FROM notify_deliveries WHERE status = 'pending' AND next_at <= ? "
                f"ORDER BY id LIMIT 1{' FOR UPDATE SKIP LOCKED' if self.db.dialect == 'postgresql' else ''}",
                (t,),
            )
            if job is None:
                return False
            # taken: nobody else tries it before this attempt can have ended; the attempt counts now,
            # so a hook that takes the engine down with it is not tried for ever
            taken = t + TIMEOUT_S + 5
            tx.execute(
                "UPDATE notify_deliveries SET next_at = ?, attempts = attempts + 1 WHERE id = ?",
                (taken, job["id"]),
            )
            job = {**job, "next_at": taken, "attempts": int(job["attempts"]) + 1}
        hook = next((h for h in self.project().notify if hook_key(h) == job["hook"]), None)
        event = self.db.one("SELECT * FROM events WHERE id = ?", (job["event_id"],))
        attempt = int(job["attempts"])
        if hook is None or event is None:
            gone = "the hook is no longer in sluice.yaml" if hook is None else "the event is gone"
            self._record(job, event, attempt, gone, final=True)
            return True
        error = self._run(hook, event)
        self._record(job, event, attempt, error, final=error is None or attempt >= ATTEMPTS)
        return True

    def _run(self, hook: NotifyHook, event: dict[str, Any]) -> str | None:
        """Run the hook with the event on stdin; None on success, else why it failed (one line)."""
        doc = self.document(event)
        env = {
            **os.environ,
            "SLUICE_EVENT_KIND": event["kind"],
            "SLUICE_EVENT_ID": str(event["id"]),
            "SLUICE_RUN_ID": str(event["run_id"] or ""),
        }
        argv: list[str] = ["sh", "-c", hook.run] if isinstance(hook.run, str) else list(hook.run)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.project().root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            return f"cannot run {argv[0]}: {e.strerror or e}"
        try:
            _, err = proc.communicate(json.dumps(doc).encode() + b"\n", timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return f"still running after {TIMEOUT_S:g}s: stopped"
        if proc.returncode != 0:
            last = (err or b"").decode(errors="replace").strip().splitlines()
            return f"exit {proc.returncode}" + (f": {last[-1][:200]}" if last else "")
        return None

    def document(self, event: dict[str, Any]) -> dict[str, Any]:
        """What a hook reads on stdin: {id, kind, actor, at, message, run_id, job, workflow, approvers}."""
        job = None
        approvers: list[str] = []
        if event["job_id"] is not None:
            row = self.db.one(
                "SELECT j.name, j.base, r.plan FROM jobs j JOIN runs r ON r.id = j.run_id WHERE j.id = ?",
                (event["job_id"],),
            )
            if row is not None:
                job = row["name"]
                if event["kind"] == "job.held":
                    hold = (loads(row["plan"], {}).get("jobs", {}).get(row["base"]) or {}).get("hold") or {}
                    groups = self.project().groups
                    approvers = sorted(
                        {u for who in hold.get("approvers") or [] for u in groups.get(who, [who])}
                    )
        workflow = event["workflow"]
        if workflow is None and event["run_id"] is not None:
            run = self.db.one("SELECT kind, target FROM runs WHERE id = ?", (event["run_id"],))
            workflow = run["target"] if run and run["kind"] == "workflow" else None
        return {
            "id": event["id"],
            "kind": event["kind"],
            "actor": event["actor"],
            "at": iso(event["at"]),
            "message": event["message"],
            "run_id": event["run_id"],
            "job": job,
            "workflow": workflow,
            "approvers": approvers,
        }

    def _record(
        self, job: dict[str, Any], event: dict[str, Any] | None, attempt: int, error: str | None, final: bool
    ) -> None:
        status = "sent" if error is None else ("failed" if final else "pending")
        wait = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
        what = f"event #{job['event_id']}" + (f" ({event['kind']})" if event else "")
        with self.db.write(fenced=False) as tx:
            # only while it is still ours: another engine that took it over after our timeout (and
            # perhaps delivered it) is not overwritten
            if not tx.execute(
                "UPDATE notify_deliveries SET status = ?, next_at = ?, last_error = ? "
                "WHERE id = ? AND status = 'pending' AND next_at = ?",
                (status, now() + wait, error, job["id"], job["next_at"]),
            ):
                return
            if error is None:
                record_event(
                    tx,
                    "notify.sent",
                    "sluice",
                    f"notified {what} (attempt {attempt})",
                    run_id=event["run_id"] if event else None,
                    details={"event_id": job["event_id"], "hook": job["hook"], "attempt": attempt},
                )
            else:
                more = "gave up" if final else f"will try again in {wait:g}s"
                record_event(
                    tx,
                    "notify.failed",
                    "sluice",
                    f"notify of {what} failed (attempt {attempt} of {ATTEMPTS}, {more}): {error}",
                    run_id=event["run_id"] if event else None,
                    details={
                        "event_id": job["event_id"],
                        "hook": job["hook"],
                        "attempt": attempt,
                        "error": error,
                        "final": final,
                    },
                )
