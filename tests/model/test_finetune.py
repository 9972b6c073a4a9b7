"""What moshi-finetune saves (model/finetune.py), found by model/files.py and model/hub.py.

A full fine-tune's folder holds consolidated.safetensors (every LM weight, under the names the
original holds in memory: split attention) and config.json (the base's config plus "lora",
lora_rank and lora_scaling), and no Mimi or tokenizer: those are the base repository's,
fetched into the hub's cache like a repository's own files (from a fake hub on 127.0.0.1). A
LoRA's folder holds lora.safetensors and the same config.json with "lora": true.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import load_lm
from model.config import MIMI_NAME, TOKENIZER_NAME, CheckpointConfig
from model.files import (
    DEFAULT_REPO,
    CheckpointError,
    resolve_folder,
    resolve_lora,
    unfetched,
    with_lora,
)
from model.finetune import CONSOLIDATED_NAME, LORA_NAME, lora_settings
from model.hub import locate_model
from model.pipeline import Pipeline
from model.tiny import MIMI_CONFIG_NAME, write_random_lora

MIMI_CONFIG_REF = f"hf://{DEFAULT_REPO}/{MIMI_CONFIG_NAME}"
BASE_FILES = [f"{DEFAULT_REPO}/{name}" for name in (MIMI_NAME, TOKENIZER_NAME, MIMI_CONFIG_NAME)]


def finetune_folder(base: Path, folder: Path, *, own_files: bool = False, **config) -> Path:
    """What moshi-finetune saves for a full fine-tune of `base` (here its weights unchanged):
    consolidated.safetensors under the original's in-memory names, sorted, and config.json (the
    base's plus the LoRA keys, with `config` on top). `own_files`: the base's Mimi, its config
    and the tokenizer copied in too; otherwise config.json names Mimi's config in the base
    repository (the tiny Mimi is not the default one) and nothing else."""
    folder.mkdir(parents=True)
    state = load_lm(resolve_folder(base), "cpu", torch.float32).state_dict()
    save_file(dict(sorted(state.items())), str(folder / CONSOLIDATED_NAME))
    raw = json.loads((base / "config.json").read_text())
    raw.update(lora=False, lora_rank=128, lora_scaling=2.0)
    if own_files:
        for name in (MIMI_NAME, TOKENIZER_NAME, MIMI_CONFIG_NAME):
            shutil.copy(base / name, folder / name)
    else:
        raw["mimi_config_name"] = MIMI_CONFIG_REF
    raw.update(config)
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    return folder


# --- config.json ---------------------------------------------------------------------------------


def test_moshi_finetunes_config_keys_load_as_a_models_config(tiny_checkpoint) -> None:
    raw = json.loads((tiny_checkpoint / "config.json").read_text())
    for lora in (False, True):  # True: a LoRA run saved merged into consolidated.safetensors
        config = CheckpointConfig.from_dict({**raw, "lora": lora, "lora_rank": 64})
        assert config.lm == CheckpointConfig.from_dict(raw).lm


def test_lora_settings() -> None:
    assert lora_settings({"lora": True, "dim": 32}, "c.json")[:2] == (128, 2.0)  # Kyutai's
    rank, scaling, lm = lora_settings({"lora": True, "lora_rank": 16, "lora_scaling": 1}, "c")
    assert (rank, scaling) == (16, 1.0) and lm is not None and lm.dim == 4096
    for raw, message in [
        ({"lora": False}, 'c.json does not describe a LoRA (moshi-finetune writes "lora": true'),
        ({}, "c.json does not describe a LoRA"),
        ({"lora": True, "lora_rank": 0}, "c.json: lora_rank = 0 must be a whole number of 1"),
        ({"lora": True, "lora_scaling": "2"}, "c.json: lora_scaling = '2' must be a number"),
        ([], "c.json: expected a JSON object"),
    ]:
        with pytest.raises(Exception, match="^" + message.replace("(", r"\(")):
            lora_settings(raw, "c.json")


# --- Full fine-tunes -----------------------------------------------------------------------------


def test_a_full_finetune_with_its_own_files_loads_its_weights(tiny_checkpoint, tmp_path) -> None:
    from moshi.models import loaders

    folder = finetune_folder(tiny_checkpoint, tmp_path / "ft", own_files=True)
    files = resolve_folder(folder)
    assert files.lm_weights == folder / CONSOLIDATED_NAME
    assert (files.mimi_weights, files.tokenizer) == (folder / MIMI_NAME, folder / TOKENIZER_NAME)
    ours = load_lm(files, "cpu", torch.float32).state_dict()
    base = load_lm(resolve_folder(tiny_checkpoint), "cpu", torch.float32).state_dict()
    assert all(torch.equal(ours[k], base[k]) for k in base)
    # what Kyutai's server loads with --moshi-weight consolidated.safetensors --config-path
    info = loaders.CheckpointInfo.from_hf_repo(
        "unused/unused",
        moshi_weights=folder / CONSOLIDATED_NAME,
        mimi_weights=folder / MIMI_NAME,
        tokenizer=folder / TOKENIZER_NAME,
        config_path=folder / "config.json",
        mimi_config_path=folder / MIMI_CONFIG_NAME,
    )
    ref = info.get_moshi(device="cpu", dtype=torch.float32).state_dict()
    assert sorted(ref) == sorted(ours) and all(torch.equal(ours[k], ref[k]) for k in ref)


def test_a_full_finetune_without_mimi_or_tokenizer_takes_the_base_repositorys(
    tiny_checkpoint, tmp_path, caplog
) -> None:
    folder = finetune_folder(tiny_checkpoint, tmp_path / "ft")
    asked: list[tuple[str, str]] = []

    def remote(key: str, reference: str) -> Path:
        asked.append((key, reference))
        return tiny_checkpoint / reference.rsplit("/", 1)[1]

    with caplog.at_level(logging.WARNING, logger="model.finetune"):
        files = resolve_folder(folder, remote)
    assert asked == [
        ("mimi_name", f"hf://{DEFAULT_REPO}/{MIMI_NAME}"),
        ("tokenizer_name", f"hf://{DEFAULT_REPO}/{TOKENIZER_NAME}"),
        ("mimi_config_name", MIMI_CONFIG_REF),
    ]
    assert files.tokenizer == tiny_checkpoint / TOKENIZER_NAME
    assert [r.getMessage() for r in caplog.records] == [
        f"{folder} is a fine-tune without its Mimi and tokenizer: using {DEFAULT_REPO}'s (to "
        "use another base's, name its files in config.json as hf://owner/repo/file)"
    ]
    # Without a way to fetch them, that is said; a check that does not download takes them
    with pytest.raises(CheckpointError, match="in another Hugging Face repository"):
        resolve_folder(folder)
    assert resolve_folder(folder, unfetched).lm_weights == folder / CONSOLIDATED_NAME


def test_files_the_folder_has_or_names_elsewhere_are_not_replaced(tiny_checkpoint, tmp_path):
    folder = finetune_folder(
        tiny_checkpoint, tmp_path / "ft", tokenizer_name="hf://nu-dialogue/j-moshi/tok.model"
    )
    shutil.copy(tiny_checkpoint / MIMI_NAME, folder / MIMI_NAME)
    asked = []

    def remote(key: str, reference: str) -> Path:
        asked.append(reference)
        return tiny_checkpoint / {"tokenizer_name": TOKENIZER_NAME}.get(key, MIMI_CONFIG_NAME)

    files = resolve_folder(folder, remote)
    assert files.mimi_weights == folder / MIMI_NAME
    assert asked == ["hf://nu-dialogue/j-moshi/tok.model", MIMI_CONFIG_REF]


@pytest.fixture
def base_hub(fake_hub, tiny_checkpoint):
    """The fake hub with the tiny Moshi as the default base repository."""
    fake_hub.repos[DEFAULT_REPO] = tiny_checkpoint
    return fake_hub


def test_a_local_folders_references_are_fetched_into_the_cache(
    base_hub, tiny_checkpoint, tmp_path
) -> None:
    folder = finetune_folder(tiny_checkpoint, tmp_path / "ft")
    progress = []
    files = locate_model(folder, progress=progress.append)
    assert files.lm_weights == folder / CONSOLIDATED_NAME
    for path in (files.mimi_weights, files.tokenizer):
        assert path.is_relative_to(base_hub.cache)
    assert {file for _, file, _ in base_hub.requests} == {
        MIMI_NAME,
        TOKENIZER_NAME,
        MIMI_CONFIG_NAME,
    }
    assert {u.filename for u in progress} >= {MIMI_NAME, TOKENIZER_NAME}

    pipeline = Pipeline.load(files, "cpu", seed=0)  # what was fetched runs
    assert pipeline.step([0.0] * 1920).pcm is None and pipeline.step([0.0] * 1920).pcm.any()

    base_hub.requests.clear()  # offline, from the cache
    assert locate_model(folder, offline=True).tokenizer == files.tokenizer
    assert base_hub.requests == []


def test_references_not_in_the_cache_are_named_together(base_hub, tiny_checkpoint, tmp_path):
    from app.engine.fetch import parse_missing

    folder = finetune_folder(tiny_checkpoint, tmp_path / "ft")
    with pytest.raises(CheckpointError) as error:
        locate_model(folder, offline=True)
    message = str(error.value)
    assert message == (
        f"offline mode is on and these files are not in the cache: {', '.join(BASE_FILES)}. "
        f"Connect to the internet to download them once: the model in {folder} uses them"
    )
    assert parse_missing(message) == (tuple(BASE_FILES), "offline mode is on")
    assert base_hub.requests == []


def test_a_lora_folder_chosen_as_the_model_says_how_to_load_it(tiny_checkpoint, tmp_path):
    lora = write_random_lora(
        tmp_path / "lora", json.loads((tiny_checkpoint / "config.json").read_text())
    )
    with pytest.raises(CheckpointError) as error:
        resolve_folder(lora)
    assert str(error.value) == (
        f"{lora} holds a LoRA (lora.safetensors), adapters for a base model: choose its base as "
        f"the model and this folder as the LoRA (--model {DEFAULT_REPO} --lora {lora})"
    )


# --- Finding a LoRA ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.tiny import TINY_LM

    return write_random_lora(tmp_path_factory.mktemp("lora"), dict(TINY_LM), rank=2, scaling=0.5)


def test_a_lora_by_its_folder_or_its_file(lora) -> None:
    for path in (lora, lora / LORA_NAME):
        found = resolve_lora(path)
        assert (found.weights, found.config) == (lora / LORA_NAME, lora / "config.json")
        assert (found.rank, found.scaling, found.lm.dim) == (2, 0.5, 32)


def test_a_lora_that_is_not_one_is_refused(lora, tiny_checkpoint, tmp_path) -> None:
    full = finetune_folder(tiny_checkpoint, tmp_path / "full")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(lora / LORA_NAME, lonely / LORA_NAME)
    not_lora = tmp_path / "not-lora"
    shutil.copytree(lora, not_lora)
    config = json.loads((not_lora / "config.json").read_text())
    (not_lora / "config.json").write_text(json.dumps({**config, "lora": False}))
    cases = {
        tmp_path / "nowhere": f"LoRA not found: {tmp_path / 'nowhere'}",
        full: f"{full} is a full fine-tune (consolidated.safetensors), not a LoRA: choose its "
        f"folder as the model (--model {full}), with no LoRA",
        full / CONSOLIDATED_NAME: f"{full / CONSOLIDATED_NAME} is a full fine-tune",
        tiny_checkpoint: f"{tiny_checkpoint} has no lora.safetensors: choose the folder where "
        "moshi-finetune saved a LoRA (it holds lora.safetensors and config.json), or that file",
        lonely / LORA_NAME: f"{lonely / LORA_NAME} has no config.json beside it: the one "
        "moshi-finetune saved with it gives the LoRA's lora_rank and lora_scaling",
        not_lora: f"{not_lora / 'config.json'} does not describe a LoRA",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError) as error:
            resolve_lora(path)
        assert str(error.value).startswith(message), path


def test_with_lora(lora, tiny_checkpoint) -> None:
    files = resolve_folder(tiny_checkpoint)
    assert with_lora(files, None) is files and with_lora(files, "") is files
    assert with_lora(files, lora).lora == resolve_lora(lora)
