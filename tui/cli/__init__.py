"""The command line: parse, call a use case in core, render. No SQL and no rules here.

Imports stay lazy: `sluice --version` and listings must not pay for SQLAlchemy or Textual.
Core and Textual are imported inside the handlers that need them, and a command's module
only when that command runs.

Where things are:
  main.py      main(): parse, run the command's handler; run_handler(): errors -> exit codes
  parser.py    the command tree: every command's arguments and handler, the shared options
  render.py    output: Out (lines, tables, JSON), note() on stderr, escaping, times
  common.py    UsageError; opening the project, starting the engine
  follow.py    following a run live (workflow run, method run, run logs --follow)
  project.py   init, validate, demo, tui
  engine.py, workflow.py, method.py, queue.py, run.py, agent.py, db.py, history.py:
               a module per command group, a do_* handler per subcommand
               (`queue` and `schedule`, the same but for --at, share do_stage)
"""

from .main import main

__all__ = ["main"]
