"""The matrix product a streaming step makes on the CPU: a weight times a few columns.

A streaming step multiplies a few rows (or frames) of activations by each weight, so it is bound by
reading the weight, and MKL's fp32 product reads a row-major weight [out, in] 2-4x faster as
W @ X, with X [in, N] column-major, than as X @ W^T (what nn.Linear, torch.matmul's batch fold and
PyTorch's convolutions do for a few frames). One column reads fastest taken twice: MKL's
matrix-vector kernel reads the weight at half the speed of its two-column product. 20-35 GB/s
against 7-20 on this project's 2-core machine (`benchmarks/bench_products.py`).

A wide weight (rows of 2048 or more, longer than it is tall: Mimi's feed-forward out-projection
[512, 2048], its 512 -> 1024 convs as [1024, 3584] and [1024, 8192]) still reads at only 21-26
GB/s that way (best of 20; 15-20 inside a Mimi frame). Cut into blocks of 512 columns, each block
stored whole, it reads at 31-36: a batch of short-row products, summed. The blocks are a copy
(`wide_blocks`, 126 MB for Mimi), made when a module is swapped for its CPU form and kept by it.

Where our own kernel is built (`model/cpu/native.py`, x86-64 with a C++ compiler), it takes one or
two columns instead, and reads every weight, wide or not, at 31-51 GB/s; wide blocks are then not
made.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .native import MAX_ROWS, weight_times_rows

BLOCK = 512  # columns of a wide weight one product reads
WIDE = 2048  # a weight with at least this many columns, and more columns than rows, is wide
FEW = 4  # columns up to which the blocks read faster (at 16 the single product is faster)


def cpu_fp32(t: torch.Tensor) -> bool:
    """t is an fp32 tensor on the CPU: what this package's products and kernels serve."""
    return t.device.type == "cpu" and t.dtype == torch.float32


def no_grad_wanted(*tensors: torch.Tensor) -> bool:
    """No gradient is wanted of these tensors: our kernels and oneDNN's have none."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def weight_times(
    w: torch.Tensor, cols: torch.Tensor, blocks: torch.Tensor | None = None
) -> torch.Tensor:
    """w [O, I] (row-major) @ cols [I, N] or [B, I, N] (each [I, N] column-major) -> [O, N] or
    [B, O, N]. `blocks`, w's `wide_blocks`, are read instead of w for a few columns.

    Spelled as mm/bmm on purpose: `w @ cols` would fold the batch into rows and multiply
    cols^T @ w^T, the slow form."""
    N = cols.shape[-1]
    if N <= MAX_ROWS and (cols.dim() == 2 or cols.shape[0] == 1):
        kernel = _native_kernel(w, cols)
        if kernel is not None:
            y = kernel(w, cols.reshape(cols.shape[-2:]).t().contiguous())  # rows [N, I]
            return y if cols.dim() == 2 else y[None]
    if N == 1:  # one column: twice
        cols = cols.expand(*cols.shape[:-1], 2).transpose(-1, -2).contiguous().transpose(-1, -2)
    if blocks is not None and N <= FEW and (cols.dim() == 2 or cols.shape[0] == 1):
        y = _blocks_times(blocks, cols.reshape(cols.shape[-2:]))
        y = y if cols.dim() == 2 else y[None]
    elif cols.dim() == 2:
        y = torch.mm(w, cols)
    elif cols.shape[0] == 1:
        y = torch.mm(w, cols[0])[None]
    else:
        y = torch.bmm(w.expand(cols.shape[0], -1, -1), cols)
    return y[..., :1] if N == 1 else y


def _native_kernel(
    w: torch.Tensor, cols: torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """Our kernel (`model.cpu.native`) where it serves w @ cols: fp32 on the CPU, a contiguous
    weight, no gradient wanted; else None."""
    if not (cpu_fp32(w) and cpu_fp32(cols) and w.is_contiguous() and no_grad_wanted(w, cols)):
        return None
    return weight_times_rows()


def _blocks_times(blocks: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """blocks [S, O, BLOCK] @ cols [S BLOCK, N] (column-major) -> [O, N]: block s takes rows
    s BLOCK .. (s + 1) BLOCK of the columns, and the S products are summed."""
    S, _, block = blocks.shape
    N = cols.shape[-1]
    per_block = cols.t().reshape(N, S, block).permute(1, 2, 0)  # [S, BLOCK, N], column-major
    return torch.bmm(blocks, per_block).sum(0)


def wide_blocks(weight: torch.Tensor) -> torch.Tensor | None:
    """A copy of a wide fp32 CPU weight [O, ...] (read as [O, I]) in column blocks
    [I / BLOCK, O, BLOCK]; None for any other weight, and where our kernel reads it
    (`model.cpu.native`)."""
    O = weight.shape[0]
    I = weight.numel() // max(O, 1)
    if I < WIDE or I <= O or I % BLOCK or not cpu_fp32(weight) or not weight.is_contiguous():
        return None
    if weight_times_rows() is not None:
        return None
    w = weight.detach()
    return w.reshape(O, I // BLOCK, BLOCK).transpose(0, 1).contiguous()


class KeepsCopies(nn.Module):
    """A CPU form that keeps its weight in other layouts too (wide blocks, oneDNN's): made by
    `remake_copies()` when the form is made, and again whenever its weights are loaded or moved
    (`load_state_dict`, `.to()`). A form serves inference: an in-place write to its weight is not
    seen by the copies, so swap again after training."""

    def remake_copies(self) -> None:
        raise NotImplementedError

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.remake_copies()

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self.remake_copies()
        return module
