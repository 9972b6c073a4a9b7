"""The CPU product of a streaming step (`model.product`): a weight times a few columns, and the
kernels a conv runs on the CPU (`model.conv`).

Wide weights are read through a copy cut into column blocks, and oneDNN's convs through a copy in
oneDNN's blocked layout, both kept beside the weight; these tests hold the products and convs to
PyTorch's own, and check that a copy never outlives the values it was made from. Each runs twice:
with our kernel taking one or two columns (`model.native`, where it is built) and without it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import model.conv
import model.native
from model.conv import StreamingConv1d, conv1d, conv_transpose1d, step_layout
from model.product import weight_times
from model.streaming import streaming
from model.transformer import Linear


@pytest.fixture(autouse=True, params=["native", "mkl"])
def products(request):
    """The product paths under test: our kernel for one or two columns, or MKL's for all."""
    if request.param == "mkl":
        with model.native.turned_off():
            yield
    elif model.native.weight_times_rows() is None:
        pytest.skip(f"native kernel: {model.native.status()}")
    else:
        yield


@pytest.mark.parametrize("shape", [(64, 2048), (96, 3584), (2048, 512), (64, 1000)])
@pytest.mark.parametrize("columns", [1, 2, 3, 16])
def test_linear_is_the_plain_product(shape, columns):
    out_features, in_features = shape
    g = torch.Generator().manual_seed(columns)
    linear = Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(shape, generator=g))
    x = torch.randn(1, columns, in_features, generator=g)

    torch.testing.assert_close(linear(x), F.linear(x, linear.weight), rtol=1e-5, atol=1e-4)


def test_weight_times_takes_a_batch_of_columns():
    w = torch.randn(8, 2048)
    cols = torch.randn(3, 2, 2048).transpose(1, 2)  # [B, I, N], each column-major
    torch.testing.assert_close(weight_times(w, cols), w @ cols, rtol=1e-5, atol=1e-4)


def test_a_wide_linear_follows_its_weight():
    linear = Linear(2048, 64, bias=False)
    x = torch.randn(1, 2, 2048)
    before = linear(x)

    with torch.no_grad():  # written in place: same tensor, same memory
        linear.weight.mul_(-2)
    torch.testing.assert_close(linear(x), -2 * before, rtol=1e-5, atol=1e-4)

    linear.load_state_dict({"weight": torch.randn(64, 2048)})
    torch.testing.assert_close(linear(x), F.linear(x, linear.weight), rtol=1e-5, atol=1e-4)

    linear.double().float()  # moved: new memory
    torch.testing.assert_close(linear(x), F.linear(x, linear.weight), rtol=1e-5, atol=1e-4)


def test_a_wide_conv_follows_its_weight():
    conv = torch.nn.Conv1d(256, 64, kernel_size=8, stride=4)  # [64, 256 x 8]: wide
    x = torch.randn(1, 256, 4 * 3 + 4)  # three frames out
    torch.testing.assert_close(conv1d(x, conv), conv(x), rtol=1e-5, atol=1e-4)

    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight))
    torch.testing.assert_close(conv1d(x, conv), conv(x), rtol=1e-5, atol=1e-4)


KERNELS = ["product", "torch"] + (["onednn"] if model.conv._ONEDNN else [])
# (in, out, kernel, stride, dilation, frames out): Mimi's kinds of conv, and a dilated one
CONVS = [
    (1, 8, 7, 1, 1, 40),
    (16, 8, 3, 1, 1, 3),
    (16, 32, 8, 4, 1, 12),
    (24, 16, 3, 1, 2, 9),
    (16, 24, 1, 1, 1, 3),
    (16, 24, 1, 1, 1, 30),
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("time_major", [False, True], ids=["BCT", "BTC"])  # the layout in memory
@pytest.mark.parametrize(("c_in", "c_out", "k", "stride", "dilation", "frames"), CONVS)
def test_every_conv_kernel_computes_the_conv(
    monkeypatch, kernel, time_major, c_in, c_out, k, stride, dilation, frames
):
    monkeypatch.setattr(model.conv, "_kernel", lambda *_: kernel)
    conv = torch.nn.Conv1d(c_in, c_out, k, stride, dilation=dilation)
    length = (frames - 1) * stride + dilation * (k - 1) + 1
    x = torch.randn(2, length, c_in).mT if time_major else torch.randn(2, c_in, length)
    with torch.no_grad():
        torch.testing.assert_close(conv1d(x, conv), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("laid_out", [False, True])
@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "stride", "frames"), [(16, 8, 8, 4, 3), (8, 4, 4, 2, 9)]
)
def test_every_transposed_conv_kernel_computes_the_transposed_conv(
    monkeypatch, kernel, laid_out, c_in, c_out, k, stride, frames
):
    monkeypatch.setattr(model.conv, "_kernel", lambda *_: kernel)
    convtr = torch.nn.ConvTranspose1d(c_in, c_out, k, stride)
    if laid_out:
        step_layout(convtr)
    x = torch.randn(2, c_in, frames)
    with torch.no_grad():
        expected = F.conv_transpose1d(x, convtr.weight, convtr.bias, stride)
        torch.testing.assert_close(conv_transpose1d(x, convtr), expected, rtol=1e-5, atol=1e-5)


def test_a_conv_over_many_frames_follows_its_weight_and_its_input():
    conv = torch.nn.Conv1d(32, 64, kernel_size=10, stride=5)  # oneDNN's, where PyTorch has it
    x = torch.randn(1, 32, 5 * 40 + 5)  # 41 frames out
    with torch.no_grad():
        torch.testing.assert_close(conv1d(x, conv), conv(x), rtol=1e-4, atol=1e-4)

        conv.weight.mul_(-2)  # written in place
        torch.testing.assert_close(conv1d(x, conv), conv(x), rtol=1e-4, atol=1e-4)
        conv.load_state_dict({"weight": torch.randn(64, 32, 10), "bias": torch.randn(64)})
        torch.testing.assert_close(conv1d(x, conv), conv(x), rtol=1e-4, atol=1e-4)

        longer = torch.randn(2, 32, 5 * 60 + 5)  # another shape: another blocked layout
        torch.testing.assert_close(conv1d(longer, conv), conv(longer), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(conv1d(x, conv), conv(x), rtol=1e-4, atol=1e-4)


def test_a_conv_that_needs_gradients_gets_them():
    conv = torch.nn.Conv1d(16, 32, kernel_size=8, stride=4)
    x = torch.randn(1, 16, 4 * 40 + 4, requires_grad=True)
    conv1d(x, conv).square().sum().backward()
    ours = x.grad, conv.weight.grad
    x.grad, conv.weight.grad = None, None
    conv(x).square().sum().backward()
    torch.testing.assert_close(ours, (x.grad, conv.weight.grad), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("onednn", [False, True] if model.conv._ONEDNN else [False])
@pytest.mark.parametrize(("k", "stride", "pad_mode"), [(7, 1, "constant"), (4, 2, "replicate")])
def test_a_streaming_conv_streams_alike_in_either_layout(monkeypatch, onednn, k, stride, pad_mode):
    """With oneDNN a conv keeps its input tail time-major, without it channel-major (`model.conv`);
    chunk by chunk gives the one-shot output either way."""
    monkeypatch.setattr(model.conv, "_ONEDNN", onednn)
    conv = StreamingConv1d(16, 8, k, stride, pad_mode=pad_mode)
    x = 1.0 + torch.randn(1, 16, 40 * stride)
    with torch.no_grad():
        one_shot = conv(x)
        with streaming(conv, 1):
            chunks = [conv(x[..., i : i + n]) for i, n in [(0, stride), (stride, 39 * stride)]]
    torch.testing.assert_close(torch.cat(chunks, -1), one_shot, rtol=1e-5, atol=1e-5)
