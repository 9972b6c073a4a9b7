"""A simulated room for the echo benchmark (benchmarks/bench_echo.py) and its tests: speech-like
voices made in numpy, room impulse responses, and the microphone signal they make together.

No speech corpus is at hand offline, so the voices are synthetic voiced speech: a glottal pulse
train (a pitch that glides within each syllable) through three formant resonators whose
frequencies change per syllable (five vowels), shaped by syllable envelopes of 120-300 ms with
pauses between words, plus a little aspiration noise. Two seeds and two pitch ranges give two
different speakers ("Moshi" higher, "the user" lower).

Room impulse responses use the exponential-decay method (Polack's statistical model): a direct
path, a few sparse early reflections between 2 and 25 ms, and a diffuse tail of Gaussian noise
under an envelope exp(-6.91 t / RT60) that reaches -60 dB at RT60, low-passed a little (walls
absorb the highs), scaled to a direct-to-reverberant ratio (DRR) as a laptop's microphone sees
its own speakers 10-20 cm away. Three rooms: RT60 0.2 s and DRR 10 dB (a furnished office),
0.4 s and 6 dB (a living room), 0.6 s and 3 dB (a kitchen). The echo path is then a delay (20-200 ms: the devices' buffers) and a gain.
numpy only: no scipy or pyroomacoustics (neither installs with the app).
"""

from __future__ import annotations

import numpy as np

RATE = 24000
VOWELS = (
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (570, 840, 2410),
)
# RT60 in seconds and the direct-to-reverberant ratio (dB) at a laptop's microphone, 10-20 cm
# from its speakers: the direct path dominates, less so in a livelier room.
ROOMS = {"office": (0.2, 10.0), "living room": (0.4, 6.0), "kitchen": (0.6, 3.0)}


def _formants(x: np.ndarray, formants: tuple, rate: int) -> np.ndarray:
    """`x` through three two-pole resonators (bandwidths 80, 100, 120 Hz), peak gain 1, in the
    frequency domain (the segment is padded, and tapered by its envelope: no wrap-around)."""
    n = 1 << int(np.ceil(np.log2(2 * len(x) + 1)))
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(n, 1 / rate) / rate)  # z^-1 on the unit circle
    response = np.ones_like(z)
    for freq, bandwidth in zip(formants, (80, 100, 120), strict=True):
        r = np.exp(-np.pi * bandwidth / rate)
        response /= 1 - 2 * r * np.cos(2 * np.pi * freq / rate) * z + r * r * z * z
    response /= np.abs(response).max()
    return np.fft.irfft(np.fft.rfft(x, n) * response, n)[: len(x)]


def voice(seconds: float, seed: int, pitch: tuple[float, float], rate: int = RATE) -> np.ndarray:
    """Synthetic voiced speech, peak about 0.5, `pitch` the (low, high) range of f0 in Hz."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate))
    t = int(rng.uniform(0.05, 0.2) * rate)
    while t < len(out):
        for _ in range(rng.integers(1, 5)):  # a word: 1-4 syllables
            n = int(rng.uniform(0.12, 0.3) * rate)
            if t + n > len(out):
                break
            f0 = np.linspace(*rng.uniform(*pitch, size=2), n)
            phase = np.cumsum(f0 / rate)
            cycle = phase % 1.0
            pulse = np.where(cycle < 0.6, np.sin(np.pi * cycle / 0.6) ** 2, 0.0)  # open phase
            excitation = np.diff(pulse, prepend=0.0) + 0.02 * rng.standard_normal(n)
            envelope = np.sin(np.pi * np.arange(n) / n) ** 0.7
            vowel = VOWELS[rng.integers(len(VOWELS))]
            out[t : t + n] += _formants(excitation * envelope, vowel, rate) * envelope
            t += n
        t += int(rng.uniform(0.15, 0.6) * rate)  # a pause between words
    return (0.5 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


def rir(room: tuple[float, float], seed: int, rate: int = RATE) -> np.ndarray:
    """A room impulse response by the exponential-decay method (see the module's note): `room`
    is (RT60 in s, direct-to-reverberant ratio in dB); the direct path at sample 0; unit energy."""
    rt60, drr_db = room
    rng = np.random.default_rng(seed)
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    h = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
    h[: int(0.002 * rate)] = 0.0  # the tail starts after the first reflection
    for _ in range(6):  # early reflections: walls, desk, ceiling
        h[int(rng.uniform(0.002, 0.025) * rate)] += rng.uniform(-3, 3)
    h = np.convolve(h, np.ones(3) / 3, mode="same")  # walls absorb the highs
    h *= 10 ** (-drr_db / 20) / np.sqrt(h @ h)  # the reverberant part, under the direct path
    h[0] = 1.0
    return h / np.sqrt(h @ h)  # unit energy: the echo's level is the path's gain


def echo_path(far: np.ndarray, room: np.ndarray, delay: float, gain: float, rate: int = RATE):
    """What the microphone picks up of `far`: through `room`, `delay` seconds late, times `gain`."""
    wet = np.convolve(far, room)[: len(far)] * gain
    d = int(round(delay * rate))
    return np.concatenate([np.zeros(d), wet[: len(far) - d]]).astype(np.float32)


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019)."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = reference * (estimate @ reference) / max(1e-12, reference @ reference)
    return float(
        10 * np.log10((target @ target) / max(1e-12, (estimate - target) @ (estimate - target)))
    )


class RoomAudio:
    """An `AudioIO` (app.audio.interface) that closes the loop in software: what the engine
    writes plays into the simulated room and comes back in the microphone, with `user` (the clean
    voice) and `noise` (arrays at 24 kHz). Frame k written is played from sample (k + 1) * 1920
    (after the frame being read), then reaches the microphone `delay` seconds later through
    `room` times `gain`; `delay` may change mid-stream (`jump_at`, `jump` seconds) without being
    reported, as a device's buffer that grows. `echo` keeps the echo alone, for the figures."""

    realtime = False

    def __init__(self, user, noise, room, delay, gain, jump_at=None, jump=0.0, rate=RATE):
        from model.config import FRAME_SIZE

        self.frame_size = FRAME_SIZE
        self.user, self.noise = np.asarray(user, np.float64), np.asarray(noise, np.float64)
        self.room, self.gain, self.rate = room, gain, rate
        self.delay, self.jump_at, self.jump = delay, jump_at, jump
        n = len(self.user)
        self._pad = len(room) + int(rate * (delay + jump + 0.05))  # silence before the start
        self.played = np.zeros(self._pad + n + 2 * FRAME_SIZE)
        self.echo = np.zeros(n)
        self.frames = n // FRAME_SIZE
        self._read = self._written = 0
        self.reported_delay_ms = 1000 * delay  # what stats() reports of the path (not the jump)

    finished = property(lambda self: self._read >= self.frames)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read_frame(self, timeout: float):
        if self.finished:
            return None
        f, k = self.frame_size, self._read
        start, end = k * f, (k + 1) * f
        delay = self.delay + (
            self.jump if self.jump_at is not None and start >= self.jump_at * self.rate else 0
        )
        d, h, p = int(round(delay * self.rate)), self.room, self._pad
        segment = self.played[p + start - d - len(h) + 1 : p + end - d]
        wet = self._convolve_valid(segment)
        self.echo[start:end] = wet * self.gain
        self._read += 1
        return (self.user[start:end] + self.noise[start:end] + self.echo[start:end]).astype(
            np.float32
        )

    def _convolve_valid(self, segment: np.ndarray) -> np.ndarray:
        """np.convolve(segment, room, "valid") by FFT (the room's spectrum computed once)."""
        n = len(segment)
        if getattr(self, "_segment", 0) != n:
            self._segment, self._fft_size = n, 1 << int(np.ceil(np.log2(n)))
            self._spectrum = np.fft.rfft(self.room, self._fft_size)
        full = np.fft.irfft(np.fft.rfft(segment, self._fft_size) * self._spectrum, self._fft_size)
        return full[len(self.room) - 1 : n]

    def write_frame(self, pcm) -> None:
        f = self.frame_size
        start = self._pad + (self._written + 1) * f
        if start + f <= len(self.played):
            self.played[start : start + f] = pcm
        self._written += 1

    def stats(self):
        from app.audio.interface import AudioStats

        return AudioStats(playback_buffer_ms=self.reported_delay_ms, frames_read=self._read)
