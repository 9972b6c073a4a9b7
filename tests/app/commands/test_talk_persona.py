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


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.mark.slow
def test_talk_with_a_recorded_voice_and_a_persona_file(personaplex, tmp_path):
    persona = tmp_path / "persona.txt"
    persona.write_text("You are a teacher.\n")
    voice = ["--voice", str(DATA / "voice_a.wav")]
    trace = _talk(tmp_path, personaplex, *voice, "--persona-file", str(persona))
    assert len(trace) == 7
    same = _talk(tmp_path, personaplex, *voice, "--persona", "You are a teacher.")
    assert same == trace


def test_talk_names_the_voices_it_has(personaplex, tmp_path, capsys):
    with pytest.raises(AssertionError):
        _talk(tmp_path, personaplex, "--voice", "NOPE1")
    err = capsys.readouterr().err
    assert "no voice 'NOPE1'" in err and "it has NATF2" in err


def test_voice_and_persona_need_a_personaplex_model(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(AssertionError):
        _talk(tmp_path, tiny_checkpoint, "--persona", "You are a teacher.")
    assert "need a PersonaPlex model" in capsys.readouterr().err
