"""Run one claimed job: its steps as child processes in their own process group.

Output streams to the store in bounded chunks; the job's outputs come from $SLUICE_OUTPUT;
cancel and timeout kill the whole process group (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import codecs
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from ..definitions.expressions import substitute
from ..definitions.inputs import InputError, env_value, validate_inputs
from ..definitions.objects import env_name
from ..plan import secret_names, spec_from
from ..service import mask_text, record_events
from ..store.db import Database, StoreError, StoreUnavailable, Tx, dumps, loads, now
from .procs import proc_start, signal_group, store_id

CHUNK_BYTES = 64 * 1024
FLUSH_SECONDS = 0.25
PID_RECORD_AFTER = 0.5
POLL_SECONDS = (
    0.25  # a running step's loop wakes at least this often (output, exit and cancel wake it at once)
)
# output kept in memory while the store cannot be written
PENDING_LIMIT = int(os.environ.get("SLUICE_LOG_BUFFER", str(8 * 1024 * 1024)))
OUTPUT_LIMIT = 64 * 1024
LOG_LIMIT = 100 * 1024 * 1024  # a job's stored output (sluice.yaml `log_limit`)
_MADE: set[str] = set()  # directories this process made already
_OUTPUT_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$")


def kill_grace() -> float:
    return float(os.environ.get("SLUICE_KILL_GRACE", "10"))


class LogWriter:
    """Buffers a job's output and writes it to the store in chunks of at most CHUNK_BYTES.

    Chunks wait in memory until FLUSH_SECONDS pass or CHUNK_BYTES accumulate, so a short
    job's whole log is written in the same transaction that records its result.

    Nothing leaves the buffer before its COMMIT succeeded: while the store is unavailable the
    output waits in memory (up to PENDING_LIMIT), and what had to be dropped, or what the
    store refused for good, is announced in the log by a `sluice` line saying how much.
    Secrets are masked before the text is cut into chunks, and the tail that could be the
    start of a secret is held back until more output comes (or the step ends), so a secret
    written in two pieces is still masked.

    A job's stored output is capped at `limit` bytes (sluice.yaml's `log_limit`): the first
    half is kept whole; past it the newest output is kept and the oldest after the head is
    deleted, the first deleted row becoming a `sluice` line that says how much was dropped,
    so the log reads head, the line, tail, in order, and the store never holds much more
    than the limit whatever the job prints.
    """

    def __init__(
        self,
        db: Database,
        job_id: int,
        run_id: int,
        secrets: list[str],
        seq: int = 0,
        limit: int = LOG_LIMIT,
    ):
        self.db = db
        self.job_id = job_id
        self.run_id = run_id
        self.secrets = secrets
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.buf: list[str] = []
        self.size = 0
        self.held = ""  # the tail that may be the start of a secret
        self.pending: list[tuple[str, str]] = []  # (stream, text) ready to write
        self.lost = 0  # bytes dropped (buffer full while the store was away)
        self.lost_why = ""
        self.last_flush = time.monotonic()
        self.seq = seq  # the last seq committed
        self._staged = 0  # pending entries written in the open transaction (not yet committed)
        self._staged_lost = 0  # the lost bytes announced in that transaction
        self.trouble: str | None = None  # why the last write failed (said once in the engine log)
        self.limit = limit
        self.head_room = limit // 2  # output still kept whole as the head of the log
        self.tail: deque[tuple[int, int]] = deque()  # (row id, bytes) after the head, oldest first
        self.tail_bytes = 0
        self.marker: int | None = None  # the row that says how much of the middle was dropped
        self.dropped = 0
        self._staged_rows: list[tuple[int, int]] = []  # output rows of the open transaction
        self.in_flight = False  # a flush_later under way in the store thread

    def feed(self, data: bytes) -> bool:
        """Buffer output; True when a flush is due (CHUNK_BYTES gathered, or FLUSH_SECONDS passed)."""
        text = self.decoder.decode(data)
        if text:
            self.buf.append(text)
            self.size += len(text)
        return self.size >= CHUNK_BYTES or time.monotonic() - self.last_flush >= FLUSH_SECONDS

    def flush_later(self, submit: Callable[[Callable[[], None]], None], done: Callable[[], None]) -> None:
        """Flush from the agent's store thread (`submit`): the caller (the reactor) seals what it has
        and goes on reading the job, whatever the store does; `done` is called from there once the
        rows are stored, or kept in memory when the store is away. One flush at a time."""
        if self.in_flight:
            return
        self._seal()
        self.last_flush = time.monotonic()
        if not self.pending and not self.lost:
            return
        self.in_flight = True

        def task() -> None:
            try:
                self._store()
            finally:
                self.in_flight = False
                done()

        submit(task)

    def note(self, text: str) -> None:
        """A line from sluice itself (step headers, kill notices)."""
        self._seal(release=True)  # a note splits the stream: nothing held back can continue past it
        self.pending.append(("sluice", text if text.endswith("\n") else text + "\n"))

    def _seal(self, final: bool = False, *, release: bool = False) -> None:
        if final:
            tail = self.decoder.decode(b"", final=True)
            if tail:
                self.buf.append(tail)
        if not self.buf and not (self.held and (final or release)):
            return
        text = self.held + "".join(self.buf)
        self.buf, self.size, self.held = [], 0, ""
        # PostgreSQL text cannot hold NUL: the same replacement on both backends as for undecodable bytes
        text = mask_text(text.replace("\x00", "\ufffd"), self.secrets)
        if not (final or release):
            keep = _secret_prefix_len(text, self.secrets)
            if keep:
                text, self.held = text[:-keep], text[-keep:]
        for i in range(0, len(text), CHUNK_BYTES):
            self.pending.append(("out", text[i : i + CHUNK_BYTES]))

    def flush(
        self, final: bool = False, tx: Tx | None = None, rows: list[dict[str, Any]] | None = None
    ) -> None:
        """Write what is pending. With tx, the rows join that transaction: call committed() after it.
        With rows too, they are added to that list for the caller to insert with others'."""
        self._seal(final)
        self.last_flush = time.monotonic()
        self._staged = self._staged_lost = 0
        if not self.pending and not self.lost:
            return
        if tx is not None:
            self._write(tx, rows)
            return
        self._store()

    def _store(self) -> None:
        """Write what is pending in a transaction of its own."""
        self._staged = self._staged_lost = 0
        try:
            with self.db.write() as own:
                self._write(own)
            self.committed()
        except StoreUnavailable as e:
            self._keep(str(e))
        except StoreError as e:
            self._refused(e)

    def committed(self) -> None:
        """The transaction holding the staged rows committed: only now do they leave the buffer."""
        self.seq += self._staged + (1 if self._staged_lost else 0)
        del self.pending[: self._staged]
        self.lost -= self._staged_lost
        self._staged = self._staged_lost = 0
        self._cap()
        if self.trouble is not None:
            sys.stderr.write(f"sluice: the log of job {self.job_id} is stored again\n")
            self.trouble = None

    def _keep(self, why: str) -> None:
        """The store is away for a moment: keep the output (bounded) and try again at the next flush."""
        self._staged = self._staged_lost = 0
        if self.trouble is None:
            sys.stderr.write(
                f"sluice: cannot store the log of job {self.job_id} for now (kept in memory): {why}\n"
            )
        self.trouble = why
        size = sum(len(t) for _, t in self.pending)
        while size > PENDING_LIMIT and self.pending:
            _, text = self.pending.pop(0)
            size -= len(text)
            self.lost += len(text.encode())
            self.lost_why = f"the store could not be written for a while ({why})"

    def _refused(self, error: StoreError) -> None:
        """The store refused the batch for good (not a passing outage): write chunk by chunk and put
        a line saying so in place of each refused one, so that one bad chunk never blocks the job."""
        self._staged = self._staged_lost = 0
        if self.lost:
            try:
                self._write_one("sluice", self._lost_line(self.lost, self.lost_why))
            except StoreUnavailable as e:
                self._keep(str(e))
                return
            except StoreError as e:
                sys.stderr.write(
                    f"sluice: {_size(self.lost)} of the log of job {self.job_id} lost ({self.lost_why}); "
                    f"the store refused to say so in the log: {_first_line(e)}\n"
                )
            self.lost = 0
        # the entries taken out, not the list replaced: the reactor may add to it meanwhile
        batch = list(self.pending)
        del self.pending[: len(batch)]
        for i, (stream, text) in enumerate(batch):
            try:
                self._write_one(stream, text)
                continue
            except StoreUnavailable as e:
                self.pending[0:0] = batch[i:]
                self._keep(str(e))
                return
            except StoreError as e:
                why = _first_line(e)
            if stream == "sluice":  # our own line (it may quote the job's text): the engine log says it
                sys.stderr.write(f"sluice: the store refused a line of the log of job {self.job_id}: {why}\n")
                continue
            lines = [f"refused by the store ({why})", "refused by the store"]
            for n, line in enumerate(self._lost_line(len(text.encode()), w) for w in lines):
                try:
                    self._write_one("sluice", line)
                    break
                except StoreUnavailable as e:
                    self.pending[0:0] = [("sluice", line), *batch[i + 1 :]]
                    self._keep(str(e))
                    return
                except StoreError:
                    if n == len(lines) - 1:
                        sys.stderr.write(
                            f"sluice: {_size(len(text.encode()))} of the log of job {self.job_id} refused by the store: {why}\n"
                        )

    def _write_one(self, stream: str, text: str) -> None:
        self._staged_rows = []
        with self.db.write() as tx:
            self._insert(tx, stream, text, 1)
        self.seq += 1
        self._cap()

    def _write(self, tx: Tx, rows: list[dict[str, Any]] | None = None) -> None:
        self._staged_rows = []
        entries = list(self.pending)
        if self.lost:  # what had to be dropped is said where it was, before what was kept
            entries.insert(0, ("sluice", self._lost_line(self.lost, self.lost_why)))
        t = now()
        batch = [
            {
                "job_id": self.job_id,
                "run_id": self.run_id,
                "seq": self.seq + n,
                "stream": stream,
                "data": mask_text(text, self.secrets),
                "at": t,
            }
            for n, (stream, text) in enumerate(entries, 1)
        ]
        sizes = [len(text.encode()) if stream == "out" else None for stream, text in entries]
        if self.head_room > sum(z for z in sizes if z is not None):
            # all of it is the log's head, kept whole: no row id is needed, the rows go in at once
            if rows is not None:
                rows.extend(batch)  # the caller inserts them with the other jobs' rows
            else:
                tx.insert_many("log_chunks", batch)
            self._staged_rows = [(0, z) for z in sizes if z is not None]
        else:  # past the head: the rows of the tail are remembered by id, to drop the oldest later
            for row, size in zip(batch, sizes, strict=True):
                row_id = tx.insert("log_chunks", row)
                if size is not None:
                    self._staged_rows.append((row_id, size))
        self._staged = len(entries) - (1 if self.lost else 0)  # what was written, not what came since
        self._staged_lost = self.lost

    def _insert(self, tx: Tx, stream: str, text: str, n: int) -> None:
        row_id = tx.insert(
            "log_chunks",
            {
                "job_id": self.job_id,
                "run_id": self.run_id,
                "seq": self.seq + n,
                "stream": stream,
                "data": mask_text(text, self.secrets),
                "at": now(),
            },
        )
        if stream == "out":
            self._staged_rows.append((row_id, len(text.encode())))

    def _cap(self) -> None:
        """Account for the output rows just committed; past the limit, drop the oldest after the head."""
        for row_id, size in self._staged_rows:
            if self.head_room > 0:
                self.head_room -= size
            else:
                self.tail.append((row_id, size))
                self.tail_bytes += size
        self._staged_rows = []
        budget = self.limit - self.limit // 2
        if self.tail_bytes <= budget:
            return
        drop: list[tuple[int, int]] = []
        size = 0
        while self.tail and self.tail_bytes - size > budget:
            drop.append(self.tail.popleft())
            size += drop[-1][1]
        marker = self.marker if self.marker is not None else drop[0][0]
        line = (
            f"--- {_size(self.dropped + size)} of output dropped here: this job's log is capped at "
            f"{_size(self.limit)} (log_limit); its head and its tail are kept\n"
        )
        gone = [row_id for row_id, _ in drop if row_id != marker]
        try:
            with self.db.write() as tx:
                tx.execute("UPDATE log_chunks SET stream = 'sluice', data = ? WHERE id = ?", (line, marker))
                for i in range(0, len(gone), 500):
                    part = gone[i : i + 500]
                    tx.execute(f"DELETE FROM log_chunks WHERE id IN ({','.join('?' * len(part))})", part)
        except StoreError:  # not now: those rows stay (the log is briefly longer) and go next time
            self.tail.extendleft(reversed(drop))
            return
        self.marker = marker
        self.dropped += size
        self.tail_bytes -= size

    @staticmethod
    def _lost_line(size: int, why: str) -> str:
        return f"--- {_size(size)} of output lost: {why or 'the store could not be written'}\n"


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the process ends (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _secret_prefix_len(text: str, secrets: list[str]) -> int:
    """The length of the longest tail of text that is the start (not the whole) of a secret."""
    best = 0
    for s in secrets:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def job_environ() -> dict[str, str]:
    """The environment every job starts from: this process's own, with `sluice` on PATH and no
    inputs or materials left over from whoever started it. Taken once per agent (copying and
    decoding os.environ for every job is a tenth of a short job's cost in the engine)."""
    env = dict(os.environ)
    # `sluice` itself on PATH, so a step can release a hold or read a run (the circleback)
    bindir = os.path.dirname(sys.executable)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    for k in [k for k in env if k.startswith("INPUT_") or k.startswith("SLUICE_MATERIAL_")]:
        del env[k]
    env.pop("SLUICE_PARENT_RUN_ID", None)
    return env


_DEFAULT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, n))


class StoreThread:
    """One thread per agent for its writes that may wait on the store: storing results and
    claiming (a step), a log flushed while its job runs, a pid recorded. A slow or locked store
    holds up this thread only, never the reactor that reads the jobs' output and acts on their
    timeouts, cancels and kills."""

    def __init__(self, name: str):
        import queue

        self.tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name=f"store-{name}", daemon=True)
        self.thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        self.tasks.put(task)

    def _work(self) -> None:
        while True:
            task = self.tasks.get()
            try:
                task()
            except Exception as e:  # the thread must outlive a bug in one task
                sys.stderr.write(f"sluice: store thread: {e}\n")


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the agent's directory was removed under it: Popen changes directory itself
        return None


class _Child:
    """A step's process: stdin from /dev/null, stdout and stderr into one pipe (`fd`), in a process
    group of its own so that the whole job can be signalled (not a session of its own: setsid
    makes Python fork instead of vfork, 0.6 ms more per step).

    A shell command is started with os.posix_spawn (vfork and exec in libc: about half of
    Popen's CPU in the parent, bench/README.md) when the job runs in the agent's own directory,
    as the engine's jobs always do (posix_spawn cannot change directory); otherwise, and for a
    command given as a list (its PATH search is Popen's, from the job's environment), Popen."""

    def __init__(self, pid: int, fd: int, popen: subprocess.Popen[bytes] | None = None):
        self.pid = pid
        self.fd = fd
        self.popen = popen
        self.returncode: int | None = None

    @classmethod
    def start(cls, cmd: str | list[str], env: dict[str, str], cwd: str) -> _Child:
        if isinstance(cmd, str) and _cwd() == cwd:
            r, w = os.pipe()
            try:
                null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    pid = os.posix_spawn(
                        "/bin/sh",
                        ["/bin/sh", "-c", cmd],
                        env,
                        file_actions=[
                            (os.POSIX_SPAWN_DUP2, null, 0),
                            (os.POSIX_SPAWN_DUP2, w, 1),
                            (os.POSIX_SPAWN_DUP2, w, 2),
                        ],
                        setpgroup=0,
                        # as Popen's restore_signals: Python ignores SIGPIPE and SIGXFSZ, and a
                        # step must not inherit that (`yes | head -1` would never end)
                        setsigdef=_DEFAULT_SIGNALS,
                    )
                finally:
                    os.close(null)
            except BaseException:
                os.close(r)
                raise
            finally:
                os.close(w)
            return cls(pid, r)
        popen = subprocess.Popen(
            cmd,
            shell=isinstance(cmd, str),
            executable="/bin/sh" if isinstance(cmd, str) else None,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        assert popen.stdout is not None
        return cls(popen.pid, popen.stdout.fileno(), popen)

    @property
    def reaped(self) -> bool:
        return (self.popen.returncode if self.popen is not None else self.returncode) is not None

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.popen is not None:
            return self.popen.wait()
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def close(self) -> None:
        """Close our end of the output pipe."""
        if self.popen is not None and self.popen.stdout is not None:
            self.popen.stdout.close()
        else:
            os.close(self.fd)


class Reactor:
    """One thread that runs every job of an agent: one selector over all their pipes and pidfds.

    A job is a generator (JobRunner.steps) that starts its steps' processes and yields what it
    waits for (its descriptors, and when it must look again: a timeout, the kill grace, a log
    flush); the reactor resumes it when one of them is ready. No thread per job: a job that ends
    and the next one it frees a slot for are handled in this thread, with no hand-off, and the
    results of jobs that end in the same round are stored in one transaction (`on_round`)."""

    def __init__(self, name: str, on_round: Callable[[], None]):
        self.on_round = on_round
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.incoming: list[JobRunner] = []
        self.poked: set[JobRunner] = set()
        self.live: dict[JobRunner, tuple[Any, float | None, list[int]]] = {}  # gen, due, fds watched
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._loop, name=f"jobs-{name}", daemon=True)
        self.thread.start()

    def submit(self, runner: JobRunner) -> None:
        runner._poke = lambda: self.poke(runner)
        runner._release = lambda: self.release(runner)
        with self.lock:
            self.incoming.append(runner)
        if threading.current_thread() is not self.thread:
            self._wake()

    def poke(self, runner: JobRunner) -> None:
        """Resume this job at once (a cancel, a kill), from any thread."""
        with self.lock:
            self.poked.add(runner)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # full: a wake-up is pending already

    def _loop(self) -> None:
        ready: set[JobRunner] = set()
        while True:
            with self.lock:
                new, self.incoming = self.incoming, []
                poked, self.poked = self.poked, set()
            ready |= {r for r in poked if r in self.live}
            for runner in new:
                self.live[runner] = (runner.steps(), None, [])
                ready.add(runner)
            ended = False
            for runner in ready:
                ended = self._advance(runner) or ended
            ready = set()
            if ended:
                try:
                    self.on_round()  # the results stored together, the freed slots filled
                except Exception as e:  # the reactor must outlive a bug in one round
                    sys.stderr.write(f"sluice: job reactor: {e}\n")
                continue  # new jobs, submitted from this thread: start them before waiting
            t = time.monotonic()
            dues = [due for _, due, _ in self.live.values() if due is not None]
            timeout = max(0.0, min(dues) - t) if dues else None
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    ready.add(key.data)
            t = time.monotonic()
            ready |= {r for r, (_, due, _) in self.live.items() if due is not None and due <= t}

    def _advance(self, runner: JobRunner) -> bool:
        """Resume one job until it waits again; True when it ended."""
        entry = self.live.get(runner)
        if entry is None:
            return False  # ended already (ready twice in one round)
        gen = entry[0]
        try:
            fds, due = next(gen)
        except StopIteration:
            self._forget(runner)
            runner.ended()
            return True
        except BaseException as e:  # a bug in a job's code path: the job still gets a final status
            self._forget(runner)
            runner.result = ("failed", None, f"sluice error: {e}", {})
            runner.ended()
            return True
        watched = self.live[runner][2]  # read after the job ran: it may have released its descriptors
        try:
            for fd in watched:
                if fd not in fds:
                    self.sel.unregister(fd)
            for fd in fds:
                if fd not in watched:
                    self.sel.register(fd, selectors.EVENT_READ, runner)
        except (KeyError, ValueError, OSError) as e:  # never: but a job that cannot be watched must end
            for fd in {*watched, *fds}:  # whatever of it is registered goes, before its fds close
                try:
                    if self.sel.get_key(fd).data is runner:
                        self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
            self.live.pop(runner, None)
            gen.close()  # its processes are killed (the generator's own clean-up)
            runner.result = ("failed", None, f"sluice error: cannot watch the job's output: {e}", {})
            runner.ended()
            return True
        self.live[runner] = (gen, due, list(fds))
        return False

    def _forget(self, runner: JobRunner) -> None:
        entry = self.live.pop(runner, None)
        for fd in entry[2] if entry else []:
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass

    def release(self, runner: JobRunner) -> None:
        """The job is about to close its descriptors: stop watching them (called from its generator)."""
        entry = self.live.get(runner)
        if entry is not None and entry[2]:
            for fd in entry[2]:
                try:
                    self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
            self.live[runner] = (entry[0], entry[1], [])


class JobRunner:
    """Executes one claimed job; reports through the store, then calls on_done()."""

    def __init__(
        self,
        db: Database,
        root: Path,
        job: dict[str, Any],
        run: dict[str, Any],
        agent: str,
        on_done: Callable[[JobRunner], None],
        plan: dict[str, Any] | None = None,
        log_limit: int = LOG_LIMIT,
        environ: dict[str, str] | None = None,
        write_later: Callable[[Callable[[], None]], None] | None = None,
    ):
        self.db = db
        self.root = root
        self.root_s = str(root)
        self.log_limit = log_limit
        self.environ = environ if environ is not None else job_environ()
        self.job = job
        self.run_row = run
        self.plan = plan if plan is not None else loads(run["plan"])
        self.spec = self.plan["jobs"][job["base"]]
        self.agent = agent
        self.token = job["claim_token"]
        self.on_done = on_done
        self._cancel: str | None = None
        self._cancel_status = "cancelled"
        self.proc: _Child | None = None
        self._kill_now = False
        self._poke: Callable[[], None] = lambda: None  # resumes the job in its reactor (a cancel)
        self._release: Callable[[], None] = lambda: None  # the reactor stops watching its descriptors
        # the agent's store thread: writes that may wait on the store (a flush, the pid) go there
        self._write_later: Callable[[Callable[[], None]], None] = write_later or (lambda task: task())
        self._pid_retry = False
        self.result: tuple[str, int | None, str | None, dict[str, str]] = ("failed", None, "not run", {})

    # ------------------------------------------------------------ control

    def cancel(self, reason: str, *, status: str = "cancelled") -> None:
        """Stop the job's processes; it ends `cancelled` (a person asked) or `failed` (sluice had to)."""
        if self._cancel is None:
            self._cancel = reason
            self._cancel_status = status
            self._wake_loop()

    def _wake_loop(self) -> None:
        """Resume the job from its wait (a cancel is acted on at once, not at the next poll)."""
        self._poke()

    def kill_now(self) -> None:
        """SIGKILL the job's processes at once, no grace (they must not run on beside a retry)."""
        self._kill_now = True
        if self.proc is not None and not self.proc.reaped:  # a reaped pid may be another's by now
            signal_group(self.proc.pid, signal.SIGKILL)
        self._poke()

    # ------------------------------------------------------------ the job, run by a Reactor

    def steps(self) -> Generator[tuple[list[int], float | None], None, None]:
        """Run the job's steps, yielding (descriptors, when to look again) whenever it waits."""
        try:
            self.result = yield from self._execute()
        except Exception as e:  # a bug or an OS failure must still give the job a final status
            self.result = ("failed", None, f"sluice error: {e}", {})

    def ended(self) -> None:
        """The job's processes are gone: hand the result to the agent, which stores it (with others)."""
        self.on_done(self)

    def report_in(self, tx: Tx, events: list[dict[str, Any]], logs: list[dict[str, Any]]) -> None:
        """Write the result in the agent's transaction, adding its event and the log's last chunks to
        the step's (which inserts each list at once); committed() after it."""
        self._report(*self.result, tx=tx, events=events, logs=logs)

    def committed(self) -> None:
        log = getattr(self, "log", None)
        if log is not None:
            log.committed()

    def finish_alone(self) -> None:
        """The shared transaction was refused: store this result on its own (see _finish)."""
        self._finish(*self.result)

    def _context(self) -> dict[str, Any]:
        return job_context(self.db, self.run_row, self.plan, self.job["base"])

    def _base_env(self, ctx: dict[str, Any], workspace: str, output_file: str) -> dict[str, str]:
        run = self.run_row
        env = dict(self.environ)
        env.update(
            {
                "SLUICE_RUN_ID": str(run["id"]),
                "SLUICE_JOB": self.job["name"],
                "SLUICE_WORKFLOW": run["target"],
                "SLUICE_WORKSPACE": workspace,
                "SLUICE_OUTPUT": output_file,
                "SLUICE_PROJECT": self.root_s,
                "SLUICE_AGENT": self.agent,
                "SLUICE_JOB_ID": str(self.job["id"]),
                "SLUICE_STORE_ID": store_id(self.db.url),
            }
        )
        if run["parent_run_id"]:
            env["SLUICE_PARENT_RUN_ID"] = str(run["parent_run_id"])
        count = self.spec.get("parallelism") or 1
        if count > 1:
            env["SLUICE_PARALLEL_INDEX"] = self.job["copy_key"] or "0"
            env["SLUICE_PARALLEL_COUNT"] = str(count)
        for name, rev in ctx["materials"].items():
            env["SLUICE_MATERIAL_" + name.upper().replace("-", "_") + "_REVISION"] = str(rev)
        for k, v in ctx["inputs"].items():
            env[env_name(k)] = env_value(v)
        for k, v in loads(self.job.get("fields"), {}).items():
            env[env_name(k)] = env_value(v)
        for k, v in (self.spec.get("env") or {}).items():
            env[k] = substitute(v, ctx)
        return env

    def _execute(
        self,
    ) -> Generator[tuple[list[int], float | None], None, tuple[str, int | None, str | None, dict[str, str]]]:
        run_id = self.run_row["id"]
        state = os.path.join(self.root_s, ".sluice")
        workspace = os.path.join(state, "workspaces", f"run-{run_id}")
        try:
            os.mkdir(workspace)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(workspace, exist_ok=True)
        outdir = os.path.join(state, "outputs")  # one for all runs: a directory per run costs P1 12%
        if outdir not in _MADE:
            os.makedirs(outdir, exist_ok=True)
            _MADE.add(outdir)
        output_file = os.path.join(outdir, f"{self.job['id']}-{self.job['attempt']}")
        try:
            os.unlink(output_file)
        except FileNotFoundError:
            pass
        ctx = self._context()
        secrets = self._secret_values(ctx)
        seq = 0
        if self.job["attempt"] > 1:
            seq = int(
                self.db.scalar(
                    "SELECT COALESCE(MAX(seq), 0) FROM log_chunks WHERE job_id = ?", (self.job["id"],)
                )
                or 0
            )
        log = self.log = LogWriter(self.db, self.job["id"], run_id, secrets, seq, limit=self.log_limit)
        base_env = self._base_env(ctx, workspace, output_file)
        timeout = self.spec.get("timeout")
        deadline = time.monotonic() + timeout if timeout else None
        failed = False
        exit_code: int | None = 0
        reason: str | None = None
        if self.job["attempt"] > 1:
            log.note(f"--- attempt {self.job['attempt']}")
        for i, step in enumerate(self.spec["steps"]):
            if self._cancel:
                break
            if failed and step.get("when") != "always":
                log.note(f"--- skip step {i + 1}: {step['name']} (an earlier step failed)")
                continue
            env = dict(base_env)
            if step.get("method"):
                try:
                    given = {k: substitute(v, ctx) for k, v in (step.get("with_") or {}).items()}
                    specs = {k: spec_from(v) for k, v in (step.get("method_inputs") or {}).items()}
                    values = validate_inputs(specs, given)
                except InputError as e:
                    log.note(f"--- step {i + 1}: {step['name']}: {e}")
                    failed, exit_code, reason = True, None, f"step {step['name']}: {e}"
                    continue
                for k in [k for k in env if k.startswith("INPUT_")]:
                    del env[k]
                for k, v in values.items():
                    env[env_name(k)] = env_value(v)
                    if specs[k].secret and v:
                        log.secrets.append(str(v))
                for k, v in (step.get("method_env") or {}).items():
                    env[k] = substitute(v, {**ctx, "inputs": values})
            log.note(f"--- step {i + 1}: {step['name']}")
            code, why = yield from self._spawn(step["run"], env, log, deadline)
            if why and not failed:
                reason = why
            if code != 0:
                if not failed:
                    exit_code = code
                    reason = reason or f"step {step['name']} exited {code}"
                failed = True
        while log.in_flight:  # the last flush from the store thread first: the result takes the rest
            yield [], time.monotonic() + 0.05
        log._seal(final=True)
        outputs = self._read_outputs(output_file, log)
        if self._cancel:
            return self._cancel_status, exit_code if exit_code else None, self._cancel, outputs
        if failed:
            return "failed", exit_code, reason, outputs
        return "succeeded", 0, None, outputs

    def _secret_values(self, ctx: dict[str, Any]) -> list[str]:
        names = secret_names(self.plan)
        values = [
            str(v)
            for k, v in {**ctx["inputs"], **loads(self.job.get("fields"), {})}.items()
            if k in names and v not in (None, "")
        ]
        return values

    def _spawn(
        self, cmd: str | list[str], env: dict[str, str], log: LogWriter, deadline: float | None
    ) -> Generator[tuple[list[int], float | None], None, tuple[int | None, str | None]]:
        """Run one step to the end; returns (exit code, reason when sluice stopped it). Yields what
        it waits for: its output pipe and pidfd, and when to look again at the latest."""
        try:
            proc = _Child.start(cmd, env, self.root_s)
        except OSError as e:
            log.note(f"cannot start: {e}")
            return 127, f"cannot start: {e.strerror or e}"
        self.proc = proc
        pgid = proc.pid
        # The pid lets a restarted engine stop this process if we die. A step that ends within
        # PID_RECORD_AFTER never needs it, and skipping the write halves the cost of short jobs.
        record_pid_at: float | None = time.monotonic() + PID_RECORD_AFTER
        fd = proc.fd
        os.set_blocking(fd, False)
        # the process's end wakes us too (a pidfd), so a job is reported the moment it exits,
        # not at the next poll after its output closed
        pidfd = _pidfd(proc.pid)
        watch = [fd] if pidfd is None else [fd, pidfd]
        stopped: str | None = None
        kill_at: float | None = None
        eof = False
        try:
            while True:
                if record_pid_at is not None and time.monotonic() >= record_pid_at:
                    # written by the store thread: a slow store must not hold up this loop
                    record_pid_at = None
                    self._record_pid(proc.pid, proc_start(proc.pid))
                if self._pid_retry:
                    self._pid_retry = False
                    record_pid_at = time.monotonic() + 0.5
                if stopped is None:
                    if self._cancel:
                        stopped = self._cancel
                    elif deadline is not None and time.monotonic() >= deadline:
                        stopped = f"timed out after {_fmt(self.spec.get('timeout'))}"
                    if stopped:
                        log.note(f"--- {stopped}: sending SIGTERM to the job's processes")
                        signal_group(pgid, signal.SIGTERM)
                        kill_at = time.monotonic() + kill_grace()
                if self._kill_now and kill_at != float("inf"):
                    log.note("--- SIGKILL at once: the job must not run on beside a retry")
                    signal_group(pgid, signal.SIGKILL)
                    kill_at = float("inf")
                elif kill_at is not None and time.monotonic() >= kill_at:
                    log.note("--- still running after the grace period: SIGKILL")
                    signal_group(pgid, signal.SIGKILL)
                    kill_at = float("inf")
                if proc.poll() is None:
                    # woken by output, the process's end or a cancel; else at the next thing due
                    wait = POLL_SECONDS if pidfd is not None else 0.05
                    if eof and pidfd is None:
                        wait = 0.005
                    t = time.monotonic()
                    for due in (deadline if stopped is None else None, kill_at, record_pid_at):
                        if due is not None and due != float("inf"):
                            wait = min(wait, max(0.0, due - t))
                    if (log.buf or log.pending) and not log.in_flight:
                        wait = min(wait, max(0.0, log.last_flush + FLUSH_SECONDS - t))
                    # while a flush waits on the store and much is buffered, the pipe is left unread:
                    # the job waits on its output, as on a slow terminal
                    full = log.in_flight and log.size >= PENDING_LIMIT
                    yield ([w for w in watch if w != fd] if full else watch), t + wait
                    if full:
                        continue
                if not eof:
                    try:
                        data = os.read(fd, CHUNK_BYTES)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        eof = True
                        watch = [w for w in watch if w != fd]
                    elif data and log.feed(data):
                        log.flush_later(self._write_later, self._poke)
                if (log.buf or log.pending) and time.monotonic() - log.last_flush >= FLUSH_SECONDS:
                    log.flush_later(self._write_later, self._poke)
                if proc.poll() is not None:
                    # main process gone: take what is left in the pipe, then clean up stragglers
                    while not eof:
                        try:
                            data = os.read(fd, CHUNK_BYTES)
                        except BlockingIOError:
                            break
                        if not data:
                            break
                        log.feed(data)
                    signal_group(pgid, signal.SIGKILL)
                    break
        except BaseException:
            signal_group(pgid, signal.SIGKILL)  # never leave a job's processes behind
            try:
                proc.wait()  # nor a zombie: a process started by posix_spawn is ours to reap
            except ChildProcessError:
                pass
            raise
        finally:
            self._release()  # the reactor stops watching them before they are closed
            if pidfd is not None:
                os.close(pidfd)
            proc.close()
        code = proc.wait()
        if code < 0:
            log.note(f"--- killed by signal {-code}")
        return code, stopped

    def _record_pid(self, pid: int, start: str | None) -> None:
        """The pid lets a restarted engine stop this process if we die: stored by the store thread,
        tried again half a second later when the store cannot take it."""

        def task() -> None:
            try:
                with self.db.write() as tx:
                    tx.execute(
                        "UPDATE jobs SET pid = ?, proc_start = ? WHERE id = ? AND claim_token = ?",
                        (pid, start, self.job["id"], self.token),
                    )
            except StoreError:
                self._pid_retry = True
                self._poke()

        self._write_later(task)

    def _read_outputs(self, path: str, log: LogWriter) -> dict[str, str]:
        try:
            with open(path, "rb") as f:
                data = f.read(OUTPUT_LIMIT + 1)
        except FileNotFoundError:
            return {}
        try:
            os.unlink(path)  # read once: the store keeps the outputs
        except FileNotFoundError:
            pass
        if len(data) > OUTPUT_LIMIT:
            log.note(
                f"--- $SLUICE_OUTPUT is over {OUTPUT_LIMIT // 1024} KiB: only the first {OUTPUT_LIMIT // 1024} KiB is kept"
            )
            data = data[:OUTPUT_LIMIT]
        out: dict[str, str] = {}
        for line in data.decode(errors="replace").splitlines():
            m = _OUTPUT_LINE.match(line)
            if m:
                out[m.group(1)] = m.group(2)
        return out

    # ------------------------------------------------------------ reporting

    def _finish(
        self, status: str, exit_code: int | None, reason: str | None, outputs: dict[str, str]
    ) -> None:
        """Report the result; while the store is unreachable, keep trying (the job's processes are gone).

        The log's last chunks go in the same transaction as the result. If the store refuses that
        transaction for good (not a passing outage), the log is written on its own first (where a
        refused chunk is replaced by a line saying so), so that a bad chunk never leaves the job
        `running`."""
        delay = 0.2
        log_apart = False
        while True:
            log = getattr(self, "log", None)
            try:
                if log is not None and log_apart:
                    log.flush(final=True)
                    if log.pending or log.lost:
                        raise StoreUnavailable(log.trouble or "the log could not be stored yet")
                return self._report(status, exit_code, reason, outputs)
            except StoreUnavailable:
                pass
            except StoreError as e:
                if not log_apart:
                    log_apart = True
                    continue
                sys.stderr.write(f"sluice: cannot record the result of job {self.job['id']}: {e}\n")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _report(
        self,
        status: str,
        exit_code: int | None,
        reason: str | None,
        outputs: dict[str, str],
        tx: Tx | None = None,
        events: list[dict[str, Any]] | None = None,
        logs: list[dict[str, Any]] | None = None,
    ) -> None:
        if tx is None:
            with self.db.write() as own:
                self._report(status, exit_code, reason, outputs, tx=own)
            self.committed()
            return
        retry = self.spec.get("retry") or {}
        attempt = self.job["attempt"]
        will_retry = (
            status == "failed"
            and retry
            and attempt <= int(retry.get("limit") or 0)
            and (not retry.get("exit_codes") or exit_code in retry["exit_codes"])
        )
        log = getattr(self, "log", None)
        if log is not None:
            log.flush(final=True, tx=tx, rows=logs)
        if will_retry:
            why = f"retry {attempt} of {retry['limit']} after {reason or 'failure'}"
            changed = tx.execute(
                "UPDATE jobs SET status = 'waiting', reason = ?, exit_code = ?, pid = NULL, agent = NULL "
                "WHERE id = ? AND claim_token = ? AND status = 'running'",
                (why, exit_code, self.job["id"], self.token),
            )
            kind, message = "job.retry", f"{self.job['name']} failed ({reason}); {why}"
        else:
            changed = tx.execute(
                "UPDATE jobs SET status = ?, reason = ?, exit_code = ?, finished_at = ?, outputs = ?, pid = NULL "
                "WHERE id = ? AND claim_token = ? AND status = 'running'",
                (status, reason, exit_code, now(), dumps(outputs), self.job["id"], self.token),
            )
            kind = f"job.{status}"
            message = f"{self.job['name']} {status}" + (f": {reason}" if reason else "")
        if changed:
            event = {
                "kind": kind,
                "actor": f"sluice@{self.agent}",
                "message": message,
                "run_id": self.run_row["id"],
                "job_id": self.job["id"],
                "details": {"exit_code": exit_code},
            }
            if events is not None:
                events.append(event)
            else:
                record_events(tx, [event])


def job_context(db: Database, run: dict[str, Any], plan: dict[str, Any], base: str) -> dict[str, Any]:
    """What `${{ … }}` may refer to for one job: inputs, its ancestors' outputs, the run id, materials."""
    run_id = run["id"]
    outputs: dict[str, dict[str, Any]] = {}
    upstream = _ancestors(plan, base)
    if upstream:  # only what this job may refer to: a wide fan-out must not read every sibling
        marks = ",".join("?" * len(upstream))
        for j in db.all(
            f"SELECT base, outputs FROM jobs WHERE run_id = ? AND base IN ({marks}) ORDER BY id",
            (run_id, *upstream),
        ):
            outputs.setdefault(j["base"], {}).update(loads(j["outputs"], {}))
    mats = {}
    if plan.get("materials"):
        mats = {
            m["name"]: m["revision"]
            for m in db.all("SELECT name, revision FROM materials WHERE run_id = ?", (run_id,))
        }
    return {"inputs": loads(run["inputs"], {}), "jobs": outputs, "run": {"id": run_id}, "materials": mats}


def _ancestors(plan: dict[str, Any], base: str) -> set[str]:
    seen: set[str] = set()
    todo = list(plan["jobs"][base]["needs"])
    while todo:
        b = todo.pop()
        if b not in seen:
            seen.add(b)
            todo.extend(plan["jobs"][b]["needs"])
    return seen


def _fmt(seconds: float | None) -> str:
    from ..definitions.durations import format_duration

    return format_duration(seconds or 0)
