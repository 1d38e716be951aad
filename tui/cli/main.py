"""`sluice`: parse the command line, run the command's handler, map its errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .common import UsageError
from .parser import VERSION, Handler, build_parser
from .render import Out, note, printable


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--version", "-V"):
        sys.stdout.write(f"sluice {VERSION}\n")
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        note(str(e))
        return 2
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
            note(f"argument '{arg}' is not UTF-8 text; nothing was changed")
            return 2
    if args.project:
        os.environ["SLUICE_PROJECT"] = str(Path(args.project).resolve())
    if not args.cmd:
        if sys.stdin.isatty() and sys.stdout.isatty():
            args.cmd, args.read_only, args.handler = "tui", False, Handler("project.do_tui")
        else:
            parser.print_help()
            return 0
    out = Out(getattr(args, "json", False))
    return run_handler(args.handler, args, out)


def run_handler(handler: Any, args: argparse.Namespace, out: Out) -> int:
    from core.definitions import DefinitionError, InputError, ProjectNotFound
    from core.errors import SluiceError
    from core.store.db import StoreError, StoreUnavailable

    try:
        return handler(args, out)
    except DefinitionError as e:
        for p in e.problems:
            sys.stderr.write(f"{printable(str(p))}\n")
        note(f"{len(e.problems)} problem(s) in the definitions; nothing was changed")
        if out.json:
            out.emit(
                {
                    "valid": False,
                    "problems": [
                        {"path": p.path, "line": p.line, "col": p.col, "message": p.message}
                        for p in e.problems
                    ],
                }
            )
        return 2
    except ProjectNotFound as e:
        note(str(e))
        return 4
    except SluiceError as e:
        note(e.message)
        return e.code
    except InputError as e:  # a malformed --input/--field/--pin: invalid usage
        note(str(e))
        return 2
    except StoreUnavailable as e:  # busy past the timeout, disk full, unreachable: try again later
        note(f"{e}; nothing was changed, try again")
        return 75
    except StoreError as e:
        note(str(e))
        return 2
    except UsageError as e:
        note(str(e))
        return 2
    except RuntimeError as e:
        note(str(e))
        return 1
    except BrokenPipeError:
        return 0
    except OSError as e:  # e.g. a database path under a file: one line, never a traceback
        import errno

        where = f" ({e.filename})" if e.filename else ""
        note(f"{e.strerror or e}{where}")
        return 75 if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EAGAIN) else 2
