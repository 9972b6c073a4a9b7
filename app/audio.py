"""Audio in and out for a conversation: the microphone and speaker, a file, or silence.

The engine thread runs one loop per 80 ms frame against an `AudioIO`: `read_frame` gives the next
1920 samples of the user's voice (24 kHz mono float32), `write_frame` takes Moshi's. Three kinds:

- `DeviceAudio`: PortAudio streams (through sounddevice) on real devices, opened at each device's
  own rate; the engine thread resamples to and from 24 kHz (soxr, streaming).
- `FileAudio`: a file plays the user's part, as fast as possible or paced like a microphone;
  Moshi's voice is collected and written to a wav file on `stop`.
- `SilentAudio`: endless silence in, playback discarded (tests, and running without devices).

The PortAudio callbacks only copy between the device's block and a preallocated `RingBuffer` under
a lock held for the copy: no allocation, no printing, no model, no Qt. When the microphone's ring
is full the oldest audio is dropped and counted (the engine fell behind: latency stays bounded).
The speaker side is a `PlaybackBuffer`, an adaptive jitter buffer: it waits until `target` audio is
buffered before it plays, plays silence and counts an underrun when it runs dry (then waits for
`target` again), grows `target` after each underrun, shrinks it slowly while playback is calm, and
drops the oldest audio when more than `target + margin` is buffered.

sounddevice is imported only when a device is used, so everything else runs without PortAudio.
"""

from __future__ import annotations

import abc
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audiofile import SAMPLE_RATE, read_audio, write_wav
from .errors import UserError

FRAME_SIZE = 1920  # samples at 24 kHz: 80 ms, one model step
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE

_FILE_USE = "file-based use (`moshi-desktop talk`, `chat --input-file`) keeps working"


class AudioError(UserError):
    """An audio device cannot be used: the message says which and what to do."""


class PortAudioMissing(AudioError):
    """The PortAudio library, which sounddevice loads, is not installed."""


class NoAudioDevice(AudioError):
    """There is no microphone, or no speaker, at all."""


def _sounddevice() -> Any:
    """The sounddevice module; it loads PortAudio as it is imported."""
    try:
        import sounddevice
    except (OSError, ImportError) as e:  # OSError: "PortAudio library not found"
        raise PortAudioMissing(
            f"cannot load the PortAudio audio library ({e}): install it to talk live "
            "(Debian/Ubuntu: `sudo apt install libportaudio2`, Fedora: `sudo dnf install "
            f"portaudio`, macOS/Windows: reinstall sounddevice); {_FILE_USE}"
        ) from e
    return sounddevice


# --- The interface ------------------------------------------------------------------------------


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


def _mono(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim != 1:
        raise ValueError(f"write_frame takes mono samples [n], got shape {pcm.shape}")
    return pcm


# --- Buffers ------------------------------------------------------------------------------------


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


# --- Devices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """One audio device as PortAudio lists it."""

    index: int
    name: str
    hostapi: str
    input_channels: int
    output_channels: int
    default_samplerate: float
    input_24k: bool | None  # takes 24 kHz mono input directly; None: not an input device
    output_24k: bool | None
    default_input: bool = False
    default_output: bool = False


def _query_devices(sd: Any) -> list[dict]:
    try:
        return [dict(d, index=i) for i, d in enumerate(sd.query_devices())]
    except sd.PortAudioError as e:
        raise AudioError(f"cannot list the audio devices ({e}); {_FILE_USE}") from e


def _default_indices(sd: Any) -> tuple[int, int]:
    try:
        default_in, default_out = sd.default.device
        return int(default_in), int(default_out)
    except (TypeError, ValueError):
        return -1, -1


def _hostapi_names(sd: Any) -> list[str]:
    try:
        return [api["name"] for api in sd.query_hostapis()]
    except Exception:  # a fake or a failing host: names are only decoration
        return []


def _accepts(check: Any, sd: Any, index: int, samplerate: float, channels: int) -> bool:
    try:
        check(device=index, samplerate=samplerate, channels=channels, dtype="float32")
    except (sd.PortAudioError, ValueError):
        return False
    return True


def list_devices() -> list[DeviceInfo]:
    """Every audio device, with whether it takes 24 kHz mono as it is (else the app resamples).
    Raises PortAudioMissing, or AudioError when the system cannot list its devices."""
    sd = _sounddevice()
    devices = _query_devices(sd)
    default_in, default_out = _default_indices(sd)
    apis = _hostapi_names(sd)
    infos = []
    for d in devices:
        index, ins, outs = d["index"], d["max_input_channels"], d["max_output_channels"]
        api = d.get("hostapi", -1)
        infos.append(
            DeviceInfo(
                index=index,
                name=d["name"],
                hostapi=apis[api] if 0 <= api < len(apis) else "",
                input_channels=ins,
                output_channels=outs,
                default_samplerate=float(d["default_samplerate"]),
                input_24k=_accepts(sd.check_input_settings, sd, index, SAMPLE_RATE, 1)
                if ins
                else None,
                output_24k=_accepts(sd.check_output_settings, sd, index, SAMPLE_RATE, 1)
                if outs
                else None,
                default_input=index == default_in,
                default_output=index == default_out,
            )
        )
    return infos


def _describe(devices: list[dict]) -> str:
    return ", ".join(f"{d['index']}: {d['name']!r}" for d in devices)


def find_device(sd: Any, spec: int | str | None, kind: str) -> dict:
    """The device to use as `kind` ("input" or "output"): the default for None, else by index
    (an int or a string of digits) or by a case-insensitive part of its name."""
    devices = _query_devices(sd)
    channels = "max_input_channels" if kind == "input" else "max_output_channels"
    option = f"--{kind}-device"
    usable = [d for d in devices if d[channels] > 0]
    if not usable:
        what = "microphone" if kind == "input" else "speaker or headphones"
        raise NoAudioDevice(
            f"no audio {kind} device found: connect a {what}; {_FILE_USE}"
            + (" (`moshi-desktop devices` lists what there is)" if devices else "")
        )
    if spec is None:
        default = _default_indices(sd)[0 if kind == "input" else 1]
        return next((d for d in usable if d["index"] == default), usable[0])
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        found = next((d for d in usable if d["index"] == index), None)
        if found is None:
            raise AudioError(
                f"there is no {kind} device number {index}; the {kind} devices are: "
                f"{_describe(usable)} (choose one with {option})"
            )
        return found
    wanted = spec.strip().lower()
    exact = [d for d in usable if d["name"].lower() == wanted]
    matches = exact or [d for d in usable if wanted in d["name"].lower()]
    if len(matches) > 1:  # one device listed by several host APIs: prefer the default API
        on_default = [d for d in matches if d.get("hostapi") == getattr(sd.default, "hostapi", -1)]
        matches = on_default or matches
    if not matches:
        raise AudioError(
            f"no {kind} device matches {spec!r}; the {kind} devices are: {_describe(usable)} "
            f"(choose one with {option}, by number or part of its name)"
        )
    if len(matches) > 1:
        raise AudioError(
            f"{spec!r} matches several {kind} devices: {_describe(matches)}; "
            f"choose one with {option} and its number"
        )
    return matches[0]


def _channels(sd: Any, device: dict, kind: str, samplerate: float) -> int:
    """Mono where the device takes it, else the fewest channels it does take at `samplerate`."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    most = device["max_input_channels" if kind == "input" else "max_output_channels"]
    error: Exception | None = None
    for channels in dict.fromkeys((1, min(2, most), most)):
        try:
            check(device=device["index"], samplerate=samplerate, channels=channels, dtype="float32")
            return channels
        except (sd.PortAudioError, ValueError) as e:
            error = e
    raise AudioError(
        f"the {kind} device {device['name']!r} refuses its own rate of {samplerate:g} Hz "
        f"({error}); choose another with --{kind}-device (`moshi-desktop devices` lists them)"
    )


class DeviceAudio(AudioIO):
    """The microphone and speaker through PortAudio, each at its own native rate and mono (or the
    fewest channels it takes: input is mixed down, output duplicated).

    Devices are chosen and checked here (errors are AudioError); `start` opens the streams.
    `latency`, `max_latency`: the playback target's start and ceiling (see `PlaybackBuffer`);
    `input_buffer`: the most captured audio kept for a late engine before the oldest is dropped
    (at least 160 ms);
    `stream_latency`: PortAudio's suggested latency for both streams.
    """

    realtime = True

    def __init__(
        self,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        *,
        latency: float = 0.12,
        max_latency: float = 0.4,
        input_buffer: float = 0.5,
        stream_latency: float | str = 0.04,
    ) -> None:
        sd = self._sd = _sounddevice()
        self.input_device = find_device(sd, input_device, "input")
        self.output_device = find_device(sd, output_device, "output")
        self.input_rate = int(self.input_device["default_samplerate"])
        self.output_rate = int(self.output_device["default_samplerate"])
        self.input_channels = _channels(sd, self.input_device, "input", self.input_rate)
        self.output_channels = _channels(sd, self.output_device, "output", self.output_rate)
        self.stream_latency = stream_latency
        self._latency, self._max_latency, self._input_buffer = latency, max_latency, input_buffer
        self._streams: list[Any] = []
        self._reset()

    def _reset(self) -> None:
        """Fresh buffers, resamplers and counters: nothing of a previous start carries over."""
        import soxr

        # At least two frames: one to fill while the resampler holds back part of the other.
        capacity = int(max(self._input_buffer, 2 * FRAME_SECONDS) * self.input_rate)
        self._capture = RingBuffer(capacity, self.input_channels)
        self._playback = PlaybackBuffer(
            self.output_rate,
            self.output_channels,
            latency=self._latency,
            max_latency=self._max_latency,
        )
        self._overruns = self._xruns = 0  # written by the callbacks only
        self._resample_in = self._resample_out = None
        if self.input_rate != SAMPLE_RATE:
            self._resample_in = soxr.ResampleStream(self.input_rate, SAMPLE_RATE, 1, "float32")
        if self.output_rate != SAMPLE_RATE:
            self._resample_out = soxr.ResampleStream(SAMPLE_RATE, self.output_rate, 1, "float32")
        self._pending = np.zeros(0, dtype=np.float32)  # resampled input not yet a whole frame
        self._frames_read = self._frames_written = 0

    # The two PortAudio callbacks: copies only.

    def _input_callback(self, indata: np.ndarray, frames: int, time_: Any, status: Any) -> None:
        if status:
            self._xruns += 1
        if self._capture.write(indata):
            self._overruns += 1

    def _output_callback(self, outdata: np.ndarray, frames: int, time_: Any, status: Any) -> None:
        if status:
            self._xruns += 1
        self._playback.fill(outdata)

    def start(self) -> None:
        if self._streams:
            return
        self._reset()
        sd = self._sd
        for kind, device, rate, channels, stream_type, callback in (
            ("input", self.input_device, self.input_rate, self.input_channels,
             sd.InputStream, self._input_callback),
            ("output", self.output_device, self.output_rate, self.output_channels,
             sd.OutputStream, self._output_callback),
        ):  # fmt: skip
            try:
                stream = stream_type(
                    device=device["index"],
                    samplerate=rate,
                    channels=channels,
                    dtype="float32",
                    latency=self.stream_latency,
                    callback=callback,
                )
                self._streams.append(stream)
                stream.start()
            except (sd.PortAudioError, ValueError) as e:
                self.stop()
                raise AudioError(
                    f"cannot open the {kind} device {device['name']!r} at {rate} Hz, "
                    f"{channels} channel(s) ({e}); is another program using it? "
                    f"Choose another with --{kind}-device"
                ) from e

    def stop(self) -> None:
        self._capture.close()  # a read_frame waiting for audio returns None now
        streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.stop()
                stream.close()
            except Exception:  # a device that vanished: nothing left to release
                pass

    def read_frame(self, timeout: float) -> np.ndarray | None:
        deadline = time.monotonic() + timeout
        while len(self._pending) < FRAME_SIZE:
            # Take about as much device audio as the frame still needs, so that audio waits in
            # the ring (bounded, dropping the oldest) rather than here when the engine is late.
            need = math.ceil((FRAME_SIZE - len(self._pending)) * self.input_rate / SAMPLE_RATE)
            want = max(1, need)
            if not self._capture.wait(want, deadline - time.monotonic()):
                return None
            block = self._capture.read(want)
            mono = block[:, 0] if self.input_channels == 1 else block.mean(axis=1)
            if self._resample_in is not None:
                mono = self._resample_in.resample_chunk(mono)
            self._pending = np.concatenate([self._pending, mono])
        frame, self._pending = self._pending[:FRAME_SIZE], self._pending[FRAME_SIZE:]
        self._frames_read += 1
        return frame.astype(np.float32, copy=True)

    def write_frame(self, pcm: np.ndarray) -> None:
        pcm = _mono(pcm)
        if self._resample_out is not None:
            pcm = self._resample_out.resample_chunk(pcm)
        if len(pcm):
            self._playback.push(np.repeat(pcm[:, None], self.output_channels, axis=1))
        self._frames_written += 1

    def stats(self) -> AudioStats:
        ms_in, ms_out = 1000 / self.input_rate, 1000 / self.output_rate
        playback = self._playback
        return AudioStats(
            underruns=playback.underruns,
            overruns=self._overruns,
            input_dropped_ms=self._capture.dropped * ms_in,
            output_dropped_ms=playback.dropped * ms_out,
            playback_buffer_ms=playback.ring.size * ms_out,
            target_latency_ms=playback.target * ms_out,
            input_buffer_ms=self._capture.size * ms_in + len(self._pending) * 1000 / SAMPLE_RATE,
            input_rate=self.input_rate,
            output_rate=self.output_rate,
            device_xruns=self._xruns,
            frames_read=self._frames_read,
            frames_written=self._frames_written,
        )


# --- Files and silence --------------------------------------------------------------------------


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
        if self.output_path is not None and not self.output_path.parent.is_dir():
            raise UserError(f"output folder does not exist: {self.output_path.parent}")
        audio = read_audio(input_path)
        self.realtime = realtime
        self.frame_count = math.ceil(len(audio) / FRAME_SIZE) + math.ceil(
            trailing_silence * SAMPLE_RATE / FRAME_SIZE
        )
        self._audio = np.zeros(self.frame_count * FRAME_SIZE, dtype=np.float32)
        self._audio[: len(audio)] = audio
        self._index = 0
        self._pacer = _Pacer()
        self._written: list[np.ndarray] = []
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
        voice = np.concatenate(self._written) if self._written else np.zeros(0, np.float32)
        try:
            write_wav(self.output_path, voice)
        except OSError as e:
            raise UserError(f"cannot write {self.output_path}: {e.strerror or e}") from e

    def read_frame(self, timeout: float) -> np.ndarray | None:
        if self.finished or self._pacer.stopped.is_set():
            return None
        if self.realtime and not self._pacer.wait_next(timeout):
            return None
        start = self._index * FRAME_SIZE
        self._index += 1
        return self._audio[start : start + FRAME_SIZE].copy()

    def write_frame(self, pcm: np.ndarray) -> None:
        self._written.append(_mono(pcm).copy())

    def stats(self) -> AudioStats:
        return AudioStats(frames_read=self._index, frames_written=len(self._written))


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
        _mono(pcm)
        self._written += 1

    def stats(self) -> AudioStats:
        return AudioStats(frames_read=self._read, frames_written=self._written)
