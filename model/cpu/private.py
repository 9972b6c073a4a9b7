"""PyTorch's private ops that our CPU forms call: the one module in model/ that names them.

Each is a faster road to what a public op also computes, and each falls back to that public op
where the private one is missing (an older or newer PyTorch, a build without oneDNN, another
CPU), switched off (`public_only()`), or asked for a gradient it has none of.
`tests/model/cpu/test_private.py` checks that both roads give the same numbers, and that no other
module of model/ calls a private op.

- oneDNN's convolutions (`torch.ops.mkldnn._convolution_pointwise` and its transposed twin), on a
  weight reordered once into oneDNN's blocked layout. PyTorch's own conv hands oneDNN the weight in
  PyTorch's layout, which oneDNN reorders on every call, and for a few frames takes slower paths
  still: alone, Mimi's 256 -> 512 conv on 16 frames out takes 0.28 ms here, 1.0 through PyTorch.
  Used on x86 only, where it was measured (ARM builds run oneDNN on Arm Compute Library kernels).
  Public road: F.conv1d, F.conv_transpose1d.
- torch's int8 weight-only product (`torch._weight_int8pack_mm`, bf16 inside), for `Int8Linear`.
  Public road: the caller's float product (`model/quant.py`).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_OPS = (
    "_convolution_pointwise",
    "_convolution_transpose_pointwise",
    "_reorder_convolution_transpose_weight",
)
ONEDNN = (
    torch.backends.mkldnn.is_available()
    and platform.machine().lower() in ("x86_64", "amd64")
    and all(hasattr(torch.ops.mkldnn, op) for op in _ONEDNN_OPS)
    and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
)
_public_only = 0  # depth of `public_only()`


@contextmanager
def public_only() -> Iterator[None]:
    """Every op here takes its public road inside: to compare the two (tests, benchmarks)."""
    global _public_only
    _public_only += 1
    try:
        yield
    finally:
        _public_only -= 1


def onednn_on() -> bool:
    """oneDNN's convs run here (fp32 on the CPU is the callers' part)."""
    return ONEDNN and not _public_only and torch.backends.mkldnn.enabled


Conv = nn.Conv1d | nn.ConvTranspose1d


def convolve(
    x: torch.Tensor, conv: Conv, reordered: dict[tuple[int, ...], torch.Tensor]
) -> torch.Tensor:
    """conv(x) with no padding (the caller pads): by oneDNN's kernel on the weight reordered into
    the blocked layout oneDNN picks for x's shape, kept in `reordered` (the caller's, keyed by
    that shape); by F.conv1d / F.conv_transpose1d where oneDNN is off or a gradient is wanted."""
    transposed = isinstance(conv, nn.ConvTranspose1d)
    w = conv.weight
    if not onednn_on() or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)):
        if transposed:
            return F.conv_transpose1d(
                x, w, conv.bias, conv.stride, 0, 0, conv.groups, conv.dilation
            )
        return F.conv1d(x, w, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
    (S,), (D,) = conv.stride, conv.dilation
    # padding, [output padding,] stride, dilation, groups: as a 2-d conv of height 1
    geometry = [[0, 0], *([[0, 0]] if transposed else []), [1, S], [1, D], conv.groups]
    shape = (x.shape[0], x.shape[1], 1, x.shape[2])
    weight = reordered.get(shape)
    if weight is None:
        w = w.detach().unsqueeze(2).contiguous()  # [C_out, C_in, 1, K]; transposed: [C_in, ...]
        if transposed:
            weight = torch.ops.mkldnn._reorder_convolution_transpose_weight(
                w, *geometry, list(shape)
            )
        else:
            weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                w.to_mkldnn(), *geometry, list(shape)
            )
        reordered[shape] = weight
    mkldnn = torch.ops.mkldnn
    run = mkldnn._convolution_transpose_pointwise if transposed else mkldnn._convolution_pointwise
    return run(x.unsqueeze(2), weight, conv.bias, *geometry, "none", [], "").squeeze(2)


def int8_times(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | None:
    """x [..., in] @ (weight [out, in] int8 * scale [out]).T, computed in `dtype` by torch's
    int8 CPU kernel and returned in x's dtype; None where that kernel cannot take these tensors
    (the caller's float product is then the public road)."""
    if _public_only or not _int8_kernel_fits(x, weight):
        return None
    x2 = x.reshape(-1, weight.shape[1]).to(dtype).contiguous()  # [B*T, in]
    if x2.data_ptr() % 64:
        x2 = x2.clone()
    y = torch._weight_int8pack_mm(x2, weight, scale.to(dtype))
    return y.reshape(*x.shape[:-1], weight.shape[0]).to(x.dtype)


def _int8_kernel_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether torch's int8 CPU kernel can take these tensors. It reads with aligned vector loads
    and crashes the process (not an exception) on rows of other lengths or unaligned data."""
    return (
        x.device.type == "cpu"
        and hasattr(torch, "_weight_int8pack_mm")
        and weight.shape[1] % 32 == 0
        and weight.is_contiguous()
        and weight.data_ptr() % 64 == 0
    )


# --- int4 weight-only products (model/int4.py) ------------------------------------------------
# torch's group-wise int4 kernels take the weight packed in a layout of their own, per device:
# on the CPU `_convert_weight_to_int4pack_for_cpu` (uint8 [out, in / 2]); on CUDA
# `_convert_weight_to_int4pack` (int32 tiles, `INT4_CUDA_TILES` inner k-tiles), run in bfloat16.
# There is no public road: where no kernel exists, int4 is refused (`int4_problem`).
INT4_CUDA_TILES = 8


def int4_problem(device: torch.device, in_features: int = 0) -> str:
    """Why int4 linears cannot run on `device` ("" where they can)."""
    aten = torch.ops.aten
    if device.type == "cpu":
        if not hasattr(aten, "_weight_int4pack_mm_for_cpu"):
            return f"this PyTorch ({torch.__version__}) has no int4 kernel for the CPU"
        return ""
    if device.type == "cuda":
        if not hasattr(aten, "_weight_int4pack_mm"):
            return f"this PyTorch ({torch.__version__}) has no int4 kernel for CUDA"
        if torch.cuda.get_device_capability(device) < (8, 0):
            return "int4 needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere on)"
        return ""
    return f"PyTorch has no int4 kernel for {device.type} (int4 runs on CUDA GPUs and the CPU)"


def int4_fits(out_features: int, in_features: int, device: torch.device) -> bool:
    """Whether `device`'s int4 kernel takes a weight of this shape."""
    if device.type == "cuda":
        return out_features % 8 == 0 and in_features % (INT4_CUDA_TILES * 16) == 0
    return in_features % 2 == 0


def int4_packed(out_features: int, in_features: int, device: torch.device):
    """(shape, dtype) of a weight packed for `device`'s int4 kernel."""
    if device.type == "cuda":
        tiles = INT4_CUDA_TILES
        return (out_features // 8, in_features // (tiles * 16), 32, tiles // 2), torch.int32
    return (out_features, in_features // 2), torch.uint8


def int4_pack(codes: torch.Tensor) -> torch.Tensor:
    """codes [out, in] int32 in 0..15 (on the target device) -> the kernel's packed weight."""
    if codes.device.type == "cuda":
        pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)  # [out, in / 2]
        return torch.ops.aten._convert_weight_to_int4pack(pairs, INT4_CUDA_TILES)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.contiguous(), 1)


def int4_times(
    x: torch.Tensor, packed: torch.Tensor, group_size: int, scales_zeros: torch.Tensor
) -> torch.Tensor:
    """x [..., in] @ W.T for the packed int4 weight W (scales and zeros [in / group, out, 2]),
    computed in bfloat16 by the device's kernel and returned in x's dtype."""
    out_features = scales_zeros.shape[1]
    x2 = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
    sz = scales_zeros.to(torch.bfloat16)
    if x.device.type == "cuda":
        y = torch.ops.aten._weight_int4pack_mm(x2, packed, group_size, sz)
    else:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, packed, group_size, sz)
    return y.reshape(*x.shape[:-1], out_features).to(x.dtype)
