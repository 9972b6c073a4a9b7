"""Logging: one rotating file in the platform's log folder (`app.paths.log_dir`), and the terminal.

Every module logs through ``logging.getLogger(__name__)``. `setup` sends everything from INFO up
to the file (with tracebacks: a user's bug report needs them), and warnings and errors to the
terminal in one line each (with `--verbose`: debug lines and tracebacks too). A record logged with
``extra=SHOWN`` has already reached the user as a message of its own (an error in the window or
`chat`): it goes to the file only. A command's own output is `print`; nothing else is.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from .paths import log_dir

FILE_NAME = "moshi-desktop.log"
_MAX_BYTES = 2_000_000  # then the file rotates: this one and 3 older ones are kept
_BACKUPS = 3
_FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"

SHOWN = {"shown": True}  # `extra=` for a record the user has seen as a message already

_handlers: list[logging.Handler] = []


class _OneLine(logging.Formatter):
    """A record without its traceback: the terminal's form when not --verbose."""

    def format(self, record: logging.LogRecord) -> str:
        brief = logging.makeLogRecord(record.__dict__)
        brief.exc_info = brief.exc_text = brief.stack_info = None
        return super().format(brief)


def _not_shown(record: logging.LogRecord) -> bool:
    return not getattr(record, "shown", False)


def log_path() -> Path:
    return log_dir() / FILE_NAME


def setup(verbose: bool = False) -> Path | None:
    """Log to the file (None if it cannot be opened: then only to the terminal) and to stderr.
    Calling it again replaces what an earlier call set up."""
    root = logging.getLogger()
    for handler in _handlers:
        root.removeHandler(handler)
        handler.close()
    _handlers.clear()

    terminal = logging.StreamHandler()
    terminal.setLevel(logging.DEBUG if verbose else logging.WARNING)
    terminal_format = "%(name)s: %(levelname)s: %(message)s"
    terminal.setFormatter((logging.Formatter if verbose else _OneLine)(terminal_format))
    terminal.addFilter(_not_shown)
    _handlers.append(terminal)
    path: Path | None = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        file = logging.handlers.RotatingFileHandler(
            path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS, encoding="utf-8", delay=True
        )
        os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    except OSError:
        path = None
    else:
        file.setLevel(logging.DEBUG if verbose else logging.INFO)
        file.setFormatter(logging.Formatter(_FORMAT))
        _handlers.append(file)
    for handler in _handlers:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return path
