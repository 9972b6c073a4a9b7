"""model/voices.py: PersonaPlex's packaged voices read from voices.tgz in place (never extracted:
no path outside the folder, no link), their samples, the personas offered."""

from __future__ import annotations

import io
import tarfile
import wave

import numpy as np
import pytest

from model.voices import (
    DEFAULT_PERSONA,
    DEFAULT_VOICE,
    PACKAGED_VOICES,
    PERSONAS,
    describe_voice,
    is_voice_name,
    voice_file,
    voice_length_problem,
    voice_names,
    voice_sample,
)


def _wav(seconds: float, rate: int = 24000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        t = np.arange(int(seconds * rate)) / rate
        w.writeframes((3000 * np.sin(2 * np.pi * 200 * t)).astype("<i2").tobytes())
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        member.linkname = "/etc/passwd"
    tar.addfile(member, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture
def folder(tmp_path):
    with tarfile.open(tmp_path / "voices.tgz", "w:gz") as tar:
        _add(tar, "voices/NATF2.pt", b"pt")
        _add(tar, "./voices/NATM1.pt", b"pt1")
        _add(tar, "voices/NATF2.wav", _wav(6.0))
        _add(tar, "../voices/EVIL.pt", b"x")
        _add(tar, "voices/../../EVIL2.pt", b"x")
        _add(tar, "voices/LINK.pt", b"", tarfile.SYMTYPE)
        _add(tar, "voices/sub/DEEP.pt", b"x")
    return tmp_path


def test_names_come_from_the_archive_without_extracting_it(folder):
    assert voice_names(folder) == ["NATF2", "NATM1"]
    assert voice_file(folder, "NATM1.pt") == b"pt1"
    assert sorted(p.name for p in folder.iterdir()) == ["voices.tgz"]  # nothing written
    for bad in ("EVIL.pt", "EVIL2.pt", "LINK.pt", "DEEP.pt", "../voices.tgz", "sub/DEEP.pt"):
        assert voice_file(folder, bad) is None


def test_a_loose_voices_folder_counts_too(folder):
    (folder / "voices").mkdir()
    (folder / "voices" / "VARF0.pt").write_bytes(b"loose")
    assert voice_names(folder) == ["NATF2", "NATM1", "VARF0"]
    assert voice_file(folder, "VARF0.pt") == b"loose"


def test_a_sample_is_the_first_seconds_of_the_voices_recording(folder):
    frames, rate, channels, width = voice_sample(folder, "NATF2")
    assert (rate, channels, width) == (24000, 1, 2) and len(frames) == 4 * 24000 * 2
    assert voice_sample(folder, "NATM1") is None  # no recording in the archive


def test_names_lengths_and_personas():
    assert len(PACKAGED_VOICES) == 18 and DEFAULT_VOICE in PACKAGED_VOICES
    assert describe_voice("NATF2") == "NATF2 (natural, female)"
    assert describe_voice("VARM4") == "VARM4 (varied, male)" and describe_voice("Mine") == "Mine"
    assert is_voice_name("NATF2") and not is_voice_name("me.wav") and not is_voice_name("a/b")
    assert "at least 5 s" in voice_length_problem(3.2)
    assert "20 s at most" in voice_length_problem(25)
    assert voice_length_problem(10) == ""
    assert [p.name for p in PERSONAS] == [
        "Assistant",
        "Customer service",
        "Casual conversation",
        "Astronaut",
    ]
    assert DEFAULT_PERSONA.startswith("You are a wise and friendly teacher.")
