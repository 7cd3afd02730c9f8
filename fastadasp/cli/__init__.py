"""Command line: `fastadasp plan | run | generate | select-layer | build-plugin | models` and `export-engine`.

One rule for every command: a user error (fastadasp.core.errors.UserError) is one line on stderr naming the
option or file, what is wrong and the fix, with exit status 2 and no traceback (`--debug` shows one).
SIGINT / SIGTERM stop the command cleanly (exit 130 / 143) and leave no half-written files. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback

from fastadasp.cli.commands import (
    cmd_build_plugin,
    cmd_export,
    cmd_generate,
    cmd_models,
    cmd_plan,
    cmd_run,
    cmd_select_layer,
)
from fastadasp.cli.parsers import build_export_parser, build_parser
from fastadasp.core import interrupts, progress
from fastadasp.core.errors import UserError

COMMANDS = {"plan": cmd_plan, "run": cmd_run, "generate": cmd_generate, "select-layer": cmd_select_layer,
            "build-plugin": cmd_build_plugin, "models": cmd_models}


def _run(prog: str, func, args) -> int:
    """Run one command; the process-wide settings it changes (quiet, signal handlers) are put back after it."""
    was_quiet = progress.QUIET
    progress.QUIET = bool(getattr(args, "quiet", False))
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
    handlers = interrupts.install()
    try:
        return func(args)
    except UserError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except interrupts.Interrupted as exc:
        print(f"{prog}: {exc}; stopped cleanly, nothing half-written was left", file=sys.stderr)
        return exc.exit_status
    finally:
        interrupts.restore(handlers)
        progress.QUIET = was_quiet


def _parse(parser, argv):
    """Parsed options, or the exit status of a parse error / --help (the parser printed its one line)."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as exc:
        return None, exc.code if isinstance(exc.code, int) else 2


def main(argv: list[str] | None = None) -> int:
    args, status = _parse(build_parser(), argv)
    return status if args is None else _run("fastadasp", COMMANDS[args.command], args)


def export_engine_main(argv: list[str] | None = None) -> int:
    args, status = _parse(build_export_parser(), argv)
    return status if args is None else _run("export-engine", cmd_export, args)
