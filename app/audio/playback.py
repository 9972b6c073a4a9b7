"""Playing a kept conversation back through the chosen output device (the History's player).

A `Player` opens the output device at its native rate (like `DeviceAudio`), and a feeder thread
reads the conversation a tenth of a second at a time (both voices mixed), resamples it and hands
it to the PortAudio callback through a bounded queue; the callback only copies. `position` is the
sample (24 kHz) the speaker has reached; `seek` and `pause` take effect at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from model.config import SAMPLE_RATE

from .devices import AudioError, _channels, _sounddevice, find_device
from .files import resample

log = logging.getLogger(__name__)

BLOCK = SAMPLE_RATE // 10  # samples read at a time (100 ms)


class Player:
    """`read(start, count)` gives [samples, 2] float32 at 24 kHz (fewer at the end)."""

    def __init__(
        self,
        read: Callable[[int, int], np.ndarray],
        total: int,
        device: int | str | None = None,
    ) -> None:
        sd = self._sd = _sounddevice()
        self.device = find_device(sd, device, "output")
        self.rate = int(self.device["default_samplerate"])
        self.channels = _channels(sd, self.device, "output", self.rate)
        self.total = total
        self._read = read
        # (generation, first sample at 24 kHz, samples at 24 kHz, the block at the device's rate)
        self._queue: queue.Queue[tuple[int, int, int, np.ndarray]] = queue.Queue(maxsize=4)
        self._lock = threading.Lock()
        self._generation = 0  # a seek starts a new one: older blocks in the queue are dropped
        self._next = 0  # the next sample the feeder reads
        self._position = 0
        self._current: tuple[int, int, np.ndarray, int] | None = None  # ..., samples used
        self._playing = threading.Event()
        self._closed = threading.Event()
        self.error: str | None = None
        self._stream: Any = None
        self._feeder = threading.Thread(target=self._feed, name="playback", daemon=True)
        self._feeder.start()

    @property
    def position(self) -> int:
        return self._position

    @property
    def playing(self) -> bool:
        return self._playing.is_set()

    def play(self) -> None:
        if self._stream is None:
            try:
                self._stream = self._sd.OutputStream(
                    device=self.device["index"],
                    samplerate=self.rate,
                    channels=self.channels,
                    dtype="float32",
                    callback=self._callback,
                )
                self._stream.start()
            except (self._sd.PortAudioError, ValueError) as e:
                self._stream = None
                raise AudioError(
                    f"cannot play on {self.device['name']!r} ({e}); is another program using "
                    "it? Choose another output device in Settings"
                ) from e
        if self._position >= self.total:
            self.seek(0)
        self._playing.set()

    def pause(self) -> None:
        self._playing.clear()

    def seek(self, sample: int) -> None:
        sample = max(0, min(int(sample), self.total))
        with self._lock:
            self._generation += 1
            self._next = self._position = sample
            self._current = None
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        self._closed.set()
        self._playing.clear()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:
                log.warning("the playback stream did not close cleanly", exc_info=True)

    # ------------------------------------------------------------------------------ threads

    def _feed(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                start, generation = self._next, self._generation
            if start >= self.total:
                self._closed.wait(0.05)
                continue
            try:
                stereo = self._read(start, BLOCK)
            except Exception as e:
                log.error("playback stopped: the conversation cannot be read", exc_info=True)
                self.error = f"playback stopped: {e}"
                self._playing.clear()
                self._closed.wait(0.2)
                continue
            if not len(stereo):
                with self._lock:
                    if generation == self._generation:
                        self._next = self.total
                continue
            mono = stereo.mean(axis=1).astype(np.float32)
            out = resample(mono, SAMPLE_RATE, self.rate) if self.rate != SAMPLE_RATE else mono
            with self._lock:
                if generation != self._generation:
                    continue
                self._next = start + len(stereo)
            while not self._closed.is_set():
                try:
                    self._queue.put((generation, start, len(stereo), out), timeout=0.05)
                    break
                except queue.Full:
                    with self._lock:
                        if generation != self._generation:
                            break

    def _callback(self, outdata: np.ndarray, frames: int, time_: Any, status: Any) -> None:
        outdata.fill(0)
        if not self._playing.is_set():
            return
        filled = 0
        while filled < frames:
            if self._current is None:
                try:
                    generation, start, samples, block = self._queue.get_nowait()
                except queue.Empty:
                    if self._position >= self.total:
                        self._playing.clear()
                    return
                if generation != self._generation:
                    continue
                self._current = (start, samples, block, 0)
            start, samples, block, used = self._current
            n = min(frames - filled, len(block) - used)
            outdata[filled : filled + n, :] = block[used : used + n, None]
            filled += n
            used += n
            self._position = start + int(used * samples / max(1, len(block)))
            self._current = None if used >= len(block) else (start, samples, block, used)
