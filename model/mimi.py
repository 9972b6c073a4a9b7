"""Mimi, Kyutai's streaming audio codec: 24 kHz audio <-> 8 codes per 80 ms frame.

encode:  audio [B, 1, 1920 n] -> SEANet encoder (x960, 25 Hz) -> transformer -> conv down (12.5 Hz)
         -> split residual VQ -> codes [B, K, n]
decode:  codes -> VQ lookup -> depthwise conv-transpose up (25 Hz) -> transformer
         -> SEANet decoder -> audio [B, 1, 1920 n]

One code path serves both modes. One-shot (not streaming): a whole signal in, its codes out (the end
zero-padded to a whole frame). Streaming (inside `model.streaming.streaming(mimi)`): exactly one or
more whole frames per call, every conv, conv-transpose and attention continuing from its state.
Submodule names mirror Kyutai's checkpoint keys so the released weights load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MimiConfig, SEANetConfig
from .conv import StreamingConv1d, StreamingConvTranspose1d
from .streaming import StreamingModule
from .transformer import LayerSpec, Transformer

# --- SEANet: the convolutional encoder and decoder ----------------------------------------------


class ResidualBlock(nn.Module):
    """x + conv1x1(ELU(conv_k(ELU(x)))), the hidden width dim / compress."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(alpha=1.0),
            StreamingConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(alpha=1.0),
            StreamingConv1d(hidden, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _residual_blocks(cfg: SEANetConfig, dim: int) -> list[nn.Module]:
    return [
        ResidualBlock(dim, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress)
        for j in range(cfg.n_residual_layers)
    ]


class SEANetEncoder(nn.Module):
    """[B, 1, T] -> [B, dimension, T / hop]: residual blocks and strided convs (kernel 2 x stride)."""

    def __init__(self, cfg: SEANetConfig):
        super().__init__()
        width = cfg.n_filters
        layers: list[nn.Module] = [StreamingConv1d(cfg.channels, width, cfg.kernel_size)]
        for ratio in reversed(cfg.ratios):
            layers += _residual_blocks(cfg, width)
            layers += [
                nn.ELU(alpha=1.0),
                StreamingConv1d(width, 2 * width, 2 * ratio, stride=ratio),
            ]
            width *= 2
        layers += [nn.ELU(alpha=1.0), StreamingConv1d(width, cfg.dimension, cfg.last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    """[B, dimension, T] -> [B, 1, T x hop], the encoder mirrored with transposed convs."""

    def __init__(self, cfg: SEANetConfig):
        super().__init__()
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [StreamingConv1d(cfg.dimension, width, cfg.kernel_size)]
        for ratio in cfg.ratios:
            layers += [
                nn.ELU(alpha=1.0),
                StreamingConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio),
            ]
            width //= 2
            layers += _residual_blocks(cfg, width)
        layers += [nn.ELU(alpha=1.0), StreamingConv1d(width, cfg.channels, cfg.last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- The transformers and the 25 Hz <-> 12.5 Hz resampling ---------------------------------------


class MimiTransformer(nn.Module):
    """The encoder/decoder transformer on [B, C, T] latents (at 25 Hz)."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        t = cfg.transformer
        spec = LayerSpec(
            t.d_model,
            t.num_heads,
            t.dim_feedforward,
            norm="layer_norm",
            gating="none",
            layer_scale=t.layer_scale,
            context=t.context,
            rope_max_period=t.max_period,
        )
        self.transformer = Transformer(spec, t.num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(x.transpose(1, 2)).transpose(1, 2)


class Downsample(nn.Module):
    """Learnt strided conv, kernel 2 x stride, no bias. Its causal padding replicates the first
    frame rather than zeros."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.conv = StreamingConv1d(
            dim, dim, 2 * stride, stride=stride, bias=False, pad_mode="replicate"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Learnt depthwise (groups = channels) transposed conv, kernel 2 x stride, no bias."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.convtr = StreamingConvTranspose1d(
            dim, dim, 2 * stride, stride=stride, groups=dim, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(x)


# --- The split residual vector quantizer ---------------------------------------------------------


class Codebook(nn.Module):
    """Centroids stored as running sums: centroid = embedding_sum / clamp(cluster_usage, 1e-5)."""

    def __init__(self, bins: int, dim: int):
        super().__init__()
        self.register_buffer("_initialized", torch.ones(1))
        self.register_buffer("cluster_usage", torch.ones(bins))
        self.register_buffer("embedding_sum", torch.zeros(bins, dim))
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _centroids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The centroids [bins, D], and [c, 1, |c|^2] for each centroid c [bins, D + 2]. The
        buffers never change at inference, so both are computed once."""
        if self._cache is None:
            usage = self.cluster_usage.clamp(min=1e-5)
            centroids = self.embedding_sum / usage[:, None]
            norms = centroids.pow(2).sum(-1, keepdim=True)
            self._cache = centroids, torch.cat([centroids, torch.ones_like(norms), norms], -1)
        return self._cache

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):
        self._cache = None
        return super()._apply(fn, recurse)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] -> nearest centroid index [N] (Euclidean).

        The distances are `torch.cdist`'s formula (|x - c|^2 as the product [-2x, |x|^2, 1] .
        [c, 1, |c|^2], clamped at 0, square-rooted), with the centroids' half of the product kept
        from call to call; the sums differ from cdist's in the last bits only.
        """
        norms = x.pow(2).sum(-1, keepdim=True)
        query = torch.cat([x.mul(-2), norms, torch.ones_like(norms)], -1)  # [N, D + 2]
        distances = self.centroids_times(query.t())  # [bins, N]
        return distances.clamp_min_(0).sqrt_().argmin(dim=0)

    def centroids_times(self, query: torch.Tensor) -> torch.Tensor:
        """The augmented centroids [bins, D + 2] @ query [D + 2, N] -> [bins, N]."""
        return torch.mm(self._centroids()[1], query)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self._centroids()[0])


class VQLayer(nn.Module):
    def __init__(self, bins: int, dim: int):
        super().__init__()
        self._codebook = Codebook(bins, dim)


class ResidualVQ(nn.Module):
    """Each level quantizes what the levels before it left over."""

    def __init__(self, num_levels: int, bins: int, dim: int):
        super().__init__()
        self.layers = nn.ModuleList(VQLayer(bins, dim) for _ in range(num_levels))

    def encode(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """[N, D] -> codes [n, N]."""
        codes = []
        for layer in self.layers[:n]:
            index = layer._codebook.encode(x)
            x = x - layer._codebook.decode(index)
            codes.append(index)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [n, N] -> sum of their centroids [N, D]."""
        out = self.layers[0]._codebook.decode(codes[0])
        for layer, index in zip(self.layers[1:], codes[1:]):
            out = out + layer._codebook.decode(index)
        return out


class ProjectedRVQ(nn.Module):
    """A residual VQ between 1x1 projections latent -> codebook dim -> latent."""

    def __init__(self, num_levels: int, bins: int, dim: int, latent_dim: int):
        super().__init__()
        self.input_proj = nn.Conv1d(latent_dim, dim, 1, bias=False)
        self.output_proj = nn.Conv1d(dim, latent_dim, 1, bias=False)
        self.vq = ResidualVQ(num_levels, bins, dim)

    def encode(self, latent: torch.Tensor, n: int) -> torch.Tensor:
        """[B, latent_dim, T] -> codes [B, n, T]."""
        B, _, T = latent.shape
        x = self.input_proj(latent).transpose(1, 2).reshape(B * T, -1)
        return self.vq.encode(x, n).view(n, B, T).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n, T] -> [B, latent_dim, T]."""
        B, n, T = codes.shape
        x = self.vq.decode(codes.transpose(0, 1).reshape(n, B * T))  # [B T, D]
        return self.output_proj(x.view(B, T, -1).transpose(1, 2))


class SplitRVQ(nn.Module):
    """One semantic codebook (`rvq_first`) beside a residual VQ of acoustic ones (`rvq_rest`); both
    quantize the same latent, each through its own projections. Decoding sums the two."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        q = cfg.quantizer
        self.n_semantic = q.n_q_semantic
        self.rvq_first = ProjectedRVQ(q.n_q_semantic, q.bins, q.dimension, q.input_dimension)
        self.rvq_rest = ProjectedRVQ(q.n_q - q.n_q_semantic, q.bins, q.dimension, q.input_dimension)
        self.num_codebooks = cfg.num_codebooks

    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        codes = self.rvq_first.encode(latent, self.n_semantic)
        if self.num_codebooks > self.n_semantic:
            rest = self.rvq_rest.encode(latent, self.num_codebooks - self.n_semantic)
            codes = torch.cat([codes, rest], dim=1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        latent = self.rvq_first.decode(codes[:, : self.n_semantic])
        if codes.shape[1] > self.n_semantic:
            latent = latent + self.rvq_rest.decode(codes[:, self.n_semantic :])
        return latent


# --- Mimi ----------------------------------------------------------------------------------------


class Mimi(nn.Module):
    def __init__(self, cfg: MimiConfig | None = None):
        super().__init__()
        cfg = cfg or MimiConfig()
        self.cfg = cfg
        stride = cfg.encoder_frame_rate / cfg.frame_rate
        assert stride == int(stride), f"encoder rate / frame rate = {stride} must be whole"
        self.encoder = SEANetEncoder(cfg.seanet)
        self.decoder = SEANetDecoder(cfg.seanet)
        self.encoder_transformer = MimiTransformer(cfg)
        self.decoder_transformer = MimiTransformer(cfg)
        self.downsample = Downsample(cfg.seanet.dimension, int(stride))
        self.upsample = Upsample(cfg.seanet.dimension, int(stride))
        self.quantizer = SplitRVQ(cfg)

    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    def set_num_codebooks(self, n: int) -> None:
        total = self.cfg.quantizer.n_q
        if not 1 <= n <= total:
            raise ValueError(f"Mimi has {total} codebooks; cannot use {n}")
        self.quantizer.num_codebooks = n

    def _is_streaming(self) -> bool:
        conv = self.encoder.model[0]
        assert isinstance(conv, StreamingModule)
        return conv.is_streaming

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 1, T] at 24 kHz -> codes [B, K, frames] (int64)."""
        assert audio.dim() == 3, f"expected [B, 1, T] audio, got {tuple(audio.shape)}"
        T = audio.shape[-1]
        if self._is_streaming():
            if T == 0 or T % self.frame_size:
                raise ValueError(
                    f"streaming encode takes whole frames of {self.frame_size} samples, got {T}"
                )
        else:
            audio = F.pad(audio, (0, -T % self.frame_size))
        latent = self.encoder_transformer(self.encoder(audio))
        return self.quantizer.encode(self.downsample(latent))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, frames] -> audio [B, 1, frames x 1920]."""
        assert codes.dim() == 3, f"expected [B, K, frames] codes, got {tuple(codes.shape)}"
        latent = self.upsample(self.quantizer.decode(codes))
        return self.decoder(self.decoder_transformer(latent))
