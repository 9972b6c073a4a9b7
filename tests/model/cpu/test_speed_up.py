"""The swap (`model.cpu.speed_up`): which modules get a CPU form, what the forms hold (the same
Parameters, nothing hidden on them), and that a pipeline with them runs the plain pipeline's
codes, tokens and audio."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import model.conv as plain
from model.checkpoint import load_lm, load_mimi
from model.cpu import conv, linear, speed_up
from model.files import resolve_folder
from model.generate import SamplingSettings
from model.mimi import Codebook
from model.pipeline import Pipeline
from model.quant import Int8Linear
from model.streaming import streaming
from model.text import TextTokenizer

GREEDY = SamplingSettings(greedy=True)
FORMS = {
    nn.Linear: linear.Linear,
    Codebook: linear.CentroidsFirst,
    nn.Conv1d: conv.Conv1d,
    nn.ConvTranspose1d: conv.ConvTranspose1d,
    plain.StreamingConv1d: conv.StreamingConv1d,
}


@pytest.fixture(scope="module")
def files(tiny_checkpoint):
    return resolve_folder(tiny_checkpoint)


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    return [0.1 * g.standard_normal(1920).astype(np.float32) for _ in range(count)]


def test_every_module_with_a_cpu_form_gets_it_and_keeps_its_state_dict(files):
    mimi, lm = load_mimi(files), load_lm(files, "cpu", torch.float32)
    for model in (mimi, lm):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        kinds = {type(m) for m in model.modules()}
        assert speed_up(model) is model

        assert not kinds.isdisjoint(FORMS)
        assert not {type(m) for m in model.modules()} & set(FORMS)  # every one swapped
        after = model.state_dict()
        assert list(after) == list(before)
        assert all(torch.equal(after[k], v) for k, v in before.items())
        assert speed_up(copy.deepcopy(model)).state_dict().keys() == after.keys()  # idempotent


def test_no_parameter_or_buffer_carries_anything_after_the_swap(files):
    mimi = speed_up(load_mimi(files))
    with torch.inference_mode(), streaming(mimi, 1):
        for frame in frames(3):
            mimi.decode(mimi.encode(torch.from_numpy(frame)[None, None]))
    for name, tensor in [*mimi.named_parameters(), *mimi.named_buffers()]:
        assert vars(tensor) == {}, name


def test_the_first_transposed_convs_of_the_decoder_hold_their_weight_for_steps(files):
    mimi = speed_up(load_mimi(files))
    convtrs = [m.convtr.convtr for m in mimi.decoder.model if hasattr(m, "convtr")]
    laid_out = [w.reshape(w.shape[0], -1).t().is_contiguous() for w in (c.weight for c in convtrs)]
    assert laid_out == [True, True, False, False]  # 2 and 16 frames in a step; then 96, 480


def test_only_fp32_cpu_modules_are_swapped(files):
    lm = speed_up(load_lm(files, "cpu", torch.bfloat16))
    assert not any(isinstance(m, tuple(FORMS.values())) for m in lm.modules())

    int8 = load_lm(files, "cpu", torch.float32, quantize=True)
    quantized = {name for name, m in int8.named_modules() if isinstance(m, Int8Linear)}
    assert quantized
    speed_up(int8)
    assert quantized == {name for name, m in int8.named_modules() if isinstance(m, Int8Linear)}


def test_the_swapped_pipeline_runs_the_plain_pipelines_codes_tokens_and_audio(files):
    swapped = Pipeline.load(files, "cpu", sampling=GREEDY)
    mimi, lm = load_mimi(files), load_lm(files, "cpu", torch.float32)
    plain_ = Pipeline(mimi, lm, TextTokenizer(files.tokenizer), sampling=GREEDY, files=files)
    assert isinstance(swapped.mimi.encoder.model[0], conv.StreamingConv1d)
    assert type(plain_.mimi.encoder.model[0]) is plain.StreamingConv1d

    pcm = frames(12)
    ours, theirs = [swapped.step(f) for f in pcm], [plain_.step(f) for f in pcm]
    assert [r.text_token for r in ours] == [r.text_token for r in theirs]
    assert [r.audio_tokens for r in ours] == [r.audio_tokens for r in theirs]
    for a, b in zip(ours[1:], theirs[1:]):
        np.testing.assert_allclose(a.pcm, b.pcm, rtol=1e-4, atol=1e-6)


def test_a_swapped_mimi_encodes_the_plain_codes(files):
    mimi = load_mimi(files)
    fast = speed_up(copy.deepcopy(mimi))
    audio = torch.from_numpy(np.concatenate(frames(8, seed=1)))[None, None]
    with torch.inference_mode():
        assert torch.equal(fast.encode(audio), mimi.encode(audio))
        with streaming(mimi, 1), streaming(fast, 1):
            for i in range(8):
                frame = audio[..., i * 1920 : (i + 1) * 1920]
                assert torch.equal(fast.encode(frame), mimi.encode(frame))
