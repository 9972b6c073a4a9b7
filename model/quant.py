"""Int8 weight-only linears, in the format of Kyutai's `-q8` checkpoints, in plain PyTorch.

Kyutai's q8 files were written by bitsandbytes (`int8_vectorwise_quant`, through the original's
`QLinear`): each linear weight W [out, in] became

    weight      int8 [out, in]   round(W * 127 / absmax(W[row]))   (half to even)
    weight_scb  fp32 [out]       absmax(W[row]), the largest |W| of each output row

so W ~ weight * weight_scb / 127, and a linear is y = (x @ weight.T) * (weight_scb / 127). Only the
weights are int8: activations stay float (the original also rounds activations to int8 inside
bitsandbytes' matmul; we do not, which is more accurate). This runs wherever PyTorch does, with
no bitsandbytes.

`Int8Linear` holds those two tensors under those names, so a q8 file loads by name.
`quantize_linears` swaps every `nn.Linear` of a module for one (quantizing real weights, or leaving
meta ones to be loaded), and `quantize_weight` / `dequantize_weight` convert a single weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cpu.private import int8_times

SCALE_SUFFIX = "_scb"  # the scales of `x.weight` are `x.weight_scb`
_BLOCK = 1 << 22  # values quantized at a time: bounds the float32 temporaries (16 MB each)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] float -> (int8 [out, in], fp32 absmax per row [out]), as bitsandbytes does.

    Rows are done in blocks, so quantizing a large weight needs little memory beyond its result.
    An all-zero row gets scale 0 and zero weights.
    """
    assert weight.dim() == 2 and weight.is_floating_point(), (weight.shape, weight.dtype)
    rows, cols = weight.shape
    q = torch.empty(rows, cols, dtype=torch.int8, device=weight.device)
    scb = torch.empty(rows, dtype=torch.float32, device=weight.device)
    step = max(1, _BLOCK // max(cols, 1))
    for start in range(0, rows, step):
        block = weight[start : start + step]
        absmax = block.abs().amax(dim=1).float()  # exact in the weight's own dtype
        factor = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
        q[start : start + step] = (block.float() * factor[:, None]).round_()  # |.| <= 127
        scb[start : start + step] = absmax
    return q, scb


def dequantize_weight(
    weight: torch.Tensor, scb: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """int8 [out, in] and its absmax scales [out] -> the float weight they stand for, in `dtype`."""
    return (weight.float() * (scb.float() / 127)[:, None]).to(dtype)


class Int8Linear(nn.Module):
    """A bias-free linear with an int8 weight and per-output-row scales: y = x @ (w * scb / 127).T.

    The product is computed in the input's float dtype (the weight cast to it, the scale applied to
    the result), except on the CPU: there torch's int8 weight-only kernel (`_weight_int8pack_mm`,
    called in `model.cpu.private`) runs in bfloat16 whatever the input's dtype. It is 2-10x
    faster than a float32 matmul at batch 1 (it reads 1 byte per weight instead of 4), and rounding
    the activations to bfloat16 inside the linear (2^-9 relative) costs far less than the int8
    weights themselves (about 1e-2 relative).
    Set `cpu_kernel_dtype = None` to compute as on other devices (slower on the CPU; what the
    tests use to check that path, and to compare with a float model to float rounding).

    `activation_dtype` is the dtype the activations around this linear have: attention sizes its
    KV cache with it (a float linear's weight dtype says the same). It follows `module.to(dtype)`.
    `weight_scb` stays float32, unrounded, through such casts (the original's did not: PR #420).
    """

    cpu_kernel_dtype: torch.dtype | None = torch.bfloat16

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation_dtype = activation_dtype
        self.weight = nn.Parameter(
            torch.zeros(out_features, in_features, dtype=torch.int8, device=device),
            requires_grad=False,
        )
        self.weight_scb = nn.Parameter(
            torch.ones(out_features, dtype=torch.float32, device=device), requires_grad=False
        )

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, activation_dtype: torch.dtype | None = None
    ) -> Int8Linear:
        """`linear` quantized (on its device); or, on the meta device, an empty one to load into."""
        if linear.bias is not None:
            raise ValueError("Int8Linear has no bias; only bias-free linears can be quantized")
        weight = linear.weight
        out = cls(
            linear.in_features,
            linear.out_features,
            activation_dtype=activation_dtype or weight.dtype,
            device=weight.device,
        )
        if weight.device.type != "meta":
            q, scb = quantize_weight(weight.detach())
            out.weight.data, out.weight_scb.data = q, scb
        return out

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight [out, in] this linear stands for."""
        return dequantize_weight(self.weight, self.weight_scb, dtype or self.activation_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight_scb / 127  # [out], float32
        if self.cpu_kernel_dtype is not None:
            y = int8_times(x, self.weight, scale, self.cpu_kernel_dtype)
            if y is not None:
                return y
        if x.dtype == torch.float16:  # x @ int8 can leave float16's range before the scale
            return F.linear(x, self.dequantized(x.dtype))
        return F.linear(x, self.weight.to(x.dtype)) * scale.to(x.dtype)

    def _apply(self, fn, recurse=True):
        # Follow casts and moves as a float weight would, but never round the scales.
        self.activation_dtype = fn(torch.empty(0, dtype=self.activation_dtype)).dtype
        scb = self.weight_scb.data
        module = super()._apply(fn, recurse)
        if scb.device.type != "meta":
            self.weight_scb.data = scb.to(self.weight_scb.device, torch.float32)
        return module

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activation_dtype={self.activation_dtype}"
        )


def quantize_linears(module: nn.Module, activation_dtype: torch.dtype | None = None) -> nn.Module:
    """Swap every `nn.Linear` inside `module` for an `Int8Linear`, in place; returns `module`.

    Real weights are quantized; on the meta device (a model built to be loaded) the swap only
    changes which tensors the module expects: int8 `weight` and float32 `weight_scb`.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear.from_linear(child, activation_dtype))
        else:
            quantize_linears(child, activation_dtype)
    return module


def int8_linear_names(module: nn.Module) -> set[str]:
    """Module names of the `Int8Linear`s inside `module`."""
    return {name for name, m in module.named_modules() if isinstance(m, Int8Linear)}
