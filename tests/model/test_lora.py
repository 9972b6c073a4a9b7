"""A LoRA from moshi-finetune merged as the LM loads (model/lora.py), against Kyutai's package.

The base is the tiny random Moshi in Kyutai's released layout (fused attention keys); the LoRA is
what moshi-finetune saves (`model.tiny.write_random_lora`): an adapter for every linear, with B
not zero, so the merge changes the weights and the tokens. Kyutai's package (moshi 0.2.13) loads
the same base and LoRA as its server does (`CheckpointInfo.from_hf_repo(..., lora_weights=...,
config_path=...)`, `get_moshi(fuse_lora=True)`, its server's default); in float32 our merged
weights are its fused weights exactly, and greedy generation gives its tokens, fused or not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import load_lm
from model.files import CheckpointError, ModelFiles, resolve_folder, with_lora
from model.finetune import LORA_NAME
from model.generate import FrameGenerator, SamplingSettings
from model.quant import Int8Linear, dequantize_weight, quantize_weight
from model.streaming import streaming
from model.tiny import Q8_NAME, write_random_lora, write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tiny_checkpoint: Path) -> Path:
    """The tiny Moshi (seed 0), fused as Kyutai releases its weights."""
    return tiny_checkpoint


def base_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.fixture(scope="module")
def lora(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adapters for every linear, and text_emb trained whole (moshi-finetune's ft_embed)."""
    return write_random_lora(
        tmp_path_factory.mktemp("lora"), base_config(base), embeddings=("text_emb.weight",)
    )


def with_adapters(folder: Path, lora_path: Path | None) -> ModelFiles:
    return with_lora(resolve_folder(folder), lora_path)


def kyutai_lm(folder: Path, lora_path: Path, fuse: bool, weights: str = "model.safetensors"):
    """The original's LM, loaded as its server loads a LoRA (`--lora-weight`, `--config-path`)."""
    from moshi.models import loaders

    info = loaders.CheckpointInfo.from_hf_repo(
        "unused/unused",  # every file is given: nothing is fetched
        moshi_weights=folder / weights,
        mimi_weights=folder / loaders.MIMI_NAME,
        tokenizer=folder / loaders.TEXT_TOKENIZER_NAME,
        config_path=lora_path / "config.json",
        mimi_config_path=folder / "mimi_config.json",
        lora_weights=lora_path / LORA_NAME,
    )
    return info.get_moshi(device="cpu", dtype=torch.float32, fuse_lora=fuse).eval()


def greedy_codes(lm, user: torch.Tensor, original: bool) -> list[list[int]]:
    """Greedy generation over random user codes [T, 8]: what each step emits."""
    emitted = []
    if original:
        from moshi.models.lm import LMGen
        from moshi.utils.compile import no_compile

        gen = LMGen(lm, use_sampling=False)
        with torch.no_grad(), no_compile(), gen.streaming(1):
            for codes in user:
                out = gen.step(codes[None, :, None])
                if out is not None:
                    emitted.append(out[0, :, 0].tolist())
        return emitted
    gen = FrameGenerator(lm, SamplingSettings(greedy=True))
    with torch.no_grad(), streaming(gen, 1):
        for codes in user:
            out = gen.step(codes[None])
            if out is not None:
                emitted.append(out[0].tolist())
    return emitted


def user_codes(steps: int = 30) -> torch.Tensor:
    return torch.randint(0, 64, (steps, 8), generator=torch.Generator().manual_seed(7))


# --- Against the original ------------------------------------------------------------------------


def test_merged_weights_are_the_originals_fused_weights(base, lora) -> None:
    ours = load_lm(with_adapters(base, lora), "cpu", torch.float32).state_dict()
    ref = kyutai_lm(base, lora, fuse=True).state_dict()
    assert sorted(ours) == sorted(ref)
    assert [k for k in ref if not torch.equal(ours[k], ref[k])] == []
    plain = load_lm(resolve_folder(base), "cpu", torch.float32).state_dict()
    changed = {k for k in plain if not torch.equal(plain[k], ours[k])}
    linears = {k for k in plain if re.search(r"(linear\w*|projs\.\d+|depformer_in\.\d+)\.", k)}
    assert changed == linears | {"text_emb.weight"}  # every linear, and the whole embedding


@pytest.mark.slow
def test_greedy_tokens_are_the_originals_with_the_lora_fused_or_not(base, lora) -> None:
    user = user_codes()
    ours = greedy_codes(load_lm(with_adapters(base, lora), "cpu", torch.float32), user, False)
    assert ours == greedy_codes(kyutai_lm(base, lora, fuse=True), user, True)
    assert ours == greedy_codes(kyutai_lm(base, lora, fuse=False), user, True)
    # and the LoRA matters: the base alone says something else
    plain = greedy_codes(load_lm(resolve_folder(base), "cpu", torch.float32), user, False)
    assert sum(a != b for a, b in zip(ours, plain, strict=True)) > len(ours) // 2


@pytest.mark.slow
def test_adapters_in_the_fused_layout_on_a_split_base(base, tmp_path) -> None:
    """The original's attention loader reads `self_attn.in_proj.lora_A.weight` (steps stacked);
    a base in the split layout (as moshi-finetune's consolidated files) takes adapters alike."""
    split = write_tiny_checkpoint(tmp_path / "split", layout="split")  # the base's weights
    fused_lora = write_random_lora(tmp_path / "fused", base_config(base), layout="fused")
    split_lora = write_random_lora(tmp_path / "split-lora", base_config(base), layout="split")
    assert "depformer.layers.0.self_attn.in_proj.lora_A.weight" in load_file(
        str(fused_lora / LORA_NAME)
    )
    ref = kyutai_lm(base, fused_lora, fuse=True).state_dict()
    for folder, adapters in ((base, fused_lora), (split, split_lora), (split, fused_lora)):
        ours = load_lm(with_adapters(folder, adapters), "cpu", torch.float32).state_dict()
        assert all(torch.equal(ours[k], ref[k]) for k in ref), (folder.name, adapters.name)


# --- Dtypes and int8 -----------------------------------------------------------------------------


def merged_reference(base: Path, lora: Path, key: str, weight: torch.Tensor) -> torch.Tensor:
    """W + scaling * (B @ A) in float32 for one split-layout linear weight `key`."""
    adapters = load_file(str(lora / LORA_NAME))
    scaling = base_config(lora)["lora_scaling"]
    a = adapters[key.replace(".weight", ".lora_A.weight")]
    b = adapters[key.replace(".weight", ".lora_B.weight")]
    return weight.float() + scaling * (b.float() @ a.float())


def test_bfloat16_rounds_the_float32_merge_once(base, lora) -> None:
    state = load_lm(with_adapters(base, lora), "cpu", torch.bfloat16).state_dict()
    weight = load_file(str(base / "model.safetensors"))["text_linear.weight"]
    expected = merged_reference(base, lora, "text_linear.weight", weight).to(torch.bfloat16)
    assert state["text_linear.weight"].dtype == torch.bfloat16
    assert torch.equal(state["text_linear.weight"], expected)


def test_int8_merges_before_quantizing(base, lora) -> None:
    lm = load_lm(with_adapters(base, lora), "cpu", torch.float32, quantize=True)
    assert isinstance(lm.text_linear, Int8Linear)
    weight = load_file(str(base / "model.safetensors"))["text_linear.weight"]
    q, scb = quantize_weight(merged_reference(base, lora, "text_linear.weight", weight))
    assert torch.equal(lm.text_linear.weight, q) and torch.equal(lm.text_linear.weight_scb, scb)


def test_a_q8_base_is_dequantized_merged_and_quantized_again(tmp_path, lora) -> None:
    """The original refuses a LoRA on a quantized model; here the int8 weights are dequantized,
    the adapters merged in float32, and the result quantized again (or kept float)."""
    q8 = write_tiny_checkpoint(tmp_path / "q8", quantized=True)
    files = with_adapters(q8, lora)
    on_disk = load_file(str(q8 / Q8_NAME))
    key = "depformer.layers.1.self_attn.in_projs.5.weight"
    dequantized = dequantize_weight(on_disk[key], on_disk[key + "_scb"])
    merged = merged_reference(q8, lora, key, dequantized)
    floats = load_lm(files, "cpu", torch.float32, quantize=False).state_dict()
    assert torch.equal(floats[key], merged)
    int8 = load_lm(files, "cpu", torch.float32).state_dict()  # a q8 base stays int8
    q, scb = quantize_weight(merged)
    assert torch.equal(int8[key], q) and torch.equal(int8[key + "_scb"], scb)
    assert not torch.equal(q, on_disk[key])


def test_the_merge_leaves_the_base_as_it_was(base, lora) -> None:
    """The merge adds to a float32 copy of each weight, never to the file's mapped pages."""
    before = (base / "model.safetensors").read_bytes()
    plain = load_lm(resolve_folder(base), "cpu", torch.float32).state_dict()
    load_lm(with_adapters(base, lora), "cpu", torch.float32)
    assert (base / "model.safetensors").read_bytes() == before
    again = load_lm(resolve_folder(base), "cpu", torch.float32).state_dict()
    assert all(torch.equal(plain[k], again[k]) for k in plain)


# --- A LoRA that does not fit --------------------------------------------------------------------


def edited_lora(lora: Path, tmp_path: Path, edit, config_edit=None) -> Path:
    """A copy of `lora` whose tensors (and config.json) `edit` changes in place."""
    folder = tmp_path / "edited"
    folder.mkdir()
    state = load_file(str(lora / LORA_NAME))
    edit(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / LORA_NAME))
    config = base_config(lora)
    if config_edit is not None:
        config_edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def refusal(base: Path, lora: Path) -> str:
    with pytest.raises(CheckpointError) as error:
        load_lm(with_adapters(base, lora), "cpu", torch.float32)
    return str(error.value)


def test_another_rank_than_config_json_says_is_refused(base, lora, tmp_path) -> None:
    folder = edited_lora(lora, tmp_path, lambda s: None, lambda c: c.update(lora_rank=8))
    assert refusal(base, folder) == (
        f"the LoRA {folder / LORA_NAME} does not fit its config.json: its adapters have rank 4, "
        f"and {folder / 'config.json'} says lora_rank 8"
    )


def test_one_adapter_of_another_rank_is_named(base, lora, tmp_path) -> None:
    def narrow(state):
        state["text_linear.lora_B.weight"] = state["text_linear.lora_B.weight"][:, :2]

    message = refusal(base, edited_lora(lora, tmp_path, narrow))
    assert message.startswith(f"the LoRA {tmp_path / 'edited' / LORA_NAME} does not fit the model")
    assert (
        "text_linear.lora_B.weight: expected shape (200, 4), found (200, 2): rank 2, where "
        "config.json says lora_rank 4" in message
    )


def test_adapters_of_other_shapes_are_refused(base, lora, tmp_path) -> None:
    def widen(state):
        state["transformer.layers.1.gating.linear_in.lora_A.weight"] = torch.zeros(4, 48)

    message = refusal(base, edited_lora(lora, tmp_path, widen))
    assert "1 problem(s)" in message
    assert (
        "transformer.layers.1.gating.linear_in.lora_A.weight: expected shape (4, 32), "
        "found (4, 48)" in message
    )


def test_keys_that_match_nothing_are_refused(base, lora, tmp_path) -> None:
    def stray(state):
        state["transformer.layers.7.gating.linear_in.lora_A.weight"] = torch.zeros(4, 32)
        state["vision_encoder.proj.weight"] = torch.zeros(2, 2)
        del state["text_linear.lora_B.weight"]

    message = refusal(base, edited_lora(lora, tmp_path, stray))
    assert "transformer.layers.7.gating.linear_in.lora_A.weight: matches no linear" in message
    assert "vision_encoder.proj.weight: matches nothing in the model" in message
    assert "text_linear.lora_A.weight: its lora_B is missing" in message


def test_a_lora_for_another_model_is_refused_by_its_config(base, tmp_path) -> None:
    other = dict(base_config(base), dim=64, num_layers=3)
    lora = write_random_lora(tmp_path / "other", other)
    with pytest.raises(CheckpointError) as error:
        with_adapters(base, lora)
    assert (
        "was made for another model: its config.json has dim 64 (the model has 32), "
        "num_layers 3 (the model has 2); choose the base model it was trained from"
    ) in str(error.value)
    # and where config.json does not say so, the adapters' shapes do
    (lora / "config.json").write_text(json.dumps(dict(base_config(base), lora=True, lora_rank=4)))
    assert "does not fit the model" in refusal(base, lora)
