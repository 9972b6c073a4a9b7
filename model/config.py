"""Configurations of Mimi and the LM, with Kyutai's released values as defaults.

Both read Kyutai's JSON formats: a Mimi config with `seanet`, `quantizer` and `transformer` sections
(what `mimi_config_name` in a checkpoint's config.json points to), and the LM's config.json (the LM
keyword arguments plus file names, `model_type` and `lm_gen_config`). A key or value this
implementation does not support is an error that names it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_RATE = 24000
FRAME_RATE = 12.5
FRAME_SIZE = 1920  # samples per frame: 80 ms at 24 kHz
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE  # 0.08: one LM step

MOSHI_NAME = "model.safetensors"
MIMI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_NAME = "tokenizer_spm_32k_3.model"


class ConfigError(ValueError):
    """A configuration this implementation cannot run."""


def _check_fixed(section: str, values: dict[str, Any], fixed: dict[str, Any]) -> None:
    """Keys whose only supported value is the one Kyutai's Mimi uses."""
    for key, supported in fixed.items():
        if key in values and values[key] != supported:
            raise ConfigError(
                f"{section}.{key} = {values[key]!r} is not supported (only {supported!r})"
            )


def _build(cls: type, section: str, values: dict[str, Any], ignored: set[str] = frozenset()):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names - ignored
    if unknown:
        raise ConfigError(f"unknown {section} keys: {', '.join(sorted(unknown))}")
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class SEANetConfig:
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

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.ratios:
            hop *= r
        return hop


@dataclass
class QuantizerConfig:
    dimension: int = 256  # codebook dimension
    n_q: int = 32  # codebooks in total: 1 semantic + n_q - 1 acoustic
    bins: int = 2048
    input_dimension: int = 512
    output_dimension: int = 512
    n_q_semantic: int = 1


@dataclass
class MimiTransformerConfig:
    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    layer_scale: float | None = 0.01
    context: int = 250
    max_period: float = 10000.0


@dataclass
class MimiConfig:
    sample_rate: int = SAMPLE_RATE
    frame_rate: float = FRAME_RATE
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    transformer: MimiTransformerConfig = field(default_factory=MimiTransformerConfig)
    num_codebooks: int = 8  # codebooks in use (Moshi uses 8)

    @property
    def frame_size(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.seanet.hop_length

    @classmethod
    def from_dict(cls, raw: dict[str, Any], num_codebooks: int = 8) -> MimiConfig:
        raw = dict(raw)
        _check_fixed("mimi", raw, {"channels": 1})
        seanet = dict(raw.pop("seanet", {}))
        _check_fixed(
            "seanet",
            seanet,
            {
                "causal": True,
                "activation": "ELU",
                "norm": "none",
                "pad_mode": "constant",
                "true_skip": True,
                "disable_norm_outer_blocks": 0,
                "channels": 1,
            },
        )
        transformer = dict(raw.pop("transformer", {}))
        _check_fixed(
            "transformer",
            transformer,
            {
                "causal": True,
                "conv_layout": True,
                "gating": "none",
                "norm": "layer_norm",
                "positional_embedding": "rope",
            },
        )
        d_model = transformer.get("d_model", MimiTransformerConfig.d_model)
        for key in ("input_dimension",):
            if transformer.get(key, d_model) != d_model:
                raise ConfigError(f"transformer.{key} must equal d_model ({d_model})")
        if list(transformer.get("output_dimensions", [d_model])) != [d_model]:
            raise ConfigError(f"transformer.output_dimensions must be [{d_model}]")
        quantizer = dict(raw.pop("quantizer", {}))
        return cls(
            sample_rate=raw.pop("sample_rate", SAMPLE_RATE),
            frame_rate=raw.pop("frame_rate", FRAME_RATE),
            seanet=_build(
                SEANetConfig,
                "seanet",
                seanet,
                {
                    "causal",
                    "activation",
                    "norm",
                    "pad_mode",
                    "true_skip",
                    "disable_norm_outer_blocks",
                },
            ),
            quantizer=_build(QuantizerConfig, "quantizer", quantizer),
            transformer=_build(
                MimiTransformerConfig,
                "transformer",
                transformer,
                {
                    "causal",
                    "conv_layout",
                    "gating",
                    "norm",
                    "positional_embedding",
                    "input_dimension",
                    "output_dimensions",
                },
            ),
            num_codebooks=num_codebooks,
        )

    @classmethod
    def from_json(cls, path: str | Path, num_codebooks: int = 8) -> MimiConfig:
        return cls.from_dict(json.loads(Path(path).read_text()), num_codebooks)


@dataclass
class LMConfig:
    """Helium + depth transformer. Defaults: Moshi 7B (`moshiko`/`moshika`)."""

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
    delays: list[int] = field(
        default_factory=lambda: [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    )

    def __post_init__(self) -> None:
        if len(self.delays) != self.n_q + 1:
            raise ConfigError(
                f"delays has {len(self.delays)} entries, expected n_q + 1 = "
                f"{self.n_q + 1} (text, then each audio codebook)"
            )
        if self.depformer_dim_feedforward is None:
            self.depformer_dim_feedforward = int(self.hidden_scale * self.depformer_dim)

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
    "extra_heads_num_heads": 0,
    "conditioners": None,
    "fuser": None,
    "cross_attention": False,
    "lora": False,
}
# Keys that do not change the architecture at inference.
_LM_IGNORED = {
    "depformer_context",
    "depformer_max_period",
    "depformer_causal",
    "extra_heads_dim",
    "gradient_checkpointing",
}
SUPPORTED_MODEL_TYPES = ("moshi",)


@dataclass
class CheckpointConfig:
    """What a checkpoint's config.json says: the LM, where the other files are, sampling defaults."""

    lm: LMConfig = field(default_factory=LMConfig)
    moshi_name: str = MOSHI_NAME
    mimi_name: str = MIMI_NAME
    tokenizer_name: str = TOKENIZER_NAME
    mimi_config_name: str | None = None
    model_type: str = "moshi"
    lm_gen_config: dict[str, Any] = field(default_factory=dict)
    quantize: bool = False  # a q8 checkpoint: int8 linear weights with float32 scales

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckpointConfig:
        raw = dict(raw)
        files = {
            k: raw.pop(k)
            for k in ("moshi_name", "mimi_name", "tokenizer_name", "mimi_config_name")
            if k in raw
        }
        model_type = raw.pop("model_type", "moshi")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"model_type {model_type!r} is not supported: this app runs Moshi dialogue "
                f"models ({', '.join(SUPPORTED_MODEL_TYPES)}), such as kyutai/moshiko-pytorch-bf16"
            )
        lm_gen_config = raw.pop("lm_gen_config", {}) or {}
        quantize = raw.pop("quantize", None) or False
        if not isinstance(quantize, bool):
            raise ConfigError(
                f"config.json: quantize = {quantize!r} is not supported (true or false)"
            )
        for key in ("lora_name", "model_id", "tts_config", "stt_config"):
            if raw.pop(key, None):
                raise ConfigError(f"config.json key {key!r} is not supported by this app")
        for key, supported in _LM_FIXED.items():
            value = raw.pop(key, None)
            if value is not None and value != supported:
                raise ConfigError(
                    f"config.json: {key} = {value!r} is not supported (only {supported!r})"
                )
        for key in _LM_IGNORED:
            raw.pop(key, None)
        lm = _build(LMConfig, "config.json", raw)
        return cls(
            lm=lm,
            model_type=model_type,
            lm_gen_config=dict(lm_gen_config),
            quantize=quantize,
            **files,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> CheckpointConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
