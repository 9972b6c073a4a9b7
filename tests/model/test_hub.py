"""Model sources: a local folder, or a repository fetched into huggingface_hub's cache (from a
fake hub on 127.0.0.1: no test reaches the network)."""

import json
import shutil
import socket
import threading

import pytest

from model.config import LMConfig
from model.files import CheckpointError
from model.hub import DownloadCancelled, Progress, locate_model
from model.pipeline import Pipeline

REPO = "kyutai/tiny-moshi"


@pytest.fixture
def hub(fake_hub, tiny_checkpoint):
    fake_hub.repos[REPO] = tiny_checkpoint
    return fake_hub


def test_download_into_the_cache_with_per_byte_progress(hub, tiny_checkpoint):
    updates: list[Progress] = []
    files = locate_model(REPO, progress=updates.append)
    assert str(files.lm_weights).startswith(str(hub.cache))
    assert files.lm_weights.read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes()

    by_file: dict[str, list[Progress]] = {}
    for update in updates:
        by_file.setdefault(update.filename, []).append(update)
    assert set(by_file) == {p.name for p in tiny_checkpoint.iterdir()}
    lm = by_file["model.safetensors"]
    size = (tiny_checkpoint / "model.safetensors").stat().st_size
    assert lm[-1].done == lm[-1].total == size
    assert len(lm) > 3  # many updates for a file read in pieces, not one at the end
    assert all(a.done <= b.done for a, b in zip(lm, lm[1:]))
    assert {u.count for u in updates if u.filename != "config.json"} == {4}

    pipeline = Pipeline.load(files, "cpu", seed=0)  # what was downloaded runs
    assert pipeline.step([0.0] * 1920).pcm is None


def test_offline_uses_the_cache_without_asking_the_hub(hub):
    locate_model(REPO)
    hub.requests.clear()
    files = locate_model(REPO, offline=True)
    assert files.tokenizer.is_file() and hub.requests == []
    assert locate_model(REPO, download=False).lm_weights == files.lm_weights


def test_offline_with_nothing_cached_names_every_missing_file(hub):
    with pytest.raises(CheckpointError) as err:
        locate_model(REPO, offline=True)
    message = str(err.value)
    assert "offline" in message and f"moshi-desktop download --model {REPO}" in message
    assert f"{REPO}/config.json" in message
    assert hub.requests == []


def _closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_hub_falls_back_to_the_cache(hub, monkeypatch):
    cached = locate_model(REPO)
    hub.use_endpoint(_closed_port_endpoint())
    assert locate_model(REPO).lm_weights == cached.lm_weights
    with pytest.raises(CheckpointError, match="cannot be reached.*kyutai/other/config.json"):
        locate_model("kyutai/other")


def test_cancel_midway_then_resume(hub, tiny_checkpoint):
    cancel = threading.Event()

    def on_progress(update: Progress) -> None:
        if update.filename == "model.safetensors" and update.done > 100_000:
            cancel.set()

    with pytest.raises(DownloadCancelled):
        locate_model(REPO, progress=on_progress, cancel=cancel)
    partial = list(hub.cache.rglob("*.partial"))
    assert len(partial) == 1 and partial[0].stat().st_size > 100_000

    hub.requests.clear()
    files = locate_model(REPO)
    resumed = [r for r in hub.requests if r[0] == "GET" and r[1] == "model.safetensors"]
    assert resumed and resumed[0][2] > 0  # asked only for the bytes it lacked
    assert files.lm_weights.read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes()


def test_repository_without_config_json_is_moshi_7b(hub, tiny_checkpoint, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_checkpoint, legacy)
    (legacy / "config.json").unlink()
    hub.repos["kyutai/legacy"] = legacy
    files = locate_model("kyutai/legacy")
    assert files.config.lm == LMConfig() and files.lm_weights.name == "model.safetensors"
    # offline, the cache remembers that config.json does not exist
    assert locate_model("kyutai/legacy", offline=True).config.lm == LMConfig()


def test_hf_references_in_config_json_are_followed(hub, tiny_checkpoint, tmp_path):
    quantized = tmp_path / "q8"
    shutil.copytree(tiny_checkpoint, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["mimi_name"] = f"hf://{REPO}/tokenizer-e351c8d8-checkpoint125.safetensors"
    (quantized / "config.json").write_text(json.dumps(config))
    (quantized / "tokenizer-e351c8d8-checkpoint125.safetensors").unlink()
    hub.repos["kyutai/tiny-moshi-q8"] = quantized
    files = locate_model("kyutai/tiny-moshi-q8")
    assert "tiny-moshi-q8" not in str(files.mimi_weights) and files.mimi_weights.is_file()


def test_unknown_repository_and_missing_file(hub, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="repository kyutai/nope not found"):
        locate_model("kyutai/nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "tokenizer_spm_32k_3.model").unlink()
    hub.repos["kyutai/broken"] = broken
    with pytest.raises(CheckpointError, match="kyutai/broken has no file tokenizer_spm_32k_3"):
        locate_model("kyutai/broken")


def test_a_local_folder_is_used_as_it_is(tiny_checkpoint):
    assert locate_model(str(tiny_checkpoint)).lm_weights == tiny_checkpoint / "model.safetensors"
    with pytest.raises(CheckpointError, match="model folder not found"):
        locate_model("./no/such/folder")


@pytest.mark.parametrize(
    "name",
    [
        "file:///dev/zero",
        "/dev/zero",
        "../../tokenizer_spm_32k_3.model",
        "sub/../../x.model",
        f"hf://{REPO}/../x.model",
        f"hf://{REPO}/",
        "hf://../x/tokenizer_spm_32k_3.model",
        "hf://kyutai/",
    ],
)
def test_a_name_outside_the_repository_is_refused_before_any_download(
    hub, tiny_checkpoint, tmp_path, name
):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "tokenizer_name": name}))
    hub.repos["kyutai/bad"] = bad
    message = (
        f"config.json of kyutai/bad names tokenizer_name = {name!r}, which is outside the "
        "repository: file names must stay inside it (or name another repository's file as "
        "hf://owner/repo/path)"
    )
    with pytest.raises(CheckpointError) as err:
        locate_model("kyutai/bad")
    assert str(err.value) == message
    assert {file for _, file, _ in hub.requests} == {"config.json"}
    # offline, config.json comes from the cache: the same answer
    with pytest.raises(CheckpointError) as err:
        locate_model("kyutai/bad", offline=True)
    assert str(err.value) == message


def test_a_bad_value_in_a_repositorys_config_json_is_named(hub, tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "depformer_num_heads": 0}))
    hub.repos["kyutai/bad"] = bad
    with pytest.raises(CheckpointError) as err:
        locate_model("kyutai/bad")
    assert str(err.value) == (
        "config.json of kyutai/bad: depformer_num_heads = 0 must be a whole number of 1 or more"
    )


def test_a_personaplex_repository_brings_its_packaged_voices(fake_hub, fork_voice_pt, tmp_path):
    """voices.tgz comes with the weights (the fork's server downloads it too); without it in the
    cache, offline, the model still loads (a voice can be given as a file)."""
    import io
    import tarfile

    from model.config import PERSONAPLEX_MODEL_TYPE
    from model.tiny import write_tiny_personaplex
    from model.voices import voice_names

    folder = write_tiny_personaplex(tmp_path / "pp")
    fake_hub.repos["nvidia/tiny-personaplex"] = folder
    with pytest.raises(CheckpointError):  # nothing cached yet
        locate_model("nvidia/tiny-personaplex", offline=True)
    files = locate_model("nvidia/tiny-personaplex")  # no voices.tgz in the repository
    assert files.config.model_type == PERSONAPLEX_MODEL_TYPE and voice_names(files.folder) == []
    with tarfile.open(folder / "voices.tgz", "w:gz") as tar:
        data = fork_voice_pt.read_bytes()
        member = tarfile.TarInfo("voices/NATF2.pt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    fake_hub.repos["nvidia/tiny-personaplex-2"] = folder
    files = locate_model("nvidia/tiny-personaplex-2")
    assert voice_names(files.folder) == ["NATF2"]
    assert (files.folder / "voices.tgz").is_file()
    assert locate_model("nvidia/tiny-personaplex-2", offline=True).folder == files.folder
