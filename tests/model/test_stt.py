"""model/stt.py against Kyutai's `moshi` package (0.2.13, installed --no-deps for the tests) on a
tiny random Kyutai STT in Kyutai's layout: greedy, fp32, CPU, token for token through the silence
prefix, the audio and the trailing delay's silence, as Kyutai's `stt_from_file_pytorch.py` steps
a file; the voice-activity heads' probabilities too. For both published delays (stt-1b-en_fr's
0.5 s with no prefix, stt-2.6b-en's 2.5 s after 1 s of silence)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from model.files import resolve_folder
from model.stt import Transcriber, timed_words
from model.tiny import MIMI_CONFIG_NAME, STT_MIMI_NAME, write_tiny_stt

pytestmark = pytest.mark.usefixtures("one_thread")


def _speech(seconds: float, seed: int) -> np.ndarray:
    """A voice-like test signal: a gliding tone with syllable-rate bursts, and a little noise."""
    t = np.arange(int(seconds * 24000)) / 24000
    rng = np.random.default_rng(seed)
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.3 * t + seed)
    tone = np.sin(2 * np.pi * np.cumsum(pitch) / 24000) * np.maximum(np.sin(2 * np.pi * 3 * t), 0)
    return (0.3 * tone + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _kyutai(folder, frames):
    """What Kyutai's package gives, stepped as its STT script steps a file."""
    from moshi.models import loaders
    from moshi.models.lm import LMGen

    cfg = json.loads((folder / "config.json").read_text())
    mimi_cfg = json.loads((folder / MIMI_CONFIG_NAME).read_text())
    for key in ("mimi_config_name", "model_type", "stt_config", "lm_gen_config", "mimi_name",
                "tokenizer_name"):  # fmt: skip
        cfg.pop(key)
    mimi = loaders.get_mimi(str(folder / STT_MIMI_NAME), mimi_cfg, device="cpu", num_codebooks=32)
    lm = loaders.get_moshi_lm(
        str(folder / "model.safetensors"), lm_kwargs=cfg, device="cpu", dtype=torch.float32
    )
    gen = LMGen(lm.eval(), temp=0, temp_text=0.0)
    tokens, heads, codes = [], [], []
    with torch.no_grad(), mimi.streaming(1), gen.streaming(1):
        for frame in frames:
            audio_tokens = mimi.encode(torch.from_numpy(frame)[None, None])
            codes.append(audio_tokens[0, :, 0].tolist())
            text, extra = gen.step_with_extra_heads(audio_tokens)
            tokens.append(int(text[0, 0, 0]))
            heads.append(torch.stack([h[0, 0] for h in extra]).numpy())
    return tokens, np.stack(heads), codes


@pytest.mark.parametrize("delay, prefix", [(0.5, 0.0), (2.5, 1.0)])
def test_tokens_equal_kyutais_through_prefix_audio_and_delay(tmp_path, delay, prefix):
    pytest.importorskip("moshi.models.loaders", reason="needs the original `moshi`")
    folder = write_tiny_stt(
        tmp_path, audio_delay_seconds=delay, audio_silence_prefix_seconds=prefix
    )
    transcriber = Transcriber.load(resolve_folder(folder), "cpu")
    audio = _speech(1.5, seed=1)
    frames, count, before = transcriber.frames_of(audio)
    frames = list(frames)
    assert before == math.ceil(prefix * 12.5) and count == len(frames)
    assert count == before + math.ceil(len(audio) / 1920) + math.ceil(delay * 12.5)

    ours, ours_heads, margins = [], [], []
    model = transcriber.model
    forward = model.lm.forward_temporal

    def recording(tokens):
        hidden, logits = forward(tokens)
        top = logits[0, 0].float().topk(2).values
        margins.append(float(top[0] - top[1]))
        return hidden, logits

    model.lm.forward_temporal = recording
    for frame in frames:
        step = transcriber.step(frame)
        ours.append(step.token)
        ours_heads.append(step.end_of_turn)
    theirs, heads, codes = _kyutai(folder, frames)

    assert ours == theirs
    assert np.allclose(ours_heads, heads[:, 2, 1], atol=1e-5)
    # Every stage carries information: no greedy pick is a near tie, the text varies, and each
    # of the 32 codebooks' codes vary with the audio.
    assert min(margins) > 1e-3  # far above float32's rounding: no pick is a near tie
    assert len(set(ours)) > len(ours) // 3
    audio_codes = np.array(codes[before : before + 15])
    assert all(len(set(audio_codes[:, q])) > 1 for q in range(32))


def test_words_get_the_times_of_the_end_of_padding_tokens_around_them(tmp_path):
    folder = write_tiny_stt(tmp_path)
    tokenizer = Transcriber.load(resolve_folder(folder), "cpu").tokenizer
    hello, there = tokenizer.encode("hello"), tokenizer.encode(" there")
    pad, eop = 3, 0
    tokens = [pad] * 5 + [eop] + hello + [pad, pad, eop] + there + [pad] * 20
    words = timed_words(
        tokens, tokenizer, padding_id=pad, end_of_padding_id=eop, offset_seconds=0.16
    )
    assert [w.text for w in words] == ["hello", "there"]
    assert words[0].start == pytest.approx(6 * 0.08 - 0.16)
    assert words[0].end == pytest.approx((8 + len(hello)) * 0.08 - 0.16)
    assert words[1].end == pytest.approx(words[1].start + 1.0)  # no end: a second at most


def test_a_stt_model_is_not_a_moshi_and_a_moshi_not_a_stt(tmp_path, tiny_checkpoint):
    from model.files import CheckpointError
    from model.pipeline import Pipeline

    folder = write_tiny_stt(tmp_path)
    with pytest.raises(CheckpointError, match="speech-to-text, which does not talk"):
        Pipeline.load(folder, "cpu")
    with pytest.raises(CheckpointError, match="is not a speech-to-text model"):
        Transcriber.load(resolve_folder(tiny_checkpoint), "cpu")
