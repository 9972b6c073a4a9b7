"""Loading Kyutai's released weights into our modules, strictly.

Kyutai's files use two layouts for attention, and both load:
- fused: `self_attn.in_proj_weight` [steps x 3 x dim, dim] and `self_attn.out_proj.weight`
  [steps x dim, dim], stacked step-major for the depth transformer (what the released files use);
- split: `self_attn.in_projs.{step}.weight` and `self_attn.out_projs.{step}.weight` (what the
  original holds in memory, and what its int8 export writes).
Older Mimi files name the codebook buffers `inited`, `cluster_size`, `embed_avg`/`embed_sum`.

Kyutai's q8 files (split layout) hold each linear weight as int8 with float32 per-row scales under
`<key>_scb` (see `model/quant.py`); they load into int8 linears, or dequantized into float ones.

A missing key, an unexpected key or a wrong shape is a `CheckpointError` naming the key with the
expected and found shapes, raised before any tensor is read. Then tensors are read one at a time,
each cast and moved to its device before the next is read, so the host holds the model at its run
dtype plus about one tensor (one tensor in all when the model goes to a GPU). Files are safetensors
only: nothing from the internet is unpickled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from . import hf_layout
from .config import PERSONAPLEX_MODEL_TYPE
from .files import SAFETENSORS_DTYPES, CheckpointError, ModelFiles, read_header
from .hf_config import is_index
from .hf_layout import ShardedWeights, WeightsReader
from .int4 import SCALES_SUFFIX as INT4_SCALES
from .int4 import Int4Linear, int4_linear_names, int4_linears
from .lm import LM
from .lora import LoraMerged
from .mimi import Mimi
from .quant import (
    SCALE_SUFFIX,
    dequantize_weight,
    int8_linear_names,
    quantize_linears,
    quantize_weight,
)

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
    """Every tensor of a safetensors file, in memory at once. Loading models streams instead."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from e


# --- Which on-disk tensor each of the module's tensors comes from ------------------------------


@dataclass(frozen=True)
class _Piece:
    """Chunk `index` of `count` equal row blocks of the on-disk tensor `key` (the whole tensor if
    count is 1; a fused attention key holds one block per depth step, step-major)."""

    key: str
    index: int = 0
    count: int = 1

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.count == 1 else tensor.chunk(self.count)[self.index]


def _split_fused(
    key: str,
    shape: torch.Size,
    expected: dict[str, torch.Size],
    plan: dict[str, _Piece],
    found: dict[str, torch.Size],
    problems: list[str],
) -> None:
    prefix, leaf = key.rsplit("self_attn.", 1)
    target = f"{prefix}self_attn.{_FUSED_ATTENTION[leaf]}"
    pattern = re.compile(re.escape(target) + r"\.(\d+)\.weight$")
    steps = sorted(int(m.group(1)) for k in expected if (m := pattern.match(k)))
    if not steps:
        plan[key], found[key] = _Piece(key), shape  # reported as unexpected
        return
    step_shape = expected[f"{target}.0.weight"]
    fused_shape = torch.Size([len(steps) * step_shape[0], *step_shape[1:]])
    if shape != fused_shape:
        problems.append(f"{key}: expected shape {tuple(fused_shape)}, found {tuple(shape)}")
        return
    for i, step in enumerate(steps):  # step-major: rows [i x n, (i + 1) x n) are step i's
        name = f"{target}.{step}.weight"
        plan[name], found[name] = _Piece(key, i, len(steps)), step_shape


def _raise_problems(problems: list[str]) -> None:
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = (
            f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        raise CheckpointError(f"{len(problems)} problem(s) with the weights:\n  {listed}{more}")


def _plan(
    shapes: dict[str, torch.Size], expected: dict[str, torch.Size], problems: list[str]
) -> dict[str, _Piece]:
    """Map the module's names to on-disk keys (renaming and splitting Kyutai's), checking every
    key and shape; what does not fit is appended to `problems`."""
    plan: dict[str, _Piece] = {}
    found: dict[str, torch.Size] = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        if any(key.endswith("self_attn." + name) for name in _FUSED_ATTENTION):
            _split_fused(key, shape, expected, plan, found, problems)
            continue
        if key.rsplit(".", 2)[-2:-1] == ["_codebook"] and leaf in _LEGACY_CODEBOOK:
            name = key[: -len(leaf)] + _LEGACY_CODEBOOK[leaf]
        else:
            name = key
        plan[name], found[name] = _Piece(key), shape

    for key in sorted(set(expected) - set(found)):
        problems.append(f"{key}: missing (expected shape {tuple(expected[key])})")
    for key in sorted(set(found) - set(expected)):
        problems.append(f"{key}: unexpected key (shape {tuple(found[key])})")
    for key in sorted(set(found) & set(expected)):
        if found[key] != expected[key]:
            problems.append(
                f"{key}: expected shape {tuple(expected[key])}, found {tuple(found[key])}"
            )
    return plan


def adapt_state_dict(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Rename and split Kyutai's on-disk keys into `module`'s names, checking every key and shape."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    problems: list[str] = []
    plan = _plan({k: v.shape for k, v in state.items()}, expected, problems)
    _raise_problems(problems)
    return {name: piece.of(state[piece.key]) for name, piece in plan.items()}


# --- Loading, one tensor at a time ------------------------------------------------------------


def torch_dtype(code: str) -> torch.dtype | None:
    """The torch dtype of a safetensors dtype code ("BF16"), or None where torch has none."""
    name = SAFETENSORS_DTYPES.get(code, ("", 0))[0]
    dtype = getattr(torch, name, None) if name else None
    return dtype if isinstance(dtype, torch.dtype) else None


class _WeightsFile:
    """A safetensors file read one tensor at a time.

    The file is opened (memory-mapped) afresh for each read: a tensor read stays backed by the
    file's mapped pages until it is dropped, so the pages read count in the process's memory only
    while their tensor lives, not until the whole file is done.
    """

    def __init__(self, path: Path):
        self.path, self.name = path, path.name
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        self.header: dict[str, tuple[torch.Size, torch.dtype]] = {
            key: (torch.Size(info.shape), torch_dtype(info.dtype) or torch.uint8)
            for key, info in read_header(path).items()
        }

    def _open(self):
        try:
            return safe_open(str(self.path), framework="pt", device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{self.path.name} is not a readable safetensors file ({e})"
            ) from e

    def read(self, *keys: str) -> list[torch.Tensor]:
        try:
            with self._open() as f:
                return [f.get_tensor(key) for key in keys]
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{self.path.name} is not a readable safetensors file ({e})"
            ) from e


def open_weights(path: Path) -> WeightsReader:
    """A safetensors file, or the shards a model.safetensors.index.json names, read lazily."""
    if is_index(path):
        if not path.is_file():
            raise CheckpointError(f"weights index not found: {path}")
        sharded = ShardedWeights(path, _WeightsFile)
        sharded.name = path.name
        return sharded
    return _WeightsFile(path)


class _StateDict:
    """A state dict in memory, read like a file."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state
        self.header = {k: (v.shape, v.dtype) for k, v in state.items()}

    def read(self, *keys: str) -> list[torch.Tensor]:
        return [self.state[key] for key in keys]


def _load_plan(
    module: nn.Module, header: dict[str, tuple[torch.Size, torch.dtype]]
) -> tuple[dict[str, _Piece], set[str], dict[str, Int4Linear]]:
    """The plan for loading `header`'s tensors into `module`, and the names of its int8 weights.

    int8 weights come with float32 per-row scales under `<key>_scb` (Kyutai's q8 files), in
    either attention layout. They may load into an `Int8Linear` or, dequantized, into a float
    weight; a float weight may load into an `Int8Linear`, quantized.
    """
    int8 = {f"{name}.weight" for name in int8_linear_names(module)}
    int4 = {f"{name}.weight": m for name, m in int4_linear_names(module).items()}
    expected = {
        k: v.shape
        for k, v in module.state_dict().items()
        if not (k.endswith(SCALE_SUFFIX) and k.removesuffix(SCALE_SUFFIX) in int8)
        and not (k.endswith(INT4_SCALES) and k.removesuffix(INT4_SCALES) in int4)
    }
    for key, linear in int4.items():  # quantized from the float weight as it loads
        expected[key] = torch.Size((linear.out_features, linear.in_features))
    scales = {
        k for k in header if k.endswith(SCALE_SUFFIX) and k.removesuffix(SCALE_SUFFIX) in header
    }
    problems: list[str] = []
    for key, (shape, dtype) in header.items():
        scale = header.get(key + SCALE_SUFFIX)
        if dtype == torch.int8 and scale is None:
            problems.append(f"{key}{SCALE_SUFFIX}: missing (int8 weights need their scales)")
        elif key + SCALE_SUFFIX in scales:
            if dtype != torch.int8:
                problems.append(f"{key}: has scales but is {str(dtype).removeprefix('torch.')}")
            if tuple(scale[0]) != tuple(shape[:1]):
                problems.append(
                    f"{key}{SCALE_SUFFIX}: expected shape {tuple(shape[:1])}, "
                    f"found {tuple(scale[0])}"
                )
    shapes = {k: shape for k, (shape, _) in header.items() if k not in scales}
    plan = _plan(shapes, expected, problems)
    _raise_problems(problems)
    return plan, int8, int4


def _place(
    tensor: torch.Tensor, device: torch.device | None, dtype: torch.dtype | None, copy: bool
) -> torch.Tensor:
    """`tensor` on `device` in `dtype`, as a copy of its own if `copy`. A cast for another device
    happens there, after the transfer, so the host never holds more than the tensor as read."""
    if dtype is None or device is None or device.type == "cpu":
        return tensor.to(device=device, dtype=dtype, copy=copy)
    return tensor.to(device).to(dtype)


def _convert(
    name: str,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    *,
    int8: bool,
    dtype: torch.dtype | None,
    device: torch.device | None,
    copy: bool,
    int4: Int4Linear | None = None,
) -> dict[str, torch.Tensor]:
    """One of the module's tensors (two for an Int8Linear's or Int4Linear's weight), from what
    the file holds."""
    if int4 is not None:
        if scale is not None:
            weight = dequantize_weight(weight.to(device), scale.to(device))
        packed = int4.pack(weight.to(device))
        return {name: packed["weight"], name + INT4_SCALES: packed["weight_sz"]}
    if int8:
        if scale is None:  # a float weight, quantized here (on the target device: fast on a GPU)
            q, scb = quantize_weight(weight.to(device))
        else:
            q, scb = _place(weight, device, None, copy), _place(scale, device, torch.float32, copy)
        return {name: q, name + SCALE_SUFFIX: scb}
    if scale is not None:
        return {
            name: dequantize_weight(weight.to(device), scale.to(device), dtype or torch.float32)
        }
    return {name: _place(weight, device, dtype if weight.is_floating_point() else None, copy)}


def load_weights(
    module: nn.Module,
    source: str | Path | dict[str, torch.Tensor] | WeightsReader,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    assign: bool = False,
) -> None:
    """Load a safetensors file (or a state dict) into `module`, strictly, one tensor at a time.

    Every name and shape is checked against the file's header before any data is read. Then each
    tensor is read, moved to `device` and cast to `dtype` (floating tensors only: the LM runs in
    bf16/fp16/fp32; Mimi stays fp32), and the file closed again, so the host holds about one
    tensor beyond the module's own. With `assign`, those tensors become the parameters, so a model
    built on the meta device is materialised with its weights held once.

    int8 weights with their `_scb` scales (Kyutai's q8 files) load into `Int8Linear`s as they
    are, or dequantized into float weights; float weights load into `Int8Linear`s quantized.
    """
    device = torch.device(device) if device is not None else None
    if isinstance(source, (str, Path)):
        reader: WeightsReader = open_weights(Path(source))
        name = Path(source).name
    elif isinstance(source, dict):
        reader, name = _StateDict(dict(source)), "the state dict"
    else:
        reader, name = source, getattr(source, "name", "the weights")
    try:
        plan, int8, int4 = _load_plan(module, reader.header)
    except CheckpointError as e:
        raise CheckpointError(f"{name} does not fit the model: {e}") from None

    by_key: dict[str, list[tuple[str, _Piece]]] = {}
    for target, piece in plan.items():
        by_key.setdefault(piece.key, []).append((target, piece))
    copy = not isinstance(reader, _StateDict)  # never keep a file's mapped pages as parameters
    tensors: dict[str, torch.Tensor] = {}
    for key, targets in by_key.items():
        scale_key = key + SCALE_SUFFIX
        keys = (key, scale_key) if scale_key in reader.header else (key,)
        weight, *scale = reader.read(*keys)
        for target, piece in targets:
            tensors.update(
                _convert(
                    target,
                    piece.of(weight),
                    piece.of(scale[0]) if scale else None,
                    int8=target in int8,
                    dtype=dtype,
                    device=device,
                    copy=copy,
                    int4=int4.get(target),
                )
            )
        del weight, scale  # the file's pages for this tensor are released here
    module.load_state_dict(tensors, strict=True, assign=assign)


def fuse_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our split attention keys -> the fused, step-major layout of Kyutai's released files
    (int8 scales `..._scb` fuse alongside their weights, as the original's loader reads them)."""
    fused: dict[str, torch.Tensor] = {}
    groups: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, tensor in state.items():
        m = re.match(r"(.*self_attn\.)(in_projs|out_projs)\.(\d+)\.weight(_scb)?$", key)
        if m is None:
            fused[key] = tensor
        else:
            leaf = "in_proj_weight" if m.group(2) == "in_projs" else "out_proj.weight"
            groups.setdefault(m.group(1) + leaf + (m.group(4) or ""), []).append(
                (int(m.group(3)), tensor)
            )
    for key, steps in groups.items():
        fused[key] = torch.cat([t for _, t in sorted(steps, key=lambda s: s[0])])
    return fused


# --- A model folder in Kyutai's layout -----------------------------------------------------------


def load_mimi(files: ModelFiles, device: str | torch.device = "cpu") -> Mimi:
    """Mimi in fp32 (as the original runs it), in eval mode, on `device`. Its weights may be in
    Kyutai's layout or transformers' (alone, as kyutai/mimi, or in a Moshi checkpoint)."""
    mimi = Mimi(files.mimi_config).to(device)
    reader = open_weights(files.mimi_weights)
    prefix = hf_layout.mimi_prefix(reader.header)
    if prefix is not None:
        heads = files.mimi_config.transformer.num_heads
        reader = hf_layout.mimi_weights(reader, prefix, heads, mimi.state_dict())
        reader.name = f"Mimi's weights in {files.mimi_weights.name}"
    load_weights(mimi, reader)
    return mimi.eval()


def lm_reader(files: ModelFiles) -> WeightsReader:
    """The LM's tensors under Kyutai's names, whatever the layout on disk (Kyutai's, or
    transformers' mapped by `model.hf_layout`), read one at a time."""
    reader = open_weights(files.lm_weights)
    if hf_layout.is_transformers_lm(reader.header):
        lm = files.config.lm
        reader = hf_layout.lm_weights(reader, lm.num_heads, lm.dep_q)
        reader.name = files.lm_weights.name
    return reader


def load_lm(
    files: ModelFiles,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    quantize: bool | None = None,
    int4: bool = False,
) -> LM:
    """The LM on `device`, built on the meta device and filled tensor by tensor, so its weights
    are held once: peak host memory is about the model at `dtype` when loading to the CPU, and
    about one tensor when loading to a GPU.

    `dtype` is the run dtype of the floats (embeddings, norms, activations; float linears too).
    `int4`: the temporal and depth transformers' linears become group-wise int4 (`model.int4`),
    quantized as they load (a ValueError where the device has no int4 kernel).
    `quantize`: True gives int8 weight-only linears (`Int8Linear`), quantizing a float checkpoint
    while loading; False gives float linears, dequantizing a q8 checkpoint; None (the default)
    follows the checkpoint: int8 for a q8 one (config.json `"quantize": true`).
    A LoRA (`files.lora`) is merged into the weights as they are read (`model.lora`), before
    they are quantized or cast.
    """
    if quantize is None:
        quantize = files.config.quantize
    with torch.device("meta"):
        lm = LM(files.config.lm)
        if int4:  # the transformers' linears; the rest as `quantize` says
            int4_linears(lm, torch.device(device), dtype)
    if quantize:
        quantize_linears(lm, activation_dtype=dtype)
    reader = lm_reader(files)
    if (
        files.config.model_type == PERSONAPLEX_MODEL_TYPE
    ):  # slices 8..15 filled as NVIDIA's loader does
        from .persona import PersonaPlexWeights

        reader = PersonaPlexWeights(reader, lm)
    if files.lora is not None:  # merged into the weights as they are read (model.lora)
        reader = LoraMerged(reader, lm, files.lora, open_weights(files.lora.weights), device)
    load_weights(lm, reader, dtype=dtype, device=device, assign=True)
    return lm.eval()
