"""The transformers format's tensors, read as Kyutai's (what `model.checkpoint` loads).

transformers' converters (`convert_moshi_transformers.py`, `convert_mimi_checkpoint_to_pytorch.py`)
rename Kyutai's tensors and reshape some; this module undoes that, one tensor at a time, as the
loader asks for it, so nothing beyond the tensor being read is held twice:

- names: `decoder.model.layers.{i}` is `transformer.layers.{i}`, `depth_decoder` the depformer,
  `embed_tokens` the embeddings, `mlp.fc1`/`fc2` the gating's linears, `input_layernorm` and
  `post_attention_layernorm` norm1 and norm2 (a vector where Kyutai keeps [1, 1, dim]), and Mimi
  sits under `audio_encoder.` with its own names (`model.hf_config` has the configs);
- attention: q, k and v are separate; Kyutai's fused in-projection is their concatenation. In
  the temporal transformer and in Mimi's, transformers permuted the rows of q and k from
  Kyutai's interleaved rotary pairs (0, 1), (2, 3), ... to the rotate-half layout (0, d/2), ...;
  the depth transformer has no rotary embedding and is not permuted;
- the depth transformer's per-codebook weights are stacked: [codebooks, out, in] for q/k/v/o,
  the MLPs, the input projections and the heads, where Kyutai has one tensor per codebook.

A checkpoint may be sharded (model-0000i-of-0000n.safetensors with model.safetensors.index.json).
Mimi files saved by transformers 4.x and 5.x name the SEANet stacks alike on disk
(`encoder.layers`); the in-memory names of 5.x (`encoder.encoder_seanet.layers`, ...) are read too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .files import CheckpointError, shard_names
from .hf_config import MIMI_PREFIX

Header = dict[str, tuple[torch.Size, torch.dtype]]


class WeightsReader(Protocol):
    """Tensors by name: the header (shape and dtype of each) first, data only when read."""

    header: Header

    def read(self, *keys: str) -> list[torch.Tensor]: ...


class ShardedWeights:
    """The shards named by a model.safetensors.index.json, read as one file."""

    def __init__(self, index: Path, open_file: Callable[[Path], WeightsReader]):
        self.files = [open_file(index.parent / name) for name in shard_names(index)]
        self.header: Header = {}
        self._file_of: dict[str, WeightsReader] = {}
        for file in self.files:
            for key, entry in file.header.items():
                if key in self.header:
                    raise CheckpointError(f"{index.name}: tensor {key} is in two shards")
                self.header[key] = entry
                self._file_of[key] = file

    def read(self, *keys: str) -> list[torch.Tensor]:
        return [self._file_of[key].read(key)[0] for key in keys]


# --- Mapped readers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    """A tensor made from `sources` of another reader by `make` (None: the one source as is)."""

    sources: tuple[str, ...]
    shape: torch.Size
    make: Callable[..., torch.Tensor] | None = None


class MappedWeights:
    """A reader with Kyutai's names (split attention layout), made from another layout's tensors.
    The source keys nobody maps are kept under their own names, so the loader reports them as
    unexpected."""

    def __init__(
        self,
        source: WeightsReader,
        recipes: dict[str, _Recipe],
        ignore: Callable[[str], bool] = lambda key: False,
    ):
        self.source, self.recipes = source, dict(recipes)
        used = {key for recipe in self.recipes.values() for key in recipe.sources}
        for key, (shape, _) in source.header.items():
            if key not in used and key not in self.recipes and not ignore(key):
                self.recipes[key] = _Recipe((key,), shape)
        self.header: Header = {
            name: (recipe.shape, source.header[recipe.sources[0]][1])
            for name, recipe in self.recipes.items()
        }

    def read(self, *keys: str) -> list[torch.Tensor]:
        out = []
        for key in keys:
            recipe = self.recipes[key]
            tensors = self.source.read(*recipe.sources)
            out.append(tensors[0] if recipe.make is None else recipe.make(*tensors))
        return out


def _from_rotate_half(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q or k [heads x head_dim, in] from transformers' rotate-half order back to
    Kyutai's interleaved pairs: within each head, row j of the first half and row j of the
    second half become rows 2j and 2j + 1."""
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


class _Mapping:
    """Recipes built against a source header, with the shapes checked as they are added."""

    def __init__(self, header: Header):
        self.header = header
        self.recipes: dict[str, _Recipe] = {}
        self.problems: list[str] = []

    def has(self, key: str) -> bool:
        return key in self.header

    def shape(self, key: str) -> torch.Size:
        return self.header[key][0]

    def missing(self, *keys: str) -> bool:
        """Whether any of `keys` is not in the header (each is listed as a problem)."""
        absent = [key for key in keys if key not in self.header]
        self.problems.extend(f"{key}: missing" for key in absent)
        return bool(absent)

    def rename(self, target: str, source: str, shape: Iterable[int] | None = None) -> None:
        """`source` as `target`, reshaped to `shape` (a view: norms [dim] -> [1, 1, dim])."""
        if self.missing(source):
            return
        if shape is None:
            self.recipes[target] = _Recipe((source,), self.shape(source))
            return
        shape = torch.Size(shape)
        if self.shape(source).numel() != shape.numel():
            self.problems.append(f"{source}: shape {tuple(self.shape(source))} is not a norm")
            return
        self.recipes[target] = _Recipe((source,), shape, lambda t: t.reshape(shape))

    def fuse_qkv(self, target: str, q: str, k: str, v: str, heads: int | None) -> None:
        """Kyutai's in-projection: q, k (back from rotate-half when `heads`) and v stacked."""
        if self.missing(q, k, v):
            return
        shapes = [self.shape(key) for key in (q, k, v)]
        if len({tuple(s) for s in shapes}) != 1 or len(shapes[0]) != 2:
            self.problems.append(f"{q}, {k}, {v}: shapes {[tuple(s) for s in shapes]} differ")
            return
        rows, cols = shapes[0]

        def make(wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor) -> torch.Tensor:
            if heads is not None:
                wq, wk = _from_rotate_half(wq, heads), _from_rotate_half(wk, heads)
            return torch.cat([wq, wk, wv])

        self.recipes[target] = _Recipe((q, k, v), torch.Size([3 * rows, cols]), make)

    def unstack(self, target: Callable[[int], str], source: str, count: int) -> None:
        """Slice i of the stacked [count, ...] `source` as `target(i)`."""
        if self.missing(source):
            return
        shape = self.shape(source)
        if len(shape) < 2 or shape[0] != count:
            self.problems.append(
                f"{source}: expected {count} stacked codebooks, found shape {tuple(shape)}"
            )
            return
        for i in range(count):
            self.recipes[target(i)] = _Recipe((source,), shape[1:], lambda t, i=i: t[i])

    def fuse_qkv_stacked(self, target: Callable[[int], str], q: str, k: str, v: str, count: int):
        """Per codebook i, Kyutai's in-projection from slice i of the stacked q, k and v."""
        if self.missing(q, k, v):
            return
        shapes = [self.shape(key) for key in (q, k, v)]
        if len({tuple(s) for s in shapes}) != 1 or len(shapes[0]) != 3 or shapes[0][0] != count:
            self.problems.append(
                f"{q}, {k}, {v}: expected [{count}, out, in] each, found "
                f"{[tuple(s) for s in shapes]}"
            )
            return
        _, rows, cols = shapes[0]
        for i in range(count):
            self.recipes[target(i)] = _Recipe(
                (q, k, v),
                torch.Size([3 * rows, cols]),
                lambda wq, wk, wv, i=i: torch.cat([wq[i], wk[i], wv[i]]),
            )

    def done(
        self, source: WeightsReader, what: str, ignore: Callable[[str], bool]
    ) -> MappedWeights:
        """The reader; source keys that `ignore` picks (another model's) are left out."""
        if self.problems:
            listed = "\n  ".join(self.problems[:8])
            raise CheckpointError(f"{what} in the transformers format does not fit:\n  {listed}")
        return MappedWeights(source, self.recipes, ignore)


# --- Moshi's LM --------------------------------------------------------------------------------

_LM_MARK = "decoder.model.embed_tokens.weight"


def is_transformers_lm(header: Header) -> bool:
    return _LM_MARK in header


def _proj(mapping: _Mapping, prefix: str, name: str) -> str:
    """The key of projection `name` (q_proj, ...) under `prefix`: with `.linear` (MoshiLinear
    wraps its weight so in transformers 5.x) or without."""
    wrapped = f"{prefix}.{name}.linear.weight"
    return wrapped if mapping.has(wrapped) else f"{prefix}.{name}.weight"


def lm_weights(source: WeightsReader, num_heads: int, dep_q: int) -> MappedWeights:
    """The LM's tensors of a transformers Moshi checkpoint under Kyutai's names. `num_heads`: the
    temporal transformer's heads (to undo the rotary permutation); `dep_q`: codebooks stacked in
    the depth decoder."""
    m = _Mapping(source.header)
    layer = re.compile(r"^(decoder\.model|depth_decoder)\.layers\.(\d+)\.")
    layers = sorted({(g.group(1), int(g.group(2))) for key in m.header if (g := layer.match(key))})
    for key in m.header:
        if (g := re.fullmatch(r"embed_tokens\.(\d+)\.weight", key)) is not None:
            m.rename(f"emb.{g.group(1)}.weight", key)
        elif (g := re.fullmatch(r"depth_decoder\.embed_tokens\.(\d+)\.weight", key)) is not None:
            m.rename(f"depformer_emb.{g.group(1)}.weight", key)
    for target, source_key in (
        ("text_emb.weight", "decoder.model.embed_tokens.weight"),
        ("text_linear.weight", "decoder.lm_head.weight"),
        ("depformer_text_emb.weight", "depth_decoder.text_embed_tokens.weight"),
    ):
        if m.has(source_key):
            m.rename(target, source_key)
    if m.has("decoder.model.norm.weight"):
        dim = m.shape("decoder.model.norm.weight")[-1]
        m.rename("out_norm.alpha", "decoder.model.norm.weight", (1, 1, dim))
    if m.has("depth_decoder.input_projections.weight"):
        m.unstack(
            lambda i: f"depformer_in.{i}.weight", "depth_decoder.input_projections.weight", dep_q
        )
    if m.has("depth_decoder.lm_heads.weight"):
        m.unstack(lambda i: f"linears.{i}.weight", "depth_decoder.lm_heads.weight", dep_q)

    for stack, i in layers:
        src = f"{stack}.layers.{i}"
        ours = f"{'transformer' if stack == 'decoder.model' else 'depformer'}.layers.{i}"
        for norm, target in (("input_layernorm", "norm1"), ("post_attention_layernorm", "norm2")):
            key = f"{src}.{norm}.weight"
            if m.has(key):
                m.rename(f"{ours}.{target}.alpha", key, (1, 1, m.shape(key)[-1]))
        q, k, v, o = (_proj(m, f"{src}.self_attn", f"{n}_proj") for n in "qkvo")
        fc1, fc2 = f"{src}.mlp.fc1.weight", f"{src}.mlp.fc2.weight"
        if stack == "decoder.model":
            m.fuse_qkv(f"{ours}.self_attn.in_projs.0.weight", q, k, v, num_heads)
            m.rename(f"{ours}.self_attn.out_projs.0.weight", o)
            m.rename(f"{ours}.gating.linear_in.weight", fc1)
            m.rename(f"{ours}.gating.linear_out.weight", fc2)
        else:
            attn = f"{ours}.self_attn"
            m.fuse_qkv_stacked(lambda c, a=attn: f"{a}.in_projs.{c}.weight", q, k, v, dep_q)
            m.unstack(lambda c, a=attn: f"{a}.out_projs.{c}.weight", o, dep_q)
            m.unstack(lambda c, p=ours: f"{p}.gating.{c}.linear_in.weight", fc1, dep_q)
            m.unstack(lambda c, p=ours: f"{p}.gating.{c}.linear_out.weight", fc2, dep_q)
    return m.done(source, "the LM", lambda key: key.startswith(MIMI_PREFIX))


# --- Mimi ----------------------------------------------------------------------------------------

# transformers 5.x's in-memory names -> the flat names its files (and 4.x) use.
_MIMI_IN_MEMORY = (
    (r"^encoder\.encoder_seanet\.layers\.", "encoder.layers."),
    (r"^encoder\.encoder_transformer\.", "encoder_transformer."),
    (r"^encoder\.downsample\.", "downsample."),
    (r"^decoder\.decoder_seanet\.layers\.", "decoder.layers."),
    (r"^decoder\.decoder_transformer\.", "decoder_transformer."),
    (r"^decoder\.upsample\.", "upsample."),
)
_MIMI_MARKS = ("quantizer.semantic_residual_vector_quantizer.", "encoder_transformer.layers.")
_CODEBOOK = {
    "initialized": "_initialized",
    "cluster_usage": "cluster_usage",
    "embed_sum": "embedding_sum",
}
_RVQ = {
    "semantic_residual_vector_quantizer": "rvq_first",
    "acoustic_residual_vector_quantizer": "rvq_rest",
}
_TRANSFORMER_LEAVES = {
    "mlp.fc1.weight": "linear1.weight",
    "mlp.fc2.weight": "linear2.weight",
    "input_layernorm.weight": "norm1.weight",
    "input_layernorm.bias": "norm1.bias",
    "post_attention_layernorm.weight": "norm2.weight",
    "post_attention_layernorm.bias": "norm2.bias",
    "self_attn_layer_scale.scale": "layer_scale_1.scale",
    "mlp_layer_scale.scale": "layer_scale_2.scale",
    "self_attn.o_proj.weight": "self_attn.out_projs.0.weight",
}


def mimi_prefix(header: Header) -> str | None:
    """Where a transformers Mimi's tensors start in `header` ("" for Mimi alone,
    "audio_encoder." inside a Moshi checkpoint), or None if it holds no such Mimi."""
    for prefix in (MIMI_PREFIX, ""):
        if any(key.startswith(prefix + mark) for key in header for mark in _MIMI_MARKS):
            return prefix
    return None


def mimi_weights(source: WeightsReader, prefix: str, num_heads: int, expected: Iterable[str]):
    """Mimi's tensors of a transformers checkpoint under Kyutai's names (the keys under `prefix`;
    others are left out). `expected`: our Mimi's keys, which tell a SEANet convolution from a
    transposed one (transformers names both `conv`)."""
    expected = set(expected)
    m = _Mapping(source.header)
    qkv: dict[str, dict[str, str]] = {}
    for key in m.header:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        for pattern, flat in _MIMI_IN_MEMORY:
            name = re.sub(pattern, flat, name)
        if (
            g := re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
        ) is not None:
            half, index, inner, leaf = g.groups()
            inner = inner.removesuffix(".conv")
            inner = f"{inner}." if inner != "conv" and inner else ""
            candidates = [
                f"{half}.model.{index}.{inner}{kind}.{kind}.{leaf}" for kind in ("conv", "convtr")
            ]
            m.rename(next((c for c in candidates if c in expected), candidates[0]), key)
        elif name in ("downsample.conv.weight", "upsample.conv.weight"):
            m.rename(
                "downsample.conv.conv.conv.weight"
                if name.startswith("down")
                else "upsample.convtr.convtr.convtr.weight",
                key,
            )
        elif (
            g := re.fullmatch(r"quantizer\.(\w+)\.(input_proj|output_proj)\.weight", name)
        ) and g.group(1) in _RVQ:
            m.rename(f"quantizer.{_RVQ[g.group(1)]}.{g.group(2)}.weight", key)
        elif (
            (g := re.fullmatch(r"quantizer\.(\w+)\.layers\.(\d+)\.codebook\.(\w+)", name))
            and g.group(1) in _RVQ
            and g.group(3) in _CODEBOOK
        ):
            rvq, i, leaf = g.groups()
            m.rename(f"quantizer.{_RVQ[rvq]}.vq.layers.{i}._codebook.{_CODEBOOK[leaf]}", key)
        elif (
            g := re.fullmatch(r"(encoder|decoder)_transformer\.layers\.(\d+)\.(.+)", name)
        ) is not None:
            half, i, leaf = g.groups()
            ours = f"{half}_transformer.transformer.layers.{i}"
            proj = re.fullmatch(r"self_attn\.([qkv])_proj\.weight", leaf)
            if proj is not None:
                qkv.setdefault(ours, {})[proj.group(1)] = key
            elif leaf in _TRANSFORMER_LEAVES:
                m.rename(f"{ours}.{_TRANSFORMER_LEAVES[leaf]}", key)
            else:
                m.rename(f"{prefix}{name}", key)  # reported as unexpected
        else:
            m.rename(f"{prefix}{name}", key)  # reported as unexpected
    for ours, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            m.problems.append(f"{ours}: q, k and v projections are not all there")
            continue
        m.fuse_qkv(
            f"{ours}.self_attn.in_projs.0.weight", parts["q"], parts["k"], parts["v"], num_heads
        )
    # The LM's tensors sit beside Mimi's in a Moshi checkpoint: not Mimi's.
    return m.done(source, "Mimi", lambda key: not key.startswith(prefix))
