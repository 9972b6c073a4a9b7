"""The rotary embedding, bit for bit against Kyutai's `apply_rope` (moshi 0.2.13).

The model tests compare whole transformers with a tolerance; the rotation is written differently
from the original's (fewer kernels) on the promise that it makes the same products and sums, so
here it must give the same bits, in the float32 of Mimi and the bfloat16 of the LM.
"""

from __future__ import annotations

import pytest
import torch
from moshi.modules.rope import apply_rope as original_apply_rope
from moshi.utils.compile import no_compile

from model.transformer import apply_rope, rope_rotation


@pytest.mark.parametrize(
    "dtype, heads, head_dim, steps, offset, max_period",
    [
        (torch.float32, 8, 64, 2, 0, 10_000.0),  # Mimi: two 25 Hz steps a frame
        (torch.float32, 8, 64, 2, 4_321, 10_000.0),
        (torch.bfloat16, 4, 128, 1, 2_999, 10_000.0),  # the LM: one step a frame
        (torch.float32, 2, 16, 5, 100_000, 100.0),
    ],
)
def test_rope_matches_the_original_bit_for_bit(dtype, heads, head_dim, steps, offset, max_period):
    g = torch.Generator().manual_seed(offset)
    q = torch.randn(1, heads, steps, head_dim, generator=g).to(dtype)
    k = torch.randn(1, heads, steps, head_dim, generator=g).to(dtype)

    with no_compile():
        q_ref, k_ref = original_apply_rope(q, k, torch.tensor([offset]), max_period)
    rotation = rope_rotation(torch.arange(steps) + offset, head_dim, max_period)
    q_ours, k_ours = apply_rope(torch.stack([q, k]), rotation)

    assert q_ours.dtype == dtype
    assert torch.equal(q_ours, q_ref)
    assert torch.equal(k_ours, k_ref)
    assert not torch.equal(q_ours, q)  # it turned something
