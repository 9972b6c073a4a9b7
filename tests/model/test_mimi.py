"""Tests for model/mimi.py: our Mimi against Kyutai's original, on the same random weights.

Every comparison is with the original run the same way: one-shot with one-shot, streaming with
streaming at the same number of frames per call. The two are not the same past the attention
window: the original's ring cache holds exactly `context` steps, so once it wraps, a call's later
steps have overwritten keys its earlier steps would see in a one-shot pass (one key fewer for the
first of the two steps a frame has at 25 Hz). The app streams, so we must match
the original's streaming path; `test_streaming_follows_the_original_streaming_path_past_the_window`
shows the two references differ enough for these tests to tell which one we follow.

Input: 140 frames (11.2 s), past the full model's 250-step (10 s) window and seven times the
small model's 20 steps. Codes to decode are drawn at random, so every centroid is exercised.

Every test runs twice: on our Mimi as it is (the math, the GPU's path) and with its CPU forms
swapped in (`model.cpu.speed_up`, what `Pipeline.load` runs on the CPU).
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import AbstractContextManager
from functools import cached_property

import pytest
import torch

from model.cpu import speed_up
from model.mimi import Mimi
from model.streaming import reset_streaming, streaming

FRAME = 1920  # samples per 80 ms frame at 24 kHz
N_FRAMES = 140
TOLERANCE = 1e-5  # decoded audio: |ours - original| / |original|


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    assert x.shape == ref.shape, (x.shape, ref.shape)
    return ((x - ref).norm() / ref.norm()).item()


def open_stream(model: torch.nn.Module, batch_size: int) -> AbstractContextManager:
    return streaming(model, batch_size) if isinstance(model, Mimi) else model.streaming(batch_size)


@torch.no_grad()
def stream_encode(
    model: torch.nn.Module, audio: torch.Tensor, per_call: int = 1
) -> list[torch.Tensor]:
    """Encode `audio` [B, 1, T] in a fresh stream, `per_call` frames per call: the codes of each."""
    step = per_call * FRAME
    with open_stream(model, audio.shape[0]):
        return [model.encode(audio[..., i : i + step]) for i in range(0, audio.shape[-1], step)]


@torch.no_grad()
def stream_decode(
    model: torch.nn.Module, codes: torch.Tensor, per_call: int = 1
) -> list[torch.Tensor]:
    """Decode `codes` [B, K, n] in a fresh stream, `per_call` frames per call: the audio of each."""
    with open_stream(model, codes.shape[0]):
        return [
            model.decode(codes[..., i : i + per_call]) for i in range(0, codes.shape[-1], per_call)
        ]


class Run:
    """One input for a pair of models, and the original's outputs on it, computed when first asked."""

    def __init__(self, pair):
        self.pair = pair
        g = torch.Generator().manual_seed(1234)
        self.audio = 0.1 * torch.randn(1, 1, N_FRAMES * FRAME, generator=g)  # [1, 1, T]
        self.codes = torch.randint(0, pair.bins, (1, 8, N_FRAMES), generator=g)  # [1, 8, n]
        self._streams: dict[tuple[str, int], torch.Tensor] = {}

    @cached_property
    def ref_codes(self) -> torch.Tensor:
        with torch.no_grad():
            return self.pair.ref.encode(self.audio)

    @cached_property
    def ref_audio(self) -> torch.Tensor:
        with torch.no_grad():
            return self.pair.ref.decode(self.codes)

    def ref_stream_codes(self, per_call: int) -> torch.Tensor:
        if ("enc", per_call) not in self._streams:
            chunks = stream_encode(self.pair.ref, self.audio, per_call)
            self._streams["enc", per_call] = torch.cat(chunks, -1)
        return self._streams["enc", per_call]

    def ref_stream_audio(self, per_call: int) -> torch.Tensor:
        if ("dec", per_call) not in self._streams:
            chunks = stream_decode(self.pair.ref, self.codes, per_call)
            self._streams["dec", per_call] = torch.cat(chunks, -1)
        return self._streams["dec", per_call]


_RUNS: dict[str, Run] = {}  # one per model size, shared by the tests of this module
_SPED_UP: dict[str, Mimi] = {}  # ours with its CPU forms, one per model size


@pytest.fixture(scope="session", params=["plain", "cpu-forms"])
def form(request: pytest.FixtureRequest) -> str:
    return request.param


pytestmark = pytest.mark.usefixtures("form")  # every test, through `mimi` too


def in_form(pair, form: str):
    """The pair with ours as it is, or with its CPU forms swapped in (a copy)."""
    if form == "plain":
        return pair
    if pair.name not in _SPED_UP:
        _SPED_UP[pair.name] = speed_up(copy.deepcopy(pair.ours))
    return dataclasses.replace(pair, ours=_SPED_UP[pair.name])


@pytest.fixture(scope="session")
def small_mimi(small_mimi, form: str):
    return in_form(small_mimi, form)


@pytest.fixture(scope="session")
def full_mimi(full_mimi, form: str):
    return in_form(full_mimi, form)


@pytest.fixture
def run(mimi) -> Run:
    return _RUNS.setdefault(mimi.name, Run(mimi))


@pytest.fixture
def small_run(small_mimi) -> Run:
    return _RUNS.setdefault(small_mimi.name, Run(small_mimi))


# --- one-shot --------------------------------------------------------------------------------------


def test_one_shot_encode_matches_original(mimi, run: Run) -> None:
    with torch.no_grad():
        codes = mimi.ours.encode(run.audio)
    assert codes.shape == (1, 8, N_FRAMES)
    assert codes.dtype == torch.int64
    assert torch.equal(codes, run.ref_codes)


def test_one_shot_decode_matches_original(mimi, run: Run) -> None:
    with torch.no_grad():
        audio = mimi.ours.decode(run.codes)
    assert audio.shape == (1, 1, N_FRAMES * FRAME)
    assert rel_err(audio, run.ref_audio) < TOLERANCE


def test_one_shot_encode_pads_a_partial_last_frame(small_mimi, small_run: Run) -> None:
    audio = small_run.audio[..., : 3 * FRAME + 500]
    with torch.no_grad():
        codes = small_mimi.ours.encode(audio)
        ref = small_mimi.ref.encode(audio)
    assert codes.shape == (1, 8, 4)
    assert torch.equal(codes, ref)


# --- streaming -------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_call", [1, 2], ids=["1-frame-calls", "2-frame-calls"])
def test_streaming_encode_matches_original(mimi, run: Run, per_call: int) -> None:
    chunks = stream_encode(mimi.ours, run.audio, per_call)
    assert [c.shape for c in chunks] == [(1, 8, per_call)] * (N_FRAMES // per_call)
    assert torch.equal(torch.cat(chunks, -1), run.ref_stream_codes(per_call))


@pytest.mark.parametrize("per_call", [1, 2], ids=["1-frame-calls", "2-frame-calls"])
def test_streaming_decode_matches_original(mimi, run: Run, per_call: int) -> None:
    chunks = stream_decode(mimi.ours, run.codes, per_call)
    assert [c.shape for c in chunks] == [(1, 1, per_call * FRAME)] * (N_FRAMES // per_call)
    assert rel_err(torch.cat(chunks, -1), run.ref_stream_audio(per_call)) < TOLERANCE


def test_streaming_follows_the_original_streaming_path_past_the_window(
    small_mimi, small_run: Run
) -> None:
    window = small_mimi.context // 2 * FRAME  # the attention window, in samples (2 steps a frame)
    ref_stream, ref_one_shot = small_run.ref_stream_audio(1), small_run.ref_audio
    # The original's own two paths agree within the window and differ well beyond the tolerance
    # past it, so matching one of them is not matching the other.
    assert rel_err(ref_stream[..., :window], ref_one_shot[..., :window]) < TOLERANCE / 10
    assert rel_err(ref_stream, ref_one_shot) > 100 * TOLERANCE
    assert not torch.equal(small_run.ref_stream_codes(1), small_run.ref_codes)

    ours = torch.cat(stream_decode(small_mimi.ours, small_run.codes), -1)
    assert rel_err(ours, ref_stream) < TOLERANCE
    assert rel_err(ours, ref_one_shot) > 100 * TOLERANCE
    codes = torch.cat(stream_encode(small_mimi.ours, small_run.audio), -1)
    assert torch.equal(codes, small_run.ref_stream_codes(1))


def test_reset_streaming_starts_a_fresh_stream(small_mimi, small_run: Run) -> None:
    ours, n = (
        small_mimi.ours,
        3 * small_mimi.context // 2,
    )  # frames: past the window, so caches wrap
    audio, codes = small_run.audio[..., : n * FRAME], small_run.codes[..., :n]
    other = torch.randn(1, 1, n * FRAME, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), streaming(ours, 1):
        for i in range(n):  # fill every state with another conversation
            ours.decode(ours.encode(other[..., i * FRAME : (i + 1) * FRAME]))
        reset_streaming(ours)
        got_codes = torch.cat(
            [ours.encode(audio[..., i * FRAME : (i + 1) * FRAME]) for i in range(n)], -1
        )
        got_audio = torch.cat([ours.decode(codes[..., i : i + 1]) for i in range(n)], -1)
    # Streaming is causal, so a fresh stream's first n frames are the first n of the long one.
    assert torch.equal(got_codes, small_run.ref_stream_codes(1)[..., :n])
    assert rel_err(got_audio, small_run.ref_stream_audio(1)[..., : n * FRAME]) < TOLERANCE


@pytest.mark.parametrize("length", [1000, FRAME + FRAME // 2, 0])
def test_streaming_encode_rejects_partial_frames(small_mimi, length: int) -> None:
    with torch.no_grad(), streaming(small_mimi.ours, 1):
        with pytest.raises(ValueError, match=rf"{FRAME}.*\b{length}\b"):
            small_mimi.ours.encode(torch.zeros(1, 1, length))


# --- codebooks and batches -------------------------------------------------------------------------


def test_set_num_codebooks_changes_the_number_of_codes(mimi, run: Run) -> None:
    audio, n = run.audio[..., : 10 * FRAME], 10
    ours, ref = mimi.ours, mimi.ref
    try:
        with torch.no_grad():
            ref.set_num_codebooks(mimi.n_q)
            every_code = ref.encode(audio)  # [1, n_q, n]
            for k in (mimi.n_q, 1, 3, 8):
                ours.set_num_codebooks(k)
                ref.set_num_codebooks(k)
                codes = ours.encode(audio)
                assert codes.shape == (1, k, n)
                assert torch.equal(codes, ref.encode(audio))
                assert torch.equal(codes, every_code[:, :k])  # residual: a prefix of more
                assert rel_err(ours.decode(codes), ref.decode(codes)) < TOLERANCE
        for bad in (0, mimi.n_q + 1):
            with pytest.raises(ValueError):
                ours.set_num_codebooks(bad)
    finally:
        ours.set_num_codebooks(8)
        ref.set_num_codebooks(8)


def test_batch_of_two_matches_original_and_single_items(small_mimi) -> None:
    ours, ref, n = small_mimi.ours, small_mimi.ref, 3 * small_mimi.context // 2
    g = torch.Generator().manual_seed(11)
    audio = 0.1 * torch.randn(2, 1, n * FRAME, generator=g)
    codes = torch.randint(0, small_mimi.bins, (2, 8, n), generator=g)
    with torch.no_grad():
        one_shot = ours.encode(audio)
        assert one_shot.shape == (2, 8, n)
        assert torch.equal(one_shot, ref.encode(audio))
        assert torch.equal(one_shot[1:], ours.encode(audio[1:]))
        assert rel_err(ours.decode(codes), ref.decode(codes)) < TOLERANCE

    stream = torch.cat(stream_encode(ours, audio), -1)
    assert torch.equal(stream, torch.cat(stream_encode(ref, audio), -1))
    assert torch.equal(stream[1:], torch.cat(stream_encode(ours, audio[1:]), -1))
    out = torch.cat(stream_decode(ours, codes), -1)
    assert out.shape == (2, 1, n * FRAME)
    assert rel_err(out, torch.cat(stream_decode(ref, codes), -1)) < TOLERANCE
    assert rel_err(out[1:], torch.cat(stream_decode(ours, codes[1:]), -1)) < TOLERANCE
