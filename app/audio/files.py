"""Reading and writing audio files: any common format in, 24 kHz mono float32 out, and back.

Reading uses libsndfile (through soundfile: wav, flac, ogg/vorbis, opus, mp3 where the library
has it); resampling uses soxr, a well-kept high-quality resampler. Writing goes to a temporary
file beside the target, renamed into place only when complete, so a failure never leaves a
half-written file where the user expects one.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile
import soxr

from model.config import SAMPLE_RATE

from ..errors import UserError, io_reason
from .interface import silence_nonfinite

log = logging.getLogger(__name__)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Mono float32 audio from one rate to another (soxr, high quality)."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def read_audio(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The file's audio as mono float32 at `rate`: channels averaged, then resampled; NaN and
    infinite samples are silence."""
    return load_audio(path, rate)[0]


def load_audio(path: str | Path, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """`read_audio`, and how many NaN or infinite samples were replaced by silence (before
    resampling, so a stretch of them gives exactly what the same stretch of zeros gives)."""
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
    silenced = silence_nonfinite(audio)
    if silenced:
        log.warning("%s: %d NaN or infinite samples read as silence", path.name, silenced)
    return resample(audio.mean(axis=1), file_rate, rate), silenced


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


class WavWriter:
    """A 16-bit mono wav written frame by frame into a temporary file beside `path`, renamed
    into place by `close`: memory stays flat however long the audio, and a failure leaves no
    partial file (`abort`, or any write error, removes it and says which path and why)."""

    def __init__(self, path: str | Path, rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise UserError(f"output folder does not exist: {self.path.parent}")
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".wav", dir=self.path.parent
            )
            os.close(fd)
            self._tmp = Path(tmp)
            self._file = soundfile.SoundFile(tmp, "w", rate, 1, "PCM_16", format="WAV")
        except (OSError, soundfile.LibsndfileError) as e:
            self.abort()
            raise self._error(e) from e

    def write(self, pcm: np.ndarray) -> None:
        try:
            self._file.write(np.clip(pcm, -1.0, 1.0))
        except (OSError, soundfile.LibsndfileError) as e:
            self.abort()
            raise self._error(e) from e

    def close(self) -> None:
        try:
            self._file.close()
            os.replace(self._tmp, self.path)
        except (OSError, soundfile.LibsndfileError) as e:
            self.abort()
            raise self._error(e) from e

    def abort(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None and not file.closed:
            try:
                file.close()
            except (OSError, soundfile.LibsndfileError):
                pass
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    def _error(self, e: Exception) -> UserError:
        return UserError(f"cannot write {self.path}: {io_reason(e)}")


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM wav, atomically; a UserError naming the path and
    the reason when it cannot be written (no partial file is left)."""
    try:
        with atomic_output(path, ".wav") as tmp:
            soundfile.write(str(tmp), np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")
    except (OSError, soundfile.LibsndfileError) as e:
        raise UserError(f"cannot write {path}: {io_reason(e)}") from e


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically; a UserError naming the path and the reason on failure."""
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(text.encode("utf-8"))
    except OSError as e:
        raise UserError(f"cannot write {path}: {io_reason(e)}") from e


def check_writable(path: str | Path) -> None:
    """A UserError now, before any work, if `path` could not be written: its folder is missing,
    it is a folder, or no file can be made beside it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", dir=path.parent) as probe:
            probe.write(b"\0")
            probe.flush()
    except OSError as e:
        raise UserError(f"cannot write {path}: {io_reason(e)}") from e
