"""The conversation store: every conversation kept, found again, compacted, recovered, deleted.

The format is written down in ``docs/conversation-store.md``; this module is its one reader and
writer beside :mod:`app.conversation.record` (which streams a running conversation to disk).

- :func:`new_conversation` starts a kept conversation (:class:`KeptConversation`): streamed as raw
  float32 while it runs, compacted to one stereo FLAC when it is closed.
- :func:`prepare` runs before the history is shown (window start, every ``conversations``
  command): folders left by a killed process are closed, compacted and marked ``recovered``;
  folders of format version 1 are compacted; expired ones are deleted.
- :func:`list_conversations` reads only each folder's ``meta.json`` (and a directory listing):
  never audio. A damaged folder is listed with its reason; it never stops the listing.
- :func:`open_conversation`, :func:`search`, :func:`rename`, :func:`delete`.

A folder belongs to the process that holds an exclusive ``flock`` on it (the running
conversation, or a compaction): nobody else compacts or recovers it. Where ``fcntl`` does not
exist (Windows) a folder whose raw files changed in the last minute counts as running.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from model.config import FRAME_SIZE, SAMPLE_RATE

from ..audio.files import atomic_output
from ..errors import UserError, io_reason
from . import preferences
from .record import (
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    MOSHI_FILE,
    TRANSCRIPT_FILE,
    USER_FILE,
    Conversation,
    _frames_in,
    _parse_time,
    _read_meta,
    _read_pieces,
    _seconds,
    _split_turns,
    full_meta,
    title_of,
)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

AUDIO_FILE = "audio.flac"
"""The compacted audio: stereo FLAC, left the user, right Moshi, 24-bit, 24 kHz."""
PEAKS_FILE = "peaks.u8"
"""Two bytes per frame (the user's and Moshi's peak, 0-255): the waveforms without the audio."""
FLAC_SUBTYPE = "PCM_24"
_QUANTUM = 1.0 / (1 << 23)  # one step of 24-bit audio
_BLOCK = 750  # frames compacted at a time: a minute
_RUNNING_SECONDS = 60.0  # without flock: raw files this fresh belong to a running conversation


@dataclass(frozen=True)
class Entry:
    """One conversation as the history lists it (from its ``meta.json`` only)."""

    id: str
    folder: Path
    started: datetime | None
    duration: float  # seconds
    model: str
    recovered: bool
    title: str
    damaged: str = ""  # why it cannot be opened ("" when it can)
    running: bool = False  # still being recorded (by this or another process)

    @property
    def when(self) -> str:
        """The local start date and time, as the list shows it."""
        return self.started.astimezone().strftime("%Y-%m-%d %H:%M") if self.started else "?"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started": self.started.isoformat() if self.started else None,
            "duration": round(self.duration, 3),
            "model": self.model,
            "recovered": self.recovered,
            "title": self.title,
            "damaged": self.damaged or None,
            "running": self.running,
            "folder": str(self.folder),
        }


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did."""

    recovered: list[str]  # ids of conversations cut short, now closed and compacted
    compacted: list[str]  # ids of conversations compacted (ended cleanly, or an older format)
    expired: list[str]  # ids deleted because they were older than the kept days
    failed: list[str]  # one line each: what could not be compacted, and why (raw files kept)


def recovered_sentence(count: int) -> str:
    """What the window and the command line say of the conversations :func:`prepare` recovered."""
    if count == 1:
        return "1 conversation that was cut short was recovered"
    return f"{count} conversations that were cut short were recovered"


@dataclass(frozen=True)
class Match:
    entry: Entry
    time: float  # seconds into the conversation (0 for a title)
    line: str


# ------------------------------------------------------------------------------- recording


class KeptConversation(Conversation):
    """A conversation kept in the store: streamed to raw files while it runs (the record's
    crash-safe autosave), compacted to FLAC on a thread of its own once closed (an hour takes
    some seconds: the engine does not wait), and readable all along. Holds its folder's lock
    from creation until the compaction is done; a process that ends first leaves the raw files,
    which the next start compacts."""

    _lock_fd: int | None = None
    _compaction: threading.Thread | None = None

    def close(self) -> None:
        super().close()
        if self._compaction is not None:
            return
        if self.folder is None or self.autosave_error:
            self._unlock()
            return
        self._compaction = threading.Thread(target=self._compact, name="compaction")
        self._compaction.start()

    def wait_compacted(self, timeout: float | None = None) -> None:
        if self._compaction is not None:
            self._compaction.join(timeout)

    def _compact(self) -> None:
        assert self.folder is not None
        try:
            compact(self.folder, recovered=False, locked=True)
        except Exception:  # the raw files stay; the next start compacts them
            log.error("the conversation in %s was not compacted", self.folder, exc_info=True)
        finally:
            self._unlock()

    def _read_saved(self, name: str, start: int, stop: int) -> np.ndarray:
        flac = self.folder / AUDIO_FILE if self.folder is not None else None
        if self._files is None and flac is not None and flac.exists():
            return _read_flac(flac, name, start, stop)
        try:
            return super()._read_saved(name, start, stop)
        except FileNotFoundError:  # compacted meanwhile: the raw files go once the FLAC is there
            if flac is None or not flac.exists():
                raise
            return _read_flac(flac, name, start, stop)

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock


def new_conversation(
    root: str | Path, *, model: str = "", settings: Mapping[str, Any] | Any = None
) -> KeptConversation:
    """A new conversation kept under `root` (see :meth:`Conversation.create`)."""
    conv = KeptConversation.create(root, model=model, settings=settings)
    assert isinstance(conv, KeptConversation) and conv.folder is not None
    conv._lock_fd = _try_lock(conv.folder)
    return conv


def new_record(model: str = "", settings: Mapping[str, Any] | Any = None) -> Conversation:
    """The record of a new conversation as the preferences say: kept in the store, or (keeping
    switched off) in memory only, nothing written to disk."""
    prefs = preferences.load()
    if not prefs.keep:
        return Conversation(model=model, settings=settings)
    return new_conversation(prefs.root, model=model, settings=settings)


def open_conversation(root: str | Path, id: str) -> Conversation:
    """The conversation `id` under `root`, ready to read, play and export (its audio stays on
    disk). Raises :class:`UserError` for an unknown id or a damaged conversation."""
    folder = _folder_of(root, id)
    entry = _entry(folder)
    if entry is None or entry.damaged:
        reason = entry.damaged if entry else "it is not a conversation"
        raise UserError(f"conversation {id} is damaged: {reason}")
    if not (folder / AUDIO_FILE).exists():
        return Conversation.recover(folder)  # still raw: running, or not compacted yet
    meta = _read_meta(folder) or {}
    frames = int(meta.get("frames", 0))
    conv = KeptConversation(model=entry.model, settings=meta.get("settings") or {})
    conv.started = entry.started
    conv.folder = folder
    conv._frames = conv._saved = frames
    conv._pieces = sorted((i, t) for i, t in _read_pieces(folder / TRANSCRIPT_FILE) if i < frames)
    conv._closed = True
    return conv


def read_audio_block(folder: Path, start: int, count: int) -> np.ndarray:
    """[samples, 2] float32 (user, Moshi) from sample `start`, at most `count` samples (fewer at
    the end): from the FLAC, or from the raw tracks of a conversation not compacted yet."""
    if (folder / AUDIO_FILE).exists():
        with soundfile.SoundFile(str(folder / AUDIO_FILE)) as f:
            f.seek(min(start, f.frames))
            return f.read(count, dtype="float32", always_2d=True)
    tracks = []
    for name in (USER_FILE, MOSHI_FILE):
        with open(folder / name, "rb") as f:
            f.seek(start * 4)
            tracks.append(np.frombuffer(f.read(count * 4), "<f4"))
    n = min(len(t) for t in tracks)
    return np.stack([t[:n] for t in tracks], axis=1).astype(np.float32)


def read_peaks(folder: Path) -> np.ndarray:
    """[frames, 2] peaks in 0..1 (user, Moshi) from the peaks file; empty if there is none."""
    try:
        data = np.fromfile(folder / PEAKS_FILE, np.uint8)
    except OSError:
        return np.zeros((0, 2), np.float32)
    return (data[: len(data) // 2 * 2].reshape(-1, 2) / 255.0).astype(np.float32)


# ------------------------------------------------------------------------------- the history


def prepare(root: str | Path, keep_days: int | None = None) -> Prepared:
    """Make the store ready to be listed: recover what a killed process left, compact what is
    still raw, delete what is older than `keep_days` (None: keep everything). Never raises for
    one folder: what fails is logged and reported in :attr:`Prepared.failed`."""
    root = Path(root)
    recovered: list[str] = []
    compacted: list[str] = []
    expired: list[str] = []
    failed: list[str] = []
    if not root.is_dir():
        return Prepared(recovered, compacted, expired, failed)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        raw = (folder / USER_FILE).exists() or (folder / MOSHI_FILE).exists()
        if raw:
            meta = _read_meta(folder)
            was_cut = meta is None or not meta.get("ended")
            try:
                done = compact(folder, recovered=was_cut)
            except Exception as e:  # the raw files stay, and so does the conversation
                log.error("cannot compact the conversation in %s", folder, exc_info=True)
                failed.append(f"{folder.name}: {io_reason(e) if isinstance(e, OSError) else e}")
                continue
            if done:
                (recovered if was_cut else compacted).append(folder.name)
                if was_cut:
                    log.warning("recovered the conversation %s, which was cut short", folder.name)
        if keep_days is not None:
            meta = _read_meta(folder) or {}
            started = _parse_time(meta.get("started"))
            if started is not None and started < _now() - timedelta(days=keep_days):
                try:
                    _remove(folder)
                except OSError:
                    log.error("cannot delete the expired conversation %s", folder, exc_info=True)
                else:
                    expired.append(folder.name)
                    log.info("deleted %s: older than %d days", folder.name, keep_days)
    return Prepared(recovered, compacted, expired, failed)


def list_conversations(root: str | Path) -> list[Entry]:
    """Every conversation under `root`, newest first, from metadata only. A folder that is not a
    conversation is skipped with a log line; a damaged one is listed with its reason."""
    root = Path(root)
    try:
        children = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise UserError(f"cannot read the conversations in {root}: {io_reason(e)}") from e
    found = []
    for child in children:
        if child.name.startswith("."):
            continue
        if not child.is_dir():
            log.info("skipped %s in the conversations folder: not a conversation", child.path)
            continue
        entry = _entry(Path(child.path))
        if entry is not None:
            found.append(entry)
    oldest = datetime.min.replace(tzinfo=_now().tzinfo)
    found.sort(key=lambda e: (e.started or oldest, e.id), reverse=True)
    return found


def search(root: str | Path, text: str) -> Iterator[Match]:
    """Case-insensitive matches of `text` in the titles and transcripts (one per matching
    title, one per matching turn), newest conversation first."""
    needle = text.casefold()
    for entry in list_conversations(root):
        if entry.damaged:
            continue
        if needle in entry.title.casefold():
            yield Match(entry, 0.0, entry.title)
        for turn in _split_turns(_transcript(entry.folder / TRANSCRIPT_FILE)):
            line = "".join(t for _, t in turn).strip()
            if needle in line.casefold():
                yield Match(entry, _seconds(turn[0][0]), line)


def rename(root: str | Path, id: str, title: str) -> None:
    """Give conversation `id` the title `title` (it keeps it from now on)."""
    title = " ".join(title.split())
    if not title:
        raise UserError("a title cannot be empty")
    folder = _folder_of(root, id)
    meta = _read_meta(folder)
    if meta is None:
        raise UserError(f"conversation {id} is damaged: its {META_FILE} cannot be read")
    meta.update(title=title, title_from_user=True)
    _write_meta(folder, meta)


def delete(root: str | Path, ids: list[str]) -> None:
    """Delete the conversations `ids`: all of them, or (an unknown id) none."""
    folders = [_folder_of(root, id) for id in ids]
    for folder in folders:
        try:
            _remove(folder)
        except OSError as e:
            raise UserError(f"cannot delete the conversation {folder.name}: {io_reason(e)}") from e
        log.info("deleted the conversation %s", folder.name)


# ------------------------------------------------------------------------------ compaction


def compact(folder: Path, *, recovered: bool, locked: bool = False) -> bool:
    """Turn the raw tracks of `folder` into ``audio.flac`` and ``peaks.u8``, write the final
    ``meta.json`` and only then delete the raw files. False when another process holds the folder
    (it is running). Raises OSError (the raw files stay) when something cannot be written."""
    with _holding(folder, locked) as held:
        if not held:
            return False
        meta = _read_meta(folder) or {}
        user_path, moshi_path = folder / USER_FILE, folder / MOSHI_FILE
        frames = min(_frames_in(user_path), _frames_in(moshi_path))
        pieces = sorted((i, t) for i, t in _read_pieces(folder / TRANSCRIPT_FILE) if i < frames)
        peaks = np.zeros((frames, 2), np.uint8)
        with atomic_output(folder / AUDIO_FILE) as tmp:
            _write_flac(tmp, user_path, moshi_path, frames, peaks)
            _check_flac(tmp, user_path, moshi_path, frames)
            with atomic_output(folder / PEAKS_FILE) as peaks_tmp:
                peaks_tmp.write_bytes(peaks.tobytes())
            with atomic_output(folder / TRANSCRIPT_FILE) as text_tmp:
                text_tmp.write_bytes(
                    b"".join(
                        (
                            json.dumps(
                                {"frame": i, "time": _seconds(i), "text": t}, ensure_ascii=False
                            )
                            + "\n"
                        ).encode("utf-8")
                        for i, t in pieces
                    )
                )
        ended = meta.get("ended")
        if not ended:
            ended = datetime.fromtimestamp(_mtime(user_path), _now().tzinfo).isoformat()
        final = full_meta(meta, folder.name)
        final.update(
            ended=ended,
            frames=frames,
            duration=_seconds(frames),
            recovered=bool(recovered or meta.get("recovered")),
            audio=AUDIO_FILE,
            audio_format={"channels": ["user", "moshi"], "subtype": FLAC_SUBTYPE},
            peaks=PEAKS_FILE,
        )
        final.pop("tracks", None)
        final.pop("sample_format", None)
        if not final.get("title_from_user"):
            final["title"] = title_of(pieces)
        _write_meta(folder, final)
        for path in (user_path, moshi_path):
            with suppress(FileNotFoundError):
                path.unlink()
        return True


# ------------------------------------------------------------------------------- internals


def _entry(folder: Path) -> Entry | None:
    """The folder as the history lists it; None (and a log line) when it is not a conversation."""
    try:
        text = (folder / META_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        if (folder / USER_FILE).exists():
            return _damaged(folder, "its meta.json is missing")
        log.info("skipped %s in the conversations folder: not a conversation", folder)
        return None
    except OSError as e:
        return _damaged(folder, f"its meta.json cannot be read ({io_reason(e)})")
    try:
        meta = json.loads(text)
    except ValueError:
        return _damaged(folder, "its meta.json is cut short or not JSON")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        log.info("skipped %s in the conversations folder: not a moshi-desktop conversation", folder)
        return None
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        return _damaged(folder, f"it was saved by a newer moshi-desktop (format {version})")
    raw = (folder / USER_FILE).exists()
    running = raw and _is_running(folder)
    damaged = "" if raw or (folder / AUDIO_FILE).exists() else "its audio is missing"
    if raw and meta.get("duration") is None:  # streaming: the length is what the files hold
        frames = min(_size(folder / USER_FILE), _size(folder / MOSHI_FILE)) // (FRAME_SIZE * 4)
        duration = _seconds(frames)
    else:
        duration = _number(meta.get("duration"))
    return Entry(
        id=folder.name,
        folder=folder,
        started=_parse_time(meta.get("started")),
        duration=duration,
        model=str(meta.get("model", "")),
        recovered=bool(meta.get("recovered", False)),
        title=str(meta.get("title", "")),
        damaged=damaged,
        running=running,
    )


def _transcript(path: Path) -> list[tuple[int, str]]:
    """The pieces of a transcript file: in one JSON parse when every line is whole (as
    compaction leaves it), else line by line."""
    try:
        data = path.read_bytes().decode("utf-8").strip()
        records = json.loads("[" + data.replace("\n", ",") + "]") if data else []
        return [(r["frame"], r["text"]) for r in records]
    except OSError:
        return []
    except (ValueError, KeyError, TypeError):
        return _read_pieces(path)


def _damaged(folder: Path, reason: str) -> Entry:
    log.warning("the conversation in %s is damaged: %s", folder, reason)
    return Entry(folder.name, folder, None, 0.0, "", False, "", damaged=reason)


def _folder_of(root: str | Path, id: str) -> Path:
    root = Path(root)
    folder = root / id
    if not id or Path(id).name != id or id.startswith(".") or not folder.is_dir():
        raise UserError(
            f"no conversation {id!r} in {root}; `moshi-desktop conversations list` shows them"
        )
    return folder


def _write_flac(tmp: Path, user: Path, moshi: Path, frames: int, peaks: np.ndarray) -> None:
    with open(tmp, "wb") as raw, open(user, "rb") as u, open(moshi, "rb") as m:
        with soundfile.SoundFile(raw, "w", SAMPLE_RATE, 2, FLAC_SUBTYPE, format="FLAC") as out:
            for start in range(0, frames, _BLOCK):
                stereo = _raw_block(u, m, start, min(frames, start + _BLOCK))
                n = len(stereo) // FRAME_SIZE
                peak = np.abs(stereo).reshape(n, FRAME_SIZE, 2).max(axis=1)
                peaks[start : start + n] = np.round(peak * 255).astype(np.uint8)
                out.write(stereo)
        raw.flush()
        os.fsync(raw.fileno())


def _check_flac(tmp: Path, user: Path, moshi: Path, frames: int) -> None:
    """Read the FLAC back: it must hold every sample, each within one 24-bit step."""
    with soundfile.SoundFile(str(tmp)) as back, open(user, "rb") as u, open(moshi, "rb") as m:
        if back.frames != frames * FRAME_SIZE or back.channels != 2:
            raise OSError(
                f"the compacted audio holds {back.frames} samples, not {frames * FRAME_SIZE}"
            )
        for start in range(0, frames, _BLOCK):
            want = _raw_block(u, m, start, min(frames, start + _BLOCK))
            got = back.read(len(want), dtype="float32", always_2d=True)
            if got.shape != want.shape or np.abs(got - want).max(initial=0.0) > _QUANTUM:
                raise OSError("the compacted audio does not read back as what was recorded")


def _raw_block(u, m, start: int, stop: int) -> np.ndarray:
    """[samples, 2] frames `start` to `stop` of the raw tracks, clipped to [-1, 1] (as FLAC
    keeps them)."""
    size, offset = (stop - start) * FRAME_SIZE * 4, start * FRAME_SIZE * 4
    stereo = np.empty(((stop - start) * FRAME_SIZE, 2), np.float32)
    for column, f in enumerate((u, m)):
        f.seek(offset)
        data = f.read(size)
        if len(data) < size:
            raise OSError(f"{Path(f.name).name} is shorter than it was a moment ago")
        stereo[:, column] = np.frombuffer(data, "<f4")
    return np.clip(stereo, -1.0, 1.0 - _QUANTUM, out=stereo)


def _read_flac(path: Path, name: str, start: int, stop: int) -> np.ndarray:
    with soundfile.SoundFile(str(path)) as f:
        f.seek(start * FRAME_SIZE)
        data = f.read((stop - start) * FRAME_SIZE, dtype="float32", always_2d=True)
    if len(data) < (stop - start) * FRAME_SIZE:
        raise OSError(f"{path.name} is shorter than its meta.json says")
    return np.ascontiguousarray(data[:, 0 if name == USER_FILE else 1])


def _write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    with atomic_output(folder / META_FILE) as tmp:
        tmp.write_bytes((json.dumps(meta, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def _try_lock(folder: Path) -> int | None:
    """An open descriptor holding `folder`'s lock, or None when another process holds it."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextmanager
def _holding(folder: Path, locked: bool) -> Iterator[bool]:
    if locked:
        yield True
        return
    if fcntl is None:
        yield time.time() - _mtime(folder / USER_FILE) > _RUNNING_SECONDS
        return
    fd = _try_lock(folder)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def _is_running(folder: Path) -> bool:
    with _holding(folder, locked=False) as free:
        return not free


def _remove(folder: Path) -> None:
    """Delete a conversation's folder: renamed first, so that a failure halfway never leaves a
    half conversation in the listing."""
    trash = folder.with_name(f".deleting-{folder.name}")
    os.replace(folder, trash)
    shutil.rmtree(trash)


def _now() -> datetime:
    return datetime.now().astimezone()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
