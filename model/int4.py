"""Int4 weight-only linears: what lets the 7B fit an 8 GB GPU (about 4 GB of weights).

Each linear weight W [out, in] of the temporal and depth transformers is cut into groups of
`group_size` (128, or 64 or 32 where `in` is not a multiple of 128) consecutive inputs of one
output row; a group keeps its minimum and range as a float scale and zero, and each weight 4 bits:

    q = round((W - min) / scale)  in 0..15,   scale = (max - min) / 15,   zero = min + 8 * scale
    W ~ (q - 8) * scale + zero

(torchao's asymmetric int4 weight-only layout, which torch's kernels read). Quantized while
loading, from the checkpoint's weights (bfloat16, or a q8 file's dequantized), one tensor at a
time on the target device, and packed there for its kernel (`model.cpu.private`: the CPU's, or
CUDA's from compute capability 8.0); activations stay float, the product runs in bfloat16.
Elsewhere (Apple's GPU, an older PyTorch) int4 is refused with the reason. The heads (text and
codebook logits) and the depth transformer's input projections stay float.
"""

from __future__ import annotations

import torch
from torch import nn

from .cpu.private import int4_fits, int4_pack, int4_packed, int4_problem, int4_times

SCALES_SUFFIX = "_sz"  # the scales and zeros of `x.weight` are `x.weight_sz`
GROUP_SIZES = (128, 64, 32)


def group_size_for(in_features: int) -> int | None:
    """The largest group size dividing `in_features`; None: too narrow or odd (stays float)."""
    return next((g for g in GROUP_SIZES if in_features % g == 0), None)


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] float -> (codes int32 [out, in] in 0..15, scales and zeros float32
    [in / group_size, out, 2]). A constant group gets scale 0 and its value as zero."""
    out_features, in_features = weight.shape
    w = weight.float().reshape(out_features, in_features // group_size, group_size)
    low, high = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    scale = (high - low) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = ((w - low) / safe).round_().clamp_(0, 15).to(torch.int32)
    zero = low + 8 * scale
    scales_zeros = torch.cat([scale, zero], dim=-1).transpose(0, 1).contiguous()  # [G, out, 2]
    return codes.reshape(out_features, in_features), scales_zeros


def dequantize_int4(codes: torch.Tensor, scales_zeros: torch.Tensor) -> torch.Tensor:
    """The float32 weight [out, in] that `quantize_int4`'s codes and scales stand for."""
    out_features, in_features = codes.shape
    groups = scales_zeros.shape[0]
    sz = scales_zeros.float().transpose(0, 1)  # [out, G, 2]
    w = codes.float().reshape(out_features, groups, -1) - 8
    return (w * sz[..., :1] + sz[..., 1:]).reshape(out_features, in_features)


class Int4Linear(nn.Module):
    """A bias-free linear with a group-wise int4 weight, packed for its device's kernel.

    `weight` holds the packed codes (their layout is the device's: the module cannot move to
    another kind of device; load the model again there) and `weight_sz` the scales and zeros.
    `activation_dtype` is the dtype around it (attention sizes its KV cache with it)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        *,
        target: torch.device,
        activation_dtype: torch.dtype,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.target = group_size, target
        self.activation_dtype = activation_dtype
        shape, dtype = int4_packed(out_features, in_features, target)
        self.weight = nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)
        self.weight_sz = nn.Parameter(
            torch.empty(in_features // group_size, out_features, 2), requires_grad=False
        )

    def pack(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """A float weight [out, in] (on the target device) -> this module's two tensors."""
        codes, scales_zeros = quantize_int4(weight, self.group_size)
        return {"weight": int4_pack(codes), "weight_sz": scales_zeros}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int4_times(x, self.weight, self.group_size, self.weight_sz)

    def _apply(self, fn, recurse=True):
        # Casts change the activations' dtype only; the packed codes and the float32 scales stay.
        self.activation_dtype = fn(torch.empty(0, dtype=self.activation_dtype)).dtype
        kept = {name: p.data for name, p in self.named_parameters(recurse=False)}
        module = super()._apply(fn, recurse)
        for name, data in kept.items():
            param = getattr(self, name)
            if data.device.type != "meta" and param.device.type != data.device.type:
                raise RuntimeError("an int4 linear is packed for its device: load it there")
            param.data = data.to(param.device)
        return module

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, activation_dtype={self.activation_dtype}"
        )


def int4_linears(lm: nn.Module, target: torch.device, activation_dtype: torch.dtype) -> nn.Module:
    """Swap the linears of `lm`'s temporal and depth transformers (built on the meta device) for
    `Int4Linear`s that load for `target`; those too narrow for a group stay float. ValueError
    where `target` has no int4 kernel."""
    problem = int4_problem(target)
    if problem:
        raise ValueError(f"int4 cannot run here: {problem}; choose int8 or bfloat16")
    for part in (getattr(lm, "transformer", None), getattr(lm, "depformer", None)):
        if part is not None:
            _swap(part, target, activation_dtype)
    return lm


def _swap(module: nn.Module, target: torch.device, activation_dtype: torch.dtype) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.bias is None:
            group = group_size_for(child.in_features)
            if group is not None and int4_fits(child.out_features, child.in_features, target):
                setattr(
                    module,
                    name,
                    Int4Linear(
                        child.in_features,
                        child.out_features,
                        group,
                        target=target,
                        activation_dtype=activation_dtype,
                    ),
                )
        else:
            _swap(child, target, activation_dtype)


def int4_linear_names(module: nn.Module) -> dict[str, Int4Linear]:
    """The `Int4Linear`s inside `module`, by module name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, Int4Linear)}
