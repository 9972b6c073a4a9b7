"""A LoRA from Kyutai's moshi-finetune, merged into the LM's weights as they are read.

moshi-finetune trains two small matrices beside each linear of the LM, A [rank, in] and B [out,
rank]; the adapted linear computes W x + scaling * B (A x) (`model.finetune` says what it saves).
Kyutai's package (moshi 0.2.13, `get_moshi_lm(lora_weights=...)`, `modules/lora.py`) wraps every
linear in a LoRALinear and, as its server does by default, fuses each into one weight:
W' = W + scaling * (B @ A). So do we, but as the loader streams the base's tensors: `LoraMerged`
wraps the base's reader and hands out each adapted weight already merged, so the model runs
plain linears (no cost per frame) and memory holds the model once, plus the weight being merged.

The merge is in float32: W (an int8 weight of a q8 base is dequantized first) plus
scaling * (B @ A), each in float32, rounded once to the run dtype by the loader, or quantized
again to int8 where the model runs int8 linears. In float32 that is exactly the original's fused
weight. The original refuses a LoRA on a quantized model; here it merges before quantizing.

Adapters are named as the original holds its linears in memory (split attention:
`self_attn.in_projs.{step}.lora_A.weight`), or fused as its attention loader also reads them
(`self_attn.in_proj.lora_A.weight`, one block per depth step, step-major). Whole tensors that
moshi-finetune trained along (embeddings, with `ft_embed`) replace the base's, as the original's
`load_state_dict` does. Everything is checked before any tensor is read: a LoRA whose rank,
shapes or names do not fit the model is a `CheckpointError` that says which.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from torch import nn

from .files import CheckpointError
from .finetune import LoraFiles
from .quant import SCALE_SUFFIX, Int8Linear, dequantize_weight

log = logging.getLogger(__name__)

Header = dict[str, tuple[torch.Size, torch.dtype]]
_ADAPTER = re.compile(r"^(?P<linear>.+)\.lora_(?P<half>[AB])\.weight$")
_FUSED_ADAPTER = re.compile(r"^(?P<attention>.*self_attn)\.(?P<proj>in|out)_proj$")
_STEP = re.compile(r"^(?P<attention>.*self_attn)\.(?P<proj>in|out)_projs\.(?P<step>\d+)$")
_FUSED_WEIGHTS = {"in": ("in_proj_weight", "in_proj.weight"), "out": ("out_proj.weight",)}
_MAX_LISTED = 8


@dataclass(frozen=True)
class _Block:
    """Row block `index` of `count` of the tensor `key` (the whole tensor where count is 1)."""

    key: str
    index: int = 0
    count: int = 1

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.count == 1 else tensor.chunk(self.count)[self.index]


@dataclass(frozen=True)
class _Adapter:
    """One linear's adapter: A and B in the LoRA's file, and where its weight sits in the base's."""

    a: _Block
    b: _Block
    weight: _Block


class LoraMerged:
    """The base model's tensors (a reader: `header` {key: (shape, dtype)}, `read(*keys)`), with
    the LoRA merged into each weight it adapts. `lm` is the model they load into (on the meta
    device is enough): its linears say which weights a LoRA may adapt and their shapes.
    `adapters` reads the LoRA's file; merges run on `device`."""

    def __init__(
        self,
        base,
        lm: nn.Module,
        lora: LoraFiles,
        adapters,
        device: torch.device | str | None = None,
    ):
        self.base, self.adapters, self.lora = base, adapters, lora
        self.name = getattr(base, "name", "the weights")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.merges, self.replaced = _plan(base.header, lm, lora, adapters.header)
        self.header: Header = dict(base.header)
        for key in self.merges:
            self.header[key] = (base.header[key][0], torch.float32)
            self.header.pop(key + SCALE_SUFFIX, None)  # dequantized before the merge
        for key, source in self.replaced.items():
            self.header[key] = adapters.header[source]
            self.header.pop(key + SCALE_SUFFIX, None)  # a float tensor now
        log.info(
            "LoRA %s: rank %d, scaling %g, merged into %d weights%s",
            lora.weights,
            lora.rank,
            lora.scaling,
            sum(len(m) for m in self.merges.values()),
            f", {len(self.replaced)} replaced" if self.replaced else "",
        )

    def read(self, *keys: str) -> list[torch.Tensor]:
        plain = [k for k in keys if k not in self.merges and k not in self.replaced]
        found = dict(zip(plain, self.base.read(*plain), strict=True)) if plain else {}
        for key in keys:
            if key in self.replaced:
                found[key] = self.adapters.read(self.replaced[key])[0]
            elif key in self.merges:
                found[key] = self._merged(key)
        return [found[key] for key in keys]

    def _merged(self, key: str) -> torch.Tensor:
        """The base's weight `key` in float32 on the device, plus scaling * (B @ A) in the rows
        of each linear it holds (one, or one per depth step in the fused layout)."""
        scale_key = key + SCALE_SUFFIX
        if scale_key in self.base.header:  # int8 with its scales: a q8 base
            weight, scale = self.base.read(key, scale_key)
            weight = dequantize_weight(weight.to(self.device), scale.to(self.device))
        else:
            (weight,) = self.base.read(key)
            # to the device as read, then a float32 copy there: never the file's pages
            weight = weight.to(self.device).to(torch.float32, copy=True)
        for adapter in self.merges[key]:
            a = adapter.a.of(self.adapters.read(adapter.a.key)[0]).to(self.device, torch.float32)
            b = adapter.b.of(self.adapters.read(adapter.b.key)[0]).to(self.device, torch.float32)
            adapter.weight.of(weight).add_(self.lora.scaling * (b @ a))
        return weight


def _plan(
    base: Header, lm: nn.Module, lora: LoraFiles, adapters: Header
) -> tuple[dict[str, list[_Adapter]], dict[str, str]]:
    """({base key: the adapters merged into it}, {base key: the LoRA's key that replaces it}),
    checking every key of the LoRA against the model; what does not fit is one CheckpointError."""
    linears = {
        name: tuple(module.weight.shape)
        for name, module in lm.named_modules()
        if isinstance(module, (nn.Linear, Int8Linear))
    }
    tensors = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    halves: dict[str, dict[str, _Block]] = {}
    replaced: dict[str, str] = {}
    problems: list[str] = []
    for key, (shape, _) in adapters.items():
        m = _ADAPTER.match(key)
        if m is None:
            if key in tensors and key in base and tuple(shape) == tensors[key]:
                replaced[key] = key
            elif key in tensors:
                problems.append(f"{key}: expected shape {tensors[key]}, found {tuple(shape)}")
            else:
                problems.append(f"{key}: matches nothing in the model")
            continue
        linear, half = m["linear"], m["half"]
        fused = _FUSED_ADAPTER.match(linear)
        if linear in linears:
            halves.setdefault(linear, {})[half] = _Block(key)
        elif fused is not None and (steps := _steps(linears, fused["attention"], fused["proj"])):
            for i, step in enumerate(steps):
                halves.setdefault(step, {})[half] = _Block(key, i, len(steps))
        else:
            problems.append(f"{key}: matches no linear of the model")

    ranks = {
        adapters[pair["A"].key][0][0] // pair["A"].count for pair in halves.values() if "A" in pair
    }
    if len(ranks) == 1 and lora.rank not in ranks:
        raise CheckpointError(
            f"the LoRA {lora.weights} does not fit its config.json: its adapters have rank "
            f"{ranks.pop()}, and {lora.config} says lora_rank {lora.rank}"
        )
    merges: dict[str, list[_Adapter]] = {}
    for linear, pair in halves.items():
        if len(pair) < 2:
            block, lacking = next(iter(pair.values())), "B" if "A" in pair else "A"
            problems.append(f"{block.key}: its lora_{lacking} is missing")
            continue
        out, inp = linears[linear]
        a, b = pair["A"], pair["B"]
        shapes_fit = True
        for block, expected in ((a, (lora.rank, inp)), (b, (out, lora.rank))):
            found = tuple(adapters[block.key][0])
            whole = (expected[0] * block.count, expected[1])
            if found != whole:
                shapes_fit = False
                problems.append(_shape_problem(block, found, whole, lora.rank, is_a=block is a))
        weight = _weight_block(base, linears, linear)
        if weight is None:
            problems.append(f"{linear}.weight: not in the model's weights")
        elif shapes_fit:
            merges.setdefault(weight.key, []).append(_Adapter(a, b, weight))
    if problems:
        listed = "\n  ".join(dict.fromkeys(problems[:_MAX_LISTED]))
        more = (
            f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        raise CheckpointError(
            f"the LoRA {lora.weights} does not fit the model (was it trained from another base "
            f"model?): {len(problems)} problem(s):\n  {listed}{more}"
        )
    return merges, replaced


def _steps(linears: dict[str, tuple[int, ...]], attention: str, proj: str) -> list[str]:
    """The per-step linears of a fused attention projection, in step order."""
    found = [
        (int(m["step"]), name)
        for name in linears
        if (m := _STEP.match(name)) and (m["attention"], m["proj"]) == (attention, proj)
    ]
    return [name for _, name in sorted(found)]


def _weight_block(base: Header, linears: dict[str, tuple[int, ...]], linear: str) -> _Block | None:
    """Where the weight of `linear` sits in the base's tensors: its own key (split layout), or
    its step's rows of the fused attention key (step-major, as Kyutai's released files)."""
    if f"{linear}.weight" in base:
        return _Block(f"{linear}.weight")
    m = _STEP.match(linear)
    if m is None:
        return None
    steps = _steps(linears, m["attention"], m["proj"])
    for leaf in _FUSED_WEIGHTS[m["proj"]]:
        key = f"{m['attention']}.{leaf}"
        if key in base:
            return _Block(key, steps.index(linear), len(steps))
    return None


def _shape_problem(
    block: _Block, found: tuple[int, ...], expected: tuple[int, int], rank: int, is_a: bool
) -> str:
    """What is wrong with the shape of A [rank, in] or B [out, rank]: the rank, where only the
    rank differs."""
    text = f"{block.key}: expected shape {expected}, found {found}"
    if len(found) == 2:
        if is_a:
            found_rank, other_fits = found[0] // block.count, found[1] == expected[1]
        else:
            found_rank, other_fits = found[1], found[0] == expected[0]
        if other_fits and found_rank != rank:
            text += f": rank {found_rank}, where config.json says lora_rank {rank}"
    return text
