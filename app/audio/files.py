"""Reading and writing audio files: any common format in, 24 kHz mono float32 out, and back.

Reading uses libsndfile (through soundfile: wav, flac, ogg/vorbis, opus, mp3 where the library
has it); resampling uses soxr, a well-kept high-quality resampler. Writing goes to a temporary
file beside the target, renamed into place only when complete, so a failure never leaves a
half-written file where the user expects one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile
import soxr

from model.config import SAMPLE_RATE

from ..errors import UserError


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Mono float32 audio from one rate to another (soxr, high quality)."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def read_audio(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The file's audio as mono float32 at `rate`: channels averaged, then resampled."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if path.is_dir():
        raise UserError(f"input is a folder, not an audio file: {path}")
    try:
        audio, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise UserError(f"cannot read {path.name} as audio ({e}); use wav, flac or ogg") from e
    if audio.shape[0] == 0:
        raise UserError(f"{path.name} contains no audio")
    return resample(audio.mean(axis=1), file_rate, rate)


@contextmanager
def atomic_output(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM wav, atomically."""
    with atomic_output(path, ".wav") as tmp:
        soundfile.write(str(tmp), np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")
