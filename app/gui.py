"""Opens the desktop window: `moshi-desktop` with no command.

The one file outside app/ui/ that touches Qt: it makes the QApplication, the engine with the
local backend (app.local), and the main window.
"""

from __future__ import annotations

import os
import sys

from . import local
from .errors import UserError


class LocalBackend:
    """What the window needs to know about running Moshi on this machine."""

    is_cached = staticmethod(local.is_cached)
    audio_devices = staticmethod(local.audio_devices)

    @staticmethod
    def make_fetch(config):
        from .fetch import ModelFetch

        return ModelFetch(config.model, revision=config.revision, offline=config.offline or None)


def build_engine():
    from .engine import Engine
    from .session import Conversation, default_recordings_dir

    return Engine(
        local.load_pipeline,
        local.open_audio,
        new_record=lambda: Conversation.create(default_recordings_dir()),
    )


def _check_display() -> None:
    """Qt aborts the process when it finds no display: say so in a sentence instead."""
    if (
        sys.platform.startswith("linux")
        and not os.environ.get("QT_QPA_PLATFORM")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        raise UserError(
            "no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
            "start it from a desktop session, or talk in the terminal with `moshi-desktop chat`"
        )


def build_window(argv: list[str] | None = None):
    """The QApplication (made if there is none) and the main window, shown."""
    from PySide6.QtWidgets import QApplication

    from . import __version__
    from .ui.main_window import MainWindow
    from .ui.settings import Settings

    _check_display()
    app = QApplication.instance() or QApplication(sys.argv[:1] + (argv or []))
    app.setApplicationName("moshi-desktop")
    app.setApplicationDisplayName("Moshi")
    app.setOrganizationName("moshi-desktop")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("moshi-desktop")  # the .desktop file, for the icon under Wayland
    window = MainWindow(build_engine(), Settings(), LocalBackend())
    window.show()
    return app, window


def main(argv: list[str] | None = None) -> int:
    app, _window = build_window(argv)
    return app.exec()
