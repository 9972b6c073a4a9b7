"""The record of one conversation: Moshi's transcript with times, both voices, autosave and export.

The engine calls :meth:`Conversation.add_frame` once per 80 ms frame (1920 samples at 24 kHz):
the user's audio, Moshi's audio (``None`` is silence for that frame: Moshi's first step emits
nothing, the mic may drop a frame) and the piece of Moshi's inner monologue that accompanies that
frame's audio ("" on PAD frames, which are most of them). Frame ``i`` starts at ``i * 0.08`` s, so
both tracks stay sample-aligned and every piece has a time.

Turns and cues
    A *turn* is a run of Moshi's text without a pause: a new turn starts where a piece comes at
    least 1.2 s (15 frames, i.e. 14 or more PAD frames in between) after the previous one, unless
    that piece continues a word (no leading space), so a pause never splits a word. A turn lasts
    from its first piece's frame to the end of its last piece's frame.
    Subtitle *cues* (.srt, .vtt) are cut from turns: a turn is split at word boundaries so that a
    cue holds at most 84 characters (two 42-character lines) and is shown for at most 7 s. A cue
    starts at its first piece and ends 0.8 s after its last piece, but never after the next cue
    starts or the conversation ends.

Autosave (:meth:`Conversation.create`)
    One folder per conversation, ``<data folder>/conversations/<YYYY-MM-DD_HH-MM-SS>``, holding

    - ``meta.json``: the fields of ``docs/conversation-store.md`` (format version 2); rewritten
      with ``ended``, ``frames``, ``duration`` and ``title`` when the conversation is closed
      cleanly (the store, ``app/conversation/store.py``, then compacts the tracks to FLAC);
    - ``user.f32`` and ``moshi.f32``: raw little-endian float32 mono PCM at 24 kHz, appended one
      frame after the other (frame ``i`` at byte ``i * 1920 * 4``; silence is written as zeros);
    - ``transcript.jsonl``: one ``{"frame": i, "time": t, "text": piece}`` line per piece.

    ``add_frame`` only copies into memory and into buffered writers; they are flushed to the
    operating system from ``add_frame`` itself (on the engine thread, never in an audio callback)
    once a second has passed since the last flush, or once 64 frames (about 5 s of audio) wait
    when frames come faster than real time, audio before text. A killed process so loses at most
    the last second; :meth:`Conversation.recover` keeps the whole frames both tracks hold and the
    pieces of those frames, and ignores a truncated last record.

    Once flushed, a frame's audio is kept on disk only: reads (``user_audio``, ``moshi_audio``, the
    wav export) take it back from the track files a block at a time, so the memory a conversation
    takes stays flat however long it lasts. Memory holds the frames since the last flush and the
    transcript. A failing autosave (disk full, folder removed, no permission) never raises into the
    engine: it stops, says why in :attr:`Conversation.autosave_error`, reads what it had saved back
    into memory through its still-open files, and the record goes on in memory, as the record of a
    conversation without autosave does (about 11.5 MB per minute for both tracks).

Export (:meth:`Conversation.export`) writes .txt, .md, .json, .srt, .vtt or stereo audio (.wav,
.flac, .ogg; left: the user, right: Moshi), atomically; a failure is a :class:`~app.errors.UserError` that names the
path and leaves the record untouched.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile

from model.config import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE

from ..audio.files import atomic_output, check_writable
from ..errors import UserError, io_reason
from ..paths import recordings_dir

__all__ = [
    "FRAME_SECONDS",
    "FRAME_SIZE",
    "Conversation",
    "Cue",
    "Turn",
    "check_export",
]

log = logging.getLogger(__name__)

FRAME_MS = FRAME_SIZE * 1000 // SAMPLE_RATE  # 80

TURN_PAUSE_FRAMES = 15
"""A piece this many frames (1.2 s) or more after the previous one starts a new turn."""
CUE_MAX_CHARS = 84
CUE_LINE_CHARS = 42
CUE_MAX_MS = 7000
CUE_HOLD_MS = 800
"""How long a cue stays on screen after its last piece."""

FLUSH_SECONDS = 1.0
"""The autosave reaches the operating system at least this often while frames arrive."""
FLUSH_FRAMES = 64
"""... and at least every this many frames (about 5 s), when frames come faster than real time."""

FORMAT = "moshi-desktop-conversation"
FORMAT_VERSION = 2
"""2: the fields of docs/conversation-store.md at the top level, audio compacted to FLAC by the
store (app/conversation/store.py); 1: model and settings only, raw float32 tracks."""
META_FILE = "meta.json"
USER_FILE = "user.f32"
MOSHI_FILE = "moshi.f32"
TRANSCRIPT_FILE = "transcript.jsonl"
_PCM = np.dtype("<f4")
_FRAME_BYTES = FRAME_SIZE * _PCM.itemsize
_READ_BLOCK = 750  # frames read back from disk at a time: a minute, 5.8 MB per voice
_WRITE_BUFFER = 1 << 20  # bytes per file: about 11 s of audio, so only flushes write in practice
_SILENCE = np.zeros(FRAME_SIZE, np.float32)
_SILENCE.flags.writeable = False

EXPORT_KINDS = ("txt", "md", "json", "srt", "vtt", "wav", "flac", "ogg")
_AUDIO_KINDS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_24"), "ogg": ("OGG", "OPUS")}
"""Stereo audio exports: (libsndfile format, subtype); .ogg is Opus (lossy, small)."""


@dataclass(frozen=True)
class Turn:
    """Moshi's text between two pauses. Times in seconds from the start of the conversation."""

    start: float
    end: float  # the end of the frame of its last piece
    text: str
    pieces: tuple[tuple[float, str], ...]


@dataclass(frozen=True)
class Cue:
    """One subtitle: shown from `start` to `end` (seconds, whole milliseconds)."""

    start: float
    end: float
    text: str  # one or two lines, "\n" between them


class Conversation:
    """The record of one conversation, kept as it goes (see the module's docstring).

    ``Conversation()`` keeps it in memory only; :meth:`create` autosaves it to disk, where its
    audio then lives (memory holds the last second), and :meth:`recover` reads one back. One thread
    (the engine) adds frames; any other thread may read properties or export at the same time and
    sees the frames added so far.
    """

    def __init__(
        self,
        *,
        model: str = "",
        settings: Mapping[str, Any] | Any = None,
        started: datetime | None = None,
    ) -> None:
        self.model = model
        self.settings: dict[str, Any] = _settings_dict(settings)
        self.started: datetime | None = started or datetime.now().astimezone()
        self.folder: Path | None = None
        self.autosave_error: str | None = None
        self._lock = threading.Lock()
        self._frames = 0
        self._saved = 0  # the first frames, whose audio is only in the autosave files now
        self._user: list[np.ndarray] = []  # frames `_saved` onwards: the rest of the audio
        self._moshi: list[np.ndarray] = []
        self._pieces: list[tuple[int, str]] = []  # (frame index, text)
        self._closed = False
        self._files: dict[str, BinaryIO] | None = None
        self._last_flush = 0.0

    # ----------------------------------------------------------------- autosaved conversations

    @classmethod
    def create(
        cls,
        folder: str | Path | None = None,
        *,
        model: str = "",
        settings: Mapping[str, Any] | Any = None,
    ) -> Conversation:
        """A new conversation autosaved in a new folder under `folder` (default: the data folder's
        ``conversations``), named by its local start time."""
        conv = cls(model=model, settings=settings)
        parent = Path(folder) if folder is not None else recordings_dir()
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conv.folder = _new_folder(parent, conv.started)
            conv._write_meta()
            conv._files = {
                name: _open_append(conv.folder / name)
                for name in (USER_FILE, MOSHI_FILE, TRANSCRIPT_FILE)
            }
        except OSError as e:
            conv._close_files()
            raise UserError(f"cannot save the conversation in {parent}: {io_reason(e)}") from e
        conv._last_flush = _clock()
        return conv

    @classmethod
    def recover(cls, folder: str | Path) -> Conversation:
        """The conversation saved in `folder`, also after a crash: the whole frames that both tracks
        hold on disk and the pieces of those frames. The result is finished (no more frames)."""
        folder = Path(folder)
        meta = _read_meta(folder)
        user_path, moshi_path = folder / USER_FILE, folder / MOSHI_FILE
        if meta is None and not (user_path.exists() or moshi_path.exists()):
            raise UserError(f"{folder} is not a saved conversation (no {META_FILE}, no audio)")
        version = (meta or {}).get("version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UserError(
                f"{folder} was saved by a newer moshi-desktop (format version "
                f"{version}); update the app to open it"
            )
        meta = meta or {}
        try:
            n = min(_frames_in(user_path), _frames_in(moshi_path))
            pieces = [(i, t) for i, t in _read_pieces(folder / TRANSCRIPT_FILE) if i < n]
        except OSError as e:
            raise UserError(f"cannot read the conversation in {folder}: {io_reason(e)}") from e
        conv = cls(model=str(meta.get("model", "")), settings=meta.get("settings") or {})
        conv.started = _parse_time(meta.get("started"))
        conv.folder = folder
        conv._frames = conv._saved = n  # the audio stays on disk, read when asked for
        conv._pieces = sorted(pieces)
        conv._closed = True
        return conv

    @property
    def autosaving(self) -> bool:
        return self._files is not None

    def flush(self) -> None:
        """Hand what the autosave buffers hold to the operating system now."""
        with self._lock:
            self._flush_files()

    def close(self) -> None:
        """Finish the conversation: no more frames; the autosave is flushed, synced to disk and
        its ``meta.json`` records the end. Never raises for a failing autosave (see
        :attr:`autosave_error`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._files is None:
                return
            try:
                for name in (USER_FILE, MOSHI_FILE, TRANSCRIPT_FILE):
                    self._files[name].flush()
                    os.fsync(self._files[name].fileno())
                self._all_saved()
                self._write_meta(ended=datetime.now().astimezone(), frames=self._frames)
            except (OSError, UserError) as e:
                self._autosave_failed(e)  # reads the audio back through the files still open
            else:
                self._close_files()  # from now on the audio is read from the folder

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- the engine's side

    def add_frame(
        self, index: int, user: np.ndarray | None, moshi: np.ndarray | None, text: str = ""
    ) -> None:
        """Record frame `index` (it starts at ``index * 0.08`` s): 1920 samples of each voice
        (``None``: silence) and the piece of text that goes with Moshi's audio ("" for none).

        Frames come in order; a skipped index is recorded as silence in both tracks. Cheap: copies
        into memory and into buffered files; flushes about once a second (see the module).
        """
        user_frame, moshi_frame = _frame(user, "user"), _frame(moshi, "moshi")
        with self._lock:
            if self._closed:
                raise RuntimeError("the conversation is closed; start a new one")
            n = self._frames
            if index < n:
                raise ValueError(f"frame {index} comes after frame {n - 1}; frames come in order")
            gap = index - n
            self._user.extend([_SILENCE] * gap + [user_frame])
            self._moshi.extend([_SILENCE] * gap + [moshi_frame])
            self._frames = index + 1
            if text:
                self._pieces.append((index, text))
            if self._files is not None:
                try:
                    self._append_files(index, gap, user_frame, moshi_frame, text)
                    if (
                        _clock() - self._last_flush >= FLUSH_SECONDS
                        or len(self._user) >= FLUSH_FRAMES
                    ):
                        self._flush_files()
                except OSError as e:
                    self._autosave_failed(e)

    # ------------------------------------------------------------------------------ the record

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def duration(self) -> float:
        """Seconds recorded so far."""
        return _seconds(self.frames)

    @property
    def pieces(self) -> list[tuple[float, str]]:
        """Moshi's transcript as (start time in seconds, text) in time order."""
        return [(_seconds(i), t) for i, t in self._snapshot_pieces()]

    @property
    def text(self) -> str:
        """Moshi's whole transcript."""
        return "".join(t for _, t in self._snapshot_pieces()).strip()

    @property
    def turns(self) -> list[Turn]:
        return [
            Turn(
                start=_seconds(turn[0][0]),
                end=_seconds(turn[-1][0] + 1),
                text="".join(t for _, t in turn).strip(),
                pieces=tuple((_seconds(i), t) for i, t in turn),
            )
            for turn in _split_turns(self._snapshot_pieces())
        ]

    @property
    def cues(self) -> list[Cue]:
        """Subtitles for the .srt and .vtt exports."""
        return [Cue(s / 1000, e / 1000, text) for s, e, text in self._cues_ms()]

    def user_audio(self) -> np.ndarray:
        """The user's voice: float32 mono at 24 kHz, ``frames * 1920`` samples.

        Raises :class:`UserError` when the autosaved audio cannot be read back."""
        return self._track(USER_FILE)

    def moshi_audio(self) -> np.ndarray:
        """Moshi's voice: float32 mono at 24 kHz, sample-aligned with :meth:`user_audio`."""
        return self._track(MOSHI_FILE)

    # ---------------------------------------------------------------------------------- export

    def export(self, path: str | Path, kind: str | None = None) -> Path:
        """Write the conversation to `path` as `kind` (default: from the suffix), atomically.

        Kinds: txt, md, json, srt, vtt, and stereo audio (left the user, right Moshi, 24 kHz):
        wav (16-bit), flac (24-bit, lossless) and ogg (Opus).
        Raises :class:`UserError` naming the path and the reason when it cannot be written; the
        record itself is never changed, so exporting again elsewhere works.
        """
        path = Path(path)
        kind = (kind or path.suffix).lower().lstrip(".")
        if kind not in EXPORT_KINDS:
            raise UserError(
                f"cannot export to {path}: unknown format {kind or '(no suffix)'!r}; "
                f"use {', '.join('.' + k for k in EXPORT_KINDS)}"
            )
        if not path.parent.is_dir():
            raise UserError(f"cannot export to {path}: the folder {path.parent} does not exist")
        try:
            with atomic_output(path, "." + kind) as tmp:
                if kind in _AUDIO_KINDS:
                    self._write_audio(tmp, kind)
                else:
                    _write_text(tmp, getattr(self, f"_{kind}")())
        except (OSError, soundfile.LibsndfileError) as e:
            raise UserError(f"cannot export to {path}: {io_reason(e)}") from e
        return path

    def _txt(self) -> str:
        paragraphs = [f"[{clock_text(t.start)}] {t.text}" for t in self.turns]
        return "\n\n".join(paragraphs) + "\n" if paragraphs else ""

    def _md(self) -> str:
        lines = ["# Conversation with Moshi", ""]
        if self.started is not None:
            lines.append(f"- **Date:** {self.started.strftime('%Y-%m-%d %H:%M')}")
        lines.append(f"- **Duration:** {clock_text(self.duration)}")
        if self.model:
            lines.append(f"- **Model:** {_md_escape(self.model)}")
        if self.settings:
            shown = ", ".join(f"`{k}={v}`" for k, v in self.settings.items())
            lines.append(f"- **Settings:** {shown}")
        lines += ["", "## Transcript", ""]
        turns = self.turns
        for turn in turns:
            lines += [f"**{clock_text(turn.start)}** {_md_escape(turn.text)}", ""]
        if not turns:
            lines += ["*Moshi said nothing.*", ""]
        return "\n".join(lines)

    def _json(self) -> str:
        pieces = self._snapshot_pieces()
        record = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "started": self.started.isoformat() if self.started else None,
            "model": self.model,
            "settings": self.settings,
            "sample_rate": SAMPLE_RATE,
            "frame_seconds": FRAME_SECONDS,
            "duration": self.duration,
            "text": "".join(t for _, t in pieces).strip(),
            "pieces": [
                {"frame": i, "start": _seconds(i), "end": _seconds(i + 1), "text": t}
                for i, t in pieces
            ],
            "turns": [{"start": t.start, "end": t.end, "text": t.text} for t in self.turns],
        }
        return json.dumps(record, ensure_ascii=False, indent=2) + "\n"

    def _srt(self) -> str:
        return "".join(
            f"{n}\n{_timestamp(s, ',')} --> {_timestamp(e, ',')}\n{text.replace('-->', '->')}\n\n"
            for n, (s, e, text) in enumerate(self._cues_ms(), 1)
        )

    def _vtt(self) -> str:
        cues = "".join(
            f"{_timestamp(s, '.')} --> {_timestamp(e, '.')}\n{_vtt_escape(text)}\n\n"
            for s, e, text in self._cues_ms()
        )
        return "WEBVTT\n\n" + cues

    def _write_audio(self, tmp: Path, kind: str) -> None:
        n = self._frames
        file_format, subtype = _AUDIO_KINDS[kind]
        if kind == "wav" and n * FRAME_SIZE * 4 > 0xFFFF0000:
            file_format = "RF64"  # past 4 GiB a wav needs RF64 (> 12 h)
        with soundfile.SoundFile(str(tmp), "w", SAMPLE_RATE, 2, subtype, format=file_format) as f:
            for start in range(0, n, _READ_BLOCK):  # a minute at a time: flat for any length
                stop = min(n, start + _READ_BLOCK)
                stereo = np.empty(((stop - start) * FRAME_SIZE, 2), np.float32)
                with self._lock:
                    stereo[:, 0] = self._audio(USER_FILE, start, stop)
                    stereo[:, 1] = self._audio(MOSHI_FILE, start, stop)
                f.write(np.clip(stereo, -1.0, 1.0, out=stereo))

    # ------------------------------------------------------------------------------- internals

    def _snapshot_pieces(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._pieces)

    def _track(self, name: str) -> np.ndarray:
        """One voice's frames so far, read a block at a time (the engine waits for one block at
        most)."""
        n = self._frames
        out = np.empty(n * FRAME_SIZE, np.float32)
        for start in range(0, n, _READ_BLOCK):
            stop = min(n, start + _READ_BLOCK)
            with self._lock:
                out[start * FRAME_SIZE : stop * FRAME_SIZE] = self._audio(name, start, stop)
        return out

    def _audio(self, name: str, start: int, stop: int) -> np.ndarray:
        """Frames `start` to `stop` of one voice (flat), under the lock: those saved read back
        from their file, the others from memory."""
        split = min(max(start, self._saved), stop)
        memory = self._user if name == USER_FILE else self._moshi
        unsaved = memory[split - self._saved : stop - self._saved] if split < stop else []
        if split == start:
            return _concat(unsaved)
        try:
            saved = self._read_saved(name, start, split)
        except OSError as e:
            raise UserError(
                f"cannot read the conversation's audio in {self.folder}: {io_reason(e)}"
            ) from e
        return np.concatenate([saved, *unsaved]) if unsaved else saved

    def _cues_ms(self) -> list[tuple[int, int, str]]:
        """(start ms, end ms, text) per cue."""
        cues = []  # (first frame, last frame, text)
        for turn in _split_turns(self._snapshot_pieces()):
            words: list[list[tuple[int, str]]] = []
            for i, t in turn:
                if words and not t[:1].isspace():
                    words[-1].append((i, t))
                else:
                    words.append([(i, t)])
            cue: list[tuple[int, str]] = []
            for word in words:
                longer = "".join(t for _, t in cue + word).strip()
                shown_ms = (word[-1][0] - cue[0][0]) * FRAME_MS + CUE_HOLD_MS if cue else 0
                if cue and (len(longer) > CUE_MAX_CHARS or shown_ms > CUE_MAX_MS):
                    cues.append(cue)
                    cue = []
                cue += word
            if cue:
                cues.append(cue)
        out = []
        end_of_record = self.frames * FRAME_MS
        for n, cue in enumerate(cues):
            text = "".join(t for _, t in cue).strip()
            if not text:
                continue
            start = cue[0][0] * FRAME_MS
            end = min(cue[-1][0] * FRAME_MS + CUE_HOLD_MS, end_of_record)
            if n + 1 < len(cues):
                end = min(end, cues[n + 1][0][0] * FRAME_MS)
            out.append((start, end, _two_lines(text)))
        return out

    def _append_files(
        self, index: int, gap: int, user: np.ndarray, moshi: np.ndarray, text: str
    ) -> None:
        files = self._files
        assert files is not None
        if gap:
            silence = bytes(gap * FRAME_SIZE * _PCM.itemsize)
            files[USER_FILE].write(silence)
            files[MOSHI_FILE].write(silence)
        files[USER_FILE].write(user.astype(_PCM, copy=False).tobytes())
        files[MOSHI_FILE].write(moshi.astype(_PCM, copy=False).tobytes())
        if text:
            line = {"frame": index, "time": _seconds(index), "text": text}
            files[TRANSCRIPT_FILE].write(
                (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
            )

    def _flush_files(self) -> None:
        if self._files is None:
            return
        try:
            for name in (USER_FILE, MOSHI_FILE, TRANSCRIPT_FILE):  # audio first: see recover
                self._files[name].flush()
        except OSError as e:
            self._autosave_failed(e)
        else:
            self._all_saved()
        self._last_flush = _clock()

    def _all_saved(self) -> None:
        """Every frame's audio has reached its file: memory lets go of it."""
        self._saved = self._frames
        self._user.clear()
        self._moshi.clear()

    def _read_saved(self, name: str, start: int, stop: int) -> np.ndarray:
        """Frames `start` to `stop` (all below `_saved`) of one voice from its file, through the
        file the autosave holds open (still readable if its folder was removed) or, once the
        conversation is closed, from the folder."""
        size, offset = (stop - start) * _FRAME_BYTES, start * _FRAME_BYTES
        if self._files is not None:
            data = _pread(self._files[name].fileno(), size, offset)
        else:
            assert self.folder is not None
            with open(self.folder / name, "rb") as f:
                data = _pread(f.fileno(), size, offset)
        if len(data) < size:
            raise OSError(errno.EIO, f"{name} is shorter than what was saved in it")
        return np.frombuffer(data, _PCM).astype(np.float32, copy=False)

    def _autosave_failed(self, e: OSError | UserError) -> None:
        """Stop the autosave; what it had saved comes back into memory, where the record goes
        on: nothing said or heard is lost."""
        self.autosave_error = (
            f"the conversation is no longer saved to {self.folder}: {io_reason(e)}; "
            "export it before closing the app"
        )
        if self._saved:
            try:
                saved = [self._read_saved(name, 0, self._saved) for name in (USER_FILE, MOSHI_FILE)]
            except OSError as read_error:
                log.error("the autosaved audio could not be read back", exc_info=True)
                self.autosave_error += (
                    f"; its first {clock_text(_seconds(self._saved))} could not be read back "
                    f"({io_reason(read_error)}) and are silence"
                )
                saved = [np.zeros(0, np.float32)] * 2
            for track, audio in zip((self._user, self._moshi), saved):
                frames = list(audio.reshape(-1, FRAME_SIZE))
                track[:0] = frames + [_SILENCE] * (self._saved - len(frames))
            self._saved = 0
        self._close_files()

    def _close_files(self) -> None:
        files, self._files = self._files, None
        for f in (files or {}).values():
            try:
                f.close()
            except OSError:
                pass  # what could not be written is lost; the record in memory is whole

    def _write_meta(self, **end: Any) -> None:
        assert self.folder is not None
        meta = {
            "started": self.started.isoformat() if self.started else None,
            "model": self.model,
            "settings": self.settings,
            "app_version": _app_version(),
            "tracks": {"user": USER_FILE, "moshi": MOSHI_FILE},
            "sample_format": "float32le",
        }
        for key, value in end.items():
            meta[key] = value.isoformat() if isinstance(value, datetime) else value
        if "frames" in end:
            meta["duration"] = _seconds(end["frames"])
            meta["title"] = title_of(self._pieces)
        meta = full_meta(meta, self.folder.name)
        with atomic_output(self.folder / META_FILE) as tmp:
            _write_text(tmp, json.dumps(meta, ensure_ascii=False, indent=2) + "\n")


def full_meta(meta: Mapping[str, Any], id: str) -> dict[str, Any]:
    """`meta` (any earlier version) with every field of the current version: what was not
    written is taken from ``settings`` or left empty."""
    settings = dict(meta.get("settings") or {})
    model = str(meta.get("model", ""))
    server = settings.get("server") or (model if model.startswith(("ws://", "wss://")) else None)
    sampling_keys = ("temperature", "top_k", "text_temperature", "text_top_k")
    out: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "id": id,
        "started": meta.get("started"),
        "ended": meta.get("ended"),
        "duration": meta.get("duration"),
        "frames": meta.get("frames"),
        "sample_rate": SAMPLE_RATE,
        "frame_size": FRAME_SIZE,
        "model": model,
        "revision": settings.get("revision"),
        "dtype": settings.get("dtype"),
        "device": settings.get("device"),
        "backend": server or "local",
        "sampling": {k: settings[k] for k in sampling_keys if k in settings},
        "seed": settings.get("seed"),
        "app_version": meta.get("app_version") or settings.get("app_version"),
        "title": meta.get("title", ""),
        "title_from_user": bool(meta.get("title_from_user", False)),
        "recovered": bool(meta.get("recovered", False)),
        "transcript": TRANSCRIPT_FILE,
        "settings": settings,
    }
    for key, value in meta.items():
        out.setdefault(key, value)
    return out


def check_export(path: str | Path) -> None:
    """A UserError now, before any work, when `path` is not a format :meth:`Conversation.export`
    writes or cannot be written."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in EXPORT_KINDS:
        raise UserError(
            f"cannot export {path.name}: use one of {', '.join('.' + k for k in EXPORT_KINDS)}"
        )
    check_writable(path)


TITLE_WORDS = 8
TITLE_CHARS = 60


def title_of(pieces: list[tuple[int, str]]) -> str:
    """The first words of the transcript: the title until the user gives one."""
    words = "".join(t for _, t in pieces).split()[:TITLE_WORDS]
    title = " ".join(words)
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1].rstrip() + "…"


# ------------------------------------------------------------------------------------ helpers


def _clock() -> float:
    return time.monotonic()


def _open_append(path: Path) -> BinaryIO:
    """Open for the whole conversation; private to the user (0600), like the folder (0700).
    Read-write, so that what was saved can be read back through it (:func:`_pread`)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
    return open(os.open(path, flags, 0o600), "ab", buffering=_WRITE_BUFFER)


def _pread(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset` of an open file (fewer where it ends first); the callers hold the
    record's lock, which also guards the seek of the fallback where there is no ``os.pread``."""
    chunks = []
    while size > 0:
        if hasattr(os, "pread"):
            chunk = os.pread(fd, size, offset)
        else:  # Windows; the appending writes go to the end wherever the position is
            os.lseek(fd, offset, os.SEEK_SET)
            chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _frames_in(path: Path) -> int:
    """The whole frames a track file holds (0 if it does not exist); checks it can be read."""
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_size // _FRAME_BYTES
    except FileNotFoundError:
        return 0


def _write_text(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))  # "\n" line ends on every platform


def _new_folder(parent: Path, started: datetime | None) -> Path:
    stamp = (started or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1, 1000):
        path = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir(mode=0o700)  # voice recordings: private to the user
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "too many conversations started this second", str(parent))


def _frame(audio: np.ndarray | None, name: str) -> np.ndarray:
    if audio is None:
        return _SILENCE
    frame = np.array(audio, dtype=np.float32, copy=True).reshape(-1)  # the caller may reuse it
    if frame.shape != (FRAME_SIZE,):
        raise ValueError(f"the {name} frame has {frame.size} samples; expected {FRAME_SIZE}")
    return frame


def _concat(frames: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(frames) if frames else np.zeros(0, np.float32)


def _seconds(frame: int) -> float:
    return frame * FRAME_SIZE / SAMPLE_RATE  # exact to the nearest float, unlike frame * 0.08


def _split_turns(pieces: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    turns: list[list[tuple[int, str]]] = []
    for i, t in pieces:
        pause = not turns or i - turns[-1][-1][0] >= TURN_PAUSE_FRAMES
        if pause and (not turns or t[:1].isspace()):
            turns.append([(i, t)])
        else:
            turns[-1].append((i, t))
    return [turn for turn in turns if "".join(t for _, t in turn).strip()]


def _two_lines(text: str) -> str:
    """A cue's text on one line, or on two of about equal length if it is longer than a line."""
    text = " ".join(text.split())
    if len(text) <= CUE_LINE_CHARS:
        return text
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(len(text) - 2 * i))
    return text[:cut] + "\n" + text[cut + 1 :]


def _timestamp(ms: int, sep: str) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def clock_text(seconds: float) -> str:
    """0:07, 12:34, 1:02:03."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _md_escape(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", text)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _settings_dict(settings: Mapping[str, Any] | Any) -> dict[str, Any]:
    if settings is None:
        return {}
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return dataclasses.asdict(settings)
    return dict(settings)


def _app_version() -> str:
    from .. import __version__

    return __version__


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _read_pieces(path: Path, limit: int | None = None) -> list[tuple[int, str]]:
    """The (frame, text) records of a transcript file; a truncated or damaged line is skipped."""
    pieces: list[tuple[int, str]] = []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return pieces
    with f:
        for line in f:
            try:
                record = json.loads(line.decode("utf-8"))
                frame, text = record["frame"], record["text"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(frame, int) and frame >= 0 and isinstance(text, str) and text:
                pieces.append((frame, text))
                if limit is not None and len(pieces) >= limit:
                    break
    return pieces


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
