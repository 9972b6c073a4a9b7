"""`moshi-desktop talk`: a conversation from an audio file, through the real command line."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from app.cli import main

FRAME = 1920


def _chirp(seconds: float, rate: int = 24000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * (150 + 200 * t) * t)
    return np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def _read_trace(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reference_greedy(folder, audio: np.ndarray, trailing_frames: int, lora=None):
    """What the original `moshi` package emits for the same folder and input, frame by frame;
    with the LoRA folder `lora` as its server loads one (its config.json, fused)."""
    from moshi.models import loaders
    from moshi.models.lm import LMGen

    cfg = json.loads((folder / "config.json").read_text())
    mimi_cfg = json.loads((folder / cfg.pop("mimi_config_name")).read_text())
    if lora is not None:
        cfg = json.loads((lora / "config.json").read_text())
        cfg.pop("mimi_config_name")
    cfg.pop("model_type")
    mimi = loaders.get_mimi(str(folder / loaders.MIMI_NAME), mimi_cfg, device="cpu")
    lm = loaders.get_moshi_lm(
        str(folder / "model.safetensors"),
        lm_kwargs=cfg,
        device="cpu",
        dtype=torch.float32,
        lora_weights=None if lora is None else str(lora / "lora.safetensors"),
        fuse_lora=True,
    )
    gen = LMGen(lm.eval(), use_sampling=False)
    frames = -(-len(audio) // FRAME) + trailing_frames
    padded = np.zeros(frames * FRAME, np.float32)
    padded[: len(audio)] = audio
    emitted, pcm = [], []
    with torch.no_grad(), mimi.streaming(1), gen.streaming(1):
        for i in range(frames):
            frame = torch.from_numpy(padded[i * FRAME : (i + 1) * FRAME])[None, None]
            out = gen.step(mimi.encode(frame))
            if out is not None:
                emitted.append(out[0, :, 0].tolist())
                pcm.append(mimi.decode(out[:, 1:])[0, 0].numpy())
    return emitted, np.concatenate(pcm)


@pytest.mark.slow
def test_talk_matches_the_original_frame_for_frame(tiny_checkpoint, tmp_path):
    audio = _chirp(2.3)  # 28.75 frames: the last one is partial and zero-padded
    soundfile.write(tmp_path / "in.wav", audio[:, 0], 24000, subtype="FLOAT")
    out, trace = tmp_path / "out.wav", tmp_path / "trace.jsonl"
    status = main(
        [
            "talk",
            str(tmp_path / "in.wav"),
            str(out),
            "--model",
            str(tiny_checkpoint),
            "--greedy",
            "--trailing-silence",
            "0.8",
            "--trace",
            str(trace),
        ]
    )
    assert status == 0

    emitted, reference_pcm = _reference_greedy(tiny_checkpoint, audio[:, 0], trailing_frames=10)
    ours = [[t["text"], *t["audio"]] for t in _read_trace(trace)]
    assert len(ours) == 29 + 10 - 1  # every frame stepped once; the first step emits nothing
    assert ours == emitted
    voice, rate = soundfile.read(out, dtype="float32")
    assert rate == 24000 and len(voice) == len(ours) * FRAME
    assert np.abs(voice - np.clip(reference_pcm, -1, 1)).max() < 1e-3  # 16-bit wav


@pytest.mark.slow
def test_talk_with_a_lora_matches_the_original_frame_for_frame(tiny_checkpoint, tmp_path):
    """`--lora` on top of `--model`: the frames Kyutai's package emits with the same base and
    `lora_weights` (its server's way: config.json beside the LoRA, adapters fused)."""
    from model.tiny import write_random_lora

    base_config = json.loads((tiny_checkpoint / "config.json").read_text())
    lora = write_random_lora(tmp_path / "lora", base_config, seed=5)
    audio = _chirp(1.5)
    soundfile.write(tmp_path / "in.wav", audio[:, 0], 24000, subtype="FLOAT")
    traces = {}
    for name, extra in (("lora", ["--lora", str(lora)]), ("base", [])):
        traces[name] = tmp_path / f"{name}.jsonl"
        status = main(
            [
                "talk",
                str(tmp_path / "in.wav"),
                str(tmp_path / f"{name}.wav"),
                "--model",
                str(tiny_checkpoint),
                *extra,
                "--greedy",
                "--trailing-silence",
                "0.8",
                "--trace",
                str(traces[name]),
            ]
        )
        assert status == 0
    emitted, _ = _reference_greedy(tiny_checkpoint, audio[:, 0], trailing_frames=10, lora=lora)
    ours = [[t["text"], *t["audio"]] for t in _read_trace(traces["lora"])]
    assert ours == emitted and len(ours) == 19 + 10 - 1
    base = [[t["text"], *t["audio"]] for t in _read_trace(traces["base"])]
    assert sum(a != b for a, b in zip(ours, base, strict=True)) > len(ours) // 2


def test_talk_with_a_lora_that_cannot_load(tiny_checkpoint, tmp_path, capsys):
    from model.tiny import TINY_LM, write_random_lora

    soundfile.write(tmp_path / "in.wav", _chirp(0.3)[:, 0], 24000)
    other = write_random_lora(tmp_path / "other", {**TINY_LM, "dim": 64}, rank=2)
    for lora, message in (
        (tmp_path / "nowhere", f"cannot load the LoRA: LoRA not found: {tmp_path / 'nowhere'}"),
        (other, "cannot load the LoRA: the LoRA "),
    ):
        out = tmp_path / "out.wav"
        argv = ["talk", str(tmp_path / "in.wav"), str(out), "--model", str(tiny_checkpoint)]
        status = main([*argv, "--lora", str(lora)])
        err = capsys.readouterr().err
        assert status == 1 and message in err and "Traceback" not in err, err
        assert not out.exists()
    assert "was made for another model: its config.json has dim 64 (the model has 32)" in err


def test_talk_any_rate_and_stereo_with_transcript(tiny_checkpoint, tmp_path):
    soundfile.write(tmp_path / "in.flac", _chirp(1.0, rate=44100, channels=2), 44100)
    out, transcript = tmp_path / "moshi.wav", tmp_path / "moshi.txt"
    status = main(
        [
            "talk",
            str(tmp_path / "in.flac"),
            str(out),
            "--model",
            str(tiny_checkpoint),
            "--seed",
            "1",
            "--trailing-silence",
            "1",
            "--transcript",
            str(transcript),
        ]
    )
    assert status == 0
    voice, rate = soundfile.read(out)
    assert rate == 24000 and voice.ndim == 1
    assert len(voice) == (13 + 13 - 1) * FRAME  # ceil(1 s / 80 ms) + ceil(1 s / 80 ms) - 1
    text = transcript.read_text()
    assert text.endswith("\n") and "<0x" not in text and "\ufffd" not in text


def test_talk_is_reproducible_with_a_seed(tiny_checkpoint, tmp_path):
    soundfile.write(tmp_path / "in.wav", _chirp(0.5)[:, 0], 24000)
    traces = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        trace = tmp_path / f"{name}.jsonl"
        main(
            [
                "talk",
                str(tmp_path / "in.wav"),
                str(tmp_path / f"{name}.wav"),
                "--model",
                str(tiny_checkpoint),
                "--seed",
                seed,
                "--trailing-silence",
                "1",
                "--trace",
                str(trace),
            ]
        )
        traces.append(_read_trace(trace))
    assert traces[0] == traces[1]
    assert traces[0] != traces[2]


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda p: p / "missing.wav", "input file not found"),
        (
            lambda p: (soundfile.write(p / "e.wav", np.zeros(0), 24000), p / "e.wav")[1],
            "contains no audio",
        ),
        (lambda p: ((p / "g.wav").write_bytes(b"not audio"), p / "g.wav")[1], "cannot read"),
        (lambda p: p, "is a folder"),
    ],
)
def test_talk_bad_input_is_one_clear_line(tiny_checkpoint, tmp_path, capsys, make_input, message):
    out = tmp_path / "out.wav"
    status = main(["talk", str(make_input(tmp_path)), str(out), "--model", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert status == 1
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_talk_model_that_cannot_load(tmp_path, capsys, tiny_checkpoint):
    import shutil

    soundfile.write(tmp_path / "in.wav", _chirp(0.3)[:, 0], 24000)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    for model, message in (
        (tmp_path / "nowhere", "model folder not found"),
        (broken, "cannot load the model"),
    ):
        out = tmp_path / "out.wav"
        status = main(["talk", str(tmp_path / "in.wav"), str(out), "--model", str(model)])
        err = capsys.readouterr().err
        assert status == 1 and message in err and "Traceback" not in err
        assert not out.exists()
    (broken / "model.safetensors").unlink()
    status = main(
        ["talk", str(tmp_path / "in.wav"), str(tmp_path / "o.wav"), "--model", str(broken)]
    )
    assert status == 1 and "missing: LM weights (model.safetensors)" in capsys.readouterr().err


@pytest.mark.slow
def test_talk_leaves_no_partial_output_when_writing_fails(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    import app.audio.files

    soundfile.write(tmp_path / "in.wav", _chirp(0.3)[:, 0], 24000)

    out = tmp_path / "out.wav"
    for error in (
        OSError(28, "No space left on device"),
        soundfile.LibsndfileError(2, "Error writing: "),  # what libsndfile says on a full disk
    ):

        def disk_full(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(app.audio.files.soundfile, "write", disk_full)
        args = ["talk", str(tmp_path / "in.wav"), str(out), "--model", str(tiny_checkpoint)]
        status = main(args)
        err = capsys.readouterr().err
        assert status == 1 and f"cannot write {out}" in err and "Traceback" not in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]
    assert "the disk is full" in err or "Error writing" in err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs a folder no one can write to")
def test_talk_checks_its_outputs_before_it_computes(tmp_path, capsys):
    """An output that cannot be written is said at once, before the model loads."""
    soundfile.write(tmp_path / "in.wav", _chirp(0.3)[:, 0], 24000)
    for output in ("/proc/answer.wav", str(tmp_path)):
        args = ["talk", str(tmp_path / "in.wav"), output, "--model", str(tmp_path / "no-model")]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"cannot write {output}" in err and "model" not in err.split(output)[-1]


def test_a_stretch_of_nan_is_heard_exactly_as_silence(tiny_checkpoint, tmp_path):
    """Non-finite samples in a file are silence before resampling: the same answer as zeros."""
    rate = 16000  # resampled to 24 kHz: the NaNs must not reach the resampler either
    t = np.arange(int(1.2 * rate)) / rate
    voice = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    zeros, nans = voice.copy(), voice.copy()
    zeros[4000:8000] = 0.0
    nans[4000:8000] = np.nan
    nans[8000:8003] = [np.inf, -np.inf, np.nan]
    zeros[8000:8003] = 0.0
    outputs = []
    for name, audio in (("zeros", zeros), ("nans", nans)):
        soundfile.write(tmp_path / f"{name}.wav", audio, rate, subtype="FLOAT")
        out = tmp_path / f"{name}-out.wav"
        args = ["talk", str(tmp_path / f"{name}.wav"), str(out), "--model", str(tiny_checkpoint)]
        assert main([*args, "--greedy", "--trailing-silence", "0.5"]) == 0
        outputs.append(soundfile.read(out)[0])
    assert np.array_equal(outputs[0], outputs[1]) and np.abs(outputs[0]).max() > 0
