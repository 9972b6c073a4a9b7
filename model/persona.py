"""PersonaPlex: NVIDIA's Moshi that takes a voice prompt and a text persona (github NVIDIA/personaplex).

The model is Moshi 7B whose depth transformer generates 16 codebooks (`dep_q = 16`): Moshi's 8,
then the user's 8, each step fed the token of the step before, where the user's are teacher-forced
(the real user codes go in, what it predicts for them is dropped). The fork runs it with its own
token cache (`moshi/models/lm.py`, `LMGen`), which this module follows step for step:

- A cache [B, 1 + n_q, max_delay + 3] of tokens and a `provided` mask beside it. A call writes the
  tokens it is given (the user's, and in the prompt Moshi's audio and text too) at column
  `offset + delay`, marked provided. The very first call only fills column 0 with the initial
  tokens; every later call runs the temporal transformer on column `offset - 1` and fills column
  `offset`: text and each codebook take what was provided there, else what the model picks. The
  depth transformer sees the provided token of a codebook where there is one (teacher forcing),
  else its own pick.
- From the third call on, a call returns the 17 tokens of column `offset - 1` undelayed: text,
  Moshi's 8 codes, the user's 8 codes (`[B, 1 + dep_q]`).

Before the user speaks, the fork plays a prompt schedule into the model (`step_system_prompts`):
1. the voice prompt: a .wav of the voice (loudness-normalised to -24 LUFS, cut into 1920-sample
   frames, the last one zero-padded, encoded by Mimi) in Moshi's audio channel while the user
   channel holds a 440 Hz sine tone (fixed codes, `SINE_TOKENS`) and the text channel the padding
   token 3; or a .pt file with what that part left behind: the temporal transformer's input
   embeddings of each step and the token cache at its end (`VoicePrompt`);
2. 0.5 s (6 frames) of silence (fixed codes, `SILENCE_TOKENS`) with the sine for the user;
3. the persona, `<system> ... <system>` tokenised, one token a frame teacher-forced into the text
   channel, with silence and the sine in the audio channels;
4. 6 frames of silence again. Then the live conversation: the user's codes only.

Attention as the fork computes it (`run_as_the_fork`): its ring KV cache (an older one than Kyutai's
0.2.13) labels the oldest key of a full ring with a future position, so that key is masked. The
temporal transformer and Mimi's transformers, once their ring has filled, see `context - 1` past
steps, not `context`; the depth transformer (a ring of dep_q slots) at its last step, 15, does not
see its first. This module reproduces that, for exact parity; Moshi's path keeps Kyutai's rule.

Loading (`PersonaPlexWeights`): the fork builds Moshiko's architecture with dep_q = 16 and fills
what a checkpoint lacks: depth attention projections for 8 steps are repeated for steps 8..15, and
missing slices 8..15 of `gating`, `linears`, `depformer_in` and `depformer_emb` are copied from
0..7. The released checkpoints hold all 16 slices.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import FRAME_SIZE, SAMPLE_RATE, LMConfig
from .files import CheckpointError
from .generate import SamplingSettings, sample
from .hf_layout import WeightsReader
from .lm import LM
from .mimi import Mimi
from .streaming import State, StreamingModule, reset_streaming, streaming
from .transformer import Attention, FrameKVCache
from .voices import is_voice_name, voice_file, voice_names

DEP_Q = 16  # Moshi's 8 codebooks, then the user's 8

# Mimi's codes (of the released Mimi) for a frame of silence and of the 440 Hz sine (lm.py).
SILENCE_TOKENS = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)
SINE_TOKENS = (430, 1268, 381, 1611, 1095, 1495, 56, 472)
TEXT_PAD = 3  # the text token of the voice prompt and silence frames (`zero_text_code`)
SILENCE_FRAMES = int(0.5 * 12.5)  # 6: the spacer after the voice and after the persona
VOICE_LUFS = -24.0  # the voice prompt's loudness after normalisation
SYSTEM_TAG = "<system>"


def wrap_persona(text: str) -> str:
    """The persona as the model was trained on it: `<system> ... <system>` (offline.py)."""
    cleaned = text.strip()
    if cleaned.startswith(SYSTEM_TAG) and cleaned.endswith(SYSTEM_TAG):
        return cleaned
    return f"{SYSTEM_TAG} {cleaned} {SYSTEM_TAG}"


def persona_tokens(tokenizer, text: str) -> list[int]:
    """The persona's text tokens (none for an empty persona, as the fork does)."""
    return list(tokenizer.encode(wrap_persona(text))) if text else []


# --- Loading -----------------------------------------------------------------------------------

_FILLED = re.compile(r"(^|\.)(gating|linears|depformer_in|depformer_emb)\.(\d+)\.")
_DEPTH_ATTENTION = re.compile(
    r"^depformer\..*self_attn\.(in_proj_weight|in_proj\.weight|out_proj\.weight)$"
)


class PersonaPlexWeights:
    """`reader`'s tensors as a PersonaPlex LM of `lm` expects them, filled as the fork's loader
    fills them (`loaders.get_moshi_lm`): a depth attention projection stacked for fewer steps is
    repeated to dep_q steps; a missing slice 8..15 of gating, linears, depformer_in or
    depformer_emb is read from slice 0..7. Anything else missing stays missing (the strict load
    names it)."""

    def __init__(self, reader: WeightsReader, lm: torch.nn.Module):
        self.reader = reader
        self.name = getattr(reader, "name", "the weights")
        expected = lm.state_dict()
        header = dict(reader.header)
        self._source: dict[str, tuple[str, int]] = {}  # key -> (source key, repeats)
        for key, (shape, dtype) in list(header.items()):
            if _DEPTH_ATTENTION.match(key):
                rows = _fused_rows(key, expected)
                if rows and shape[0] < rows and rows % shape[0] == 0:
                    header[key] = (torch.Size([rows, *shape[1:]]), dtype)
                    self._source[key] = (key, rows // shape[0])
        for key in expected:
            if key in header:
                continue
            m = _FILLED.search(key)
            if m is None or not 8 <= int(m[3]) < 16:
                continue
            source = key[: m.start(3)] + str(int(m[3]) - 8) + key[m.end(3) :]
            if source in reader.header:
                header[key] = reader.header[source]
                self._source[key] = (source, 1)
        self.header = header

    def read(self, *keys: str) -> list[torch.Tensor]:
        sources = [self._source.get(key, (key, 1)) for key in keys]
        tensors = self.reader.read(*[source for source, _ in sources])
        return [t if n == 1 else torch.cat([t] * n) for t, (_, n) in zip(tensors, sources)]


def _fused_rows(key: str, expected: dict[str, torch.Tensor]) -> int:
    """Rows of a fused depth attention key for the model's steps (step-major)."""
    prefix, leaf = key.rsplit("self_attn.", 1)
    split = "in_projs" if leaf.startswith("in_proj") else "out_projs"
    pattern = re.compile(re.escape(f"{prefix}self_attn.{split}.") + r"\d+\.weight$")
    return sum(v.shape[0] for k, v in expected.items() if pattern.match(k))


# --- Attention as the fork computes it ------------------------------------------------------------


class _ForkFrameKVCache(FrameKVCache):
    """The depth cache, with the fork's ring arithmetic: at the last step the ring is full and
    its slot 0 (the first step's key) is taken for a future position, so it is masked."""

    def append(self, k, v, step):
        keys, values = super().append(k, v, step)
        if step == self.keys.shape[2] - 1 and step > 0:
            return keys[:, :, 1:], values[:, :, 1:]
        return keys, values


class ForkAttention(Attention):
    """Attention as NVIDIA's fork computes it: a windowed attention keeps `context - 1` past
    steps (its ring of that many slots gives exactly the fork's masking), and a depth
    transformer's cache hides the first step from the last (`_ForkFrameKVCache`). Made from an
    `Attention` by `of`, holding the same projections: nothing is copied."""

    @classmethod
    def of(cls, attention: Attention) -> ForkAttention:
        context = attention.context
        if context is not None and not attention.num_steps:
            context -= 1
        with torch.device("meta"):  # its own projections are replaced at once: no memory
            fork = cls(
                attention.dim,
                attention.num_heads,
                context,
                attention.rope_max_period,
                attention.num_steps,
            )
        fork.in_projs, fork.out_projs = attention.in_projs, attention.out_projs
        return fork

    def init_state(self, batch_size: int) -> FrameKVCache:
        if not self.num_steps:
            return super().init_state(batch_size)
        proj = self.in_projs[0]
        dtype = getattr(proj, "activation_dtype", proj.weight.dtype)
        head_dim = self.dim // self.num_heads
        return _ForkFrameKVCache(
            batch_size, self.num_heads, self.num_steps, head_dim, proj.weight.device, dtype
        )


def run_as_the_fork(module: torch.nn.Module) -> torch.nn.Module:
    """Swap `module`'s attention layers (an LM's, a Mimi's) for `ForkAttention`, in place, before
    it streams; those already swapped stay. Returns `module`."""
    for name, child in module.named_children():
        if type(child) is Attention:
            if child.state is not None:
                raise RuntimeError("run_as_the_fork() must come before streaming starts")
            setattr(module, name, ForkAttention.of(child))
        else:
            run_as_the_fork(child)
    return module


# --- The voice prompt ----------------------------------------------------------------------------


def integrated_loudness(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """ITU-R BS.1770-4 integrated loudness (LUFS) of mono audio, computed as pyloudnorm's Meter
    does it (which the fork uses): K-weighting by two RBJ biquads (each stage's output kept in
    the input's dtype), 400 ms blocks with 75 % overlap, gates at -70 LUFS and 10 LU below."""
    data = np.array(pcm, copy=True).reshape(-1, 1)
    if data.shape[0] < 0.4 * rate:
        raise ValueError("the voice prompt is shorter than 0.4 s")
    for gain, q, fc, kind in ((4.0, 1 / np.sqrt(2), 1500.0, "shelf"), (0.0, 0.5, 38.0, "pass")):
        b, a = _biquad(gain, q, fc, rate, kind)
        data[:, 0] = _lfilter(b, a, data[:, 0])
    block, step = 0.4, 0.25
    n = data.shape[0]
    blocks = int(np.round((n / rate - block) / (block * step))) + 1
    z = np.zeros(blocks)
    for j in range(blocks):
        lo, hi = int(block * (j * step) * rate), int(block * (j * step + 1) * rate)
        z[j] = (1.0 / (block * rate)) * np.sum(np.square(data[lo:hi, 0]))
    with np.errstate(divide="ignore"):
        levels = [-0.691 + 10.0 * np.log10(np.sum([1.0 * z[j]])) for j in range(blocks)]
    with np.errstate(divide="ignore", invalid="ignore"):
        absolute = [j for j, level in enumerate(levels) if level >= -70.0]
        mean = np.mean([z[j] for j in absolute])
        relative = -0.691 + 10.0 * np.log10(np.sum([1.0 * mean])) - 10.0
        gated = [j for j, level in enumerate(levels) if level > relative and level > -70.0]
        mean = np.nan_to_num(np.array(np.mean([z[j] for j in gated])))
        return float(-0.691 + 10.0 * np.log10(np.sum([1.0 * mean])))


def _biquad(gain: float, q: float, fc: float, rate: int, kind: str):
    A = 10 ** (gain / 40.0)
    w0 = 2.0 * np.pi * (fc / rate)
    alpha = np.sin(w0) / (2.0 * q)
    cos = np.cos(w0)
    if kind == "shelf":
        b0 = A * ((A + 1) + (A - 1) * cos + 2 * np.sqrt(A) * alpha)
        b1 = -2 * A * ((A - 1) + (A + 1) * cos)
        b2 = A * ((A + 1) + (A - 1) * cos - 2 * np.sqrt(A) * alpha)
        a0 = (A + 1) - (A - 1) * cos + 2 * np.sqrt(A) * alpha
        a1 = 2 * ((A - 1) - (A + 1) * cos)
        a2 = (A + 1) - (A - 1) * cos - 2 * np.sqrt(A) * alpha
    else:
        b0, b1, b2 = (1 + cos) / 2, -(1 + cos), (1 + cos) / 2
        a0, a1, a2 = 1 + alpha, -2 * cos, 1 - alpha
    return np.array([b0, b1, b2]) / a0, np.array([a0, a1, a2]) / a0


def _lfilter(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A biquad in transposed direct form II, in float64 (scipy.signal.lfilter's recurrence)."""
    b0, b1, b2 = (float(v) for v in b / a[0])
    a1, a2 = (float(v) for v in a[1:] / a[0])
    y = np.empty(len(x))
    z0 = z1 = 0.0
    for i, xi in enumerate(x.astype(np.float64).tolist()):  # the order of scipy's C loop
        yi = z0 + b0 * xi
        z0 = z1 + xi * b1 - yi * a1
        z1 = xi * b2 - yi * a2
        y[i] = yi
    return y


def normalize_loudness(pcm: np.ndarray, target: float = VOICE_LUFS) -> np.ndarray:
    """pcm [T] (24 kHz) scaled to `target` LUFS, in float64 as pyloudnorm returns it."""
    gain = np.power(10.0, (target - integrated_loudness(pcm)) / 20.0)
    return gain * pcm


def read_wav(path: str | Path) -> np.ndarray:
    """A mono 16-bit PCM .wav at 24 kHz -> float32 samples in [-1, 1). (The app resamples other
    recordings before they get here.)"""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise CheckpointError(f"{path.name} is not a readable .wav file ({e})") from e
    if channels != 1 or width != 2 or rate != SAMPLE_RATE:
        raise CheckpointError(
            f"{path.name}: a voice prompt must be mono 16-bit at {SAMPLE_RATE} Hz "
            f"(it has {channels} channel(s), {8 * width}-bit, {rate} Hz)"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


@dataclass
class VoicePrompt:
    """A voice for the prompt: its audio (`pcm`, 24 kHz, normalised), or what stepping through
    that audio left behind (`embeddings` [N, B, 1, dim] of the temporal transformer's input at
    each step but the first, `cache` [B, 1 + n_q, max_delay + 3] the token cache at the end), as
    the fork's .pt voice files hold it."""

    pcm: np.ndarray | None = None
    embeddings: torch.Tensor | None = None
    cache: torch.Tensor | None = None

    @classmethod
    def from_audio(cls, pcm: np.ndarray) -> VoicePrompt:
        """pcm [T] float at 24 kHz (mono), loudness-normalised here as the fork does."""
        pcm = np.asarray(pcm)
        if pcm.ndim == 2 and pcm.shape[0] == 1:
            pcm = pcm[0]
        if pcm.ndim != 1:
            raise ValueError(f"a voice prompt must be mono audio [T], got {pcm.shape}")
        return cls(pcm=normalize_loudness(pcm))

    @classmethod
    def load(cls, path: str | Path, cfg: LMConfig) -> VoicePrompt:
        """A .pt voice prompt (weights only: tensors, never code) or a .wav (`read_wav`)."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"voice prompt not found: {path}")
        if path.suffix.lower() != ".pt":
            return cls.from_audio(read_wav(path))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 (a bad file in any of torch's ways)
            raise CheckpointError(f"{path.name} is not a voice prompt ({e})") from None
        return cls.from_state(state, cfg, path.name)

    @classmethod
    def from_state(cls, state, cfg: LMConfig, name: str = "the voice prompt") -> VoicePrompt:
        if not isinstance(state, dict) or not {"embeddings", "cache"} <= set(state):
            raise CheckpointError(f"{name} holds no 'embeddings' and 'cache' (not a voice prompt)")
        embeddings, cache = state["embeddings"], state["cache"]
        width = 1 + cfg.n_q
        columns = cfg.max_delay + 3
        if (
            not isinstance(embeddings, torch.Tensor)
            or embeddings.dim() != 4
            or embeddings.shape[0] < 1
            or embeddings.shape[2] != 1
            or embeddings.shape[3] != cfg.dim
            or not embeddings.is_floating_point()
        ):
            shape = tuple(getattr(embeddings, "shape", ()))
            raise CheckpointError(
                f"{name}: embeddings of shape {shape} do not fit this model "
                f"(expected [steps, 1, 1, {cfg.dim}])"
            )
        if (
            not isinstance(cache, torch.Tensor)
            or tuple(cache.shape) != (embeddings.shape[1], width, columns)
            or cache.is_floating_point()
            or cache.is_complex()
        ):
            shape = tuple(getattr(cache, "shape", ()))
            raise CheckpointError(
                f"{name}: a token cache of shape {shape} does not fit this model "
                f"(expected [{embeddings.shape[1]}, {width}, {columns}])"
            )
        top = max(cfg.card, cfg.text_card)
        if cache.numel() and (cache.min() < -2 or cache.max() > top):
            raise CheckpointError(f"{name}: its token cache holds tokens outside the vocabulary")
        return cls(embeddings=embeddings, cache=cache.long())

    def fingerprint(self) -> str:
        """Tells voices apart (the same audio or the same saved state: the same fingerprint)."""
        digest = hashlib.sha256()
        for part in (self.pcm, self.embeddings, self.cache):
            if part is None:
                digest.update(b"-")
            else:
                array = part.float().numpy() if isinstance(part, torch.Tensor) else part
                digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def state(self) -> dict[str, torch.Tensor]:
        """What a .pt voice file holds (save it with torch.save)."""
        assert self.embeddings is not None and self.cache is not None
        return {"embeddings": self.embeddings, "cache": self.cache}


def voice_codes(mimi: Mimi, pcm: np.ndarray) -> torch.Tensor:
    """The voice's audio [T] -> Mimi's codes [1, 8, frames], frame by frame in a fresh stream,
    the last frame zero-padded (the fork's `_iterate_audio` and `encode_from_sphn`). `mimi` runs
    as the fork's does from then on (`run_as_the_fork`)."""
    run_as_the_fork(mimi)
    device = next(mimi.parameters()).device
    frames = []
    streaming_now = any(
        m.state is not None for m in mimi.modules() if isinstance(m, StreamingModule)
    )
    with contextlib.nullcontext() if streaming_now else streaming(mimi, 1):
        if streaming_now:  # a conversation's Mimi: the voice gets a fresh stream, then it does
            reset_streaming(mimi)
        for start in range(0, len(pcm), FRAME_SIZE):
            chunk = pcm[start : start + FRAME_SIZE]
            if len(chunk) < FRAME_SIZE:
                chunk = np.concatenate([chunk, np.zeros(FRAME_SIZE - len(chunk))])
            x = torch.tensor(chunk[None, None], dtype=torch.float32, device=device)
            frames.append(mimi.encode(x)[:, :8])
        if streaming_now:
            reset_streaming(mimi)
    return torch.cat(frames, dim=-1)


def packaged_voice(folder: str | Path, name: str, cfg: LMConfig) -> VoicePrompt:
    """The packaged voice `name` (NATF2, say) of a PersonaPlex folder, from voices/NAME.pt or
    voices.tgz's member voices/NAME.pt (`model.voices.voice_file`: read into memory, never
    extracted), loaded as tensors only."""
    if not is_voice_name(name):
        raise CheckpointError(f"{name!r} is not a voice name (such as NATF2)")
    data = voice_file(folder, f"{name}.pt")
    if data is None:
        known = voice_names(folder)
        raise CheckpointError(
            f"no voice {name!r} in {folder}"
            + (f": it has {', '.join(known)}" if known else " (it has no voices/ or voices.tgz)")
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (a bad file in any of torch's ways)
        raise CheckpointError(f"{name}.pt is not a voice prompt ({e})") from None
    return VoicePrompt.from_state(state, cfg, f"{name}.pt")


# --- The generator -------------------------------------------------------------------------------


class _PersonaCache(State):
    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens  # [B, 1 + n_q, max_delay + 3]
        self.provided = torch.zeros_like(tokens, dtype=torch.bool)
        self.offset = 0

    def reset(self) -> None:
        self.tokens.fill_(-2)
        self.provided.fill_(False)
        self.offset = 0


class PersonaGenerator(StreamingModule):
    """PersonaPlex one frame at a time, with its prompt schedule. Use inside
    `streaming(generator, batch_size)`: `prompt(...)` once, then `step(user_codes)` per frame."""

    def __init__(
        self,
        lm: LM,
        sampling: SamplingSettings | None = None,
        seed: int | None = None,
        *,
        silence_tokens: tuple[int, ...] = SILENCE_TOKENS,
        sine_tokens: tuple[int, ...] = SINE_TOKENS,
    ):
        super().__init__()
        cfg = lm.cfg
        if cfg.dep_q != cfg.n_q:
            raise ValueError(f"PersonaPlex generates all {cfg.n_q} codebooks, not {cfg.dep_q}")
        self.lm = run_as_the_fork(lm)
        self.sampling = sampling or SamplingSettings()
        self.rng = torch.Generator(device=lm.device)
        self.seed(seed)
        self.max_delay = cfg.max_delay
        self.half = cfg.n_q // 2  # codebooks per stream (8)
        device = lm.device
        self._delays = torch.tensor(cfg.delays, device=device)
        initial = [cfg.text_card] + [cfg.card] * cfg.n_q
        self._initial = torch.tensor(initial, device=device)  # [1 + n_q]
        self._silence = torch.tensor(silence_tokens, device=device).view(1, -1)
        self._sine = torch.tensor(sine_tokens, device=device).view(1, -1)
        self.last_picks: torch.Tensor | None = None  # [B, 1 + dep_q]: the model's own picks

    def seed(self, seed: int | None) -> None:
        """A fixed seed repeats a conversation exactly; None draws a fresh one."""
        if seed is None:
            self.rng.seed()
        else:
            self.rng.manual_seed(seed)

    def init_state(self, batch_size: int) -> _PersonaCache:
        cfg = self.lm.cfg
        shape = (batch_size, 1 + cfg.n_q, self.max_delay + 3)
        return _PersonaCache(torch.full(shape, -2, device=self.lm.device, dtype=torch.long))

    @property
    def _state(self) -> _PersonaCache:
        state = self.state
        if not isinstance(state, _PersonaCache):
            raise RuntimeError("PersonaGenerator needs streaming(generator, batch) around it")
        return state

    # The fork's prepare_step_input: write what is given, then the columns a step reads.
    def _prepare(self, user=None, moshi=None, text=None):
        state = self._state
        cache, provided = state.tokens, state.provided
        width, offset, delays = cache.shape[-1], state.offset, self.lm.cfg.delays
        for first, codes in ((1 + self.half, user), (1, moshi)):
            if codes is None:
                continue
            for q in range(codes.shape[1]):  # codes [B, 8]
                column = (offset + delays[first + q]) % width
                cache[:, first + q, column] = codes[:, q]
                provided[:, first + q, column] = True
        if text is not None:
            column = (offset + delays[0]) % width
            cache[:, 0, column] = text
            provided[:, 0, column] = True
        for k, delay in enumerate(delays):
            if offset <= delay:
                cache[:, k, offset % width] = self._initial[k]
                provided[:, k, offset % width] = True
        if offset == 0:
            cache[:, :, 0] = self._initial
            state.offset += 1
            return None
        source, target = (offset - 1) % width, offset % width
        return source, target

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, 1 + n_q, 1] -> the temporal transformer's input [B, 1, dim]."""
        lm = self.lm
        x = lm.emb[0](tokens[:, 1])
        for k in range(1, lm.cfg.n_q):
            x = x + lm.emb[k](tokens[:, k + 1])
        return x + lm.text_emb(tokens[:, 0])

    def _temporal(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.lm.out_norm(self.lm.transformer(x))
        return hidden, self.lm.text_linear(hidden)

    # The fork's process_transformer_output and depformer_step.
    def _finish(self, hidden, text_logits, source: int, target: int) -> torch.Tensor | None:
        state = self._state
        cache, provided = state.tokens, state.provided
        settings = self.sampling
        text_temperature = 0.0 if settings.greedy_text else settings.text_temperature
        audio_temperature = 0.0 if settings.greedy_audio else settings.temperature
        given, is_given = cache[:, :, target], provided[:, :, target]
        text = sample(text_logits[:, 0], text_temperature, settings.text_top_k, self.rng)
        previous = torch.where(is_given[:, 0], given[:, 0], text)
        picks = [text]
        for k in range(self.lm.cfg.dep_q):
            logits = self.lm.forward_depth(k, previous[:, None], hidden)
            pick = sample(logits[:, 0], audio_temperature, settings.top_k, self.rng)
            picks.append(pick)
            previous = torch.where(is_given[:, 1 + k], given[:, 1 + k], pick)
        self.last_picks = torch.stack(picks, dim=1)  # [B, 1 + dep_q]
        provided[:, :, source] = False
        cache[:, :, target] = torch.where(
            provided[:, :, target], cache[:, :, target], self.last_picks
        )
        if state.offset <= self.max_delay:
            state.offset += 1
            return None
        width = cache.shape[-1]
        columns = (state.offset - self.max_delay + self._delays) % width
        out = cache[:, torch.arange(cache.shape[1], device=cache.device), columns]
        state.offset += 1
        return out  # [B, 1 + dep_q]

    @torch.no_grad()
    def _step(self, user=None, moshi=None, text=None, *, keep_input: list | None = None):
        prepared = self._prepare(user, moshi, text)
        if prepared is None:
            return None
        source, target = prepared
        x = self._embed(self._state.tokens[:, :, source : source + 1])
        if keep_input is not None:
            keep_input.append(x.detach().clone())
        return self._finish(*self._temporal(x), source, target)

    @torch.no_grad()
    def step(self, user_codes: torch.Tensor, advance: object = None) -> torch.Tensor | None:
        """user_codes [B, >= 8] (one frame) -> [B, 1 + dep_q]: the text token, Moshi's 8 codes
        and the user's 8 of the frame `max_delay` steps back; None on the first two calls.
        (`advance` is FrameGenerator's: this step runs eagerly, its offset on the host.)"""
        B = self._state.tokens.shape[0]
        return self._step(user=user_codes.reshape(B, -1)[:, : self.half].long())

    def _fill(self, codes: torch.Tensor, batch: int) -> torch.Tensor:
        return codes.expand(batch, -1)

    @torch.no_grad()
    def prompt_voice(self, voice: VoicePrompt, mimi: Mimi | None = None) -> VoicePrompt:
        """Part 1 of the schedule; returns the voice as a .pt holds it (embeddings and cache)."""
        state = self._state
        B = state.tokens.shape[0]
        sine = self._fill(self._sine, B)
        if voice.embeddings is not None:
            assert voice.cache is not None
            dummy = self._fill(self._initial[1 : 1 + self.half][None], B)
            embeddings = voice.embeddings.to(self.lm.device, self.lm.dtype)
            for embedding in embeddings:
                while (prepared := self._prepare(dummy, dummy, TEXT_PAD)) is None:
                    pass
                self._finish(*self._temporal(embedding), *prepared)
            state.tokens.copy_(voice.cache.to(state.tokens.device))
            return voice
        if voice.pcm is None or mimi is None:
            raise ValueError("a voice prompt from audio needs Mimi to encode it")
        codes = voice_codes(mimi, voice.pcm).to(self.lm.device)  # [1, 8, frames]
        kept: list[torch.Tensor] = []
        for t in range(codes.shape[-1]):
            self._step(sine, self._fill(codes[:, :, t], B), TEXT_PAD, keep_input=kept)
        return VoicePrompt(
            pcm=voice.pcm,
            embeddings=torch.stack(kept).cpu() if kept else None,
            cache=state.tokens.clone().cpu(),
        )

    @torch.no_grad()
    def prompt_silence(self, frames: int = SILENCE_FRAMES) -> None:
        B = self._state.tokens.shape[0]
        for _ in range(frames):
            self._step(self._fill(self._sine, B), self._fill(self._silence, B), TEXT_PAD)

    @torch.no_grad()
    def prompt_text(self, tokens: list[int]) -> None:
        B = self._state.tokens.shape[0]
        for token in tokens:
            self._step(self._fill(self._sine, B), self._fill(self._silence, B), token)

    @torch.no_grad()
    def prompt(
        self, voice: VoicePrompt | None, text_tokens: list[int], mimi: Mimi | None = None
    ) -> VoicePrompt | None:
        """The whole schedule (the fork's `step_system_prompts`): the voice, silence, the
        persona's tokens, silence. Returns the voice as a .pt would hold it (to reuse)."""
        kept = self.prompt_voice(voice, mimi) if voice is not None else None
        self.prompt_silence()
        self.prompt_text(text_tokens)
        self.prompt_silence()
        return kept
