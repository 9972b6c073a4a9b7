"""Configurations of Mimi and the LM, with Kyutai's released values as defaults.

Both read Kyutai's JSON formats: a Mimi config with `seanet`, `quantizer` and `transformer` sections
(what `mimi_config_name` in a checkpoint's config.json points to), and the LM's config.json (the LM
keyword arguments plus file names, `model_type` and `lm_gen_config`). A key or value this
implementation does not support is an error that names it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import family

SAMPLE_RATE = 24000
FRAME_RATE = 12.5
FRAME_SIZE = 1920  # samples per frame: 80 ms at 24 kHz
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE  # 0.08: one LM step

MOSHI_NAME = "model.safetensors"
MIMI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_NAME = "tokenizer_spm_32k_3.model"


class ConfigError(ValueError):
    """A configuration this implementation cannot run."""


# --- Checking values -------------------------------------------------------------------------------
# Every value is checked for its type and range when a config is built, before any module is: a
# wrong one is one error naming the key and the value, never a failure deep in torch. Keys are
# named as the JSON file spells them ("seanet.ratios"): each config class has its `_prefix`.

_LARGEST = 2**31 - 1  # far beyond any size in a model, and within what torch's shapes hold


def _bad(name: str, value: Any, problem: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:  # a long list, say: its start and its end
        shown = shown[:50] + "..." + shown[-7:]
    return ConfigError(f"{name} = {shown} {problem}")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_whole(name: str, value: Any, minimum: int = 1) -> None:
    if not _is_whole(value) or value < minimum:
        raise _bad(name, value, f"must be a whole number of {minimum} or more")
    if value > _LARGEST:
        raise _bad(name, value, f"is too large (at most {_LARGEST})")


def _check_number(name: str, value: Any, *, zero: bool = False) -> None:
    """A finite number above 0 (`zero`: or 0); ints are numbers too."""
    if not _is_number(value) or value < 0 or (value == 0 and not zero):
        raise _bad(
            name, value, "must be a number of 0 or more" if zero else "must be a number above 0"
        )


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _bad(name, value, "must be true or false")


def _check_wholes(
    name: str, value: Any, minimum: int, length: int | None = None, why: str = ""
) -> None:
    """A list of whole numbers of `minimum` or more: `length` of them (`why` says why), or at
    least one."""
    if not isinstance(value, (list, tuple)) or not value or len(value) != (length or len(value)):
        count = f"{length}" if length else "one or more"
        raise _bad(
            name, value, f"must be a list of {count} whole numbers" + (f" ({why})" if why else "")
        )
    for i, item in enumerate(value):
        _check_whole(f"{name}[{i}]", item, minimum)


def _check_heads(config: Any, dim_key: str, heads_key: str, rope: bool) -> None:
    """`heads_key` splits `dim_key` into heads of a whole number of channels (an even one with
    rotary embeddings, which rotate pairs of channels)."""
    dim, heads = getattr(config, dim_key), getattr(config, heads_key)
    prefix = config._prefix
    if dim % heads:
        raise _bad(prefix + dim_key, dim, f"must be a multiple of {prefix}{heads_key} = {heads}")
    if rope and (dim // heads) % 2:
        raise _bad(
            prefix + heads_key,
            heads,
            f"splits {prefix}{dim_key} = {dim} into heads of {dim // heads} channels, an odd "
            "number: rotary embeddings need an even one",
        )


def _values(config: Any, keys: str) -> Iterator[tuple[str, Any]]:
    """(name as the JSON file spells it, value) of each of the space-separated `keys`."""
    for key in keys.split():
        yield config._prefix + key, getattr(config, key)


@contextmanager
def _reading(source: str) -> Iterator[None]:
    """Errors name the file (or whatever `source` says) the values came from."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _object(name: str | None, value: Any) -> dict[str, Any]:
    """A copy of `value`, a JSON object: the value of key `name`, or (None) a whole file."""
    if not isinstance(value, dict):
        if name is None:
            shown = json.dumps(value)
            raise ConfigError(f"it holds {shown:.60}, not a JSON object ({{...}})")
        raise _bad(name, value, "must be a JSON object ({...})")
    return dict(value)


def _check_fixed(prefix: str, values: dict[str, Any], fixed: dict[str, Any]) -> None:
    """Keys whose only supported value is the one Kyutai's models use."""
    for key, supported in fixed.items():
        if key in values and values[key] != supported:
            raise _bad(prefix + key, values[key], f"is not supported (only {supported!r})")


def _build(cls: type, values: dict[str, Any], ignored: set[str] = frozenset()):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names - ignored
    if unknown:
        keys = ", ".join(cls._prefix + key for key in sorted(unknown))
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''}: {keys}")
    return cls(**{k: v for k, v in values.items() if k in names})


# --- Mimi ------------------------------------------------------------------------------------------


# Keys of Kyutai's Mimi config whose only supported value is the one its Mimi uses.
_SEANET_FIXED = {
    "causal": True,
    "activation": "ELU",
    "norm": "none",
    "pad_mode": "constant",
    "true_skip": True,
    "disable_norm_outer_blocks": 0,
    "channels": 1,
}
_TRANSFORMER_FIXED = {
    "causal": True,
    "conv_layout": True,
    "gating": "none",
    "norm": "layer_norm",
    "positional_embedding": "rope",
}
_TRANSFORMER_DIMS = ("input_dimension", "output_dimensions")  # both must be d_model


@dataclass
class SEANetConfig:
    _prefix: ClassVar[str] = "seanet."
    channels: int = 1
    dimension: int = 512
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 6, 5, 4])  # decoder order
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2

    def __post_init__(self) -> None:
        sizes = "channels dimension n_filters kernel_size residual_kernel_size last_kernel_size"
        for name, value in _values(self, f"{sizes} dilation_base compress"):
            _check_whole(name, value)
        _check_whole(self._prefix + "n_residual_layers", self.n_residual_layers, minimum=0)
        _check_wholes(self._prefix + "ratios", self.ratios, minimum=1)

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)


@dataclass
class QuantizerConfig:
    _prefix: ClassVar[str] = "quantizer."
    dimension: int = 256  # codebook dimension
    n_q: int = 32  # codebooks in total: 1 semantic + n_q - 1 acoustic
    bins: int = 2048
    input_dimension: int = 512
    output_dimension: int = 512
    n_q_semantic: int = 1

    def __post_init__(self) -> None:
        keys = "dimension n_q bins input_dimension output_dimension n_q_semantic"
        for name, value in _values(self, keys):
            _check_whole(name, value)
        if self.n_q_semantic > self.n_q:
            raise _bad(
                "quantizer.n_q_semantic",
                self.n_q_semantic,
                f"is more than quantizer.n_q = {self.n_q}",
            )


@dataclass
class MimiTransformerConfig:
    _prefix: ClassVar[str] = "transformer."
    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    layer_scale: float | None = 0.01
    context: int = 250
    max_period: float = 10000.0

    def __post_init__(self) -> None:
        for name, value in _values(self, "d_model num_heads num_layers dim_feedforward context"):
            _check_whole(name, value)
        _check_number(self._prefix + "max_period", self.max_period)
        if self.layer_scale is not None:
            _check_number(self._prefix + "layer_scale", self.layer_scale)
        _check_heads(self, "d_model", "num_heads", rope=True)


@dataclass
class MimiConfig:
    _prefix: ClassVar[str] = ""
    sample_rate: int = SAMPLE_RATE
    frame_rate: float = FRAME_RATE
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    transformer: MimiTransformerConfig = field(default_factory=MimiTransformerConfig)
    num_codebooks: int = 8  # codebooks in use (Moshi uses 8)

    def __post_init__(self) -> None:
        # The app cuts audio into frames of FRAME_SIZE samples at SAMPLE_RATE.
        fixed = {"sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE}
        _check_fixed("", {key: getattr(self, key) for key in fixed}, fixed)
        hop = self.seanet.hop_length
        if FRAME_SIZE % hop:
            raise _bad(
                "seanet.ratios",
                self.seanet.ratios,
                f"give a hop of {hop} samples, which does not divide Mimi's frame of {FRAME_SIZE}",
            )
        steps = FRAME_SIZE // hop  # the transformers' steps in a frame
        if self.transformer.context < steps:
            raise _bad(
                "transformer.context",
                self.transformer.context,
                f"must be at least {steps}, the steps of one frame",
            )
        _check_whole("num_codebooks", self.num_codebooks)
        if self.num_codebooks > self.quantizer.n_q:
            raise _bad(
                "quantizer.n_q",
                self.quantizer.n_q,
                f"is fewer than the {self.num_codebooks} codebooks the LM reads",
            )

    @property
    def frame_size(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.seanet.hop_length

    @classmethod
    def from_dict(
        cls, raw: Any, num_codebooks: int = 8, source: str = "Mimi's config"
    ) -> MimiConfig:
        """Kyutai's Mimi config format; errors begin with `source`, the file it came from."""
        with _reading(source):
            raw = _object(None, raw)
            _check_fixed("", raw, {"channels": 1})
            seanet = _object("seanet", raw.pop("seanet", {}))
            _check_fixed("seanet.", seanet, _SEANET_FIXED)
            transformer = _object("transformer", raw.pop("transformer", {}))
            _check_fixed("transformer.", transformer, _TRANSFORMER_FIXED)
            dims = {k: transformer.pop(k) for k in _TRANSFORMER_DIMS if k in transformer}
            transformer = _build(MimiTransformerConfig, transformer, set(_TRANSFORMER_FIXED))
            d = transformer.d_model
            _check_fixed("transformer.", dims, {"input_dimension": d, "output_dimensions": [d]})
            sections = {
                "seanet": _build(SEANetConfig, seanet, set(_SEANET_FIXED)),
                "quantizer": _build(
                    QuantizerConfig, _object("quantizer", raw.pop("quantizer", {}))
                ),
                "transformer": transformer,
                "num_codebooks": num_codebooks,
            }
            return _build(cls, {**raw, **sections}, {"channels"})

    @classmethod
    def from_json(cls, path: str | Path, num_codebooks: int = 8) -> MimiConfig:
        return cls.from_dict(json.loads(Path(path).read_text()), num_codebooks, str(path))


# --- The LM ----------------------------------------------------------------------------------------


@dataclass
class LMConfig:
    """Helium + depth transformer. Defaults: Moshi 7B (`moshiko`/`moshika`)."""

    _prefix: ClassVar[str] = ""
    dim: int = 4096
    text_card: int = 32000
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    n_q: int = 16  # audio streams in: dep_q of Moshi's + n_q - dep_q of the user's
    dep_q: int = 8  # audio codebooks the depth transformer generates
    card: int = 2048
    num_heads: int = 32
    num_layers: int = 32
    hidden_scale: float = 4.125
    context: int = 3000
    max_period: float = 10000.0
    depformer_dim: int = 1024
    depformer_dim_feedforward: int | None = 4224
    depformer_num_heads: int = 16
    depformer_num_layers: int = 6
    depformer_multi_linear: bool = True
    # Speech-to-text's semantic voice-activity heads: each a linear of the temporal output.
    extra_heads_num_heads: int = 0
    extra_heads_dim: int = 6
    delays: list[int] = field(
        default_factory=lambda: [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    )

    def __post_init__(self) -> None:
        sizes = "dim text_card n_q card num_heads num_layers context extra_heads_dim"
        depformer_sizes = "depformer_dim depformer_num_heads depformer_num_layers"
        for name, value in _values(self, f"{sizes} {depformer_sizes}"):
            _check_whole(name, value)
        for name, value in _values(self, "dep_q extra_heads_num_heads"):
            _check_whole(name, value, minimum=0)  # 0: speech-to-text; none
        for name, value in _values(self, "existing_text_padding_id existing_text_end_padding_id"):
            _check_whole(name, value, minimum=0)
            if value >= self.text_card:
                raise _bad(name, value, f"must be below text_card = {self.text_card}")
        for name, value in _values(self, "hidden_scale max_period"):
            _check_number(name, value)
        if self.hidden_scale * self.dim > _LARGEST:
            raise _bad("hidden_scale", self.hidden_scale, f"is too large for dim = {self.dim}")
        _check_bool("depformer_multi_linear", self.depformer_multi_linear)
        if self.dep_q > self.n_q:
            raise _bad("dep_q", self.dep_q, f"is more than n_q = {self.n_q}")
        _check_heads(self, "dim", "num_heads", rope=True)
        _check_heads(self, "depformer_dim", "depformer_num_heads", rope=False)
        _check_wholes(
            "delays", self.delays, 0, self.n_q + 1, "n_q + 1: the text, then each audio codebook"
        )
        if self.depformer_dim_feedforward is None:
            self.depformer_dim_feedforward = int(self.hidden_scale * self.depformer_dim)
        _check_whole("depformer_dim_feedforward", self.depformer_dim_feedforward)

    @property
    def dim_feedforward(self) -> int:
        return int(self.hidden_scale * self.dim)

    @property
    def max_delay(self) -> int:
        return max(self.delays)


# config.json keys whose only supported value is Moshi's; None means "absent or null".
_LM_FIXED = {
    "causal": True,
    "layer_scale": None,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "norm_emb": False,
    "bias_proj": False,
    "depformer_layer_scale": None,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "depformer_weights_per_step_schedule": None,
    "depformer_norm": None,
    "depformer_low_rank_embeddings": None,
    "kv_repeat": 1,
    "demux_second_text_stream": False,
    "text_card_out": None,
    "conditioners": None,
    "fuser": None,
    "cross_attention": False,
}
# Keys that do not change the architecture at inference.
_LM_IGNORED = {
    "depformer_context",
    "depformer_max_period",
    "depformer_causal",
    "gradient_checkpointing",
    # moshi-finetune's: how the weights were trained. A LoRA's adapters load apart, on top of
    # their base model (model.finetune, model.lora); a full fine-tune's weights are complete.
    "lora",
    "lora_rank",
    "lora_scaling",
}
PERSONAPLEX_MODEL_TYPE = "personaplex"  # config.json's model_type, as NVIDIA's repository writes it
STT_MODEL_TYPE = "stt"  # Kyutai's speech-to-text (model.stt): no depth transformer
SUPPORTED_MODEL_TYPES = ("moshi", PERSONAPLEX_MODEL_TYPE, STT_MODEL_TYPE)
# PersonaPlex (model.persona): Moshi 7B whose depth transformer also predicts the user's codebooks.
# NVIDIA's config.json holds no LM keys, so its model_type says dep_q.
_MODEL_TYPE_DEFAULTS = {PERSONAPLEX_MODEL_TYPE: {"dep_q": 16}}
# lm_gen_config: the original's LMGen keyword arguments that this app reads, and their checks.
_LM_GEN_CHECKS = {
    "temp": lambda name, value: _check_number(name, value, zero=True),
    "temp_text": lambda name, value: _check_number(name, value, zero=True),
    "top_k": lambda name, value: _check_whole(name, value, minimum=0),
    "top_k_text": lambda name, value: _check_whole(name, value, minimum=0),
    "use_sampling": _check_bool,
}


def _check_model_type(model_type: Any) -> None:
    refused = family.config_refusal({"model_type": model_type})  # Hibiki, TTS, STT
    if refused:
        raise ConfigError(refused)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"model_type {model_type!r} is not supported: this app runs Moshi dialogue "
            f"models ({', '.join(SUPPORTED_MODEL_TYPES)}), such as kyutai/moshiko-pytorch-bf16, "
            "and Kyutai's speech-to-text"
        )


@dataclass(frozen=True)
class SttConfig:
    """Speech-to-text's stt_config: how long the text follows the audio, and the silence the
    model was trained to hear before the audio (Kyutai's defaults where a key is left out)."""

    audio_delay_seconds: float = 5.0
    audio_silence_prefix_seconds: float = 1.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SttConfig:
        values = {}
        for key in ("audio_delay_seconds", "audio_silence_prefix_seconds"):
            if key in raw:
                _check_number(f"stt_config.{key}", raw[key], zero=True)
                values[key] = float(raw[key])
        return cls(**values)


@dataclass
class CheckpointConfig:
    """What a checkpoint's config.json says: the LM, where the other files are, sampling defaults."""

    _prefix: ClassVar[str] = ""
    lm: LMConfig = field(default_factory=LMConfig)
    moshi_name: str = MOSHI_NAME
    mimi_name: str = MIMI_NAME
    tokenizer_name: str = TOKENIZER_NAME
    mimi_config_name: str | None = None
    model_type: str = "moshi"
    lm_gen_config: dict[str, Any] = field(default_factory=dict)
    quantize: bool = False  # a q8 checkpoint: int8 linear weights with float32 scales
    format: str = "kyutai"  # the layout of the files: Kyutai's, or "transformers" (model.hf_config)
    mimi: MimiConfig | None = None  # Mimi's config where config.json holds it (transformers)
    stt: SttConfig | None = None  # speech-to-text's stt_config

    def __post_init__(self) -> None:
        names = ["moshi_name", "mimi_name", "tokenizer_name"]
        if self.mimi_config_name is not None:
            names.append("mimi_config_name")
        for name, value in _values(self, " ".join(names)):
            if not isinstance(value, str) or not value.strip():
                raise _bad(name, value, "must be a file name")
        _check_model_type(self.model_type)
        _object("lm_gen_config", self.lm_gen_config)
        for key, check in _LM_GEN_CHECKS.items():
            if key in self.lm_gen_config:
                check(f"lm_gen_config.{key}", self.lm_gen_config[key])
        _check_bool("quantize", self.quantize)
        if (self.model_type == STT_MODEL_TYPE) != (self.lm.dep_q == 0):
            raise _bad(
                "dep_q",
                self.lm.dep_q,
                'must be 0 for speech-to-text (model_type "stt"), and only then',
            )

    @property
    def file_names(self) -> dict[str, str]:
        """The keys that name the model's other files, and the names they give."""
        keys = ("moshi_name", "mimi_name", "tokenizer_name", "mimi_config_name")
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config.json") -> CheckpointConfig:
        """Kyutai's config.json; errors begin with `source`, the file it came from."""
        with _reading(source):
            refused = family.config_refusal(raw)  # first: the rest of the family has other keys
            if refused:
                raise ConfigError(refused)
            raw = _object(None, raw)
            files = {
                k: raw.pop(k)
                for k in ("moshi_name", "mimi_name", "tokenizer_name", "mimi_config_name")
                if k in raw
            }
            model_type = raw.pop("model_type", "moshi")
            _check_model_type(model_type)  # first: another kind of model has other keys
            lm_gen_config = raw.pop("lm_gen_config", None)
            quantize = raw.pop("quantize", None)
            stt = raw.pop("stt_config", None)
            if model_type == STT_MODEL_TYPE:
                stt = SttConfig.from_dict(_object("stt_config", {} if stt is None else stt))
            elif stt:
                raise ConfigError("key 'stt_config' is not supported by this app")
            for key in ("lora_name", "model_id", "tts_config"):
                if raw.pop(key, None):
                    raise ConfigError(f"key {key!r} is not supported by this app")
            for key, supported in _LM_FIXED.items():
                value = raw.pop(key, None)
                if value is not None and value != supported:
                    raise _bad(key, value, f"is not supported (only {supported!r})")
            for key in _LM_IGNORED:
                raw.pop(key, None)
            if model_type == PERSONAPLEX_MODEL_TYPE:
                raw.pop("version", None)  # NVIDIA's "7b-v1": the release, not the architecture
            for key, value in _MODEL_TYPE_DEFAULTS.get(model_type, {}).items():
                raw.setdefault(key, value)
            return cls(
                lm=_build(LMConfig, raw),
                model_type=model_type,
                lm_gen_config={} if lm_gen_config is None else lm_gen_config,
                quantize=False if quantize is None else quantize,
                stt=stt,
                **files,
            )

    @classmethod
    def from_json(cls, path: str | Path) -> CheckpointConfig:
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))
