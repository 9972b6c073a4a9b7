"""PyTorch's private ops (`model.cpu.private`): each gives the numbers its public fallback gives,
and no other module of model/ calls one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.cpu import private
from model.quant import quantize_weight

MODEL = Path(__file__).resolve().parents[3] / "model"
PRIVATE = re.compile(r"torch\.(_[A-Za-z]\w*|ops\.(?!moshi_desktop\b)\w+)")  # not our own op

onednn = pytest.mark.skipif(not private.ONEDNN, reason="oneDNN's ops are x86 builds' only")


def both_roads(fn):
    """fn() by the private op, then by its public fallback."""
    with torch.no_grad():
        fast = fn()
        with private.public_only():
            public = fn()
    return fast, public


@onednn
@pytest.mark.parametrize("time_major", [False, True], ids=["BCT", "BTC"])
@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "stride", "dilation", "frames"),
    [(256, 512, 8, 4, 1, 16), (64, 64, 3, 1, 3, 40), (1, 64, 7, 1, 1, 96), (512, 512, 3, 1, 1, 2)],
)
def test_onednn_conv_is_the_public_conv(time_major, c_in, c_out, k, stride, dilation, frames):
    conv = nn.Conv1d(c_in, c_out, k, stride, dilation=dilation)
    length = (frames - 1) * stride + dilation * (k - 1) + 1
    x = torch.randn(2, length, c_in).mT if time_major else torch.randn(2, c_in, length)
    reordered: dict[tuple[int, ...], torch.Tensor] = {}

    fast, public = both_roads(lambda: private.convolve(x, conv, reordered))
    assert len(reordered) == 1  # the private road ran, and kept its weight
    torch.testing.assert_close(fast, public, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(public, conv(x), rtol=0, atol=0)


@onednn
@pytest.mark.parametrize(("c_in", "c_out", "k", "stride", "frames"), [(512, 256, 12, 6, 16)])
def test_onednn_transposed_conv_is_the_public_one(c_in, c_out, k, stride, frames):
    convtr = nn.ConvTranspose1d(c_in, c_out, k, stride)
    x = torch.randn(1, c_in, frames)
    reordered: dict[tuple[int, ...], torch.Tensor] = {}

    fast, public = both_roads(lambda: private.convolve(x, convtr, reordered))
    assert len(reordered) == 1
    torch.testing.assert_close(fast, public, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(public, convtr(x), rtol=0, atol=0)


def test_a_conv_that_needs_gradients_takes_the_public_road():
    conv = nn.Conv1d(16, 32, 8, 4)
    x = torch.randn(1, 16, 4 * 40 + 4, requires_grad=True)
    reordered: dict[tuple[int, ...], torch.Tensor] = {}
    private.convolve(x, conv, reordered).sum().backward()
    assert not reordered and x.grad is not None


def test_the_int8_kernel_is_the_public_product_to_bfloat16():
    g = torch.Generator().manual_seed(0)
    weight, scb = quantize_weight(torch.randn(70, 64, generator=g))
    scale = scb / 127
    x = torch.randn(2, 3, 64, generator=g)
    fast = private.int8_times(x, weight, scale, torch.bfloat16)
    if fast is None:
        pytest.skip("this torch has no int8 CPU kernel")
    with private.public_only():
        assert private.int8_times(x, weight, scale, torch.bfloat16) is None
    public = F.linear(x, weight.float()) * scale  # what Int8Linear computes without it
    assert fast.dtype == x.dtype and fast.shape == public.shape
    assert ((fast - public).norm() / public.norm()).item() < 1e-2  # activations rounded to bf16


def test_no_other_module_of_the_model_calls_a_private_op():
    assert PRIVATE.search("torch.ops.mkldnn._convolution_pointwise")
    assert PRIVATE.search("torch._weight_int8pack_mm(x)")
    assert not PRIVATE.search("torch.ops.moshi_desktop.weight_times_rows")
    assert not PRIVATE.search("torch.__version__")
    callers = {
        str(path.relative_to(MODEL))
        for path in MODEL.rglob("*.py")
        if PRIVATE.search(path.read_text(encoding="utf-8"))
    }
    assert callers == {"cpu/private.py"}
