"""app/audio/ without a sound card: the ring buffer, the adaptive playback buffer, DeviceAudio
driven through a fake sounddevice whose streams hand their callbacks to the test, FileAudio and
SilentAudio. Nothing sleeps to wait for a thread: threads are joined, with a timeout."""

from __future__ import annotations

import builtins
import math
import threading
import time

import numpy as np
import pytest
import soundfile

from app.audio import devices as audio
from app.audio.buffers import PlaybackBuffer, RingBuffer
from app.audio.devices import FRAME_SIZE, AudioError, DeviceAudio, NoAudioDevice, PortAudioMissing
from app.audio.from_file import FileAudio, SilentAudio
from app.errors import UserError

RATE = 24000


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


# --- A fake sounddevice ----------------------------------------------------------------------


class PortAudioError(Exception):
    pass


class Flags:
    """sounddevice.CallbackFlags: true when PortAudio reports an over- or underflow."""

    def __init__(self, xrun: bool = False) -> None:
        self.xrun = xrun

    def __bool__(self) -> bool:
        return self.xrun


class FakeStream:
    def __init__(self, sd: FakeSoundDevice, **kwargs) -> None:
        if sd.open_error is not None:
            raise sd.open_error
        self.kwargs = kwargs
        self.callback = kwargs["callback"]
        self.channels = kwargs["channels"]
        self.active = self.closed = False
        sd.streams.append(self)

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.closed = True


class FakeSoundDevice:
    """Just enough of sounddevice: devices as query_devices lists them, `accepts(index, rate,
    channels)` deciding what the check_*_settings functions let through, and streams that record
    their callback so a test can call it with synthetic blocks."""

    PortAudioError = PortAudioError

    def __init__(self, devices: list[dict], default=(0, 1), accepts=None) -> None:
        self.devices = devices
        self.default = type("Default", (), {"device": list(default), "hostapi": 0})()
        self.accepts = accepts or (lambda index, rate, channels: True)
        self.streams: list[FakeStream] = []
        self.open_error: Exception | None = None

    def query_devices(self):
        return [dict(d) for d in self.devices]

    def query_hostapis(self):
        return ({"name": "ALSA"}, {"name": "JACK"})

    def _check(self, device, samplerate, channels, dtype):
        if not self.accepts(device, samplerate, channels):
            raise PortAudioError("Invalid sample rate or channel count [PaErrorCode -9997]")

    check_input_settings = check_output_settings = _check

    def InputStream(self, **kwargs):  # noqa: N802 (sounddevice's name)
        return FakeStream(self, kind="input", **kwargs)

    def OutputStream(self, **kwargs):  # noqa: N802
        return FakeStream(self, kind="output", **kwargs)

    def stream(self, kind: str) -> FakeStream:
        return next(s for s in self.streams if s.kwargs["kind"] == kind)


def device(name, ins=2, outs=2, rate=48000.0, hostapi=0):
    return {
        "name": name,
        "hostapi": hostapi,
        "max_input_channels": ins,
        "max_output_channels": outs,
        "default_samplerate": rate,
    }


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch):
    """Install a fake sounddevice: `fake_sd(devices, default=..., accepts=...)`."""

    def install(devices, **kwargs) -> FakeSoundDevice:
        sd = FakeSoundDevice(devices, **kwargs)
        monkeypatch.setattr(audio, "_sounddevice", lambda: sd)
        return sd

    return install


def feed(stream: FakeStream, signal: np.ndarray, block: int) -> None:
    """Call an input stream's callback with `signal` cut into device blocks."""
    for i in range(0, len(signal), block):
        piece = signal[i : i + block]
        stream.callback(
            np.repeat(piece[:, None], stream.channels, axis=1), len(piece), None, Flags()
        )


def drain(stream: FakeStream, blocks: int, size: int) -> np.ndarray:
    """Call an output stream's callback `blocks` times; what the device would play (channel 0)."""
    out = []
    for _ in range(blocks):
        buf = np.full((size, stream.channels), np.nan, dtype=np.float32)
        stream.callback(buf, size, None, Flags())
        assert not np.isnan(buf).any()  # every sample written: audio or silence
        out.append(buf[:, 0].copy())
    return np.concatenate(out)


def frames_from(dev: DeviceAudio) -> list[np.ndarray]:
    frames = []
    while (frame := dev.read_frame(timeout=0)) is not None:
        frames.append(frame)
    return frames


# --- RingBuffer -------------------------------------------------------------------------------


def test_ring_keeps_order_across_the_wrap():
    ring = RingBuffer(8)
    ring.write(np.arange(6, dtype=np.float32)[:, None])
    assert ring.read(4)[:, 0].tolist() == [0, 1, 2, 3]
    ring.write(np.arange(6, 11, dtype=np.float32)[:, None])  # wraps around the end
    assert ring.size == 7
    out = np.zeros((10, 1), np.float32)
    assert ring.read_into(out) == 7
    assert out[:7, 0].tolist() == [4, 5, 6, 7, 8, 9, 10]
    assert ring.size == 0 and ring.dropped == 0


def test_ring_overflow_drops_the_oldest_and_counts():
    ring = RingBuffer(5, channels=2)
    assert ring.write(np.arange(4, dtype=np.float32)[:, None].repeat(2, 1)) == 0
    assert ring.write(np.arange(4, 7, dtype=np.float32)[:, None].repeat(2, 1)) == 2
    assert ring.read(10)[:, 1].tolist() == [2, 3, 4, 5, 6]
    assert ring.write(np.arange(12, dtype=np.float32)[:, None].repeat(2, 1)) == 7  # > capacity
    assert ring.read(10)[:, 0].tolist() == [7, 8, 9, 10, 11]
    assert ring.dropped == 9


def test_ring_trim_and_wait():
    ring = RingBuffer(10)
    ring.write(np.arange(8, dtype=np.float32)[:, None])
    assert ring.trim_to(3) == 5 and ring.dropped == 5
    assert ring.read(10)[:, 0].tolist() == [5, 6, 7]
    assert ring.wait(1, timeout=0) is False
    writer = threading.Thread(target=ring.write, args=(np.ones((4, 1), np.float32),))
    writer.start()
    assert ring.wait(4, timeout=10) is True
    writer.join(timeout=10)
    ring.close()
    assert ring.wait(1, timeout=10) is False  # closed: returns at once


def test_ring_between_two_threads_loses_nothing_silently():
    ring, total, got = RingBuffer(1000), 200_000, []
    samples = np.arange(total, dtype=np.float32)[:, None]

    def produce() -> None:
        for i in range(0, total, 160):
            ring.write(samples[i : i + 160])
        ring.close()

    producer = threading.Thread(target=produce)
    producer.start()
    while ring.wait(1, timeout=10) or ring.size:
        got.append(ring.read(300)[:, 0])
    producer.join(timeout=10)
    values = np.concatenate(got)
    assert np.all(np.diff(values) > 0)  # in order, each at most once
    assert len(values) + ring.dropped == total  # every sample read or counted as dropped
    assert values[-1] == total - 1


# --- PlaybackBuffer: the adaptive latency ---------------------------------------------------


def play(buffer: PlaybackBuffer, frames_per_step: float, steps: int, block: int = 240):
    """Each 80 ms step the engine pushes `frames_per_step` frames (24 kHz, one channel) and the
    device pulls 80 ms in blocks. Returns (played audio, buffer levels after each push)."""
    out, levels, pushed, owed = [], [], 0, 0.0
    for _ in range(steps):
        owed += frames_per_step
        while owed >= 1:
            owed -= 1
            pushed += 1
            buffer.push(np.full((FRAME_SIZE, 1), pushed, np.float32))
            levels.append(buffer.ring.size)
        for _ in range(FRAME_SIZE // block):
            buf = np.empty((block, 1), np.float32)
            buffer.fill(buf)
            out.append(buf[:, 0])
    return np.concatenate(out), levels


def test_playback_waits_for_the_target_then_plays_in_order():
    buffer = PlaybackBuffer(RATE, latency=0.12)
    out, _ = play(buffer, 1, steps=20)
    assert buffer.underruns == 0 and buffer.dropped == 0
    # Nothing plays until 120 ms are buffered (two frames), then every frame in order.
    values = out[out != 0]
    assert np.all(np.diff(values) >= 0) and values[0] == 1
    assert np.unique(values).tolist() == list(range(1, len(np.unique(values)) + 1))
    assert out[:FRAME_SIZE].max() == 0 and out[FRAME_SIZE] == 1  # silence while priming


def test_underflow_plays_silence_counts_and_grows_the_target():
    buffer = PlaybackBuffer(RATE, latency=0.12, max_latency=0.2, grow=0.02)
    start = buffer.target
    play(buffer, 1, steps=5)
    silent, _ = play(buffer, 0, steps=3)  # the engine stalls
    assert buffer.underruns == 1  # one underrun, then silence while waiting to refill
    assert silent[-FRAME_SIZE:].max() == 0
    out, _ = play(buffer, 1, steps=10)  # it recovers: audio again, with more headroom
    assert buffer.target == start + int(0.02 * RATE)
    assert out[-FRAME_SIZE:].min() > 0
    for _ in range(10):  # repeated stalls raise the target only up to max_latency
        play(buffer, 1, steps=4)
        play(buffer, 0, steps=3)
    assert buffer.underruns >= 5
    play(buffer, 1, steps=1)
    assert buffer.target == int(0.2 * RATE)


def test_the_target_relaxes_after_a_calm_stretch():
    buffer = PlaybackBuffer(RATE, latency=0.1, max_latency=0.3, relax_after=1.0, relax_step=0.01)
    play(buffer, 1, steps=3)
    play(buffer, 0, steps=3)
    play(buffer, 1, steps=3)
    assert buffer.target > int(0.1 * RATE)
    out, _ = play(buffer, 1, steps=100)  # 8 s without an underrun
    assert buffer.target == int(0.1 * RATE)
    assert out[-FRAME_SIZE:].min() > 0


def test_latency_stays_bounded_when_the_producer_runs_ahead():
    buffer = PlaybackBuffer(RATE, latency=0.12, max_latency=0.4, margin=0.12)
    _, levels = play(buffer, 1.5, steps=100)  # 50% more audio than the device plays
    bound = buffer.target + buffer.margin
    assert max(levels) <= bound
    assert buffer.dropped > 0 and buffer.underruns == 0


# --- DeviceAudio through the fake sounddevice --------------------------------------------------


def test_device_audio_opens_native_rate_and_resamples_input_to_24k_frames(fake_sd):
    sd = fake_sd([device("mic", outs=0, rate=48000.0), device("speaker", ins=0, rate=44100.0)])
    dev = DeviceAudio()
    dev.start()
    mic, speaker = sd.stream("input"), sd.stream("output")
    assert mic.kwargs["samplerate"] == 48000 and mic.kwargs["device"] == 0
    assert speaker.kwargs["samplerate"] == 44100 and speaker.kwargs["device"] == 1
    assert mic.channels == speaker.channels == 1
    assert mic.kwargs["dtype"] == "float32" and mic.active

    frames = []
    for chunk in np.split(sine(1000, 1.0, 48000), 25):  # the engine reads as audio comes
        feed(mic, chunk, block=480)
        frames += frames_from(dev)
    assert len(frames) >= 11  # 12.5 frames of audio, less what the resampler still holds
    assert all(f.shape == (FRAME_SIZE,) and f.dtype == np.float32 for f in frames)
    steady = np.concatenate(frames[2:])
    assert peak_hz(steady, RATE) == pytest.approx(1000, abs=13)
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    stats = dev.stats()
    assert (stats.input_rate, stats.output_rate, stats.frames_read) == (48000, 44100, len(frames))
    assert stats.overruns == 0 and stats.input_dropped_ms == 0
    dev.stop()
    assert mic.closed and speaker.closed and not mic.active


def test_stereo_only_device_is_mixed_down_and_duplicated(fake_sd):
    sd = fake_sd([device("hw", rate=48000.0)], default=(0, 0), accepts=lambda i, r, ch: ch == 2)
    dev = DeviceAudio()
    dev.start()
    mic, speaker = sd.stream("input"), sd.stream("output")
    assert mic.channels == speaker.channels == 2
    left = sine(500, 0.5, 48000)
    mic.callback(np.stack([left, np.zeros_like(left)], axis=1), len(left), None, Flags())
    frames = frames_from(dev)
    assert frames and peak_hz(np.concatenate(frames[1:]), RATE) == pytest.approx(500, abs=13)
    assert np.abs(np.concatenate(frames[1:])).max() == pytest.approx(0.25, rel=0.05)  # mean

    for frame in np.split(sine(1500, 0.96, RATE), 12):
        dev.write_frame(frame)
    played = np.empty((4800, 2), np.float32)
    speaker.callback(played, 4800, None, Flags())
    assert np.array_equal(played[:, 0], played[:, 1])
    assert peak_hz(played[1000:, 0], 48000) == pytest.approx(1500, abs=20)


def test_output_is_resampled_to_the_device_rate(fake_sd):
    sd = fake_sd([device("card", rate=48000.0)], default=(0, 0))
    dev = DeviceAudio()
    dev.start()
    speaker = sd.stream("output")
    voice = sine(440, 1.92, RATE)
    played = []
    for frame in np.split(voice, 24):  # one frame per 80 ms of device time
        dev.write_frame(frame)
        played.append(drain(speaker, blocks=8, size=480))
    played = np.concatenate(played)
    audible = played[np.flatnonzero(played)[0] :]
    assert len(audible) > 48000  # more than a second came out, at 48 kHz
    assert peak_hz(audible[:48000], 48000) == pytest.approx(440, abs=2)
    stats = dev.stats()
    assert stats.underruns == 0 and stats.frames_written == 24
    assert 0 < stats.playback_buffer_ms <= stats.target_latency_ms + 120 + 80


def test_input_overflow_drops_the_oldest_and_counts(fake_sd):
    sd = fake_sd([device("card", rate=24000.0)], default=(0, 0))
    dev = DeviceAudio(input_buffer=0.16)  # two frames
    dev.start()
    mic = sd.stream("input")
    for k in range(1, 9):  # 20 ms blocks, each filled with its number, until the buffer is full
        mic.callback(np.full((480, 1), k, np.float32), 480, None, Flags(xrun=k == 3))
    stats = dev.stats()
    assert stats.overruns == 0 and stats.input_dropped_ms == 0
    for k in range(9, 17):  # the engine is late: 160 ms more
        mic.callback(np.full((480, 1), k, np.float32), 480, None, Flags())
    stats = dev.stats()
    assert stats.overruns == 8 and stats.input_dropped_ms == pytest.approx(160)
    assert stats.device_xruns == 1
    assert stats.input_buffer_ms == pytest.approx(160)
    first, second = frames_from(dev)  # the newest 160 ms: blocks 9..16, oldest first
    assert first.tolist() == np.repeat(np.arange(9, 13, dtype=np.float32), 480).tolist()
    assert second.tolist() == np.repeat(np.arange(13, 17, dtype=np.float32), 480).tolist()


def test_the_input_buffer_holds_at_least_two_frames(fake_sd):
    sd = fake_sd([device("card", rate=48000.0)], default=(0, 0))
    dev = DeviceAudio(input_buffer=0.02)  # too small for a frame and the resampler: 160 ms
    dev.start()
    frames = []
    for chunk in np.split(sine(800, 0.96, 48000), 96):
        feed(sd.stream("input"), chunk, block=480)
        frames += frames_from(dev)
    assert len(frames) >= 10 and dev.stats().overruns == 0
    assert peak_hz(np.concatenate(frames[1:]), RATE) == pytest.approx(800, abs=13)


def test_playback_underflow_plays_silence_and_counts(fake_sd):
    sd = fake_sd([device("card", rate=24000.0)], default=(0, 0))
    dev = DeviceAudio(latency=0.08)
    dev.start()
    speaker = sd.stream("output")
    dev.write_frame(np.full(FRAME_SIZE, 0.5, np.float32))
    out = drain(speaker, blocks=12, size=240)  # 120 ms pulled, 80 ms there
    assert out[:FRAME_SIZE].tolist() == [0.5] * FRAME_SIZE and out[FRAME_SIZE:].max() == 0
    assert dev.stats().underruns == 1
    dev.write_frame(np.full(FRAME_SIZE, 0.25, np.float32))
    stats = dev.stats()
    assert stats.target_latency_ms == pytest.approx(100)  # 80 + 20 after one underrun
    assert stats.playback_buffer_ms == pytest.approx(80)


def test_read_frame_times_out_waits_and_stops(fake_sd):
    sd = fake_sd([device("card", rate=24000.0)], default=(0, 0))
    dev = DeviceAudio()
    dev.start()
    mic = sd.stream("input")
    assert dev.read_frame(timeout=0.01) is None  # nothing captured yet
    mic.callback(np.ones((1000, 1), np.float32), 1000, None, Flags())
    assert dev.read_frame(timeout=0) is None  # half a frame is not a frame
    pusher = threading.Thread(
        target=mic.callback, args=(np.ones((920, 1), np.float32), 920, None, Flags())
    )
    pusher.start()
    frame = dev.read_frame(timeout=10)  # returns as soon as the rest arrives
    pusher.join(timeout=10)
    assert frame is not None and frame.tolist() == [1.0] * FRAME_SIZE

    results = []
    reader = threading.Thread(target=lambda: results.append(dev.read_frame(timeout=30)))
    started = time.monotonic()
    reader.start()
    dev.stop()  # wakes the waiting reader
    reader.join(timeout=10)
    assert results == [None] and time.monotonic() - started < 10


def test_restart_starts_fresh(fake_sd):
    sd = fake_sd([device("card", rate=24000.0)], default=(0, 0))
    dev = DeviceAudio()
    dev.start()
    sd.stream("input").callback(np.ones((3000, 1), np.float32), 3000, None, Flags())
    dev.stop()
    dev.start()
    assert len(sd.streams) == 4 and dev.read_frame(timeout=0) is None
    assert dev.stats().input_buffer_ms == 0
    dev.stop()


# --- Devices: choosing them, and errors ------------------------------------------------------


def test_missing_portaudio_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    real_import = builtins.__import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    for attempt in (DeviceAudio, audio.list_devices):
        with pytest.raises(PortAudioMissing) as info:
            attempt()
        message = str(info.value)
        assert "PortAudio library not found" in message and "libportaudio2" in message
        assert "talk" in message and "--input-file" in message
        assert isinstance(info.value, UserError) and info.value.exit_code == 1


def test_devices_are_chosen_by_default_number_or_name(fake_sd):
    fake_sd(
        [
            device("HDA Intel PCH: ALC3246 Analog (hw:0,0)"),
            device("USB Headset (hw:1,0)", rate=44100.0),
            device("USB Headset", hostapi=1),
            device("HDMI 0", ins=0),
        ],
        default=(0, 3),
    )
    dev = DeviceAudio()
    assert (dev.input_device["index"], dev.output_device["index"]) == (0, 3)
    dev = DeviceAudio(input_device=1, output_device="2")
    assert (dev.input_device["index"], dev.output_device["index"]) == (1, 2)
    # A name part matching one device on several host APIs: the default API's wins.
    dev = DeviceAudio(input_device="headset", output_device="hdmi")
    assert (dev.input_device["index"], dev.output_device["index"]) == (1, 3)
    assert dev.input_rate == 44100
    dev = DeviceAudio(input_device="USB Headset")  # an exact name
    assert dev.input_device["index"] == 2


def test_unknown_device_lists_what_exists(fake_sd):
    fake_sd([device("Built-in Microphone", outs=0), device("Speakers", ins=0)], default=(0, 1))
    with pytest.raises(AudioError) as info:
        DeviceAudio(input_device="blue yeti")
    message = str(info.value)
    assert "'blue yeti'" in message and "0: 'Built-in Microphone'" in message
    assert "Speakers" not in message  # only input devices are candidates
    with pytest.raises(AudioError, match="no input device number 1"):
        DeviceAudio(input_device=1)
    with pytest.raises(AudioError, match="no output device number 7"):
        DeviceAudio(output_device="7")


def test_ambiguous_device_name(fake_sd):
    fake_sd([device("USB Mic A"), device("USB Mic B")])
    with pytest.raises(AudioError, match="matches several input devices: 0: 'USB Mic A', 1"):
        DeviceAudio(input_device="usb")


def test_no_input_or_no_output_device(fake_sd):
    fake_sd([device("Speakers", ins=0)], default=(-1, 0))
    with pytest.raises(NoAudioDevice, match="no audio input device found: connect a microphone"):
        DeviceAudio()
    fake_sd([device("Microphone", outs=0)], default=(0, -1))
    with pytest.raises(NoAudioDevice, match="no audio output device found"):
        DeviceAudio()
    fake_sd([])
    with pytest.raises(NoAudioDevice, match="talk"):
        DeviceAudio()


def test_device_refusing_its_rate_is_named(fake_sd):
    fake_sd([device("Odd Card", rate=96000.0)], default=(0, 0), accepts=lambda i, r, c: False)
    with pytest.raises(AudioError) as info:
        DeviceAudio()
    assert "'Odd Card'" in str(info.value) and "96000 Hz" in str(info.value)


def test_device_failing_to_open_is_named(fake_sd):
    sd = fake_sd([device("Busy Card")], default=(0, 0))
    dev = DeviceAudio()
    sd.open_error = PortAudioError("Device unavailable [PaErrorCode -9985]")
    with pytest.raises(AudioError, match="cannot open the input device 'Busy Card' at 48000 Hz"):
        dev.start()


# --- FileAudio and SilentAudio -------------------------------------------------------------


def write_input(path, seconds: float, rate: int = RATE) -> np.ndarray:
    data = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)
    soundfile.write(path, data, rate, subtype="FLOAT")
    return data


@pytest.mark.parametrize("trailing", [0.0, 0.5])
def test_file_audio_gives_the_file_then_silence_then_finishes(tmp_path, trailing):
    data = write_input(tmp_path / "in.wav", 1.0)  # 12.5 frames
    src = FileAudio(tmp_path / "in.wav", trailing_silence=trailing)
    assert src.realtime is False
    src.start()
    frames = []
    while (frame := src.read_frame(timeout=0)) is not None:
        frames.append(frame)
    assert len(frames) == math.ceil(len(data) / FRAME_SIZE) + math.ceil(
        trailing * RATE / FRAME_SIZE
    )
    joined = np.concatenate(frames)
    assert np.array_equal(joined[: len(data)], data)
    assert not joined[len(data) :].any()  # zero padding, then the trailing silence
    assert src.finished and src.read_frame(timeout=0) is None
    src.stop()


def test_file_audio_resamples_other_rates(tmp_path):
    stereo = np.stack([sine(300, 0.5, 48000), sine(300, 0.5, 48000)], axis=1)
    soundfile.write(tmp_path / "in.flac", stereo, 48000)
    src = FileAudio(tmp_path / "in.flac")
    frames = [src.read_frame(0) for _ in range(src.frame_count)]
    assert src.frame_count == 7 and src.finished  # 0.5 s at 24 kHz: 6.25 frames
    assert peak_hz(np.concatenate(frames)[:12000], RATE) == pytest.approx(300, abs=3)


def test_file_audio_writes_moshi_on_stop_atomically(tmp_path):
    write_input(tmp_path / "in.wav", 0.2)
    out = tmp_path / "moshi.wav"
    src = FileAudio(tmp_path / "in.wav", out)
    voice = sine(220, 0.24, RATE)
    for frame in np.split(voice, 3):
        src.write_frame(frame)
    assert not out.exists()  # nothing is written before the conversation ends
    src.stop()
    written, rate = soundfile.read(out, dtype="float32")
    assert rate == RATE and np.allclose(written, voice, atol=1 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "moshi.wav"]  # no temp left
    out.unlink()
    src.stop()  # a second stop writes nothing again
    assert not out.exists()


def test_file_audio_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        FileAudio(tmp_path / "missing.wav")
    write_input(tmp_path / "in.wav", 0.1)
    with pytest.raises(UserError, match="the folder .*nowhere does not exist"):
        FileAudio(tmp_path / "in.wav", tmp_path / "nowhere" / "out.wav")
    with pytest.raises(UserError, match="0 or more"):
        FileAudio(tmp_path / "in.wav", trailing_silence=-1)


def test_file_audio_realtime_paces_like_a_microphone(tmp_path):
    write_input(tmp_path / "in.wav", 0.2)  # 3 frames: the last is due 240 ms after start
    src = FileAudio(tmp_path / "in.wav", realtime=True)
    src.start()
    started = time.monotonic()
    assert src.read_frame(timeout=0) is None  # the first frame is not captured yet
    frames = [src.read_frame(timeout=1.0) for _ in range(3)]
    elapsed = time.monotonic() - started
    assert all(f is not None for f in frames) and src.finished
    assert elapsed >= 3 * 0.08


def test_stop_wakes_a_paced_read(tmp_path):
    write_input(tmp_path / "in.wav", 0.2)
    src = FileAudio(tmp_path / "in.wav", realtime=True)
    src.start()
    results = []
    reader = threading.Thread(target=lambda: results.append(src.read_frame(timeout=30)))
    started = time.monotonic()
    reader.start()
    src.stop()  # the reader, waiting 80 ms for its frame, returns None at once
    reader.join(timeout=10)
    assert results == [None] and time.monotonic() - started < 10


def test_silent_audio():
    fast = SilentAudio(realtime=False)
    fast.start()
    frames = [fast.read_frame(timeout=0) for _ in range(50)]
    assert all(f.shape == (FRAME_SIZE,) and not f.any() for f in frames)
    fast.write_frame(np.ones(FRAME_SIZE, np.float32))
    assert not fast.finished
    assert (fast.stats().frames_read, fast.stats().frames_written) == (50, 1)
    fast.stop()
    assert fast.read_frame(timeout=0) is None

    paced = SilentAudio()
    assert paced.realtime
    with paced:
        assert paced.read_frame(timeout=0) is None  # not due yet
        started = time.monotonic()
        assert paced.read_frame(timeout=1.0) is not None
        assert time.monotonic() - started > 0
    with pytest.raises(ValueError, match="mono"):
        paced.write_frame(np.zeros((FRAME_SIZE, 2), np.float32))


def test_non_finite_device_samples_are_silence_before_the_resampler(fake_sd):
    """A stretch of NaN from a device gives exactly the frames a stretch of zeros gives."""
    heard = []
    for bad in (0.0, np.nan):
        sd = fake_sd([device("mic", outs=0, rate=48000.0), device("speaker", ins=0)])
        dev = DeviceAudio()
        dev.start()
        voice = sine(300, 1.0, 48000).astype(np.float32)
        voice[10_000:20_000] = bad
        voice[20_000] = np.inf if np.isnan(bad) else 0.0
        frames = []
        for chunk in np.split(voice, 25):
            feed(sd.stream("input"), chunk, block=480)
            frames += frames_from(dev)
        heard.append((np.concatenate(frames), dev.stats().silenced_samples))
        dev.stop()
    (zeros, none), (nans, silenced) = heard
    assert none == 0 and silenced == 10_001
    assert np.isfinite(nans).all() and np.array_equal(zeros, nans)
