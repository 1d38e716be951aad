"""Real projects in tmp dirs, the real CLI in subprocesses, real engines (stopped after each test)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


class Proj:
    def __init__(self, root: Path, template_db: Path, db_url: str | None = None):
        self.root = root
        self.template_db = template_db
        self.db_url = db_url  # PostgreSQL: the test's own database; None: the project's SQLite file

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env.update({"SLUICE_KILL_GRACE": "2", "NO_COLOR": "1", "PYTHONPATH": str(REPO)})
        if self.db_url:
            env["SLUICE_DATABASE_URL"] = self.db_url
        env.update(extra)
        return env

    def sluice(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60, input: str | None = None
    ) -> Result:
        p = subprocess.run(
            [sys.executable, "-m", "tui.cli", *args],
            cwd=self.root,
            env=self.env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        return Result(p.returncode, p.stdout, p.stderr)

    def ok(self, *args: str, **kw) -> Result:
        r = self.sluice(*args, **kw)
        assert r.code == 0, f"sluice {' '.join(args)} -> {r.code}\nstdout: {r.out}\nstderr: {r.err}"
        return r

    def popen(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tui.cli", *args],
            cwd=cwd or self.root,
            env=self.env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def engine_info(self) -> dict | None:
        try:
            return json.loads((self.root / ".sluice" / "engine.json").read_text())
        except (OSError, ValueError):
            return None

    def service(self):
        from core.service import Service

        return Service.open(self.root)

    def wait_for(self, check: Callable[[], object], timeout: float = 20, what: str = "condition") -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def kill_engine(self, sig: int = signal.SIGKILL) -> None:
        info = self.engine_info()
        if info and info.get("pid"):
            try:
                os.kill(info["pid"], sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not gone(info["pid"]):
                time.sleep(0.02)


def twin(proj: Proj, tmp_path: Path, name: str) -> tuple[Proj, dict[str, str]]:
    """A second project directory (another host, as far as the engines know) on the same database."""
    db_url = proj.db_url or f"sqlite:///{proj.root / '.sluice' / 'state.db'}"
    other = Proj(tmp_path / name, proj.template_db, db_url)
    other.root.mkdir()
    for path in proj.root.rglob("*.yaml"):
        other.write(str(path.relative_to(proj.root)), path.read_text())
    return other, {"SLUICE_DATABASE_URL": db_url}


def gone(pid: int) -> bool:
    """Dead or a zombie (in a container, nobody may reap an orphan)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def kill_leftovers(root: Path) -> None:
    """Job processes of a killed engine live in their own sessions: none may outlive its test."""
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"SLUICE_PROJECT={root}".encode() in f.read().split(b"\0"):
                    os.killpg(os.getpgid(int(pid)), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(why): a test that only makes sense on SQLite (says why)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test on a project runs on both backends, unless it says why it is SQLite-only."""
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("backend", ["sqlite"] if only else BACKENDS, scope="function")


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate one database per test session; each project starts from a copy (fast, and real)."""
    from core.store.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "state.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PostgreSQL server on a loopback port, with a migrated template database."""
    from pg import Server

    from core.store.migrate import upgrade

    server = Server(Path(tempfile.mkdtemp(prefix="sluice-pg-")))
    server.start()
    server.admin("CREATE DATABASE sluice_template")
    upgrade(server.url("sluice_template"))
    yield server
    server.stop()


_pg_counter = [0]


@pytest.fixture
def proj(
    tmp_path: Path,
    template_db: Path,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Proj]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".sluice").mkdir()
    db_url = None
    if backend == "postgresql":
        server = request.getfixturevalue("pg_server")
        _pg_counter[0] += 1
        name = f"t{os.getpid()}_{_pg_counter[0]}"
        server.admin(f"CREATE DATABASE {name} TEMPLATE sluice_template")
        db_url = server.url(name)
        monkeypatch.setenv("SLUICE_DATABASE_URL", db_url)  # the in-process service() too
    else:
        shutil.copy(template_db, root / ".sluice" / "state.db")
    p = Proj(root, template_db, db_url)
    p.write("sluice.yaml", "name: test\ncapacity: 4\n")
    yield p
    p.kill_engine()
    kill_leftovers(root)


@pytest.fixture
def fresh_proj(tmp_path: Path) -> Iterator[Proj]:
    """A project without a pre-made database (to test creation and migration)."""
    root = tmp_path / "fresh"
    root.mkdir()
    p = Proj(root, Path())
    p.write("sluice.yaml", "name: fresh\n")
    yield p
    p.kill_engine()


@pytest.fixture
def defs_proj(tmp_path: Path) -> Iterator[Proj]:
    """A project directory with no database, for tests of the definitions alone: not parametrized
    by backend (they would run twice for nothing), and no command of theirs may create a store."""
    root = tmp_path / "defs"
    root.mkdir()
    p = Proj(root, Path())
    p.write("sluice.yaml", "name: test\n")
    yield p
    p.kill_engine()
    kill_leftovers(root)
    assert not (root / ".sluice" / "state.db").exists(), "a definitions test created a database"


def engine_pids(root: Path) -> list[int]:
    """Live engine processes of a project, by command line (engine.json alone can outlive a killed engine)."""
    pids = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"core.engine" in argv and str(root).encode() in argv and not gone(int(pid)):
            pids.append(int(pid))
    return pids


# A paused workflow whose timer fires every second: each fire is recorded as skipped, so a fire time
# in the store proves that the engine handled a deadline at that moment. Tests that must show that
# something does NOT happen wait for such fires instead of sleeping.
TICKER = 'name: ticker\ntimer: "* * * * * *"\njobs: {t: {steps: [{run: "true"}]}}\n'


def add_ticker(proj: Proj) -> None:
    """Add the paused ticker (before the engine starts, so it never starts a run)."""
    from core import flow

    proj.write("workflows/ticker.yaml", TICKER)
    flow.pause(proj.service(), "ticker", "the tests' clock", actor="tests")


def wait_ticks(proj: Proj, after: float, count: int = 2, timeout: float = 30) -> None:
    """Wait until the engine has handled `count` ticker fires later than `after` (epoch seconds)."""
    svc = proj.service()
    proj.wait_for(
        lambda: (
            svc.db.scalar(
                "SELECT COUNT(*) FROM timer_fires WHERE workflow = 'ticker' AND fire_at > ?", (after,)
            )
            >= count
        ),
        timeout=timeout,
        what=f"{count} engine ticks after {after:.1f}",
    )
