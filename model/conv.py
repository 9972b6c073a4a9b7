"""Causal 1-d convolutions that stream.

A causal conv looks (effective kernel - stride) samples into the past. One-shot, that past is zeros
(or, for `pad_mode="replicate"`, copies of the first sample). Streaming, it is the tail of the
previous call's input, so chunk by chunk gives exactly the one-shot result.

A causal transposed conv spills (kernel - stride) samples past the end of its chunk. One-shot they
are dropped. Streaming they are kept (without the bias, which the next chunk adds again) and added
onto the start of the next chunk's output.

The extra `.conv` / `.convtr` level in parameter names mirrors Kyutai's checkpoints
(`encoder.model.0.conv.conv.weight`), so weights load by name.
"""

from __future__ import annotations

import platform
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .product import cpu_fp32, kept_copy, weight_times, wide_blocks
from .streaming import State, StreamingModule


class _ConvState(State):
    def __init__(self, previous: torch.Tensor, replicate: bool, time_major: bool):
        self.previous = previous  # [B, C, padding] the input tail the next call looks back on
        self.first = torch.ones(1, device=previous.device, dtype=torch.bool)
        self.replicate = replicate
        self.time_major = time_major  # previous is [B, padding, C] in memory, and so is the input

    def reset(self) -> None:
        self.previous.zero_()
        self.first.fill_(True)


class StreamingConv1d(StreamingModule):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__()
        assert pad_mode in ("constant", "replicate"), pad_mode
        conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.conv = nn.Sequential(OrderedDict(conv=conv))
        self.stride = stride
        self.padding = (kernel_size - 1) * dilation + 1 - stride
        self.pad_mode = pad_mode

    def init_state(self, batch_size: int) -> _ConvState:
        weight = self.conv.conv.weight
        C, P = self.conv.conv.in_channels, self.padding
        time_major = _ONEDNN and cpu_fp32(weight)  # oneDNN's layout, where it runs (below)
        if time_major:
            previous = weight.new_zeros(batch_size, P, C).mT
        else:
            previous = weight.new_zeros(batch_size, C, P)
        return _ConvState(previous, self.pad_mode == "replicate", time_major)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, T = x.shape  # [B, C, T] -> [B, C_out, T / stride]
        assert T > 0 and T % self.stride == 0, f"length {T} is not a multiple of {self.stride}"
        if self.padding:
            state = self.state if self.state is not None else self.init_state(B)
            assert isinstance(state, _ConvState)
            if state.replicate:
                state.previous.copy_(torch.where(state.first, x[..., :1], state.previous))
                state.first.fill_(False)
            if state.time_major:
                x = torch.cat([state.previous.mT, x.mT], dim=1).mT  # [B, P + T, C] in memory
            else:
                x = torch.cat([state.previous, x], dim=-1)
            state.previous.copy_(x[..., -self.padding :])
        return conv1d(x, self.conv.conv)


# How a conv runs on the CPU, by shape (2 cores, fp32, Mimi's shapes):
# - Few frames (up to READ_FRAMES out, or in for a transposed conv): reading the weight is most of
#   the work, and a product reads it fastest, weights [C_out, C_in K] @ the input unfolded into
#   columns [C_in K, frames] (`model.product`: our kernel for one or two frames where it is built,
#   MKL's otherwise). Kernel 1 is that product at any length.
# - More frames: oneDNN's kernel on a weight reordered once into oneDNN's blocked layout and kept
#   (`onednn_conv`). PyTorch's conv hands oneDNN its own layout, which oneDNN reorders on every
#   call, and for a few frames takes slower paths still. Alone, Mimi's 256 -> 512 conv on 16
#   frames out takes 0.28 ms kept, 0.38 as a product, 1.0 through PyTorch; its 512 -> 256
#   transposed conv on 16 frames in 0.30, 0.50 and 0.98.
# - Without oneDNN (a PyTorch build that lacks it, or an ARM one), up to FEW_FRAMES take the
#   product and the rest PyTorch's conv.
# oneDNN reads and writes activations time-major ([B, T, C] in memory, seen as [B, C, T]), so on
# the CPU a streaming conv keeps its input tail that way, pads in that layout, and a kernel-1 conv
# answers in the layout it was given: from one conv to the next nothing is transposed, the ELUs
# and residual sums between them run on either layout alike, and the output is the same bit for
# bit. (Converting to and from PyTorch's layout around each oneDNN conv cost 1-2 ms a frame.)
READ_FRAMES = 4
FEW_FRAMES = 32


# oneDNN as measured here: on x86 (ARM builds run it on Arm Compute Library kernels, not measured),
# through the ops torch.compile's CPU backend uses, which older PyTorch may lack.
_ONEDNN_OPS = (
    "_convolution_pointwise",
    "_convolution_transpose_pointwise",
    "_reorder_convolution_transpose_weight",
)
_ONEDNN = (
    torch.backends.mkldnn.is_available()
    and platform.machine().lower() in ("x86_64", "amd64")
    and all(hasattr(torch.ops.mkldnn, op) for op in _ONEDNN_OPS)
)


def _onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    """oneDNN's kernels serve x, an fp32 input on the CPU (the callers' check): in a build that has
    them (x86), with no gradient wanted (they have none)."""
    return (
        _ONEDNN
        and torch.backends.mkldnn.enabled
        and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
    )


def _kernel(x: torch.Tensor, w: torch.Tensor, frames: int) -> str:
    """Which kernel runs a dense conv on the CPU (above): "product", "onednn" or "torch". `frames`
    counts the output's frames (a transposed conv's: its input's)."""
    onednn = _onednn(x, w)
    if frames <= (READ_FRAMES if onednn else FEW_FRAMES):
        return "product"
    return "onednn" if onednn else "torch"


def onednn_conv(x: torch.Tensor, conv: nn.Conv1d | nn.ConvTranspose1d) -> torch.Tensor:
    """conv(x) (no padding: the caller pads) by oneDNN's kernel, as its 2-d conv of height 1. The
    weight is reordered into the blocked layout oneDNN picks for x's shape, and kept beside the
    weight (`kept_copy`) until the weight or that shape changes."""
    (S,), (D,) = conv.stride, conv.dilation
    transposed = isinstance(conv, nn.ConvTranspose1d)
    # padding, [output padding,] stride, dilation, groups
    geometry = [[0, 0], *([[0, 0]] if transposed else []), [1, S], [1, D], conv.groups]
    shape = [x.shape[0], x.shape[1], 1, x.shape[2]]

    def reorder(w: torch.Tensor) -> torch.Tensor:
        w = w.unsqueeze(2).contiguous()  # [C_out, C_in, 1, K]; transposed: [C_in, C_out, 1, K]
        if transposed:
            return torch.ops.mkldnn._reorder_convolution_transpose_weight(w, *geometry, shape)
        return torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), *geometry, shape)

    weight = kept_copy(conv.weight, "_onednn", reorder, tuple(shape))
    mkldnn = torch.ops.mkldnn
    run = mkldnn._convolution_transpose_pointwise if transposed else mkldnn._convolution_pointwise
    return run(x.unsqueeze(2), weight, conv.bias, *geometry, "none", [], "").squeeze(2)


def conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """conv(x) (no padding: the caller pads), by the kernel fastest for its shape (above)."""
    w = conv.weight  # [C_out, C_in / groups, K]
    C_out, _, K = w.shape
    (S,), (D,) = conv.stride, conv.dilation
    frames = (x.shape[-1] - D * (K - 1) - 1) // S + 1
    if conv.groups != 1 or not cpu_fp32(x):
        return conv(x)
    pointwise = K == 1 and S == 1
    if pointwise and frames > READ_FRAMES:  # a plain product, answered in x's layout
        if x.stride(1) == 1:  # time-major (oneDNN's output): [B, T, C_in] @ W^T
            y = (x.mT @ w.view(C_out, -1).t()).mT
        else:
            y = weight_times(w.view(C_out, -1), x)
        return y if conv.bias is None else y + conv.bias[:, None]
    kernel = "product" if pointwise else _kernel(x, w, frames)
    if kernel == "product":
        B, C, _ = x.shape
        cols = x.unfold(-1, D * (K - 1) + 1, S)[..., ::D]  # [B, C_in, frames, K]
        cols = cols.permute(0, 2, 1, 3).reshape(B, frames, C * K)  # a copy unless K = 1
        if frames <= READ_FRAMES:
            cols = cols.contiguous()  # frame-major, the layout a product of few columns wants
        blocks = wide_blocks(w)  # a wide weight is read in column blocks (`model.product`)
        y = weight_times(w.reshape(C_out, C * K), cols.transpose(1, 2), blocks)
        return y if conv.bias is None else y + conv.bias[:, None]  # [B, C_out, frames]
    return onednn_conv(x, conv) if kernel == "onednn" else conv(x)


def conv_transpose1d(x: torch.Tensor, convtr: nn.ConvTranspose1d) -> torch.Tensor:
    """convtr(x), by the kernel fastest for its shape (above). The product with few frames in is
    followed by an overlap-add (`F.fold`); it reads the weight fastest laid out [C_out K, C_in] in
    memory (`step_layout`), and either layout computes the same sums."""
    w = convtr.weight  # [C_in, C_out / groups, K]
    B, C, T = x.shape
    _, out_per_group, K = w.shape
    S = convtr.stride[0]
    depthwise = convtr.groups == C and out_per_group == 1
    if not cpu_fp32(x) or (convtr.groups != 1 and not depthwise):
        return convtr(x)
    kernel = "product" if depthwise else _kernel(x, w, T)
    if kernel == "product":
        if depthwise:  # each channel its own kernel
            cols = (x[:, :, None, :] * w[:, 0, :, None]).reshape(B, C * K, T)
        else:
            w = w.reshape(C, out_per_group * K).t()  # [C_out K, C_in]
            if w.is_contiguous():  # laid out by step_layout: [C_out K, C_in] @ [C_in, T]
                cols = weight_times(w, x.transpose(1, 2).contiguous().transpose(1, 2))
            else:
                cols = (x.transpose(1, 2) @ w.t()).transpose(1, 2)
        y = F.fold(cols, (1, (T - 1) * S + K), (1, K), stride=(1, S))
        y = y.reshape(B, -1, (T - 1) * S + K)
        return y if convtr.bias is None else y + convtr.bias[:, None]
    return onednn_conv(x, convtr) if kernel == "onednn" else convtr(x)


def step_layout(convtr: nn.ConvTranspose1d) -> None:
    """Store a dense transposed conv's weight [C_out K, C_in] in memory, the layout the product in
    `conv_transpose1d` reads fastest. The parameter keeps its name and [C_in, C_out, K] shape (a
    view), so state dicts are unchanged."""
    w = convtr.weight
    C, out, K = w.shape
    if convtr.groups != 1 or w.device.type != "cpu" or not w.is_contiguous():
        return
    stored = w.detach().reshape(C, out * K).t().contiguous()  # [C_out K, C_in]
    convtr.weight = nn.Parameter(stored.t().view(C, out, K), requires_grad=w.requires_grad)


class _ConvTrState(State):
    def __init__(self, partial: torch.Tensor):
        self.partial = partial  # [B, C_out, kernel - stride] spill-over, bias removed

    def reset(self) -> None:
        self.partial.zero_()


class StreamingConvTranspose1d(StreamingModule):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        convtr = nn.ConvTranspose1d(
            in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias
        )
        self.convtr = nn.Sequential(OrderedDict(convtr=convtr))
        self.overlap = kernel_size - stride

    def init_state(self, batch_size: int) -> _ConvTrState:
        convtr = self.convtr.convtr
        partial = torch.zeros(
            batch_size,
            convtr.out_channels,
            self.overlap,
            device=convtr.weight.device,
            dtype=convtr.weight.dtype,
        )
        return _ConvTrState(partial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = conv_transpose1d(x, self.convtr.convtr)  # [B, C_out, T * stride + overlap]
        P = self.overlap
        if P == 0:
            return y
        if self.state is not None:
            assert isinstance(self.state, _ConvTrState)
            y[..., :P] += self.state.partial
            tail = y[..., -P:]
            bias = self.convtr.convtr.bias
            self.state.partial.copy_(tail if bias is None else tail - bias[:, None])
        return y[..., :-P]
