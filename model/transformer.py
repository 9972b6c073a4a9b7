"""Transformer blocks shared by Mimi and the LM: norms, RoPE, attention over a KV cache, feed-forward.

Mimi's two transformers: LayerNorm, layer scale, plain GELU feed-forward, RoPE, context 250 steps.
Helium (the temporal transformer): RMSNorm in fp32, gated SiLU feed-forward, RoPE, context 3000.
The depth transformer: like Helium but no positional embedding, and separate attention projections
and feed-forward weights for each of its steps (one step per codebook); its cache spans one frame.

Parameter names follow Kyutai's in-memory names (``self_attn.in_projs.0.weight``, ``norm1.alpha``,
``gating.linear_in.weight``, ...) so checkpoints load by name (see ``model/checkpoint.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .streaming import State, StreamingModule


class RMSNorm(nn.Module):
    """y = x * alpha / sqrt(mean(x^2) + eps), computed in fp32 and cast back. The gain is `alpha`."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        var = self.eps + x32.pow(2).mean(dim=-1, keepdim=True)
        return (x32 * (self.alpha.float() * torch.rsqrt(var))).to(x.dtype)


class LayerScale(nn.Module):
    """A learnt per-channel scale on a residual branch."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=1e-5)
    if kind == "rms_norm_f32":
        return RMSNorm(dim, eps=1e-8)
    raise ValueError(f"unsupported norm {kind!r} (expected 'layer_norm' or 'rms_norm_f32')")


def rope_rotation(
    positions: torch.Tensor, head_dim: int, max_period: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary embedding at `positions` [T], as two [T, head_dim] factors in fp32, laid out
    like the pairs they turn: pair i (elements 2i, 2i+1) turns by the angle
    position * max_period^(-2i / head_dim), so the cosines are (cos, cos) and the sines (-sin, sin)."""
    pair = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(pair * (-math.log(max_period) * 2 / head_dim))
    angles = positions.float()[:, None] * freqs  # [T, D/2]
    cos, sin = angles.cos(), angles.sin()
    return cos.repeat_interleave(2, -1), torch.stack([-sin, sin], -1).flatten(-2)


def apply_rope(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding, interleaved layout: elements (2i, 2i+1) of each head are the real and
    imaginary parts of pair i, rotated in fp32. x: [..., T, D], e.g. queries and keys together
    as [2, B, H, T, D].

    (real, imag) -> (real cos - imag sin, imag cos + real sin), written as x * (cos, cos) +
    (imag, real) * (-sin, sin): the same products and sums, bit for bit, in half the kernels.
    The result is contiguous, [..., T, D] in memory, as attention reads it fastest."""
    cos, sin = rotation
    x32 = x.float().contiguous()  # a projection's output is strided; flip reads this faster
    swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (imag, real) of each pair
    return (x32 * cos + swapped * sin).to(x.dtype)


class RingKVCache(State):
    """Keys and values of the last `capacity` steps, written round a ring.

    Every slot knows the absolute position of the step it holds (-1 if never written), so attention
    masks by position and a conversation longer than the capacity slides instead of failing.
    """

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        capacity: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        shape = (batch_size, num_heads, capacity, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.end = torch.zeros(1, device=device, dtype=torch.long)  # steps written so far
        self.slots = torch.arange(capacity, device=device)
        self.capacity = capacity

    def reset(self) -> None:
        self.end.zero_()  # stale keys stay, but positions mark them unwritten

    def save(self) -> dict:
        """Only the slots written so far (a prompt's few hundred steps of a long ring)."""
        written = min(int(self.end), self.capacity)
        return {
            "keys": self.keys[:, :, :written].clone(),
            "values": self.values[:, :, :written].clone(),
            "end": self.end.clone(),
        }

    def restore(self, saved: dict) -> None:
        written = saved["keys"].shape[2]
        self.keys[:, :, :written] = saved["keys"]
        self.values[:, :, :written] = saved["values"]
        self.end.copy_(saved["end"])  # slots past `written` hold no position: masked

    def slot_positions(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the next T steps go: their slots [T], and the absolute position each slot
        [capacity] will hold once they are written (-1: never written)."""
        assert T <= self.capacity, f"{T} steps do not fit a cache of {self.capacity}"
        slots = (self.end + torch.arange(T, device=self.end.device)) % self.capacity
        last = self.end + (T - 1)
        positions = last - (last - self.slots) % self.capacity  # [capacity]
        return slots, torch.where(positions >= 0, positions, -1)

    def append(
        self, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write T new steps [B, H, T, D] at `slots` [T]; return all keys and values."""
        self.keys.index_copy_(2, slots, k)
        self.values.index_copy_(2, slots, v)
        self.end.add_(k.shape[2])
        return self.keys, self.values


class FrameKVCache(State):
    """The depth transformer's cache: one slot per step of a single frame, overwritten each frame."""

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        num_steps: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        shape = (batch_size, num_heads, num_steps, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)

    def reset(self) -> None:
        pass  # step k reads only slots 0..k, all written earlier in the same frame

    def append(
        self, k: torch.Tensor, v: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[:, :, step] = k[:, :, 0]
        self.values[:, :, step] = v[:, :, 0]
        return self.keys[:, :, : step + 1], self.values[:, :, : step + 1]


@dataclass
class Steps:
    """Where one call's new steps sit in the sequence, worked out once for all layers."""

    rotation: tuple[torch.Tensor, torch.Tensor] | None  # RoPE factors [T, head_dim]
    slots: torch.Tensor | None  # [T] ring-cache slots the new keys go to; None: one-shot
    mask: torch.Tensor  # [T, keys] which keys each new step attends to


class Attention(StreamingModule):
    """Causal multi-head self-attention, no biases.

    `context` limits how far back a query looks (and sizes the ring cache). With `num_steps` > 0
    (the depth transformer), step k of a frame uses its own projections `in_projs[k]`/`out_projs[k]`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        context: int | None,
        rope_max_period: float | None,
        num_steps: int = 0,
    ):
        super().__init__()
        assert dim % num_heads == 0
        self.dim, self.num_heads = dim, num_heads
        self.context = context
        self.rope_max_period = rope_max_period
        self.num_steps = num_steps
        n = max(num_steps, 1)
        self.in_projs = nn.ModuleList(nn.Linear(dim, 3 * dim, bias=False) for _ in range(n))
        self.out_projs = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n))

    def init_state(self, batch_size: int) -> State:
        proj = self.in_projs[0]
        device = proj.weight.device
        dtype = getattr(proj, "activation_dtype", proj.weight.dtype)  # int8: see model/quant.py
        head_dim = self.dim // self.num_heads
        if self.num_steps:
            return FrameKVCache(batch_size, self.num_heads, self.num_steps, head_dim, device, dtype)
        if self.context is None:
            raise RuntimeError("a streaming attention needs a context to size its cache")
        return RingKVCache(batch_size, self.num_heads, self.context, head_dim, device, dtype)

    def locate(self, T: int, device: torch.device) -> Steps | None:
        """Where a call's T new steps sit: the same for every layer of a transformer, whose
        caches advance together, so `Transformer` asks its first layer once per call. None for
        the depth transformer (no positions: its cache spans one frame)."""
        if self.num_steps:
            return None
        state = self.state
        if state is None:  # one-shot: the call is the whole sequence
            positions = torch.arange(T, device=device)
            slots, key_positions = None, positions
        else:
            assert isinstance(state, RingKVCache)
            positions = state.end + torch.arange(T, device=device)  # [T]
            slots, key_positions = state.slot_positions(T)
        delta = positions[:, None] - key_positions[None, :]  # [T, keys]
        mask = (key_positions >= 0) & (delta >= 0)
        if self.context is not None:
            mask = mask & (delta < self.context)
        rotation = None
        if self.rope_max_period is not None:
            rotation = rope_rotation(positions, self.dim // self.num_heads, self.rope_max_period)
        return Steps(rotation, slots, mask)

    def forward(
        self, x: torch.Tensor, step: int | None = None, steps: Steps | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape  # [B, T, dim]
        w = step if self.num_steps else 0
        qkv = self.in_projs[w](x).reshape(B, T, 3, self.num_heads, -1)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, T, head_dim]
        q, k, v = qkv[0], qkv[1], qkv[2]

        if self.num_steps:
            assert isinstance(self.state, FrameKVCache) and T == 1 and step is not None
            k, v = self.state.append(k, v, step)
            mask = None  # every slot written so far in this frame is in the past
        else:
            steps = steps or self.locate(T, x.device)
            assert steps is not None
            if steps.rotation is not None:
                q, k = apply_rope(qkv[:2], steps.rotation)  # both at once
            if steps.slots is not None:
                assert isinstance(self.state, RingKVCache)
                k, v = self.state.append(k, v, steps.slots)
            mask = steps.mask

        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_projs[w](out.transpose(1, 2).reshape(B, T, C))  # [B, T, dim]


class GatedFFN(nn.Module):
    """linear_out(silu(a) * b) where [a | b] = linear_in(x). Hidden size follows Kyutai's rule."""

    def __init__(self, dim: int, dim_feedforward: int):
        super().__init__()
        hidden = 21 * dim // 8 if dim_feedforward == 4 * dim else 2 * dim_feedforward // 3
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.linear_in(x).chunk(2, dim=-1)
        return self.linear_out(F.silu(gate) * up)


@dataclass(frozen=True)
class LayerSpec:
    """What one transformer layer is made of."""

    dim: int
    num_heads: int
    dim_feedforward: int
    norm: str  # "layer_norm" (Mimi) or "rms_norm_f32" (LM)
    gating: str  # "none": GELU feed-forward (Mimi); "silu": gated (LM)
    layer_scale: float | None  # initial LayerScale, None for none
    context: int | None  # steps a query looks back; None: the depth transformer's one frame
    rope_max_period: float | None  # None: no positional embedding
    num_steps: int = 0  # > 0: separate attention and feed-forward weights per depth step


class TransformerLayer(nn.Module):
    """Pre-norm layer: x += ls1 * attn(norm1(x)); x += ls2 * ffn(norm2(x))."""

    def __init__(self, spec: LayerSpec):
        super().__init__()
        dim, num_steps = spec.dim, spec.num_steps
        self.norm1 = make_norm(spec.norm, dim)
        self.self_attn = Attention(
            dim, spec.num_heads, spec.context, spec.rope_max_period, num_steps
        )
        self.norm2 = make_norm(spec.norm, dim)
        self.num_steps = num_steps
        if spec.gating == "none":  # Mimi: a plain GELU feed-forward, its linears on the layer
            assert not num_steps
            self.linear1 = nn.Linear(dim, spec.dim_feedforward, bias=False)
            self.linear2 = nn.Linear(spec.dim_feedforward, dim, bias=False)
        elif spec.gating == "silu":
            if num_steps:
                self.gating = nn.ModuleList(
                    GatedFFN(dim, spec.dim_feedforward) for _ in range(num_steps)
                )
            else:
                self.gating = GatedFFN(dim, spec.dim_feedforward)
        else:
            raise ValueError(f"unsupported gating {spec.gating!r} (expected 'none' or 'silu')")
        if spec.layer_scale is None:
            self.layer_scale_1, self.layer_scale_2 = nn.Identity(), nn.Identity()
        else:
            self.layer_scale_1 = LayerScale(dim, spec.layer_scale)
            self.layer_scale_2 = LayerScale(dim, spec.layer_scale)

    def feed_forward(self, x: torch.Tensor, step: int | None) -> torch.Tensor:
        if hasattr(self, "linear1"):
            return self.linear2(F.gelu(self.linear1(x)))
        if self.num_steps:
            return self.gating[step](x)
        return self.gating(x)

    def forward(
        self, x: torch.Tensor, step: int | None = None, steps: Steps | None = None
    ) -> torch.Tensor:
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), step, steps))
        return x + self.layer_scale_2(self.feed_forward(self.norm2(x), step))


class Transformer(nn.Module):
    """A stack of layers on [B, T, dim]. `step` selects per-step weights in the depth transformer."""

    def __init__(self, spec: LayerSpec, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(spec) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor:
        steps = self.layers[0].self_attn.locate(x.shape[1], x.device)
        for layer in self.layers:
            x = layer(x, step, steps)
        return x
