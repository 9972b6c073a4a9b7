"""The CPU forms of a linear and of Mimi's codebook search (`model.cpu.linear`) compute what the
modules they replace compute, with our kernel and with MKL's products alike."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.cpu.linear import CentroidsFirst, Linear
from model.mimi import Codebook

pytestmark = pytest.mark.usefixtures("products")


def fast_linear(out_features: int, in_features: int, seed: int = 0, bias: bool = False) -> Linear:
    torch.manual_seed(seed)
    return Linear.of(nn.Linear(in_features, out_features, bias=bias))


@pytest.mark.parametrize("shape", [(64, 2048), (96, 3584), (2048, 512), (64, 1000), (8, 4096)])
@pytest.mark.parametrize("rows", [1, 2, 3, 16])
def test_linear_is_the_plain_linear(shape, rows):
    linear = fast_linear(*shape, seed=rows, bias=rows == 3)
    x = torch.randn(1, rows, shape[1], generator=torch.Generator().manual_seed(rows))
    with torch.no_grad():
        y = linear(x)
    assert y.shape == (1, rows, shape[0])
    torch.testing.assert_close(y, F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-4)


def test_a_linear_holds_the_weight_it_replaces():
    plain = nn.Linear(2048, 64, bias=False)
    linear = Linear.of(plain)
    assert linear.weight is plain.weight
    assert list(linear.state_dict()) == ["weight"]


def test_a_wide_linear_follows_a_load_and_a_move():
    linear = fast_linear(64, 2048)
    x = torch.randn(1, 2, 2048)
    with torch.no_grad():
        linear.load_state_dict({"weight": torch.randn(64, 2048)})
        torch.testing.assert_close(linear(x), F.linear(x, linear.weight), rtol=1e-5, atol=1e-4)
        linear.double().float()  # moved: new memory
        torch.testing.assert_close(linear(x), F.linear(x, linear.weight), rtol=1e-5, atol=1e-4)


def test_a_linear_that_needs_gradients_gets_them():
    linear = fast_linear(8, 64)
    x = torch.randn(1, 2, 64, requires_grad=True)
    linear(x).sum().backward()
    torch.testing.assert_close(x.grad, linear.weight.sum(0).expand(1, 2, 64))


@pytest.mark.parametrize("rows", [1, 2, 7])
def test_the_codebook_finds_the_same_codes_centroids_first(rows):
    g = torch.Generator().manual_seed(rows)
    codebook = Codebook(2048, 256)
    codebook.embedding_sum.copy_(torch.randn(2048, 256, generator=g))
    codebook.cluster_usage.copy_(torch.rand(2048, generator=g) + 0.5)
    fast = CentroidsFirst.of(codebook)
    x = torch.randn(rows, 256, generator=g)
    assert torch.equal(fast.encode(x), codebook.encode(x))
    assert torch.equal(fast.decode(fast.encode(x)), codebook.decode(codebook.encode(x)))
    assert fast.embedding_sum is codebook.embedding_sum
