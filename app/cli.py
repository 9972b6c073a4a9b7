"""The `moshi-desktop` command line; `python -m app` is the same.

With no subcommand it opens the desktop window. Each subcommand is added by one
small function listed in `COMMANDS`: it adds its parser to the subparsers and sets a `handler`
default, a function ``(args) -> int`` that returns the exit status.

Exit status:
    0    success (also `--help` and `--version`)
    1    a runtime failure the user can meet (`app.errors.UserError`): a missing model file, no
         audio device, ...; reported as one line ``moshi-desktop: error: <message>`` on stderr
    2    a usage error: bad arguments (argparse prints its usage) or `app.errors.UsageError`
    130  interrupted with Ctrl-C

Every run logs to a rotating file in the platform's log folder (`app.logs`); an unexpected error
prints one line naming that file, where its traceback is. `--verbose` prints debug lines too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from app import __version__, logs, signals
from app.commands import (
    bench,
    chat,
    conversations,
    devices,
    doctor,
    download,
    selftest,
    talk,
    transcribe,
)
from app.errors import UserError

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

PROG = "moshi-desktop"
log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]
"""Runs one subcommand with its parsed arguments and returns the exit status."""

# One function per subcommand, in the order `--help` lists them. Each takes the subparsers,
# adds its own parser and sets ``handler=<its Handler>`` with `set_defaults`.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    talk.register,
    chat.register,
    conversations.register,
    devices.register,
    download.register,
    doctor.register,
    bench.register,
    selftest.register,
    transcribe.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand in `COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Talk full duplex with Kyutai's Moshi on your own machine. "
        "With no command, opens the desktop window.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--verbose", action="store_true", help="print debug lines (they always go to the log)"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error argparse already printed
        return _exit_status(exit_.code)

    handler: Handler | None = getattr(args, "handler", None)
    log_file = logs.setup(verbose=args.verbose)
    signals.interrupt_on_termination()
    log.info("%s %s: %s", PROG, __version__, " ".join(sys.argv[1:] if argv is None else argv))
    try:
        if handler is None:
            return _open_window(parser)
        return handler(args)
    except UserError as err:
        log.info("failed: %s", err, exc_info=True)
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: the traceback goes to the log, one line to the terminal
        log.exception("unexpected error", extra=logs.SHOWN)
        where = f"the details are in {log_file}" if log_file else "run it again with --verbose"
        print(f"{PROG}: error: {type(err).__name__}: {err} ({where})", file=sys.stderr)
        return 1


def _open_window(parser: argparse.ArgumentParser) -> int:
    from app.gui import main as open_window

    return open_window()


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
