"""What CUDA graphs need of a streaming step, checked on the CPU, and the graph wrapper itself.

A CUDA graph replays the kernels one call recorded: the step must keep every state tensor where
it is, never read a value back to the host mid-step, and keep its Python-side decisions fixed.
The capture itself needs a GPU; here a stand-in capture (which re-runs the recorded call) checks
the wrapper's bookkeeping and the pipeline's use of it. Where a GPU is, one test runs the same
conversation with real captures against eager (`pytest tests/model/test_graphs.py` on the device).
"""

import copy
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from model.generate import FrameGenerator, SamplingSettings
from model.graphs import Graphed, graphs_wanted
from model.pipeline import Pipeline

# What hands a tensor's value to the host: on a GPU each waits for the device, and inside a graph
# capture each is an error. Python-level calls (seen by a function mode) and the ops under them
# (seen by a dispatch mode: inference mode routes int() through aten.item, for one).
HOST_CALLS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy", "cpu"}
HOST_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.item.default,
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.equal.default,
    torch.ops.aten._unique2.default,
}


class _HostCalls(TorchFunctionMode):
    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in HOST_CALLS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


class _HostOps(TorchDispatchMode):
    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_OPS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@contextmanager
def host_reads():
    """Collects every read of a tensor's value back to the host inside the block."""
    seen: list[str] = []
    with _HostCalls(seen), _HostOps(seen):
        yield seen


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [0.1 * rng.standard_normal(1920).astype(np.float32) for _ in range(n)]


def _state_tensors(pipeline: Pipeline) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Every streaming state tensor of the pipeline: where it lives and its shape."""
    found = {}
    for root in (pipeline.mimi, pipeline.generator):
        for name, module in root.named_modules():
            state = getattr(module, "state", None)
            for attr, value in (vars(state) if state is not None else {}).items():
                if isinstance(value, torch.Tensor):
                    found[f"{name}.{attr}"] = (value.data_ptr(), tuple(value.shape))
    return found


@pytest.mark.parametrize(
    "sampling, dtype",
    [(SamplingSettings(), "float32"), (SamplingSettings(greedy=True), "float32"), (None, "int8")],
)
def test_a_frame_reads_nothing_back_to_the_host(tiny_checkpoint, sampling, dtype):
    pipeline = Pipeline.load(tiny_checkpoint, "cpu", dtype, seed=0, sampling=sampling)
    frames = _frames(4)
    with torch.inference_mode():
        for n, pcm in enumerate(frames):
            frame = torch.from_numpy(pcm)[None, None]
            with host_reads() as seen:
                codes = pipeline.mimi.encode(frame)
                out = pipeline.generator.advance(codes[:, :, 0])
                if n >= pipeline.generator.max_delay:  # before that, `out` holds no tokens yet
                    pipeline.mimi.decode(out[:, 1:, None])
            assert seen == []


@pytest.mark.parametrize(
    "read", [bool, int, float, torch.Tensor.tolist, torch.Tensor.item, torch.nonzero]
)
def test_the_check_catches_a_host_read(read):
    for inference in (False, True):
        with torch.inference_mode(inference), host_reads() as seen:
            read(torch.ones(1, dtype=torch.long))
        assert seen


def test_state_tensors_stay_in_place_across_steps_and_reset(tiny_checkpoint):
    pipeline = Pipeline.load(tiny_checkpoint, "cpu", seed=0)
    before = _state_tensors(pipeline)
    assert len(before) > 20  # convs, caches, token cache
    for pcm in _frames(5):
        pipeline.step(pcm)
    assert _state_tensors(pipeline) == before
    pipeline.reset(seed=1)
    assert _state_tensors(pipeline) == before


def _rerun(record):
    """A stand-in for CUDA graph capture: 'replaying' runs the recorded call again."""
    return record


def test_graphed_runs_eagerly_then_replays_on_its_own_inputs():
    calls = []

    def double(x):
        calls.append(x)
        return 2 * x

    graphed = Graphed(double, enabled=True, warmup=2, capture=_rerun)
    a, b, c = torch.ones(3), torch.full((3,), 2.0), torch.full((3,), 5.0)
    assert torch.equal(graphed(a), 2 * a) and calls[-1] is a  # warm-up: eager, as given
    assert torch.equal(graphed(b), 2 * b) and calls[-1] is b
    assert not graphed.captured
    assert torch.equal(graphed(c), 2 * c) and graphed.captured  # captured on a copy of c
    fixed = calls[-1]
    assert fixed is not c
    assert torch.equal(graphed(a), 2 * a)
    assert calls[-1] is fixed and torch.equal(fixed, a)  # inputs copied into the fixed ones
    with pytest.raises(ValueError, match="fixed shapes"):
        graphed(torch.ones(4))
    graphed.reset()
    assert not graphed.captured
    graphed(b)
    assert calls[-1] is b  # eager again after a reset


def test_a_failed_capture_falls_back_to_running_eagerly():
    def refuse(record):
        raise RuntimeError("operation not permitted when stream is capturing")

    graphed = Graphed(lambda x: x * 3, enabled=True, warmup=0, capture=refuse)
    with pytest.warns(RuntimeWarning, match="without a CUDA graph.*not permitted"):
        assert torch.equal(graphed(torch.ones(2)), torch.full((2,), 3.0))
    assert not graphed.enabled and not graphed.captured
    assert torch.equal(graphed(torch.ones(3)), torch.full((3,), 3.0))  # any shape: plain again


def test_graphed_is_plain_when_disabled():
    graphed = Graphed(lambda x: x + 1, enabled=False, capture=_rerun)
    for n in range(3):
        assert torch.equal(graphed(torch.zeros(n + 1)), torch.ones(n + 1))
    assert not graphed.captured


def test_graphs_are_for_cuda_unless_turned_off(monkeypatch):
    monkeypatch.delenv("NO_CUDA_GRAPH", raising=False)
    assert graphs_wanted("cuda") and not graphs_wanted("cpu")
    monkeypatch.setenv("NO_CUDA_GRAPH", "1")
    assert not graphs_wanted("cuda")


def _freezing_python(captures: list[str]):
    """A stand-in capture that freezes what the LM step decided in Python, as a CUDA graph does:
    each 'replay' re-runs the step with the sampling settings seen at capture, while tensors (the
    device-side temperatures among them) are read afresh. Records which stages were captured."""

    def capture(graphed: Graphed, record):
        captures.append(graphed.fn.__name__)
        generator = getattr(graphed.fn, "__self__", None)
        if not isinstance(generator, FrameGenerator):
            return record
        frozen = copy.copy(generator.sampling)

        def replay():
            live = generator.sampling
            generator._sampling = frozen  # bypasses the setter: the tensors stay live
            try:
                record()
            finally:
                generator._sampling = live

        return replay

    return capture


def test_a_captured_step_follows_the_temperature_without_capturing_again(
    tiny_checkpoint, monkeypatch
):
    """Dragging a temperature slider changes the settings every frame: a captured LM step takes
    each new temperature as eager steps do, and only a change of top-k (or greedy) captures it
    again."""
    frames = _frames(24)
    drag = {2 * i: t for i, t in enumerate([1.0, 0.05, 3.0, 0.2, 2.0, 0.6, 1.4, 0.1, 2.5])}

    def converse(pipeline: Pipeline, temperatures: dict[int, float]):
        results = []
        for i, pcm in enumerate(frames):
            if i in temperatures:
                t = temperatures[i]
                pipeline.sampling = SamplingSettings(temperature=t, text_temperature=t / 2)
            if i == 20:
                pipeline.sampling = SamplingSettings(temperature=1.0, top_k=5, text_top_k=3)
            results.append(pipeline.step(pcm))
        return [(r.text_token, r.audio_tokens) for r in results]

    captures: list[str] = []
    monkeypatch.setattr(Graphed, "_cuda_capture", _freezing_python(captures))
    eager = converse(Pipeline.load(tiny_checkpoint, "cpu", seed=3, cuda_graphs=False), drag)
    steady = converse(Pipeline.load(tiny_checkpoint, "cpu", seed=3, cuda_graphs=False), {0: 1.0})
    assert eager != steady  # the temperatures change what is drawn
    assert captures == []

    graphed = converse(Pipeline.load(tiny_checkpoint, "cpu", seed=3, cuda_graphs=True), drag)
    assert graphed == eager
    # Captured on the second frame (the first warms up) and again after the new top-k.
    assert captures.count("advance") == 2


def test_a_warm_up_captures_every_stage(tiny_checkpoint, monkeypatch):
    """After `warm_up` a conversation's first frame replays graphs: no capture mid-conversation."""
    captures: list[str] = []
    monkeypatch.setattr(Graphed, "_cuda_capture", _freezing_python(captures))
    pipeline = Pipeline.load(tiny_checkpoint, "cpu", seed=0, cuda_graphs=True)
    pipeline.warm_up()
    stages = (pipeline._encode, pipeline._advance, pipeline._decode)
    assert all(stage.captured for stage in stages)
    assert sorted(captures) == ["advance", "decode", "encode"]
    for pcm in _frames(4):
        pipeline.step(pcm)
    assert len(captures) == 3


def _converse_through_everything(pipeline: Pipeline, frames: list[np.ndarray]):
    """A temperature drag, a change of top-k and a reset with a seed, one frame at a time."""
    results = []
    for i, pcm in enumerate(frames):
        if i < 12 and i % 2 == 0:
            t = [1.0, 0.05, 3.0, 0.2, 2.0, 0.6][i // 2]
            pipeline.sampling = SamplingSettings(temperature=t, text_temperature=t / 2)
        if i == 14:
            pipeline.sampling = SamplingSettings(temperature=1.0, top_k=5, text_top_k=3)
        if i == 20:
            pipeline.reset(seed=7)
        results.append(pipeline.step(pcm))
    return results


def _graphed_against_eager(checkpoint, device: str):
    """That conversation with and without graphs: every stage captured, the same tokens frame
    for frame. Returns both runs' results for their audio."""
    frames = _frames(30)
    eager = _converse_through_everything(
        Pipeline.load(checkpoint, device, seed=3, cuda_graphs=False), frames
    )
    pipeline = Pipeline.load(checkpoint, device, seed=3, cuda_graphs=True)
    graphed = _converse_through_everything(pipeline, frames)
    assert all(stage.captured for stage in (pipeline._encode, pipeline._advance, pipeline._decode))
    assert [r.text_token for r in graphed] == [r.text_token for r in eager]
    assert [r.audio_tokens for r in graphed] == [r.audio_tokens for r in eager]
    assert [r.pcm is None for r in graphed] == [r.pcm is None for r in eager]
    return [(g.pcm, e.pcm) for g, e in zip(graphed, eager) if g.pcm is not None]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures real CUDA graphs: needs a GPU")
def test_real_cuda_graphs_give_the_eager_conversation(tiny_checkpoint):
    """On a GPU, with real captures and the GPU's random generator: the tokens of the eager
    conversation, frame for frame, and its audio to rounding."""
    for graphed, eager in _graphed_against_eager(tiny_checkpoint, "cuda"):
        np.testing.assert_allclose(graphed, eager, atol=1e-3)


def test_graphed_pipeline_gives_the_eager_results(tiny_checkpoint, monkeypatch):
    """With every stage graphed (the stand-in capture, which freezes the LM step's Python-side
    decisions as a CUDA graph does), the same conversation as without graphs: the same tokens
    and audio through a temperature drag, a change of top-k and a reset with a seed. The GPU
    test above runs the same conversation with real captures."""
    monkeypatch.setattr(Graphed, "_cuda_capture", _freezing_python([]))
    for graphed, eager in _graphed_against_eager(tiny_checkpoint, "cpu"):
        assert np.array_equal(graphed, eager)
