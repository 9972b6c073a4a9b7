"""Where the app keeps its files, by each platform's convention (through `platformdirs`).

Linux: data in ``$XDG_DATA_HOME/moshi-desktop`` (default ``~/.local/share``), logs in
``$XDG_STATE_HOME/moshi-desktop/log`` (default ``~/.local/state``); macOS: ``~/Library/Application
Support/moshi-desktop`` and ``~/Library/Logs/moshi-desktop``; Windows: ``%LOCALAPPDATA%``. None of
these folders is made until something is written there.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

from .appinfo import NAME


def data_dir() -> Path:
    """The app's data folder (conversations)."""
    return Path(platformdirs.user_data_dir(NAME, appauthor=False))


def recordings_dir() -> Path:
    """Where conversations are kept unless told otherwise."""
    return data_dir() / "conversations"


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(NAME, appauthor=False))
