"""The CPU forms of the convs (`model.cpu.conv`) compute what PyTorch's convs compute, by every
kernel they choose between (a product of the unfolded input, or oneDNN's conv and its public
fallback), in either memory layout, with our kernel and with MKL's products; and a streaming conv
whose input tail is time-major streams as the plain one does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import model.cpu.conv
from model.conv import StreamingConv1d
from model.cpu import private, speed_up
from model.cpu.conv import Conv1d, ConvTranspose1d
from model.streaming import streaming

pytestmark = pytest.mark.usefixtures("products")

KERNELS = ["product", "conv"]  # "conv": oneDNN's where it runs (`model.cpu.private`)
# (in, out, kernel, stride, dilation, frames out): Mimi's kinds of conv, and a dilated one
CONVS = [
    (1, 8, 7, 1, 1, 40),
    (16, 8, 3, 1, 1, 3),
    (16, 32, 8, 4, 1, 12),
    (24, 16, 3, 1, 2, 9),
    (16, 24, 1, 1, 1, 3),
    (16, 24, 1, 1, 1, 30),
    (256, 64, 8, 4, 1, 3),  # [64, 256 x 8]: wide, read in blocks without our kernel
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("time_major", [False, True], ids=["BCT", "BTC"])  # the layout in memory
@pytest.mark.parametrize(("c_in", "c_out", "k", "stride", "dilation", "frames"), CONVS)
def test_every_conv_kernel_computes_the_conv(
    monkeypatch, kernel, time_major, c_in, c_out, k, stride, dilation, frames
):
    monkeypatch.setattr(model.cpu.conv, "_kernel", lambda _: kernel)
    conv = nn.Conv1d(c_in, c_out, k, stride, dilation=dilation)
    fast = Conv1d.of(conv)
    length = (frames - 1) * stride + dilation * (k - 1) + 1
    x = torch.randn(2, length, c_in).mT if time_major else torch.randn(2, c_in, length)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("step_layout", [False, True])
@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "stride", "groups", "frames"),
    [(16, 8, 8, 4, 1, 3), (8, 4, 4, 2, 1, 9), (8, 8, 4, 2, 8, 3)],  # the last: depthwise
)
def test_every_transposed_conv_kernel_computes_the_transposed_conv(
    monkeypatch, kernel, step_layout, c_in, c_out, k, stride, groups, frames
):
    monkeypatch.setattr(model.cpu.conv, "_kernel", lambda _: kernel)
    convtr = nn.ConvTranspose1d(c_in, c_out, k, stride, groups=groups)
    fast = ConvTranspose1d.of(convtr, step_layout)
    x = torch.randn(2, c_in, frames)
    with torch.no_grad():
        torch.testing.assert_close(fast.weight, convtr.weight, rtol=0, atol=0)
        torch.testing.assert_close(fast(x), convtr(x), rtol=1e-5, atol=1e-5)


def test_a_transposed_conv_laid_out_for_steps_keeps_its_name_and_shape():
    convtr = nn.ConvTranspose1d(16, 8, 8, 4)
    fast = ConvTranspose1d.of(convtr, step_layout=True)
    C, out, K = convtr.weight.shape
    assert fast.weight.shape == (C, out, K)
    assert fast.weight.reshape(C, out * K).t().is_contiguous()  # [C_out K, C_in] in memory
    assert convtr.weight.is_contiguous()  # the module it replaces is left as it was
    assert fast.state_dict().keys() == convtr.state_dict().keys()


def test_a_conv_over_many_frames_follows_a_load_and_its_input():
    conv = Conv1d.of(nn.Conv1d(32, 64, kernel_size=10, stride=5))  # oneDNN's, where it runs
    x = torch.randn(1, 32, 5 * 40 + 5)  # 41 frames out

    def plain(x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, conv.weight, conv.bias, stride=5)

    with torch.no_grad():
        torch.testing.assert_close(conv(x), plain(x), rtol=1e-4, atol=1e-4)
        conv.load_state_dict({"weight": torch.randn(64, 32, 10), "bias": torch.randn(64)})
        torch.testing.assert_close(conv(x), plain(x), rtol=1e-4, atol=1e-4)

        longer = torch.randn(2, 32, 5 * 60 + 5)  # another shape: another blocked layout
        torch.testing.assert_close(conv(longer), plain(longer), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(conv(x), plain(x), rtol=1e-4, atol=1e-4)
        if private.onednn_on():
            assert len(conv.reordered) == 2


def test_a_wide_conv_follows_a_load():
    conv = Conv1d.of(nn.Conv1d(256, 64, kernel_size=8, stride=4))  # [64, 256 x 8]: wide
    x = torch.randn(1, 256, 4 * 3 + 4)  # three frames out
    with torch.no_grad():
        conv.load_state_dict({"weight": torch.randn(64, 256, 8), "bias": torch.randn(64)})
        expected = F.conv1d(x, conv.weight, conv.bias, stride=4)
        torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-3)


def test_a_conv_that_needs_gradients_gets_them():
    conv = nn.Conv1d(16, 32, kernel_size=8, stride=4)
    fast = Conv1d.of(conv)
    x = torch.randn(1, 16, 4 * 40 + 4, requires_grad=True)
    fast(x).square().sum().backward()
    ours = x.grad, conv.weight.grad
    x.grad, conv.weight.grad = None, None
    conv(x).square().sum().backward()
    torch.testing.assert_close(ours, (x.grad, conv.weight.grad), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("onednn", [False, True] if private.ONEDNN else [False])
@pytest.mark.parametrize(("k", "stride", "pad_mode"), [(7, 1, "constant"), (4, 2, "replicate")])
def test_a_streaming_conv_streams_as_the_plain_one_in_either_layout(
    monkeypatch, onednn, k, stride, pad_mode
):
    """With oneDNN the CPU form keeps its input tail time-major, without it channel-major;
    chunk by chunk it gives the plain conv's one-shot output either way."""
    monkeypatch.setattr(private, "ONEDNN", onednn)
    conv = StreamingConv1d(16, 8, k, stride, pad_mode=pad_mode)
    fast = speed_up(nn.Sequential(conv))[0]
    assert isinstance(fast, model.cpu.conv.StreamingConv1d)
    x = 1.0 + torch.randn(1, 16, 40 * stride)
    with torch.no_grad():
        one_shot = conv(x)
        with streaming(fast, 1):
            assert (fast.state.previous.stride(1) == 1) == onednn
            chunks = [fast(x[..., i : i + n]) for i, n in [(0, stride), (stride, 39 * stride)]]
    torch.testing.assert_close(torch.cat(chunks, -1), one_shot, rtol=1e-5, atol=1e-5)
