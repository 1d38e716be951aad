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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"


def sluice(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    p = subprocess.run(
        [str(REPO / ".venv" / "bin" / "sluice"), *args], cwd=root, env=env, capture_output=True, text=True
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


_PG: list = []


def on_postgres(bench):
    """Run a benchmark with the project's state in a fresh database on a real PostgreSQL server."""

    def run() -> dict:
        sys.path.insert(0, str(REPO / "tests"))
        from pg import Server

        if not _PG:
            server = Server(Path(tempfile.mkdtemp(prefix="sluice-bench-pg-")))
            server.start()
            _PG.append(server)
        server = _PG[0]
        name = f"bench_{bench.__name__}_{int(time.time())}"
        server.admin(f"CREATE DATABASE {name}")
        os.environ["SLUICE_DATABASE_URL"] = server.url(name)
        try:
            result = bench()
        finally:
            del os.environ["SLUICE_DATABASE_URL"]
        result["backend"] = "postgresql"
        return result

    return run


BENCHES = {
    "p1": p1,
    "p1_fanout": p1_fanout,
    "p2": p2,
    "p3": p3,
    "p4": p4,
    "mouse": mouse_traffic,
    "p1_pg": on_postgres(p1),
    "p1_fanout_pg": on_postgres(p1_fanout),
    "p2_pg": on_postgres(p2),
}


def main() -> None:
    names = sys.argv[1:] or [n for n in BENCHES if not n.endswith("_pg")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        run_all(names, machine)
    finally:
        for server in _PG:
            server.stop()


def run_all(names: list[str], machine: dict) -> None:
    for name in names:
        result = BENCHES[name]()
        result["machine"] = machine
        result["at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name:10s} " + "  ".join(f"{k}={v}" for k, v in result.items() if k not in ("machine", "at")))


if __name__ == "__main__":
    main()
