"""The per-frame step: the user's codes for one frame in, Moshi's text token and codes out.

Streams are delayed against each other: with Moshi 7B's delays, text and codebook 0 are not delayed
and codebooks 1..7 lag by one frame, for Moshi and the user alike. A small token cache
[B, 1 + n_q, max_delay + 2] holds what was written for recent steps: the user's codes are written at
`step + delay`, Moshi's sampled tokens at `step + 1`, and each step reads the column of the
current step, where any stream still inside its delay reads its initial token instead
(text_card for text, card for audio).

So step s sees user codebook 0 of frame s and codebooks 1..7 of frame s - 1, and what Moshi itself
chose at step s - 1. The first `max_delay` steps return nothing; step s >= max_delay returns the
text token and the un-delayed codes of Moshi's frame s - max_delay.

Sampling needs no host synchronisation: top-k, then the argmax of probabilities divided by
exponential noise, which draws from the same distribution as multinomial sampling. The
temperatures are read from a tensor on the device, so a captured step (`model/graphs.py`) follows
a temperature slider without being captured again; whether a stream is greedy and its top-k shape
the step itself (`SamplingSettings.step_shape`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .lm import LM
from .streaming import State, StreamingModule


@dataclass
class SamplingSettings:
    """Temperature 0 (or `greedy`) takes the most likely token; top-k 0 keeps every token."""

    temperature: float = 0.8
    top_k: int = 250
    text_temperature: float = 0.7
    text_top_k: int = 25
    greedy: bool = False

    @classmethod
    def from_lm_gen_config(cls, config: dict) -> SamplingSettings:
        """Defaults from a checkpoint's `lm_gen_config` (the original's LMGen keyword names)."""
        names = {
            "temp": "temperature",
            "top_k": "top_k",
            "temp_text": "text_temperature",
            "top_k_text": "text_top_k",
        }
        settings = cls(
            **{ours: config[theirs] for theirs, ours in names.items() if theirs in config}
        )
        settings.greedy = not config.get("use_sampling", True)
        return settings

    @property
    def greedy_text(self) -> bool:
        return self.greedy or self.text_temperature <= 0

    @property
    def greedy_audio(self) -> bool:
        return self.greedy or self.temperature <= 0

    def step_shape(self) -> tuple[bool, bool, int, int]:
        """What these settings decide about the step's ops; the temperatures only feed numbers
        into them. Settings of the same shape share a captured step."""
        return self.greedy_text, self.greedy_audio, self.text_top_k, self.top_k


def sample(
    logits: torch.Tensor,
    temperature: float | torch.Tensor,
    top_k: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits [..., V] -> tokens [...], drawn from softmax(logits / temperature) cut to top k.
    A float temperature <= 0 takes the argmax; a tensor one (0-d, fp32) must be positive."""
    logits = logits.float()
    if isinstance(temperature, (int, float)) and temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    indices = None
    if 0 < top_k < probs.shape[-1]:
        probs, indices = probs.topk(top_k, dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    choice = (probs / noise).argmax(dim=-1, keepdim=True)
    if indices is not None:
        choice = indices.gather(-1, choice)
    return choice.squeeze(-1)


class _TokenCache(State):
    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens  # [B, 1 + n_q, max_delay + 2], -2 where nothing was written yet
        self.step = torch.zeros(1, device=tokens.device, dtype=torch.long)
        self.steps_done = 0  # host-side copy of `step`, to know when output starts

    def reset(self) -> None:
        self.tokens.fill_(-2)
        self.step.zero_()
        self.steps_done = 0


class FrameGenerator(StreamingModule):
    """Runs the LM one frame at a time. Use inside `streaming(generator, batch_size)`.

    `sampling` may be replaced between steps; the new settings apply from the next step.
    """

    def __init__(self, lm: LM, sampling: SamplingSettings | None = None, seed: int | None = None):
        super().__init__()
        self.lm = lm
        # [text, audio] temperatures, read by the step on the device; updated in place.
        self._temperatures = torch.ones(2, device=lm.device, dtype=torch.float32)
        self.sampling = sampling or SamplingSettings()
        self.rng = torch.Generator(device=lm.device)
        self.seed(seed)
        cfg = lm.cfg
        self.max_delay = cfg.max_delay
        self.num_user_codebooks = cfg.n_q - cfg.dep_q
        device = lm.device
        self._delays = torch.tensor(cfg.delays, device=device)
        initial = [cfg.text_card] + [cfg.card] * cfg.n_q
        self._initial = torch.tensor(initial, device=device)[None, :, None]  # [1, 1 + n_q, 1]
        self._user_channels = torch.arange(1 + cfg.dep_q, 1 + cfg.n_q, device=device)
        self._moshi_channels = torch.arange(1 + cfg.dep_q, device=device)

    @property
    def sampling(self) -> SamplingSettings:
        return self._sampling

    @sampling.setter
    def sampling(self, settings: SamplingSettings) -> None:
        self._sampling = settings
        temperatures = [settings.text_temperature, settings.temperature]
        self._temperatures.copy_(torch.tensor(temperatures, dtype=torch.float32))

    def seed(self, seed: int | None) -> None:
        """A fixed seed repeats a conversation exactly; None draws a fresh one."""
        if seed is None:
            self.rng.seed()
        else:
            self.rng.manual_seed(seed)

    def init_state(self, batch_size: int) -> _TokenCache:
        cfg = self.lm.cfg
        tokens = torch.full(
            (batch_size, 1 + cfg.n_q, self.max_delay + 2),
            -2,
            device=self.lm.device,
            dtype=torch.long,
        )
        return _TokenCache(tokens)

    @torch.no_grad()
    def step(
        self,
        user_codes: torch.Tensor,
        advance: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """user_codes [B, K >= n_q - dep_q] (one frame) -> [B, 1 + dep_q] (text, Moshi's codes)
        for the frame completed `max_delay` steps ago, or None during the first steps.
        `advance`: what runs `self.advance` (a `model.graphs.Graphed` of it, say)."""
        state = self.state
        if not isinstance(state, _TokenCache):
            raise RuntimeError("FrameGenerator.step() must run inside streaming(generator, batch)")
        out = (advance or self.advance)(user_codes)
        state.steps_done += 1
        return out if state.steps_done > self.max_delay else None

    @torch.no_grad()
    def advance(self, user_codes: torch.Tensor) -> torch.Tensor:
        """The step's tensor work, all of it on the device with no host synchronisation (what a
        CUDA graph can capture): -> [B, 1 + dep_q], the tokens `max_delay` steps back, which
        are meaningful once `max_delay` steps have been taken."""
        state = self.state
        assert isinstance(state, _TokenCache)
        cache, B, width = state.tokens, state.tokens.shape[0], state.tokens.shape[-1]
        user_codes = user_codes.reshape(B, -1)[:, : self.num_user_codebooks]
        settings = self.sampling

        # Write the user's codes at their delayed columns, then read this step's column.
        user_delays = self._delays[self._user_channels]
        columns = (state.step + user_delays) % width  # [n_user]
        cache[:, self._user_channels, columns] = user_codes.to(cache.dtype)
        current = cache.index_select(2, state.step % width)  # [B, 1 + n_q, 1]
        inside_delay = (state.step <= self._delays)[None, :, None]
        tokens = torch.where(inside_delay, self._initial, current)

        text_temperature = 0.0 if settings.greedy_text else self._temperatures[0]
        audio_temperature = 0.0 if settings.greedy_audio else self._temperatures[1]
        hidden, text_logits = self.lm.forward_temporal(tokens)
        text = sample(text_logits[:, 0], text_temperature, settings.text_top_k, self.rng)  # [B]
        chosen = [text]
        for k in range(self.lm.cfg.dep_q):
            logits = self.lm.forward_depth(k, chosen[-1][:, None], hidden)
            chosen.append(sample(logits[:, 0], audio_temperature, settings.top_k, self.rng))

        # Moshi's choices become the next step's input.
        state.step += 1
        moshi = torch.stack(chosen, dim=1)  # [B, 1 + dep_q]
        cache[:, : moshi.shape[1]].index_copy_(2, state.step % width, moshi[..., None])
        out_delays = self._delays[: moshi.shape[1]]
        columns = (state.step - self.max_delay + out_delays) % width  # [1 + dep_q]
        return cache[:, self._moshi_channels, columns]
