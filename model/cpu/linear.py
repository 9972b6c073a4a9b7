"""The CPU forms of a linear and of Mimi's codebook search: the same products, taken as
W @ X for the one or few rows a streaming step gives (`model.cpu.products`)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ..mimi import Codebook
from .choice import road_for
from .native import turned_off
from .products import KeepsCopies, cpu_fp32, no_grad_wanted, weight_times, wide_blocks


class Linear(KeepsCopies, nn.Linear):
    """nn.Linear as W @ X: its output [rows, out] is a view of the product's [out, rows], which
    attention's reshapes and the sums after it read as they are (no copy). `road` is the product
    timed fastest for its weight on this CPU (`model.cpu.choice`): our kernel, MKL's, or plain
    torch."""

    @classmethod
    def of(cls, linear: nn.Linear) -> Linear:
        """The CPU form of `linear`, holding its weight and bias."""
        with torch.device("meta"):
            fast = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        fast.weight, fast.bias = linear.weight, linear.bias
        fast.road = road_for(linear.weight) if cpu_fp32(linear.weight) else "torch"
        fast.remake_copies()
        return fast

    def remake_copies(self) -> None:
        self.blocks = None
        if getattr(self, "road", "mkl") == "mkl":
            with turned_off():
                self.blocks = wide_blocks(self.weight)  # a wide weight read in column blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        rows = x.reshape(-1, x.shape[-1])
        plain = not (cpu_fp32(x) and cpu_fp32(w) and w.is_contiguous() and no_grad_wanted(x, w))
        if plain or self.road == "torch":
            return super().forward(x)
        with turned_off() if self.road == "mkl" else nullcontext():
            y = weight_times(w, rows.contiguous().t(), self.blocks).t()  # [rows, out], a view
        y = y.reshape(*x.shape[:-1], y.shape[-1])
        return y if self.bias is None else y + self.bias


class CentroidsFirst(Codebook):
    """Mimi's codebook with its distances taken centroids-first, W @ X: 4x faster on the CPU than
    cdist's order; the sums differ from cdist's in the last bits only."""

    @classmethod
    def of(cls, codebook: Codebook) -> CentroidsFirst:
        """The CPU form of `codebook`, holding its buffers."""
        bins, dim = codebook.embedding_sum.shape
        with torch.device("meta"):
            fast = cls(bins, dim)
        for name, buffer in codebook.named_buffers(recurse=False):
            setattr(fast, name, buffer)
        return fast

    def centroids_times(self, query: torch.Tensor) -> torch.Tensor:
        return weight_times(self._centroids()[1], query)
