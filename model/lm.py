"""Moshi's language model: the Helium temporal transformer and the depth transformer.

Per frame, the temporal transformer reads 1 + n_q tokens (text, Moshi's dep_q codebooks, the user's
codebooks), each embedded and summed, and runs one causal step (ring KV cache of `context` steps).
Its normed output gives the text logits (and, for speech-to-text, which has no depth transformer
(dep_q = 0), the voice-activity heads' logits). The depth transformer then generates Moshi's dep_q audio
codebooks one after another: step k sees the temporal output through its own input projection,
plus the embedding of the token chosen just before (the text token for k = 0, codebook k - 1
after), and its output through head k gives codebook k's logits.

Names follow Kyutai's checkpoints (`emb.3.weight`, `depformer.layers.0.gating.5.linear_in.weight`).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import LMConfig
from .transformer import LayerSpec, RMSNorm, Transformer


class Embedding(nn.Embedding):
    """A token embedding where token -1 (an absent input) embeds to an exact zero vector."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y = super().forward(tokens.clamp(min=0))
        return y.masked_fill((tokens < 0).unsqueeze(-1), 0.0)


class LM(nn.Module):
    def __init__(self, cfg: LMConfig | None = None):
        super().__init__()
        cfg = cfg or LMConfig()
        self.cfg = cfg
        # The extra row of each table (index card / text_card) is the "initial" token.
        self.emb = nn.ModuleList(Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q))
        self.text_emb = Embedding(cfg.text_card + 1, cfg.dim)
        temporal = LayerSpec(
            cfg.dim,
            cfg.num_heads,
            cfg.dim_feedforward,
            norm="rms_norm_f32",
            gating="silu",
            layer_scale=None,
            context=cfg.context,
            rope_max_period=cfg.max_period,
        )
        self.transformer = Transformer(temporal, cfg.num_layers)
        self.out_norm = RMSNorm(cfg.dim)
        self.text_linear = nn.Linear(cfg.dim, cfg.text_card, bias=False)

        # Speech-to-text's voice-activity heads (none for Moshi): softmax(head(hidden)).
        self.extra_heads = nn.ModuleList(
            nn.Linear(cfg.dim, cfg.extra_heads_dim, bias=False)
            for _ in range(cfg.extra_heads_num_heads)
        )
        if cfg.dep_q == 0:  # speech-to-text: no depth transformer
            return
        num_in = cfg.dep_q if cfg.depformer_multi_linear else 1
        self.depformer_in = nn.ModuleList(
            nn.Linear(cfg.dim, cfg.depformer_dim, bias=False) for _ in range(num_in)
        )
        self.depformer_text_emb = Embedding(cfg.text_card + 1, cfg.depformer_dim)
        self.depformer_emb = nn.ModuleList(
            Embedding(cfg.card + 1, cfg.depformer_dim) for _ in range(cfg.dep_q - 1)
        )
        # No positional embedding, and a cache that spans one frame (one slot per step).
        depth = LayerSpec(
            cfg.depformer_dim,
            cfg.depformer_num_heads,
            cfg.depformer_dim_feedforward,
            norm="rms_norm_f32",
            gating="silu",
            layer_scale=None,
            context=None,
            rope_max_period=None,
            num_steps=cfg.dep_q,
        )
        self.depformer = Transformer(depth, cfg.depformer_num_layers)
        self.linears = nn.ModuleList(
            nn.Linear(cfg.depformer_dim, cfg.card, bias=False) for _ in range(cfg.dep_q)
        )

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (linears may hold int8 weights; embeddings never do)."""
        return self.text_emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.text_linear.weight.device

    def forward_temporal(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, 1 + n_q, T] -> hidden [B, T, dim], text logits [B, T, text_card]."""
        x = self.emb[0](tokens[:, 1])
        for k in range(1, self.cfg.n_q):
            x = x + self.emb[k](tokens[:, k + 1])
        x = x + self.text_emb(tokens[:, 0])
        hidden = self.out_norm(self.transformer(x))
        return hidden, self.text_linear(hidden)

    def forward_depth(
        self, step: int, previous: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        """One depth step for codebook `step`: previous token [B, 1], hidden [B, 1, dim]
        -> logits [B, 1, card]. Runs inside streaming; step 0 starts the frame."""
        project = self.depformer_in[step if self.cfg.depformer_multi_linear else 0]
        embed = self.depformer_text_emb if step == 0 else self.depformer_emb[step - 1]
        x = project(hidden) + embed(previous)
        return self.linears[step](self.depformer(x, step))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
