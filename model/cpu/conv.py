"""The CPU forms of the convs: the same convs as `model.conv`'s, each by the kernel fastest for
its shape on the CPU, fp32.

How a conv runs here, by shape (2 cores, fp32, Mimi's shapes):
- Few frames (up to READ_FRAMES out, or in for a transposed conv): reading the weight is most of
  the work, and a product reads it fastest, weights [C_out, C_in K] @ the input unfolded into
  columns [C_in K, frames] (`model.cpu.products`: our kernel for one or two frames where it is
  built, MKL's otherwise). Kernel 1 is that product at any length.
- More frames: oneDNN's kernel on a weight reordered once into oneDNN's blocked layout and kept
  (`model.cpu.private.convolve`). Alone, Mimi's 256 -> 512 conv on 16 frames out takes 0.28 ms kept,
  0.38 as a product, 1.0 through PyTorch; its 512 -> 256 transposed conv on 16 frames in 0.30,
  0.50 and 0.98.
- Without oneDNN (a PyTorch build that lacks it, or an ARM one), up to FEW_FRAMES take the
  product and the rest PyTorch's conv.
oneDNN reads and writes activations time-major ([B, T, C] in memory, seen as [B, C, T]), so where
it runs a streaming conv keeps its input tail that way (`StreamingConv1d`), pads in that layout,
and a kernel-1 conv answers in the layout it was given: from one conv to the next nothing is
transposed, the ELUs and residual sums between them run on either layout alike, and the output
is the same bit for bit. (Converting to and from PyTorch's layout around each oneDNN conv cost
1-2 ms a frame.)

Each form holds the Parameters of the module it replaces, under the same names, and keeps its own
copies of them in other layouts (wide blocks, oneDNN's reorders); a transposed conv that streams
few frames holds its weight [C_out K, C_in] in memory, as its product reads it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import conv as plain
from .private import convolve, onednn_on
from .products import KeepsCopies, cpu_fp32, no_grad_wanted, weight_times, wide_blocks

READ_FRAMES = 4
FEW_FRAMES = 32


def _kernel(frames: int) -> str:
    """Which kernel runs a dense conv (above): "product", or "conv" (oneDNN's, or PyTorch's where
    it is off). `frames` counts the output's frames (a transposed conv's: its input's)."""
    return "product" if frames <= (READ_FRAMES if onednn_on() else FEW_FRAMES) else "conv"


def _empty_like(cls: type[nn.Conv1d | nn.ConvTranspose1d], conv: nn.Module) -> nn.Module:
    """A `cls` with `conv`'s shape and geometry, its tensors on the meta device (to be given)."""
    assert conv.padding == (0,) and getattr(conv, "output_padding", (0,)) == (0,), "a stream's"
    with torch.device("meta"):
        return cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )


class Conv1d(KeepsCopies, nn.Conv1d):
    """nn.Conv1d without padding (a streaming conv pads its input itself), by the kernel fastest
    for the input's shape (above)."""

    @classmethod
    def of(cls, conv: nn.Conv1d) -> Conv1d:
        """The CPU form of `conv`, holding its weight and bias."""
        fast = _empty_like(cls, conv)
        fast.weight, fast.bias = conv.weight, conv.bias
        fast.remake_copies()
        return fast

    def remake_copies(self) -> None:
        self.blocks = wide_blocks(self.weight)  # a wide weight read in column blocks
        self.reordered: dict[tuple[int, ...], torch.Tensor] = {}  # oneDNN's, by input shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight  # [C_out, C_in / groups, K]
        if self.groups != 1 or not cpu_fp32(x) or not no_grad_wanted(x, w):
            return super().forward(x)
        C_out, _, K = w.shape
        (S,), (D,) = self.stride, self.dilation
        frames = (x.shape[-1] - D * (K - 1) - 1) // S + 1
        pointwise = K == 1 and S == 1
        if pointwise and frames > READ_FRAMES:  # a plain product, answered in x's layout
            if x.stride(1) == 1:  # time-major (oneDNN's output): [B, T, C_in] @ W^T
                y = (x.mT @ w.view(C_out, -1).t()).mT
            else:
                y = weight_times(w.view(C_out, -1), x)
            return y if self.bias is None else y + self.bias[:, None]
        if not pointwise and _kernel(frames) == "conv":
            return convolve(x, self, self.reordered)
        B, C, _ = x.shape
        cols = x.unfold(-1, D * (K - 1) + 1, S)[..., ::D]  # [B, C_in, frames, K]
        cols = cols.permute(0, 2, 1, 3).reshape(B, frames, C * K)  # a copy unless K = 1
        if frames <= READ_FRAMES:
            cols = cols.contiguous()  # frame-major, the layout a product of few columns wants
        y = weight_times(w.reshape(C_out, C * K), cols.transpose(1, 2), self.blocks)
        return y if self.bias is None else y + self.bias[:, None]  # [B, C_out, frames]


class ConvTranspose1d(KeepsCopies, nn.ConvTranspose1d):
    """nn.ConvTranspose1d without padding, by the kernel fastest for the input's shape (above).
    The product with few frames in is followed by an overlap-add (`F.fold`); it reads a dense
    weight fastest laid out [C_out K, C_in] in memory (`of(..., step_layout=True)`), and either
    layout computes the same sums."""

    @classmethod
    def of(cls, convtr: nn.ConvTranspose1d, step_layout: bool = False) -> ConvTranspose1d:
        """The CPU form of `convtr`, holding its bias and its weight, or with `step_layout` (for a
        dense one) a copy of the weight laid out [C_out K, C_in] in memory, under the same name
        and [C_in, C_out, K] shape: state dicts are unchanged."""
        fast = _empty_like(cls, convtr)
        weight = convtr.weight
        if step_layout and convtr.groups == 1:
            C, out, K = weight.shape
            stored = weight.detach().reshape(C, out * K).t().contiguous()  # [C_out K, C_in]
            weight = nn.Parameter(stored.t().view(C, out, K), requires_grad=weight.requires_grad)
        fast.weight, fast.bias = weight, convtr.bias
        fast.remake_copies()
        return fast

    def remake_copies(self) -> None:
        self.reordered: dict[tuple[int, ...], torch.Tensor] = {}  # oneDNN's, by input shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight  # [C_in, C_out / groups, K]
        B, C, T = x.shape
        _, out_per_group, K = w.shape
        S = self.stride[0]
        depthwise = self.groups == C and out_per_group == 1
        served = (self.groups == 1 or depthwise) and self.dilation == (1,)
        if not served or not cpu_fp32(x) or not no_grad_wanted(x, w):
            return super().forward(x)
        if not depthwise and _kernel(T) == "conv":
            return convolve(x, self, self.reordered)
        if depthwise:  # each channel its own kernel
            cols = (x[:, :, None, :] * w[:, 0, :, None]).reshape(B, C * K, T)
        else:
            w = w.reshape(C, out_per_group * K).t()  # [C_out K, C_in]
            if w.is_contiguous():  # laid out for steps: [C_out K, C_in] @ [C_in, T]
                cols = weight_times(w, x.transpose(1, 2).contiguous().transpose(1, 2))
            else:
                cols = (x.transpose(1, 2) @ w.t()).transpose(1, 2)
        y = F.fold(cols, (1, (T - 1) * S + K), (1, K), stride=(1, S))
        y = y.reshape(B, -1, (T - 1) * S + K)
        return y if self.bias is None else y + self.bias[:, None]


class _TimeMajorState(plain.ConvState):
    """A streaming conv's state with its input tail time-major: previous is [B, padding, C] in
    memory, seen as [B, C, padding], and the padded input comes out the same way."""

    def join(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.previous.mT, x.mT], dim=1).mT  # [B, P + T, C] in memory


class StreamingConv1d(plain.StreamingConv1d):
    """A streaming conv that keeps its input tail time-major where oneDNN runs (above); its inner
    conv is swapped for `Conv1d` with the rest of the model."""

    @classmethod
    def of(cls, streaming: plain.StreamingConv1d) -> StreamingConv1d:
        """The CPU form of `streaming`, holding its inner conv (not yet swapped)."""
        conv = streaming.conv.conv
        with torch.device("meta"):
            fast = cls(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size[0],
                streaming.stride,
                conv.dilation[0],
                conv.groups,
                conv.bias is not None,
                streaming.pad_mode,
            )
        fast.conv = streaming.conv
        return fast

    def init_state(self, batch_size: int) -> plain.ConvState:
        weight = self.conv.conv.weight
        if not (onednn_on() and cpu_fp32(weight)):
            return super().init_state(batch_size)
        previous = weight.new_zeros(batch_size, self.padding, self.conv.conv.in_channels).mT
        return _TimeMajorState(previous, self.pad_mode == "replicate")
