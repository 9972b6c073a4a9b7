"""`moshi-desktop download`, and repository ids wherever a model is named (a fake hub on
127.0.0.1 stands in for Hugging Face)."""

import numpy as np
import soundfile

from app.cli import main

REPO = "kyutai/tiny-moshi"


def test_download_then_talk_offline(fake_hub, tiny_checkpoint, tmp_path, capsys):
    fake_hub.repos[REPO] = tiny_checkpoint
    assert main(["download", "--model", REPO]) == 0
    captured = capsys.readouterr()
    assert "CC-BY 4.0" in captured.err  # the licence comes with the download
    assert REPO in captured.out and str(fake_hub.cache) in captured.out

    fake_hub.requests.clear()
    soundfile.write(tmp_path / "in.wav", np.zeros(4800, np.float32), 24000)
    status = main(
        [
            "talk",
            str(tmp_path / "in.wav"),
            str(tmp_path / "out.wav"),
            "--model",
            REPO,
            "--offline",
            "--trailing-silence",
            "0.2",
        ]
    )
    assert status == 0 and fake_hub.requests == []
    assert (tmp_path / "out.wav").is_file()


def test_talk_downloads_what_it_lacks(fake_hub, tiny_checkpoint, tmp_path):
    fake_hub.repos[REPO] = tiny_checkpoint
    soundfile.write(tmp_path / "in.wav", np.zeros(1920, np.float32), 24000)
    assert (
        main(
            [
                "talk",
                str(tmp_path / "in.wav"),
                str(tmp_path / "out.wav"),
                "--model",
                REPO,
                "--trailing-silence",
                "0.1",
            ]
        )
        == 0
    )
    assert any(r[1] == "model.safetensors" for r in fake_hub.requests)


def test_offline_and_not_cached_is_one_clear_line(fake_hub, tmp_path, capsys):
    soundfile.write(tmp_path / "in.wav", np.zeros(1920, np.float32), 24000)
    status = main(
        ["talk", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--model", REPO, "--offline"]
    )
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert "not in the cache" in err and f"moshi-desktop download --model {REPO}" in err


def test_download_refuses_a_folder(tiny_checkpoint, capsys):
    assert main(["download", "--model", str(tiny_checkpoint)]) == 1
    assert "not a Hugging Face repository id" in capsys.readouterr().err
