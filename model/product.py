"""The matrix product a streaming step makes on the CPU: a weight times a few columns.

A streaming step multiplies a few rows (or frames) of activations by each weight, so it is bound by
reading the weight, and MKL's fp32 product reads a row-major weight [out, in] 2-4x faster as
W @ X, with X [in, N] column-major, than as X @ W^T (what nn.Linear, torch.matmul's batch fold and
PyTorch's convolutions do for a few frames). One column reads fastest taken twice: MKL's
matrix-vector kernel reads the weight at half the speed of its two-column product. 20-35 GB/s
against 7-20 on this project's 2-core machine (`benchmarks/bench_products.py`).
"""

from __future__ import annotations

import torch


def weight_times(w: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """w [O, I] (row-major) @ cols [I, N] or [B, I, N] (each [I, N] column-major) -> [O, N] or
    [B, O, N].

    Spelled as mm/bmm on purpose: `w @ cols` would fold the batch into rows and multiply
    cols^T @ w^T, the slow form."""
    N = cols.shape[-1]
    if N == 1:  # one column: twice
        cols = cols.expand(*cols.shape[:-1], 2).transpose(-1, -2).contiguous().transpose(-1, -2)
    if cols.dim() == 2:
        y = torch.mm(w, cols)
    elif cols.shape[0] == 1:
        y = torch.mm(w, cols[0])[None]
    else:
        y = torch.bmm(w.expand(cols.shape[0], -1, -1), cols)
    return y[..., :1] if N == 1 else y
