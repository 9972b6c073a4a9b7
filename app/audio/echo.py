"""Echo cancellation and noise suppression: WebRTC's audio processing module (through LiveKit's
`rtc.AudioProcessingModule`), between the audio devices and the engine, in 10 ms blocks.

    speaker <- write_frame(Moshi) ----------- far end: exactly what is handed to the output
    mic     -> read_frame -> [cancel echo, suppress noise] -> what Moshi hears (and the record)

`EchoCancellingAudio` wraps any `AudioIO`: every frame written to it is also the canceller's far-end
reference, every frame read from it comes out with Moshi's echo removed. It runs on the engine
thread (the audio side of the device queues), never in a PortAudio callback. The delay between a
far-end block and its echo is told to the canceller from what the audio reports (playback and
capture buffers, PortAudio's stream latencies), and WebRTC's own delay estimator (AEC3) measures
and follows the rest; a change of devices starts a fresh canceller (`start`), and a change of
latency is followed as it happens. Its cost per frame is `processing_ms`.

The package is imported only when a canceller is made: without it, `EchoUnavailable` says why and
the caller falls back to half duplex.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import replace

import numpy as np

from model.config import SAMPLE_RATE

from ..errors import UserError
from .interface import AudioIO, AudioStats

log = logging.getLogger(__name__)

BLOCK = SAMPLE_RATE // 100  # WebRTC processes 10 ms blocks: 240 samples at 24 kHz
NOISE_LEVELS = ("off", "low", "high")
_LOW_FLOOR = 0.3  # "low" keeps this share of what noise suppression removes (about -10 dB at most)
_DELAY_STEP_MS = 10  # tell the canceller a new delay when it moved by this much


class EchoUnavailable(UserError):
    """The echo canceller cannot be used here (its package is missing or does not load)."""


def _rtc():
    try:
        from livekit import rtc
    except Exception as e:  # ImportError, or a native library that does not load (OSError)
        raise EchoUnavailable(
            f"echo cancellation is unavailable ({type(e).__name__}: {e}); install the `livekit` "
            "package to talk without headphones"
        ) from e
    return rtc


def check_available() -> None:
    """Raise EchoUnavailable if the canceller cannot be made here."""
    _rtc()


class EchoCanceller:
    """WebRTC's processing on 24 kHz mono float32, any number of samples at a time (kept in 10 ms
    blocks internally, so the output lags the input by less than one block only when a call is
    not a whole number of blocks; frames of 1920 samples are).

    `far(pcm)`: samples handed to the speaker; `near(pcm)`: samples captured, returned processed.
    Far-end blocks are queued and given to the canceller interleaved with the near-end ones (one
    far block, then one near block), the steady rhythm it expects from a real-time device.
    `noise`: "off", "low" (a floor: at most about 10 dB less noise) or "high" (WebRTC's full
    suppression).
    """

    def __init__(self, echo_cancellation: bool = True, noise: str = "off") -> None:
        if noise not in NOISE_LEVELS:
            raise ValueError(
                f"noise suppression is one of {', '.join(NOISE_LEVELS)}, not {noise!r}"
            )
        rtc = self._rtc = _rtc()
        self.echo_cancellation, self.noise = echo_cancellation, noise
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=echo_cancellation, high_pass_filter=echo_cancellation
        )
        self._ns = rtc.AudioProcessingModule(noise_suppression=True) if noise != "off" else None
        self._far: deque[np.ndarray] = deque(maxlen=200)  # 2 s of blocks not yet given
        self._far_rest = np.zeros(0, np.int16)
        self._near_rest = np.zeros(0, np.float32)
        self._out_rest = np.zeros(0, np.float32)
        self.delay_ms = 0

    def _frame(self, block: np.ndarray):
        return self._rtc.AudioFrame(block.tobytes(), SAMPLE_RATE, 1, BLOCK)

    def set_delay_ms(self, delay_ms: float) -> None:
        """The delay from handing a sample to the output to capturing its echo, as reported."""
        self.delay_ms = max(0, min(500, int(round(delay_ms))))

    def far(self, pcm: np.ndarray) -> None:
        pcm = np.concatenate([self._far_rest, _int16(pcm)])
        whole = len(pcm) // BLOCK * BLOCK
        for start in range(0, whole, BLOCK):
            self._far.append(pcm[start : start + BLOCK])
        self._far_rest = pcm[whole:]

    def near(self, pcm: np.ndarray) -> np.ndarray:
        pcm = np.asarray(pcm, np.float32)
        buf = np.concatenate([self._near_rest, pcm])
        whole = len(buf) // BLOCK * BLOCK
        done = [self._out_rest] + [
            self._process(buf[s : s + BLOCK]) for s in range(0, whole, BLOCK)
        ]
        self._near_rest = buf[whole:]
        out = np.concatenate(done)
        if len(out) < len(pcm):  # only before the first whole block
            out = np.concatenate([np.zeros(len(pcm) - len(out), np.float32), out])
        self._out_rest = out[len(pcm) :]
        return out[: len(pcm)]

    def _process(self, block: np.ndarray) -> np.ndarray:
        if self.echo_cancellation:
            # With nothing played, the reference is silence: the canceller keeps its rhythm.
            far = self._far.popleft() if self._far else np.zeros(BLOCK, np.int16)
            self._apm.process_reverse_stream(self._frame(far))
            self._apm.set_stream_delay_ms(self.delay_ms)  # before each near block, as WebRTC asks
        frame = self._frame(_int16(block))
        self._apm.process_stream(frame)
        if self._ns is not None:
            before = np.frombuffer(frame.data, np.int16).astype(np.float32)
            self._ns.process_stream(frame)
            after = np.frombuffer(frame.data, np.int16).astype(np.float32)
            if self.noise == "low":
                after = after + _LOW_FLOOR * (before - after)
            return after / 32768.0
        return np.frombuffer(frame.data, np.int16).astype(np.float32) / 32768.0


def _int16(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm, np.float32)
    return (np.clip(pcm, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


def reported_delay_ms(audio: AudioIO) -> float:
    """How long after it is written a frame's echo is read back, from what `audio` reports: the
    playback buffer, PortAudio's output and input stream latencies, and the captured audio not
    yet read. 0 for audio without devices (files, silence)."""
    stats = audio.stats()
    latencies = getattr(audio, "stream_latencies_ms", lambda: (0.0, 0.0))()
    return stats.playback_buffer_ms + sum(latencies) + stats.input_buffer_ms


class EchoCancellingAudio(AudioIO):
    """`inner` with Moshi's echo removed from the user's frames (and noise suppressed): what Moshi
    hears. `start` makes a fresh canceller (new devices, new room); the delay is updated from
    `reported_delay_ms(inner)` on every frame, told again when it moved by 10 ms or more."""

    def __init__(self, inner: AudioIO, echo_cancellation: bool = True, noise: str = "off") -> None:
        check_available()
        self.inner = inner
        self.realtime = inner.realtime
        self.echo_cancellation, self.noise_suppression = echo_cancellation, noise
        self.canceller = EchoCanceller(echo_cancellation, noise)
        self.processing_ms = 0.0  # the last frame's cost
        self._total_ms = 0.0
        self._frames = 0

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def start(self) -> None:
        self.canceller = EchoCanceller(self.echo_cancellation, self.noise_suppression)
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop()

    def read_frame(self, timeout: float) -> np.ndarray | None:
        frame = self.inner.read_frame(timeout)
        if frame is None:
            return None
        started = time.perf_counter()
        delay = reported_delay_ms(self.inner)
        if abs(delay - self.canceller.delay_ms) >= _DELAY_STEP_MS:
            self.canceller.set_delay_ms(delay)
        out = self.canceller.near(np.nan_to_num(frame, nan=0.0, posinf=0.0, neginf=0.0))
        self.processing_ms = 1000 * (time.perf_counter() - started)
        self._total_ms += self.processing_ms
        self._frames += 1
        return out.astype(np.float32, copy=False)

    def write_frame(self, pcm: np.ndarray) -> None:
        self.inner.write_frame(pcm)
        if self.echo_cancellation:
            self.canceller.far(pcm)

    def stats(self) -> AudioStats:
        mean = self._total_ms / self._frames if self._frames else 0.0
        return replace(self.inner.stats(), processing_ms=mean)

    def __getattr__(self, name: str):  # what else the inner audio offers (rates, devices)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def available() -> str | None:
    """None if the canceller can be made here, else why not (one sentence)."""
    try:
        check_available()
    except EchoUnavailable as e:
        return str(e)
    return None


def with_processing(audio: AudioIO, echo_cancellation: bool, noise: str = "off") -> AudioIO:
    """`audio` with echo cancellation and noise suppression as asked; as it is when nothing is
    asked, or when the package is unavailable (logged; the engine falls back to half duplex)."""
    if not echo_cancellation and noise == "off":
        return audio
    why = available()
    if why is not None:
        log.warning("%s", why)
        return audio
    return EchoCancellingAudio(audio, echo_cancellation, noise)


def describe(echo_cancellation: bool, noise: str) -> str:
    """One line for the user: what processes the microphone."""
    parts = ["echo cancellation on" if echo_cancellation else "echo cancellation off"]
    if noise != "off":
        parts.append(f"noise suppression {noise}")
    return ", ".join(parts)
