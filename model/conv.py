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

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .product import weight_times, wide_blocks
from .streaming import State, StreamingModule


class _ConvState(State):
    def __init__(self, previous: torch.Tensor, replicate: bool):
        self.previous = previous  # [B, C, padding] the input tail the next call looks back on
        self.first = torch.ones(1, device=previous.device, dtype=torch.bool)
        self.replicate = replicate

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
        previous = torch.zeros(
            batch_size,
            self.conv.conv.in_channels,
            self.padding,
            device=weight.device,
            dtype=weight.dtype,
        )
        return _ConvState(previous, self.pad_mode == "replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, T = x.shape  # [B, C, T] -> [B, C_out, T / stride]
        assert T > 0 and T % self.stride == 0, f"length {T} is not a multiple of {self.stride}"
        if self.padding:
            state = self.state if self.state is not None else self.init_state(B)
            assert isinstance(state, _ConvState)
            if state.replicate:
                state.previous.copy_(torch.where(state.first, x[..., :1], state.previous))
                state.first.fill_(False)
            x = torch.cat([state.previous, x], dim=-1)
            state.previous.copy_(x[..., -self.padding :])
        return conv1d(x, self.conv.conv)


# A streaming call carries few frames. Below this many output frames, a conv on the CPU runs
# faster as one matrix product (weights [C_out, C_in K] @ columns, `model.product`) than through
# PyTorch's conv kernels, which are tuned for long signals: Mimi's 512 -> 1024 conv on 24 frames
# takes 5.0 ms as a conv and 1.7 ms as a product (2 cores, fp32).
FEW_FRAMES = 32


def _few_frames(x: torch.Tensor, frames: int) -> bool:
    return frames <= FEW_FRAMES and x.device.type == "cpu" and x.dtype == torch.float32


def conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """conv(x) (no padding: the caller pads), as a matrix product when few frames come out."""
    w = conv.weight  # [C_out, C_in / groups, K]
    C_out, _, K = w.shape
    (S,), (D,) = conv.stride, conv.dilation
    frames = (x.shape[-1] - D * (K - 1) - 1) // S + 1
    if conv.groups != 1 or not _few_frames(x, frames) or not w.is_contiguous():
        return conv(x)
    B, C, _ = x.shape
    cols = x.unfold(-1, D * (K - 1) + 1, S)[..., ::D]  # [B, C_in, frames, K]
    cols = cols.permute(0, 2, 1, 3).reshape(B, frames, C * K)  # frame-major: the fast operand
    blocks = wide_blocks(w)  # a wide weight is read in column blocks (`model.product`)
    y = weight_times(w.view(C_out, C * K), cols.transpose(1, 2), blocks)  # [B, C_out, frames]
    return y if conv.bias is None else y + conv.bias[:, None]


def conv_transpose1d(x: torch.Tensor, convtr: nn.ConvTranspose1d) -> torch.Tensor:
    """convtr(x), for few frames as one matrix product and an overlap-add (`F.fold`).

    For the few frames a streaming call carries, PyTorch's transposed conv takes a slow path on
    the CPU (27 ms for Mimi's first decoder layer on 2 frames, whose weights take about 1 ms to
    read). The product is fastest with the weight laid out [C_out K, C_in] in memory, which
    `step_layout` gives it; either layout computes the same sums.
    """
    w = convtr.weight  # [C_in, C_out / groups, K]
    B, C, T = x.shape
    _, out_per_group, K = w.shape
    S = convtr.stride[0]
    if not _few_frames(x, T):
        return convtr(x)
    if convtr.groups == 1:
        w = w.reshape(C, out_per_group * K).t()  # [C_out K, C_in]
        if w.is_contiguous():  # laid out by step_layout: [C_out K, C_in] @ [C_in, T]
            cols = weight_times(w, x.transpose(1, 2).contiguous().transpose(1, 2))
        else:
            cols = (x.transpose(1, 2) @ w.t()).transpose(1, 2)
    elif convtr.groups == C and out_per_group == 1:  # depthwise: each channel its own kernel
        cols = (x[:, :, None, :] * w[:, 0, :, None]).reshape(B, C * K, T)
    else:
        return convtr(x)
    y = F.fold(cols, (1, (T - 1) * S + K), (1, K), stride=(1, S)).reshape(B, -1, (T - 1) * S + K)
    return y if convtr.bias is None else y + convtr.bias[:, None]


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
