"""The pipeline: 1920 samples in -> (text piece, 1920 samples) out, with reset and stage timing."""

import numpy as np
import pytest

from model.generate import SamplingSettings
from model.pipeline import Pipeline, resolve_device, resolve_dtype


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [0.1 * rng.standard_normal(1920).astype(np.float32) for _ in range(n)]


def _run(pipeline: Pipeline, frames):
    return [pipeline.step(f) for f in frames]


def test_first_step_has_no_audio_then_one_frame_per_step(tiny_checkpoint):
    pipeline = Pipeline.load(tiny_checkpoint, "cpu", seed=0)
    results = _run(pipeline, _frames(6))
    assert results[0].pcm is None and results[0].text == ""
    for r in results[1:]:
        assert r.pcm.shape == (1920,) and r.pcm.dtype == np.float32
        assert len(r.audio_tokens) == 8 and isinstance(r.text_token, int)
        assert set(r.ms) == {"encode", "lm", "decode"} and all(v >= 0 for v in r.ms.values())


def test_reset_starts_a_new_conversation(tiny_checkpoint):
    pipeline = Pipeline.load(tiny_checkpoint, "cpu", seed=5)
    frames = _frames(25)
    first = _run(pipeline, frames)
    pipeline.reset(seed=5)
    again = _run(pipeline, frames)
    assert [r.audio_tokens for r in first] == [r.audio_tokens for r in again]
    assert np.array_equal(first[-1].pcm, again[-1].pcm)
    assert "".join(r.text for r in first) == "".join(r.text for r in again)


def test_a_warm_up_leaves_the_conversation_as_it_was(tiny_checkpoint):
    frames = _frames(12)
    cold = _run(Pipeline.load(tiny_checkpoint, "cpu", seed=5), frames)
    warmed = Pipeline.load(tiny_checkpoint, "cpu", seed=5)
    warmed.warm_up()
    assert warmed.frames == 0
    again = _run(warmed, frames)
    assert [(r.text_token, r.audio_tokens) for r in again] == [
        (r.text_token, r.audio_tokens) for r in cold
    ]
    assert all(
        (a.pcm is None and b.pcm is None) or np.array_equal(a.pcm, b.pcm)
        for a, b in zip(again, cold)
    )
    assert "".join(r.text for r in again) == "".join(r.text for r in cold)


def test_sampling_settings_apply_from_the_next_step(tiny_checkpoint):
    frames = _frames(12)
    greedy = _run(
        Pipeline.load(tiny_checkpoint, "cpu", sampling=SamplingSettings(greedy=True)), frames
    )
    switched_first = Pipeline.load(tiny_checkpoint, "cpu", seed=3)
    switched_first.sampling = SamplingSettings(greedy=True)  # before step 0
    assert [r.audio_tokens for r in _run(switched_first, frames)] == [
        r.audio_tokens for r in greedy
    ]

    sampled = _run(Pipeline.load(tiny_checkpoint, "cpu", seed=3), frames)
    switched = Pipeline.load(tiny_checkpoint, "cpu", seed=3)
    before = _run(switched, frames[:6])
    switched.sampling = SamplingSettings(greedy=True)
    after = _run(switched, frames[6:])
    assert [r.audio_tokens for r in before] == [r.audio_tokens for r in sampled[:6]]
    assert [r.audio_tokens for r in after] != [r.audio_tokens for r in sampled[6:]]


def test_wrong_frame_size_is_refused(tiny_checkpoint):
    pipeline = Pipeline.load(tiny_checkpoint, "cpu")
    with pytest.raises(ValueError, match="1920 samples"):
        pipeline.step(np.zeros(1000, np.float32))


def test_device_and_dtype_resolution():
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))
