"""`moshi-desktop transcribe` through the real command line, on a tiny random Kyutai STT made here
(its parity with Kyutai's package is tests/model/test_stt.py's)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile

from app.cli import main
from model.files import resolve_folder
from model.stt import Transcriber
from model.tiny import write_tiny_stt

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stt(tmp_path_factory):
    return write_tiny_stt(tmp_path_factory.mktemp("stt"), audio_delay_seconds=0.5)


def _voice(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 200 * t) * np.maximum(np.sin(2 * np.pi * 3 * t), 0)).astype(
        np.float32
    )


def test_a_24khz_wav_gives_the_models_tokens_and_every_output(stt, tmp_path, capsys):
    audio = _voice(1.2, 24000)
    soundfile.write(tmp_path / "in.wav", audio, 24000)
    outputs = [tmp_path / f"out.{kind}" for kind in ("txt", "srt", "vtt", "json")]
    trace = tmp_path / "trace.jsonl"
    argv = ["transcribe", str(tmp_path / "in.wav"), "--model", str(stt), "--device", "cpu"]
    assert main([*argv, "--output", *map(str, outputs), "--trace", str(trace)]) == 0
    steps = [json.loads(line) for line in trace.read_text().splitlines()]
    # the audio's 15 frames, then the 0.5 s delay's 7 frames of silence: the last words come out
    assert len(steps) == math.ceil(len(audio) / 1920) + math.ceil(0.5 * 12.5)
    transcriber = Transcriber.load(resolve_folder(stt), "cpu")
    frames, _, _ = transcriber.frames_of(audio)
    assert [s["text_token"] for s in steps] == [transcriber.step(f).token for f in frames]
    assert all(0 <= s["end_of_turn"] <= 1 for s in steps)

    result = json.loads(outputs[3].read_text())
    assert result["duration"] == pytest.approx(1.2) and result["text"]
    assert outputs[0].read_text().strip() == result["text"]
    assert result["text"].replace(" ", "") in capsys.readouterr().out.replace(" ", "")
    assert len(result["end_of_turn"]) == math.ceil(len(audio) / 1920)
    assert outputs[2].read_text().startswith("WEBVTT")


@pytest.mark.parametrize("kind, rate, channels", [("flac", 44100, 2), ("mp3", 48000, 1)])
def test_any_format_rate_and_channels(stt, tmp_path, kind, rate, channels):
    audio = _voice(1.0, rate)
    path = tmp_path / f"in.{kind}"
    soundfile.write(path, np.stack([audio] * channels, axis=1) if channels > 1 else audio, rate)
    out = tmp_path / "out.json"
    argv = ["transcribe", str(path), "--model", str(stt), "--device", "cpu", "--output", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["duration"] == pytest.approx(1.0, abs=0.03)


def test_clear_errors(stt, tiny_checkpoint, tmp_path, capsys):
    soundfile.write(tmp_path / "in.wav", _voice(0.5, 24000), 24000)
    source = str(tmp_path / "in.wav")
    assert main(["transcribe", source, "--model", str(stt), "--output", "x.docx"]) == 1
    assert "use one of .txt, .srt, .vtt, .json" in capsys.readouterr().err
    assert main(["transcribe", source, "--model", str(tiny_checkpoint), "--device", "cpu"]) == 1
    assert "is not a speech-to-text model" in capsys.readouterr().err
    assert main(["transcribe", str(tmp_path / "none.wav"), "--model", str(stt)]) == 1
    assert "not found" in capsys.readouterr().err


def test_a_repository_is_downloaded_with_its_own_mimi_and_tokenizer(fake_hub, stt, tmp_path):
    from model.inspect import describe_model

    fake_hub.repos["kyutai/stt-tiny"] = stt
    soundfile.write(tmp_path / "in.wav", _voice(0.5, 24000), 24000)
    out = tmp_path / "out.txt"
    argv = ["transcribe", str(tmp_path / "in.wav"), "--model", "kyutai/stt-tiny", "--device", "cpu"]
    assert main([*argv, "--output", str(out)]) == 0
    fetched = {name for _, name, *_ in fake_hub.requests}
    assert {"mimi-pytorch-e351c8d8@125.safetensors", "tokenizer_en_fr_audio_8000.model"} <= fetched
    assert describe_model(resolve_folder(stt)).startswith(
        "Kyutai speech-to-text of dim 64 and 2 layers (text 0.5 s behind the audio"
    )
