"""The window's Voice menu and Persona box, for PersonaPlex: shown for a PersonaPlex model (and a
server), kept in the settings, sent to the engine for the next conversation, and in each
conversation's metadata. A tiny PersonaPlex in NVIDIA's layout, made here, with its voices.tgz."""

from __future__ import annotations

import io
import json
import queue
import tarfile
import wave

import numpy as np
import pytest
import soundfile
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from app.engine.messages import SetPersona
from app.ui.main_window import MainWindow
from app.ui.persona_box import CUSTOM
from app.ui.settings import Settings
from model.tiny import write_tiny_personaplex
from model.voices import CONSENT, DEFAULT_PERSONA, DEFAULT_VOICE, PERSONAS


class Backend:
    def is_cached(self, config):
        return True

    def audio_devices(self):
        return [("Test microphone", True, False), ("Test speakers", False, True)]


class FakeEngine:
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


def _wav_bytes(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        t = np.arange(int(seconds * 24000)) / 24000
        w.writeframes((8000 * np.sin(2 * np.pi * 180 * t)).astype("<i2").tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def personaplex(tmp_path_factory, fork_voice_pt):
    folder = write_tiny_personaplex(tmp_path_factory.mktemp("pp"))
    with tarfile.open(folder / "voices.tgz", "w:gz") as tar:
        for name, data in (
            ("voices/NATF2.pt", fork_voice_pt.read_bytes()),
            ("voices/NATM1.pt", fork_voice_pt.read_bytes()),
            ("voices/NATM1.wav", _wav_bytes(6.0)),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return folder


@pytest.fixture
def settings(tmp_path):
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def make_window(qtbot, settings):
    def make(source, engine=None):
        settings.model_source = str(source)
        window = MainWindow(engine or FakeEngine(), settings, Backend())
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        return window

    return make


def test_the_controls_show_for_a_personaplex_model_only(make_window, personaplex, tiny_checkpoint):
    window = make_window(personaplex)
    assert window.persona_row.isVisible() and window.voice_menu.menuAction().isVisible()
    assert window.voice_button.text() == f"Voice: {DEFAULT_VOICE} (natural, female)"
    assert window.persona_box.text == DEFAULT_PERSONA
    assert window.persona_box.presets.currentText() == "Assistant"
    config = window.run_config()
    assert (config.voice, config.persona) == (DEFAULT_VOICE, DEFAULT_PERSONA)

    moshi = make_window(tiny_checkpoint)
    assert not moshi.persona_row.isVisible() and not moshi.voice_menu.menuAction().isVisible()
    assert (moshi.run_config().voice, moshi.run_config().persona) == (None, None)


def test_choosing_a_voice_keeps_it_plays_its_sample_and_tells_the_engine(
    make_window, personaplex, settings, monkeypatch
):
    from app.audio import sample

    played = []
    monkeypatch.setattr(
        sample, "play", lambda audio, rate, device=None: played.append((audio, rate))
    )
    window = make_window(personaplex)
    natm1 = next(a for a in window.voice_menu.actions() if a.data() == "NATM1")
    natm1.trigger()
    assert (
        settings.voice == "NATM1" and window.voice_button.text() == "Voice: NATM1 (natural, male)"
    )
    assert window.engine.commands(SetPersona)[-1] == SetPersona("NATM1", DEFAULT_PERSONA)
    ((audio, rate),) = played  # the first 4 s of voices/NATM1.wav
    assert rate == 24000 and audio.shape == (4 * 24000, 1) and np.abs(audio).max() > 0.2

    natf2 = next(a for a in window.voice_menu.actions() if a.data() == "NATF2")
    natf2.trigger()  # no NATF2.wav in this model's voices: said, nothing played
    assert len(played) == 1 and "no sample" in window.statusBar().currentMessage()
    assert settings.voice == "NATF2"


def test_a_persona_preset_or_text_is_kept_and_sent_once_typing_pauses(
    make_window, personaplex, settings, qtbot
):
    window = make_window(personaplex)
    box = window.persona_box
    astronaut = [p.name for p in PERSONAS].index("Astronaut")
    box.presets.setCurrentIndex(astronaut)
    box.presets.activated.emit(astronaut)
    assert box.text == PERSONAS[astronaut].text and settings.persona == PERSONAS[astronaut].text
    box.editor.setPlainText("You are a pirate who loves maps.")
    assert box.presets.currentText() == CUSTOM
    qtbot.waitUntil(lambda: bool(window.engine.commands(SetPersona)), timeout=3000)
    assert window.engine.commands(SetPersona)[-1] == SetPersona(
        DEFAULT_VOICE, "You are a pirate who loves maps."
    )
    box.editor.setPlainText("x" * 5000)  # more than a prompt holds: cut to fit
    assert len(settings.persona) == 4000

    again = make_window(personaplex)  # a new window: as it was left
    assert again.persona_box.text == "x" * 4000


def test_a_recording_needs_the_consent_line_and_5_to_20_seconds(
    make_window, personaplex, settings, tmp_path, monkeypatch
):
    asked = []

    def question(parent, title, text, buttons):
        asked.append(text)
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "question", question)
    window = make_window(personaplex)
    short, good = tmp_path / "short.wav", tmp_path / "me.flac"
    soundfile.write(short, np.zeros(3 * 24000, np.float32), 24000)
    soundfile.write(good, np.zeros(7 * 48000, np.float32), 48000)

    window.ask_voice_recording = lambda: str(short)
    window.voice_menu.recording_action.trigger()
    assert CONSENT in asked[0]
    assert settings.voice == DEFAULT_VOICE  # refused, said
    assert "at least 5 s" in window.banner.label.text()

    window.ask_voice_recording = lambda: str(good)
    window.voice_menu.recording_action.trigger()
    assert len(asked) == 1  # agreed once per window
    assert settings.voice == str(good.resolve())
    assert window.voice_button.text() == "Voice: me.flac"
    assert window.run_config().voice == str(good.resolve())


def test_a_server_takes_only_its_own_voices(make_window, settings, tiny_checkpoint):
    settings.backend = "remote"
    window = make_window(tiny_checkpoint)
    assert window.persona_row.isVisible()
    assert not window.voice_menu.recording_action.isEnabled()


def test_a_conversation_keeps_its_voice_and_persona(qtbot, settings, personaplex, tmp_path):
    """The real engine on the tiny PersonaPlex, a file for a microphone: the prompt runs with
    the chosen voice and persona, and the conversation's metadata names both."""
    from app.audio.from_file import FileAudio
    from app.conversation.record import Conversation
    from app.engine.engine import Engine
    from app.engine.local import LocalCompute
    from model.pipeline import Pipeline

    source = tmp_path / "in.wav"
    soundfile.write(source, np.zeros(int(0.4 * 24000), np.float32), 24000)
    records = []

    def new_record(model, about):
        records.append(Conversation.create(tmp_path / "recordings", model=model, settings=about))
        return records[-1]

    engine = Engine(
        lambda config: LocalCompute(Pipeline.load(personaplex, "cpu", seed=0)),
        lambda config: FileAudio(source, realtime=False, trailing_silence=0.3),
        new_record=new_record,
    )
    settings.model_source = str(personaplex)
    settings.compute_device = "cpu"
    settings.voice = "NATM1"
    settings.persona = PERSONAS[2].text
    window = MainWindow(engine, settings, Backend())
    qtbot.addWidget(window)
    window.start_button.click()
    qtbot.waitUntil(lambda: window.state == "finished", timeout=60000)
    assert not window.banner.isVisible(), window.banner.label.text()
    meta = json.loads((records[0].folder / "meta.json").read_text())
    assert meta["settings"]["voice"] == "NATM1"
    assert meta["settings"]["persona"] == PERSONAS[2].text
