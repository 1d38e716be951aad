"""Pictures of the real dashboard on the demo project (SVG), for the README.

    .venv/bin/python screenshots/make.py

Copies examples/demo to a temp dir, stages the seed scenarios, starts the engine, runs
deploy-green up to its hold, then drives the dashboard with key presses and saves what it
shows at 80x24 (the jump-host size) and 120x40.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from core.engine import control  # noqa: E402
from core.scaffold import copy_demo, stage_demo  # noqa: E402
from core.service import Service  # noqa: E402
from tui.app import SluiceApp  # noqa: E402

SHOTS = [
    ("queue-marked", ["space", "space", "down", "space"]),
    ("run-on-hold", ["2", "enter", "G", "k"]),  # the cursor on the held swap: its detail line
    ("runs", ["2"]),
    ("agents", ["3"]),
    ("workflows", ["4"]),
    ("history", ["5"]),
    ("preview", ["enter"]),
    ("confirm-execute", ["space", "space", "x"]),
]


async def shoot(svc: Service, name: str, keys: list[str], size: tuple[int, int]) -> None:
    app = SluiceApp(svc, start_engine=False, poll=False, theme="textual-dark")
    async with app.run_test(size=size) as pilot:
        app.refresh_now()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await app.workers.wait_for_complete()
            app.refresh_now()
            await pilot.pause()
        suffix = "" if size == (80, 24) else f"-{size[0]}x{size[1]}"
        app.save_screenshot(filename=f"{name}{suffix}.svg", path=str(HERE))


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sluice-shots-"))
    root = copy_demo(tmp / "ops-demo")
    stage_demo(root)
    control.start_background(root)
    try:
        svc = Service.open(root)
        run_id = svc.run_workflow("deploy-green", {}, actor="pat@jump-1")
        svc.wait_run(run_id)  # up to the hold
        for name, keys in SHOTS:
            for size in ((80, 24), (120, 40)):
                asyncio.run(shoot(svc, name, keys, size))
        print(f"wrote {len(SHOTS) * 2} screenshots to {HERE}")
    finally:
        control.stop(root, now=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
