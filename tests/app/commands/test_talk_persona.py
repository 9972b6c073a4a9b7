"""`moshi-desktop talk --voice ... --persona ...` on a PersonaPlex folder made here (NVIDIA's
layout, tiny random weights; the voice .pt that NVIDIA's fork saved, packed in a voices.tgz as
its repository ships them). The model's parity with the fork is tests/model/test_persona.py's."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from app.cli import main
from model.tiny import write_tiny_personaplex

DATA = Path(__file__).parents[2] / "model" / "data" / "personaplex"
FRAME = 1920
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def personaplex(tmp_path_factory: pytest.TempPathFactory, fork_voice_pt: Path) -> Path:
    seed = json.loads((DATA / "tokens.json").read_text())["seed"]
    folder = write_tiny_personaplex(tmp_path_factory.mktemp("personaplex"), seed=seed)
    with tarfile.open(folder / "voices.tgz", "w:gz") as tar:
        data = fork_voice_pt.read_bytes()
        member = tarfile.TarInfo("voices/NATF2.pt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return folder


def _talk(tmp_path: Path, folder: Path, *extra: str) -> list[dict]:
    source = tmp_path / "in.wav"
    t = np.arange(int(0.4 * 24000)) / 24000
    soundfile.write(source, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    trace = tmp_path / "trace.jsonl"
    argv = ["talk", str(source), str(tmp_path / "out.wav"), "--model", str(folder)]
    argv += ["--device", "cpu", "--greedy", "--trailing-silence", "0.16", "--trace", str(trace)]
    assert main([*argv, *extra]) == 0
    return [json.loads(line) for line in trace.read_text().splitlines()]


def test_talk_with_a_packaged_voice_and_a_persona(personaplex, tmp_path):
    trace = _talk(tmp_path, personaplex, "--voice", "NATF2", "--persona", "You are a teacher.")
    # Only the live conversation is traced: one frame for each of the input's 5 frames and the
    # 2 frames of trailing silence (the prompt schedule ran before them).
    assert len(trace) == 5 + 2
    assert all(len(frame["audio"]) == 8 for frame in trace)


def _recording(path: Path, seconds: float, rate: int = 24000) -> Path:
    """The fork's test voice, repeated to `seconds`, at `rate` (resampled by soundfile's
    reader's caller, as any recording is)."""
    voice, voice_rate = soundfile.read(DATA / "voice_a.wav", dtype="float32")
    voice = np.tile(voice, int(np.ceil(seconds * voice_rate / len(voice))))[
        : int(seconds * voice_rate)
    ]
    if rate != voice_rate:
        t = np.arange(int(seconds * rate)) / rate
        voice = np.interp(t, np.arange(len(voice)) / voice_rate, voice).astype(np.float32)
    soundfile.write(path, np.stack([voice, voice], axis=1), rate)  # stereo: mixed down
    return path


@pytest.mark.slow
def test_talk_with_a_recorded_voice_and_a_persona_file(personaplex, tmp_path):
    persona = tmp_path / "persona.txt"
    persona.write_text("You are a teacher.\n")
    voice = ["--voice", str(_recording(tmp_path / "me.flac", 5.5, 48000))]
    trace = _talk(tmp_path, personaplex, *voice, "--persona-file", str(persona))
    assert len(trace) == 7
    same = _talk(tmp_path, personaplex, *voice, "--persona", "You are a teacher.")
    assert same == trace


@pytest.mark.parametrize("seconds, says", [(3.0, "at least 5 s"), (21.0, "20 s at most")])
def test_a_recording_too_short_or_too_long_is_refused(personaplex, tmp_path, capsys, seconds, says):
    voice = _recording(tmp_path / "me.wav", seconds)
    with pytest.raises(AssertionError):
        _talk(tmp_path, personaplex, "--voice", str(voice))
    assert says in capsys.readouterr().err


def test_talk_names_the_voices_it_has(personaplex, tmp_path, capsys):
    with pytest.raises(AssertionError):
        _talk(tmp_path, personaplex, "--voice", "NOPE1")
    err = capsys.readouterr().err
    assert "no voice 'NOPE1'" in err and "it has NATF2" in err


def test_voice_and_persona_need_a_personaplex_model(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(AssertionError):
        _talk(tmp_path, tiny_checkpoint, "--persona", "You are a teacher.")
    assert "need a PersonaPlex model" in capsys.readouterr().err


def test_chat_with_a_voice_and_a_persona_keeps_them_in_the_conversation(personaplex, tmp_path):
    """`chat --voice --persona` runs the prompt before the live frames, through the realtime
    engine, and the conversation's metadata and exports name the voice and the persona."""
    source = tmp_path / "in.wav"
    soundfile.write(source, np.zeros(int(0.4 * 24000), np.float32), 24000)
    export = tmp_path / "conversation.json"
    argv = ["chat", "--model", str(personaplex), "--device", "cpu", "--input-file", str(source)]
    argv += ["--trailing-silence", "0.2", "--seed", "1", "--export", str(export)]
    assert main([*argv, "--voice", "NATF2", "--persona", "You are a teacher."]) == 0
    settings = json.loads(export.read_text())["settings"]
    assert settings["voice"] == "NATF2" and settings["persona"] == "You are a teacher."


def test_chat_refuses_a_voice_file_for_a_server(tmp_path, capsys):
    voice = _recording(tmp_path / "me.wav", 6.0)
    assert main(["chat", "--server", "ws://127.0.0.1:9/api/chat", "--voice", str(voice)]) == 1
    assert "speaks only with its own voices" in capsys.readouterr().err


def test_doctor_says_personaplex_and_its_voices(personaplex):
    from model.files import resolve_folder
    from model.inspect import describe_model

    described = describe_model(resolve_folder(personaplex))
    assert described.startswith("PersonaPlex (a voice and a persona; 1 packaged voices: NATF2)")
