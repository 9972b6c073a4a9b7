"""SIGTERM and SIGHUP (logout, `kill`, a closed terminal) end `chat` and the window as Ctrl+C and
the close button do: the conversation is closed, its autosave finished, the exports written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from app.signals import terminating_signals

ROOT = Path(__file__).resolve().parents[2]
SIGNALS = [pytest.param(sig, id=sig.name) for sig in terminating_signals()]


def _voice(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * 24000)) / 24000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    return path


def _conversation(data: Path) -> Path | None:
    folders = list((data / "moshi-desktop" / "conversations").glob("*"))
    return folders[0] if folders else None


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_chat_ends_cleanly_on_a_signal(sig, tiny_checkpoint, tmp_path):
    voice = _voice(tmp_path / "in.wav", 60.0)  # paced like a microphone: a minute to go
    exports = [tmp_path / "talk.txt", tmp_path / "talk.wav"]
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    args = ["chat", "--model", str(tiny_checkpoint), "--input-file", str(voice), "--realtime"]
    child = subprocess.Popen(
        [sys.executable, "-m", "app", *args, "--export", *map(str, exports)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        user = lambda: (folder := _conversation(tmp_path / "data")) and (folder / "user.f32")  # noqa: E731
        _wait_for(lambda: user() and user().exists() and user().stat().st_size > 0)
        child.send_signal(sig)
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert all(path.stat().st_size > 0 for path in exports), err
    meta = json.loads((_conversation(tmp_path / "data") / "meta.json").read_text())
    assert meta["ended"] and meta["frames"] > 0  # closed cleanly
    stereo, _ = soundfile.read(exports[1])
    assert len(stereo) == meta["frames"] * 1920


def test_the_window_closes_cleanly_on_a_signal(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    import app.engine.run
    from app import gui
    from app.audio.from_file import FileAudio
    from app.ui.settings import Settings

    voice = _voice(tmp_path / "in.wav", 60.0)
    monkeypatch.setattr(
        app.engine.run, "open_audio", lambda config: FileAudio(voice, realtime=True)
    )
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    settings = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    settings.model_source, settings.compute_device = str(tiny_checkpoint), "cpu"
    before = {sig: signal.getsignal(sig) for sig in terminating_signals()}
    try:
        qapp, window = gui.build_window([], settings)
        gui.close_on_signals(qapp, window)
        window.start_button.click()
        qtbot.waitUntil(lambda: window.engine.record is not None, timeout=60000)
        qtbot.waitUntil(lambda: window.engine.record.frames > 3, timeout=60000)
        folder = window.engine.record.folder
        os.kill(os.getpid(), terminating_signals()[0])
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=10000)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["ended"] and meta["frames"] > 3
