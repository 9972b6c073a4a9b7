"""The History panel: the kept conversations listed, searched, played, renamed, exported, deleted."""

import json
import time

import numpy as np
import pytest
import soundfile
from PySide6.QtWidgets import QMainWindow

import app.audio.playback
from app.conversation import preferences, store
from app.conversation.record import FRAME_SIZE
from app.ui.history_panel import HistoryPanel, attach
from app.ui.main_window import Banner


class FakeStream:
    def __init__(self, **kwargs):
        self.kwargs, self.callback = kwargs, kwargs["callback"]

    def start(self):
        pass

    def stop(self):
        pass

    def close(self):
        pass


class FakeSoundDevice:
    PortAudioError = OSError
    default = type("Default", (), {"device": [0, 0], "hostapi": 0})()

    def __init__(self):
        self.streams = []

    def query_devices(self):
        return [
            {
                "name": "speaker",
                "hostapi": 0,
                "max_input_channels": 0,
                "max_output_channels": 2,
                "default_samplerate": 24000.0,
            }
        ]

    def check_output_settings(self, **kwargs):
        pass

    def OutputStream(self, **kwargs):  # noqa: N802
        self.streams.append(FakeStream(**kwargs))
        return self.streams[-1]


def _keep(root, words, every=10, frames=100):
    conv = store.new_conversation(root, model="kyutai/tiny")
    for i in range(frames):
        level = 0.5 if i < frames // 2 else 0.1
        text = f" {words[i // every]}" if i % every == 0 and i // every < len(words) else ""
        conv.add_frame(i, np.full(FRAME_SIZE, level, np.float32), None, text)
    conv.close()
    conv.wait_compacted()
    return conv


@pytest.fixture
def root(tmp_path):
    first = _keep(tmp_path, ["apples", "and", "pears"], every=20)
    time.sleep(1.01)
    _keep(tmp_path, ["hello", "world"])
    return tmp_path, first


def test_the_list_and_its_search(qtbot, root):
    folder, first = root
    panel = HistoryPanel(folder)
    qtbot.addWidget(panel)
    panel.refresh()
    assert panel.list.topLevelItemCount() == 2
    newest = panel.list.topLevelItem(0)
    assert newest.text(2) == "hello world" and newest.text(1) == "0:08"
    assert newest.text(3) == "kyutai/tiny"
    panel.search.setText("APPLES")  # a title: filtered at once
    assert panel.visible_ids() == [first.folder.name]
    panel.search.setText("pears")  # a word of the transcript (and the title)
    qtbot.waitUntil(lambda: panel.visible_ids() == [first.folder.name])
    panel.search.setText("")
    assert len(panel.visible_ids()) == 2


def test_playback_follows_the_transcript_and_seeks(qtbot, root, monkeypatch):
    folder, first = root
    sd = FakeSoundDevice()
    monkeypatch.setattr(app.audio.playback, "_sounddevice", lambda: sd)
    panel = HistoryPanel(folder)
    qtbot.addWidget(panel)
    panel.refresh()
    panel.select(first.folder.name)
    assert [panel.lines.item(n).text() for n in range(panel.lines.count())] == [
        "0:00  apples",
        "0:01  and",
        "0:03  pears",
    ]
    assert panel.peaks.peaks.shape == (100, 2)
    assert panel.peaks.peaks[0, 0] == pytest.approx(0.5, abs=0.01)
    panel.toggle_play()
    assert panel.player.playing and panel.play_button.text() == "Pause"
    [stream] = sd.streams
    out = np.zeros((2400, 2), np.float32)
    heard = []
    deadline = time.monotonic() + 5
    while sum(map(len, heard)) < 24000 * 2 and time.monotonic() < deadline:  # two seconds
        stream.callback(out, len(out), None, None)
        if out.any():
            heard.append(out[:, 0].copy())
        time.sleep(0.005)
    assert panel.position() >= 1.9
    np.testing.assert_allclose(heard[0][:100], 0.25, atol=1e-3)  # the user's 0.5, mixed
    qtbot.waitUntil(lambda: panel.highlighted_line() == 1)  # "and" starts at 1.6 s
    panel._line_clicked(panel.lines.item(2))  # a click on "pears": the play head goes there
    assert panel.position() == pytest.approx(3.2)
    panel.toggle_play()
    assert not panel.player.playing


def test_rename_export_delete(qtbot, root, tmp_path):
    folder, first = root
    panel = HistoryPanel(folder)
    qtbot.addWidget(panel)
    panel.refresh()
    panel.select(first.folder.name)
    panel.rename_selected("Fruit talk")
    assert json.loads((first.folder / "meta.json").read_text())["title"] == "Fruit talk"
    assert panel.list.currentItem().text(2) == "Fruit talk"
    out = tmp_path.parent / f"{tmp_path.name}-export.flac"
    panel.export_selected(str(out))
    stereo, rate = soundfile.read(out)
    assert rate == 24000 and stereo.shape == (100 * FRAME_SIZE, 2)
    out.unlink()
    panel.delete_selected(confirm=False)
    assert first.folder.exists()
    panel.delete_selected(confirm=True)
    assert not first.folder.exists() and panel.list.topLevelItemCount() == 1


def test_a_recovered_conversation_is_announced_once_with_a_link(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(
        preferences, "load", lambda: preferences.Preferences(folder=str(tmp_path / "kept"))
    )
    conv = store.new_conversation(tmp_path / "kept")
    for i in range(30):
        conv.add_frame(i, np.full(FRAME_SIZE, 0.2, np.float32), None, " cut" if i == 3 else "")
    conv.flush()
    conv._unlock()  # as if the process had been killed: the lock is gone, nothing closed
    window = QMainWindow()
    window.banner, window.settings = Banner(), None
    qtbot.addWidget(window)
    panel = attach(window)
    assert "1 conversation that was cut short was recovered" in window.banner.label.text()
    assert conv.folder.name in window.banner.label.text()
    window.banner.label.linkActivated.emit(conv.folder.name)
    assert panel.selected_id() == conv.folder.name
    assert panel.list.currentItem().text(4) == "recovered"
    again = QMainWindow()
    again.banner, again.settings = Banner(), None
    qtbot.addWidget(again)
    attach(again)
    assert again.banner.isHidden()  # announced once: it is an ordinary conversation now


def test_keeping_switched_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        preferences,
        "load",
        lambda: preferences.Preferences(keep=False, folder=str(tmp_path / "kept")),
    )
    record = store.new_record("m", {})
    record.add_frame(0, None, None, " hi")
    record.close()
    assert record.folder is None and not (tmp_path / "kept").exists()


def test_the_settings_are_shared_with_the_command_line(qtbot, tmp_path, monkeypatch):
    from app.ui.keep_settings_dialog import KeepSettingsDialog

    monkeypatch.setattr(preferences, "path", lambda: tmp_path / "config" / "conversations.json")
    assert preferences.load() == preferences.Preferences()
    dialog = KeepSettingsDialog()
    qtbot.addWidget(dialog)
    assert dialog.keep.isChecked()  # on by default
    dialog.keep.setChecked(False)
    dialog.days.setValue(30)
    dialog.folder.setText(str(tmp_path / "elsewhere"))
    dialog.accept()
    assert preferences.load() == preferences.Preferences(False, 30, str(tmp_path / "elsewhere"))
    assert preferences.load().root == tmp_path / "elsewhere"
