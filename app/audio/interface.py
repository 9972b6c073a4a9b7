"""What the engine thread talks to for audio: an `AudioIO` gives the user's frames and takes
Moshi's, and reports `AudioStats` for the status bar.

The engine thread runs one loop per 80 ms frame against an `AudioIO`: `read_frame` gives the next
1920 samples of the user's voice (24 kHz mono float32), `write_frame` takes Moshi's. Three kinds:
`app.audio.devices.DeviceAudio` (the microphone and speaker), `app.audio.from_file.FileAudio` (a
file plays the user's part) and `app.audio.from_file.SilentAudio` (silence in, playback discarded).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from model.config import SAMPLE_RATE


@dataclass(frozen=True)
class AudioStats:
    """Counters for the status bar. Rates are the devices' own (24000 for files and silence)."""

    underruns: int = 0  # playback ran dry: silence was played
    overruns: int = 0  # the input buffer was full: its oldest audio was dropped
    input_dropped_ms: float = 0.0  # user audio dropped by overruns, in total
    output_dropped_ms: float = 0.0  # Moshi audio dropped to keep playback latency bounded
    playback_buffer_ms: float = 0.0  # Moshi audio waiting to be played, now
    target_latency_ms: float = 0.0  # how much playback buffers before it starts (adaptive)
    input_buffer_ms: float = 0.0  # user audio captured but not yet read as a frame, now
    input_rate: int = SAMPLE_RATE
    output_rate: int = SAMPLE_RATE
    device_xruns: int = 0  # over- and underflows PortAudio itself reported
    frames_read: int = 0
    frames_written: int = 0
    silenced_samples: int = 0  # NaN or infinite input samples, replaced by silence
    processing_ms: float = 0.0  # echo cancellation and noise suppression, per frame (mean)


def silence_nonfinite(pcm: np.ndarray) -> int:
    """Replace NaN and infinite samples of `pcm` by 0, in place; how many there were. Bad
    samples from a device or a file would otherwise poison the codec's streaming state."""
    bad = ~np.isfinite(pcm)
    count = int(np.count_nonzero(bad))
    if count:
        pcm[bad] = 0.0
    return count


class AudioIO(abc.ABC):
    """What the engine thread talks to. All methods are called from the engine thread, except
    that `stop` may come from another thread (a blocked `read_frame` then returns None soon)."""

    realtime: bool = True
    """True when frames come at the pace of a clock (a device, a paced file), False when as fast
    as the engine can take them."""

    def start(self) -> None:  # noqa: B027 (optional)
        """Start capturing and playing."""

    def stop(self) -> None:  # noqa: B027 (optional)
        """Stop and release the devices; safe to call twice."""

    @abc.abstractmethod
    def read_frame(self, timeout: float) -> np.ndarray | None:
        """The next FRAME_SIZE samples of the user's voice, float32 at 24 kHz # [1920]; None if
        no whole frame came within `timeout` seconds, or the input is `finished`."""

    @abc.abstractmethod
    def write_frame(self, pcm: np.ndarray) -> None:
        """Play (or keep) Moshi's voice: mono float32 at 24 kHz # [1920]."""

    @abc.abstractmethod
    def stats(self) -> AudioStats: ...

    @property
    def finished(self) -> bool:
        """True once a file input has given all its frames; always False for live audio."""
        return False

    def __enter__(self) -> AudioIO:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mono(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim != 1:
        raise ValueError(f"write_frame takes mono samples [n], got shape {pcm.shape}")
    return pcm
