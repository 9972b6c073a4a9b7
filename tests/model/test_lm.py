"""Parity of model/lm.py and model/generate.py with Kyutai's original implementation (moshi 0.2.13).

Both LMs hold one random state dict of a small Moshi-shaped config (Moshi's 17 streams and delays,
an attention context of 16 steps), written to safetensors in each of Kyutai's two attention layouts:
"fused", as the released files store it (`self_attn.in_proj_weight`, stacked step-major in the depth
transformer), and "split", as the original holds it in memory (`self_attn.in_projs.{step}.weight`).
The original loads each file with its own loader and ours with `load_weights`, so the layouts are
checked against the original's reading of them, not against our own.

Weights are drawn with a 1/sqrt(fan-in) scale so that logits spread over a few units: greedy choices
are well separated and the streams vary, so a wrong position, mask or delay changes the tokens.
Everything runs in fp32 on the CPU, the original with torch.compile off.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from moshi.models import loaders
from moshi.models.lm import LMGen, LMModel
from moshi.utils.compile import no_compile
from safetensors.torch import save_file
from torch import nn

from model.checkpoint import load_weights
from model.config import CheckpointConfig, LMConfig, MimiConfig
from model.generate import FrameGenerator, SamplingSettings
from model.lm import LM
from model.mimi import Mimi
from model.streaming import streaming

FRAME = 1920  # samples per 80 ms frame at 24 kHz
CARD = 32  # audio codebook size, shared by the LM and Mimi
TEXT_CARD = 100
CONTEXT = 16
RTOL = 1e-4

# Kyutai's config.json for Moshi 7B (the original's own keyword arguments), with small sizes.
LM_CONFIG: dict[str, Any] = {
    **loaders._lm_kwargs,
    "dim": 64,
    "num_heads": 4,
    "num_layers": 2,
    "context": CONTEXT,
    "text_card": TEXT_CARD,
    "card": CARD,
    "depformer_dim": 32,
    "depformer_num_heads": 2,
    "depformer_num_layers": 2,
    "depformer_dim_feedforward": int(4.125 * 32),
}

# A Kyutai-format Mimi config: Kyutai's frame (ratios 8 6 5 4, 1920 samples) with narrow layers.
MIMI_CONFIG: dict[str, Any] = copy.deepcopy(loaders._mimi_config)
MIMI_CONFIG["seanet"].update(n_filters=8, dimension=32)
MIMI_CONFIG["transformer"].update(
    d_model=32,
    num_heads=2,
    num_layers=2,
    dim_feedforward=64,
    context=20,
    input_dimension=32,
    output_dimensions=[32],
)
MIMI_CONFIG["quantizer"].update(
    dimension=16, n_q=8, bins=CARD, input_dimension=32, output_dimension=32
)


pytestmark = pytest.mark.usefixtures("one_thread")


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).norm() / ref.double().norm()).item()


def to_fused_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In-memory names -> the released files' names: each attention's per-step projections
    concatenated step-major into `self_attn.in_proj_weight` and `self_attn.out_proj.weight`."""
    fused: dict[str, torch.Tensor] = {}
    steps: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.fullmatch(r"(.*\.self_attn\.)(in|out)_projs\.(\d+)\.weight", key)
        if m is None:
            fused[key] = value
        else:
            name = m[1] + ("in_proj_weight" if m[2] == "in" else "out_proj.weight")
            steps.setdefault(name, {})[int(m[3])] = value
    for name, by_step in steps.items():
        fused[name] = torch.cat([by_step[i] for i in range(len(by_step))])
    return fused


def random_lm_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Embeddings N(0, 1), linear weights N(0, 1 / fan_in), RMSNorm gains near 1."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".alpha"):
            value = 1 + 0.2 * torch.randn(value.shape, generator=g)
        elif key.split(".")[0] in ("emb", "text_emb", "depformer_emb", "depformer_text_emb"):
            value = torch.randn(value.shape, generator=g)
        else:
            assert value.dim() == 2, key
            value = torch.randn(value.shape, generator=g) / math.sqrt(value.shape[1])
        state[key] = value
    return state


def random_mimi_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights at a 1/sqrt(fan-in) scale, so the latent follows the signal (a default init nearly
    flattens it, and every frame would get the same codes); codebooks at the latent's scale."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("_codebook.embedding_sum"):
            value = 0.3 * torch.randn(value.shape, generator=g)
        elif key.endswith("_codebook.cluster_usage"):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith(("layer_scale_1.scale", "layer_scale_2.scale")):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif value.is_floating_point() and value.dim() >= 2:
            value = torch.randn(value.shape, generator=g) / math.sqrt(value[0].numel())
        elif key.endswith(".bias") and "norm" not in key:
            value = 0.1 * torch.randn(value.shape, generator=g)
        state[key] = value.clone()
    return state


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random LM state dict, written once in each layout."""
    folder = tmp_path_factory.mktemp("lm")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = loaders.get_moshi_lm(None, lm_kwargs=LM_CONFIG, device="cpu", dtype=torch.float32)
    state = random_lm_state(model, seed=0)
    return {
        "split": save(state, folder / "split.safetensors"),
        "fused": save(to_fused_layout(state), folder / "fused.safetensors"),
    }


def load_lms(path: Path) -> tuple[LMModel, LM]:
    """The original (read by its own loader) and ours, from one weights file."""
    ref = loaders.get_moshi_lm(str(path), lm_kwargs=LM_CONFIG, device="cpu", dtype=torch.float32)
    ours = LM(CheckpointConfig.from_dict(LM_CONFIG).lm)
    load_weights(ours, path)
    return ref.eval(), ours.eval()


@pytest.fixture(scope="module")
def mimis(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Mimi]:
    """The original Mimi and ours on one random state dict, ours read from the released layout."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref = loaders.get_mimi(None, copy.deepcopy(MIMI_CONFIG), device="cpu")
    state = random_mimi_state(ref, seed=1)
    ref.load_state_dict(state)  # before any encode: the original caches its centroids
    ours = Mimi(MimiConfig.from_dict(copy.deepcopy(MIMI_CONFIG)))
    load_weights(
        ours, save(to_fused_layout(state), tmp_path_factory.mktemp("mimi") / "mimi.safetensors")
    )
    return ref.eval(), ours.eval()


def random_tokens(g: torch.Generator, batch: int, steps: int) -> torch.Tensor:
    """[B, 17, T] tokens over each stream's whole input range: -1 (absent, embeds to zero),
    0..card - 1, and card (the initial token); text likewise with text_card."""
    tokens = torch.randint(-1, CARD + 1, (batch, 17, steps), generator=g)
    tokens[:, 0] = torch.randint(-1, TEXT_CARD + 1, (batch, steps), generator=g)
    return tokens


def chirp(frames: int, seed: int) -> torch.Tensor:
    """[1, 1, frames x 1920]: a rising tone plus a little noise."""
    t = torch.arange(frames * FRAME) / 24000
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(seed))
    return (0.3 * torch.sin(2 * math.pi * (150 * t + 300 * t**2)) + 0.05 * noise)[None, None]


# --- Forward passes: text logits and depth logits ------------------------------------------------


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_streaming_text_logits_match_the_original(lm_files, layout):
    ref, ours = load_lms(lm_files[layout])
    B, steps = 2, 3 * CONTEXT  # well past the context: the ring cache wraps twice
    tokens = random_tokens(torch.Generator().manual_seed(1), B, steps)
    with torch.no_grad(), no_compile(), ref.streaming(B), streaming(ours, B):
        for t in range(steps):
            ref_hidden, ref_logits = ref.forward_text(tokens[..., t : t + 1])
            hidden, logits = ours.forward_temporal(tokens[..., t : t + 1])
            assert logits.shape == (B, 1, TEXT_CARD) and hidden.shape == (B, 1, 64)
            assert relative_error(logits, ref_logits[:, 0]) <= RTOL, f"step {t}"
            assert relative_error(hidden, ref_hidden) <= RTOL, f"step {t}"
    assert ref_logits.std() > 0.5  # not degenerate: a wrong weight would show


def test_one_shot_text_logits_match_the_original(lm_files):
    """A whole sequence at once, outside streaming, longer than the context window."""
    ref, ours = load_lms(lm_files["fused"])
    tokens = random_tokens(torch.Generator().manual_seed(2), 2, CONTEXT + 8)
    with torch.no_grad(), no_compile():
        _, ref_logits = ref.forward_text(tokens)
        _, logits = ours.forward_temporal(tokens)
    assert relative_error(logits, ref_logits[:, 0]) <= RTOL


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_depth_logits_match_the_original_for_every_codebook(lm_files, layout):
    ref, ours = load_lms(lm_files[layout])
    B, frames = 2, 3
    g = torch.Generator().manual_seed(3)
    # The depth transformer restarts every frame: the original opens a fresh streaming state per
    # frame (as LMGen does); ours keeps one open, as our generator does.
    with torch.no_grad(), no_compile(), streaming(ours, B):
        for frame in range(frames):
            hidden = torch.randn(B, 1, 64, generator=g)
            previous = torch.randint(0, CARD, (B, 8), generator=g)
            previous[:, 0] = torch.randint(0, TEXT_CARD, (B,), generator=g)  # the text token
            with ref.depformer.streaming(B):
                for k in range(8):
                    ref_logits = ref.forward_depformer(k, previous[:, k, None, None], hidden)
                    logits = ours.forward_depth(k, previous[:, k, None], hidden)
                    assert logits.shape == (B, 1, CARD)
                    err = relative_error(logits, ref_logits[:, 0])
                    assert err <= RTOL, f"frame {frame}, codebook {k}: relative error {err:.2e}"


# --- The frame loop ------------------------------------------------------------------------------


def test_greedy_conversation_with_mimi_matches_the_original(lm_files, mimis):
    """The whole per-frame pipeline, original against ours, for 110 frames (almost 7 contexts): Mimi
    encodes a frame of microphone audio to 8 codes, the LM steps, Mimi decodes Moshi's frame."""
    ref_lm, lm = load_lms(lm_files["fused"])
    ref_mimi, mimi = mimis
    ref_gen = LMGen(ref_lm, use_sampling=False)
    gen = FrameGenerator(lm, SamplingSettings(greedy=True))
    frames = 110
    audio = chirp(frames, seed=4)
    user_codes, outputs, ref_pcm, pcm = [], [], [], []
    with (
        torch.no_grad(),
        no_compile(),
        ref_gen.streaming(1),
        ref_mimi.streaming(1),
        streaming(gen, 1),
        streaming(mimi, 1),
    ):
        for t in range(frames):
            frame = audio[..., t * FRAME : (t + 1) * FRAME]
            ref_codes, codes = ref_mimi.encode(frame), mimi.encode(frame)  # [1, 8, 1]
            assert torch.equal(codes, ref_codes), f"frame {t}: Mimi's codes differ"
            user_codes.append(codes)

            ref_out, out = ref_gen.step(ref_codes), gen.step(codes[..., 0])
            if t == 0:  # nothing is complete yet
                assert ref_out is None and out is None
                continue
            assert out is not None and out.shape == (1, 9) and out.dtype == torch.long
            assert torch.equal(out, ref_out[..., 0]), (
                f"frame {t}: {out.tolist()} != original {ref_out[..., 0].tolist()}"
            )
            outputs.append(out)

            ref_pcm.append(ref_mimi.decode(ref_out[:, 1:]))
            pcm.append(mimi.decode(out[:, 1:, None]))
            assert pcm[-1].shape == (1, 1, FRAME)
    err = relative_error(torch.cat(pcm, -1), torch.cat(ref_pcm, -1))
    assert err <= 1e-5, f"decoded audio: relative error {err:.2e}"

    # The run exercised something: the user's codes and Moshi's tokens vary.
    user_codes, outputs = torch.cat(user_codes, -1), torch.stack(outputs)
    assert all(len(user_codes[0, k].unique()) >= 3 for k in range(8))
    assert all(len(outputs[:, 0, k].unique()) >= 10 for k in range(9))  # text and 8 codebooks


def test_greedy_batch_of_two_matches_the_original(lm_files):
    """Two conversations side by side, the weights from the split layout, random user codes."""
    ref_lm, lm = load_lms(lm_files["split"])
    ref_gen = LMGen(ref_lm, use_sampling=False)
    gen = FrameGenerator(lm, SamplingSettings(greedy=True))
    user = torch.randint(0, CARD, (40, 2, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), no_compile(), ref_gen.streaming(2), streaming(gen, 2):
        for t in range(len(user)):
            ref_out, out = ref_gen.step(user[t, :, :, None]), gen.step(user[t])
            if t == 0:
                assert ref_out is None and out is None
            else:
                assert torch.equal(out, ref_out[..., 0]), f"frame {t}"
    assert not torch.equal(out[0], out[1])  # the two conversations differ


# --- Moshi 7B's shape, without its weights -------------------------------------------------------


def test_moshi_7b_shapes_match_the_original_and_the_released_file():
    with torch.device("meta"):
        ours = LM(LMConfig())
        ref_config = {k: v for k, v in loaders._lm_kwargs.items() if k != "depformer_causal"}
        ref = LMModel(device="meta", dtype=torch.bfloat16, **ref_config)
    assert sum(p.numel() for p in ours.parameters()) == 7_687_729_152
    state = ours.state_dict()
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }

    released = to_fused_layout(state)  # meta tensors: shapes only
    assert len(released) == 355
    shapes = {k: tuple(v.shape) for k, v in released.items()}
    assert shapes["text_emb.weight"] == (32001, 4096)
    assert shapes["transformer.layers.31.self_attn.in_proj_weight"] == (12288, 4096)
    assert shapes["transformer.layers.0.gating.linear_in.weight"] == (22528, 4096)
    assert shapes["depformer.layers.5.self_attn.in_proj_weight"] == (24576, 1024)
    assert shapes["depformer.layers.0.self_attn.out_proj.weight"] == (8192, 1024)
    assert shapes["depformer.layers.0.gating.7.linear_out.weight"] == (1024, 2816)
    assert (
        shapes["depformer_emb.6.weight"] == (2049, 1024) and "depformer_emb.7.weight" not in shapes
    )
