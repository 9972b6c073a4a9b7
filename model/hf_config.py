"""The transformers format's configs, read as ours (torch-free).

transformers defines its own layout for Moshi (`MoshiForConditionalGeneration.save_pretrained`; the
public ones are kmhf/hf-moshiko and kmhf/hf-moshika) and for Mimi alone (`MimiModel`, kyutai/mimi):

    config.json                      model_type "moshi", Mimi's config inside (audio_encoder_config)
    model.safetensors                or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    generation_config.json           sampling: temperature/top_k (text), depth_decoder_config (audio)
    tokenizer.json                   the tokenizer, for the `tokenizers` package (no SentencePiece file)

This module turns config.json into a `CheckpointConfig` (with Mimi's config inside it) and
generation_config.json into `lm_gen_config`; `model.hf_layout` maps the tensors. transformers 4.x
and 5.x spell some keys differently (`rope_theta` or `rope_parameters.rope_theta`; the depth
decoder's settings flat as `depth_*` or in `depth_decoder_config`): both are read. What the format
cannot express differently from Kyutai's Moshi (delays, padding ids) is Moshi's.

Everything that would change the computation and that our model does not do (grouped-query
attention, attention biases, another activation or norm epsilon) is a ConfigError naming the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .config import (
    FRAME_RATE,
    CheckpointConfig,
    ConfigError,
    LMConfig,
    MimiConfig,
    MimiTransformerConfig,
    QuantizerConfig,
    SEANetConfig,
)

FORMAT = "transformers"
INDEX_NAME = "model.safetensors.index.json"  # sharded weights: the index names the shards
WEIGHTS_NAME = "model.safetensors"  # unsharded weights
TOKENIZER_JSON = "tokenizer.json"
GENERATION_CONFIG_NAME = "generation_config.json"
MIMI_PREFIX = "audio_encoder."  # where Mimi's tensors sit in a Moshi checkpoint


def is_index(path: Path) -> bool:
    """Whether `path` is a sharded checkpoint's index rather than a weights file."""
    return path.name.endswith(".index.json")  # model.safetensors.index.json, or a variant's


def is_transformers_config(raw: Any) -> bool:
    """Whether a config.json was written by transformers (a Moshi or a Mimi of its format)."""
    if not isinstance(raw, dict):
        return False
    architectures = raw.get("architectures") or []
    return (
        "audio_encoder_config" in raw
        or "audio_encoder" in raw
        or raw.get("model_type") == "mimi"
        or "transformers_version" in raw
        or any(str(a).startswith(("Moshi", "Mimi")) for a in architectures)
    )


def _get(raw: dict[str, Any], key: str, default: Any = None) -> Any:
    return raw.get(key, default)


def _rope_theta(raw: dict[str, Any], where: str) -> float:
    """transformers 5.x: rope_parameters.rope_theta (type "default"); 4.x: rope_theta."""
    params = raw.get("rope_parameters") or raw.get("rope_scaling")
    if isinstance(params, dict):
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise ConfigError(f"{where}rope_parameters.rope_type = {kind!r} is not supported")
        if "rope_theta" in params:
            return params["rope_theta"]
    return raw.get("rope_theta", 10000.0)


def _require(where: str, key: str, value: Any, supported: Any) -> None:
    if value != supported:
        raise ConfigError(f"{where}{key} = {value!r} is not supported (only {supported!r})")


def _heads(raw: dict[str, Any], where: str, hidden: int, default: int) -> int:
    """The number of heads (transformers' `default` where the key is absent); grouped-query
    attention and other head sizes are refused."""
    heads_key, kv_key = "num_attention_heads", "num_key_value_heads"
    heads = raw.get(heads_key, default)
    kv_heads = raw.get(kv_key) or heads
    _require(where, kv_key, kv_heads, heads)
    head_dim = raw.get("head_dim")
    if head_dim is not None and isinstance(heads, int) and heads > 0:
        _require(where, "head_dim", head_dim, hidden // heads)
    return heads


def mimi_config(raw: Any, num_codebooks: int = 8, where: str = "") -> MimiConfig:
    """Our MimiConfig from transformers' MimiConfig dict (`where` prefixes key names)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.') or 'Mimi config'} must be a JSON object")
    hidden = raw.get("hidden_size", 512)
    _require(where, "audio_channels", raw.get("audio_channels", 1), 1)
    _require(where, "use_causal_conv", raw.get("use_causal_conv", True), True)
    _require(where, "pad_mode", raw.get("pad_mode", "constant"), "constant")
    _require(where, "use_conv_shortcut", raw.get("use_conv_shortcut", False), False)
    _require(where, "hidden_act", raw.get("hidden_act", "gelu"), "gelu")
    _require(where, "norm_eps", raw.get("norm_eps", 1e-5), 1e-5)
    _require(where, "attention_bias", raw.get("attention_bias", False), False)
    _require(where, "upsample_groups", raw.get("upsample_groups", hidden), hidden)
    _require(where, "trim_right_ratio", raw.get("trim_right_ratio", 1.0), 1.0)
    codebook_dim = raw.get("codebook_dim", 256)
    _require(
        where,
        "vector_quantization_hidden_dimension",
        raw.get("vector_quantization_hidden_dimension", codebook_dim),
        codebook_dim,
    )
    if raw.get("frame_rate", FRAME_RATE) != FRAME_RATE:
        _require(where, "frame_rate", raw.get("frame_rate"), FRAME_RATE)
    heads = _heads(raw, where, hidden, default=8)
    try:
        return MimiConfig(
            sample_rate=raw.get("sampling_rate", 24000),
            seanet=SEANetConfig(
                dimension=hidden,
                n_filters=raw.get("num_filters", 64),
                n_residual_layers=raw.get("num_residual_layers", 1),
                ratios=list(raw.get("upsampling_ratios") or [8, 6, 5, 4]),
                kernel_size=raw.get("kernel_size", 7),
                residual_kernel_size=raw.get("residual_kernel_size", 3),
                last_kernel_size=raw.get("last_kernel_size", 3),
                dilation_base=raw.get("dilation_growth_rate", 2),
                compress=raw.get("compress", 2),
            ),
            quantizer=QuantizerConfig(
                dimension=codebook_dim,
                n_q=raw.get("num_quantizers", 32),
                bins=raw.get("codebook_size", 2048),
                input_dimension=hidden,
                output_dimension=hidden,
                n_q_semantic=raw.get("num_semantic_quantizers", 1),
            ),
            transformer=MimiTransformerConfig(
                d_model=hidden,
                num_heads=heads,
                num_layers=raw.get("num_hidden_layers", 8),
                dim_feedforward=raw.get("intermediate_size", 2048),
                layer_scale=raw.get("layer_scale_initial_scale", 0.01),
                context=raw.get("sliding_window", 250),
                max_period=_rope_theta(raw, where),
            ),
            num_codebooks=num_codebooks,
        )
    except ConfigError as e:
        raise ConfigError(f"{where}{e} (in our names)") from None


def _feedforward(ffn_dim: Any, key: str) -> int:
    """Kyutai's `dim_feedforward` for transformers' `ffn_dim`, the rows of the gated MLP's first
    linear (2 x hidden, where Kyutai's gating has hidden = 2 x dim_feedforward // 3)."""
    if not isinstance(ffn_dim, int) or isinstance(ffn_dim, bool) or ffn_dim < 2 or ffn_dim % 2:
        raise ConfigError(f"{key} = {ffn_dim!r} must be an even whole number of 2 or more")
    hidden = ffn_dim // 2
    return math.ceil(3 * hidden / 2)  # 2 x that // 3 == hidden, for even and odd hidden alike


def _depth(raw: dict[str, Any]) -> dict[str, Any]:
    """The depth decoder's settings: `depth_decoder_config` (transformers 4.46+ and 5.x), or the
    flat `depth_*` keys of the first releases."""
    nested = raw.get("depth_decoder_config")
    if isinstance(nested, dict):
        return {"where": "depth_decoder_config.", **nested}
    return {
        "where": "depth_",
        "hidden_size": raw.get("depth_hidden_size", 1024),
        "num_hidden_layers": raw.get("depth_num_hidden_layers", 6),
        "num_attention_heads": raw.get("depth_num_attention_heads", 16),
        "num_key_value_heads": raw.get("depth_num_key_value_heads"),
        "ffn_dim": raw.get("depth_ffn_dim", 5632),
        "head_dim": raw.get("depth_head_dim"),
    }


def moshi_config(raw: dict[str, Any], source: str) -> CheckpointConfig:
    """Our CheckpointConfig for a transformers Moshi config.json (errors begin with `source`).
    The file names are the format's; `model.hf_layout` finds the shards."""
    try:
        return _moshi_config(raw)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _moshi_config(raw: dict[str, Any]) -> CheckpointConfig:
    _require("", "model_type", raw.get("model_type"), "moshi")
    _require("", "hidden_act", raw.get("hidden_act", "silu"), "silu")
    _require("", "rms_norm_eps", raw.get("rms_norm_eps", 1e-8), 1e-8)
    mimi_raw = raw.get("audio_encoder_config", raw.get("audio_encoder"))
    if mimi_raw is None:
        raise ConfigError("audio_encoder_config (Mimi's config) is missing")
    dim = raw.get("hidden_size", 4096)
    heads = _heads(raw, "", dim, default=32)
    num_codebooks = raw.get("num_codebooks", 8)
    mimi = mimi_config(mimi_raw, num_codebooks, "audio_encoder_config.")
    card = raw.get("audio_vocab_size") or mimi.quantizer.bins
    depth = _depth(raw)
    where = depth.pop("where")
    _require(where, "hidden_act", depth.get("hidden_act", "silu"), "silu")
    _require(where, "rms_norm_eps", depth.get("rms_norm_eps", 1e-8), 1e-8)
    depth_dim = depth.get("hidden_size", 1024)
    depth_heads = _heads(depth, where, depth_dim, default=16)
    dim_feedforward = _feedforward(raw.get("ffn_dim", 22528), "ffn_dim")
    if dim_feedforward == 4 * dim:  # Kyutai's gating reads 4 x dim as its own default
        raise ConfigError(f"ffn_dim = {raw.get('ffn_dim')} is not supported with hidden_size {dim}")
    hidden_scale = dim_feedforward / dim
    if isinstance(dim, int) and dim > 0 and int(hidden_scale * dim) != dim_feedforward:
        hidden_scale = (dim_feedforward + 0.5) / dim  # int(hidden_scale * dim) gives it back
    semantic_delay, acoustic_delay = 0, 1  # Moshi's: every acoustic codebook a frame late
    stream = [semantic_delay] + [acoustic_delay] * (num_codebooks - 1)
    lm = LMConfig(
        dim=dim,
        text_card=raw.get("vocab_size", 32000),
        n_q=2 * num_codebooks,
        dep_q=num_codebooks,
        card=card,
        num_heads=heads,
        num_layers=raw.get("num_hidden_layers", 32),
        hidden_scale=hidden_scale,
        context=raw.get("sliding_window", 3000),
        max_period=_rope_theta(raw, ""),
        depformer_dim=depth_dim,
        depformer_dim_feedforward=_feedforward(depth.get("ffn_dim", 5632), f"{where}ffn_dim"),
        depformer_num_heads=depth_heads,
        depformer_num_layers=depth.get("num_hidden_layers", 6),
        delays=[0, *stream, *stream],
    )
    return CheckpointConfig(
        lm=lm,
        moshi_name=INDEX_NAME,
        mimi_name=INDEX_NAME,
        tokenizer_name=TOKENIZER_JSON,
        format=FORMAT,
        mimi=mimi,
    )


def generation_defaults(raw: Any) -> dict[str, Any]:
    """lm_gen_config (our sampling defaults) from transformers' generation_config.json: the
    top level samples the text, `depth_decoder_config` the audio. Keys it does not set keep the
    app's defaults."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    for target, source in (
        ((("temp_text", "top_k_text")), raw),
        (
            ("temp", "top_k"),
            raw.get("depth_decoder_config") or {},
        ),
    ):
        if not isinstance(source, dict):
            continue
        temp_key, top_k_key = target
        if source.get("do_sample") is False:
            out[temp_key] = 0.0
        elif "temperature" in source:
            out[temp_key] = source["temperature"]
        if "top_k" in source:
            out[top_k_key] = source["top_k"]
    return out
