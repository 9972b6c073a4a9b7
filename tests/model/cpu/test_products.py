"""The CPU product of a streaming step (`model.cpu.products`): a weight times a few columns, by
our kernel where it is built and by MKL's products (a wide weight read in column blocks) without
it. Every test runs both ways."""

from __future__ import annotations

import pytest
import torch

from model.cpu.products import BLOCK, weight_times, wide_blocks

pytestmark = pytest.mark.usefixtures("products")


@pytest.mark.parametrize("columns", [1, 2, 3, 16])
@pytest.mark.parametrize("shape", [(64, 2048), (96, 3584), (2048, 512), (64, 1000)])
def test_weight_times_is_the_plain_product(shape, columns):
    g = torch.Generator().manual_seed(columns)
    w = torch.randn(shape, generator=g)
    cols = torch.randn(columns, shape[1], generator=g).t()  # [I, N], column-major
    expected = w @ cols
    torch.testing.assert_close(weight_times(w, cols), expected, rtol=1e-5, atol=1e-4)
    blocks = wide_blocks(w)
    torch.testing.assert_close(weight_times(w, cols, blocks), expected, rtol=1e-5, atol=1e-4)


def test_weight_times_takes_a_batch_of_columns():
    w = torch.randn(8, 2048)
    cols = torch.randn(3, 2, 2048).transpose(1, 2)  # [B, I, N], each column-major
    torch.testing.assert_close(weight_times(w, cols), w @ cols, rtol=1e-5, atol=1e-4)


def test_wide_blocks_are_a_copy_of_wide_weights_only():
    assert wide_blocks(torch.randn(64, 1000)) is None  # narrow
    assert wide_blocks(torch.randn(4096, 2048)) is None  # taller than wide
    w = torch.randn(64, 4, 512)  # a conv's weight, read as [64, 2048]
    blocks = wide_blocks(w)
    if blocks is None:  # our kernel reads it
        return
    assert blocks.shape == (2048 // BLOCK, 64, BLOCK)
    assert blocks.data_ptr() != w.data_ptr()
    torch.testing.assert_close(blocks[1], w.reshape(64, -1)[:, BLOCK : 2 * BLOCK])
