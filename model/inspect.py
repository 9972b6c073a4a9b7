"""Checking a model's files against its architecture without loading a single weight.

Only the safetensors headers are read (8 bytes of length, then a JSON table of every tensor's name,
dtype, shape and byte range), so a 15 GB checkpoint is checked in about a second. Names and shapes
are checked by the code that loads the weights, `adapt_state_dict`, fed with meta tensors built from
the header and a model built on the meta device: one source of truth, in either attention layout.
On top of that: the dtypes (LM floats in any float dtype, Mimi's in float32, int8 linear weights
with float32 per-row scales in a q8 checkpoint), whether each file is as long as its header says
(a truncated download), and the text tokenizer's vocabulary against the LM's `text_card`.

    inspect_model(files) -> ModelReport: checks (level + message), parameter counts, and
                            `memory_needed(dtype)`, what running the model at that dtype takes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import hf_layout
from .checkpoint import adapt_state_dict, torch_dtype
from .config import PERSONAPLEX_MODEL_TYPE, STT_MODEL_TYPE
from .files import (
    FAIL,
    OK,
    WARN,
    CheckpointError,
    ModelFiles,
    TensorInfo,
    dtype_name,
    format_bytes,
    read_header,
    shard_names,
)
from .hf_config import is_index
from .lm import LM
from .mimi import Mimi
from .text import TokenizerError, open_tokenizer
from .transformer import Attention
from .voices import voice_names

_MAX_LISTED = 8
_BIG_LM = 1_000_000_000  # parameters: above this, float32 weights and the CPU deserve a warning


@dataclass
class Check:
    """One line of a report: `level` is OK, WARN or FAIL; `message` may run over several lines."""

    level: str
    message: str


def meta_state(header: dict[str, TensorInfo]) -> dict[str, torch.Tensor]:
    """Tensors on the meta device with the header's shapes and dtypes: no memory, no data."""
    return {
        name: torch.empty(info.shape, dtype=torch_dtype(info.dtype) or torch.uint8, device="meta")
        for name, info in header.items()
    }


def linear_weight_names(module: nn.Module) -> set[str]:
    """The state-dict names of every nn.Linear weight: what a q8 checkpoint stores as int8."""
    return {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, nn.Linear)}


@dataclass
class MemoryEstimate:
    """Bytes that running the model at one dtype takes, batch 1."""

    lm_weights: int
    kv_cache: int
    mimi: int
    margin: int  # activations, allocator slack, the tokenizer, ...

    @property
    def total(self) -> int:
        return self.lm_weights + self.kv_cache + self.mimi + self.margin

    def describe(self) -> str:
        return (
            f"{format_bytes(self.total)} (LM weights {format_bytes(self.lm_weights)} + KV cache "
            f"{format_bytes(self.kv_cache)} + Mimi {format_bytes(self.mimi)} + margin {format_bytes(self.margin)})"
        )


@dataclass
class ModelReport:
    """What `inspect_model` found; `ok` unless a check failed."""

    checks: list[Check] = field(default_factory=list)
    lm_parameters: int = 0
    mimi_parameters: int = 0
    mimi_values: int = 0  # parameters plus the codebooks, which are buffers
    quantized: bool = False
    lm_linear_values: int = 0  # int8 in a q8 checkpoint
    lm_linear_rows: int = 0  # one float32 scale each in a q8 checkpoint
    lm_cache_values: int = 0  # keys and values of every attention's cache, batch 1
    mimi_cache_values: int = 0

    @property
    def ok(self) -> bool:
        return all(c.level != FAIL for c in self.checks)

    def add(self, level: str, message: str) -> None:
        self.checks.append(Check(level, message))

    def memory_needed(self, dtype: torch.dtype, int8: bool = False) -> MemoryEstimate:
        """Running at `dtype` (the LM's; Mimi stays float32), with int8 linears if the checkpoint
        is q8 or `int8` asks for them: weights, caches and a margin."""
        size = torch.empty((), dtype=dtype).element_size()
        if self.quantized or int8:
            others = self.lm_parameters - self.lm_linear_values
            weights = self.lm_linear_values + 4 * self.lm_linear_rows + others * size
        else:
            weights = self.lm_parameters * size
        kv_cache = self.lm_cache_values * size
        mimi = 4 * (self.mimi_values + self.mimi_cache_values)
        margin = max(256_000_000, (weights + kv_cache + mimi) // 10)
        return MemoryEstimate(weights, kv_cache, mimi, margin)


def inspect_model(files: ModelFiles) -> ModelReport:
    """Check every file of the model at `files` against the architecture its config describes."""
    report = ModelReport()
    cfg = files.config.lm
    report.quantized = _quantized(files)
    with torch.device("meta"):
        lm = LM(cfg)
        mimi = Mimi(files.mimi_config)
    report.lm_parameters = lm.parameter_count()
    report.mimi_parameters = sum(p.numel() for p in mimi.parameters())
    report.mimi_values = sum(t.numel() for t in mimi.state_dict().values())
    linears = linear_weight_names(lm)
    report.lm_linear_values = sum(lm.get_parameter(n).numel() for n in linears)
    report.lm_linear_rows = sum(lm.get_parameter(n).shape[0] for n in linears)
    report.lm_cache_values = _cache_values(lm)
    report.mimi_cache_values = _cache_values(mimi)

    report.add(OK, f"Model: {describe_model(files)}")
    report.add(
        OK,
        f"LM: {_count(report.lm_parameters)} parameters (dim {cfg.dim}, {cfg.num_layers} layers, "
        f"depth transformer {cfg.depformer_num_layers} layers, context {cfg.context} frames, "
        f"text vocabulary {cfg.text_card})",
    )
    _check_lm(report, files.lm_weights, lm, linears)
    report.add(
        OK,
        f"Mimi: {_count(report.mimi_parameters)} parameters "
        f"({_count(report.mimi_values)} values with the codebooks), "
        f"{files.mimi_config.num_codebooks} codebooks in use",
    )
    _check_mimi(report, files.mimi_weights, mimi)
    _check_tokenizer(report, files.tokenizer, cfg.text_card)
    return report


def _quantized(files: ModelFiles) -> bool:
    """Whether config.json says `"quantize": true` (a q8 checkpoint)."""
    for holder in (files.config, files.config.lm):
        value = getattr(holder, "quantize", None)
        if value is not None:
            return bool(value)
    return False


def _cache_values(module: nn.Module) -> int:
    """Keys and values that every attention of `module` caches while streaming, batch 1."""
    return sum(
        2 * m.dim * (m.num_steps or m.context or 0)
        for m in module.modules()
        if isinstance(m, Attention)
    )


def weights_header(path: Path) -> dict[str, TensorInfo]:
    """The tensor table of a weights file, or of every shard a model.safetensors.index.json
    names (headers only)."""
    if not is_index(path):
        return read_header(path)
    header: dict[str, TensorInfo] = {}
    for name in shard_names(path):
        header.update(read_header(path.parent / name))
    return header


def weights_size(path: Path) -> int:
    """Bytes on disk of a weights file, or of the shards an index names."""
    if not is_index(path):
        return path.stat().st_size
    return sum((path.parent / name).stat().st_size for name in shard_names(path))


def _read(report: ModelReport, what: str, path: Path) -> dict[str, TensorInfo] | None:
    try:
        return weights_header(path)
    except CheckpointError as e:
        report.add(FAIL, f"{what}: {e}")
        return None


class _Header:
    """A header read as the loader reads weights (model.hf_layout maps its names)."""

    def __init__(self, header: dict[str, TensorInfo]):
        self.header = {
            k: (torch.Size(v.shape), torch_dtype(v.dtype) or torch.uint8) for k, v in header.items()
        }


def _as_kyutai(header: dict[str, TensorInfo], module: nn.Module) -> dict[str, torch.Tensor]:
    """Meta tensors under Kyutai's names: the header's own, or mapped from the transformers
    format as loading maps them."""
    if isinstance(module, LM) and hf_layout.is_transformers_lm(header):
        mapped = hf_layout.lm_weights(_Header(header), module.cfg.num_heads, module.cfg.dep_q)
    elif isinstance(module, Mimi) and (prefix := hf_layout.mimi_prefix(header)) is not None:
        heads = module.cfg.transformer.num_heads
        mapped = hf_layout.mimi_weights(_Header(header), prefix, heads, module.state_dict())
    else:
        return meta_state(header)
    return {
        k: torch.empty(shape, dtype=dtype, device="meta")
        for k, (shape, dtype) in mapped.header.items()
    }


def _fit(report: ModelReport, what: str, header: dict[str, TensorInfo], module: nn.Module) -> bool:
    """Names and shapes, checked by the loader's own `adapt_state_dict` on meta tensors."""
    try:
        adapt_state_dict(_as_kyutai(header, module), module)
    except CheckpointError as e:
        report.add(FAIL, f"{what} do not fit the model: {e}")
        return False
    return True


def describe_model(files: ModelFiles) -> str:
    """Which member of the family and which on-disk format, from the config and the headers."""
    cfg = files.config.lm
    if files.config.model_type == PERSONAPLEX_MODEL_TYPE:
        voices = voice_names(files.folder)
        member = f"PersonaPlex (a voice and a persona; {len(voices)} packaged voices" + (
            f": {', '.join(voices)})" if voices else ", none on this machine yet)"
        )
        if cfg.dim != 4096:
            member += f" of dim {cfg.dim} and {cfg.num_layers} layers"
    elif files.config.model_type == STT_MODEL_TYPE:
        stt = files.config.stt
        member = (
            f"Kyutai speech-to-text of dim {cfg.dim} and {cfg.num_layers} layers (text "
            f"{stt.audio_delay_seconds:g} s behind the audio; `moshi-desktop transcribe`)"
        )
    elif (cfg.dim, cfg.num_layers, cfg.dep_q) == (4096, 32, 8):
        member = "Moshi 7B (Moshiko / Moshika architecture)"
    else:
        member = f"a Moshi of dim {cfg.dim} and {cfg.num_layers} layers"
    return f"{member}, {describe_format(files)}"


def describe_format(files: ModelFiles) -> str:
    """The on-disk format, read from the config and the headers only."""
    try:
        header = weights_header(files.lm_weights)
    except CheckpointError:
        header = {}
    if files.config.format == "transformers" or hf_layout.is_transformers_lm(header):
        shards = (
            f"{len(shard_names(files.lm_weights))} shards"
            if is_index(files.lm_weights)
            else "one file"
        )
        return f"transformers format ({shards}, tokenizer.json){_describe_lora(files)}"
    if any(k.endswith("in_proj_weight") or k.endswith("in_proj.weight") for k in header):
        keys = "fused attention keys"
    elif any(".in_projs." in k for k in header):
        keys = "split attention keys"
    else:
        keys = "attention keys not found"
    layout = f"Kyutai's layout ({keys}"
    if files.config.quantize:
        layout += ", q8: int8 linear weights"
    if files.lm_weights.name == "consolidated.safetensors":
        layout += ", a full fine-tune from moshi-finetune"
    try:
        mimi = read_header(files.mimi_weights) if not is_index(files.mimi_weights) else {}
    except CheckpointError:
        mimi = {}
    if any(k.endswith("._codebook.embed_sum") or k.endswith("._codebook.inited") for k in mimi):
        layout += "; Mimi with legacy codebook keys"
    elif hf_layout.mimi_prefix(mimi) is not None:
        layout += "; Mimi in the transformers format"
    return layout + ")" + _describe_lora(files)


def _describe_lora(files: ModelFiles) -> str:
    lora = files.lora
    if lora is None:
        return ""
    return (
        f", with a moshi-finetune LoRA of rank {lora.rank} (scaling {lora.scaling:g}) merged at "
        f"load from {lora.weights}"
    )


def _listed(names: list[str]) -> str:
    shown = "\n".join(names[:_MAX_LISTED])
    more = f"\n... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return shown + more


def _dtypes(header: dict[str, TensorInfo]) -> str:
    counts = Counter(dtype_name(t.dtype) for t in header.values())
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{name} ({n})" for name, n in counts.most_common())


def _is_float(info: TensorInfo) -> bool:
    dtype = torch_dtype(info.dtype)
    return dtype is not None and dtype.is_floating_point


def _on_disk_names(name: str) -> list[str]:
    """The keys an in-memory linear weight may have on disk: its own, or a fused attention key."""
    m = re.match(r"(.*self_attn\.)(in_projs|out_projs)\.\d+\.weight$", name)
    if m is None:
        return [name]
    if m.group(2) == "in_projs":
        return [name, m.group(1) + "in_proj_weight", m.group(1) + "in_proj.weight"]
    return [name, m.group(1) + "out_proj.weight"]


def _check_lm(report: ModelReport, path: Path, lm: LM, linears: set[str]) -> None:
    what = f"LM weights {path.name}"
    header = _read(report, what, path)
    if header is None:
        return
    if hf_layout.is_transformers_lm(header):  # Mimi's tensors beside the LM's
        header = {k: v for k, v in header.items() if not k.startswith(hf_layout.MIMI_PREFIX)}
    scales = {k: v for k, v in header.items() if k.endswith("_scb")}
    weights = {k: v for k, v in header.items() if k not in scales}
    fits = _fit(report, what, weights, lm)
    problems: list[str] = []

    if report.quantized:
        int8_keys: set[str] = set()
        for name in sorted(linears):
            key = next((k for k in _on_disk_names(name) if k in weights), None)
            if key is not None:
                int8_keys.add(key)
        for key in sorted(int8_keys):
            info, scale = weights[key], scales.get(key + "_scb")
            if info.dtype != "I8":
                problems.append(f"{key}: expected int8, found {dtype_name(info.dtype)}")
            rows = info.shape[:1]
            if scale is None:
                problems.append(f"{key}_scb: missing (expected float32 scales of shape {rows})")
            elif scale.dtype != "F32" or scale.shape != rows:
                problems.append(
                    f"{key}_scb: expected float32 of shape {rows}, found "
                    f"{dtype_name(scale.dtype)} of shape {scale.shape}"
                )
        for key in sorted(set(scales) - {k + "_scb" for k in int8_keys}):
            problems.append(f"{key}: unexpected key (a scale for no int8 linear weight)")
        others = sorted(set(weights) - int8_keys)
    else:
        if scales:
            problems.append(
                f"{len(scales)} int8 scales (*_scb, e.g. {min(scales)}): this is a q8 "
                'checkpoint, but config.json does not say "quantize": true'
            )
        others = sorted(weights)
    for key in others:
        info = weights[key]
        if not _is_float(info):
            problems.append(f"{key}: expected a float dtype, found {dtype_name(info.dtype)}")

    if problems:
        report.add(FAIL, f"{what}: {len(problems)} dtype problem(s):\n{_listed(problems)}")
    elif fits:
        kind = "int8 linear weights with float32 scales, " if report.quantized else ""
        floats = {k: weights[k] for k in others}
        report.add(
            OK,
            f"{what}: {len(header)} tensors ({format_bytes(weights_size(path))}), {kind}"
            f"{_dtypes(floats)}; names and shapes match",
        )
        if (
            not report.quantized
            and report.lm_parameters > _BIG_LM
            and all(v.dtype == "F32" for v in floats.values())
        ):
            report.add(
                WARN,
                f"{what} is stored in float32, twice the size of the bfloat16 release "
                "(it loads and runs the same)",
            )


def _check_mimi(report: ModelReport, path: Path, mimi: Mimi) -> None:
    what = f"Mimi weights {path.name}"
    header = _read(report, what, path)
    if header is None:
        return
    prefix = hf_layout.mimi_prefix(header)
    if prefix:  # Mimi inside a transformers Moshi checkpoint: only its own tensors
        header = {k: v for k, v in header.items() if k.startswith(prefix)}
    fits = _fit(report, what, header, mimi)
    not_float = [
        f"{k}: expected float32, found {dtype_name(v.dtype)}"
        for k, v in sorted(header.items())
        if not _is_float(v)
    ]
    if not_float:
        report.add(FAIL, f"{what}: {len(not_float)} dtype problem(s):\n{_listed(not_float)}")
    elif fits:
        report.add(
            OK,
            f"{what}: {len(header)} tensors ({format_bytes(weights_size(path))}), {_dtypes(header)}; "
            "names and shapes match",
        )
        lower = sorted(k for k, v in header.items() if v.dtype != "F32")
        if lower:
            report.add(
                WARN,
                f"{what}: {len(lower)} tensors are not float32 (e.g. {lower[0]}, "
                f"{dtype_name(header[lower[0]].dtype)}); Mimi runs in float32 and they lose "
                "precision",
            )


def _check_tokenizer(report: ModelReport, path: Path, text_card: int) -> None:
    what = f"text tokenizer {path.name}"
    try:
        vocab = open_tokenizer(path).vocab_size
    except TokenizerError as e:
        report.add(FAIL, f"{what}: {e}")
        return
    if vocab != text_card:
        report.add(
            FAIL,
            f"{what}: {vocab} pieces, but the LM's text_card is {text_card}: "
            "this tokenizer belongs to another model",
        )
    else:
        report.add(OK, f"{what}: {vocab} pieces, as the LM expects")


def _count(n: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)
