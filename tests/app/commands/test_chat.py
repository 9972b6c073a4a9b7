"""`moshi-desktop chat`: a conversation through the realtime engine, from the command line."""

import json

import numpy as np
import pytest
import soundfile

from app.cli import main


def _voice(path, seconds=1.5):
    t = np.arange(int(seconds * 24000)) / 24000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)


def test_chat_from_a_file_ends_by_itself_and_exports(tiny_checkpoint, tmp_path, capsys):
    _voice(tmp_path / "in.wav")
    exports = [tmp_path / f"conversation.{kind}" for kind in ("txt", "json", "srt", "vtt", "wav")]
    status = main(
        [
            "chat",
            "--model",
            str(tiny_checkpoint),
            "--input-file",
            str(tmp_path / "in.wav"),
            "--output-file",
            str(tmp_path / "moshi.wav"),
            "--trailing-silence",
            "1",
            "--seed",
            "2",
            "--export",
            *map(str, exports),
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    frames = 19 + 13  # ceil(1.5 s / 80 ms) + ceil(1 s / 80 ms)
    stereo, rate = soundfile.read(exports[-1])
    assert rate == 24000 and stereo.shape == (frames * 1920, 2)
    mono, _ = soundfile.read(tmp_path / "in.wav")
    assert np.allclose(stereo[: len(mono), 0], mono, atol=1e-4)  # left: the user, in time
    moshi, _ = soundfile.read(tmp_path / "moshi.wav")
    assert len(moshi) == (frames - 1) * 1920  # Moshi's first frame comes one step late
    record = json.loads(exports[1].read_text())
    text = "".join(piece["text"] for piece in record["pieces"])
    assert text.strip() and text.strip() in captured.out.replace("\n", "")
    assert exports[2].read_text().startswith("1\n") and exports[3].read_text().startswith("WEBVTT")
    assert "conversation saved in" in captured.err


def test_chat_without_audio_devices_says_so(tiny_checkpoint, capsys, monkeypatch):
    import app.audio.devices

    class NoDevices:
        def query_devices(self, *args, **kwargs):
            return []

        default = type("default", (), {"device": (-1, -1)})()

    monkeypatch.setattr(app.audio.devices, "_sounddevice", lambda: NoDevices())
    status = main(["chat", "--model", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err and err.count("\n") == 1


def test_chat_argument_errors(tiny_checkpoint, tmp_path, capsys):
    _voice(tmp_path / "in.wav", 0.2)
    assert (
        main(["chat", "--model", str(tiny_checkpoint), "--output-file", str(tmp_path / "o.wav")])
        == 1
    )
    assert "--output-file needs --input-file" in capsys.readouterr().err
    assert (
        main(
            [
                "chat",
                "--model",
                str(tiny_checkpoint),
                "--input-file",
                str(tmp_path / "in.wav"),
                "--export",
                str(tmp_path / "x.docx"),
            ]
        )
        == 1
    )
    assert "cannot export x.docx" in capsys.readouterr().err


def test_half_duplex_keeps_no_voice_moshi_did_not_hear(tiny_checkpoint, tmp_path, capsys):
    """Privacy: while Moshi speaks in half duplex, the user's channel of the export is silence."""
    _voice(tmp_path / "in.wav", 2.0)
    export = tmp_path / "x.wav"
    args = ["chat", "--model", str(tiny_checkpoint), "--input-file", str(tmp_path / "in.wav")]
    args += ["--trailing-silence", "0", "--half-duplex", "--seed", "1", "--export", str(export)]
    status = main(args)
    assert status == 0, capsys.readouterr().err
    stereo, _ = soundfile.read(export)
    frames = stereo[: len(stereo) // 1920 * 1920].reshape(-1, 1920, 2)
    moshi_rms = np.sqrt((frames[:, :, 1] ** 2).mean(axis=1))
    speaking = np.flatnonzero(moshi_rms[:-1] > 0.01)  # Moshi spoke in frame i: i + 1 is muted
    assert len(speaking) > 0, "the tiny model never spoke: the test proves nothing"
    assert not frames[speaking + 1, :, 0].any()
    assert frames[0, :, 0].any()  # before Moshi speaks, the user's voice is there


@pytest.mark.slow  # two conversations: about 10 s
def test_chat_echo_cancellation_flags_reach_the_record(tiny_checkpoint, tmp_path, capsys):
    """--aec on a file (off by default there: a file has no echo): the voice Moshi heard went
    through the canceller, and the JSON export says so, with the noise suppression level."""
    _voice(tmp_path / "in.wav", 1.0)
    export = tmp_path / "x.json"
    args = ["chat", "--model", str(tiny_checkpoint), "--input-file", str(tmp_path / "in.wav")]
    args += ["--trailing-silence", "0", "--aec", "--noise-suppression", "low"]
    status = main([*args, "--export", str(export)])
    assert status == 0, capsys.readouterr().err
    settings = json.loads(export.read_text())["settings"]
    assert settings["echo_cancellation"] is True and settings["noise_suppression"] == "low"
    assert settings["half_duplex"] is False
    status = main([*args[:-3], "--export", str(export)])
    assert status == 0, capsys.readouterr().err
    assert json.loads(export.read_text())["settings"]["echo_cancellation"] is False


def test_a_load_error_of_several_lines_is_shown_whole(tiny_checkpoint, tmp_path, capsys):
    import shutil

    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_checkpoint, wrong)
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "depformer_dim": 32}))
    _voice(tmp_path / "in.wav", 0.5)
    status = main(["chat", "--model", str(wrong), "--input-file", str(tmp_path / "in.wav")])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    problems = [line for line in err.splitlines() if "expected" in line and "found" in line]
    assert len(problems) >= 3, err  # each wrong shape on a line of its own, none cut


def test_chat_runs_the_model_with_a_lora(tmp_path):
    """--lora goes into the run's description: the engine loads it and the record names it."""
    from app.cli import build_parser
    from app.commands.chat import _run_config

    args = build_parser().parse_args(
        ["chat", "--model", "kyutai/moshika-pytorch-bf16", "--lora", str(tmp_path / "lora")]
    )
    config = _run_config(args)
    assert config.lora == str(tmp_path / "lora")
    assert config.model_key != _run_config(build_parser().parse_args(["chat"])).model_key


def test_the_status_line_shows_the_echo_cancellers_cost(capsys):
    from types import SimpleNamespace

    from app.commands.chat import StatusLine

    status = StatusLine(every=1.0)
    status.active = True
    ms = {"total": 50.0, "audio processing": 1.25}
    stats = SimpleNamespace(
        elapsed=2.0, remote=None, ms_per_frame=ms, rtf=0.6, latency_ms=300.0,
        dropped_frames=0, underruns=0, overruns=0, silenced_samples=0,
    )  # fmt: skip
    status.show(stats)
    assert "echo cancellation 1.2 ms/frame" in capsys.readouterr().err
