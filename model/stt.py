"""Kyutai's streaming speech-to-text (delayed streams modelling): Mimi's 32 codebooks of the user's
voice in, one text token a frame out, the text `audio_delay_seconds` behind the audio.

The model is Moshi's temporal transformer with no depth transformer (dep_q = 0): per frame it reads
the text token it picked the frame before and the frame's 32 audio codes, and picks the next text
token. All its delays are 0, and Kyutai's LMGen then feeds the initial tokens to the first step
(the first frame's audio is never seen), as `SpeechToText` does. Its extra heads give, per frame,
the semantic voice-activity probabilities (the third head's second value: the user's turn ended).

A file is transcribed as Kyutai's `scripts/stt_from_file_pytorch.py` does it
(kyutai-labs/delayed-streams-modeling): `audio_silence_prefix_seconds` of silence first, the audio
cut into 80 ms frames (the last zero-padded), then `audio_delay_seconds` of silence so the delayed
text of the last words comes out (`frames_of`). Words get their times from the end-of-padding
tokens that bound them (`timed_words`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import FRAME_SECONDS, FRAME_SIZE, STT_MODEL_TYPE, SttConfig
from .cpu.threads import ThreadPolicy
from .files import CheckpointError, ModelFiles
from .generate import SamplingSettings, sample
from .lm import LM
from .mimi import Mimi
from .streaming import State, StreamingModule, reset_streaming, start_streaming, stop_streaming

DEFAULT_STT_REPO = "kyutai/stt-1b-en_fr"
END_OF_TURN_HEAD = 2  # Kyutai's example reads the third head's second value as "turn ended"


class _TextState(State):
    def __init__(self, tokens: torch.Tensor):
        self.previous = tokens  # [B]: the text token picked the step before
        self.steps = 0

    def reset(self) -> None:
        self.steps = 0


class SpeechToText(StreamingModule):
    """One text token a frame. Use inside `streaming(stt, batch)`."""

    def __init__(self, lm: LM, sampling: SamplingSettings | None = None, seed: int | None = None):
        super().__init__()
        if lm.cfg.dep_q != 0:
            raise ValueError("speech-to-text has no depth transformer (dep_q 0)")
        self.lm = lm
        self.sampling = sampling or SamplingSettings(greedy=True)
        self.rng = torch.Generator(device=lm.device)
        if seed is not None:
            self.rng.manual_seed(seed)
        cfg = lm.cfg
        self._initial_audio = torch.full((cfg.n_q,), cfg.card, device=lm.device)

    def init_state(self, batch_size: int) -> _TextState:
        return _TextState(torch.full((batch_size,), self.lm.cfg.text_card, device=self.lm.device))

    @torch.no_grad()
    def step(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """codes [B, >= n_q] (one frame of Mimi) -> the text token [B], and the extra heads'
        probabilities [B, heads, extra_heads_dim] (None without heads)."""
        state = self.state
        if not isinstance(state, _TextState):
            raise RuntimeError("SpeechToText needs streaming(stt, batch) around it")
        cfg = self.lm.cfg
        B = codes.shape[0]
        if state.steps == 0:  # all delays are 0: the first step reads the initial tokens
            audio = self._initial_audio.expand(B, -1)
            text = torch.full((B,), cfg.text_card, device=codes.device)
        else:
            audio, text = codes[:, : cfg.n_q].long(), state.previous
        tokens = torch.cat([text[:, None], audio], dim=1)[:, :, None]  # [B, 1 + n_q, 1]
        hidden, logits = self.lm.forward_temporal(tokens)
        s = self.sampling
        temperature = 0.0 if s.greedy_text else s.text_temperature
        token = sample(logits[:, 0].float(), temperature, s.text_top_k, self.rng)  # [B]
        state.previous = token
        state.steps += 1
        heads = None
        if len(self.lm.extra_heads):
            heads = torch.stack(
                [torch.softmax(head(hidden[:, 0]).float(), dim=-1) for head in self.lm.extra_heads],
                dim=1,
            )
        return token, heads


@dataclass
class Step:
    token: int  # the text token of this step
    end_of_turn: float | None  # the probability that the user's turn has ended, where known


class Transcriber:
    """Audio frames in, text tokens out: Mimi (all the codebooks the model reads) and the
    speech-to-text model, streaming."""

    def __init__(
        self,
        mimi: Mimi,
        lm: LM,
        tokenizer,
        files: ModelFiles | None = None,
        threads: int | None = None,
    ):
        self.mimi, self.lm, self.tokenizer, self.files = mimi, lm, tokenizer, files
        self.thread_policy = ThreadPolicy(threads) if lm.device.type == "cpu" else None
        self.stt_config = (files.config.stt if files else None) or SttConfig()
        sampling = SamplingSettings.from_lm_gen_config(files.config.lm_gen_config if files else {})
        if sampling.text_temperature <= 0:
            sampling.greedy = True
        self.model = SpeechToText(lm, sampling)
        self.device = lm.device
        start_streaming(self.mimi, 1)
        start_streaming(self.model, 1)

    @classmethod
    def load(
        cls,
        files: ModelFiles,
        device: str = "auto",
        dtype: str | None = None,
        threads: int | None = None,
    ) -> Transcriber:
        from .pipeline import load_models
        from .text import open_tokenizer

        if files.config.model_type != STT_MODEL_TYPE:
            raise CheckpointError(
                f"{files.folder} is not a speech-to-text model (model_type "
                f'"{files.config.model_type}"): use Kyutai STT, such as {DEFAULT_STT_REPO}'
            )
        mimi, lm = load_models(files, device, dtype)
        return cls(mimi, lm, open_tokenizer(files.tokenizer), files, threads)

    def reset(self) -> None:
        reset_streaming(self.mimi)
        reset_streaming(self.model)

    def close(self) -> None:
        stop_streaming(self.mimi)
        stop_streaming(self.model)

    @torch.inference_mode()
    def step(self, pcm: np.ndarray) -> Step:
        """One frame: pcm [1920] float at 24 kHz."""
        frame = torch.as_tensor(pcm, dtype=torch.float32).reshape(1, 1, FRAME_SIZE)
        codes = self.mimi.encode(frame.to(self.device))  # [1, n_q, 1]
        token, heads = self.model.step(codes[:, :, 0])
        if self.thread_policy is not None:
            self.thread_policy.step_done()
        end = None if heads is None else float(heads[0, END_OF_TURN_HEAD, 1])
        return Step(int(token[0]), end)

    def frames_of(self, audio: np.ndarray) -> tuple[Iterator[np.ndarray], int, int]:
        """The frames to step for a file's audio [T] (24 kHz): the silence prefix, the audio
        (the last frame zero-padded), the delay's silence; with their count and how many of
        them come before the audio."""
        prefix = math.ceil(self.stt_config.audio_silence_prefix_seconds / FRAME_SECONDS)
        suffix = math.ceil(self.stt_config.audio_delay_seconds / FRAME_SECONDS)
        count = math.ceil(len(audio) / FRAME_SIZE)
        padded = np.zeros(count * FRAME_SIZE, np.float32)
        padded[: len(audio)] = audio
        silence = np.zeros(FRAME_SIZE, np.float32)

        def frames() -> Iterator[np.ndarray]:
            for _ in range(prefix):
                yield silence
            yield from padded.reshape(count, FRAME_SIZE)
            for _ in range(suffix):
                yield silence

        return frames(), prefix + count + suffix, prefix

    def transcribe(
        self,
        audio: np.ndarray,
        on_step: Callable[[int, int, Step], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Transcript | None:
        """A whole recording [T] (24 kHz) from a fresh state: its text, its words with their
        times and the end-of-turn probability of each of its frames. `on_step(index, count,
        step)` is told of each step as it is taken (progress, words as they come); a set
        `cancel` stops it between steps (None is returned)."""
        self.reset()
        frames, count, prefix = self.frames_of(audio)
        tokens, end_of_turn = [], []
        for index, frame in enumerate(frames):
            if cancel is not None and cancel.is_set():
                return None
            step = self.step(frame)
            tokens.append(step.token)
            if step.end_of_turn is not None:
                end_of_turn.append(step.end_of_turn)
            if on_step is not None:
                on_step(index, count, step)
        cfg = self.lm.cfg
        pad = cfg.existing_text_padding_id
        heard_from = prefix + math.ceil(self.stt_config.audio_delay_seconds / FRAME_SECONDS)
        return Transcript(
            text=self.tokenizer.decode([t for t in tokens if t > pad]).strip(),
            words=timed_words(
                tokens,
                self.tokenizer,
                padding_id=pad,
                end_of_padding_id=cfg.existing_text_end_padding_id,
                offset_seconds=self.offset_seconds,
            ),
            end_of_turn=end_of_turn[heard_from:],  # from the step that has heard frame 0
            tokens=tokens,
        )

    @property
    def offset_seconds(self) -> float:
        """What to take off a step's time to get the audio's: the prefix, then the delay (as
        Kyutai's script counts it)."""
        prefix = math.ceil(self.stt_config.audio_silence_prefix_seconds / FRAME_SECONDS)
        return int(prefix * FRAME_SECONDS) + self.stt_config.audio_delay_seconds


@dataclass
class Word:
    text: str
    start: float  # seconds into the audio
    end: float


@dataclass
class Transcript:
    text: str
    words: list[Word]
    end_of_turn: list[float]  # per 80 ms frame of the audio; empty without the heads
    tokens: list[int]  # every step's text token


def timed_words(
    tokens: list[int],
    tokenizer,
    *,
    padding_id: int,
    end_of_padding_id: int,
    offset_seconds: float,
    frame_rate: float = 1 / FRAME_SECONDS,
) -> list[Word]:
    """The words of a transcription with their times: the tokens between two end-of-padding
    tokens are one word (several words there share the span by their token counts); the last
    word ends at the end of the text, or a second after it starts. Kyutai's example's rules."""
    words: list[Word] = []

    def time_of(position: int) -> float:
        return max(0.0, position / frame_rate - offset_seconds)

    def segment(start: int, end: float) -> None:
        pieces = [t for t in tokens[start : math.ceil(end)] if t > padding_id]
        text = tokenizer.decode(pieces) if pieces else ""
        inside = text.split()
        for word in inside[:-1]:
            n = len(tokenizer.encode(word))
            words.append(Word(word, time_of(start), time_of(start + n)))
            start += n
        if inside:
            words.append(Word(inside[-1], time_of(start), time_of(end)))

    bounds = [i for i, t in enumerate(tokens) if t == end_of_padding_id]
    if not bounds:
        return []
    for a, b in zip(bounds, bounds[1:]):
        segment(a + 1, b)
    last = bounds[-1] + 1
    eos = getattr(tokenizer, "eos_id", lambda: -1)()
    ends = [i for i, t in enumerate(tokens[last:]) if t == eos]
    segment(last, last + ends[0] if ends else min(len(tokens), last + frame_rate))
    return words
