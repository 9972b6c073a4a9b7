"""Opens the desktop window: `moshi-desktop` with no command.

The one file outside app/ui/ that touches Qt: it makes the QApplication, the engine (which runs
the model here, or talks with a server, as the settings say), and the main window.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from .audio.devices import audio_devices
from .engine import local
from .errors import UserError
from .signals import terminating_signals

log = logging.getLogger(__name__)


class LocalBackend:
    """What the window needs to know about running Moshi on this machine."""

    is_cached = staticmethod(local.is_cached)
    audio_devices = staticmethod(audio_devices)

    @staticmethod
    def make_fetch(config):
        from .engine.fetch import ModelFetch

        return ModelFetch(
            config.model,
            revision=config.revision,
            offline=config.offline or None,
            advise=lambda check: local.download_advice(config, check),
        )


def build_engine():
    from .conversation.store import new_record
    from .engine.engine import Engine
    from .engine.run import loading_note, open_audio, open_compute

    return Engine(open_compute, open_audio, new_record=new_record, loading_note=loading_note)


def saved_model_choice() -> dict[str, str]:
    """The model the window's settings have chosen: model, revision, LoRA, device, dtype (those
    set); empty where Qt cannot be loaded. For `doctor` without --model."""
    try:
        from .ui.settings import Settings
    except ImportError:
        return {}
    s = Settings()
    chosen = {
        "model": s.model_source,
        "revision": s.model_revision,
        "lora": s.lora,
        "device": s.compute_device,
        "dtype": s.dtype,
    }
    return {key: value for key, value in chosen.items() if value}


def has_display() -> bool:
    """Whether Qt can open a window here: on Linux it needs X11, Wayland or a platform chosen
    with QT_QPA_PLATFORM (offscreen, for one)."""
    return not (
        sys.platform.startswith("linux")
        and not os.environ.get("QT_QPA_PLATFORM")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    )


def _check_display() -> None:
    """Qt aborts the process when it finds no display: say so in a sentence instead."""
    if not has_display():
        raise UserError(
            "no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
            "start it from a desktop session, or talk in the terminal with `moshi-desktop chat`"
        )


def build_window(argv: list[str] | None = None, settings=None):
    """The QApplication (made if there is none) and the main window, shown. `settings`: an
    `app.ui.settings.Settings` (default: the user's own)."""
    from PySide6.QtWidgets import QApplication

    from . import appinfo
    from .ui.app_icon import app_icon
    from .ui.main_window import MainWindow
    from .ui.settings import Settings

    _check_display()
    app = QApplication.instance() or QApplication(sys.argv[:1] + (argv or []))
    app.setApplicationName(appinfo.NAME)
    app.setApplicationDisplayName("Moshi")
    app.setOrganizationName(appinfo.NAME)
    app.setApplicationVersion(appinfo.VERSION)
    # Wayland finds the window's icon through the .desktop file of this name; X11, Windows and
    # the window itself use the icon set here.
    app.setDesktopFileName(appinfo.DESKTOP_ID)
    app.setWindowIcon(app_icon())
    window = MainWindow(build_engine(), settings or Settings(), LocalBackend())
    window.show()
    return app, window


def check_window() -> str:
    """Open the window with throwaway settings, check its icon, close it: `self-test`'s check of
    Qt (its platform plugin, widgets and our icon files). Returns what it saw."""
    import tempfile

    from PySide6.QtCore import QSettings, qVersion

    from .ui.settings import Settings

    with tempfile.TemporaryDirectory(prefix="moshi-desktop-window-") as folder:
        qsettings = QSettings(os.path.join(folder, "settings.ini"), QSettings.Format.IniFormat)
        app, window = build_window([], Settings(qsettings))
        try:
            app.processEvents()
            sizes = window.windowIcon().availableSizes()
            if not window.isVisible() or not sizes:
                raise RuntimeError("the window did not show, or has no icon")
            return (
                f"Qt {qVersion()} on the {app.platformName()} platform: the window opened "
                f"with its icon at {len(sizes)} sizes, and closed"
            )
        finally:
            window.close()  # stops the engine thread
            qsettings.sync()


def main(argv: list[str] | None = None) -> int:
    from .gui_check import advice, display_error, missing_libraries, uses_xcb

    if has_display() and uses_xcb():  # Qt would abort the process with a core dump
        libraries = missing_libraries()
        if libraries:
            raise UserError(advice(libraries))
        if unreachable := display_error():
            raise UserError(unreachable)
    app, window = build_window(argv)
    close_on_signals(app, window)
    return app.exec()


def close_on_signals(app, window) -> None:
    """SIGTERM and SIGHUP (logout, `kill`) close the window as its close button does: the
    conversation stops and its autosave is finished. Python runs a signal handler only between
    bytecodes, so a timer wakes it while Qt's loop waits."""
    from PySide6.QtCore import QTimer

    def close(signum: int, frame: object) -> None:
        log.info("signal %d: closing the window", signum)
        window.close()

    for sig in terminating_signals():
        signal.signal(sig, close)
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(200)
