"""Tests for model/conv.py: causal convs and transposed convs, one-shot and streaming.

Each case is checked three ways: against plain PyTorch (what a causal conv means), against the
original's `moshi.modules.conv` module holding the same weights, and chunked against one-shot
(streaming in uneven chunks must give the one-shot output).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from model.conv import StreamingConv1d, StreamingConvTranspose1d
from model.streaming import reset_streaming, streaming

original = pytest.importorskip("moshi.modules.conv", reason="needs the original `moshi`")

B, C_IN, C_OUT = 2, 3, 5
CHUNKS = [1, 3, 2, 5, 1, 4]  # uneven chunk lengths, in units of the stride (16 in all)
TOL = {"rtol": 1e-5, "atol": 1e-6}


def chunked(module: torch.nn.Module, x: torch.Tensor, unit: int) -> list[torch.Tensor]:
    """Run `module` on `x` [B, C, T] in a fresh stream, in chunks of CHUNKS x `unit` steps."""
    outs, start = [], 0
    with torch.no_grad():
        for n in CHUNKS:
            outs.append(module(x[..., start : start + n * unit]))
            start += n * unit
    assert start == x.shape[-1]
    return outs


def stream(module: torch.nn.Module, x: torch.Tensor, unit: int) -> list[torch.Tensor]:
    if isinstance(module, (StreamingConv1d, StreamingConvTranspose1d)):
        with streaming(module, x.shape[0]):
            return chunked(module, x, unit)
    with module.streaming(x.shape[0]):
        return chunked(module, x, unit)


def make_conv(
    kernel: int,
    stride: int,
    dilation: int,
    pad_mode: str = "constant",
    bias: bool = True,
    seed: int = 0,
) -> tuple[StreamingConv1d, torch.nn.Module]:
    """Ours and the original's, with the same random weights."""
    torch.manual_seed(seed)
    ours = StreamingConv1d(
        C_IN, C_OUT, kernel, stride, dilation=dilation, bias=bias, pad_mode=pad_mode
    )
    ref = original.StreamingConv1d(
        C_IN, C_OUT, kernel, stride, dilation=dilation, bias=bias, causal=True, pad_mode=pad_mode
    )
    ref.load_state_dict(ours.state_dict())
    return ours.eval(), ref.eval()


# (kernel, stride, dilation): Mimi's own shapes (k7, residual k3 and k1, kernel = 2 x stride for
# strides 2, 4, 5, 8) and dilated ones.
CONV_CASES = [
    (1, 1, 1),
    (3, 1, 1),
    (7, 1, 1),
    (3, 1, 2),
    (5, 1, 3),
    (4, 2, 1),
    (8, 4, 1),
    (10, 5, 1),
    (16, 8, 1),
    (6, 3, 2),
]


@pytest.mark.filterwarnings("ignore:StreamingConv1d has been initialized with stride > 1")
@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
@pytest.mark.parametrize(
    ("kernel", "stride", "dilation"), CONV_CASES, ids=[f"k{k}s{s}d{d}" for k, s, d in CONV_CASES]
)
def test_conv_chunked_equals_one_shot(
    kernel: int, stride: int, dilation: int, pad_mode: str
) -> None:
    ours, ref = make_conv(kernel, stride, dilation, pad_mode)
    x = torch.randn(B, C_IN, sum(CHUNKS) * stride, generator=torch.Generator().manual_seed(1))
    x = x + 1.0  # a first sample far from zero, so replicate and zero padding differ
    padding = (kernel - 1) * dilation + 1 - stride
    w, b = ours.conv.conv.weight, ours.conv.conv.bias

    with torch.no_grad():
        one_shot = ours(x)
        padded = F.pad(x, (padding, 0), mode="replicate" if pad_mode == "replicate" else "constant")
        assert_close(one_shot, F.conv1d(padded, w, b, stride, dilation=dilation), **TOL)
        assert_close(one_shot, ref(x), **TOL)

    parts = stream(ours, x, stride)
    assert [p.shape[-1] for p in parts] == CHUNKS
    assert_close(torch.cat(parts, -1), one_shot, **TOL)
    if pad_mode == "constant" or min(CHUNKS) * stride >= padding:  # the original's limit
        assert_close(torch.cat(parts, -1), torch.cat(stream(ref, x, stride), -1), **TOL)


def test_replicate_padding_differs_from_zero_padding_only_at_the_start() -> None:
    kernel, stride = 4, 2  # Mimi's downsample
    replicate, _ = make_conv(kernel, stride, 1, "replicate", bias=False)
    zeros, _ = make_conv(kernel, stride, 1, "constant", bias=False)
    x = 1.0 + torch.randn(B, C_IN, sum(CHUNKS) * stride, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y_rep, y_zero = replicate(x), zeros(x)
    touched = math.ceil((kernel - stride) / stride)  # outputs that see the padding
    assert (y_rep[..., :touched] - y_zero[..., :touched]).abs().min() > 1e-3
    assert_close(y_rep[..., touched:], y_zero[..., touched:], **TOL)
    # Streaming replicates only the first chunk's first sample, not each chunk's.
    assert_close(torch.cat(stream(replicate, x, stride), -1), y_rep, **TOL)


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_reset_streaming_restarts_a_conv(pad_mode: str) -> None:
    ours, _ = make_conv(7, 1, 1, pad_mode)
    g = torch.Generator().manual_seed(3)
    x, other = 1.0 + torch.randn(2, B, C_IN, 12, generator=g)
    with torch.no_grad(), streaming(ours, B):
        ours(other)
        reset_streaming(ours)
        after_reset = ours(x)
    with torch.no_grad():
        assert_close(after_reset, ours(x), **TOL)


def make_convtr(
    kernel: int, stride: int, groups: int, bias: bool
) -> tuple[StreamingConvTranspose1d, torch.nn.Module, int]:
    channels = C_OUT if groups == 1 else groups
    torch.manual_seed(0)
    ours = StreamingConvTranspose1d(
        channels, channels if groups > 1 else C_IN, kernel, stride, groups=groups, bias=bias
    )
    ref = original.StreamingConvTranspose1d(
        channels,
        channels if groups > 1 else C_IN,
        kernel,
        stride,
        groups=groups,
        bias=bias,
        causal=True,
    )
    ref.load_state_dict(ours.state_dict())
    return ours.eval(), ref.eval(), channels


# (kernel, stride, groups, bias): SEANet decoder's (kernel = 2 x stride, with bias), Mimi's
# depthwise upsample (groups = channels, no bias), and no overlap at all (kernel = stride).
CONVTR_CASES = [
    (4, 2, 1, True),
    (8, 4, 1, True),
    (10, 5, 1, True),
    (12, 6, 1, True),
    (16, 8, 1, False),
    (4, 2, C_OUT, False),
    (3, 3, 1, True),
]


@pytest.mark.parametrize(
    ("kernel", "stride", "groups", "bias"),
    CONVTR_CASES,
    ids=[f"k{k}s{s}g{g}{'b' if b else ''}" for k, s, g, b in CONVTR_CASES],
)
def test_transposed_conv_overlap_adds_across_chunks(
    kernel: int, stride: int, groups: int, bias: bool
) -> None:
    ours, ref, channels = make_convtr(kernel, stride, groups, bias)
    x = torch.randn(B, channels, sum(CHUNKS), generator=torch.Generator().manual_seed(4))
    T = x.shape[-1]
    w, b = ours.convtr.convtr.weight, ours.convtr.convtr.bias

    with torch.no_grad():
        one_shot = ours(x)
        # Causal: the full transposed conv with its last kernel - stride samples cut off.
        full = F.conv_transpose1d(x, w, b, stride, groups=groups)
        assert one_shot.shape[-1] == T * stride
        assert_close(one_shot, full[..., : T * stride], **TOL)
        assert_close(one_shot, ref(x), **TOL)

    parts = stream(ours, x, 1)
    assert [p.shape[-1] for p in parts] == [n * stride for n in CHUNKS]
    # Each chunk's spill-over is added onto the next chunk's start, the bias counted once.
    assert_close(torch.cat(parts, -1), one_shot, **TOL)
    assert_close(torch.cat(parts, -1), torch.cat(stream(ref, x, 1), -1), **TOL)


def test_reset_streaming_drops_a_transposed_conv_spill_over() -> None:
    ours, _, channels = make_convtr(8, 4, 1, True)
    g = torch.Generator().manual_seed(5)
    x, other = torch.randn(2, B, channels, 6, generator=g)
    with torch.no_grad(), streaming(ours, B):
        ours(other)
        reset_streaming(ours)
        after_reset = ours(x)
    with torch.no_grad():
        assert_close(after_reset, ours(x), **TOL)
