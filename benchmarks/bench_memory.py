"""Memory over a long conversation: the RSS of `chat --input-file`, in MB per minute of audio.

Writes a tiny random Moshi (`model.tiny.write_tiny_checkpoint`) and a voice-like wav of `--minutes`
into a temporary folder, then runs

    python -m app chat --model TINY --input-file IN --output-file OUT --export OUT.wav OUT.txt
                       --trailing-silence 0

as a child process, its XDG_DATA_HOME and XDG_STATE_HOME in that folder (the autosave goes there).
Every `--every` seconds it reads the child's RSS (VmRSS in /proc/PID/status) and how much of the
conversation the autosave holds (the size of its user.f32), and prints the RSS after the first
minute of audio (the warm-up: the model, the input file and the buffers are in by then), at the
end of the conversation, the peak (the exports included), and the slope: MB per minute of
conversation, least squares over the samples from the first minute to the end of the
conversation. A record that kept its audio in memory would show about 11.5 MB per minute there.

    python benchmarks/bench_memory.py [--minutes 30] [--every 1] [--threads 1] [--keep]

Linux only (/proc). The child computes with `--threads` threads (OMP_NUM_THREADS; default 1: the
tiny model gains nothing from more, and on a busy machine more threads spin against each other).
The tiny model runs faster than real time (about 20 ms per 80 ms frame on one core of issue 21's
busy 2-core machine), so 30 minutes of audio take about 8 minutes. `--keep` leaves the temporary
folder (its path is printed) for a look.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's model/

from model.config import FRAME_SIZE, SAMPLE_RATE  # noqa: E402
from model.tiny import write_tiny_checkpoint  # noqa: E402

FRAME_BYTES = FRAME_SIZE * 4  # the autosave's float32 frames
MB = 1e6


def write_voice(path: Path, minutes: float, seed: int = 0) -> None:
    """A voice-like mono wav at 24 kHz: syllables (a few harmonics of a gliding pitch under an
    envelope, a little noise) in phrases of 1 to 4 s with pauses between, written a phrase at a
    time."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SAMPLE_RATE)
    with soundfile.SoundFile(str(path), "w", SAMPLE_RATE, 1, "PCM_16") as f:
        written = 0
        while written < total:
            phrase = []
            for _ in range(rng.integers(4, 16)):  # syllables of 0.12 to 0.3 s
                n = int(rng.uniform(0.12, 0.3) * SAMPLE_RATE)
                t = np.arange(n) / SAMPLE_RATE
                pitch = rng.uniform(90, 260) * (1 + rng.uniform(-0.15, 0.15) * t / t[-1])
                phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
                tone = sum(np.sin(k * phase) / k for k in range(1, 6))
                noise = 0.1 * rng.standard_normal(n)
                phrase.append(np.sin(np.pi * t / t[-1]) ** 2 * (tone + noise))
            pause = np.zeros(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE))
            block = (0.2 * np.concatenate([*phrase, pause])).astype(np.float32)
            block = block[: total - written]
            f.write(block)
            written += len(block)


def rss_mb(pid: int) -> float | None:
    """VmRSS of a running process in MB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MB
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def recorded_minutes(data: Path) -> float:
    """Minutes of conversation the autosave holds so far (its user track's size)."""
    tracks = list((data / "moshi-desktop" / "conversations").glob("*/user.f32"))
    size = max((p.stat().st_size for p in tracks), default=0)
    return size / FRAME_BYTES * FRAME_SIZE / SAMPLE_RATE / 60


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, MB) samples: MB per minute."""
    x, y = np.array(samples).T
    return float(np.polyfit(x, y, 1)[0])


def run(minutes: float, every: float, threads: int, keep: bool) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        tiny = write_tiny_checkpoint(tmp / "tiny")
        voice, out = tmp / "in.wav", tmp / "out"
        write_voice(voice, minutes)
        data, state = tmp / "data", tmp / "state"
        env = dict(os.environ, XDG_DATA_HOME=str(data), XDG_STATE_HOME=str(state))
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [
            sys.executable, "-m", "app", "chat", "--model", str(tiny), "--seed", "1",
            "--input-file", str(voice), "--output-file", f"{out}.moshi.wav",
            "--export", f"{out}.wav", f"{out}.txt", "--trailing-silence", "0",
        ]  # fmt: skip
        print(f"{minutes:g} minutes of audio; {' '.join(command[1:4])} ... in {ROOT}", flush=True)
        samples: list[tuple[float, float, float]] = []  # (seconds, minutes recorded, MB)
        start = time.monotonic()
        with open(tmp / "chat.log", "w") as log:
            child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
            while child.poll() is None:
                mb = rss_mb(child.pid)
                if mb is not None:
                    samples.append((time.monotonic() - start, recorded_minutes(data), mb))
                time.sleep(every)
        wall = time.monotonic() - start
        if child.returncode != 0:
            print((tmp / "chat.log").read_text()[-3000:], file=sys.stderr)
            print(f"chat failed with status {child.returncode}", file=sys.stderr)
            return 1
        total = recorded_minutes(data)
        talking = [(m, mb) for _, m, mb in samples if 1.0 <= m < total]
        if len(talking) < 3:
            print("too few samples after the first minute: try more --minutes or less --every")
            return 1
        print(f"CPU: {cpu_name()}, {threads} thread(s); Python {platform.python_version()}")
        print(
            f"wall time: {wall:.0f} s for {total:.1f} min of conversation ({len(samples)} samples)"
        )
        print(f"RSS after the first minute: {talking[0][1]:8.1f} MB")
        print(f"RSS at the end ({talking[-1][0]:.1f} min): {talking[-1][1]:8.1f} MB")
        print(f"peak RSS (exports included): {max(mb for *_, mb in samples):8.1f} MB")
        print(f"slope: {slope(talking):+.2f} MB per minute of conversation")
        return 0
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="of audio (default 30)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--threads", type=int, default=1, help="the child's compute threads")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    return run(args.minutes, args.every, args.threads, args.keep)


if __name__ == "__main__":
    sys.exit(main())
