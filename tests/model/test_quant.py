"""Tests for model/quant.py: int8 weight-only linears in the format of Kyutai's q8 checkpoints.

The format is bitsandbytes' `int8_vectorwise_quant`, which Kyutai's export ran on a float16 copy of
each weight: per output row, scb = absmax(row) in float32 and int8 = round(w * 127 / scb), so that
w ~ int8 * scb / 127. `bnb_quantize` below restates that rule from bitsandbytes' reference
(PyTorch) kernel; where bitsandbytes is installed, it is also checked against the real thing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import model.quant
from model.config import LMConfig
from model.lm import LM
from model.quant import (
    Int8Linear,
    dequantize_weight,
    int8_linear_names,
    quantize_linears,
    quantize_weight,
)
from model.streaming import streaming
from model.transformer import Attention


def bnb_quantize(w16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' rule: row absmax in float32; round(A * (127 / absmax)) computed in float32."""
    row_stats = w16.abs().amax(dim=1).float()
    return torch.round(w16 * (127.0 / row_stats[:, None])).to(torch.int8), row_stats


def random_weight(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.rand(rows, 1, generator=g) * 0.1 + 1e-3  # rows of very different sizes
    return torch.randn(rows, cols, generator=g) * scales


@pytest.fixture
def exact_cpu(monkeypatch):
    """Int8 linears compute as on a GPU (weight cast to the input's dtype), not in bf16."""
    monkeypatch.setattr(Int8Linear, "cpu_kernel_dtype", None)


def int8_linear(weight: torch.Tensor) -> Int8Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data = weight
    return Int8Linear.from_linear(linear)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --- The format ----------------------------------------------------------------------------------


def test_quantize_weight_follows_bitsandbytes_rule_bit_for_bit() -> None:
    w16 = random_weight(300, 96).to(torch.bfloat16).half()  # what the export quantized
    q, scb = quantize_weight(w16)
    ref_q, ref_scb = bnb_quantize(w16)
    assert q.dtype == torch.int8 and scb.dtype == torch.float32
    assert torch.equal(q, ref_q) and torch.equal(scb, ref_scb)
    assert q.abs().max() == 127 and (q.abs().amax(dim=1) == 127).all()  # every row reaches 127


def test_quantize_weight_matches_bitsandbytes_itself() -> None:
    bnbF = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes not installed")
    w16 = random_weight(200, 64, seed=3).half()
    CB, SCB, _ = bnbF.int8_vectorwise_quant(w16)
    q, scb = quantize_weight(w16)
    assert torch.equal(q, CB) and torch.equal(scb, SCB)
    deq = bnbF.int8_vectorwise_dequant(CB, SCB)
    assert relative_error(dequantize_weight(q, scb), deq) < 1e-6


def test_dequantize_is_int8_times_scale_over_127_within_half_a_step() -> None:
    w = random_weight(64, 80, seed=1)
    q, scb = quantize_weight(w)
    deq = dequantize_weight(q, scb)
    assert torch.allclose(deq, q.float() * scb[:, None] / 127, rtol=1e-6, atol=0)
    assert ((deq - w).abs() <= scb[:, None] / 254 * (1 + 1e-5)).all()  # half a step per row
    assert dequantize_weight(q, scb, torch.bfloat16).dtype == torch.bfloat16


def test_zero_rows_and_blocks() -> None:
    w = random_weight(50, 33, seed=2)
    w[7] = 0
    before = w.clone()
    q, scb = quantize_weight(w)
    assert torch.equal(w, before)  # the input is left alone
    assert scb[7] == 0 and (q[7] == 0).all() and torch.isfinite(dequantize_weight(q, scb)).all()
    # Quantizing a few rows at a time gives the same result as all at once.
    old = model.quant._BLOCK
    try:
        model.quant._BLOCK = 33 * 4  # four rows per block
        q2, scb2 = quantize_weight(w)
    finally:
        model.quant._BLOCK = old
    assert torch.equal(q, q2) and torch.equal(scb, scb2)


# --- The linear ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 64), (2, 5, 64), (3, 48), (2, 3, 44)])
def test_int8_linear_equals_the_dequantized_float_linear(exact_cpu, shape) -> None:
    weight = random_weight(40, shape[-1], seed=4)
    linear = int8_linear(weight)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    y = linear(x)
    ref = F.linear(x, linear.dequantized(torch.float32))
    assert y.shape == (*shape[:-1], 40) and y.dtype == torch.float32
    assert relative_error(y, ref) < 1e-6  # float32 rounding only


def test_cpu_kernel_is_bfloat16_precision_and_used_where_it_fits(monkeypatch) -> None:
    calls = []
    kernel = torch._weight_int8pack_mm

    def spy(*args):
        calls.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(torch, "_weight_int8pack_mm", spy)
    for cols, fits in ((64, True), (4096 // 32, True), (44, False), (48, False)):
        linear = int8_linear(random_weight(70, cols, seed=cols))
        x = torch.randn(2, 3, cols, generator=torch.Generator().manual_seed(6))
        calls.clear()
        y = linear(x)
        assert bool(calls) == fits, cols
        ref = F.linear(x, linear.dequantized(torch.float32))
        assert y.dtype == torch.float32
        assert relative_error(y, ref) < (1e-2 if fits else 1e-6)  # activations rounded to bf16


def test_cpu_kernel_never_sees_unaligned_data() -> None:
    """torch's int8 CPU kernel crashes the process on unaligned rows: views are copied first."""
    linear = int8_linear(random_weight(32, 64, seed=7))
    flat = torch.randn(3 * 64 + 1, generator=torch.Generator().manual_seed(8))
    for dtype in (torch.float32, torch.bfloat16):
        x = flat.to(dtype)[1:].view(3, 64)  # starts 2 or 4 bytes into its storage
        y = linear(x)
        ref = F.linear(x.float(), linear.dequantized(torch.float32))
        assert relative_error(y, ref) < 1e-2
    # A weight that is an unaligned view is not given to the kernel at all.
    storage = torch.zeros(32 * 64 + 1, dtype=torch.int8)
    storage[1:] = linear.weight.reshape(-1)
    linear.weight.data = storage[1:].view(32, 64)
    assert relative_error(linear(x.float()), ref) < 1e-2


def test_float16_activations_do_not_overflow(exact_cpu) -> None:
    """int8 values are up to 127 / scale times the weights: x @ int8 leaves float16's range for
    rows of small weights, so float16 dequantizes the weight first."""
    weight = torch.full((4, 256), 1e-3)
    linear = int8_linear(weight)
    x = torch.full((1, 256), 100.0)
    y = linear(x.half())
    assert torch.isfinite(y).all()
    assert relative_error(y.float(), x @ weight.T) < 1e-2


def test_state_dict_is_kyutais_q8_format() -> None:
    linear = int8_linear(random_weight(12, 32))
    state = linear.state_dict()
    assert list(state) == ["weight", "weight_scb"]
    assert state["weight"].dtype == torch.int8 and state["weight"].shape == (12, 32)
    assert state["weight_scb"].dtype == torch.float32 and state["weight_scb"].shape == (12,)


def test_casts_follow_activations_and_keep_the_scales() -> None:
    linear = int8_linear(random_weight(12, 32))
    scb = linear.weight_scb.clone()
    linear.to(torch.bfloat16)
    assert linear.activation_dtype == torch.bfloat16
    assert linear.weight.dtype == torch.int8
    assert linear.weight_scb.dtype == torch.float32 and torch.equal(linear.weight_scb, scb)
    linear.half()
    assert linear.activation_dtype == torch.float16 and torch.equal(linear.weight_scb, scb)


def test_bias_is_refused() -> None:
    with pytest.raises(ValueError, match="bias"):
        Int8Linear.from_linear(nn.Linear(4, 4))


# --- Swapping the linears of a model --------------------------------------------------------------

SMALL_LM = LMConfig(
    dim=32,
    text_card=50,
    card=20,
    num_heads=2,
    num_layers=2,
    context=8,
    depformer_dim=16,
    depformer_dim_feedforward=32,
    depformer_num_heads=2,
    depformer_num_layers=1,
)


def test_quantize_linears_swaps_every_linear_and_nothing_else() -> None:
    torch.manual_seed(0)
    lm = LM(SMALL_LM)
    linears = {name for name, m in lm.named_modules() if isinstance(m, nn.Linear)}
    others = {
        k: v.clone() for k, v in lm.state_dict().items() if k.rsplit(".", 1)[0] not in linears
    }
    float_weights = {name: lm.get_submodule(name).weight.detach().clone() for name in linears}
    quantize_linears(lm)
    assert int8_linear_names(lm) == linears
    assert not any(isinstance(m, nn.Linear) for m in lm.modules())
    assert len(linears) == 1 + 8 + 8 + 2 * 4 + 1 * (8 * 4)  # text, heads, depformer in, layers
    for name, weight in float_weights.items():
        q, scb = quantize_weight(weight)
        module = lm.get_submodule(name)
        assert torch.equal(module.weight, q) and torch.equal(module.weight_scb, scb)
    state = lm.state_dict()
    for key, value in others.items():  # embeddings and norms untouched
        assert torch.equal(state[key], value)


def test_quantize_linears_on_meta_only_changes_what_is_expected() -> None:
    with torch.device("meta"):
        lm = LM(SMALL_LM)
    quantize_linears(lm, activation_dtype=torch.bfloat16)
    state = lm.state_dict()
    assert state["text_linear.weight"].dtype == torch.int8
    assert state["text_linear.weight_scb"].shape == (SMALL_LM.text_card,)
    assert state["depformer.layers.0.self_attn.in_projs.7.weight_scb"].dtype == torch.float32
    assert all(v.device.type == "meta" for v in state.values())
    assert lm.get_submodule("text_linear").activation_dtype == torch.bfloat16


def test_quantized_lm_caches_and_dtype_follow_the_activations() -> None:
    torch.manual_seed(0)
    lm = quantize_linears(LM(SMALL_LM).to(torch.bfloat16)).eval()
    assert lm.dtype == torch.bfloat16
    tokens = torch.randint(0, SMALL_LM.card, (1, 17, 1))
    with torch.no_grad(), streaming(lm, 1):
        caches = [m.state for m in lm.modules() if isinstance(m, Attention)]
        hidden, logits = lm.forward_temporal(tokens)
        depth = lm.forward_depth(0, tokens[:, 0, :1], hidden)
    assert len(caches) == 3 and all(c.keys.dtype == torch.bfloat16 for c in caches)
    assert hidden.dtype == logits.dtype == depth.dtype == torch.bfloat16
    assert torch.isfinite(logits).all() and torch.isfinite(depth).all()
