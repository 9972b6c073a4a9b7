"""A model's files, without torch: what the app may know of the model before loading it.

What a repository id looks like; finding a model's files in a folder (config.json optional, as in
Kyutai's loader; the file names it gives must stay inside the folder) and reading its configs; and
reading a safetensors header (8 bytes of length, then a JSON table of every tensor's name, dtype,
shape and byte range) without touching the tensors. Frame size, sample rate and the default file
names are in `model.config`, the known repositories and their licences in `model.catalog`, all
torch-free too. Tensors are `model.checkpoint`'s. A checkpoint of another member of the family
(`model.family`) is refused before its weights are loaded.

This module and `model.config` import neither torch nor anything that does (a test checks), so the
window and the command line can use them without loading PyTorch.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath
from typing import Any, TypeVar

from . import family, hf_config
from .catalog import DEFAULT_REPO
from .config import PERSONAPLEX_MODEL_TYPE, CheckpointConfig, ConfigError, LMConfig, MimiConfig
from .finetune import CONSOLIDATED_NAME, LORA_NAME, LoraFiles, finetune_config, lora_settings
from .finetune import shape_differences as lora_shape_differences
from .hf_config import is_transformers_config

# --- Choices and outcomes --------------------------------------------------------------------------

# Where the model runs and at which dtype: the choices of --device, --dtype and the settings.
DEVICES = ("auto", "cpu", "cuda", "mps")  # auto: CUDA, then MPS, then the CPU
# int8, int4: weight-only linears (model/quant.py, model/int4.py)
DTYPES = ("auto", "bfloat16", "float16", "float32", "int8", "int4")

# The outcome of one check, as `doctor`, `self-test` and `model.inspect` report it.
OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


def is_repo_id(text: str) -> bool:
    """Whether `text` is a Hugging Face repository id, owner/name (the hub's own rules: letters,
    digits, "-", "_" and "."; no "--" or ".."; "-" and "." neither start nor end a part), and not
    an existing local folder of that name."""
    return has_repo_id_form(text) and not Path(text).expanduser().exists()


def has_repo_id_form(text: str) -> bool:
    """Whether `text` is written as a Hugging Face repository id, owner/name."""
    parts = text.split("/")
    return len(parts) == 2 and all(_is_repo_part(part) for part in parts)


_REPO_PART = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def _is_repo_part(part: str) -> bool:
    return (
        len(part) <= 96 and bool(_REPO_PART.match(part)) and "--" not in part and ".." not in part
    )


# --- A model's files -------------------------------------------------------------------------------

T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A model's file that is missing, unreadable, or does not fit the model."""


@dataclass
class ModelFiles:
    folder: Path
    config: CheckpointConfig
    mimi_config: MimiConfig
    lm_weights: Path
    mimi_weights: Path
    tokenizer: Path
    lora: LoraFiles | None = None  # adapters merged into the LM's weights as they load


# Where a file named by an hf://owner/repo/path reference in a local folder's config.json is:
# remote(key of config.json, reference) -> the local file (model.hub's fetches it into the
# cache), or None where a check that must not download takes it as there.
Remote = Callable[[str, str], Path | None]


def unfetched(key: str, reference: str) -> None:
    """A `Remote` for a check that must not download (the settings' check of a folder): the
    files a local folder names in repositories are taken as there, to be fetched as it loads."""
    return None


# What each key of config.json that names a file names, for messages.
_FILE_KINDS = {
    "moshi_name": "LM weights",
    "mimi_name": "Mimi weights",
    "tokenizer_name": "text tokenizer",
    "mimi_config_name": "Mimi config",
}


def leaves_folder(name: str) -> bool:
    """Whether a file name from config.json could point outside the folder it is read in: a URL
    (file://...), an absolute path (also Windows' C:\\ and \\\\server), or a ".." part."""
    parts = re.split(r"[\\/]", name)
    return (
        "://" in name
        or name.startswith(("/", "\\"))
        or bool(PureWindowsPath(name).drive)
        or ".." in parts
    )


def outside_error(where: str, key: str, name: str, inside: str, hint: str = "") -> CheckpointError:
    """The error for a file name, the value of `key` in `where`, that leads outside `inside`."""
    return CheckpointError(
        f"{where} names {key} = {name!r}, which is outside {inside}: file names must stay "
        f"inside it{hint}"
    )


def _local_file(folder: Path, key: str, name: str, remote: Remote | None = None) -> Path | None:
    """The file `name` (the value of `key` in config.json) in the local `folder`, or through
    `remote` where it is an hf://owner/repo/path reference (None: not fetched, see Remote)."""
    where = f"config.json in {folder}"
    if name.startswith("hf://"):
        if remote is not None:
            return remote(key, name)
        raise CheckpointError(
            f"{where} points to {name} in another Hugging Face repository; "
            "load the model through model.hub.locate_model so that file can be fetched"
        )
    path = folder / name
    # The file itself may be a link (a Hugging Face snapshot links each file to ../../blobs),
    # but the folders on the way to it must stay in the model's folder.
    if leaves_folder(name) or not path.parent.resolve().is_relative_to(folder.resolve()):
        raise outside_error(where, key, name, "the model's folder")
    return path


def read_config(path: Path | None, name: str) -> CheckpointConfig:
    """A checkpoint's config.json (`name` says which, in messages), or Moshi 7B's configuration
    where there is none. Kyutai's format, or transformers' (`model.hf_config`)."""
    if path is None:
        return CheckpointConfig()
    return _read_json(path, name, lambda raw: _checkpoint_config(raw, name))


def _checkpoint_config(raw: Any, name: str) -> CheckpointConfig:
    if not is_transformers_config(raw):
        return CheckpointConfig.from_dict(raw, name)
    refused = family.config_refusal(raw)  # another member of the family, in this format too
    if refused:
        raise ConfigError(f"{name}: {refused}")
    if raw.get("model_type") == "mimi":
        raise ConfigError(
            f"{name} is Mimi alone (the audio codec), not a Moshi model: choose a Moshi model, "
            "such as kmhf/hf-moshiko or kyutai/moshiko-pytorch-bf16"
        )
    return hf_config.moshi_config(raw, name)


def with_generation_config(config: CheckpointConfig, path: Path | None) -> CheckpointConfig:
    """`config` with the sampling defaults of transformers' generation_config.json at `path`
    (none: unchanged)."""
    if path is None:
        return config
    name = str(path)
    defaults = _read_json(path, name, hf_config.generation_defaults)
    try:
        return replace(config, lm_gen_config={**config.lm_gen_config, **defaults})
    except ConfigError as e:
        raise CheckpointError(f"{name}: {e}") from None


def read_mimi_config(config: CheckpointConfig, path: Path | None, name: str) -> MimiConfig:
    """Mimi's config (its own file, or Kyutai's Mimi), using as many codebooks as the LM reads.
    `name` says which file, in messages: Mimi's config, or config.json where there is none."""
    lm = config.lm
    num_codebooks = max(lm.dep_q, lm.n_q - lm.dep_q)
    if config.model_type == PERSONAPLEX_MODEL_TYPE:  # its depth transformer covers both streams
        num_codebooks = lm.n_q // 2
    if config.mimi is not None:  # held in config.json (transformers)
        return replace(config.mimi, num_codebooks=num_codebooks)
    if path is None:
        try:
            return MimiConfig(num_codebooks=num_codebooks)
        except ConfigError as e:
            raise CheckpointError(f"{name}: {e}") from None
    return _read_json(path, name, lambda raw: _mimi_config(raw, num_codebooks, name))


def _mimi_config(raw: Any, num_codebooks: int, name: str) -> MimiConfig:
    """Kyutai's Mimi config, or transformers' (kyutai/mimi can serve as a Moshi's codec)."""
    if is_transformers_config(raw):
        try:
            return hf_config.mimi_config(raw, num_codebooks)
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from None
    return MimiConfig.from_dict(raw, num_codebooks, name)


def _read_json(path: Path, name: str, build: Callable[[Any], T]) -> T:
    """`build` applied to the JSON in `path` (`name` in messages)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"cannot read {name}: {e.strerror or e}") from e
    except ValueError as e:  # JSON errors and bad UTF-8 are ValueErrors
        raise CheckpointError(f"{name} cannot be used: it is not valid JSON ({e})") from None
    try:
        return build(raw)
    except ConfigError as e:  # it begins with `name`
        raise CheckpointError(str(e)) from None


def resolve_folder(folder: str | Path, remote: Remote | None = None) -> ModelFiles:
    """Find a model's files in `folder`. config.json is optional: without it, Moshi 7B's
    configuration and Kyutai's default file names are assumed. A file it names as
    hf://owner/repo/path is found through `remote` (without one, that is an error). A folder
    that moshi-finetune wrote loads its consolidated.safetensors, with the base's Mimi and
    tokenizer where it has none (`model.finetune.finetune_config`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    config_path = folder / "config.json"
    config = read_config(config_path if config_path.is_file() else None, str(config_path))
    if config.format == hf_config.FORMAT:
        config = _transformers_files(folder, config)
    config = finetune_config(folder, config, DEFAULT_REPO)
    if (folder / LORA_NAME).is_file() and not (folder / config.moshi_name).is_file():
        raise CheckpointError(
            f"{folder} holds a LoRA ({LORA_NAME}), adapters for a base model: choose its base "
            f"as the model and this folder as the LoRA (--model {DEFAULT_REPO} --lora {folder})"
        )
    found = {key: _local_file(folder, key, name, remote) for key, name in config.file_names.items()}
    files = {
        key: path if path is not None else Path(config.file_names[key])
        for key, path in found.items()
    }
    if weights_tell_the_member(config) and files["moshi_name"].is_file():
        try:
            header = read_header(files["moshi_name"])
        except CheckpointError:
            header = {}  # loading the weights says what is wrong with them
        refuse_other_member(header, config, str(files["moshi_name"]))
        config = personaplex_by_weights(header, config)
    missing = [
        f"{_FILE_KINDS[key]} ({path.name})"
        for key, path in files.items()
        if found[key] is not None and not path.is_file()
    ]
    if not missing and files["moshi_name"].name == hf_config.INDEX_NAME:
        missing = [
            f"weights shard ({name})"
            for name in shard_names(files["moshi_name"])
            if not (folder / name).is_file()
        ]
    if missing:
        raise CheckpointError(f"model folder {folder} is missing: {', '.join(missing)}")
    mimi_config_path = found.get("mimi_config_name")
    mimi_config = read_mimi_config(config, mimi_config_path, str(mimi_config_path or config_path))
    return ModelFiles(
        folder,
        config,
        mimi_config,
        files["moshi_name"],
        files["mimi_name"],
        files["tokenizer_name"],
    )


def _transformers_files(folder: Path, config: CheckpointConfig) -> CheckpointConfig:
    """A transformers folder's config: sharded weights (the index) or one file, and the sampling
    defaults of generation_config.json."""
    if (
        not (folder / hf_config.INDEX_NAME).is_file()
        and (folder / hf_config.WEIGHTS_NAME).is_file()
    ):
        name = hf_config.WEIGHTS_NAME
        config = replace(config, moshi_name=name, mimi_name=name)
    generation = folder / hf_config.GENERATION_CONFIG_NAME
    return with_generation_config(config, generation if generation.is_file() else None)


def shard_names(index: Path) -> list[str]:
    """The weights files that a sharded checkpoint's index (model.safetensors.index.json) names,
    in order; each must be a plain file name beside the index."""

    def names(raw: Any) -> list[str]:
        weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index.name} has no weight_map: it is not a weights index")
        found = []
        for name in weight_map.values():
            if not isinstance(name, str) or leaves_folder(name) or "/" in name or "\\" in name:
                raise outside_error(str(index), "weight_map", str(name), "its folder")
            if name not in found:
                found.append(name)
        return found

    return _read_json(index, str(index), names)


# --- A LoRA on top of the model --------------------------------------------------------------------


def resolve_lora(path: str | Path) -> LoraFiles:
    """A LoRA that moshi-finetune wrote (`model.finetune`): its folder, or its lora.safetensors
    with the config.json beside it. Its adapters' fit to a model is checked as they load
    (`model.lora`); here only that it is a LoRA, complete."""
    path = Path(path).expanduser()
    if path.is_dir():
        folder, weights = path, path / LORA_NAME
    elif path.is_file():
        folder, weights = path.parent, path
    else:
        raise CheckpointError(f"LoRA not found: {path}")
    if weights.name == CONSOLIDATED_NAME or (
        path.is_dir() and not weights.exists() and (folder / CONSOLIDATED_NAME).is_file()
    ):
        raise CheckpointError(
            f"{path} is a full fine-tune ({CONSOLIDATED_NAME}), not a LoRA: choose its folder "
            f"as the model (--model {folder}), with no LoRA"
        )
    if not weights.is_file():
        raise CheckpointError(
            f"{folder} has no {LORA_NAME}: choose the folder where moshi-finetune saved a LoRA "
            f"(it holds {LORA_NAME} and config.json), or that file"
        )
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(
            f"{weights} has no config.json beside it: the one moshi-finetune saved with it "
            "gives the LoRA's lora_rank and lora_scaling"
        )
    rank, scaling, lm = _read_json(config, str(config), lambda raw: lora_settings(raw, str(config)))
    read_header(weights)  # a safetensors file, complete
    return LoraFiles(weights, config, rank, scaling, lm)


def with_lora(files: ModelFiles, path: str | Path | None) -> ModelFiles:
    """`files` with the LoRA at `path` (none: unchanged), refused at once where its config.json
    says it was made for a model of other sizes."""
    if path is None or str(path) == "":
        return files
    lora = resolve_lora(path)
    differences = lora_shape_differences(lora.lm, files.config.lm) if lora.lm else []
    if differences:
        raise CheckpointError(
            f"the LoRA {lora.weights} was made for another model: its config.json has "
            f"{', '.join(differences)}; choose the base model it was trained from"
        )
    return replace(files, lora=lora)


def weights_tell_the_member(config: CheckpointConfig) -> bool:
    """Whether the LM weights' header must say which member of the family they are, because
    config.json does not: it leaves the architecture at Moshi 7B's defaults (or there is none), as
    MoshiVis's missing one and PersonaPlex's keyless one do."""
    return config.lm == LMConfig() and config.moshi_name.endswith(".safetensors")


def personaplex_by_weights(
    tensor_names: Iterable[str], config: CheckpointConfig
) -> CheckpointConfig:
    """`config` as PersonaPlex's (model_type "personaplex", dep_q 16) where the LM weights say
    they are PersonaPlex's (a depth transformer for more codebooks than config.json's dep_q)."""
    found = family.weights_member(tensor_names, config.lm.dep_q)
    if found is None or found[0] is not family.PERSONAPLEX:
        return config
    return replace(config, model_type=PERSONAPLEX_MODEL_TYPE, lm=replace(config.lm, dep_q=16))


def refuse_other_member(tensor_names: Iterable[str], config: CheckpointConfig, where: str) -> None:
    """CheckpointError if the LM weights (their tensors' names, from `where`) are another member
    of the family's (`model.family`) that this app does not run: MoshiVis's. (PersonaPlex's
    run: `personaplex_by_weights`.)"""
    refused = family.weights_refusal(tensor_names, config.lm.dep_q)
    if refused:
        raise CheckpointError(f"{where}: {refused}")


# --- Safetensors headers ---------------------------------------------------------------------------

_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header

# Each safetensors dtype: its name in torch (`model.checkpoint.torch_dtype` gives the dtype) and
# its bytes per value.
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "I16": ("int16", 2),
    "U16": ("uint16", 2),
    "I32": ("int32", 4),
    "U32": ("uint32", 4),
    "I64": ("int64", 8),
    "U64": ("uint64", 8),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F32": ("float32", 4),
    "F64": ("float64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}


def dtype_name(code: str) -> str:
    """torch's name of a safetensors dtype ("BF16" -> "bfloat16"), or the code if unknown."""
    return SAFETENSORS_DTYPES.get(code, (code, 0))[0]


@dataclass
class TensorInfo:
    """One entry of a safetensors header."""

    dtype: str  # as safetensors names it: "BF16", "F32", "I8", ...
    shape: tuple[int, ...]
    start: int  # byte range in the data section
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """The tensor table of a safetensors file, read without touching the tensors' data.

    Raises CheckpointError if the file is missing, is not safetensors, or is shorter than its
    header says (a download that stopped midway).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path.name} is not a safetensors file (only {size} bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_MAX_HEADER, size - 8):
                raise CheckpointError(
                    f"{path.name} is not a safetensors file (header length {length} does not "
                    f"fit its {size} bytes)"
                )
            raw = json.loads(f.read(length))
    except FileNotFoundError:
        raise CheckpointError(f"weights file not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    except (ValueError, UnicodeDecodeError) as e:  # JSON errors are ValueErrors
        raise CheckpointError(f"{path.name} is not a safetensors file (bad header: {e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path.name} is not a safetensors file (bad header)")

    tensors: dict[str, TensorInfo] = {}
    try:
        for name, entry in raw.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            tensors[name] = TensorInfo(
                str(entry["dtype"]), tuple(int(d) for d in entry["shape"]), int(start), int(end)
            )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a safetensors file (bad header entry)") from e
    for name, info in tensors.items():
        known = SAFETENSORS_DTYPES.get(info.dtype)
        if known is not None and info.end - info.start != info.numel * known[1]:
            raise CheckpointError(
                f"{path.name} is not a valid safetensors file: {name} has {info.end - info.start}"
                f" bytes for {info.numel} values of {known[0]}"
            )
    data_size = max((t.end for t in tensors.values()), default=0)
    if 8 + length + data_size > size:
        raise CheckpointError(
            f"{path.name} is truncated: its header describes {format_bytes(8 + length + data_size)} "
            f"but the file has {format_bytes(size)} (an interrupted download? fetch it again)"
        )
    return tensors


def format_bytes(n: float) -> str:
    """Sizes as the model cards give them: decimal units, one decimal ("15.4 GB")."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
