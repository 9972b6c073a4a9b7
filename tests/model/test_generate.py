"""Sampling in model/generate.py: `sample` draws from the right distribution, and the frame
generator honours its seed and settings, including settings changed between steps.

The distribution tests draw many tokens at once from known logits and compare frequencies with
softmax(logits / temperature) cut to the top k. The generator tests use a tiny random LM; where
they need to know what the model proposed, they record the logits the generator asked the LM for.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch

from model.config import LMConfig
from model.generate import FrameGenerator, SamplingSettings, sample
from model.lm import LM
from model.streaming import streaming

# Deliberately unsorted, so a top-k that returned positions instead of token ids would show.
LOGITS = torch.tensor([0.3, 2.0, -1.0, 1.1, 0.0, 1.7, -0.4, 0.8, 2.2, -2.0, 0.5, 1.4])
DRAWS = 200_000


pytestmark = pytest.mark.usefixtures("one_thread")


def expected_distribution(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if 0 < top_k < len(logits):
        cut = probs.topk(top_k).values[-1]
        probs = torch.where(probs >= cut, probs, 0.0)
    return probs / probs.sum()


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double() / len(tokens)


# --- sample() ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "top_k"),
    [(1.0, 0), (0.5, 0), (2.0, 0), (1.0, 3), (0.7, 5), (3.0, 1), (1.0, 50)],
)
def test_sample_draws_from_the_tempered_top_k_distribution(temperature, top_k):
    g = torch.Generator().manual_seed(0)
    tokens = sample(LOGITS.expand(DRAWS, -1), temperature, top_k, g)  # [N]
    assert tokens.shape == (DRAWS,) and tokens.dtype == torch.long
    expected = expected_distribution(LOGITS, temperature, top_k)
    found = frequencies(tokens, len(LOGITS))
    assert (found - expected).abs().max() < 0.005, (found, expected)
    assert torch.all(found[expected == 0] == 0)  # nothing outside the top k, ever


def test_temperature_zero_takes_the_most_likely_token():
    logits = torch.randn(64, 100, generator=torch.Generator().manual_seed(1)) * 3
    for top_k in (0, 1, 10):
        assert torch.equal(sample(logits, 0.0, top_k), logits.argmax(-1))
    assert torch.equal(sample(logits.bfloat16(), 0.0, 10), logits.bfloat16().argmax(-1))


def test_lower_temperature_concentrates_the_mass():
    g = torch.Generator().manual_seed(2)
    best = int(LOGITS.argmax())
    shares = [
        frequencies(sample(LOGITS.expand(DRAWS, -1), t, 0, g), len(LOGITS))[best]
        for t in (2.0, 1.0, 0.5, 0.2)
    ]
    assert shares == sorted(shares) and shares[0] < 0.3 and shares[-1] > 0.6


def test_sample_follows_its_generator():
    def draw(seed: int) -> torch.Tensor:
        return sample(LOGITS.expand(1000, -1), 1.0, 0, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


# --- FrameGenerator ------------------------------------------------------------------------------

CONFIG = LMConfig(
    dim=32,
    text_card=40,
    card=24,
    num_heads=2,
    num_layers=2,
    context=16,
    depformer_dim=16,
    depformer_num_heads=2,
    depformer_num_layers=1,
    depformer_dim_feedforward=None,
)
HOT = SamplingSettings(temperature=1.5, top_k=0, text_temperature=1.5, text_top_k=0)


@pytest.fixture(scope="module")
def lm() -> LM:
    """A tiny LM whose logits spread over a few units: sampling is neither argmax nor uniform."""
    model = LM(CONFIG).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".alpha"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "emb" in name.split(".")[0]:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    return model


def user_codes(steps: int) -> torch.Tensor:
    """[steps, 1, 8] random codes, the same on every call."""
    return torch.randint(0, CONFIG.card, (steps, 1, 8), generator=torch.Generator().manual_seed(9))


def run(
    gen: FrameGenerator, steps: int, before_step: Callable[[int], None] | None = None
) -> torch.Tensor:
    """Step `gen` over fixed user codes, calling before_step(t) before step t.
    Returns the outputs of steps 1.. as [steps - 1, 1, 9]."""
    outputs = []
    codes = user_codes(steps)
    with streaming(gen, 1):
        for t in range(steps):
            if before_step is not None:
                before_step(t)
            out = gen.step(codes[t])
            assert (out is None) == (t == 0)
            if out is not None:
                outputs.append(out)
    return torch.stack(outputs)


def at_step(
    gen: FrameGenerator, changes: dict[int, SamplingSettings], reseed: int | None = None
) -> Callable[[int], None]:
    """A before_step that sets gen.sampling = changes[t] (and reseeds at the first change)."""

    def before_step(t: int) -> None:
        if t in changes:
            if reseed is not None and t == min(changes):
                gen.seed(reseed)
            gen.sampling = changes[t]

    return before_step


def test_seeded_runs_are_reproducible_and_seeds_differ(lm):
    first = run(FrameGenerator(lm, SamplingSettings(), seed=1), 30)
    assert torch.equal(first, run(FrameGenerator(lm, SamplingSettings(), seed=1), 30))
    assert not torch.equal(first, run(FrameGenerator(lm, SamplingSettings(), seed=2), 30))


def test_greedy_is_temperature_zero_and_ignores_the_seed(lm):
    greedy = run(FrameGenerator(lm, SamplingSettings(greedy=True), seed=1), 30)
    cold = SamplingSettings(temperature=0.0, text_temperature=0.0)
    assert torch.equal(greedy, run(FrameGenerator(lm, cold, seed=2), 30))
    assert not torch.equal(greedy, run(FrameGenerator(lm, HOT, seed=1), 30))


def test_switching_to_greedy_mid_stream_acts_from_the_next_step(lm):
    """Two runs share their first 20 steps (same seed), then both turn greedy, one of them also
    reseeded. From step 20 on they must agree: greedy ignores the seed. A generator that read its
    settings only once, or a step late, would go on sampling with two different seeds."""
    steps, switch, greedy = 40, 20, SamplingSettings(greedy=True)
    a = FrameGenerator(lm, HOT, seed=5)
    out_a = run(a, steps, at_step(a, {switch: greedy}))
    b = FrameGenerator(lm, HOT, seed=5)
    out_b = run(b, steps, at_step(b, {switch: greedy}, reseed=123))
    assert torch.equal(out_a, out_b)

    # Had sampling stayed on, the reseed would have shown from step 20: output s holds text and
    # codebook 0 of step s - 1, codebooks 1..7 of step s (outputs[i] is step i + 1's).
    c = FrameGenerator(lm, HOT, seed=5)
    out_c = run(c, steps, at_step(c, {switch: HOT}, reseed=123))
    assert torch.equal(out_c[: switch - 1], out_a[: switch - 1])
    assert torch.equal(out_c[switch - 1, :, :2], out_a[switch - 1, :, :2])
    assert not torch.equal(out_c[switch - 1, :, 2:], out_a[switch - 1, :, 2:])


def test_text_and_audio_settings_apply_from_the_next_step(lm, monkeypatch):
    """Record what the LM proposed and what was chosen, over phases of 15 steps. Each phase makes
    one stream deterministic, by temperature 0 or by top-k 1, and leaves the other hot. That stream
    must take the most likely token from the very step the setting changed; the other must not."""
    text_logits, depth_logits, previous = [], [], []

    def forward_temporal(tokens, _inner=lm.forward_temporal):
        hidden, logits = _inner(tokens)
        text_logits.append(logits[0, 0])
        return hidden, logits

    def forward_depth(step, prev, hidden, _inner=lm.forward_depth):
        logits = _inner(step, prev, hidden)
        depth_logits.append(logits[0, 0])
        previous.append(int(prev[0, 0]))  # the text token for step 0, else codebook step - 1
        return logits

    monkeypatch.setattr(lm, "forward_temporal", forward_temporal)
    monkeypatch.setattr(lm, "forward_depth", forward_depth)
    phases = [  # (settings, text must be argmax, audio must be argmax)
        (HOT, False, False),
        (dataclasses.replace(HOT, top_k=1), False, True),
        (dataclasses.replace(HOT, text_top_k=1), True, False),
        (dataclasses.replace(HOT, temperature=0.0), False, True),
        (dataclasses.replace(HOT, text_temperature=0.0), True, False),
    ]
    length = 15
    gen = FrameGenerator(lm, HOT, seed=7)
    changes = {i * length: settings for i, (settings, _, _) in enumerate(phases)}
    outputs = run(gen, length * len(phases), at_step(gen, changes))

    text_is_argmax, audio_is_argmax = [], []
    for s in range(length * len(phases)):
        chosen = previous[8 * s : 8 * s + 8]  # text, codebooks 0..6 of step s
        if s >= 1:
            # Step s returns Moshi's whole frame s - 1: its text and codebook 0 chosen at step
            # s - 1, codebooks 1..7 (delayed by one) chosen at step s.
            out = outputs[s - 1, 0].tolist()
            assert out[:2] == previous[8 * s - 8 : 8 * s - 6] and out[2:8] == chosen[2:8]
            chosen.append(out[8])  # codebook 7 of step s
        text_is_argmax.append(chosen[0] == int(text_logits[s].argmax()))
        audio_is_argmax.append(
            all(
                chosen[1 + k] == int(depth_logits[8 * s + k].argmax())
                for k in range(len(chosen) - 1)
            )
        )
    for i, (_, text_argmax, audio_argmax) in enumerate(phases):
        steps = slice(i * length, (i + 1) * length)
        assert all(text_is_argmax[steps]) == text_argmax, f"phase {i}: text"
        assert all(audio_is_argmax[steps]) == audio_argmax, f"phase {i}: audio"


def test_step_outside_streaming_is_a_clear_error(lm):
    gen = FrameGenerator(lm, SamplingSettings(greedy=True))
    with pytest.raises(RuntimeError, match="streaming"):
        gen.step(user_codes(1)[0])


def test_unseeded_generators_differ():
    lm = LM(
        LMConfig(
            dim=16,
            num_heads=2,
            num_layers=1,
            context=4,
            card=8,
            text_card=8,
            depformer_dim=8,
            depformer_num_heads=2,
            depformer_num_layers=1,
        )
    )
    draws = [torch.rand(4, generator=FrameGenerator(lm).rng) for _ in range(2)]
    assert not torch.equal(*draws)
