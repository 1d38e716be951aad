"""SPEC 12 benchmarks. Prints a table and writes bench/results/<name>.json.

    .venv/bin/python bench/run.py [p1 p2 p3 ...]

Each benchmark builds its own project in a temp dir and starts a real engine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"


def sluice(
    root: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", **(env or {})}
    # as an installed copy is: with its modules compiled once, not at every start (the project's
    # machines set PYTHONDONTWRITEBYTECODE, which made every CLI call compile 160 modules: ~55 ms)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    p = subprocess.run(
        [str(REPO / ".venv" / "bin" / "sluice"), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise RuntimeError(f"sluice {' '.join(args)}: {p.returncode}\n{p.stderr}")
    return p


def project(files: dict[str, str]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def stop(root: Path) -> None:
    info = root / ".sluice" / "engine.json"
    if info.exists():
        try:
            os.kill(json.loads(info.read_text())["pid"], signal.SIGKILL)
        except (ProcessLookupError, ValueError, KeyError):
            pass
    shutil.rmtree(root, ignore_errors=True)


def bare_loop(n: int, parallel: int) -> float:
    """Spawn `true` n times with `parallel` threads, as a job runner without bookkeeping would."""

    def one(_: int) -> None:
        subprocess.run(["sh", "-c", "true"], check=True)

    t = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t)


def huey_consumer(n: int, parallel: int) -> float | None:
    """A Huey consumer (SQLite storage, process workers) running the same commands."""
    try:
        import huey  # noqa: F401
    except ImportError:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="huey-bench-"))
    (tmp / "tasks.py").write_text(
        "import subprocess\nfrom huey import SqliteHuey\n"
        f"huey = SqliteHuey(filename={str(tmp / 'h.db')!r})\n"
        "@huey.task()\ndef run():\n    subprocess.run(['sh', '-c', 'true'], check=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp)}
    subprocess.run(
        [sys.executable, "-c", f"import tasks\nfor _ in range({n}): tasks.run()"], env=env, check=True
    )
    t = time.perf_counter()
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            "tasks.huey",
            "-k",
            "process",
            "-w",
            str(parallel),
            "-d",
            "0.01",
        ],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import sqlite3

    while True:
        time.sleep(0.05)
        left = sqlite3.connect(tmp / "h.db").execute("SELECT COUNT(*) FROM task").fetchone()[0]
        if left == 0:
            break
    elapsed = time.perf_counter() - t
    consumer.send_signal(signal.SIGINT)
    consumer.wait()
    shutil.rmtree(tmp, ignore_errors=True)
    return n / elapsed


def wait_all_final(root: Path, expected: int) -> None:
    from core.service import Service

    db = Service.open(root).db  # SQLite or, with SLUICE_DATABASE_URL, PostgreSQL
    while True:
        done = db.scalar("SELECT COUNT(*) FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')")
        if done >= expected:
            return
        time.sleep(0.02)


def p1(n: int = 2000) -> dict:
    """2,000 queued method items running `true`: queue execute --all until all finished."""
    parallel = os.cpu_count() or 2
    root = project(
        {
            "sluice.yaml": "name: p1\n",
            "models/m.yaml": "name: m\nmethods:\n  t:\n    inputs: {n: {}}\n    run: 'true'\n",
        }
    )
    try:
        sluice(root, "engine", "start")
        sys.path.insert(0, str(REPO))
        from core import queueing
        from core.service import Service

        svc = Service.open(root)
        for i in range(n):
            queueing.add(svc, "method", "m.t", {"n": str(i)})
        t = time.perf_counter()
        sluice(root, "queue", "execute", "--all", "--yes")
        wait_all_final(root, n)
        ours = n / (time.perf_counter() - t)
    finally:
        stop(root)
    bare = bare_loop(n, parallel)
    huey = huey_consumer(n, parallel)
    return {
        "items": n,
        "parallel": parallel,
        "sluice_per_s": round(ours, 1),
        "bare_loop_per_s": round(bare, 1),
        "ratio": round(ours / bare, 2),
        "huey_per_s": round(huey, 1) if huey else None,
        "target": "ratio >= 0.8 and ahead of huey",
    }


def p1_fanout(n: int = 1000) -> dict:
    """A 1,000-way `parallelism` fan-out of `true` against a bare loop with the same parallelism."""
    parallel = os.cpu_count() or 2
    root = project(
        {
            "sluice.yaml": "name: fan\n",
            "workflows/w.yaml": f"name: w\njobs:\n  fan:\n    parallelism: {n}\n    steps: [{{run: 'true'}}]\n",
        }
    )
    try:
        sluice(root, "engine", "start")
        t = time.perf_counter()
        sluice(root, "workflow", "run", "w", "--detach")
        wait_all_final(root, 1)
        ours = n / (time.perf_counter() - t)
    finally:
        stop(root)
    bare = bare_loop(n, parallel)
    return {
        "jobs": n,
        "parallel": parallel,
        "sluice_per_s": round(ours, 1),
        "bare_loop_per_s": round(bare, 1),
        "ratio": round(ours / bare, 2),
    }


def p2(samples: int = 30) -> dict:
    """Release of a held job, to its first step's process starting."""
    root = project(
        {
            "sluice.yaml": "name: p2\n",
            "workflows/w.yaml": "name: w\njobs:\n  gate:\n    hold: true\n    steps: [{run: 'date +%s.%N > \"started-$SLUICE_RUN_ID\"'}]\n",
        }
    )
    lat = []
    try:
        sluice(root, "engine", "start")
        from core import holds
        from core.service import Service

        svc = Service.open(root)
        for _ in range(samples):
            run_id = svc.run_workflow("w", {})
            while svc.run_row(run_id)["status"] != "on_hold":
                time.sleep(0.005)
            t = time.time()
            holds.release(svc, "gate", run_id=run_id)
            marker = root / f"started-{run_id}"
            while not marker.exists() or not marker.read_text().strip():
                time.sleep(0.001)
            lat.append((float(marker.read_text()) - t) * 1000)
    finally:
        stop(root)
    lat.sort()
    return {
        "samples": samples,
        "median_ms": round(statistics.median(lat), 1),
        "p95_ms": round(lat[int(len(lat) * 0.95) - 1], 1),
        "target": "median < 50 ms, p95 < 150 ms",
    }


def p3(items: int = 1000, repeats: int = 15) -> dict:
    """`sluice queue list --json` with 1,000 items; `sluice --version`."""
    root = project(
        {
            "sluice.yaml": "name: p3\n",
            "models/m.yaml": "name: m\nmethods:\n  t:\n    inputs: {n: {}}\n    run: 'true'\n",
        }
    )
    try:
        from core import queueing
        from core.service import Service

        svc = Service.open(root)
        for i in range(items):
            queueing.add(svc, "method", "m.t", {"n": str(i)})

        def timed(*args: str) -> float:
            out = []
            for _ in range(repeats):
                t = time.perf_counter()
                sluice(root, *args)
                out.append((time.perf_counter() - t) * 1000)
            return round(statistics.median(out), 1)

        return {
            "queue_list_json_1000_ms": timed("queue", "list", "--json"),
            "version_ms": timed("--version"),
            "run_list_ms": timed("run", "list"),
            "targets": "queue list < 250 ms, --version < 100 ms",
        }
    finally:
        stop(root)


def p4(items: int = 10_000, runs: int = 100_000) -> dict:
    """The dashboard with 10,000 queued items and 100,000 runs: first paint, cursor move, memory."""
    import asyncio
    import resource

    root = project(
        {
            "sluice.yaml": "name: p4\n",
            "models/m.yaml": "name: m\nmethods:\n  t:\n    inputs: {n: {}}\n    run: 'true'\n",
            "workflows/w.yaml": "name: w\njobs: {a: {steps: [{run: 'true'}]}}\n",
        }
    )
    try:
        from core.service import Service
        from tui.app import SluiceApp

        svc = Service.open(root)
        plan = '{"kind":"workflow","name":"w","inputs":{},"jobs":{}}'
        with svc.db.write() as tx:
            tx.cx.executemany(
                "INSERT INTO queue_items (kind, target, inputs, inputs_key, pins, status, queued_by, queued_at) "
                "VALUES ('method', 'm.t', ?, ?, '{}', 'queued', 'ops@jump', ?)",
                [(f'{{"n":"{i}"}}', f'{{"n":"{i}"}}', 1.7e9 + i) for i in range(items)],
            )
            tx.cx.executemany(
                "INSERT INTO runs (kind, target, status, trigger, created_by, created_at, inputs, plan, cancel_requested, "
                "natural_at) VALUES ('workflow', 'w', 'succeeded', 'manual', 'ops@jump', ?, '{}', ?, 0, ?)",
                [(1.7e9 + i, plan, 1.7e9 + i) for i in range(runs)],
            )
        times: dict[str, float] = {}

        async def drive() -> None:
            t = time.perf_counter()
            app = SluiceApp(Service.open(root), start_engine=False, poll=False)
            async with app.run_test(size=(80, 24)) as pilot:
                app.refresh_now()
                await pilot.pause()
                times["first_paint_queue_ms"] = (time.perf_counter() - t) * 1000
                moves = []
                for _ in range(20):
                    t = time.perf_counter()
                    await pilot.press("down")
                    await pilot.pause()
                    moves.append((time.perf_counter() - t) * 1000)
                times["cursor_move_ms_median"] = statistics.median(moves)
                t = time.perf_counter()
                await pilot.press("2")
                app.refresh_now()
                await pilot.pause()
                times["switch_to_runs_ms"] = (time.perf_counter() - t) * 1000
                t = time.perf_counter()
                await pilot.press("o")
                app.refresh_now()
                await pilot.pause()
                times["natural_order_ms"] = (time.perf_counter() - t) * 1000

        async def baseline() -> float:
            """Pilot's own cost of a key press and a repaint, on a 10-row table."""
            from textual.app import App as TApp
            from textual.widgets import DataTable

            class Tiny(TApp):
                def compose(self):  # type: ignore[no-untyped-def]
                    yield DataTable(cursor_type="row")

                def on_mount(self) -> None:
                    t = self.query_one(DataTable)
                    t.add_columns("a", "b")
                    for i in range(10):
                        t.add_row(str(i), "x")
                    t.focus()

            app = Tiny()
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause()
                ms = []
                for _ in range(20):
                    t = time.perf_counter()
                    await pilot.press("down")
                    await pilot.pause()
                    ms.append((time.perf_counter() - t) * 1000)
                return statistics.median(ms)

        asyncio.run(drive())
        times["cursor_move_ms_over_harness"] = times["cursor_move_ms_median"] - asyncio.run(baseline())
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "queued": items,
            "runs": runs,
            **{k: round(v, 1) for k, v in times.items()},
            "max_rss_mb": round(rss_mb, 1),
            "target": "first paint < 2 s, cursor < 50 ms (over Pilot's own press-and-repaint cost), < 300 MB",
        }
    finally:
        stop(root)


def mouse_traffic() -> dict:
    """Bytes the dashboard writes for 50 hover moves with the mouse on, and the mode it enables."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    root = project(
        {"sluice.yaml": "name: m\n", "workflows/w.yaml": "name: w\njobs: {a: {steps: [{run: 'true'}]}}\n"}
    )
    out: dict = {}
    try:
        from core import queueing
        from core.service import Service

        svc = Service.open(root)
        queueing.add(svc, "workflow", "w", {}, note="one item")
        for flag in ("--mouse", None):
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            args = [str(REPO / ".venv" / "bin" / "sluice"), "tui"] + ([flag] if flag else [])
            p = subprocess.Popen(
                args,
                cwd=root,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                env={**os.environ, "TERM": "xterm-256color", "SSH_CONNECTION": "1 2 3 4"},
            )
            os.close(slave)

            def drain(seconds: float, master: int = master) -> bytes:
                data = b""
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    r, _, _ = select.select([master], [], [], 0.05)
                    if r:
                        data += os.read(master, 65536)
                return data

            first = drain(6.0)
            moved = b""
            enabled = b"\x1b[?1003h" in first
            for i in range(50 if enabled else 0):  # a terminal reports motion only when tracking is on
                os.write(master, f"\x1b[<35;{10 + i % 30};{3 + i % 10}M".encode())
                moved += drain(0.02)
            moved += drain(1.0)
            key = "mouse_on" if flag else "mouse_off_over_ssh"
            out[key] = {"any_motion_tracking_enabled": enabled, "bytes_for_50_hovers": len(moved)}
            p.send_signal(signal.SIGHUP)
            p.wait(timeout=10)
            os.close(master)
    finally:
        stop(root)
    return out


_PG: dict[str, Any] = {}


def pg_server(settings: str = "tests") -> Any:
    """A real PostgreSQL server on a loopback port, started once per run of this script.

    `tests`: the test suite's settings (tests/pg.py: fsync off, 400 connections);
    `default`: PostgreSQL's own defaults (fsync on, 100 connections), as a team would run it."""
    if settings not in _PG:
        sys.path.insert(0, str(REPO / "tests"))
        from pg import Server

        server = Server(Path(tempfile.mkdtemp(prefix=f"sluice-bench-pg-{settings}-")))
        server.start()
        if settings == "default":
            # restarted without the tests' `-c` overrides: only the port and the socket directory remain
            server._run(
                str(server.bin / "pg_ctl"),
                "-D",
                str(server.data),
                "-m",
                "fast",
                "-o",
                f"-p {server.port} -c listen_addresses=127.0.0.1 -k {server.base}",
                "-l",
                str(server.base / "log"),
                "-w",
                "restart",
            )
        _PG[settings] = server
    return _PG[settings]


def pg_database(server: Any, name: str) -> str:
    """A fresh database on the server; returns its URL."""
    name = f"{name}_{int(time.time() * 1000)}"
    server.admin(f"CREATE DATABASE {name}")
    return server.url(name)


def pg_settings(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True) as cx:
        return {
            k: cx.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
            for k in ("server_version", "max_connections", "fsync", "synchronous_commit")
        }


def on_postgres(bench):
    """Run a benchmark with the project's state in a fresh database on a real PostgreSQL server."""

    def run() -> dict:
        os.environ["SLUICE_DATABASE_URL"] = pg_database(pg_server(), f"bench_{bench.__name__}")
        try:
            result = bench()
        finally:
            del os.environ["SLUICE_DATABASE_URL"]
        result["backend"] = "postgresql"
        return result

    return run


# ---------------------------------------------------------------- P6: scale-out on PostgreSQL

AGENT = [str(REPO / ".venv" / "bin" / "sluice"), "agent", "start"]
P6_PHASE_TIMEOUT = 180.0  # per phase: a stalled engine or agent is reported, never waited on for ever


def p6(
    jobs: int = 2000, capacity: int = 25, timeout: float = P6_PHASE_TIMEOUT, settings: str = "default"
) -> dict:
    """2,000 jobs of `sleep 0.2` on PostgreSQL by 1 agent process of capacity 25, then by 4.

    The jobs are one run with `parallelism: 2000` in environment `pool`, which only the agent
    processes serve (the engine's own `local` agent is in no environment). Each phase has its
    own database, project and engine. Reports jobs/s of each phase, the ratio 4/1 (target >= 3.2),
    whether every job ran exactly once (each step appends its job id to a file), and the most
    connections the database had open at once (polled every 0.1 s; the poller's own is not counted).
    On PostgreSQL's default settings (100 connections); `p6_test_settings`: on the tests' (400)."""
    server = pg_server(settings)
    one = _p6_phase(server, 1, jobs, capacity, timeout)
    four = _p6_phase(server, 4, jobs, capacity, timeout)
    ratio = (
        round(four["jobs_per_s"] / one["jobs_per_s"], 2) if one["jobs_per_s"] and four["jobs_per_s"] else None
    )
    return {
        "jobs": jobs,
        "capacity_per_agent": capacity,
        "one_agent_jobs_per_s": one["jobs_per_s"],
        "four_agents_jobs_per_s": four["jobs_per_s"],
        "ratio_4_to_1": ratio,
        "exactly_once": one["exactly_once"] and four["exactly_once"],
        "all_succeeded": one["all_succeeded"] and four["all_succeeded"],
        "peak_connections_1": one["peak_connections"],
        "peak_connections_4": four["peak_connections"],
        "stalled": "; ".join(f"{p['agents']} agent(s): {p['stalled']}" for p in (one, four) if p["stalled"])
        or None,
        "target": "ratio >= 3.2, every job exactly once, never a stall",
        "postgresql": one["settings"],
        "phases": [one, four],
        "backend": "postgresql",
    }


def _p6_phase(server: Any, agents: int, jobs: int, capacity: int, timeout: float) -> dict:
    import psycopg

    url = pg_database(server, f"bench_p6_{agents}")
    env = {"SLUICE_DATABASE_URL": url}
    step = 'echo "$SLUICE_JOB_ID" >> "$SLUICE_PROJECT/ran"; sleep 0.2'
    root = project(
        {
            "sluice.yaml": "name: p6\nenvironments: {pool: {}}\n",
            "workflows/w.yaml": f"name: w\nenvironment: pool\njobs:\n  s:\n    parallelism: {jobs}\n"
            f"    steps: [{{run: '{step}'}}]\n",
        }
    )
    out: dict[str, Any] = {
        "agents": agents,
        "jobs_per_s": None,
        "stalled": None,
        "settings": pg_settings(url),
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    poll = psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True)
    try:
        sluice(root, "engine", "start", env=env, timeout=120)
        for i in range(agents):
            logs.append(open(root / f"agent-{i}.log", "wb"))  # closed in the finally below
            procs.append(
                subprocess.Popen(
                    [*AGENT, "--name", f"p6-{i}", "--env", "pool", "--capacity", str(capacity)],
                    cwd=root,
                    env={**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", **env},
                    stdout=subprocess.DEVNULL,
                    stderr=logs[-1],
                )
            )

        def scalar(sql: str) -> int:
            return int(poll.execute(sql).fetchone()[0])  # type: ignore[index]

        deadline = time.monotonic() + 60
        while scalar("SELECT COUNT(*) FROM agents WHERE name LIKE 'p6-%' AND lost = 0") < agents:
            if time.monotonic() > deadline:
                raise RuntimeError(f"p6: the {agents} agent process(es) did not register within 60 s")
            time.sleep(0.05)
        peak = scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()") - 1
        t = time.perf_counter()
        wall0 = time.time()
        sluice(root, "workflow", "run", "w", "--detach", env=env, timeout=120)
        out["run_created_s"] = round(time.time() - wall0, 2)
        done = running = 0
        while True:
            peak = max(
                peak, scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()") - 1
            )
            row = poll.execute(
                "SELECT COUNT(*) FILTER (WHERE status IN ('succeeded', 'failed', 'cancelled', 'skipped')), "
                "COUNT(*) FILTER (WHERE status = 'running') FROM jobs"
            ).fetchone()
            done, running = int(row[0]), int(row[1])  # type: ignore[index]
            if done >= jobs:
                break
            if time.perf_counter() - t > timeout:
                out["stalled"] = f"stalled at {done} of {jobs} after {timeout:.0f} s ({running} running)"
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - t
        out["seconds"] = round(elapsed, 1)
        out["finished"] = done
        if not out["stalled"]:
            out["jobs_per_s"] = round(jobs / elapsed, 1)
        # where the phase's time went: to the first job starting, the jobs' own span, and the
        # rate between the 10th and the 90th percent of them ending (no start-up, no tail)
        ends = sorted(
            r[0] for r in poll.execute("SELECT finished_at FROM jobs WHERE finished_at IS NOT NULL")
        )
        first = poll.execute("SELECT MIN(started_at) FROM jobs").fetchone()[0]  # type: ignore[index]
        if first is not None and len(ends) >= 10:
            out["first_job_started_s"] = round(first - wall0, 2)
            out["jobs_span_s"] = round(ends[-1] - first, 2)
            lo, hi = ends[len(ends) // 10], ends[len(ends) * 9 // 10]
            out["steady_jobs_per_s"] = round((len(ends) * 8 // 10) / (hi - lo), 1) if hi > lo else None
        statuses = dict(poll.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        out["job_statuses"] = statuses
        out["peak_connections"] = peak
        ran = (root / "ran").read_text().split() if (root / "ran").exists() else []
        twice = scalar(
            "SELECT COUNT(*) FROM (SELECT job_id FROM events WHERE kind = 'job.started' "
            "GROUP BY job_id HAVING COUNT(*) > 1) AS t"
        )
        out["ran_lines"], out["distinct_jobs_ran"], out["started_twice"] = len(ran), len(set(ran)), twice
        out["exactly_once"] = len(ran) == len(set(ran)) == jobs and twice == 0  # each ran, none twice
        out["all_succeeded"] = statuses == {"succeeded": jobs}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
        errors = []
        for i in range(len(logs)):
            for raw in (root / f"agent-{i}.log").read_text(errors="replace").splitlines():
                line = raw.strip()[:200]
                if line and line not in errors and not line.startswith(f"sluice: agent p6-{i} running"):
                    errors.append(line)
        out["agent_stderr"] = errors[:5]
        poll.close()
        stop(root)
    return out


# ---------------------------------------------------------------- P5: a long history


def p5(runs: int = 100_000, events: int = 1_000_000, repeats: int = 11) -> dict:
    """A history of 100,000 runs and 1,000,000 events against one of 100 runs and 1,000 events.

    SPEC 12 P5: `run list --limit 50` as fast with the long history (indexed); the scheduler's work
    per tick independent of history. Timed: the CLI (`run list --limit 50`, also filtered by
    workflow; `history --limit 50`, also of one run), the same reads in this process without the
    CLI's start-up (`store_*`), and a scheduler tick after a new run. The two stores are timed in
    turn, so that a load on the machine weighs on both alike. `<what>_ms` is the median with the
    long history, `<what>_x` that divided by the median with the short one (target: about 1)."""
    from core.service import Service

    files = {
        "sluice.yaml": "name: p5\n",
        "workflows/w.yaml": "name: w\njobs: {a: {steps: [{run: 'true'}]}}\n",
        "workflows/v.yaml": "name: v\njobs: {a: {steps: [{run: 'true'}]}}\n",
    }
    big, small = project(files), project(files)
    try:
        t = time.perf_counter()
        _p5_fill(big, runs, events)
        fill_s = round(time.perf_counter() - t, 1)
        _p5_fill(small, 100, 1000)
        stores = {big: Service.open(big), small: Service.open(small)}
        middle = {big: runs // 2, small: 50}

        def cli(*args: str) -> Any:
            return lambda root: sluice(root, *args)

        reads: dict[str, Any] = {
            "run_list": cli("run", "list", "--limit", "50"),
            "run_list_workflow": cli("run", "list", "--workflow", "w", "--limit", "50"),
            "history": cli("history", "--limit", "50"),
            "history_of_a_run": lambda root: sluice(
                root, "history", "--run", str(middle[root]), "--limit", "50"
            ),
            "store_run_list": lambda root: stores[root].list_runs(limit=50),
            "store_run_list_workflow": lambda root: stores[root].list_runs(workflow="w", limit=50),
            "store_history": lambda root: stores[root].history(50),
            "store_history_of_a_run": lambda root: stores[root].history(50, run_id=middle[root]),
        }
        ms: dict[Path, dict[str, list[float]]] = {big: {}, small: {}}
        for key, read in reads.items():
            for _ in range(repeats if not key.startswith("store_") else repeats * 3):
                for root in (big, small):
                    t = time.perf_counter()
                    read(root)
                    ms[root].setdefault(key, []).append((time.perf_counter() - t) * 1000)
        for root in (big, small):
            ms[root]["tick"] = _p5_ticks(stores[root], repeats)
        median = {root: {k: statistics.median(v) for k, v in ms[root].items()} for root in (big, small)}
        out: dict[str, Any] = {"runs": runs, "events": events}
        for key, value in median[big].items():
            out[f"{key}_ms"] = round(value, 2)
            out[f"{key}_x"] = round(value / median[small][key], 2) if median[small][key] else None
        out["at_100_runs_ms"] = {k: round(v, 2) for k, v in median[small].items()}
        out["fill_s"] = fill_s
        out["db_mb"] = round((big / ".sluice" / "state.db").stat().st_size / 2**20, 1)
        out["target"] = "each _x about 1 (indexed; tick independent of history)"
        return out
    finally:
        stop(big)
        stop(small)


def _p5_fill(root: Path, runs: int, events: int) -> None:
    """Runs (one job each) and events written straight into a fresh SQLite store, in one transaction."""
    from core.service import Service

    svc = Service.open(root)
    plan = json.dumps(
        {"kind": "workflow", "name": "w", "inputs": {}, "jobs": {"a": {"needs": [], "steps": []}}},
        separators=(",", ":"),
    )
    kinds = ("run.created", "job.started", "job.succeeded", "run.succeeded")
    per_run = max(1, events // runs)
    t0 = 1.7e9
    with svc.db.write() as tx:
        tx.cx.executemany(
            "INSERT INTO runs (kind, target, status, trigger, created_by, created_at, started_at, finished_at, "
            "inputs, plan, cancel_requested, natural_at) "
            "VALUES ('workflow', ?, 'succeeded', 'manual', 'ops@jump', ?, ?, ?, '{}', ?, 0, ?)",
            (("w" if i % 2 else "v", t0 + i, t0 + i, t0 + i + 1, plan, t0 + i) for i in range(runs)),
        )
        tx.cx.executemany(
            "INSERT INTO jobs (run_id, name, base, position, status, attempt, started_at, finished_at, outputs, "
            "claim_token, exit_code, agent) VALUES (?, 'a', 'a', 0, 'succeeded', 1, ?, ?, '{}', 1, 0, 'local')",
            ((i + 1, t0 + i, t0 + i + 1) for i in range(runs)),
        )
        tx.cx.executemany(
            "INSERT INTO events (at, actor, kind, run_id, job_id, workflow, message, details) "
            "VALUES (?, 'sluice', ?, ?, ?, 'w', ?, '{}')",
            (
                (t0 + n / per_run, kinds[n % 4], n // per_run + 1, n // per_run + 1, f"event {n}")
                for n in range(events)
            ),
        )


def _p5_ticks(svc: Any, samples: int) -> list[float]:
    """Ms of scheduler ticks, each after one new run (the scheduler in this process, no engine:
    its work per change, with the history in the store beside it)."""
    from core.engine.scheduler import Scheduler

    scheduler = Scheduler(svc.db, svc.project, service=svc)
    scheduler.tick()  # the first tick looks at every active run once
    out = []
    for _ in range(samples):
        svc.run_workflow("w", {})
        t = time.perf_counter()
        scheduler.tick()
        out.append((time.perf_counter() - t) * 1000)
    return out


BENCHES = {
    "p1": p1,
    "p1_fanout": p1_fanout,
    "p2": p2,
    "p3": p3,
    "p4": p4,
    "mouse": mouse_traffic,
    "p5": p5,
    "p1_pg": on_postgres(p1),
    "p1_fanout_pg": on_postgres(p1_fanout),
    "p2_pg": on_postgres(p2),
    "p3_pg": on_postgres(p3),
    "p6": p6,
    "p6_test_settings": lambda: p6(settings="tests"),
}
# PostgreSQL like the *_pg ones, and minutes each: run them by name
ON_POSTGRES = {"p6", "p6_test_settings"}


def main() -> None:
    names = sys.argv[1:] or [n for n in BENCHES if not n.endswith("_pg") and n not in ON_POSTGRES]
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        run_all(names, machine)
    finally:
        for server in _PG.values():
            server.stop()
            shutil.rmtree(server.base, ignore_errors=True)


def run_all(names: list[str], machine: dict) -> None:
    for name in names:
        load = os.getloadavg()
        result = BENCHES[name]()
        # other work on the machine skews every figure: say how loaded it was (1-minute averages)
        result["machine"] = {
            **machine,
            "load_before": round(load[0], 2),
            "load_after": round(os.getloadavg()[0], 2),
        }
        result["at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        shown = {
            k: v for k, v in result.items() if k not in ("machine", "at") and not isinstance(v, (dict, list))
        }
        print(f"{name:10s} " + "  ".join(f"{k}={v}" for k, v in shown.items()), flush=True)


if __name__ == "__main__":
    main()
