"""The launcher behind `moshi-desktop` with no command: the real window, engine and backend."""

import app.gui


def test_the_launcher_builds_the_window(qtbot):
    qapp, window = app.gui.build_window([])
    qtbot.addWidget(window)
    assert window.isVisible() and window.windowTitle() == "Moshi"
    assert qapp.applicationName() == "moshi-desktop"
    window.close()  # saves geometry and stops the engine thread
    assert not window.engine._thread.is_alive()


def test_a_folder_that_does_not_exist_is_not_cached():
    from app.engine.run import RunConfig

    assert app.gui.LocalBackend.is_cached(RunConfig(model="/no/such/folder")) is False


def test_no_display_is_one_clear_line(monkeypatch, capsys):
    from app.cli import main

    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(app.gui.sys, "platform", "linux")
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "no display" in err and "moshi-desktop chat" in err and err.count("\n") == 1


def test_the_download_offer_carries_the_local_advice(monkeypatch):
    import app.gui
    from app.engine.fetch import CheckResult, FileInfo
    from app.engine.run import RunConfig

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    fetch = app.gui.LocalBackend.make_fetch(RunConfig(model="kyutai/moshiko", device="cpu"))
    big = CheckResult("kyutai/moshiko", False, files=(FileInfo("model", 15_400_000_000),))
    assert "On a server" in fetch.advise(big)
