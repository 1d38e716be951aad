"""Parse sluice.yaml, models/*.yaml and workflows/*.yaml into validated objects.

We walk PyYAML's node tree (not the constructed values) so that every problem can be
reported as `path:line:col: message`, with a did-you-mean for misspelt keys and names.
"""

from __future__ import annotations

import functools
import gc
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import yaml

from .durations import parse_duration
from .expressions import EXPR_RE, parse_expression
from .inputs import coerce_one, compile_pattern
from .names import did_you_mean
from .objects import (
    CATCH_UP_VALUES,
    IF_VALUES,
    INPUT_TYPES,
    LOCK_VALUES,
    AgentSpec,
    Freeze,
    Hold,
    InputSpec,
    Job,
    Material,
    Method,
    Model,
    NotifyHook,
    Project,
    Retry,
    Step,
    Timer,
    Trigger,
    Window,
    Workflow,
    env_name,
)

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Bounds that keep a hostile file from costing more than a moment to validate (SPEC 2).
MAX_FILE_BYTES = 1024 * 1024  # a definition file is at most 1 MiB
MAX_DEPTH = 64  # nesting levels (a real definition uses fewer than 10)
MAX_ALIAS_NODES = 10_000  # values that aliases may add (an alias bomb adds billions)
MAX_COUNT = 10_000  # parallelism, capacity, concurrency
MAX_RETRIES = 100
MAX_APPROVALS = 100  # approvals: distinct people who must release a hold
MAX_TIMEOUT_S = 366 * 86400  # timeouts: at most a year


_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?")
_SIZE_UNITS = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
MIN_LOG_LIMIT = 64 * 1024
MAX_LOG_LIMIT = 64 * 1024**3


def _fmt_size(n: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if n % _SIZE_UNITS[unit] == 0:
            return f"{n // _SIZE_UNITS[unit]}{unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class DefinitionError(Exception):
    """Raised when a project's definitions are invalid; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ProjectNotFound(Exception):
    pass


def find_project_root(start: Path | None = None) -> Path:
    explicit = os.environ.get("SLUICE_PROJECT")
    if start is None and explicit:
        start = Path(explicit)
        if not (start / "sluice.yaml").is_file():
            raise ProjectNotFound(f"no sluice.yaml in {start} (from SLUICE_PROJECT)")
        return start.resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "sluice.yaml").is_file():
            return d
    raise ProjectNotFound(f"no sluice.yaml in {here} or any parent; run 'sluice init' or pass --project DIR")


class _File:
    """Problem collector bound to one file."""

    def __init__(self, loader: _Loader_, path: Path):
        self.loader = loader
        self.path = path
        self.rel = loader.rel(path)

    def err(self, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        col = node.start_mark.column + 1 if node is not None else 1
        self.loader.problems.append(Problem(self.rel, line, col, message))

    # --- typed readers: each returns a python value or None after reporting ---

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                self.err(k, f"{what}: keys must be strings")
                continue
            if k.value in out:
                self.err(k, f"duplicate key '{k.value}'")
                continue
            out[k.value] = (k, v)
        return out

    def keys(
        self,
        m: dict[str, tuple[yaml.Node, yaml.Node]],
        allowed: Iterable[str],
        what: str,
        required: Iterable[str] = (),
    ) -> None:
        allowed = list(allowed)
        for key, (knode, _) in m.items():
            if key not in allowed:
                self.err(knode, f"unknown key '{key}' in {what}{did_you_mean(key, allowed)}")
        for key in required:
            if key not in m:
                self.loader.problems.append(
                    Problem(self.rel, *self._pos_of_map(m), f"{what} is missing required key '{key}'")
                )

    def _pos_of_map(self, m: dict[str, tuple[yaml.Node, yaml.Node]]) -> tuple[int, int]:
        for knode, _ in m.values():
            return knode.start_mark.line + 1, knode.start_mark.column + 1
        return 1, 1

    def scalar(self, node: yaml.Node) -> Any:
        return yaml.load(yaml.serialize(node), Loader=_Loader) if node is not None else None

    def string(self, node: yaml.Node, what: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag in (
            "tag:yaml.org,2002:str",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
        ):
            return str(node.value)
        self.err(node, f"{what} must be a string")
        return None

    def name(self, node: yaml.Node, what: str) -> str | None:
        s = self.string(node, what)
        if s is not None and not NAME_RE.match(s):
            self.err(node, f"{what} '{s}' must use letters, digits, '-', '_' or '.'")
            return None
        return s

    def integer(self, node: yaml.Node, what: str, minimum: int = 0, maximum: int = MAX_COUNT) -> int | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            if len(node.value) > 30:  # never turn a thousand digits into an int just to refuse it
                self.err(node, f"{what} must be at most {maximum:,}")
                return None
            v = int(self.scalar(node))
            if v < minimum:
                self.err(node, f"{what} must be at least {minimum}")
                return None
            if v > maximum:
                self.err(node, f"{what} must be at most {maximum:,}")
                return None
            return v
        self.err(node, f"{what} must be an integer")
        return None

    def size(self, node: yaml.Node, what: str, minimum: int, maximum: int) -> int | None:
        """A size in bytes: `104857600`, or with a binary unit, `512KiB`, `100MiB`, `2GiB`."""
        raw = node.value if isinstance(node, yaml.ScalarNode) else None
        m = _SIZE.fullmatch(raw.strip()) if isinstance(raw, str) and len(raw) <= 30 else None
        if m is None:
            self.err(node, f"{what} must be a size such as 100MiB, 512KiB or a number of bytes")
            return None
        value = int(m.group(1)) * _SIZE_UNITS[m.group(2) or ""]
        if not minimum <= value <= maximum:
            self.err(node, f"{what} must be between {_fmt_size(minimum)} and {_fmt_size(maximum)}")
            return None
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            return bool(self.scalar(node))
        self.err(node, f"{what} must be true or false")
        return None

    def strings(self, node: yaml.Node, what: str) -> list[str]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            return [node.value]
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, f"{what} must be a list of strings")
            return []
        out = []
        for item in node.value:
            s = self.string(item, f"each item of {what}")
            if s is not None:
                out.append(s)
        return out

    def choice(self, node: yaml.Node, what: str, choices: Iterable[str]) -> str | None:
        s = self.string(node, what)
        choices = list(choices)
        if s is not None and s not in choices:
            self.err(node, f"{what} must be one of {', '.join(choices)}, not '{s}'{did_you_mean(s, choices)}")
            return None
        return s

    def duration(self, node: yaml.Node, what: str) -> float | None:
        s = self.string(node, what)
        if s is None:
            return None
        try:
            seconds = parse_duration(s)
        except ValueError as e:
            self.err(node, f"{what}: {e}")
            return None
        if seconds > MAX_TIMEOUT_S:
            self.err(node, f"{what}: '{s}' is longer than a year")
            return None
        return seconds

    def command(self, node: yaml.Node, what: str) -> str | list[str] | None:
        if isinstance(node, yaml.SequenceNode):
            argv = self.strings(node, what)
            if not argv:
                self.err(node, f"{what} must not be empty")
                return None
            return argv
        s = self.string(node, what)
        if s is not None and not s.strip():
            self.err(node, f"{what} must not be empty")
            return None
        return s

    def string_map(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, str]]:
        m = self.mapping(node, what)
        out: dict[str, tuple[yaml.Node, str]] = {}
        for key, (_knode, vnode) in (m or {}).items():
            if isinstance(vnode, yaml.ScalarNode) and vnode.tag == "tag:yaml.org,2002:bool":
                out[key] = (vnode, "true" if self.scalar(vnode) else "false")
                continue
            s = self.string(vnode, f"{what}.{key}")
            if s is not None:
                out[key] = (vnode, s)
        return out


class _Loader_:
    def __init__(self, root: Path):
        self.root = root
        self.problems: list[Problem] = []
        # deferred checks that need every file loaded: (file, node, kind, value)
        self.refs: list[tuple[_File, yaml.Node | None, Callable[[Project], str | None]]] = []
        # expressions wait for the job graph: (file, node, text, workflow, job)
        self.pending_expr: list[tuple[_File, yaml.Node, str, Workflow, str]] = []

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def parse(self, path: Path) -> tuple[_File, yaml.Node | None]:
        f = _File(self, path)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)  # never read more than the bound
        except OSError as e:
            self.problems.append(Problem(f.rel, 1, 1, f"cannot read file: {e.strerror or e}"))
            return f, None
        if len(data) > MAX_FILE_BYTES:
            self.problems.append(
                Problem(f.rel, 1, 1, "file is larger than 1 MiB; split it (one model or workflow a file)")
            )
            return f, None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            self.problems.append(
                Problem(f.rel, line, col, f"not UTF-8: byte 0x{data[e.start]:02x}; save the file as UTF-8")
            )
            return f, None
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = getattr(e, "problem", None) or str(e)
            self.problems.append(Problem(f.rel, line, col, f"YAML syntax error: {problem}"))
            return f, None
        except RecursionError:  # the pure-Python composer on very deep nesting
            self.problems.append(Problem(f.rel, 1, 1, f"nesting deeper than {MAX_DEPTH} levels"))
            return f, None
        if node is None:
            self.problems.append(Problem(f.rel, 1, 1, "file is empty"))
            return f, None
        shape = _shape_problem(node)
        if shape is not None:
            bad, message = shape
            f.err(bad, message)
            return f, None
        return f, node

    # ---------------------------------------------------------------- project

    def load(self) -> Project:
        f, node = self.parse(self.root / "sluice.yaml")
        project = Project(root=self.root, name=self.root.name)
        if node is not None:
            self.project_settings(f, node, project)
        seen: dict[str, tuple[str, Path]] = {}
        for kind, folder in (("model", "models"), ("workflow", "workflows")):
            d = self.root / folder
            if not d.is_dir():
                continue
            for path in sorted(d.iterdir()):
                if path.suffix not in (".yaml", ".yml") or not path.is_file():
                    continue
                mf, mnode = self.parse(path)
                if mnode is None:
                    continue
                obj: Model | Workflow | None = (
                    self.model(mf, mnode) if kind == "model" else self.workflow(mf, mnode)
                )
                if obj is None:
                    continue
                key = f"{kind}:{obj.name}"
                if key in seen:
                    mf.err(mnode, f"duplicate {kind} name '{obj.name}' (also defined in {seen[key][0]})")
                    continue
                seen[key] = (mf.rel, path)
                if isinstance(obj, Model):
                    project.models[obj.name] = obj
                else:
                    project.workflows[obj.name] = obj
        for f, n, check in self.refs:
            msg = check(project)
            if msg:
                f.err(n, msg)
        if self.problems:
            self.problems.sort(key=lambda p: (p.path, p.line, p.col))
            raise DefinitionError(self.problems)
        return project

    def project_settings(self, f: _File, node: yaml.Node, project: Project) -> None:
        m = f.mapping(node, "sluice.yaml")
        if m is None:
            return
        f.keys(
            m,
            (
                "name",
                "timezone",
                "database",
                "capacity",
                "log_limit",
                "trust_sluice_user",
                "groups",
                "environments",
                "agents",
                "four_eyes",
                "break_glass",
                "windows",
                "freezes",
                "notify",
            ),
            "sluice.yaml",
        )
        if "name" in m:
            project.name = f.name(m["name"][1], "name") or project.name
        if "timezone" in m:
            tz = f.string(m["timezone"][1], "timezone")
            if tz is not None:
                from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

                try:
                    ZoneInfo(tz)
                    project.timezone = tz
                except (ZoneInfoNotFoundError, ValueError):
                    f.err(m["timezone"][1], f"unknown timezone '{tz}'")
        if "database" in m:
            url = f.string(m["database"][1], "database")
            problem = _database_problem(url, self.root) if url is not None else None
            if problem:
                f.err(m["database"][1], problem)
            else:
                project.database = url
        if "capacity" in m:
            project.capacity = f.integer(m["capacity"][1], "capacity", 1, MAX_COUNT)
        if "log_limit" in m:
            limit = f.size(m["log_limit"][1], "log_limit", MIN_LOG_LIMIT, MAX_LOG_LIMIT)
            if limit is not None:
                project.log_limit = limit
        if "trust_sluice_user" in m:
            project.trust_sluice_user = bool(f.boolean(m["trust_sluice_user"][1], "trust_sluice_user"))
        if "groups" in m:
            for gname, (_gk, gv) in (f.mapping(m["groups"][1], "groups") or {}).items():
                project.groups[gname] = f.strings(gv, f"groups.{gname}")
        if "environments" in m:
            for ename, (ek, ev) in (f.mapping(m["environments"][1], "environments") or {}).items():
                if f.name(ek, "environment name") is None:
                    continue
                em = f.mapping(ev, f"environments.{ename}") if not _is_null(ev) else {}
                if em is not None:
                    f.keys(em, ("description",), f"environments.{ename}")
                project.environments[ename] = {}
        if "agents" in m:
            for aname, (ak, av) in (f.mapping(m["agents"][1], "agents") or {}).items():
                if f.name(ak, "agent name") is None:
                    continue
                spec = AgentSpec(name=aname)
                am = f.mapping(av, f"agents.{aname}") if not _is_null(av) else {}
                if am is None:
                    continue
                f.keys(am, ("environments", "resources", "capacity"), f"agents.{aname}")
                if "environments" in am:
                    spec.environments = f.strings(am["environments"][1], f"agents.{aname}.environments")
                    for i, env in enumerate(spec.environments):
                        enode = _item(am["environments"][1], i)
                        if env not in project.environments:
                            f.err(
                                enode, f"unknown environment '{env}'{did_you_mean(env, project.environments)}"
                            )
                if "resources" in am:
                    spec.resources = f.strings(am["resources"][1], f"agents.{aname}.resources")
                if "capacity" in am:
                    spec.capacity = f.integer(am["capacity"][1], f"agents.{aname}.capacity", 1, MAX_COUNT)
                project.agents[aname] = spec
        if "four_eyes" in m:
            project.four_eyes = bool(f.boolean(m["four_eyes"][1], "four_eyes"))
        if "break_glass" in m:
            group = f.string(m["break_glass"][1], "break_glass")
            if group is not None and group not in project.groups:
                f.err(
                    m["break_glass"][1],
                    f"break_glass: unknown group '{group}'{did_you_mean(group, project.groups)} "
                    "(name a group of sluice.yaml's groups:)",
                )
            else:
                project.break_glass = group
        if "windows" in m:
            for wname, (wk, wv) in (f.mapping(m["windows"][1], "windows") or {}).items():
                if f.name(wk, "window name") is not None:
                    window = self.window(f, wv, wname)
                    if window is not None:
                        project.windows[wname] = window
        if "freezes" in m:
            fnode = m["freezes"][1]
            if not isinstance(fnode, yaml.SequenceNode):
                f.err(fnode, "freezes must be a list of {from, to, reason}")
            else:
                for item in fnode.value:
                    freeze = self.freeze(f, item, project.timezone)
                    if freeze is not None:
                        project.freezes.append(freeze)
        if "notify" in m:
            nnode = m["notify"][1]
            if not isinstance(nnode, yaml.SequenceNode):
                f.err(nnode, "notify must be a list of {on, run}")
            else:
                for item in nnode.value:
                    hook = self.notify_hook(f, item)
                    if hook is not None:
                        project.notify.append(hook)

    def window(self, f: _File, node: yaml.Node, name: str) -> Window | None:
        where = f"windows.{name}"
        wm = f.mapping(node, where)
        if wm is None:
            return None
        f.keys(wm, ("cron", "duration"), where, required=("cron", "duration"))
        if "cron" not in wm or "duration" not in wm:
            return None
        cron = self.cron(f, wm["cron"][1], f"{where}.cron")
        duration = f.duration(wm["duration"][1], f"{where}.duration")
        if duration is not None and duration <= 0:
            f.err(wm["duration"][1], f"{where}.duration must be longer than 0s")
            return None
        if cron is None or duration is None:
            return None
        return Window(name=name, cron=cron, duration=duration)

    def freeze(self, f: _File, node: yaml.Node, tz: str | None) -> Freeze | None:
        fm = f.mapping(node, "a freeze")
        if fm is None:
            return None
        f.keys(fm, ("from", "to", "reason", "except"), "freeze", required=("from", "to", "reason"))
        if not {"from", "to", "reason"} <= set(fm):
            return None
        start = self.moment(f, fm["from"][1], "freeze.from", tz)
        end = self.moment(f, fm["to"][1], "freeze.to", tz)
        reason = f.string(fm["reason"][1], "freeze.reason")
        if reason is not None and not reason.strip():
            f.err(fm["reason"][1], "freeze.reason must not be empty")
            reason = None
        if start is not None and end is not None and end <= start:
            f.err(fm["to"][1], "freeze.to must come after freeze.from")
            return None
        freeze = Freeze(start=start or 0, end=end or 0, reason=reason or "")
        if "except" in fm:
            enode = fm["except"][1]
            freeze.except_ = f.strings(enode, "freeze.except")
            for i, wf in enumerate(freeze.except_):
                self.refs.append((f, _item(enode, i), functools.partial(_check_workflow, name=wf)))
        return freeze if start is not None and end is not None and reason else None

    def moment(self, f: _File, node: yaml.Node, what: str, tz: str | None) -> float | None:
        """An ISO 8601 time (2026-12-20T00:00), in the project's timezone unless it names one."""
        from datetime import datetime
        from zoneinfo import ZoneInfo

        text = node.value if isinstance(node, yaml.ScalarNode) else None
        try:
            at = datetime.fromisoformat(str(text).strip())
            if at.tzinfo is None:
                at = at.replace(tzinfo=ZoneInfo(tz)) if tz else at.astimezone()
            return at.timestamp()
        except (ValueError, TypeError, OverflowError, OSError):
            f.err(node, f"{what}: '{text}' is not a time (use ISO 8601, e.g. 2026-12-20T00:00)")
            return None

    def notify_hook(self, f: _File, node: yaml.Node) -> NotifyHook | None:
        nm = f.mapping(node, "a notify hook")
        if nm is None:
            return None
        f.keys(nm, ("on", "run"), "notify", required=("on", "run"))
        if "on" not in nm or "run" not in nm:
            return None
        kinds = f.strings(nm["on"][1], "notify.on")
        if not kinds:
            f.err(nm["on"][1], "notify.on must list at least one event kind (e.g. job.held)")
            return None
        run = f.command(nm["run"][1], "notify.run")
        return NotifyHook(on=kinds, run=run) if run is not None else None

    def cron(self, f: _File, node: yaml.Node, what: str) -> str | None:
        """A cron expression that parses and fires at least once."""
        cron = f.string(node, what)
        if cron is None:
            return None
        from croniter import croniter

        if not croniter.is_valid(cron):
            f.err(node, f"{what} '{cron}' is not a valid cron expression")
            return None
        problem = _never_fires(cron, what)
        if problem:
            f.err(node, problem)
            return None
        return cron

    def env_map(self, f: _File, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, str]]:
        """`env:` keys become environment variable names: only [A-Za-z_][A-Za-z0-9_]*."""
        if isinstance(node, yaml.MappingNode):
            for knode, _v in node.value:
                if isinstance(knode, yaml.ScalarNode) and not ENV_NAME_RE.match(knode.value):
                    f.err(
                        knode,
                        f"{what}: '{knode.value}' is not a valid environment variable name "
                        "(use letters, digits and '_', not starting with a digit)",
                    )
        return {k: v for k, v in f.string_map(node, what).items() if ENV_NAME_RE.match(k)}

    # ---------------------------------------------------------------- inputs

    def inputs(self, f: _File, node: yaml.Node, what: str) -> dict[str, InputSpec]:
        out: dict[str, InputSpec] = {}
        for iname, (ik, iv) in (f.mapping(node, what) or {}).items():
            if f.name(ik, "input name") is None:
                continue
            if not ENV_NAME_RE.match(env_name(iname)):
                f.err(
                    ik,
                    f"input name '{iname}' must use letters, digits, '-' or '_' (it becomes ${env_name(iname)})",
                )
                continue
            spec = InputSpec(name=iname)
            im = f.mapping(iv, f"{what}.{iname}") if not _is_null(iv) else {}
            if im is None:
                continue
            where = f"{what}.{iname}"
            f.keys(im, ("type", "required", "default", "enum", "pattern", "description", "secret"), where)
            if "type" in im:
                spec.type = f.choice(im["type"][1], f"{where}.type", INPUT_TYPES) or "string"
            if "required" in im:
                spec.required = bool(f.boolean(im["required"][1], f"{where}.required"))
            if "description" in im:
                spec.description = f.string(im["description"][1], f"{where}.description") or ""
            if "secret" in im:
                spec.secret = bool(f.boolean(im["secret"][1], f"{where}.secret"))
            if "pattern" in im:
                pat = f.string(im["pattern"][1], f"{where}.pattern")
                if pat is not None:
                    try:
                        compile_pattern(pat)
                        spec.pattern = pat
                    except ValueError as e:
                        f.err(im["pattern"][1], f"{where}.pattern is not a valid regular expression: {e}")
            if "enum" in im:
                enode = im["enum"][1]
                if isinstance(enode, yaml.SequenceNode) and enode.value:
                    spec.enum = [f.scalar(n) for n in enode.value]
                else:
                    f.err(enode, f"{where}.enum must be a non-empty list")
            if "default" in im:
                raw = f.scalar(im["default"][1])
                try:
                    spec.default = coerce_one(spec, raw)
                except ValueError as e:
                    f.err(im["default"][1], f"{where}.default: {e}")
            out[iname] = spec
        return out

    # ---------------------------------------------------------------- models

    def model(self, f: _File, node: yaml.Node) -> Model | None:
        m = f.mapping(node, "a model")
        if m is None:
            return None
        f.keys(m, ("name", "description", "methods", "window"), "model", required=("name", "methods"))
        if "name" not in m:
            return None
        name = f.name(m["name"][1], "model name")
        if name is None:
            return None
        model = Model(name=name, path=f.path)
        if "description" in m:
            model.description = f.string(m["description"][1], "description") or ""
        if "window" in m:
            model.window = self.window_ref(f, m["window"][1])
        methods_node = m["methods"][1] if "methods" in m else None
        methods = f.mapping(methods_node, "methods") if methods_node is not None else None
        if methods_node is not None and methods is not None and not methods:
            f.err(methods_node, "a model needs at least one method")
        for mname, (mk, mv) in (methods or {}).items():
            if f.name(mk, "method name") is None:
                continue
            mm = f.mapping(mv, f"method {mname}")
            if mm is None:
                continue
            where = f"method {mname}"
            f.keys(mm, ("description", "inputs", "run", "timeout", "retry", "env"), where, required=("run",))
            run = f.command(mm["run"][1], f"{where}.run") if "run" in mm else None
            if run is None:
                continue
            method = Method(model=name, name=mname, run=run, window=model.window)
            if "description" in mm:
                method.description = f.string(mm["description"][1], "description") or ""
            if "inputs" in mm:
                method.inputs = self.inputs(f, mm["inputs"][1], f"{where}.inputs")
            if "timeout" in mm:
                method.timeout = f.duration(mm["timeout"][1], f"{where}.timeout")
            if "retry" in mm:
                method.retry = self.retry(f, mm["retry"][1], f"{where}.retry")
            if "env" in mm:
                env = self.env_map(f, mm["env"][1], f"{where}.env")
                for key, (vnode, value) in env.items():
                    self.check_expressions(
                        f, vnode, value, inputs=method.inputs, ancestors=None, materials=None
                    )
                    method.env[key] = value
            model.methods[mname] = method
        return model

    def retry(self, f: _File, node: yaml.Node, what: str) -> Retry | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            limit = f.integer(node, what, 0, MAX_RETRIES)
            return Retry(limit=limit or 0)
        rm = f.mapping(node, what)
        if rm is None:
            return None
        f.keys(rm, ("limit", "exit_codes"), what, required=("limit",))
        r = Retry()
        if "limit" in rm:
            r.limit = f.integer(rm["limit"][1], f"{what}.limit", 0, MAX_RETRIES) or 0
        if "exit_codes" in rm:
            codes = rm["exit_codes"][1]
            if isinstance(codes, yaml.SequenceNode):
                r.exit_codes = [
                    c
                    for c in (f.integer(n, f"{what}.exit_codes item", 0, 255) for n in codes.value)
                    if c is not None
                ]
            else:
                f.err(codes, f"{what}.exit_codes must be a list of integers")
        return r

    # ---------------------------------------------------------------- workflows

    def workflow(self, f: _File, node: yaml.Node) -> Workflow | None:
        m = f.mapping(node, "a workflow")
        if m is None:
            return None
        f.keys(
            m,
            ("name", "description", "inputs", "environment", "lock", "timer", "materials", "jobs", "window"),
            "workflow",
            required=("name", "jobs"),
        )
        if "name" not in m:
            return None
        name = f.name(m["name"][1], "workflow name")
        if name is None:
            return None
        wf = Workflow(name=name, path=f.path)
        if "description" in m:
            wf.description = f.string(m["description"][1], "description") or ""
        if "inputs" in m:
            wf.inputs = self.inputs(f, m["inputs"][1], "inputs")
        if "environment" in m:
            env = f.string(m["environment"][1], "environment")
            if env is not None:
                wf.environment = env
                enode = m["environment"][1]
                self.refs.append((f, enode, functools.partial(_check_environment, name=env)))
        if "lock" in m:
            wf.lock = f.choice(m["lock"][1], "lock", LOCK_VALUES) or "none"
        if "window" in m:
            wf.window = self.window_ref(f, m["window"][1])
        if "timer" in m:
            wf.timer = self.timer(f, m["timer"][1])
        if "materials" in m:
            for mat_name, (mk, mv) in (f.mapping(m["materials"][1], "materials") or {}).items():
                mat = self.material(f, mk, mv, mat_name, name)
                if mat is not None:
                    wf.materials[mat_name] = mat
        if "jobs" in m:
            jm = f.mapping(m["jobs"][1], "jobs")
            if jm is not None and not jm:
                f.err(m["jobs"][1], "a workflow needs at least one job")
            for jname, (jk, jv) in (jm or {}).items():
                if f.name(jk, "job name") is None:
                    continue
                job = self.job(f, jv, jname, wf)
                if job is not None:
                    wf.jobs[jname] = job
            self.check_dag(f, wf, jm or {})
        return wf

    def window_ref(self, f: _File, node: yaml.Node) -> str | None:
        name = f.string(node, "window")
        if name is not None:
            self.refs.append((f, node, functools.partial(_check_window, name=name)))
        return name

    def timer(self, f: _File, node: yaml.Node) -> Timer | None:
        if isinstance(node, yaml.MappingNode):
            tm = f.mapping(node, "timer") or {}
            f.keys(tm, ("cron", "catch_up"), "timer", required=("cron",))
            if "cron" not in tm:
                return None
            cron_node = tm["cron"][1]
            catch_up = (
                f.choice(tm["catch_up"][1], "timer.catch_up", CATCH_UP_VALUES) if "catch_up" in tm else "none"
            )
        else:
            cron_node, catch_up = node, "none"
        cron = self.cron(f, cron_node, "timer")
        if cron is None:
            return None
        return Timer(cron=cron, catch_up=catch_up or "none")

    def material(
        self, f: _File, knode: yaml.Node, node: yaml.Node, name: str, wf_name: str
    ) -> Material | None:
        if f.name(knode, "material name") is None:
            return None
        var = "SLUICE_MATERIAL_" + name.upper().replace("-", "_") + "_REVISION"
        if not ENV_NAME_RE.match(var):
            f.err(knode, f"material name '{name}' must use letters, digits, '-' or '_' (it becomes ${var})")
            return None
        mm = f.mapping(node, f"materials.{name}")
        if mm is None:
            return None
        where = f"materials.{name}"
        f.keys(mm, ("git", "branch", "workflow", "trigger"), where)
        mat = Material(name=name)
        if ("git" in mm) == ("workflow" in mm):
            f.err(node, f"{where} needs exactly one of 'git' or 'workflow'")
            return None
        if "git" in mm:
            mat.git = f.string(mm["git"][1], f"{where}.git")
            if "branch" in mm:
                mat.branch = f.string(mm["branch"][1], f"{where}.branch")
            if "trigger" in mm:
                f.err(mm["trigger"][0], f"{where}.trigger applies only to workflow materials")
        else:
            upstream = f.string(mm["workflow"][1], f"{where}.workflow")
            mat.workflow = upstream
            if "branch" in mm:
                f.err(mm["branch"][0], f"{where}.branch applies only to git materials")
            if "trigger" in mm:
                mat.trigger = bool(f.boolean(mm["trigger"][1], f"{where}.trigger"))
            if upstream == wf_name:
                f.err(mm["workflow"][1], f"{where}: a workflow cannot be its own material")
            elif upstream is not None:
                self.refs.append((f, mm["workflow"][1], functools.partial(_check_workflow, name=upstream)))
        return mat

    def job(self, f: _File, node: yaml.Node, name: str, wf: Workflow) -> Job | None:
        jm = f.mapping(node, f"job {name}")
        if jm is None:
            return None
        where = f"job {name}"
        f.keys(
            jm,
            (
                "needs",
                "if",
                "hold",
                "concurrency_group",
                "concurrency",
                "parallelism",
                "run_on_all_agents",
                "resources",
                "trigger",
                "timeout",
                "retry",
                "env",
                "steps",
            ),
            where,
        )
        job = Job(name=name)
        if "needs" in jm:
            job.needs = f.strings(jm["needs"][1], f"{where}.needs")
        if "if" in jm:
            job.if_ = f.choice(jm["if"][1], f"{where}.if", IF_VALUES) or "success"
        if "hold" in jm:
            job.hold = self.hold(f, jm["hold"][1], where)
        if "concurrency_group" in jm:
            job.concurrency_group = f.name(jm["concurrency_group"][1], f"{where}.concurrency_group")
        if "concurrency" in jm:
            job.concurrency = f.integer(jm["concurrency"][1], f"{where}.concurrency", 1, MAX_COUNT) or 1
            if "concurrency_group" not in jm:
                f.err(jm["concurrency"][0], f"{where}.concurrency needs a concurrency_group")
        if "parallelism" in jm:
            job.parallelism = f.integer(jm["parallelism"][1], f"{where}.parallelism", 1, MAX_COUNT) or 1
        if "run_on_all_agents" in jm:
            job.run_on_all_agents = bool(f.boolean(jm["run_on_all_agents"][1], f"{where}.run_on_all_agents"))
            if job.run_on_all_agents and job.parallelism > 1:
                f.err(
                    jm["run_on_all_agents"][0],
                    f"{where}: run_on_all_agents and parallelism cannot be combined",
                )
        if "resources" in jm:
            job.resources = f.strings(jm["resources"][1], f"{where}.resources")
        if "timeout" in jm:
            job.timeout = f.duration(jm["timeout"][1], f"{where}.timeout")
        if "retry" in jm:
            job.retry = self.retry(f, jm["retry"][1], f"{where}.retry")
        if "env" in jm:
            for key, (vnode, value) in self.env_map(f, jm["env"][1], f"{where}.env").items():
                job.env[key] = value
                self.pending_expr.append((f, vnode, value, wf, name))
        if "trigger" in jm:
            job.trigger = self.trigger(f, jm["trigger"][1], where, wf, name)
        if "steps" in jm:
            sn = jm["steps"][1]
            if not isinstance(sn, yaml.SequenceNode) or not sn.value:
                f.err(sn, f"{where}.steps must be a non-empty list")
            else:
                for i, snode in enumerate(sn.value):
                    step = self.step(f, snode, f"{where}.steps[{i}]", wf, name)
                    if step is not None:
                        job.steps.append(step)
        if "steps" in jm and job.trigger is not None:
            f.err(jm["trigger"][0], f"{where}: a job has either steps or a trigger, not both")
        elif "steps" not in jm and job.trigger is None and "trigger" not in jm:
            f.err(node, f"{where} needs 'steps' (or a 'trigger')")
        return job

    def hold(self, f: _File, node: yaml.Node, where: str) -> Hold | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            return Hold() if f.scalar(node) else None
        hm = f.mapping(node, f"{where}.hold")
        if hm is None:
            return None
        f.keys(hm, ("prompt", "approvers", "fields", "timeout", "approvals", "four_eyes"), f"{where}.hold")
        hold = Hold()
        if "prompt" in hm:
            hold.prompt = f.string(hm["prompt"][1], f"{where}.hold.prompt") or ""
        if "approvers" in hm:
            anode = hm["approvers"][1]
            hold.approvers = f.strings(anode, f"{where}.hold.approvers")
            for i, who in enumerate(hold.approvers):
                self.refs.append((f, _item(anode, i), functools.partial(_check_approver, who=who)))
        if "fields" in hm:
            hold.fields = self.inputs(f, hm["fields"][1], f"{where}.hold.fields")
        if "timeout" in hm:
            hold.timeout = f.duration(hm["timeout"][1], f"{where}.hold.timeout")
        if "four_eyes" in hm:
            hold.four_eyes = f.boolean(hm["four_eyes"][1], f"{where}.hold.four_eyes")
        if "approvals" in hm:
            n = f.integer(hm["approvals"][1], f"{where}.hold.approvals", 1, MAX_APPROVALS)
            if n is not None:
                hold.approvals = n
                approvers = list(hold.approvers)
                self.refs.append(
                    (f, hm["approvals"][1], functools.partial(_check_approvals, n=n, approvers=approvers))
                )
        return hold

    def trigger(self, f: _File, node: yaml.Node, where: str, wf: Workflow, job: str) -> Trigger | None:
        tm = f.mapping(node, f"{where}.trigger")
        if tm is None:
            return None
        f.keys(tm, ("workflow", "inputs", "wait"), f"{where}.trigger", required=("workflow",))
        if "workflow" not in tm:
            return None
        target = f.string(tm["workflow"][1], f"{where}.trigger.workflow")
        if target is None:
            return None
        tnode = tm["workflow"][1]
        self.refs.append((f, tnode, functools.partial(_check_workflow, name=target)))
        trig = Trigger(workflow=target)
        if "wait" in tm:
            trig.wait = bool(f.boolean(tm["wait"][1], f"{where}.trigger.wait"))
        if "inputs" in tm:
            for key, (vnode, value) in f.string_map(tm["inputs"][1], f"{where}.trigger.inputs").items():
                trig.inputs[key] = value
                self.pending_expr.append((f, vnode, value, wf, job))
        return trig

    def step(self, f: _File, node: yaml.Node, where: str, wf: Workflow, job: str) -> Step | None:
        sm = f.mapping(node, where)
        if sm is None:
            return None
        f.keys(sm, ("name", "run", "method", "with", "when"), where)
        if ("run" in sm) == ("method" in sm):
            f.err(node, f"{where} needs exactly one of 'run' or 'method'")
            return None
        step = Step(name="")
        if "when" in sm:
            step.when = f.choice(sm["when"][1], f"{where}.when", ("success", "always")) or "success"
        if "run" in sm:
            step.run = f.command(sm["run"][1], f"{where}.run")
            if step.run is None:
                return None
            if "with" in sm:
                f.err(sm["with"][0], f"{where}: 'with' applies only to method steps")
            if isinstance(step.run, str) and EXPR_RE.search(step.run):
                f.err(
                    sm["run"][1],
                    f"{where}: expressions are not allowed in run text; "
                    "pass them through env: and use the variable",
                )
        else:
            target = f.string(sm["method"][1], f"{where}.method")
            if target is None:
                return None
            if "." not in target:
                f.err(sm["method"][1], f"{where}.method must be MODEL.METHOD, not '{target}'")
                return None
            step.method = target
            mnode = sm["method"][1]
            self.refs.append((f, mnode, functools.partial(_check_method_ref, target=target)))
            if "with" in sm:
                for key, (vnode, value) in f.string_map(sm["with"][1], f"{where}.with").items():
                    step.with_[key] = value
                    self.pending_expr.append((f, vnode, value, wf, job))
                wnode = sm["with"][1]
                keys = dict(step.with_)
                self.refs.append((f, wnode, functools.partial(_check_with, target=target, given=keys)))
        step.name = (f.string(sm["name"][1], f"{where}.name") if "name" in sm else None) or (
            step.method
            if step.method
            else (step.run if isinstance(step.run, str) else " ".join(step.run or []))
        )
        return step

    def check_dag(self, f: _File, wf: Workflow, jm: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
        for jname, job in wf.jobs.items():
            jnode = jm[jname][1]
            needs_node = _child(jnode, "needs")
            for i, need in enumerate(job.needs):
                if need not in wf.jobs and need in jm:
                    continue  # that job already reported its own problem
                if need not in wf.jobs:
                    f.err(
                        _item(needs_node, i) or jnode,
                        f"job {jname} needs unknown job '{need}'{did_you_mean(need, wf.jobs)}",
                    )
                elif need == jname:
                    f.err(_item(needs_node, i) or jnode, f"job {jname} needs itself")
        # cycles: depth-first search, report the cycle path once
        state: dict[str, int] = {}
        stack: list[str] = []
        reported = False

        def visit(j: str) -> None:
            nonlocal reported
            state[j] = 1
            stack.append(j)
            for n in wf.jobs[j].needs:
                if n not in wf.jobs or n == j:
                    continue
                if state.get(n) == 1 and not reported:
                    cycle = [*stack[stack.index(n) :], n]
                    f.err(jm[n][0], f"jobs form a cycle: {' -> '.join(cycle)}")
                    reported = True
                elif n not in state:
                    visit(n)
            stack.pop()
            state[j] = 2

        for j in wf.jobs:
            if j not in state:
                visit(j)
        if reported:
            self.pending_expr = [e for e in self.pending_expr if e[3] is not wf]
            return
        for pf, vnode, value, _pwf, job_name in [e for e in self.pending_expr if e[3] is wf]:
            self.check_expressions(
                pf, vnode, value, inputs=wf.inputs, ancestors=ancestors(wf, job_name), materials=wf.materials
            )
        self.pending_expr = [e for e in self.pending_expr if e[3] is not wf]

    def check_expressions(
        self,
        f: _File,
        node: yaml.Node,
        value: str,
        *,
        inputs: dict[str, InputSpec],
        ancestors: set[str] | None,
        materials: dict[str, Material] | None,
    ) -> None:
        for match in EXPR_RE.finditer(value):
            try:
                ref = parse_expression(match.group(1))
            except ValueError as e:
                f.err(node, str(e))
                continue
            kind = ref[0]
            if kind == "inputs" and ref[1] not in inputs:
                f.err(node, f"unknown input '{ref[1]}' in '{match.group(0)}'{did_you_mean(ref[1], inputs)}")
            elif kind == "jobs":
                if ancestors is None:
                    f.err(node, f"'{match.group(0)}': job outputs are only available in workflows")
                elif ref[1] not in ancestors:
                    f.err(
                        node,
                        f"'{match.group(0)}': job '{ref[1]}' is not among this job's needs"
                        f"{did_you_mean(ref[1], ancestors)}",
                    )
            elif kind == "materials":
                if materials is None:
                    f.err(node, f"'{match.group(0)}': materials are only available in workflows")
                elif ref[1] not in materials:
                    f.err(
                        node,
                        f"unknown material '{ref[1]}' in '{match.group(0)}'{did_you_mean(ref[1], materials)}",
                    )


def ancestors(wf: Workflow, job: str) -> set[str]:
    seen: set[str] = set()
    todo = list(wf.jobs[job].needs)
    while todo:
        j = todo.pop()
        if j in seen or j not in wf.jobs:
            continue
        seen.add(j)
        todo.extend(wf.jobs[j].needs)
    return seen


def _check_environment(p: Project, name: str) -> str | None:
    return (
        None
        if name in p.environments
        else f"unknown environment '{name}'{did_you_mean(name, p.environments)}"
    )


def _check_window(p: Project, name: str) -> str | None:
    if name in p.windows:
        return None
    known = (
        f" (windows: {', '.join(sorted(p.windows))})" if p.windows else " (sluice.yaml defines no windows:)"
    )
    hint = did_you_mean(name, p.windows)
    return f"unknown window '{name}'{hint or known}"


def _check_workflow(p: Project, name: str) -> str | None:
    return None if name in p.workflows else f"unknown workflow '{name}'{did_you_mean(name, p.workflows)}"


def _check_method_ref(p: Project, target: str) -> str | None:
    model, _, method = target.partition(".")
    if model not in p.models:
        return f"unknown model '{model}'{did_you_mean(model, p.models)}"
    if method not in p.models[model].methods:
        return f"unknown method '{method}' of model {model}{did_you_mean(method, p.models[model].methods)}"
    return None


def _check_approvals(p: Project, n: int, approvers: list[str]) -> str | None:
    """`approvals: N` needs N distinct people among the approvers (anyone, without a list)."""
    if not approvers or n <= 1:
        return None
    people = {u for who in approvers for u in (p.groups[who] if who in p.groups else [who])}
    if n <= len(people):
        return None
    return (
        f"approvals: {n} needs {n} distinct approvers, but only {len(people)} can approve "
        f"({', '.join(sorted(people)) or 'nobody'})"
    )


def _check_approver(p: Project, who: str) -> str | None:
    """Approvers are users or groups; a name that is no group but close to one is a typo."""
    if who in p.groups:
        return None
    hint = did_you_mean(who, p.groups)
    return f"unknown approver or group '{who}'{hint}" if hint else None


def _check_with(p: Project, target: str, given: dict[str, str]) -> str | None:
    method = p.method(target)
    if method is None:
        return None  # reported by the method reference check
    for key in given:
        if key not in method.inputs:
            return f"unknown input '{key}' for method {target}{did_you_mean(key, method.inputs)}"
    for spec in method.inputs.values():
        if spec.required and spec.default is None and spec.name not in given:
            return f"method {target} needs input '{spec.name}' in 'with'"
    return None


def _shape_problem(root: yaml.Node) -> tuple[yaml.Node, str] | None:
    """Refuse node graphs that are cheap to write and dear to walk: alias bombs, self-referring
    aliases and deep nesting (iteratively: no recursion for a hostile file to exhaust).

    Only an alias to a mapping or a list multiplies work, and it makes the composed graph
    reach one node twice. A first walk over the collections checks the depth and looks for
    that; only then are the values each node stands for counted, each distinct node once.
    """
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            return _alias_problem(root)
        seen.add(id(node))
        if depth > MAX_DEPTH:
            return node, f"nesting deeper than {MAX_DEPTH} levels"
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    stack.append((k, depth + 1))
                if not isinstance(v, yaml.ScalarNode):
                    stack.append((v, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                if not isinstance(v, yaml.ScalarNode):
                    stack.append((v, depth + 1))
    return None


def _alias_problem(root: yaml.Node) -> tuple[yaml.Node, str] | None:
    """Size every node with aliases expanded (memoized by identity), depth too."""
    size: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
    depth: dict[int, int] = {}  # id(node) -> levels below it
    distinct = 0
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = (
            [c for kv in node.value for c in kv]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if depth[key] > MAX_DEPTH:
                return node, f"nesting deeper than {MAX_DEPTH} levels"
            if size[key] - distinct > MAX_ALIAS_NODES:
                return node, (
                    f"aliases here expand to more than {MAX_ALIAS_NODES:,} values (an alias bomb?); "
                    "write the values out"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            return node, "an alias refers to the value that contains it"
        on_path.add(key)
        distinct += 1
        if len(on_path) > MAX_DEPTH:
            return node, f"nesting deeper than {MAX_DEPTH} levels"
        stack.append((node, True))
        for c in children:
            if id(c) not in size:
                stack.append((c, False))
    return None


def _never_fires(cron: str, what: str = "timer") -> str | None:
    """croniter accepts `0 0 30 2 *` (30 February) and raises only when asked for the next fire."""
    from datetime import datetime

    from croniter import croniter

    try:
        croniter(cron, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception:  # CroniterBadDateError, or any other refusal to compute a fire time
        return f"{what} '{cron}' never fires (no such date)"
    return None


def _database_problem(url: str, root: Path) -> str | None:
    """A `database:` URL that cannot work: an unknown scheme, or an SQLite path that cannot be a file."""
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return None
    if not url.startswith("sqlite:///"):
        return f"database '{url}' must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    rel = url[len("sqlite:///") :]
    if not rel.strip() or rel.endswith("/"):
        return f"database '{url}' needs a file name after sqlite:///"
    path = Path(rel) if rel.startswith("/") else root / rel
    if path.exists() and not path.is_file():
        return f"database '{url}': {path} exists and is not a file"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"database '{url}': {parent} is a file, so it cannot hold a database"
            break
    return None


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _item(node: yaml.Node | None, i: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and i < len(node.value):
        return node.value[i]
    return node


def load_project(root: Path | None = None) -> Project:
    """Load and validate a project; raises DefinitionError listing every problem."""
    root = find_project_root(root) if root is None or not (root / "sluice.yaml").is_file() else root.resolve()
    # A node graph is a million small objects and no cycles: the collector's passes over
    # them would take three quarters of the time (files are bounded, so memory is too).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _Loader_(root).load()
    finally:
        if collecting:
            gc.enable()
