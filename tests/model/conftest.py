"""Fixtures for the Mimi tests: the original implementation beside ours, on the same random weights.

The original is Kyutai's `moshi` package (installed --no-deps for these tests); every test that
needs it is skipped where it is missing. Both models get one random state dict, seeded: the
original's random init with the codebooks filled in (a fresh codebook is all zeros, which would
make every code 0 and the quantizer tests trivial), conv weights He-scaled so the signal survives
SEANet's depth, and layer scales drawn near 1 instead of 0.01, so the transformers weigh enough on
the output for a wrong position or mask to show.

Two sizes: `full` is Kyutai's released architecture (built by `get_mimi(None)` and our `Mimi()`,
so our defaults are checked too); `small` is a few-channel Mimi with an attention context of 20
steps, written as a Kyutai-format mimi config dict that both implementations read. Its frame stays
1920 samples (ratios 8, 6, 5, 4), and a few seconds of audio run past its attention window.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model.checkpoint import load_weights
from model.config import MimiConfig
from model.mimi import Mimi
from model.tiny import TINY_MIMI

FRAME = 1920  # samples per 80 ms frame at 24 kHz

# Kyutai's format (what `mimi_config_name` points to): the keyword arguments of each part.
# model.tiny's Mimi with SEANet twice as wide.
SMALL_CONFIG: dict[str, Any] = copy.deepcopy(TINY_MIMI)
SMALL_CONFIG["seanet"]["n_filters"] = 8
# PyTorch's default conv init shrinks the signal about 2x per layer, so through SEANet's 15 layers
# the output would be little more than the biases; He-scaled weights keep the signal alive.
CONV_GAIN = 6**0.5


@dataclass
class MimiPair:
    """The original Mimi and ours, holding the same weights. Both are in eval mode."""

    name: str
    ref: nn.Module  # moshi.models.compression.MimiModel
    ours: Mimi
    state_dict: dict[str, torch.Tensor]  # the original's in-memory key names
    bins: int  # codebook size
    n_q: int  # codebooks in total
    context: int  # attention window, in steps at 25 Hz (2 steps a frame)


def random_state_dict(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """`model`'s state dict with codebooks and layer scales drawn at random.

    About 1 in 8 codes is rarely used (usage below the 1e-5 floor of the centroid division, as in
    trained codebooks), with a tiny sum: its centroid is sum / 1e-5, small but far from sum / usage.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        if key.endswith("_codebook.embedding_sum"):
            value = torch.randn(value.shape, generator=g)
        elif key.endswith("_codebook.cluster_usage"):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith(("layer_scale_1.scale", "layer_scale_2.scale")):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith(("conv.weight", "convtr.weight")):
            value = value * CONV_GAIN
        state[key] = value
    for key in [k for k in state if k.endswith("_codebook.cluster_usage")]:
        rare = torch.rand(state[key].shape, generator=g) < 1 / 8
        state[key][rare] = 1e-7
        sums = state[key.replace("cluster_usage", "embedding_sum")]
        sums[rare] *= 1e-6
    return state


def build_pair(name: str, config: dict[str, Any] | None, seed: int) -> MimiPair:
    loaders = pytest.importorskip("moshi.models.loaders", reason="needs the original `moshi`")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = loaders.get_mimi(None, copy.deepcopy(config), device="cpu")
    ref.eval()
    state = random_state_dict(ref, seed)
    ref.load_state_dict(state)
    ours = Mimi(MimiConfig() if config is None else MimiConfig.from_dict(config)).eval()
    load_weights(ours, state)
    quantizer = (config or {}).get("quantizer", {})
    context = (config or {}).get("transformer", {}).get("context", 250)
    return MimiPair(
        name, ref, ours, state, quantizer.get("bins", 2048), quantizer.get("n_q", 32), context
    )


@pytest.fixture(scope="session")
def small_mimi() -> MimiPair:
    return build_pair("small", SMALL_CONFIG, seed=1)


@pytest.fixture(scope="session")
def full_mimi() -> MimiPair:
    return build_pair("full", None, seed=0)


@pytest.fixture(scope="session", params=["small", pytest.param("full", marks=pytest.mark.slow)])
def mimi(request: pytest.FixtureRequest) -> MimiPair:
    """Each size in turn."""
    return request.getfixturevalue(f"{request.param}_mimi")


@pytest.fixture
def small_config() -> dict[str, Any]:
    return copy.deepcopy(SMALL_CONFIG)


def to_fused_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In-memory attention names -> the names Kyutai's released Mimi file uses."""
    out = {}
    for key, value in state.items():
        key = key.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
        key = key.replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")
        out[key] = value
    return out


@pytest.fixture
def save_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """save_checkpoint(state, layout) writes `state` (in-memory names) as a safetensors file in
    `tmp_path`: layout "fused" as Kyutai's released file stores attention, "split" as in memory."""

    def save(state: dict[str, torch.Tensor], layout: str, name: str | None = None) -> Path:
        assert layout in ("fused", "split"), layout
        if layout == "fused":
            state = to_fused_layout(state)
        path = tmp_path / (name or f"mimi-{layout}.safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path

    return save
