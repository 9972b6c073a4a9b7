"""Tests for model/checkpoint.py: loading Mimi weights from safetensors files, strictly.

Files are written in a temp dir from the random weights the original holds (see conftest.py), in
each layout Kyutai's files use. A loaded model must hold exactly those weights and give the
original's outputs; any file that does not fit must fail with our `CheckpointError`, naming what
is wrong, never with a raw safetensors or PyTorch exception.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_weights
from model.config import MimiConfig
from model.files import CheckpointError
from model.mimi import Mimi

FRAME = 1920
ATTN_IN = "encoder_transformer.transformer.layers.0.self_attn.in_projs.0.weight"


def small_model(config: dict) -> Mimi:
    return Mimi(MimiConfig.from_dict(config)).eval()


def assert_holds(model: Mimi, state: dict[str, torch.Tensor]) -> None:
    """`model` holds exactly `state` (the original's in-memory names)."""
    got = model.state_dict()
    assert sorted(got) == sorted(state)
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def outputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(1, 1, 4 * FRAME, generator=g)
    codes = torch.randint(0, 64, (1, 8, 4), generator=g)
    with torch.no_grad():
        return model.encode(audio), model.decode(codes)


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_both_attention_layouts_load_and_match_the_original(
    small_mimi, small_config, save_checkpoint, layout
) -> None:
    path = save_checkpoint(small_mimi.state_dict, layout)
    fused_name = ATTN_IN.replace("in_projs.0.weight", "in_proj_weight")
    assert (fused_name in load_file(str(path))) == (layout == "fused")  # the file is as named
    model = small_model(small_config)
    load_weights(model, path)
    assert_holds(model, small_mimi.state_dict)
    codes, audio = outputs(model)
    ref_codes, ref_audio = outputs(small_mimi.ref)
    assert torch.equal(codes, ref_codes)
    assert ((audio - ref_audio).norm() / ref_audio.norm()).item() < 1e-5


def test_layouts_give_identical_outputs(small_mimi, small_config, save_checkpoint) -> None:
    results = []
    for layout in ("fused", "split"):
        model = small_model(small_config)
        load_weights(model, save_checkpoint(small_mimi.state_dict, layout))
        results.append(outputs(model))
    (codes_a, audio_a), (codes_b, audio_b) = results
    assert torch.equal(codes_a, codes_b)
    assert torch.equal(audio_a, audio_b)


@pytest.mark.slow
def test_full_size_file_in_the_released_layout_loads(full_mimi, save_checkpoint) -> None:
    model = Mimi().eval()
    load_weights(model, save_checkpoint(full_mimi.state_dict, "fused"))
    assert_holds(model, full_mimi.state_dict)


@pytest.mark.parametrize("sum_name", ["embed_avg", "embed_sum"])
def test_legacy_codebook_names_load(small_mimi, small_config, save_checkpoint, sum_name) -> None:
    legacy = {"_initialized": "inited", "cluster_usage": "cluster_size", "embedding_sum": sum_name}
    state = {}
    for key, value in small_mimi.state_dict.items():
        prefix, leaf = key.rsplit(".", 1)
        state[f"{prefix}.{legacy.get(leaf, leaf)}" if "_codebook" in prefix else key] = value
    assert not any(k.endswith("embedding_sum") for k in state)
    model = small_model(small_config)
    load_weights(model, save_checkpoint(state, "fused"))
    assert_holds(model, small_mimi.state_dict)
    assert torch.equal(outputs(model)[0], outputs(small_mimi.ref)[0])


# --- files that do not fit -------------------------------------------------------------------------


def load_error(config: dict, path) -> str:
    model = small_model(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(model, path)
    # A failed load leaves the model as it was.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    return str(info.value)


def test_missing_key_is_named_with_its_expected_shape(
    small_mimi, small_config, save_checkpoint
) -> None:
    state = dict(small_mimi.state_dict)
    del state["decoder.model.14.conv.conv.bias"]
    message = load_error(small_config, save_checkpoint(state, "fused", "missing.safetensors"))
    assert "missing.safetensors" in message
    assert re.search(r"decoder\.model\.14\.conv\.conv\.bias\b.*missing.*\(1,\)", message)


def test_unexpected_key_is_named_with_its_shape(small_mimi, small_config, save_checkpoint) -> None:
    state = dict(small_mimi.state_dict, **{"encoder.model.99.conv.conv.weight": torch.ones(4, 2)})
    message = load_error(small_config, save_checkpoint(state, "fused"))
    assert re.search(r"encoder\.model\.99\.conv\.conv\.weight\b.*unexpected.*\(4, 2\)", message)


@pytest.mark.parametrize(
    ("key", "on_disk", "bad_shape", "expected"),
    [
        (
            "quantizer.rvq_first.input_proj.weight",
            "quantizer.rvq_first.input_proj.weight",
            (16, 32, 3),
            (16, 32, 1),
        ),
        (ATTN_IN, ATTN_IN.replace("in_projs.0.weight", "in_proj_weight"), (96, 16), (96, 32)),
    ],
    ids=["conv", "fused-attention"],
)
def test_wrong_shape_is_named_with_both_shapes(
    small_mimi, small_config, save_checkpoint, key, on_disk, bad_shape, expected
) -> None:
    state = dict(small_mimi.state_dict, **{key: torch.zeros(bad_shape)})
    message = load_error(small_config, save_checkpoint(state, "fused"))
    assert on_disk in message
    assert str(expected) in message and str(bad_shape) in message


def test_several_problems_are_all_reported(small_mimi, small_config, save_checkpoint) -> None:
    state = dict(small_mimi.state_dict)
    del state["decoder.model.14.conv.conv.bias"]
    state["quantizer.rvq_first.input_proj.weight"] = torch.zeros(16, 32, 3)
    message = load_error(small_config, save_checkpoint(state, "split"))
    assert "decoder.model.14.conv.conv.bias" in message
    assert "quantizer.rvq_first.input_proj.weight" in message


def test_truncated_file_is_a_checkpoint_error(small_mimi, small_config, save_checkpoint) -> None:
    path = save_checkpoint(small_mimi.state_dict, "fused", "truncated.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = load_error(small_config, path)
    assert "truncated.safetensors" in message
    assert "safetensors" in message


@pytest.mark.parametrize(
    "content",
    [b"", b"not a safetensors file at all\n" * 10, bytes(range(256)) * 4],
    ids=["empty", "text", "bytes"],
)
def test_garbage_file_is_a_checkpoint_error(small_config, tmp_path, content) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    message = load_error(small_config, path)
    assert "garbage.safetensors" in message


def test_missing_file_is_a_checkpoint_error(small_config, tmp_path) -> None:
    path = tmp_path / "nowhere" / "mimi.safetensors"
    message = load_error(small_config, path)
    assert str(path) in message
    assert "not found" in message
