"""The main window, with a tiny random Moshi and a file standing in for the microphone."""

import dataclasses
import json
import queue
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QDockWidget

from app.audio.from_file import FileAudio
from app.conversation.record import Conversation
from app.engine.engine import Engine
from app.engine.local import LocalCompute
from app.engine.messages import (
    AudioBlock,
    Autosave,
    EngineState,
    ErrorEvent,
    Export,
    Exported,
    FallingBehind,
    NewConversation,
    Start,
    StateChanged,
    Stats,
    Stop,
)
from app.ui.main_window import MainWindow
from app.ui.settings import Settings
from app.ui.settings_dialog import AT_LOAD_NOTE
from app.ui.waveform import SILENCE_DB


@pytest.fixture
def voice(tmp_path):
    t = np.arange(int(1.2 * 24000)) / 24000
    path = tmp_path / "voice.wav"
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    return path


class Backend:
    def __init__(self, cached=True):
        self.cached = cached

    def is_cached(self, config):
        return self.cached

    def audio_devices(self):
        return [("Test microphone", True, False), ("Test speakers", False, True)]

    def make_fetch(self, config):
        raise AssertionError("no download expected")


class FakeEngine:
    """Stands in for app.engine.engine.Engine: records the commands it is sent; a test puts the
    engine's events on `events` and drains them through the window's bridge."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.sent: list = []

    def start(self):
        pass

    def send(self, command):
        self.sent.append(command)

    def close(self):
        pass

    def commands(self, kind) -> list:
        return [c for c in self.sent if isinstance(c, kind)]


@pytest.fixture
def fake_window(qtbot, tmp_path):
    """A window on a FakeEngine; `feed(window, *events)` hands it events as the engine would."""
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(FakeEngine(), settings, Backend())
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def feed(window, *events) -> None:
    for event in events:
        window.engine.events.put(event)
    window.bridge.drain()


def state(name: str) -> StateChanged:
    return StateChanged(EngineState(name))


def stats(total: float = 50.0, elapsed: float = 4.0) -> Stats:
    return Stats({"total": total}, total / 80, total + 160, 0, 0, 0, 0, elapsed)


LOUD = np.full(1920, 0.5, np.float32)


@pytest.fixture
def make_window(qtbot, tmp_path, tiny_checkpoint, voice):
    def make(load=None, backend=None):
        from model.pipeline import Pipeline

        settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        settings.model_source = str(tiny_checkpoint)
        settings.compute_device = "cpu"

        def open_compute(config):
            assert config.model == str(tiny_checkpoint) and config.device == "cpu"
            return LocalCompute(Pipeline.load(tiny_checkpoint, "cpu", seed=0))

        engine = Engine(
            load or open_compute,
            lambda config: FileAudio(voice, realtime=False, trailing_silence=1.0),
            new_record=lambda *about: Conversation.create(tmp_path / "recordings"),
        )
        window = MainWindow(engine, settings, backend or Backend())
        qtbot.addWidget(window)
        window.show()
        return window

    return make


def test_a_conversation_fills_the_transcript_and_waveforms(make_window, qtbot, tmp_path):
    window = make_window()
    window.start_button.click()
    qtbot.waitUntil(lambda: window.state == "finished", timeout=30000)
    qtbot.waitUntil(lambda: window.transcript.plain_text() != "", timeout=5000)
    user, moshi = window.waveform.envelopes()
    assert user.max() > 0.2  # the voice file's sine reached the waveform
    assert "ms/frame" in window.speed_label.text() and "threads" in window.speed_label.text()

    image = window.grab().toImage()
    path = tmp_path / "window.png"
    assert image.save(str(path))
    pixels = {
        image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)
    }
    assert len(pixels) > 20  # not blank


def test_export_through_the_menu(make_window, qtbot, tmp_path):
    window = make_window()
    window.start_button.click()
    qtbot.waitUntil(lambda: window.state == "finished", timeout=30000)
    target = tmp_path / "exported.json"
    window.ask_save_path = lambda title, filters, suggested: (str(target), "JSON (*.json)")
    window.export_action.trigger()
    qtbot.waitUntil(lambda: target.exists() or window.banner.isVisible(), timeout=10000)
    assert not window.banner.isVisible(), window.banner.label.text()
    record = json.loads(target.read_text())
    assert record["pieces"] and window.settings.last_export_folder == tmp_path
    audio = tmp_path / "both.wav"
    window.ask_save_path = lambda title, filters, suggested: (str(audio.with_suffix("")), filters)
    window.audio_action.trigger()  # no suffix given: .wav is added
    qtbot.waitUntil(audio.exists, timeout=10000)
    assert soundfile.read(audio)[0].shape[1] == 2


def test_sampling_settings_reach_the_running_model(make_window, qtbot):
    window = make_window()
    window.settings.text_temperature = 0.0
    window.settings.audio_top_k = 3
    window.start_button.click()
    qtbot.waitUntil(lambda: window.engine.compute is not None, timeout=30000)
    qtbot.waitUntil(lambda: window.engine.compute.pipeline.sampling.top_k == 3, timeout=5000)
    assert window.engine.compute.pipeline.sampling.text_temperature == 0.0


def test_an_error_shows_a_message_and_the_window_stays_usable(make_window, qtbot, tiny_checkpoint):
    from app.errors import UserError
    from model.pipeline import Pipeline

    attempts = []

    def flaky_load(config):
        attempts.append(config)
        if len(attempts) == 1:
            raise UserError("cannot load the model: model folder not found: /nowhere")
        return LocalCompute(Pipeline.load(tiny_checkpoint, "cpu", seed=0))

    window = make_window(load=flaky_load)
    window.start_button.click()
    qtbot.waitUntil(window.banner.isVisible, timeout=10000)
    assert "model folder not found" in window.banner.label.text()
    assert window.start_button.text() == "&Start"
    window.start_button.click()  # try again
    qtbot.waitUntil(lambda: window.state == "finished", timeout=30000)
    assert not window.banner.isVisible()


def test_start_offers_the_download_when_the_model_is_missing(make_window, qtbot, monkeypatch):
    from app.ui import download_dialog

    offered = []
    monkeypatch.setattr(
        download_dialog.DownloadDialog, "exec", lambda self: offered.append(self) or 0
    )  # the user declines

    class Missing(Backend):
        def make_fetch(self, config):
            return type(
                "Fetch",
                (),
                {"events": queue.Queue(), "start": lambda s: None, "cancel": lambda s: None},
            )()

    window = make_window(backend=Missing(cached=False))
    window.start_button.click()
    assert len(offered) == 1 and window.engine.compute is None and window.state == "stopped"


def test_shortcuts_and_geometry(make_window, qtbot):
    window = make_window()
    shortcuts = {a.text(): a.shortcut().toString() for a in window.actions()}
    assert shortcuts["&Start / Stop"] == "Space" and shortcuts["&Mute microphone"] == "M"
    window.mute_action.trigger()
    assert window.mute_button.isChecked()
    window.resize(700, 500)
    window.close()
    assert window.settings.window_geometry


def test_settings_from_the_menu_are_saved_and_applied_live(make_window, qtbot, monkeypatch):
    from app.ui.settings_dialog import SettingsDialog

    window = make_window()
    window.start_button.click()
    qtbot.waitUntil(lambda: window.engine.compute is not None, timeout=30000)

    def change_and_accept(dialog):
        dialog.audio_top_k.set_value(7)  # live: the running conversation gets it now
        dialog.accept()
        return SettingsDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", change_and_accept)
    window.settings_action.trigger()
    qtbot.waitUntil(lambda: window.engine.compute.pipeline.sampling.top_k == 7, timeout=5000)
    assert window.settings.audio_top_k == 7


def test_loading_shows_progress(make_window, qtbot):
    import threading

    from model.pipeline import Pipeline

    release = threading.Event()

    def slow_load(config):
        release.wait(10)
        return LocalCompute(Pipeline.load(config.model, "cpu", seed=0))

    window = make_window(load=slow_load)
    window.start_button.click()
    qtbot.waitUntil(lambda: window.state == "loading", timeout=5000)
    assert window.busy.isVisible() and window.start_button.text() == "&Stop"
    release.set()
    qtbot.waitUntil(lambda: window.state in ("running", "finished"), timeout=30000)
    assert not window.busy.isVisible()


def test_a_conversation_through_a_server(qtbot, tmp_path, voice, fake_server):
    from app.engine.run import open_compute

    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    settings.backend = "remote"
    settings.server_url = fake_server.url
    engine = Engine(
        open_compute,  # the launcher's: RunConfig.server set, a RemoteSession
        lambda config: FileAudio(voice, realtime=True, trailing_silence=0.5),
        new_record=lambda *about: Conversation.create(tmp_path / "recordings"),
    )
    window = MainWindow(engine, settings, Backend(cached=False))  # no model, no download
    qtbot.addWidget(window)
    window.show()
    assert window.model_label.text() == f"server {fake_server.url}"
    window.start_button.click()
    qtbot.waitUntil(lambda: window.state == "running", timeout=10000)
    assert window.start_button.text() == "&Stop"
    qtbot.waitUntil(lambda: "reconnects" in window.drops_label.text(), timeout=10000)
    assert window.speed_label.text().startswith("RTT ")
    assert "buffer" in window.latency_label.text()
    qtbot.waitUntil(lambda: window.state == "finished", timeout=10000)
    assert window.transcript.plain_text().startswith("w0 w1")
    assert not window.banner.isVisible()


def test_an_unreachable_server_says_so_and_the_window_stays_usable(qtbot, tmp_path, voice):
    import socket

    from app.engine.run import open_compute

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    settings.backend = "remote"
    settings.server_url = f"ws://127.0.0.1:{port}/api/chat"
    engine = Engine(open_compute, lambda config: FileAudio(voice, realtime=True))
    window = MainWindow(engine, settings, Backend(cached=False))
    qtbot.addWidget(window)
    window.show()
    window.start_button.click()
    qtbot.waitUntil(window.banner.isVisible, timeout=10000)
    assert "connection refused" in window.banner.label.text()
    assert window.state == "error" and window.start_button.text() == "&Start"


def test_a_status_message_shows_whole_beside_the_figures(make_window, qtbot):
    window = make_window()
    settings = window.settings
    settings.model_source, settings.compute_device = "kyutai/moshiko-pytorch-bf16", "cuda"
    window._describe_model()
    window.speed_label.setText("65 ms/frame · RTF 0.81")
    window.latency_label.setText("latency 175 ms")
    window.drops_label.setText("dropped 0 · xruns 0")
    window.elapsed_label.setText("12:34")
    bar = window.statusBar()

    def room_for_the_message() -> int:
        qtbot.wait(50)  # let the bar lay its widgets out
        labels = [w for w in bar.findChildren(type(window.speed_label)) if w.isVisible()]
        return min(w.geometry().x() for w in labels)

    assert window.model_label.isVisible()
    window.on_state(EngineState.RUNNING)  # the headphones advice
    message = bar.currentMessage()
    assert message
    assert bar.fontMetrics().horizontalAdvance(message) < room_for_the_message()
    bar.clearMessage()
    assert window.model_label.isVisible()
    longest_note = AT_LOAD_NOTE.format("The seed and offline mode apply")  # after the settings
    bar.showMessage(longest_note)
    assert bar.fontMetrics().horizontalAdvance(longest_note) < room_for_the_message()


def test_space_presses_the_focused_button_and_starts_from_elsewhere(fake_window, qtbot):
    window, engine = fake_window, fake_window.engine
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    window.mute_button.setFocus()
    qtbot.keyClick(window.mute_button, Qt.Key.Key_Space)
    assert window.mute_button.isChecked() and engine.commands(Start) == []
    window.start_button.setFocus()
    qtbot.keyClick(window.start_button, Qt.Key.Key_Space)
    assert len(engine.commands(Start)) == 1  # once: the button, not the shortcut as well
    feed(window, StateChanged(EngineState.RUNNING))
    window.waveform.setFocus()  # no button or text field has the focus: Space is Start / Stop
    qtbot.keyClick(window.waveform, Qt.Key.Key_Space)
    assert len(engine.commands(Stop)) == 1
    assert window.start_action.shortcut().toString() == "Space"  # as the menu shows it


def test_a_state_message_goes_with_its_state(fake_window):
    window, bar = fake_window, fake_window.statusBar()
    feed(window, state("loading"))
    assert bar.currentMessage() == "Loading the model…" and window.busy.isVisible()
    feed(window, ErrorEvent("cannot load the model: model folder not found"), state("error"))
    assert bar.currentMessage() == "" and not window.busy.isVisible()
    window.settings.backend = "remote"
    feed(window, state("connecting"))
    assert bar.currentMessage().startswith("Connecting to ws://")
    feed(window, state("stopped"))
    assert bar.currentMessage() == ""
    feed(window, Exported("/tmp/talk.txt"), state("error"))  # not a state's message: it stays
    assert bar.currentMessage() == "Saved /tmp/talk.txt"


def test_the_meters_fall_silent_when_the_audio_stops(fake_window):
    window = fake_window
    feed(window, state("running"), AudioBlock(LOUD, LOUD, 0.0))
    assert all(level > -10 for level, peak in window.waveform.levels())
    feed(window, state("stopped"))
    assert all(level == peak == SILENCE_DB for level, peak in window.waveform.levels())
    assert window.waveform.envelopes()[0].max() == 0.5  # the picture of the voices stays


def test_the_slow_warning_keeps_its_figure_current(fake_window):
    window, banner = fake_window, fake_window.banner
    feed(window, state("running"), FallingBehind.of(stats(total=160.0)))
    assert banner.isVisible() and "160 ms for each 80 ms frame" in banner.label.text()
    feed(window, stats(total=120.0))
    assert "(120 ms for each 80 ms frame)" in banner.label.text()
    assert "cannot run Moshi in real time" in banner.label.text()
    feed(window, stats(total=60.0))
    assert "keeps up again (60 ms" in banner.label.text()
    banner.hide()  # dismissed: it stays dismissed
    feed(window, stats(total=200.0))
    assert not banner.isVisible()


def test_a_new_conversation_starts_with_empty_figures(fake_window):
    window = fake_window
    feed(window, state("running"), FallingBehind.of(stats(total=160.0, elapsed=65.0)))
    feed(window, stats(total=160.0, elapsed=65.0))
    assert window.elapsed_label.text() == "1:05" and "RTF 2.00" in window.speed_label.text()
    window.new_button.click()
    for label in (window.speed_label, window.latency_label, window.drops_label):
        assert label.text() == "" and label.styleSheet() == ""
    assert window.elapsed_label.text() == ""
    assert not window.banner.isVisible()  # its figure was the old conversation's
    feed(window, stats(total=40.0, elapsed=0.4))
    assert "RTF 0.50" in window.speed_label.text() and not window.banner.isVisible()


def test_the_chosen_filter_decides_the_format(fake_window, tmp_path):
    window, engine = fake_window, fake_window.engine
    feed(window, state("running"), AudioBlock(LOUD, LOUD, 0.0))
    asked = []

    def save_as(name: str, chosen: str):
        def ask(title, filters, suggested):
            asked.append((filters, suggested))
            return str(tmp_path / name), chosen

        window.ask_save_path = ask

    save_as("noext", "JSON (*.json)")
    window.export_action.trigger()
    save_as("notes.2024.05.01", "Markdown (*.md)")  # dots, but not a Markdown suffix
    window.export_action.trigger()
    save_as("subtitles.SRT", "Subtitles SRT (*.srt)")  # the filter's own suffix stays
    window.export_action.trigger()
    assert [Path(c.path).name for c in engine.commands(Export)] == [
        "noext.json",
        "notes.2024.05.01.md",
        "subtitles.SRT",
    ]
    filters, suggested = asked[0]
    assert filters.split(";;")[:3] == ["Text (*.txt)", "Markdown (*.md)", "JSON (*.json)"]
    assert suggested == "moshi-conversation.txt"
    save_as("both", "Stereo WAV: you left, Moshi right (*.wav)")
    window.audio_action.trigger()
    assert engine.commands(Export)[-1].path == str(tmp_path / "both.wav")


def test_a_suffix_added_to_an_existing_file_asks_before_replacing_it(fake_window, tmp_path):
    window, engine = fake_window, fake_window.engine
    (tmp_path / "talk.json").write_text("{}")
    feed(window, state("running"), AudioBlock(LOUD, LOUD, 0.0))
    window.ask_save_path = lambda *args: (str(tmp_path / "talk"), "JSON (*.json)")
    replacing = []
    window.ask_replace = lambda path: replacing.append(path) or False
    window.export_action.trigger()
    assert replacing == [str(tmp_path / "talk.json")] and engine.commands(Export) == []


def test_export_is_offered_only_when_there_is_something_to_export(fake_window):
    window = fake_window
    actions = (window.export_action, window.audio_action)
    assert not any(action.isEnabled() for action in actions)
    feed(window, state("running"), Autosave("/data/conversations/1"))
    assert not any(action.isEnabled() for action in actions)  # nothing heard yet
    feed(window, AudioBlock(LOUD, LOUD, 0.0))
    assert all(action.isEnabled() for action in actions)
    feed(window, state("stopped"))
    assert all(action.isEnabled() for action in actions)  # stopped: the conversation stays
    window.new_action.trigger()
    assert not any(action.isEnabled() for action in actions)


def test_new_conversation_says_where_the_last_one_is_saved(fake_window, tmp_path):
    window, engine = fake_window, fake_window.engine
    window.ask_unsaved = lambda: pytest.fail("a saved conversation needs no question")
    window.new_action.trigger()  # nothing yet: nothing to say
    assert window.statusBar().currentMessage() == ""
    folder = str(tmp_path / "conversations" / "1")
    feed(window, state("running"), Autosave(folder), AudioBlock(LOUD, LOUD, 0.0))
    window.new_button.click()
    assert len(engine.commands(NewConversation)) == 2
    assert window.statusBar().currentMessage() == f"The last conversation is saved in {folder}."


@pytest.mark.parametrize("autosave", [(), (Autosave("/data/1"), Autosave(None))])
def test_new_conversation_asks_when_the_conversation_is_not_saved(fake_window, tmp_path, autosave):
    window, engine = fake_window, fake_window.engine
    feed(window, state("running"), *autosave, AudioBlock(LOUD, LOUD, 0.0))
    answers = ["cancel", "export", "export", "discard"]
    window.ask_unsaved = lambda: answers.pop(0)
    saves = [None, (str(tmp_path / "kept"), "Text (*.txt)")]  # the first save is cancelled
    window.ask_save_path = lambda *args: saves.pop(0)
    for _ in range(2):  # cancel; export, but no file chosen
        window.new_button.click()
        assert engine.commands(NewConversation) == []
    window.new_button.click()  # export to kept.txt
    assert engine.sent[-2:] == [Export(str(tmp_path / "kept.txt")), NewConversation()]
    feed(window, AudioBlock(LOUD, LOUD, 0.08))
    window.new_button.click()  # discard
    assert engine.sent[-1] == NewConversation() and len(engine.commands(Export)) == 1


@pytest.mark.parametrize("press, answer", [("Export…", "export"), ("Discard", "discard")])
def test_the_unsaved_question_offers_export_and_discard(fake_window, press, answer):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    seen = {}

    def press_button():
        box = QApplication.activeModalWidget()
        seen["text"] = box.text()
        buttons = {b.text().replace("&", ""): b for b in box.buttons()}
        seen["buttons"] = set(buttons)
        buttons.get(press, buttons["Cancel"]).click()

    QTimer.singleShot(0, press_button)
    assert fake_window.ask_unsaved() == answer
    assert seen == {
        "text": "This conversation is not saved.",
        "buttons": {"Export…", "Discard", "Cancel"},
    }


def test_the_note_after_a_seed_change_says_when_it_applies(fake_window, monkeypatch):
    from app.ui.settings_dialog import SettingsDialog

    window = fake_window
    window.settings.half_duplex = True  # no headphones advice in the status bar

    def accept(**changes) -> str:
        def change_and_accept(dialog):
            for name, value in changes.items():
                if name == "device":
                    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData(value))
                else:
                    getattr(dialog, name).set_value(value)
            dialog.accept()
            return SettingsDialog.DialogCode.Accepted

        monkeypatch.setattr(SettingsDialog, "exec", change_and_accept)
        window.statusBar().clearMessage()
        window.settings_action.trigger()
        return window.statusBar().currentMessage()

    assert accept(seed=5) == ""  # no model loaded yet: the next Start loads it with this seed
    window.start_button.click()
    feed(window, state("loading"), state("running"))
    at_load = "The seed applies when the model reloads (another model, or a relaunch)."
    assert accept(seed=6) == at_load  # the model stays loaded: Start does not load it again
    feed(window, state("stopped"))
    assert accept(seed=7) == at_load
    assert accept(audio_top_k=9) == ""  # sampling applies at once
    feed(window, state("running"))
    assert accept(seed=8, device="cpu") == (
        "The compute device and the seed apply at the next Start."
    )


def test_an_error_of_several_lines_is_shown_whole(fake_window):
    from app.engine.messages import ErrorEvent
    from app.logs import log_path

    message = (
        "cannot load the model: model.safetensors does not fit the model:\n"
        "depformer_in.0.weight: expected [16, 32], found [16, 64]\n"
        "linears.0.weight: expected [64, 16], found [64, 32]"
    )
    feed(fake_window, state("loading"), ErrorEvent(message), state("error"))
    banner = fake_window.banner
    assert banner.isVisible() and "does not fit the model" in banner.label.text()
    assert "linears.0.weight" not in banner.label.text()  # one line in the banner
    assert banner.details_button.isVisible() and not banner.details.isVisible()
    banner.details_button.click()
    shown = banner.details.toPlainText()
    assert banner.details.isVisible() and message in shown and str(log_path()) in shown


def test_loading_says_what_else_it_does(fake_window):
    from app.engine.messages import StateChanged

    detail = "building the CPU kernel for this computer, once (about 10 s)"
    feed(fake_window, StateChanged(EngineState.LOADING, detail))
    assert fake_window.statusBar().currentMessage() == f"Loading the model: {detail}…"


def test_before_the_first_start_the_window_says_what_it_takes(fake_window):
    assert fake_window.pages.currentWidget() is fake_window.welcome
    placeholder = fake_window.welcome.text()
    assert "kyutai/moshiko-pytorch-bf16" in placeholder and "15.8 GB" in placeholder
    assert "English" in placeholder and "CC-BY 4.0" in placeholder  # its catalog entry
    assert "GPU" in placeholder and "On a server" not in placeholder  # the menu's words
    assert "Where Moshi runs" in placeholder and "folder" in placeholder
    fake_window.settings.backend = "remote"
    fake_window._describe_model()
    assert "runs on the server" in fake_window.welcome.text()
    feed(fake_window, state("connecting"))
    assert fake_window.pages.currentWidget() is fake_window.transcript


def test_bad_input_samples_show_in_the_figures(fake_window):
    feed(fake_window, dataclasses.replace(stats(), silenced_samples=103))
    assert "silenced 103" in fake_window.drops_label.text()


def test_the_window_says_while_talking_that_a_conversation_is_not_kept(fake_window):
    feed(fake_window, Autosave(None), state("running"), AudioBlock(LOUD, LOUD, 0.0))
    assert fake_window.not_kept_label.isVisible()
    assert fake_window.not_kept_label.text() == "This conversation is not being saved to disk"
    feed(fake_window, Autosave("/data/conversations/1"))
    assert not fake_window.not_kept_label.isVisible()
    assert fake_window.findChild(QDockWidget, "history").widget() is fake_window.history


def test_the_conversation_settings_are_in_the_settings_menu(fake_window, monkeypatch):
    from app.ui.keep_settings_dialog import KeepSettingsDialog

    opened = []
    monkeypatch.setattr(KeepSettingsDialog, "exec", lambda self: opened.append(self) or 0)
    assert fake_window.conversations_action in fake_window.settings_menu.actions()
    fake_window.conversations_action.trigger()
    assert len(opened) == 1
