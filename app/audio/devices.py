"""The microphone and speaker: PortAudio streams (through sounddevice) on real devices, opened
at each device's own rate; the engine thread resamples to and from 24 kHz (soxr, streaming).

sounddevice is imported only when a device is used, so everything else runs without PortAudio.
The callbacks only copy into or out of the buffers of `app.audio.buffers`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.config import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE

from ..errors import UserError
from .buffers import PlaybackBuffer, RingBuffer
from .interface import AudioIO, AudioStats, mono, silence_nonfinite

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
        self._frames_read = self._frames_written = self._silenced = 0

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
            block = self._capture.read(want)  # a fresh array
            self._silenced += silence_nonfinite(block)  # before the resampler sees them
            mono = block[:, 0] if self.input_channels == 1 else block.mean(axis=1)
            if self._resample_in is not None:
                mono = self._resample_in.resample_chunk(mono)
            self._pending = np.concatenate([self._pending, mono])
        frame, self._pending = self._pending[:FRAME_SIZE], self._pending[FRAME_SIZE:]
        self._frames_read += 1
        return frame.astype(np.float32, copy=True)

    def write_frame(self, pcm: np.ndarray) -> None:
        pcm = mono(pcm)
        if self._resample_out is not None:
            pcm = self._resample_out.resample_chunk(pcm)
        if len(pcm):
            self._playback.push(np.repeat(pcm[:, None], self.output_channels, axis=1))
        self._frames_written += 1

    def stream_latencies_ms(self) -> tuple[float, float]:
        """PortAudio's reported (input, output) stream latencies now, in ms (0 before start): part
        of the delay from a played sample to its echo, which the echo canceller is told."""
        latencies = [0.0, 0.0]
        for i, stream in enumerate(self._streams[:2]):
            try:
                latencies[i] = 1000 * float(stream.latency)
            except Exception:  # a stream that closed or vanished
                pass
        return latencies[0], latencies[1]

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
            silenced_samples=self._silenced,
        )


def audio_devices() -> list[tuple[str, bool, bool]]:
    """(name, has input, has output) of each audio device; empty without PortAudio."""
    try:
        return [(d.name, d.input_channels > 0, d.output_channels > 0) for d in list_devices()]
    except UserError:
        return []
