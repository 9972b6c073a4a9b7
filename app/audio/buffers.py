"""The buffers between the PortAudio callbacks and the engine thread.

The callbacks only copy between the device's block and a preallocated `RingBuffer` under a lock
held for the copy: no allocation, no printing, no model, no Qt. When the microphone's ring is full
the oldest audio is dropped and counted (the engine fell behind: latency stays bounded). The
speaker side is a `PlaybackBuffer`, an adaptive jitter buffer: it waits until `target` audio is
buffered before it plays, plays silence and counts an underrun when it runs dry (then waits for
`target` again), grows `target` after each underrun, shrinks it slowly while playback is calm, and
drops the oldest audio when more than `target + margin` is buffered.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """A bounded FIFO of float32 samples [capacity, channels], allocated once.

    One thread writes and another reads; each call holds the lock only to copy. A write that does
    not fit drops the oldest samples (counted in `dropped`) and returns how many it dropped.
    """

    def __init__(self, capacity: int, channels: int = 1) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError("a ring buffer needs room for at least one sample and channel")
        self.capacity, self.channels = capacity, channels
        self._data = np.zeros((capacity, channels), dtype=np.float32)
        self._start = 0  # index of the oldest sample
        self._size = 0
        self._closed = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.dropped = 0

    @property
    def size(self) -> int:
        """Samples buffered now."""
        return self._size

    def write(self, block: np.ndarray) -> int:
        """Append `block` [n, channels]; returns how many of the oldest samples were dropped."""
        n = len(block)
        with self._lock:
            cap = self.capacity
            if n >= cap:  # only the newest `cap` samples survive
                dropped = self._size + n - cap
                self._data[:] = block[n - cap :]
                self._start, self._size = 0, cap
            else:
                dropped = max(0, self._size + n - cap)
                if dropped:
                    self._start = (self._start + dropped) % cap
                    self._size -= dropped
                end = (self._start + self._size) % cap
                first = min(n, cap - end)
                self._data[end : end + first] = block[:first]
                self._data[: n - first] = block[first:]
                self._size += n
            self.dropped += dropped
            self._changed.notify_all()
        return dropped

    def read_into(self, out: np.ndarray) -> int:
        """Move up to len(out) of the oldest samples into `out` [m, channels]; returns how many."""
        with self._lock:
            n = min(len(out), self._size)
            first = min(n, self.capacity - self._start)
            out[:first] = self._data[self._start : self._start + first]
            out[first:n] = self._data[: n - first]
            self._start = (self._start + n) % self.capacity
            self._size -= n
        return n

    def read(self, n: int) -> np.ndarray:
        """Remove and return up to `n` of the oldest samples [m, channels] (allocates)."""
        out = np.empty((min(n, self._size), self.channels), dtype=np.float32)
        m = self.read_into(out)
        return out[:m]

    def trim_to(self, keep: int) -> int:
        """Drop the oldest samples so that at most `keep` remain; returns how many were dropped."""
        with self._lock:
            dropped = max(0, self._size - max(0, keep))
            self._start = (self._start + dropped) % self.capacity
            self._size -= dropped
            self.dropped += dropped
        return dropped

    def wait(self, n: int, timeout: float) -> bool:
        """Block until `n` samples are buffered (True), or `timeout` passes or the buffer is
        closed (False)."""
        with self._changed:
            self._changed.wait_for(lambda: self._size >= n or self._closed, max(0.0, timeout))
            return self._size >= n and not self._closed

    def close(self) -> None:
        """Wake every `wait` and make it return False from now on."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class PlaybackBuffer:
    """The speaker's adaptive jitter buffer, at the device's rate and channel count.

    The engine `push`es blocks; the PortAudio callback `fill`s the device's buffer. Playback
    starts (and restarts after an underrun) once `target` samples are buffered, so each 80 ms
    frame arrives while the previous ones still play. Running dry plays silence and counts an
    underrun; the next push raises `target` by `grow` (up to `max_target`). After `relax_after`
    samples pushed without an underrun, `target` comes down by `relax_step` (not below its start)
    and as much of the oldest audio is dropped. A push that leaves more than `target + margin`
    buffered (the producer ran ahead, or a burst after a stall) drops the oldest audio down to
    `target`. So the buffered audio stays below `max_target + margin` (plus one pushed block).
    """

    def __init__(
        self,
        rate: int,
        channels: int = 1,
        *,
        latency: float = 0.12,
        max_latency: float = 0.4,
        margin: float = 0.12,
        grow: float = 0.02,
        relax_after: float = 20.0,
        relax_step: float = 0.01,
    ) -> None:
        if not 0 < latency <= max_latency:
            raise ValueError("playback latency must be positive and at most max_latency")
        samples = lambda seconds: int(round(seconds * rate))  # noqa: E731
        self.rate = rate
        self.min_target = self.target = samples(latency)
        self.max_target = samples(max_latency)
        self.margin = samples(margin)
        self.grow = samples(grow)
        self.relax_after = samples(relax_after)
        self.relax_step = samples(relax_step)
        # Room for the largest buffered amount plus a second of bursts; a fuller ring drops.
        self.ring = RingBuffer(self.max_target + self.margin + rate, channels)
        self.priming = True  # waiting for `target` samples before playing
        self.underruns = 0  # written by the callback only
        self.played = 0
        self._seen_underruns = 0
        self._calm = 0

    @property
    def dropped(self) -> int:
        """Samples dropped to keep latency bounded, in total."""
        return self.ring.dropped

    def push(self, block: np.ndarray) -> None:
        """Engine thread: queue `block` [n, channels] for playback and adapt the target."""
        self.ring.write(block)
        underruns = self.underruns
        if underruns != self._seen_underruns:
            more = (underruns - self._seen_underruns) * self.grow
            self.target = min(self.max_target, self.target + more)
            self._seen_underruns, self._calm = underruns, 0
        else:
            self._calm += len(block)
            if self._calm >= self.relax_after and self.target > self.min_target:
                step = min(self.relax_step, self.target - self.min_target)
                self.target -= step
                self.ring.trim_to(max(self.target, self.ring.size - step))
                self._calm = 0
        if self.ring.size > self.target + self.margin:
            self.ring.trim_to(self.target)

    def fill(self, out: np.ndarray) -> None:
        """PortAudio callback: fill the device's `out` [frames, channels]; only copies."""
        if self.priming:
            if self.ring.size < self.target:
                out.fill(0)
                return
            self.priming = False
        n = self.ring.read_into(out)
        self.played += n
        if n < len(out):
            out[n:] = 0
            self.underruns += 1
            self.priming = True
