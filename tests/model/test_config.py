"""Configurations from Kyutai's JSON, and finding a model's files in a folder."""

import copy
import json
import re

import pytest

from model.config import CheckpointConfig, ConfigError, LMConfig, MimiConfig
from model.files import CheckpointError, resolve_folder
from model.tiny import TINY_LM, TINY_MIMI


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


@pytest.mark.parametrize(
    ("model_type", "said"),
    [
        ("hibiki", "this is Hibiki, "),  # the family's members are named: test_family.py
        ("kyutai_speech_to_text", "this is Kyutai STT in the transformers format, "),
        ("tts", "this is Kyutai TTS, "),
        ("other", "model_type 'other' is not supported"),
    ],
)
def test_other_model_types_are_refused_with_what_is_supported(model_type, said):
    with pytest.raises(ConfigError) as err:
        CheckpointConfig.from_dict({"model_type": model_type})
    assert said in str(err.value)
    assert "runs Moshi dialogue models" in str(err.value) or "moshi-desktop transcribe" in str(
        err.value
    )


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
    with pytest.raises(ConfigError, match="unknown key: quantizer.nope"):
        MimiConfig.from_dict({"quantizer": {"nope": 1}})


# Each wrong value of config.json, and the error: the key, the value, what it must be.
BAD_LM_VALUES = [
    ({"dim": "32"}, "dim = '32' must be a whole number of 1 or more"),
    ({"context": 0}, "context = 0 must be a whole number of 1 or more"),
    ({"hidden_scale": "big"}, "hidden_scale = 'big' must be a number above 0"),
    ({"depformer_num_heads": 0}, "depformer_num_heads = 0 must be a whole number of 1 or more"),
    ({"num_layers": -1}, "num_layers = -1 must be a whole number of 1 or more"),
    ({"card": 0}, "card = 0 must be a whole number of 1 or more"),
    ({"dim": True}, "dim = True must be a whole number of 1 or more"),
    ({"dim": 32.0}, "dim = 32.0 must be a whole number of 1 or more"),
    ({"dim": 2**40}, "dim = 1099511627776 is too large (at most 2147483647)"),
    ({"text_card": None}, "text_card = None must be a whole number of 1 or more"),
    ({"n_q": [16]}, "n_q = [16] must be a whole number of 1 or more"),
    ({"max_period": float("nan")}, "max_period = nan must be a number above 0"),
    ({"max_period": -1}, "max_period = -1 must be a number above 0"),
    ({"hidden_scale": 1e300}, "hidden_scale = 1e+300 is too large for dim = 32"),
    ({"depformer_dim_feedforward": 0}, "depformer_dim_feedforward = 0 must be a whole number"),
    ({"depformer_multi_linear": "yes"}, "depformer_multi_linear = 'yes' must be true or false"),
    ({"num_heads": 3}, "dim = 32 must be a multiple of num_heads = 3"),
    ({"num_heads": 32}, "num_heads = 32 splits dim = 32 into heads of 1 channels, an odd"),
    ({"depformer_num_heads": 3}, "depformer_dim = 16 must be a multiple of depformer_num_heads"),
    ({"dep_q": 17}, "dep_q = 17 is more than n_q = 16"),
    ({"existing_text_padding_id": 200}, "existing_text_padding_id = 200 must be below text_card"),
    ({"existing_text_end_padding_id": -1}, "existing_text_end_padding_id = -1 must be a whole"),
    ({"delays": "0"}, "delays = '0' must be a list of 17 whole numbers (n_q + 1: the text"),
    ({"delays": [0] * 16 + [-1]}, "delays[16] = -1 must be a whole number of 0 or more"),
    ({"delays": [0] * 16 + [0.5]}, "delays[16] = 0.5 must be a whole number of 0 or more"),
    ({"moshi_name": 5}, "moshi_name = 5 must be a file name"),
    ({"mimi_name": ""}, "mimi_name = '' must be a file name"),
    ({"tokenizer_name": None}, "tokenizer_name = None must be a file name"),
    ({"mimi_config_name": ["a.json"]}, "mimi_config_name = ['a.json'] must be a file name"),
    ({"lm_gen_config": [1]}, "lm_gen_config = [1] must be a JSON object ({...})"),
    ({"lm_gen_config": {"temp": "hot"}}, "lm_gen_config.temp = 'hot' must be a number of 0 or"),
    ({"lm_gen_config": {"top_k": -1}}, "lm_gen_config.top_k = -1 must be a whole number of 0"),
    ({"lm_gen_config": {"use_sampling": 1}}, "lm_gen_config.use_sampling = 1 must be true or"),
    ({"quantize": "yes"}, "quantize = 'yes' must be true or false"),
]


@pytest.mark.parametrize(("change", "message"), BAD_LM_VALUES)
def test_every_lm_value_is_checked_before_anything_is_built(change, message):
    with pytest.raises(ConfigError, match="^" + re.escape(f"config.json: {message}")):
        CheckpointConfig.from_dict({**TINY_LM, **change})


BAD_MIMI_VALUES = [
    ("seanet", {"n_filters": 0}, "seanet.n_filters = 0 must be a whole number of 1 or more"),
    ("seanet", {"ratios": []}, "seanet.ratios = [] must be a list of one or more whole"),
    ("seanet", {"ratios": [8, 6, "5", 4]}, "seanet.ratios[2] = '5' must be a whole number"),
    ("seanet", {"ratios": [8, 6, 5, 3]}, "seanet.ratios = [8, 6, 5, 3] give a hop of 720 samples"),
    ("quantizer", {"n_q": 0}, "quantizer.n_q = 0 must be a whole number of 1 or more"),
    ("quantizer", {"n_q": 4}, "quantizer.n_q = 4 is fewer than the 8 codebooks the LM reads"),
    ("quantizer", {"n_q_semantic": 9}, "quantizer.n_q_semantic = 9 is more than quantizer.n_q"),
    ("transformer", {"context": 1}, "transformer.context = 1 must be at least 2, the steps of"),
    ("transformer", {"num_heads": 3}, "transformer.d_model = 32 must be a multiple of transfor"),
    ("transformer", {"layer_scale": "x"}, "transformer.layer_scale = 'x' must be a number above"),
    ("transformer", {"max_period": 0}, "transformer.max_period = 0 must be a number above 0"),
    ("transformer", {"output_dimensions": 5}, "transformer.output_dimensions = 5 is not support"),
    (None, {"sample_rate": 16000}, "sample_rate = 16000 is not supported (only 24000)"),
    (None, {"frame_rate": "12.5"}, "frame_rate = '12.5' is not supported (only 12.5)"),
    (None, {"seanet": [1]}, "seanet = [1] must be a JSON object ({...})"),
    (None, {"nope": 1}, "unknown key: nope"),
]


@pytest.mark.parametrize(("section", "change", "message"), BAD_MIMI_VALUES)
def test_every_mimi_value_is_checked_before_anything_is_built(section, change, message):
    raw = copy.deepcopy(TINY_MIMI)
    (raw[section] if section else raw).update(change)
    with pytest.raises(ConfigError, match="^" + re.escape(f"mimi.json: {message}")):
        MimiConfig.from_dict(raw, num_codebooks=8, source="mimi.json")


def test_a_file_that_is_not_a_json_object_is_refused():
    with pytest.raises(ConfigError, match=re.escape("config.json: it holds [1, 2], not a JSON")):
        CheckpointConfig.from_dict([1, 2])
    with pytest.raises(ConfigError, match=re.escape("Mimi's config: it holds 5, not a JSON")):
        MimiConfig.from_dict(5)


def test_unusual_values_that_run_are_accepted():
    lm = CheckpointConfig.from_dict(
        {
            **TINY_LM,
            "context": 1,
            "num_heads": 16,  # heads of 2 channels
            "depformer_num_heads": 16,  # heads of 1 channel: the depth transformer has no RoPE
            "hidden_scale": 3,
            "max_period": 1,
            "existing_text_padding_id": 199,
            "delays": [0, 5] + [0] * 15,
            "lm_gen_config": {"temp": 0, "top_k": 0, "use_sampling": False, "cfg_coef": 1.0},
        }
    )
    assert lm.lm.max_delay == 5 and lm.lm.dim_feedforward == 96
    raw = copy.deepcopy(TINY_MIMI)
    raw["transformer"].update(context=2, num_heads=16, layer_scale=None)
    assert MimiConfig.from_dict(raw).transformer.context == 2


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


NAMES = {
    "moshi_name": "lm.safetensors",
    "mimi_name": "mimi.safetensors",
    "tokenizer_name": "tok.model",
}


def _write_config(folder, config) -> None:
    """config.json in `folder`, and the (empty) files its NAMES name."""
    _touch(folder, *NAMES.values())
    (folder / "config.json").write_text(json.dumps(config))


def test_folder_config_names_and_references(tmp_path):
    _write_config(tmp_path, NAMES)
    assert resolve_folder(tmp_path).tokenizer == tmp_path / "tok.model"

    _write_config(
        tmp_path, {**NAMES, "mimi_name": "hf://kyutai/moshiko-pytorch-bf16/m.safetensors"}
    )
    with pytest.raises(CheckpointError, match="another Hugging Face repository"):
        resolve_folder(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", " cannot be used: it is not valid JSON"),
        (b'{"dim": "\xff"}', " cannot be used: it is not valid JSON"),
        (b"[1, 2]", ": it holds [1, 2], not a JSON object ({...})"),
        (b"3", ": it holds 3, not a JSON object ({...})"),
        (b'"x"', ': it holds "x", not a JSON object ({...})'),
        (b'{"dim": "32"}', ": dim = '32' must be a whole number of 1 or more"),
    ],
)
def test_a_config_json_that_cannot_be_used_is_named(tmp_path, content, message):
    _write_config(tmp_path, NAMES)
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        resolve_folder(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'config.json'}{message}")


def test_a_mimi_config_error_names_its_file(tmp_path):
    _write_config(tmp_path, {**NAMES, "mimi_config_name": "mimi.json"})
    (tmp_path / "mimi.json").write_text(json.dumps({"seanet": {"n_filters": 0}}))
    with pytest.raises(CheckpointError) as err:
        resolve_folder(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'mimi.json'}: seanet.n_filters = 0 must be a whole number of 1 or more"
    )
    # Without a Mimi config, an LM that reads more codebooks than Mimi has is config.json's fault
    _write_config(tmp_path, {**NAMES, "n_q": 80, "delays": [0] * 81})
    with pytest.raises(CheckpointError, match="config.json: quantizer.n_q = 32 is fewer than"):
        resolve_folder(tmp_path)
