"""`sluice init` and `sluice demo`: write a small working project, or copy the demo."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import Refused

# the demo project ships inside the package (package-data), so `sluice demo` works from a wheel;
# examples/demo in the repository is a link to it
DEMO = Path(__file__).resolve().parent / "templates" / "demo"

FILES = {
    "sluice.yaml": """\
name: {name}
# timezone: Europe/London      # timers and --at times (default: this machine's zone)
# database: sqlite:///.sluice/state.db
groups:
  seniors: [{user}]
""",
    "models/greeter.yaml": """\
name: greeter
description: Says hello (an example model)
methods:
  greet:
    description: Greet someone by name
    inputs:
      who: {{required: true, description: Who to greet}}
    run: echo "hello, $INPUT_WHO"
""",
    "workflows/hello.yaml": """\
name: hello
description: Build, check, then greet (an example workflow)
inputs:
  who: {{default: world}}
jobs:
  build:
    steps:
      - run: echo "building for $INPUT_WHO"; echo "artifact=hello-$SLUICE_RUN_ID" >> "$SLUICE_OUTPUT"
  check:
    needs: [build]
    env:
      ARTIFACT: ${{{{ jobs.build.outputs.artifact }}}}
    steps:
      - run: echo "checking $ARTIFACT"
  greet:
    needs: [check]
    steps:
      - method: greeter.greet
        with: {{who: "${{{{ inputs.who }}}}"}}
""",
    ".gitignore": ".sluice/\n",
}


def init_project(target: Path) -> Path:
    from . import identity

    target = target.resolve()
    if (target / "sluice.yaml").exists():
        raise Refused(f"{target} already has a sluice.yaml; nothing was changed")
    for rel, text in FILES.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel == ".gitignore" and path.exists():
            continue
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in target.name) or "project"
        path.write_text(text.format(name=name, user=identity.os_user()))
    return target


def copy_demo(target: Path) -> Path:
    target = target.resolve()
    if (target / "sluice.yaml").exists():
        return target  # already there: reuse it (and its history)
    shutil.copytree(DEMO, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".sluice"))
    return target


def stage_demo(root: Path) -> str | None:
    """First time only: stage the seed scenarios so the dashboard has something to show."""
    from . import queueing
    from .service import Service

    svc = Service.open(root)
    if svc.db.scalar("SELECT COUNT(*) FROM events"):
        return None
    staged = [
        ("workflow", "db-migration", {}, "2am change window: after traffic drains"),
        ("workflow", "app-deployment", {"version": "v2.4.0"}, "2am change window, after the migration"),
        ("method", "ad-account.create", {"user": "jsmith"}, "new hire starts Monday"),
        ("method", "github-org.add-member", {"user": "jsmith"}, "new hire starts Monday"),
        ("method", "slack.create-account", {"user": "jsmith"}, "new hire starts Monday"),
        ("method", "vpn.add-to-group", {"user": "jsmith", "group": "engineering"}, "new hire starts Monday"),
        ("workflow", "teardown-compute", {}, "decommission: step 1 of 3"),
        ("workflow", "teardown-networking", {}, "decommission: step 2 of 3"),
        ("workflow", "teardown-dns", {}, "decommission: step 3 of 3"),
    ]
    for kind, target, inputs, note in staged:
        queueing.add(svc, kind, target, inputs, note=note)
    return f"staged {len(staged)} items from the seed scenarios in the queue"
