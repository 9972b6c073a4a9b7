"""The launcher behind `moshi-desktop` with no command: the real window, engine and backend."""

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

import app.gui


def test_the_launcher_opens_the_window(qapp, monkeypatch):
    shown = []

    def check_and_quit():
        windows = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
        shown.extend(w.windowTitle() for w in windows)
        for window in windows:
            window.close()  # saves geometry, stops the engine thread
        qapp.quit()

    QTimer.singleShot(200, check_and_quit)
    assert app.gui.main([]) == 0
    assert "Moshi" in shown
    assert app.gui.LocalBackend.is_cached(_config("/no/such/folder")) is False


def _config(model):
    from app.local import RunConfig

    return RunConfig(model=model)


def test_no_display_is_one_clear_line(monkeypatch, capsys):
    from app.cli import main

    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(app.gui.sys, "platform", "linux")
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "no display" in err and "moshi-desktop chat" in err and err.count("\n") == 1
