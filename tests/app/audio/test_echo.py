"""app/audio/echo.py: Moshi's echo removed from the microphone in a simulated room (the loop closed
in software by benchmarks/room.py), a latency change followed, a device change starting afresh,
and half duplex when the canceller is unavailable."""

import importlib.util
import queue
from pathlib import Path

import numpy as np
import pytest

from app.audio import echo
from app.audio.echo import EchoCancellingAudio, with_processing
from app.audio.from_file import SilentAudio

pytest.importorskip("livekit.rtc")

_ROOM = Path(__file__).resolve().parents[3] / "benchmarks" / "room.py"
_spec = importlib.util.spec_from_file_location("bench_room", _ROOM)
room = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(room)

SECONDS = 4.0


def _loop(audio, far, io=None):
    """Moshi's `far` written frame by frame as the engine writes it; the frames read back."""
    io = io or EchoCancellingAudio(audio)
    io.start()
    out, k, f = [], 0, audio.frame_size
    while (frame := io.read_frame(0)) is not None:
        assert frame.shape == (f,) and frame.dtype == np.float32
        out.append(frame)
        io.write_frame(far[k * f : (k + 1) * f])
        k += 1
    return np.concatenate(out), io


def _room(delay=0.1, user=None, **kwargs):
    n = int(SECONDS * room.RATE)
    moshi = room.voice(SECONDS, 1, (170, 250))
    user = np.zeros(n) if user is None else user
    noise = np.random.default_rng(0).standard_normal(n) * 1e-4
    audio = room.RoomAudio(
        user, noise, room.rir(room.ROOMS["living room"], 3), delay, 0.7, **kwargs
    )
    return audio, moshi


def _erle(audio, out, start):
    a = int(start * room.RATE)
    mic = audio.echo[a:] + audio.noise[a:]
    return 10 * np.log10(np.sum(mic**2) / np.sum(out[a:] ** 2))


def test_the_echo_of_what_is_played_is_cancelled():
    audio, moshi = _room()
    out, io = _loop(audio, moshi)
    assert _erle(audio, out, 2.0) > 20  # the benchmark's goal is 30; this guards a regression
    assert io.stats().processing_ms > 0  # its cost shows in the stats


def test_the_users_voice_is_kept_during_double_talk():
    user = room.voice(SECONDS, 2, (95, 140))
    audio, moshi = _room(user=user)
    out, _ = _loop(audio, moshi)
    alone, _ = _loop(room.RoomAudio(user, np.zeros(len(user)), audio.room, 0.1, 0.0), moshi)
    a = 2 * room.RATE
    mic = user + audio.noise + audio.echo
    gain = room.si_sdr(out[a:], alone[a:]) - room.si_sdr(mic[a:], user[a:])
    assert gain > 6  # the benchmark's goal is 10 dB


class _ReportedLatency:
    """A RoomAudio whose device reports its stream latencies, as DeviceAudio does."""

    def __init__(self, audio):
        self.audio, self.latencies = audio, (10.0, 20.0)

    def stream_latencies_ms(self):
        return self.latencies

    def __getattr__(self, name):
        return getattr(self.audio, name)


def test_a_latency_change_is_told_and_followed():
    audio, moshi = _room(delay=0.05, jump_at=2.0, jump=0.04)
    reported = _ReportedLatency(audio)
    io = EchoCancellingAudio(reported)
    io.start()
    f = audio.frame_size
    out, k = [], 0
    while (frame := io.read_frame(0)) is not None:
        out.append(frame)
        if k == 25:  # the device says its latency grew by 40 ms, as the path did at 2 s
            reported.latencies = (10.0, 60.0)
        io.write_frame(moshi[k * f : (k + 1) * f])
        k += 1
        if k == 10:
            assert io.canceller.delay_ms == 80  # the path (50 ms, reported) + 10 + 20
    assert io.canceller.delay_ms == 120
    assert _erle(audio, np.concatenate(out), 3.0) > 15  # converged again within a second


def test_a_device_change_starts_a_fresh_canceller():
    """Start after Stop (the engine opens the audio anew, as with other devices): no far end or
    filter of the old room carries over, and the new room's echo is cancelled too."""
    first, moshi = _room(delay=0.2)
    out, io = _loop(first, moshi)
    old = io.canceller
    second, _ = _room(delay=0.03)
    io.inner = second
    out, io = _loop(second, moshi, io)
    assert io.canceller is not old
    assert _erle(second, out, 2.0) > 15


def test_device_audio_reports_portaudio_stream_latencies():
    from app.audio.devices import DeviceAudio

    dev = object.__new__(DeviceAudio)
    dev._streams = [type("S", (), {"latency": 0.012})(), type("S", (), {"latency": 0.034})()]
    assert dev.stream_latencies_ms() == pytest.approx((12.0, 34.0))
    dev._streams = []
    assert dev.stream_latencies_ms() == (0.0, 0.0)


def test_noise_suppression_levels():
    rng = np.random.default_rng(1)
    noise = (0.02 * rng.standard_normal(3 * 24000)).astype(np.float32)
    power = {}
    for level in ("off", "low", "high"):
        canceller = echo.EchoCanceller(echo_cancellation=False, noise=level)
        out = np.concatenate(
            [canceller.near(noise[i : i + 1920]) for i in range(0, len(noise), 1920)]
        )
        power[level] = np.mean(out[24000:] ** 2)
    assert power["high"] < power["low"] < power["off"]
    with pytest.raises(ValueError):
        echo.EchoCanceller(noise="max")


def test_unavailable_canceller_falls_back_to_half_duplex(monkeypatch):
    from app.engine.engine import Engine
    from app.engine.messages import Notice
    from app.engine.run import RunConfig

    def missing():
        raise echo.EchoUnavailable("echo cancellation is unavailable (ImportError: no livekit)")

    monkeypatch.setattr(echo, "_rtc", missing)
    silent = SilentAudio(realtime=False)
    assert with_processing(silent, True, "off") is silent  # no wrapper: the audio as it is
    engine = Engine(lambda config: None, lambda config: silent)
    engine._fall_back_to_half_duplex(RunConfig(model="m", echo_cancellation=True))
    assert engine.half_duplex
    notice = engine.events.get_nowait()
    assert isinstance(notice, Notice) and "Half duplex instead" in notice.message
    assert "no livekit" in notice.message
    with pytest.raises(queue.Empty):
        engine.events.get_nowait()
    engine._fall_back_to_half_duplex(RunConfig(model="m"))  # not asked for: nothing said
    assert engine.events.empty()
