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
from torch import nn

from .streaming import State, StreamingModule


class ConvState(State):
    def __init__(self, previous: torch.Tensor, replicate: bool):
        self.previous = previous  # [B, C, padding] the input tail the next call looks back on
        self.first = torch.ones(1, device=previous.device, dtype=torch.bool)
        self.replicate = replicate

    def reset(self) -> None:
        self.previous.zero_()
        self.first.fill_(True)

    def join(self, x: torch.Tensor) -> torch.Tensor:
        """The tail before the input: [B, C, padding + T]."""
        return torch.cat([self.previous, x], dim=-1)


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

    def init_state(self, batch_size: int) -> ConvState:
        weight = self.conv.conv.weight
        previous = weight.new_zeros(batch_size, self.conv.conv.in_channels, self.padding)
        return ConvState(previous, self.pad_mode == "replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, T = x.shape  # [B, C, T] -> [B, C_out, T / stride]
        assert T > 0 and T % self.stride == 0, f"length {T} is not a multiple of {self.stride}"
        if self.padding:
            state = self.state if self.state is not None else self.init_state(B)
            assert isinstance(state, ConvState)
            if state.replicate:
                state.previous.copy_(torch.where(state.first, x[..., :1], state.previous))
                state.first.fill_(False)
            x = state.join(x)
            state.previous.copy_(x[..., -self.padding :])
        return self.conv(x)  # unpadded: F.conv1d


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
        y = self.convtr(x)  # [B, C_out, T * stride + overlap]: F.conv_transpose1d
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
