"""Loading Kyutai's released weights into our modules, strictly.

Kyutai's files use two layouts for attention, and both load:
- fused: `self_attn.in_proj_weight` [steps x 3 x dim, dim] and `self_attn.out_proj.weight`
  [steps x dim, dim], stacked step-major for the depth transformer (what the released files use);
- split: `self_attn.in_projs.{step}.weight` and `self_attn.out_projs.{step}.weight` (what the
  original holds in memory, and what its int8 export writes).
Older Mimi files name the codebook buffers `inited`, `cluster_size`, `embed_avg`/`embed_sum`.

A missing key, an unexpected key or a wrong shape is a `CheckpointError` naming the key with the
expected and found shapes. Files are safetensors only: nothing from the internet is unpickled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .config import CheckpointConfig, ConfigError, MimiConfig
from .lm import LM
from .mimi import Mimi


class CheckpointError(RuntimeError):
    """A weights file that is missing, unreadable, or does not fit the model."""


_FUSED_ATTENTION = {
    "in_proj_weight": "in_projs",
    "in_proj.weight": "in_projs",
    "out_proj.weight": "out_projs",
}
_LEGACY_CODEBOOK = {
    "inited": "_initialized",
    "cluster_size": "cluster_usage",
    "embed_avg": "embedding_sum",
    "embed_sum": "embedding_sum",
}
_MAX_LISTED = 8


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from e


def _split_fused(
    key: str, tensor: torch.Tensor, expected: dict[str, torch.Size], problems: list[str]
) -> dict[str, torch.Tensor]:
    prefix, leaf = key.rsplit("self_attn.", 1)
    target = f"{prefix}self_attn.{_FUSED_ATTENTION[leaf]}"
    pattern = re.compile(re.escape(target) + r"\.(\d+)\.weight$")
    steps = sorted(int(m.group(1)) for k in expected if (m := pattern.match(k)))
    if not steps:
        return {key: tensor}  # reported as unexpected
    step_shape = expected[f"{target}.0.weight"]
    fused_shape = torch.Size([len(steps) * step_shape[0], *step_shape[1:]])
    if tensor.shape != fused_shape:
        problems.append(f"{key}: expected shape {tuple(fused_shape)}, found {tuple(tensor.shape)}")
        return {}
    chunks = tensor.chunk(len(steps))  # step-major: rows [i x n, (i + 1) x n) are step i's
    return {f"{target}.{i}.weight": chunk for i, chunk in zip(steps, chunks)}


def adapt_state_dict(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Rename and split Kyutai's on-disk keys into `module`'s names, checking every key and shape."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    problems: list[str] = []
    adapted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if any(key.endswith("self_attn." + name) for name in _FUSED_ATTENTION):
            adapted.update(_split_fused(key, tensor, expected, problems))
        elif key.rsplit(".", 2)[-2:-1] == ["_codebook"] and leaf in _LEGACY_CODEBOOK:
            adapted[key[: -len(leaf)] + _LEGACY_CODEBOOK[leaf]] = tensor
        else:
            adapted[key] = tensor

    for key in sorted(set(expected) - set(adapted)):
        problems.append(f"{key}: missing (expected shape {tuple(expected[key])})")
    for key in sorted(set(adapted) - set(expected)):
        problems.append(f"{key}: unexpected key (shape {tuple(adapted[key].shape)})")
    for key in sorted(set(adapted) & set(expected)):
        if adapted[key].shape != expected[key]:
            problems.append(
                f"{key}: expected shape {tuple(expected[key])}, found {tuple(adapted[key].shape)}"
            )
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = (
            f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        raise CheckpointError(f"{len(problems)} problem(s) with the weights:\n  {listed}{more}")
    return adapted


def load_weights(
    module: nn.Module,
    source: str | Path | dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    assign: bool = False,
) -> None:
    """Load a safetensors file (or a state dict) into `module`, strictly.

    `dtype` casts floating tensors (the LM runs in bf16/fp16/fp32; Mimi stays fp32). With
    `assign`, the tensors become the parameters, so a model built on the meta device is
    materialised without a second copy in memory.
    """
    name = Path(source).name if isinstance(source, (str, Path)) else "the state dict"
    state = read_safetensors(source) if isinstance(source, (str, Path)) else dict(source)
    try:
        adapted = adapt_state_dict(state, module)
    except CheckpointError as e:
        raise CheckpointError(f"{name} does not fit the model: {e}") from None
    if dtype is not None:
        adapted = {k: v.to(dtype) if v.is_floating_point() else v for k, v in adapted.items()}
    module.load_state_dict(adapted, strict=True, assign=assign)


def fuse_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our split attention keys -> the fused, step-major layout of Kyutai's released files."""
    fused: dict[str, torch.Tensor] = {}
    groups: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, tensor in state.items():
        m = re.match(r"(.*self_attn\.)(in_projs|out_projs)\.(\d+)\.weight$", key)
        if m is None:
            fused[key] = tensor
        else:
            leaf = "in_proj_weight" if m.group(2) == "in_projs" else "out_proj.weight"
            groups.setdefault(m.group(1) + leaf, []).append((int(m.group(3)), tensor))
    for key, steps in groups.items():
        fused[key] = torch.cat([t for _, t in sorted(steps, key=lambda s: s[0])])
    return fused


# --- A model folder in Kyutai's layout -----------------------------------------------------------


@dataclass
class ModelFiles:
    """The files of one Moshi model, as a folder in Kyutai's layout names them."""

    folder: Path
    config: CheckpointConfig
    mimi_config: MimiConfig
    lm_weights: Path
    mimi_weights: Path
    tokenizer: Path


def _local_file(folder: Path, name: str) -> Path:
    if name.startswith("hf://"):
        raise CheckpointError(
            f"config.json in {folder} points to {name} in another Hugging Face repository; "
            "load the model by its repository id so that file can be fetched"
        )
    if name.startswith("file://"):
        return Path(name.removeprefix("file://"))
    return folder / name


def resolve_folder(folder: str | Path) -> ModelFiles:
    """Find a model's files in `folder`. config.json is optional: without it, Moshi 7B's
    configuration and Kyutai's default file names are assumed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    config_path = folder / "config.json"
    try:
        config = (
            CheckpointConfig.from_json(config_path) if config_path.is_file() else CheckpointConfig()
        )
    except (ConfigError, ValueError, TypeError) as e:  # JSON errors are ValueErrors
        raise CheckpointError(f"{config_path} cannot be used: {e}") from e
    files = {
        "LM weights": _local_file(folder, config.moshi_name),
        "Mimi weights": _local_file(folder, config.mimi_name),
        "text tokenizer": _local_file(folder, config.tokenizer_name),
    }
    mimi_config_path = None
    if config.mimi_config_name:
        mimi_config_path = files["Mimi config"] = _local_file(folder, config.mimi_config_name)
    missing = [f"{what} ({path.name})" for what, path in files.items() if not path.is_file()]
    if missing:
        raise CheckpointError(f"model folder {folder} is missing: {', '.join(missing)}")
    lm = config.lm
    num_codebooks = max(lm.dep_q, lm.n_q - lm.dep_q)
    try:
        mimi_config = (
            MimiConfig.from_json(mimi_config_path, num_codebooks)
            if mimi_config_path
            else MimiConfig(num_codebooks=num_codebooks)
        )
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{mimi_config_path} cannot be used: {e}") from e
    return ModelFiles(
        folder,
        config,
        mimi_config,
        files["LM weights"],
        files["Mimi weights"],
        files["text tokenizer"],
    )


def load_mimi(files: ModelFiles, device: str | torch.device = "cpu") -> Mimi:
    """Mimi in fp32 (as the original runs it), in eval mode, on `device`."""
    mimi = Mimi(files.mimi_config)
    load_weights(mimi, files.mimi_weights)
    return mimi.to(device).eval()


def load_lm(
    files: ModelFiles, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16
) -> LM:
    """The LM in `dtype` on `device`, built on the meta device so weights are held only once."""
    with torch.device("meta"):
        lm = LM(files.config.lm)
    state = read_safetensors(files.lm_weights)
    state = {k: v.to(device) for k, v in state.items()}
    load_weights(lm, state, dtype=dtype, assign=True)
    return lm.eval()
