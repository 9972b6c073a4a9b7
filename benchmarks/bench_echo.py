"""Echo cancellation in a simulated room: how much of Moshi's voice the canceller removes from the
microphone, how much of the user's voice it keeps, how it follows a latency jump, and its cost.

Moshi's voice (synthetic speech, benchmarks/room.py) is written to the audio as the engine writes
it, frame by frame, plays through a room impulse response (three rooms, RT60 0.2-0.6 s) with a
delay (20, 100 and 200 ms) and a gain, and comes back in the microphone, mixed with the user's
voice and noise; the app's own `EchoCancellingAudio` (app/audio/echo.py) processes it, on frames
of 1920 samples as the engine reads them. Figures per room and delay:

- ERLE: echo return loss enhancement, 10 log10(mic power / output power) with the user silent
  (and noise 60 dB under the echo), from 2 s on ("erle") and over the last 4 s ("steady");
  "converged" is the first time after which every 0.5 s window holding echo has ERLE >= 20 dB.
- double talk: SI-SDR of the output against the clean user voice, minus the microphone's own
  (the user and Moshi talk at once throughout; echo 5 dB louder than the user; noise 30 dB under
  the user), from 2 s on. WebRTC delays the voice by about 10 ms and high-passes it, a linear
  change SI-SDR would count as distortion: so the output's reference is the user's voice alone
  through the same processing (Moshi playing, no echo, no noise).
- latency jump: the echo path's delay grows by 40 ms at 6 s, unreported (as a device's buffer that
  grows): ERLE in the 2 s before, in the first second after and from 1 s after the jump on.
- CPU: ms of processing per second of audio.

With `--end-to-end` it also runs `chat --input-file` on a tiny random Moshi with the loop closed
in software (Moshi's own voice played back into its microphone through the room): the share of
frames whose first-codebook Mimi codes of the user stream agree with those of the clean input,
with the canceller on and off.

    python benchmarks/bench_echo.py [--seconds 12] [--quick] [--end-to-end]

`--package aec-audio-processing`: the same figures with that package in place of LiveKit's.
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's app/ and model/
sys.path.insert(0, str(Path(__file__).resolve().parent))

import room as sim  # noqa: E402

from app.audio.echo import BLOCK, EchoCanceller, EchoCancellingAudio, _int16  # noqa: E402
from model.config import FRAME_SECONDS  # noqa: E402

RATE = sim.RATE
DELAYS = (0.02, 0.1, 0.2)


class AecAudioProcessing(EchoCanceller):
    """The same interleaving as the app's canceller, on the `aec-audio-processing` package
    (WebRTC's module through SWIG), for `--compare`."""

    def __init__(self) -> None:  # noqa: D107 (no LiveKit here)
        from aec_audio_processing import AudioProcessor

        self._apm = AudioProcessor(
            enable_aec=True, enable_ns=False, enable_agc=False, enable_vad=False
        )
        self._apm.set_stream_format(RATE, 1)
        self._apm.set_reverse_stream_format(RATE, 1)
        self.echo_cancellation, self.noise, self._ns, self.delay_ms = True, "off", None, 0
        self._far = deque(maxlen=200)
        self._far_rest = np.zeros(0, np.int16)
        self._near_rest = self._out_rest = np.zeros(0, np.float32)

    def _process(self, block: np.ndarray) -> np.ndarray:
        far = self._far.popleft() if self._far else np.zeros(BLOCK, np.int16)
        self._apm.process_reverse_stream(far.tobytes())
        self._apm.set_stream_delay(self.delay_ms)
        out = self._apm.process_stream(_int16(block).tobytes())
        return np.frombuffer(out, np.int16).astype(np.float32) / 32768.0


PACKAGE = "livekit"


def run_loop(audio, far: np.ndarray, wrap: bool = True) -> np.ndarray:
    """Play `far` through `audio` (a RoomAudio) frame by frame as the engine does; the frames read."""
    io = EchoCancellingAudio(audio) if wrap else audio
    io.start()
    if wrap and PACKAGE == "aec-audio-processing":
        io.canceller = AecAudioProcessing()
    out, f = [], audio.frame_size
    k = 0
    while (frame := io.read_frame(0)) is not None:
        out.append(frame)
        io.write_frame(
            far[k * f : (k + 1) * f] if (k + 1) * f <= len(far) else np.zeros(f, np.float32)
        )
        k += 1
    io.stop()
    return np.concatenate(out), (io.stats().processing_ms if wrap else 0.0)


def _windows(mic, out, echo, rate=RATE, size=0.5):
    """(time, ERLE) of each 0.5 s window where the echo is not silent."""
    n = int(size * rate)
    rows = []
    for start in range(0, len(out) - n + 1, n):
        e = echo[start : start + n]
        if np.mean(e**2) < 1e-5:  # Moshi silent here (a pause): no echo to measure
            continue
        erle = 10 * np.log10(
            np.mean(mic[start : start + n] ** 2) / max(1e-12, np.mean(out[start : start + n] ** 2))
        )
        rows.append((start / rate, erle))
    return rows


def erle(mic, out, start=0.0, end=None, rate=RATE) -> float:
    a, b = int(start * rate), None if end is None else int(end * rate)
    return float(10 * np.log10(np.sum(mic[a:b] ** 2) / max(1e-12, np.sum(out[a:b] ** 2))))


def converged_at(rows, threshold=20.0) -> float:
    """The first window time after which every window's ERLE is at least `threshold`."""
    for i, (t, _) in enumerate(rows):
        if all(value >= threshold for _, value in rows[i:]):
            return t
    return float("inf")


def scenario(room_name: str, delay: float, seconds: float, seed: int = 0) -> dict:
    rate, n = RATE, int(seconds * RATE)
    rng = np.random.default_rng(seed)
    moshi = sim.voice(seconds, seed + 1, (170, 250))
    user = sim.voice(seconds, seed + 2, (95, 140))
    h = sim.rir(sim.ROOMS[room_name], seed + 3)
    gain = 0.7
    figures = {"room": room_name, "delay_ms": int(delay * 1000)}

    # Echo alone (a faint noise floor, 60 dB under the echo).
    quiet = rng.standard_normal(n) * 1e-3 * np.sqrt(np.mean(moshi**2)) * gain
    audio = sim.RoomAudio(np.zeros(n), quiet, h, delay, gain)
    out, frame_ms = run_loop(audio, moshi)
    figures["cpu_ms_per_s"] = frame_ms / FRAME_SECONDS  # the canceller's own cost, per frame
    mic = audio.echo + quiet[: len(audio.echo)]
    figures["erle_db"] = erle(mic, out, 2.0)
    figures["steady_db"] = erle(mic, out, seconds - 4.0)  # the last 4 s
    figures["converged_s"] = converged_at(_windows(mic, out, audio.echo))

    # Double talk: both voices throughout; the echo 5 dB louder than the user, noise 30 dB under.
    user_rms = np.sqrt(np.mean(user**2))
    noise = rng.standard_normal(n) * user_rms * 10 ** (-30 / 20)
    echo_gain = gain * user_rms / np.sqrt(np.mean(moshi**2)) * 10 ** (5 / 20) / gain
    audio = sim.RoomAudio(user, noise, h, delay, echo_gain)
    out, _ = run_loop(audio, moshi)
    mic = user + noise + audio.echo
    # WebRTC's processing delays the voice by about 10 ms and high-passes it (a linear change
    # that SI-SDR would count as distortion): the output is measured against the user's voice
    # alone through the same processing (no echo, no noise), the microphone against the voice.
    reference, _ = run_loop(sim.RoomAudio(user, np.zeros(n), h, delay, 0.0), moshi)
    a = int(2.0 * rate)
    figures["mic_si_sdr_db"] = sim.si_sdr(mic[a:], user[a:])
    figures["out_si_sdr_db"] = sim.si_sdr(out[a:], reference[a:])
    figures["si_sdr_gain_db"] = figures["out_si_sdr_db"] - figures["mic_si_sdr_db"]

    # A 40 ms latency jump at 6 s, unreported.
    jump_at = min(6.0, seconds / 2)
    audio = sim.RoomAudio(np.zeros(n), quiet, h, delay, gain, jump_at=jump_at, jump=0.04)
    out, _ = run_loop(audio, moshi)
    mic = audio.echo + quiet[: len(audio.echo)]
    figures["jump_before_db"] = erle(mic, out, jump_at - 2, jump_at)
    figures["jump_first_s_db"] = erle(mic, out, jump_at, jump_at + 1)
    figures["jump_after_db"] = erle(mic, out, jump_at + 1)
    rows = [(t, v) for t, v in _windows(mic, out, audio.echo) if t >= jump_at]
    figures["jump_recovered_s"] = converged_at(rows) - jump_at
    return figures


def measure(seconds: float = 12.0, rooms=None, delays=DELAYS) -> list[dict]:
    return [scenario(r, d, seconds) for r in (rooms or sim.ROOMS) for d in delays]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--quick", action="store_true", help="one room, one delay")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--package", choices=("livekit", "aec-audio-processing"), default="livekit")
    args = parser.parse_args(argv)
    global PACKAGE
    PACKAGE = args.package
    rows = measure(args.seconds, ["living room"], [0.1]) if args.quick else measure(args.seconds)
    columns = (
        ("room", "{:>11}"), ("delay_ms", "{:>8}"), ("erle_db", "{:>7.1f}"), ("steady_db", "{:>9.1f}"),
        ("converged_s", "{:>11.1f}"),
        ("si_sdr_gain_db", "{:>14.1f}"), ("jump_first_s_db", "{:>15.1f}"), ("jump_after_db", "{:>13.1f}"),
        ("jump_recovered_s", "{:>16.1f}"), ("cpu_ms_per_s", "{:>12.1f}"),
    )  # fmt: skip
    print(" ".join(f"{name:>{len(fmt.format(rows[0][name]))}}" for name, fmt in columns))
    for row in rows:
        print(" ".join(fmt.format(row[name]) for name, fmt in columns))
    worst = {
        "erle_db": min(r["erle_db"] for r in rows),
        "converged_s": max(r["converged_s"] for r in rows),
        "si_sdr_gain_db": min(r["si_sdr_gain_db"] for r in rows),
        "jump_after_db": min(r["jump_after_db"] for r in rows),
        "cpu_ms_per_s": max(r["cpu_ms_per_s"] for r in rows),
    }
    print("worst: " + ", ".join(f"{k} {v:.1f}" for k, v in worst.items()))
    if args.end_to_end:
        from end_to_end_echo import agreement

        on, off = agreement(True), agreement(False)
        print(f"end to end (chat --input-file, loop closed): first-codebook agreement with the clean "
              f"input {100 * on:.0f}% with the canceller, {100 * off:.0f}% without")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
