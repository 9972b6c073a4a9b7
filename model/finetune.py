"""What Kyutai's moshi-finetune writes, read without torch: LoRA adapters and full fine-tunes.

moshi-finetune (github.com/kyutai-labs/moshi-finetune, `finetune/checkpointing.py`) saves each
checkpoint as a folder `checkpoints/checkpoint_NNNNNN/consolidated/` holding:

- a LoRA run: `lora.safetensors`, only the adapters: for every linear of the LM, `<name>.lora_A.weight`
  [rank, in] and `<name>.lora_B.weight` [out, rank] under the original's in-memory names (split
  attention: `self_attn.in_projs.{step}`), plus whole embeddings when it trained them too
  (`ft_embed`). The adapted linear computes W x + scaling * B (A x). It loads on top of the base
  model it was trained from (`--lora` here, `--lora-weight` in Kyutai's server);
- a full fine-tune (or a LoRA run saved merged): `consolidated.safetensors`, every weight of the LM;
- and `config.json`: the base's config.json (or, for a repository without one such as
  kyutai/moshiko-pytorch-bf16, Kyutai's Moshi 7B keyword arguments) plus `"lora"`, `lora_rank` and
  `lora_scaling`. It names no Mimi and no tokenizer unless the base's config.json did: those come
  from the base repository.

Merging the adapters into the weights is `model.lora`'s; finding the files is `model.files`'.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import MIMI_NAME, TOKENIZER_NAME, CheckpointConfig, ConfigError, LMConfig

log = logging.getLogger(__name__)

LORA_NAME = "lora.safetensors"
CONSOLIDATED_NAME = "consolidated.safetensors"
# Kyutai's defaults where config.json does not say (moshi 0.2.13, loaders.get_moshi_lm).
DEFAULT_RANK = 128
DEFAULT_SCALING = 2.0
# The LM's sizes that shape its weights: a LoRA made for another value of one cannot fit.
_SHAPING = (
    "dim",
    "num_layers",
    "hidden_scale",
    "text_card",
    "card",
    "n_q",
    "dep_q",
    "depformer_dim",
    "depformer_dim_feedforward",
    "depformer_num_layers",
    "depformer_multi_linear",
)


@dataclass(frozen=True)
class LoraFiles:
    """A LoRA from moshi-finetune: its adapters and what its config.json says of them."""

    weights: Path  # lora.safetensors
    config: Path  # the config.json beside it
    rank: int
    scaling: float
    lm: LMConfig | None  # the base model it was trained on, where config.json describes it


def lora_settings(raw: Any, source: str) -> tuple[int, float, LMConfig | None]:
    """(rank, scaling, the base's LM config or None) from a LoRA's config.json (`raw`); errors
    begin with `source`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    if raw.get("lora") is not True:
        raise ConfigError(
            f'{source} does not describe a LoRA (moshi-finetune writes "lora": true beside '
            f"{LORA_NAME}; it has {raw.get('lora')!r})"
        )
    rank = raw.get("lora_rank", DEFAULT_RANK)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"{source}: lora_rank = {rank!r} must be a whole number of 1 or more")
    scaling = raw.get("lora_scaling", DEFAULT_SCALING)
    if (
        isinstance(scaling, bool)
        or not isinstance(scaling, (int, float))
        or not math.isfinite(scaling)
    ):
        raise ConfigError(f"{source}: lora_scaling = {scaling!r} must be a number")
    try:
        lm: LMConfig | None = CheckpointConfig.from_dict(dict(raw), source).lm
    except ConfigError:  # keys this app does not know: the adapters' shapes are checked anyway
        lm = None
    return rank, float(scaling), lm


def shape_differences(lora: LMConfig, base: LMConfig) -> list[str]:
    """The sizes that shape the weights and differ between the LM a LoRA was made for and the
    base model, as "name: LoRA's value, base's value"."""
    return [
        f"{name} {getattr(lora, name)!r} (the model has {getattr(base, name)!r})"
        for name in _SHAPING
        if getattr(lora, name) != getattr(base, name)
    ]


def finetune_config(folder: Path, config: CheckpointConfig, base_repo: str) -> CheckpointConfig:
    """`config` for a folder that moshi-finetune wrote, unchanged for any other folder.

    Its weights are consolidated.safetensors where the folder lacks the file config.json names
    (that name comes from the base's config, or is the default). The Mimi and tokenizer that
    config.json names by their default names, and the folder lacks, are the base repository's:
    `base_repo`'s (kyutai/moshiko-pytorch-bf16), said in one line of the log. Other names (and
    hf:// references) stay as they are.
    """
    if _has(folder, config.moshi_name) or not (folder / CONSOLIDATED_NAME).is_file():
        return config
    config = replace(config, moshi_name=CONSOLIDATED_NAME)
    taken = {}
    for key, default, what in (
        ("mimi_name", MIMI_NAME, "Mimi"),
        ("tokenizer_name", TOKENIZER_NAME, "tokenizer"),
    ):
        if getattr(config, key) == default and not _has(folder, default):
            taken[key] = (f"hf://{base_repo}/{default}", what)
    if taken:
        config = replace(config, **{key: ref for key, (ref, _) in taken.items()})
        log.warning(
            "%s is a fine-tune without its %s: using %s's (to use another base's, name its files "
            "in config.json as hf://owner/repo/file)",
            folder,
            " and ".join(what for _, what in taken.values()),
            base_repo,
        )
    return config


def _has(folder: Path, name: str) -> bool:
    return "://" not in name and (folder / name).is_file()
