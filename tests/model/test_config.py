"""Configurations from Kyutai's JSON, and finding a model's files in a folder."""

import json

import pytest

from model.config import CheckpointConfig, ConfigError, LMConfig, MimiConfig
from model.files import CheckpointError, resolve_folder


def test_mimi_config_reads_the_originals_format():
    from moshi.models import loaders

    cfg = MimiConfig.from_dict(loaders._mimi_config)
    assert cfg == MimiConfig()
    assert cfg.frame_size == 1920 and cfg.encoder_frame_rate == 25


def test_lm_config_reads_the_originals_7b_kwargs():
    from moshi.models import loaders

    cfg = CheckpointConfig.from_dict(dict(loaders._lm_kwargs))
    assert cfg.lm == LMConfig()
    assert cfg.lm.dim_feedforward == 16896 and cfg.lm.max_delay == 1
    assert cfg.model_type == "moshi"


@pytest.mark.parametrize("model_type", ["hibiki", "stt", "tts"])
def test_other_model_types_are_refused_with_what_is_supported(model_type):
    with pytest.raises(ConfigError, match=r"model_type .* not supported.*moshi"):
        CheckpointConfig.from_dict({"model_type": model_type})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"gating": "gelu"}, "gating"),
        ({"norm": "layer_norm"}, "norm"),
        ({"conditioners": {"x": 1}}, "conditioners"),
        ({"mystery_knob": 1}, "mystery_knob"),
        ({"delays": [0, 1]}, "delays"),
    ],
)
def test_unsupported_lm_settings_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        CheckpointConfig.from_dict(raw)


def test_unsupported_mimi_settings_are_named():
    with pytest.raises(ConfigError, match="seanet.pad_mode"):
        MimiConfig.from_dict({"seanet": {"pad_mode": "reflect"}})
    with pytest.raises(ConfigError, match="unknown quantizer keys: nope"):
        MimiConfig.from_dict({"quantizer": {"nope": 1}})


def test_lm_gen_config_gives_the_sampling_defaults():
    from model.generate import SamplingSettings

    cfg = CheckpointConfig.from_dict({"lm_gen_config": {"temp": 0.6, "top_k_text": 10}})
    settings = SamplingSettings.from_lm_gen_config(cfg.lm_gen_config)
    assert (settings.temperature, settings.text_top_k) == (0.6, 10)
    assert (settings.top_k, settings.text_temperature, settings.greedy) == (250, 0.7, False)
    assert SamplingSettings.from_lm_gen_config({"use_sampling": False}).greedy


def _touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"")


def test_folder_without_config_json_is_moshi_7b_with_default_names(tmp_path):
    _touch(
        tmp_path,
        "model.safetensors",
        "tokenizer-e351c8d8-checkpoint125.safetensors",
        "tokenizer_spm_32k_3.model",
    )
    files = resolve_folder(tmp_path)
    assert files.config.lm == LMConfig() and files.mimi_config == MimiConfig()
    assert files.lm_weights == tmp_path / "model.safetensors"


def test_folder_with_missing_files_names_each(tmp_path):
    _touch(tmp_path, "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        resolve_folder(tmp_path)
    assert "Mimi weights (tokenizer-e351c8d8-checkpoint125.safetensors)" in str(err.value)
    assert "text tokenizer (tokenizer_spm_32k_3.model)" in str(err.value)
    assert "LM weights" not in str(err.value)
    with pytest.raises(CheckpointError, match="model folder not found"):
        resolve_folder(tmp_path / "nope")


def test_folder_config_names_and_references(tmp_path):
    _touch(tmp_path, "lm.safetensors", "mimi.safetensors", "tok.model")
    config = {
        "moshi_name": "lm.safetensors",
        "mimi_name": "mimi.safetensors",
        "tokenizer_name": "tok.model",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert resolve_folder(tmp_path).tokenizer == tmp_path / "tok.model"

    config["mimi_name"] = "hf://kyutai/moshiko-pytorch-bf16/mimi.safetensors"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="another Hugging Face repository"):
        resolve_folder(tmp_path)

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json cannot be used"):
        resolve_folder(tmp_path)
