"""The conversation store at scale: 1,000 conversations, and one of an hour.

Makes, in a temporary folder (its XDG_DATA_HOME / XDG_CONFIG_HOME for the child processes):

- one conversation of `--hour-minutes` (60) minutes recorded through the real path
  (`store.new_conversation`, `add_frame` per 80 ms frame, `close`, which compacts it to FLAC), of
  a synthetic voice-like signal on both sides (turns of a few seconds: harmonics of a 120-220 Hz
  voice under a syllable envelope, a low noise floor between turns); its compacted size gives the
  MB per hour;
- `--count` (1,000) conversations of `--minutes` (3) minutes each: one recorded and compacted the
  same way, then copied under new ids, start times, titles and transcripts (the audio file is
  hard-linked: listing and search never read audio, which is the point being measured).

Then it times, best of `--repeat` (3):

- `python -m app conversations list --json` (a child process: start-up included),
- `python -m app conversations search TEXT` (idem),
- the window's History panel filled with every conversation (offscreen Qt),
- opening the hour-long conversation for playback (its record, transcript, waveform peaks, and
  the first second of audio decoded).

    python benchmarks/bench_history.py [--count 1000] [--minutes 3] [--hour-minutes 60] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.conversation import store  # noqa: E402
from model.config import FRAME_SIZE, SAMPLE_RATE  # noqa: E402

WORDS = (
    "hello how are you today I was thinking about the weather and music and travel in the "
    "mountains last summer we could talk about books or films or cooking dinner tonight"
).split()


def voice(seconds: float, seed: int) -> np.ndarray:
    """Two voice-like tracks [samples, 2] taking turns."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    out = rng.normal(0, 0.001, (n, 2)).astype(np.float32)  # the room
    t, side = 0, 0
    while t < n:
        length = int(rng.uniform(2, 7) * SAMPLE_RATE)
        stop = min(n, t + length)
        time_ = np.arange(stop - t) / SAMPLE_RATE
        f0 = rng.uniform(120, 220) * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * time_))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        sound = sum(np.sin(k * phase) / k for k in range(1, 8))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * time_), 0, None) ** 2
        sound = 0.15 * sound * envelope + rng.normal(0, 0.01, len(time_)) * envelope
        out[t:stop, side] += sound.astype(np.float32)
        t, side = stop + int(rng.uniform(0.2, 1.0) * SAMPLE_RATE), 1 - side
    return out


def record(root: Path, minutes: float, seed: int) -> store.KeptConversation:
    conv = store.new_conversation(root, model="kyutai/moshiko-pytorch-bf16", settings={"seed": 1})
    frames = int(minutes * 60 * SAMPLE_RATE) // FRAME_SIZE
    rng = np.random.default_rng(seed)
    block = 750  # a minute of audio generated at a time
    for start in range(0, frames, block):
        audio = voice(min(block, frames - start) * FRAME_SIZE / SAMPLE_RATE, seed + start)
        for j in range(len(audio) // FRAME_SIZE):
            i = start + j
            text = f" {WORDS[rng.integers(len(WORDS))]}" if i % 4 == 0 else ""
            frame = audio[j * FRAME_SIZE : (j + 1) * FRAME_SIZE]
            conv.add_frame(i, frame[:, 0], frame[:, 1], text)
    conv.close()
    conv.wait_compacted()
    return conv


def copies(template: Path, root: Path, count: int) -> None:
    meta = json.loads((template / "meta.json").read_text())
    rng = np.random.default_rng(0)
    start = datetime.now().astimezone() - timedelta(days=count)
    for n in range(count):
        started = start + timedelta(days=n, minutes=int(rng.integers(0, 600)))
        id = started.strftime("%Y-%m-%d_%H-%M-%S")
        folder = root / id
        folder.mkdir(mode=0o700)
        os.link(template / store.AUDIO_FILE, folder / store.AUDIO_FILE)
        shutil.copy(template / store.PEAKS_FILE, folder / store.PEAKS_FILE)
        words = rng.choice(WORDS, size=meta["frames"] // 4)
        lines = [
            json.dumps({"frame": 4 * i, "time": 0.32 * i, "text": f" {w}"})
            for i, w in enumerate(words)
        ]
        (folder / "transcript.jsonl").write_text("\n".join(lines) + "\n")
        title = " ".join(words[:8])
        (folder / "meta.json").write_text(
            json.dumps({**meta, "id": id, "started": started.isoformat(), "title": title})
        )


def best(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--hour-minutes", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--search", default="mountains summer")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-history-"))
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_STATE_HOME": str(tmp / "state"),
    }
    os.environ.update({k: env[k] for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")})
    root = tmp / "data" / "moshi-desktop" / "conversations"
    try:
        t0 = time.perf_counter()
        long = record(tmp / "long", args.hour_minutes, seed=1)
        made = time.perf_counter() - t0
        assert long.folder is not None
        flac = (long.folder / store.AUDIO_FILE).stat().st_size
        per_hour = flac / 1e6 * 60 / args.hour_minutes
        template = record(tmp / "template", args.minutes, seed=2)
        assert template.folder is not None
        root.mkdir(parents=True)
        copies(template.folder, root, args.count)

        def cli(*more: str) -> None:
            subprocess.run(
                [sys.executable, "-m", "app", "conversations", *more],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
            )

        listed = best(args.repeat, lambda: cli("list", "--json"))
        searched = best(args.repeat, lambda: cli("search", args.search))
        panel = _panel_seconds(root, args.repeat)

        def open_for_playback() -> None:
            conv = store.open_conversation(long.folder.parent, long.folder.name)
            _ = conv.turns  # the transcript, as the History shows it
            store.read_peaks(long.folder)
            store.read_audio_block(long.folder, 0, SAMPLE_RATE)

        opened = best(args.repeat, open_for_playback)
        print(
            f"machine: {platform.processor() or platform.machine()}, Python {sys.version.split()[0]}"
        )
        print(f"{args.hour_minutes:g}-minute conversation recorded and compacted in {made:.1f} s")
        print(f"compacted size: {per_hour:.1f} MB per hour (raw float32: 691 MB per hour)")
        print(f"{args.count} conversations of {args.minutes:g} min:")
        print(f"  conversations list --json   {listed:.2f} s")
        print(f"  conversations search        {searched:.2f} s")
        if panel is not None:
            print(f"  History panel filled        {panel:.2f} s")
        print(f"  open the {args.hour_minutes:g}-minute one for playback {opened:.2f} s")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _panel_seconds(root: Path, repeat: int) -> float | None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication

        from app.ui.history_panel import HistoryPanel
    except ImportError as e:
        print(f"(History panel not timed: {e})")
        return None
    app = QApplication.instance() or QApplication([])
    panel = HistoryPanel(root)

    def fill() -> None:
        panel.refresh()
        app.processEvents()

    seconds = best(repeat, fill)
    panel.deleteLater()
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
