"""Audio without devices: `FileAudio` plays a file as the user's part, as fast as possible or
paced like a microphone, and collects Moshi's voice into a wav file on `stop`; `SilentAudio` gives
endless silence and discards playback (tests, and running without devices).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np

from model.config import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE

from ..errors import UserError
from .files import WavWriter, check_writable, load_audio, write_wav
from .interface import AudioIO, AudioStats, mono


class _Pacer:
    """Frame i is due (i + 1) frames after `start`, as a microphone delivers it; `stop` wakes a
    waiting `wait_next` early."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._t0: float | None = None
        self._count = 0

    def start(self) -> None:
        self.stopped.clear()
        self._t0, self._count = time.monotonic(), 0

    def wait_next(self, timeout: float) -> bool:
        """Wait until the next frame is due (True), or give up after `timeout` or on stop."""
        if self._t0 is None:
            self.start()
        delay = self._t0 + (self._count + 1) * FRAME_SECONDS - time.monotonic()
        if delay > timeout:
            self.stopped.wait(max(0.0, timeout))
            return False
        if self.stopped.wait(max(0.0, delay)):
            return False
        self._count += 1
        return True


class FileAudio(AudioIO):
    """An audio file as the user's voice (any format and rate, mixed down to 24 kHz mono): its
    frames in order, the last zero-padded, then `trailing_silence` seconds of silence, then
    `finished`. Moshi's voice is kept and written to `output_path` (24 kHz wav, atomically) on
    `stop`. `realtime`: deliver frames at the pace of a microphone instead of at once."""

    def __init__(
        self,
        input_path: str | Path,
        output_path: str | Path | None = None,
        realtime: bool = False,
        trailing_silence: float = 0.0,
    ) -> None:
        if trailing_silence < 0:
            raise UserError("the trailing silence must be 0 or more seconds")
        self.output_path = Path(output_path) if output_path is not None else None
        if self.output_path is not None:
            check_writable(self.output_path)
        audio, self._silenced = load_audio(input_path)
        self.realtime = realtime
        self.frame_count = math.ceil(len(audio) / FRAME_SIZE) + math.ceil(
            trailing_silence * SAMPLE_RATE / FRAME_SIZE
        )
        self._audio = np.zeros(self.frame_count * FRAME_SIZE, dtype=np.float32)
        self._audio[: len(audio)] = audio
        self._index = 0
        self._pacer = _Pacer()
        self._written = 0
        self._writer: WavWriter | None = None
        self._saved = False

    @property
    def finished(self) -> bool:
        return self._index >= self.frame_count

    def start(self) -> None:
        self._pacer.start()

    def stop(self) -> None:
        self._pacer.stopped.set()
        if self.output_path is None or self._saved:
            return
        self._saved = True
        writer, self._writer = self._writer, None
        if writer is None:  # Moshi said nothing: an empty wav
            write_wav(self.output_path, np.zeros(0, np.float32))
        else:
            writer.close()

    def read_frame(self, timeout: float) -> np.ndarray | None:
        if self.finished or self._pacer.stopped.is_set():
            return None
        if self.realtime and not self._pacer.wait_next(timeout):
            return None
        start = self._index * FRAME_SIZE
        self._index += 1
        return self._audio[start : start + FRAME_SIZE].copy()

    def write_frame(self, pcm: np.ndarray) -> None:
        """Moshi's voice goes to the output file as it comes (nothing is kept in memory)."""
        pcm = mono(pcm)
        self._written += 1
        if self.output_path is None or self._saved:
            return
        if self._writer is None:
            self._writer = WavWriter(self.output_path)
        self._writer.write(pcm)

    def stats(self) -> AudioStats:
        return AudioStats(
            frames_read=self._index, frames_written=self._written, silenced_samples=self._silenced
        )


class SilentAudio(AudioIO):
    """Endless silence as the user's voice; Moshi's voice is discarded."""

    def __init__(self, realtime: bool = True) -> None:
        self.realtime = realtime
        self._pacer = _Pacer()
        self._read = self._written = 0

    def start(self) -> None:
        self._pacer.start()

    def stop(self) -> None:
        self._pacer.stopped.set()

    def read_frame(self, timeout: float) -> np.ndarray | None:
        if self._pacer.stopped.is_set():
            return None
        if self.realtime and not self._pacer.wait_next(timeout):
            return None
        self._read += 1
        return np.zeros(FRAME_SIZE, dtype=np.float32)

    def write_frame(self, pcm: np.ndarray) -> None:
        mono(pcm)
        self._written += 1

    def stats(self) -> AudioStats:
        return AudioStats(frames_read=self._read, frames_written=self._written)
