"""`moshi-desktop self-test`: does this installation work? No model download, no sound card.

A tiny random Moshi written on the spot runs a few frames through the whole pipeline (Mimi, the
temporal and depth transformers, the tokenizer), then each library the app loads at run time is
exercised: soxr resamples, libsndfile writes and reads a wav, PortAudio lists the devices, sphn
encodes and decodes Opus (the remote backend's audio), and Qt opens the window (offscreen with ``QT_QPA_PLATFORM=offscreen``) with its icon. That is what
packaging can break, so the bundle is checked with it:

    QT_QPA_PLATFORM=offscreen dist/moshi-desktop/moshi-desktop self-test

One line per check, then ``moshi-desktop self-test: OK`` (exit status 0) or ``FAILED`` (1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.config import FRAME_SIZE, SAMPLE_RATE
from model.files import FAIL, OK, SKIP

from .. import appinfo


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "self-test",
        help="check this installation with a tiny model: the pipeline, audio libraries, window",
        description="Check this installation: a tiny random Moshi runs a few frames through the "
        "pipeline, then soxr, libsndfile, PortAudio, Opus and the window (offscreen with "
        "QT_QPA_PLATFORM=offscreen) are tried. Downloads nothing, needs no sound card.",
    )
    parser.add_argument(
        "--frames", type=int, default=4, help="frames (80 ms each) to run (default: 4)"
    )
    parser.add_argument(
        "--no-window", action="store_true", help="skip opening the window (Qt's check)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.frames < 2:
        from ..errors import UsageError

        raise UsageError("--frames must be at least 2 (Moshi's first frame has no audio)")
    results: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="moshi-desktop-self-test-") as folder:
        work = Path(folder)
        moshi_pcm: list[np.ndarray] = []
        checks: list[tuple[str, Callable[[], tuple[str, str]]]] = [
            ("resources", check_resources),
            ("model", lambda: check_model(work, args.frames, moshi_pcm)),
            ("soxr", check_resampling),
            ("libsndfile", lambda: check_audio_file(work, moshi_pcm)),
            ("PortAudio", check_portaudio),
            ("Opus", check_opus),
            ("window", lambda: check_window(skip=args.no_window)),
        ]
        for name, check in checks:
            try:
                level, message = check()
            except Exception as e:  # each check reports its failure and the others still run
                level, message = FAIL, f"{type(e).__name__}: {e}".splitlines()[0]
            results.append((level, f"{name}: {message}"))
            print(f"  {level:<4}  {name}: {message}", flush=True)
    failed = sum(level == FAIL for level, _ in results)
    where = sys.executable  # which installation: the bundle's program or a venv's Python
    if failed:
        print(f"{appinfo.NAME} self-test: FAILED ({failed} of {len(results)} checks; {where})")
        return 1
    print(f"{appinfo.NAME} self-test: OK ({appinfo.NAME} {appinfo.VERSION}, {where})")
    return 0


def check_resources() -> tuple[str, str]:
    missing = [
        path
        for path in (appinfo.DESKTOP_FILE, appinfo.ICON_SVG)
        + tuple(appinfo.icon_png(size) for size in appinfo.ICON_SIZES)
        if not path.is_file()
    ]
    if missing:
        return FAIL, f"missing {', '.join(str(p) for p in missing)}"
    return OK, f"{appinfo.DESKTOP_FILE.name} and the icon at {len(appinfo.ICON_SIZES)} sizes"


def check_model(work: Path, frames: int, moshi_pcm: list[np.ndarray]) -> tuple[str, str]:
    """Write a tiny checkpoint, load it as a released one is loaded, and step `frames` frames
    of a tone; Moshi's audio goes into `moshi_pcm` for the next checks."""
    from model.files import resolve_folder
    from model.tiny import write_tiny_checkpoint

    from ..engine.local import load_files

    start = time.perf_counter()
    folder = write_tiny_checkpoint(work / "tiny-moshi")
    pipeline = load_files(resolve_folder(folder), "cpu", "float32", seed=0)
    t = np.arange(frames * FRAME_SIZE) / SAMPLE_RATE
    voice = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    for i in range(frames):
        result = pipeline.step(voice[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])
        if result.pcm is not None:
            if result.pcm.shape != (FRAME_SIZE,) or not np.isfinite(result.pcm).all():
                return FAIL, f"frame {i}: Moshi's audio is not {FRAME_SIZE} finite samples"
            moshi_pcm.append(result.pcm)
    pipeline.close()
    if len(moshi_pcm) != frames - 1:  # the first step has no audio yet
        return FAIL, f"{len(moshi_pcm)} frames of audio out of {frames} steps"
    seconds = time.perf_counter() - start
    return OK, f"a tiny random Moshi written, loaded and run for {frames} frames ({seconds:.1f} s)"


def check_resampling() -> tuple[str, str]:
    from ..audio.files import resample

    tone = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32)
    out = resample(tone, 48000, SAMPLE_RATE)
    if abs(len(out) - SAMPLE_RATE) > 2 or not np.isfinite(out).all():
        return FAIL, f"1 s at 48 kHz came out as {len(out)} samples at 24 kHz"
    return OK, "1 s of a tone resampled from 48 kHz to 24 kHz"


def check_audio_file(work: Path, moshi_pcm: list[np.ndarray]) -> tuple[str, str]:
    import soundfile

    from ..audio.files import read_audio, write_wav

    audio = np.concatenate(moshi_pcm) if moshi_pcm else np.zeros(SAMPLE_RATE, np.float32)
    path = work / "moshi.wav"
    write_wav(path, audio)
    back = read_audio(path)
    if back.shape != audio.shape:
        return FAIL, f"wrote {audio.shape[0]} samples, read back {back.shape[0]}"
    version = soundfile.__libsndfile_version__
    return OK, f"version {version}; Moshi's audio written to a wav and read back"


def check_portaudio() -> tuple[str, str]:
    from ..audio.devices import _sounddevice

    sd = _sounddevice()  # raises PortAudioMissing (a UserError) without the library
    devices = len(sd.query_devices())
    return OK, f"{sd.get_portaudio_version()[1].split(',')[0]}; {devices} audio device(s)"


def check_opus() -> tuple[str, str]:
    """What the remote backend (app.engine.remote) streams through: Opus in Ogg, over a WebSocket."""
    import sphn
    import websockets
    import websockets.sync.client  # noqa: F401 (the client the remote backend connects with)

    frames = 6
    t = np.arange(frames * FRAME_SIZE) / SAMPLE_RATE
    voice = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    writer, reader = sphn.OpusStreamWriter(SAMPLE_RATE), sphn.OpusStreamReader(SAMPLE_RATE)
    decoded = sum(
        len(reader.append_bytes(writer.append_pcm(voice[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])))
        for i in range(frames)
    )
    if decoded == 0:
        return FAIL, f"{frames} frames encoded to Opus, nothing decoded"
    return OK, (
        f"{frames} frames encoded and decoded (sphn {_version('sphn')}); "
        f"websockets {websockets.__version__}"
    )


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "of unknown version"


def check_window(skip: bool = False) -> tuple[str, str]:
    if skip:
        return SKIP, "not opened (--no-window)"
    from .. import gui

    if not gui.has_display():
        return SKIP, "no display: set QT_QPA_PLATFORM=offscreen to open it offscreen"
    from ..gui_check import probe_window

    opened, said = probe_window(
        gui.check_window
    )  # in a child process: Qt may abort the one it runs in
    return (OK if opened else FAIL), said
