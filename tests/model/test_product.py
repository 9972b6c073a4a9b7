"""The CPU product of a streaming step (`model.product`): a weight times a few columns.

Wide weights are read through a copy cut into column blocks, kept beside the weight; these tests
hold the products to PyTorch's own, and check that the copy never outlives the values it was made
from.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.conv import conv1d
from model.product import weight_times
from model.transformer import Linear


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
