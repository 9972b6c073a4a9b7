"""`moshi-desktop download`, and repository ids wherever a model is named (a fake hub on
127.0.0.1 stands in for Hugging Face)."""

import numpy as np
import soundfile

from app.cli import main
from model.catalog import CATALOG

REPO = "kyutai/tiny-moshi"


def test_download_then_talk_offline(fake_hub, tiny_checkpoint, tmp_path, capsys):
    fake_hub.repos[REPO] = tiny_checkpoint
    assert main(["download", "--model", REPO]) == 0
    captured = capsys.readouterr()
    first = captured.out.splitlines()[0]  # before the download: where its licence is
    assert first == f"{REPO} is not in this app's catalog: read its weights' licence on " + (
        f"https://huggingface.co/{REPO}"
    )
    assert "licence" not in captured.err  # said once
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


def test_download_says_what_a_catalog_model_is_before_fetching_it(
    fake_hub, tiny_checkpoint, capsys
):
    repo = "nu-dialogue/j-moshi"
    fake_hub.repos[repo] = tiny_checkpoint
    assert main(["download", "--model", repo]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == CATALOG[repo].describe()
    assert "Japanese" in out[2] and "CC BY-NC 4.0" in out[3]


def test_download_list_shows_the_catalog(capsys):
    assert main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    for repo, entry in CATALOG.items():
        assert f"{repo}: {entry.title}" in out and entry.licence.url in out
    assert "gated" in out.lower()


def test_a_gated_repository_is_one_line_on_how_to_get_access(fake_hub, tiny_checkpoint, capsys):
    repo = "kyutai/moshika-rl-seamless"
    fake_hub.repos[repo] = tiny_checkpoint
    fake_hub.gated.add(repo)
    assert main(["download", "--model", repo]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"https://huggingface.co/{repo}" in err
    assert "hf auth login" in err and "HF_TOKEN" in err


def test_download_refuses_a_folder(tiny_checkpoint, capsys):
    assert main(["download", "--model", str(tiny_checkpoint)]) == 1
    assert "not a Hugging Face repository id" in capsys.readouterr().err
