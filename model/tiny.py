"""A tiny Moshi with random weights, written as a model folder in Kyutai's layout.

Tests, benchmarks and self-checks load it through exactly the code that loads a released model:
config.json, the LM weights (fused attention keys, as Kyutai publishes them, or split ones), Mimi's
weights with its own config, and a SentencePiece tokenizer trained on the spot.
`write_random_checkpoint` writes a Moshi of any shape the same way (the benchmark's models).
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece
import torch
from safetensors.torch import save_file
from torch import nn

from .checkpoint import fuse_attention
from .config import (
    MIMI_NAME,
    MOSHI_NAME,
    PERSONAPLEX_MODEL_TYPE,
    TOKENIZER_NAME,
    CheckpointConfig,
    LMConfig,
    MimiConfig,
)
from .lm import LM
from .mimi import Mimi
from .quant import quantize_linears

MIMI_CONFIG_NAME = "mimi_config.json"
Q8_NAME = "model.q8.safetensors"  # Kyutai's q8 repos: the bf16 file's name with .q8 inserted

# A Mimi with Kyutai's frame (1920 samples, ratios 8 6 5 4) but narrow layers.
TINY_MIMI = {
    "sample_rate": 24000,
    "channels": 1,
    "frame_rate": 12.5,
    "seanet": {
        "dimension": 32,
        "n_filters": 4,
        "n_residual_layers": 1,
        "ratios": [8, 6, 5, 4],
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 3,
        "dilation_base": 2,
        "compress": 2,
        "causal": True,
        "norm": "none",
        "pad_mode": "constant",
        "true_skip": True,
        "activation": "ELU",
    },
    "quantizer": {
        "dimension": 16,
        "n_q": 8,
        "bins": 64,
        "input_dimension": 32,
        "output_dimension": 32,
    },
    "transformer": {
        "d_model": 32,
        "num_heads": 2,
        "num_layers": 2,
        "dim_feedforward": 64,
        "layer_scale": 0.01,
        "context": 20,
        "max_period": 10000,
        "causal": True,
        "conv_layout": True,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "input_dimension": 32,
        "output_dimensions": [32],
    },
}

# Every key of Kyutai's config.json for Moshi 7B, with small sizes.
TINY_LM = {
    "dim": 32,
    "text_card": 200,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 8,
    "card": 64,
    "num_heads": 2,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 16,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 16,
    "depformer_dim_feedforward": 66,
    "depformer_num_heads": 2,
    "depformer_num_layers": 2,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
}

_CORPUS = """\
Hello, how are you doing today? I am Moshi, and I can listen and talk at the same time.
What would you like to talk about? The weather is nice, the sun is out and the sky is blue.
Tell me about your day. I went to the market, bought some bread and met a friend.
That sounds lovely! Do you like music? I play the piano and sing a little bit.
"""


def train_tokenizer(path: Path, vocab_size: int = 200) -> None:
    """A small SentencePiece model with Moshi's special ids: 0 unk, 1 bos, 2 eos, 3 pad."""
    with path.open("wb") as out:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(_CORPUS.splitlines()),
            model_writer=out,
            vocab_size=vocab_size,
            model_type="bpe",
            character_coverage=1.0,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            minloglevel=2,
        )


def write_tiny_checkpoint(
    folder: str | Path,
    *,
    layout: str | None = None,
    seed: int = 0,
    vocab_size: int = 200,
    quantized: bool = False,
) -> Path:
    """Write config.json, LM and Mimi weights, Mimi's config and a tokenizer into `folder`.

    `layout`: "fused" (the default for float weights, as Kyutai's bf16 repos) or "split" (the
    default with `quantized`, as Kyutai's q8 repos). `quantized` writes what Kyutai's
    `scripts/export_quantized.py` writes: the model in bf16, every linear quantized by
    bitsandbytes' rule from its float16 copy into an int8 `weight` and a float32 `weight_scb`,
    saved as `model.q8.safetensors`, and config.json with `"quantize": true` and `moshi_name`
    naming that file. (The script also points `mimi_name` and `tokenizer_name` at the bf16 repo
    with hf:// names; here those files sit in the folder.)
    """
    layout = layout or ("split" if quantized else "fused")
    assert layout in ("fused", "split"), layout
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    train_tokenizer(folder / TOKENIZER_NAME, vocab_size)
    config = dict(
        TINY_LM, text_card=vocab_size, mimi_config_name=MIMI_CONFIG_NAME, model_type="moshi"
    )
    if quantized:
        config.update(quantize=True, moshi_name=Q8_NAME)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / MIMI_CONFIG_NAME).write_text(json.dumps(TINY_MIMI, indent=2))

    lm = LM(CheckpointConfig.from_dict(config).lm)
    if quantized:
        lm = lm.to(torch.bfloat16)
        for module in lm.modules():  # the original's QLinear quantizes a float16 copy
            if isinstance(module, nn.Linear):
                module.weight.data = module.weight.data.half()
        quantize_linears(lm, torch.bfloat16)
    lm_state = lm.state_dict()
    mimi_state = Mimi(MimiConfig.from_dict(TINY_MIMI)).state_dict()
    for key, value in mimi_state.items():  # a fresh codebook is all zeros: make it distinct
        if key.endswith("embedding_sum"):
            value.normal_()
    if layout == "fused":
        lm_state, mimi_state = fuse_attention(lm_state), fuse_attention(mimi_state)
    lm_name = Q8_NAME if quantized else MOSHI_NAME
    save_file({k: v.contiguous() for k, v in lm_state.items()}, str(folder / lm_name))
    save_file({k: v.contiguous() for k, v in mimi_state.items()}, str(folder / MIMI_NAME))
    return folder


def random_lm_state(lm_config: LMConfig, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random state dict for an LM of `lm_config`, in our (split) names, drawn tensor by tensor
    without building the model: embeddings N(0, 1), linear weights N(0, 1 / fan_in), norm gains 1.
    Only each tensor at `dtype` is held (Moshi 7B: 15.4 GB in bfloat16), plus one float32 draw."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LM(lm_config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.split(".")[0] in ("emb", "text_emb", "depformer_emb", "depformer_text_emb"):
            value = torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=g).div_(shape[-1] ** 0.5)
        else:
            value = torch.ones(shape)
        state[key] = value.to(dtype)
    return state


def write_random_checkpoint(
    folder: str | Path,
    lm_config: dict,
    mimi_config: dict | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    vocab_size: int = 200,
    model_type: str = "moshi",
) -> Path:
    """Write a Moshi of any shape with random weights into `folder`, in Kyutai's layout (fused
    attention keys, the LM in `dtype`, bfloat16 as released): config.json holding `lm_config`
    (Kyutai's config.json keys), the LM and Mimi weights, and a small tokenizer (`vocab_size`
    pieces; text ids past it decode to nothing). `mimi_config` (Kyutai's Mimi config format) is
    written beside it when given; None is the full-size Mimi of the released models, with no
    Mimi config file, as in Kyutai's repositories. Mimi's weights are its random init with
    random codebooks, in float32.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(folder / TOKENIZER_NAME, vocab_size)
    config = dict(lm_config, model_type=model_type)  # "personaplex": dep_q 16 unless given
    if mimi_config is not None:
        config["mimi_config_name"] = MIMI_CONFIG_NAME
        (folder / MIMI_CONFIG_NAME).write_text(json.dumps(mimi_config, indent=2))
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    lm_state = fuse_attention(random_lm_state(CheckpointConfig.from_dict(config).lm, seed, dtype))
    save_file({k: v.contiguous() for k, v in lm_state.items()}, str(folder / MOSHI_NAME))
    del lm_state
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mimi = Mimi(MimiConfig.from_dict(mimi_config) if mimi_config else MimiConfig())
        mimi_state = mimi.state_dict()
        for key, value in mimi_state.items():  # a fresh codebook is all zeros: make it distinct
            if key.endswith("embedding_sum"):
                value.normal_()
    mimi_state = fuse_attention(mimi_state)
    save_file({k: v.contiguous() for k, v in mimi_state.items()}, str(folder / MIMI_NAME))
    return folder


def write_random_lora(
    folder: str | Path,
    base_config: dict,
    *,
    rank: int = 4,
    scaling: float = 2.0,
    seed: int = 0,
    layout: str = "split",
    dtype: torch.dtype = torch.float32,
    embeddings: tuple[str, ...] = (),
) -> Path:
    """Write what moshi-finetune saves for a LoRA run into `folder`: lora.safetensors with an
    adapter for every linear of the LM of `base_config` (the base's config.json keys), and
    config.json, the base's config plus "lora": true, lora_rank and lora_scaling.

    A is drawn N(0, 1 / in) and B N(0, 0.01 / rank), not zero as training starts it, so that the
    merged model differs from its base (by a few tenths of each weight at scaling 2). `layout`
    "split" names the adapters as moshi-finetune does (`self_attn.in_projs.{step}.lora_A.weight`);
    "fused" as the original's attention loader also reads them (`self_attn.in_proj.lora_A.weight`,
    the steps stacked). `embeddings` (e.g. "text_emb.weight") are saved whole, as with ft_embed.
    """
    from .finetune import LORA_NAME

    assert layout in ("split", "fused"), layout
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(base_config, lora=True, lora_rank=rank, lora_scaling=scaling)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    with torch.device("meta"):
        lm = LM(CheckpointConfig.from_dict(dict(base_config)).lm)
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in lm.named_modules():
        if isinstance(module, nn.Linear):
            out, inp = module.weight.shape
            state[f"{name}.lora_A.weight"] = torch.randn(rank, inp, generator=g) / inp**0.5
            state[f"{name}.lora_B.weight"] = torch.randn(out, rank, generator=g) * 0.1 / rank**0.5
    shapes = {k: v.shape for k, v in lm.state_dict().items()}
    for key in embeddings:
        state[key] = torch.randn(shapes[key], generator=g)
    if layout == "fused":
        groups: dict[str, list[tuple[int, str]]] = {}
        for key in list(state):
            parts = key.split(".")  # ...self_attn.in_projs.{step}.lora_A.weight
            if len(parts) > 4 and parts[-4] in ("in_projs", "out_projs"):
                fused = ".".join([*parts[:-4], parts[-4][:-1], *parts[-2:]])
                groups.setdefault(fused, []).append((int(parts[-3]), key))
        for fused, steps in groups.items():
            state[fused] = torch.cat([state.pop(key) for _, key in sorted(steps)])
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(folder / LORA_NAME))
    return folder


# A PersonaPlex-shaped LM (dep_q 16: the depth transformer also predicts the user's codebooks)
# with Moshi's card of 2048, so that the fork's fixed silence and sine codes are in range.
# Its attention context spans the whole prompt schedule, so the voice still counts when the user
# speaks.
TINY_PERSONAPLEX_LM = dict(TINY_LM, dim=64, num_heads=4, card=2048, depformer_dim=32, context=100)
del TINY_PERSONAPLEX_LM["dep_q"]  # model_type "personaplex" implies 16
TINY_PERSONAPLEX_MIMI = json.loads(json.dumps(TINY_MIMI))
TINY_PERSONAPLEX_MIMI["seanet"]["n_filters"] = 8
TINY_PERSONAPLEX_MIMI["quantizer"]["bins"] = 2048


def write_tiny_personaplex(folder: str | Path, *, seed: int = 0, vocab_size: int = 200) -> Path:
    """A tiny PersonaPlex in NVIDIA's layout, deterministic in `seed`: config.json with
    model_type "personaplex" (and small LM keys, where NVIDIA's has none), the LM in float32 with
    all 16 depth slices and fused attention keys, Mimi's weights and config, a tokenizer.

    The weights make every stage carry information: embeddings N(0, 1), linears N(0, 1 / fan_in)
    (the output heads 20 times that), norm gains near 1; Mimi's convs He-scaled (a default init flattens the signal), layer scales
    near 1 and codebooks N(0, 1), so a voice's frames get varied codes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(folder / TOKENIZER_NAME, vocab_size)
    config = dict(
        TINY_PERSONAPLEX_LM,
        text_card=vocab_size,
        mimi_config_name=MIMI_CONFIG_NAME,
        model_type=PERSONAPLEX_MODEL_TYPE,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / MIMI_CONFIG_NAME).write_text(json.dumps(TINY_PERSONAPLEX_MIMI, indent=2))
    lm_config = CheckpointConfig.from_dict(config).lm
    g = torch.Generator().manual_seed(seed)
    state = random_lm_state(lm_config, seed)
    for key, value in state.items():
        if key.endswith(".alpha"):
            value.copy_(1 + 0.2 * torch.randn(value.shape, generator=g))
        elif key == "text_linear.weight" or key.startswith("linears."):
            value.mul_(20)  # logits spread over tens of units: no near ties among 2048 codes
    save_file(
        {k: v.contiguous() for k, v in fuse_attention(state).items()}, str(folder / MOSHI_NAME)
    )
    _write_informative_mimi(folder / MIMI_NAME, TINY_PERSONAPLEX_MIMI, seed, g)
    return folder


def _write_informative_mimi(path: Path, config: dict, seed: int, g: torch.Generator) -> None:
    """A random Mimi of `config` whose every stage carries information: its convs He-scaled (a
    default init flattens the signal), layer scales near 1, codebooks N(0, 1) (drawn from `g`)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mimi_state = Mimi(MimiConfig.from_dict(config)).state_dict()
    for key, value in mimi_state.items():
        if key.endswith("_codebook.embedding_sum"):
            value.copy_(torch.randn(value.shape, generator=g))
        elif key.endswith("_codebook.cluster_usage"):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        elif key.endswith(("layer_scale_1.scale", "layer_scale_2.scale")):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        elif key.endswith(("conv.weight", "convtr.weight")):
            value.mul_(6**0.5)
    save_file({k: v.contiguous() for k, v in fuse_attention(mimi_state).items()}, str(path))


# A speech-to-text model (model.stt) of Kyutai STT's layout with small sizes: no depth transformer,
# all 32 of Mimi's codebooks in, all delays 0, the voice-activity heads; Mimi with 32 codebooks.
TINY_STT_LM = dict(
    TINY_LM,  # its depformer keys too, as Kyutai STT's config.json has them (with dep_q 0)
    dim=64,
    num_heads=4,
    n_q=32,
    dep_q=0,
    card=256,
    context=40,
    max_period=100000,
    delays=[0] * 33,
    extra_heads_num_heads=4,
    extra_heads_dim=6,
)
TINY_STT_MIMI = json.loads(json.dumps(TINY_MIMI))
TINY_STT_MIMI["quantizer"].update(n_q=32, bins=256)
TINY_STT_MIMI["seanet"]["n_filters"] = 8
STT_MIMI_NAME = "mimi-pytorch-e351c8d8@125.safetensors"  # Kyutai STT's file names
STT_TOKENIZER_NAME = "tokenizer_en_fr_audio_8000.model"


def write_tiny_stt(
    folder: str | Path,
    *,
    audio_delay_seconds: float = 0.5,
    audio_silence_prefix_seconds: float = 0.0,
    seed: int = 0,
    vocab_size: int = 200,
) -> Path:
    """A tiny Kyutai STT in Kyutai's layout, deterministic in `seed`: config.json with
    model_type "stt", stt_config, lm_gen_config and its own Mimi and tokenizer file names; the LM
    in float32 (fused attention keys); Mimi's weights and config (32 codebooks).

    The weights make every stage carry information: the text head's logits spread over many
    units (no near ties), Mimi's convs He-scaled and its codebooks N(0, 1), so each codebook's
    codes vary with the audio."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(folder / STT_TOKENIZER_NAME, vocab_size)
    config = dict(
        TINY_STT_LM,
        text_card=vocab_size,
        model_type="stt",
        stt_config={
            "audio_delay_seconds": audio_delay_seconds,
            "audio_silence_prefix_seconds": audio_silence_prefix_seconds,
        },
        lm_gen_config={"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50},
        mimi_name=STT_MIMI_NAME,
        tokenizer_name=STT_TOKENIZER_NAME,
        mimi_config_name=MIMI_CONFIG_NAME,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / MIMI_CONFIG_NAME).write_text(json.dumps(TINY_STT_MIMI, indent=2))
    lm_config = CheckpointConfig.from_dict(config).lm
    g = torch.Generator().manual_seed(seed)
    state = random_lm_state(lm_config, seed)
    for key, value in state.items():
        if key == "text_linear.weight" or key.startswith("extra_heads."):
            value.mul_(60)  # logits spread over tens of units: no near ties
    save_file(
        {k: v.contiguous() for k, v in fuse_attention(state).items()}, str(folder / MOSHI_NAME)
    )
    _write_informative_mimi(folder / STT_MIMI_NAME, TINY_STT_MIMI, seed, g)
    return folder
