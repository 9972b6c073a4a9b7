"""The conversation record: frames in and out, text times, turns and cues, exports, autosave."""

from __future__ import annotations

import errno
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile
import srt
import webvtt

from app.conversation import record as session
from app.conversation.record import FRAME_SIZE, Conversation
from app.conversation.store import list_conversations
from app.errors import UserError
from app.paths import data_dir, log_dir, recordings_dir

ROOT = Path(__file__).resolve().parents[3]
RATE = 24000

SENTENCE = (
    "I am Moshi, a speech model made by Kyutai. I listen and speak at the same time, so you can "
    "interrupt me whenever you like, and I will try to answer you as well as I can."
).split()


def _t(frame: int) -> float:
    """The time frame `frame` starts at, as the record computes it."""
    return frame * FRAME_SIZE / RATE


def _frame(rng: np.random.Generator) -> np.ndarray:
    return (0.5 * rng.standard_normal(FRAME_SIZE)).astype(np.float32)


def _say(conv: Conversation, start: int, words: list[str], every: int = 3, first: bool = False):
    """Add frames from `start`: one word every `every` frames (the first word without a leading
    space when `first`), both voices random. Returns the index after the last frame added."""
    rng = np.random.default_rng(start)
    index = start
    for n, word in enumerate(words):
        for k in range(every):
            text = ("" if first and n == 0 else " ") + word if k == 0 else ""
            conv.add_frame(index, _frame(rng), _frame(rng), text)
            index += 1
    return index


def _silence(conv: Conversation, start: int, frames: int) -> int:
    for index in range(start, start + frames):
        conv.add_frame(index, None, None)
    return start + frames


def _conversation(**kwargs) -> Conversation:
    """Two turns: a short greeting, a pause of 2 s, then a long monologue."""
    conv = Conversation(model="kyutai/moshiko-pytorch-bf16", settings={"temperature": 0.8})
    index = _say(conv, 0, ["Hello,", "how", "are", "you?"], first=True)
    index = _silence(conv, index, 25)
    index = _say(conv, index, SENTENCE)
    _silence(conv, index, 10)
    return conv


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def _vtt_ms(stamp: str) -> int:
    h, m, rest = stamp.split(":")
    s, ms = rest.split(".")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


# ---------------------------------------------------------------------------- the record


def test_frames_in_are_frames_out_in_both_tracks():
    rng = np.random.default_rng(0)
    conv = Conversation()
    users, moshis = [], []
    for i in range(40):
        user = None if i % 7 == 3 else _frame(rng)  # the mic dropped a frame
        moshi = None if i == 0 or i % 5 == 2 else _frame(rng)  # Moshi's first step: nothing
        conv.add_frame(i, user, moshi)
        users.append(np.zeros(FRAME_SIZE, np.float32) if user is None else user)
        moshis.append(np.zeros(FRAME_SIZE, np.float32) if moshi is None else moshi)

    assert conv.frames == 40
    assert conv.duration == pytest.approx(40 * 0.08)
    for got, want in ((conv.user_audio(), users), (conv.moshi_audio(), moshis)):
        assert got.dtype == np.float32 and got.shape == (40 * FRAME_SIZE,)
        np.testing.assert_array_equal(got, np.concatenate(want))


def test_add_frame_copies_the_callers_buffer():
    conv = Conversation()
    buffer = np.ones(FRAME_SIZE, np.float32)
    conv.add_frame(0, buffer, buffer)
    buffer[:] = 0  # the engine reuses its buffers
    assert conv.user_audio().min() == 1 and conv.moshi_audio().min() == 1


def test_a_skipped_frame_is_silence_and_frames_come_in_order():
    conv = Conversation()
    ones = np.ones(FRAME_SIZE, np.float32)
    conv.add_frame(0, ones, ones)
    conv.add_frame(3, ones, ones, " late")
    assert conv.frames == 4
    for audio in (conv.user_audio(), conv.moshi_audio()):
        np.testing.assert_array_equal(audio[FRAME_SIZE : 3 * FRAME_SIZE], 0)
        np.testing.assert_array_equal(audio[3 * FRAME_SIZE :], 1)
    assert conv.pieces == [(0.24, " late")]
    with pytest.raises(ValueError, match="in order"):
        conv.add_frame(3, ones, ones)
    with pytest.raises(ValueError, match="1920"):
        conv.add_frame(4, np.ones(1000, np.float32), None)
    conv.close()
    with pytest.raises(RuntimeError, match="closed"):
        conv.add_frame(4, None, None)


def test_pieces_are_timed_by_their_frame_and_aligned_with_the_audio():
    conv = Conversation()
    marked = {2: "Hi", 9: " there", 10: ",", 31: " friend"}
    for i in range(40):
        moshi = np.full(FRAME_SIZE, i, np.float32)  # each frame's samples say which frame it is
        conv.add_frame(i, None, moshi, marked.get(i, ""))

    assert conv.pieces == [(_t(i), t) for i, t in marked.items()]
    assert [t for t, _ in conv.pieces] == [0.16, 0.72, 0.8, 2.48]
    times = [t for t, _ in conv.pieces]
    assert times == sorted(times)
    assert conv.text == "Hi there, friend"
    audio = conv.moshi_audio()
    for start, _ in conv.pieces:
        sample = round(start * RATE)
        assert audio[sample] == start / 0.08 and audio[sample - 1] == start / 0.08 - 1


def test_turns_are_cut_at_pauses_of_1_2_seconds_but_never_inside_a_word():
    conv = Conversation()
    script = {
        0: "One",
        3: " two",
        17: " three",  # 14 frames after "two": the same turn
        32: " four",  # 15 frames (1.2 s) after "three": a new turn
        60: "teen",  # a long pause inside a word: still the same turn
        80: " ",  # only a space, after a pause: no turn of its own
    }
    for i in range(90):
        conv.add_frame(i, None, None, script.get(i, ""))

    turns = conv.turns
    assert [t.text for t in turns] == ["One two three", "fourteen"]
    assert (turns[0].start, turns[0].end) == (0.0, _t(18))
    assert (turns[1].start, turns[1].end) == (_t(32), _t(61))
    assert turns[1].pieces == ((_t(32), " four"), (_t(60), "teen"))
    assert conv.text == "One two three fourteen"


def test_cues_are_cut_at_pauses_and_capped_at_word_boundaries():
    conv = _conversation()
    cues, turns = conv.cues, conv.turns
    assert len(turns) == 2 and len(cues) >= 4
    assert cues[0].text == "Hello, how are you?"  # the first turn is one cue
    piece_times = {round(t * 1000) for t, _ in conv.pieces}
    for cue, following in zip(cues, cues[1:] + [None]):
        assert round(cue.start * 1000) in piece_times  # a cue starts with its first piece
        assert cue.end > cue.start
        assert cue.end - cue.start <= 7.0 + 1e-9
        lines = cue.text.split("\n")
        assert 1 <= len(lines) <= 2 and all(lines)
        assert len(" ".join(lines)) <= 84
        if following is not None:
            assert cue.end <= following.start  # never overlapping the next cue
        assert cue.end <= conv.duration
    # The second turn's cues, put back together, are the turn: cuts fall between words.
    rest = " ".join(c.text.replace("\n", " ") for c in cues[1:])
    assert rest == turns[1].text == " ".join(SENTENCE)
    # A cue ends a little after its last piece (0.8 s), unless the next cue starts sooner.
    last_piece = max(t for t, _ in conv.pieces)
    assert cues[-1].end == pytest.approx(min(last_piece + 0.8, conv.duration))


# ------------------------------------------------------------------------------- exports

SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"


def _check_srt_strictly(text: str) -> None:
    """Numbered from 1, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, text lines, one blank line between."""
    assert text.endswith("\n\n") and not text.startswith("\n")
    blocks = text[:-2].split("\n\n")
    for n, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(n)
        assert re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1]), lines[1]
        assert 1 <= len(lines[2:]) <= 2 and all(line.strip() for line in lines[2:])


def test_srt_export_is_valid_and_matches_the_cues(tmp_path):
    conv = _conversation()
    path = conv.export(tmp_path / "talk.srt")
    text = path.read_text(encoding="utf-8")
    _check_srt_strictly(text)
    subs = list(srt.parse(text))
    assert [s.index for s in subs] == list(range(1, len(conv.cues) + 1))
    for sub, cue in zip(subs, conv.cues):
        assert (_ms(sub.start), _ms(sub.end)) == (round(cue.start * 1000), round(cue.end * 1000))
        assert sub.content == cue.text
    assert all(a.end <= b.start for a, b in zip(subs, subs[1:]))
    assert srt.compose(subs, reindex=False) == text  # the library writes the same file


def test_vtt_export_is_valid_and_escapes_markup(tmp_path):
    conv = _conversation()
    _say(conv, conv.frames + 30, ["a", "<b>", "&", "-->", "c"])
    path = conv.export(tmp_path / "talk.vtt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n\n")
    assert "<b>" not in text and "-->" not in text.replace(" --> ", "")
    captions = list(webvtt.read(str(path)))
    assert len(captions) == len(conv.cues)
    for caption, cue in zip(captions, conv.cues):
        assert _vtt_ms(caption.start) == round(cue.start * 1000)
        assert _vtt_ms(caption.end) == round(cue.end * 1000)
        assert html.unescape(caption.text) == cue.text
    assert html.unescape(captions[-1].text) == "a <b> & --> c"
    vtt_time = r"\d{2}:\d{2}:\d{2}\.\d{3}"
    for block in text.removeprefix("WEBVTT\n\n").removesuffix("\n\n").split("\n\n"):
        assert re.fullmatch(f"{vtt_time} --> {vtt_time}(\n[^\n]+){{1,2}}", block), block


def test_json_export_round_trips(tmp_path):
    conv = _conversation()
    record = json.loads(conv.export(tmp_path / "talk.json").read_text(encoding="utf-8"))
    assert record["model"] == "kyutai/moshiko-pytorch-bf16"
    assert record["settings"] == {"temperature": 0.8}
    assert record["sample_rate"] == RATE and record["duration"] == conv.duration
    assert record["text"] == conv.text
    assert [(p["start"], p["text"]) for p in record["pieces"]] == conv.pieces
    assert all(p["end"] == pytest.approx(p["start"] + 0.08) for p in record["pieces"])
    assert all(p["start"] == p["frame"] * FRAME_SIZE / RATE for p in record["pieces"])
    assert [(t["start"], t["end"], t["text"]) for t in record["turns"]] == [
        (t.start, t.end, t.text) for t in conv.turns
    ]
    assert record["started"] == conv.started.isoformat()


def test_txt_and_markdown_exports(tmp_path):
    conv = _conversation()
    txt = conv.export(tmp_path / "talk.txt").read_text(encoding="utf-8")
    assert txt == f"[0:00] Hello, how are you?\n\n[0:02] {' '.join(SENTENCE)}\n"
    md = conv.export(tmp_path / "talk.md").read_text(encoding="utf-8")
    assert md.startswith("# Conversation with Moshi\n")
    assert "- **Model:** kyutai/moshiko-pytorch-bf16" in md
    assert "`temperature=0.8`" in md and conv.started.strftime("%Y-%m-%d") in md
    assert "**0:00** Hello, how are you?" in md and "**0:02** I am Moshi," in md
    # `kind` wins over the suffix.
    assert conv.export(tmp_path / "notes", kind="md").read_text(encoding="utf-8") == md


def test_wav_export_is_stereo_user_left_moshi_right(tmp_path):
    conv = _conversation()
    audio, rate = soundfile.read(str(conv.export(tmp_path / "talk.wav")), dtype="float32")
    info = soundfile.info(str(tmp_path / "talk.wav"))
    assert rate == RATE and info.channels == 2 and info.subtype == "PCM_16"
    assert audio.shape == (conv.frames * FRAME_SIZE, 2)
    step = 1 / 32768  # 16-bit quantisation
    np.testing.assert_allclose(audio[:, 0], np.clip(conv.user_audio(), -1, 1), atol=step)
    np.testing.assert_allclose(audio[:, 1], np.clip(conv.moshi_audio(), -1, 1), atol=step)


def test_an_empty_conversation_exports_valid_files(tmp_path):
    conv = Conversation()
    assert conv.export(tmp_path / "a.srt").read_text() == ""
    assert list(webvtt.read(str(conv.export(tmp_path / "a.vtt")))) == []
    assert json.loads(conv.export(tmp_path / "a.json").read_text())["pieces"] == []
    assert soundfile.info(str(conv.export(tmp_path / "a.wav"))).frames == 0


def test_an_unknown_format_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"talk\.mp3.*\.srt"):
        Conversation().export(tmp_path / "talk.mp3")


def _assert_still_exports(conv: Conversation, folder: Path, before: str) -> None:
    assert conv.export(folder / "retry.json").read_text(encoding="utf-8") == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left over


def test_export_to_a_missing_folder_is_a_user_error(tmp_path):
    conv = _conversation()
    before = conv.export(tmp_path / "before.json").read_text(encoding="utf-8")
    target = tmp_path / "missing" / "talk.srt"
    with pytest.raises(UserError, match=f"{re.escape(str(target))}.*does not exist"):
        conv.export(target)
    _assert_still_exports(conv, tmp_path, before)


def test_export_to_a_read_only_folder_is_a_user_error(tmp_path, monkeypatch):
    conv = _conversation()
    before = conv.export(tmp_path / "before.json").read_text(encoding="utf-8")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anyway: have the OS refuse as it would
            refuse = OSError(errno.EACCES, os.strerror(errno.EACCES))
            monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(refuse))
        for name in ("talk.srt", "talk.wav"):
            with pytest.raises(UserError, match=f"{re.escape(str(locked / name))}: permission"):
                conv.export(locked / name)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
        monkeypatch.undo()
    _assert_still_exports(conv, tmp_path, before)


@pytest.mark.parametrize(
    "name", ["talk.txt", "talk.md", "talk.json", "talk.srt", "talk.vtt", "talk.wav"]
)
def test_a_full_disk_is_a_user_error_and_the_record_stays(tmp_path, monkeypatch, name):
    conv = _conversation()
    before = conv.export(tmp_path / "before.json").read_text(encoding="utf-8")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(session, "_write_text", disk_full)
        m.setattr(soundfile.SoundFile, "write", disk_full)
        with pytest.raises(UserError, match=f"{re.escape(str(tmp_path / name))}: the disk is full"):
            conv.export(tmp_path / name)
    assert not (tmp_path / name).exists()
    assert conv.frames == 25 + 4 * 3 + len(SENTENCE) * 3 + 10
    _assert_still_exports(conv, tmp_path, before)
    conv.export(tmp_path / name)  # and the same path once there is room again
    assert (tmp_path / name).stat().st_size > 0


# ------------------------------------------------------------------------------ autosave


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux conventions")
def test_folders_follow_the_platforms_conventions(monkeypatch, tmp_path):
    # platformdirs chooses the platform once, at import: this checks Linux, the one running here.
    assert data_dir() == Path(os.environ["XDG_DATA_HOME"]) / "moshi-desktop"
    assert recordings_dir() == data_dir() / "conversations"
    assert log_dir() == Path(os.environ["XDG_STATE_HOME"]) / "moshi-desktop" / "log"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert data_dir() == tmp_path / ".local" / "share" / "moshi-desktop"
    assert log_dir() == tmp_path / ".local" / "state" / "moshi-desktop" / "log"


def test_autosave_writes_the_documented_files_and_recovers_whole(tmp_path):
    with Conversation.create(tmp_path, model="tiny", settings={"top_k": 250}) as conv:
        index = _say(conv, 0, ["Bonjour", "à", "vous"], first=True)
        _silence(conv, index, 3)
    folder = conv.folder
    assert folder.parent == tmp_path
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", folder.name)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["sample_rate"] == RATE and meta["frame_size"] == FRAME_SIZE
    assert meta["model"] == "tiny" and meta["settings"] == {"top_k": 250}
    assert meta["frames"] == 12 and "ended" in meta and "started" in meta
    user = np.fromfile(folder / "user.f32", dtype="<f4")
    np.testing.assert_array_equal(user, conv.user_audio())
    lines = (folder / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[1]) == {"frame": 3, "time": 0.24, "text": " à"}

    back = Conversation.recover(folder)
    assert back.frames == conv.frames and back.pieces == conv.pieces
    assert back.model == "tiny" and back.settings == {"top_k": 250}
    assert back.started == conv.started
    np.testing.assert_array_equal(back.user_audio(), conv.user_audio())
    np.testing.assert_array_equal(back.moshi_audio(), conv.moshi_audio())
    assert (
        back.export(tmp_path / "back.srt").read_text()
        == conv.export(tmp_path / "c.srt").read_text()
    )


def test_conversations_go_to_the_data_folder_one_folder_each(tmp_path):
    first, second = Conversation.create(model="a"), Conversation.create(model="b")
    try:
        assert first.folder.parent == second.folder.parent == recordings_dir()
        assert first.folder != second.folder  # even when started within the same second
        _say(second, 0, ["Salut", "toi", "ici"], first=True)
    finally:
        first.close()
        second.close()
    found = {r.folder: r for r in list_conversations(recordings_dir())}
    assert found[second.folder].model == "b" and not found[second.folder].running
    assert found[second.folder].duration == pytest.approx(_t(9))
    assert found[second.folder].title == "Salut toi ici"
    recordings = list_conversations(recordings_dir())
    assert [r.started for r in recordings] == sorted((r.started for r in recordings), reverse=True)
    assert list_conversations(tmp_path / "nothing here") == []


def test_autosave_flushes_every_second_on_the_engine_thread(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(session, "_clock", lambda: now[0])
    conv = Conversation.create(tmp_path)
    on_disk = lambda: (conv.folder / "user.f32").stat().st_size // (FRAME_SIZE * 4)  # noqa: E731
    _say(conv, 0, ["one", "two"], first=True)
    assert on_disk() == 0  # buffered: add_frame did not write yet
    now[0] += 1.0
    conv.add_frame(6, None, None, " three")
    assert on_disk() == 7
    assert len((conv.folder / "transcript.jsonl").read_text().splitlines()) == 3
    conv.close()


def test_recover_tolerates_a_truncated_last_record(tmp_path):
    with Conversation.create(tmp_path) as conv:
        _say(conv, 0, ["one", "two", "three"], first=True)
    folder = conv.folder
    (folder / "meta.json").unlink()  # killed before the end: no "ended"; even no meta at all
    with open(folder / "user.f32", "ab") as f:
        f.write(b"\0" * (FRAME_SIZE * 4 + 6))  # a frame and a half sample more of the user
    with open(folder / "moshi.f32", "ab") as f:
        f.write(b"\0" * 1000)
    with open(folder / "transcript.jsonl", "ab") as f:
        f.write(b'{"frame": 9, "time": 0.72, "text": " fo')
    back = Conversation.recover(folder)
    assert back.frames == 9 and back.pieces == conv.pieces
    np.testing.assert_array_equal(back.moshi_audio(), conv.moshi_audio())
    assert back.started is None and back.model == ""


def test_recover_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(UserError, match="not a saved conversation"):
        Conversation.recover(tmp_path)
    (tmp_path / "meta.json").write_text('{"format": "moshi-desktop-conversation", "version": 9}')
    with pytest.raises(UserError, match="newer moshi-desktop"):
        Conversation.recover(tmp_path)


def test_create_in_an_unusable_place_is_a_user_error(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot save the conversation in"):
        Conversation.create(blocker / "conversations")


class _Disk:
    """A disk with `room` bytes left: a file the autosave opens on it (read-write, as it does)
    writes what fits, then fails with ENOSPC as on a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room

    def open(self, path: Path) -> io.BufferedWriter:
        disk = self

        class File(io.FileIO):
            def write(self, data) -> int:
                data = memoryview(data).cast("B")
                if not disk.room:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written = super().write(data[: disk.room])
                disk.room -= written
                return written

        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        return io.BufferedWriter(File(fd, "a"), buffer_size=1 << 20)


def test_a_full_disk_stops_the_autosave_but_not_the_conversation(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "_open_append", _Disk(room=0).open)
    conv = Conversation.create(tmp_path)
    _say(conv, 0, ["still", "here"], first=True)
    conv.flush()  # the operating system answers ENOSPC
    assert conv.autosave_error and "disk is full" in conv.autosave_error
    assert not conv.autosaving
    _say(conv, 6, ["and", "on"])
    conv.close()
    assert conv.text == "still here and on" and conv.frames == 12


def _both(start: int, stop: int, *convs: Conversation) -> None:
    """Add the same frames (random voices, a word every 3 frames) to each of `convs`."""
    assert (stop - start) % 3 == 0
    for conv in convs:
        _say(conv, start, [f"w{i}" for i in range(start, stop, 3)])


def test_nothing_said_or_heard_is_lost_when_the_disk_fills_up(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "_clock", lambda: 0.0)  # flushes only when asked
    frame_bytes = FRAME_SIZE * 4
    disk = _Disk(room=2 * 12 * frame_bytes + 2000 + 5 * frame_bytes)  # 12 frames and a bit
    monkeypatch.setattr(session, "_open_append", disk.open)
    conv, plain = Conversation.create(tmp_path), Conversation()  # `plain`: what was said
    _both(0, 12, conv, plain)
    conv.flush()  # these 12 frames are on disk, and only there
    assert conv.autosaving and 5 * frame_bytes < disk.room < 6 * frame_bytes
    _both(12, 30, conv, plain)
    conv.flush()  # the disk fills up with part of the user's next frames written
    assert "disk is full" in conv.autosave_error and not conv.autosaving
    assert 17 * frame_bytes < (conv.folder / "user.f32").stat().st_size < 18 * frame_bytes
    _both(30, 45, conv, plain)  # and the conversation goes on in memory
    conv.close()

    assert conv.frames == plain.frames == 45 and conv.pieces == plain.pieces
    np.testing.assert_array_equal(conv.user_audio(), plain.user_audio())
    np.testing.assert_array_equal(conv.moshi_audio(), plain.moshi_audio())
    got, want = conv.export(tmp_path / "got.wav"), plain.export(tmp_path / "want.wav")
    assert got.read_bytes() == want.read_bytes()


@pytest.mark.skipif(sys.platform == "win32", reason="Windows keeps a folder with open files")
def test_a_removed_folder_loses_nothing_either(tmp_path):
    conv, plain = Conversation.create(tmp_path), Conversation()
    _both(0, 21, conv, plain)
    conv.flush()
    shutil.rmtree(conv.folder)  # the files stay open, and readable through what the autosave holds
    _both(21, 42, conv, plain)
    conv.close()  # meta.json cannot be written: the autosave stops, the audio comes into memory
    assert conv.autosave_error and str(conv.folder) in conv.autosave_error
    np.testing.assert_array_equal(conv.user_audio(), plain.user_audio())
    np.testing.assert_array_equal(conv.moshi_audio(), plain.moshi_audio())
    assert conv.export(tmp_path / "got.json").read_text() != ""


def test_a_long_autosaved_conversation_keeps_its_audio_on_disk_only(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(session, "_clock", lambda: now[0])
    rng = np.random.default_rng(0)
    user, moshi = _frame(rng), _frame(rng)
    conv = Conversation.create(tmp_path)
    minute = 750  # frames
    tracemalloc.start()
    try:
        for index in range(10 * minute):  # ten minutes, at the pace of a conversation
            if index == minute:
                after_a_minute = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
            user[0] = moshi[0] = index  # each frame says which one it is
            conv.add_frame(index, user, moshi, " word" if index % 10 == 0 else "")
            now[0] += 0.08
        grown, peak = (m - after_a_minute for m in tracemalloc.get_traced_memory())
        tracemalloc.reset_peak()
        path = conv.export(tmp_path / "long.wav")
        export_peak = tracemalloc.get_traced_memory()[1] - after_a_minute - grown
    finally:
        tracemalloc.stop()
    # In memory, nine minutes of audio would be 9 * 11.5 MB; kept on disk, they cost nothing here
    # but the transcript's pieces and, at most, the second since the last flush.
    assert grown < 1_000_000 and peak < 2_000_000, (grown, peak)
    assert export_peak < 40_000_000, export_peak  # a minute at a time, not 10 * 11.5 MB
    assert soundfile.info(str(path)).frames == 10 * minute * FRAME_SIZE
    conv.close()
    assert conv.frames == 10 * minute and len(conv.pieces) == minute
    first_samples = np.arange(10 * minute, dtype=np.float32)
    np.testing.assert_array_equal(conv.user_audio()[::FRAME_SIZE], first_samples)


def test_reads_while_frames_are_added_see_each_frame_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "FLUSH_FRAMES", 3)  # frames move to disk while they are read
    conv = Conversation.create(tmp_path)
    count = 400

    def engine():
        for i in range(count):
            conv.add_frame(
                i, np.full(FRAME_SIZE, i, np.float32), np.full(FRAME_SIZE, -i, np.float32)
            )

    thread = threading.Thread(target=engine)
    thread.start()
    reads = 0
    while thread.is_alive() or not reads:
        user, moshi = conv.user_audio(), conv.moshi_audio()
        want = np.repeat(np.arange(len(user) // FRAME_SIZE, dtype=np.float32), FRAME_SIZE)
        np.testing.assert_array_equal(user, want)
        np.testing.assert_array_equal(moshi[: len(user)], -want)
        reads += 1
    thread.join()
    conv.close()
    assert conv.frames == count
    np.testing.assert_array_equal(conv.moshi_audio()[::FRAME_SIZE], -np.arange(count))


CHILD = """
import os, signal, sys
import numpy as np
from app.conversation.record import Conversation

conv = Conversation.create(sys.argv[1], model="tiny")
for i in range(1000):
    text = f" w{i}" if i % 4 == 0 else ""
    conv.add_frame(i, np.full(1920, i / 1000, np.float32), np.full(1920, -i / 1000, np.float32), text)
    if i % 50 == 49:
        conv.flush()
        print(f"flushed {i + 1}", flush=True)
    if i == 170:
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_autosave_survives_a_killed_process(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    flushed = int(child.stdout.splitlines()[-1].split()[1])
    assert flushed == 150
    [folder] = tmp_path.iterdir()
    back = Conversation.recover(folder)
    assert flushed <= back.frames <= 171
    want = np.repeat(np.arange(back.frames, dtype=np.float32) / 1000, FRAME_SIZE)
    np.testing.assert_array_equal(back.user_audio(), want)
    np.testing.assert_array_equal(back.moshi_audio(), -want)
    assert back.pieces == [(_t(i), f" w{i}") for i in range(0, back.frames, 4)][: len(back.pieces)]
    assert len(back.pieces) >= len(range(0, flushed, 4))
    assert json.loads((folder / "meta.json").read_text())["ended"] is None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_conversation_is_private_to_the_user(tmp_path):
    before = os.umask(0o022)  # a usual desktop's umask: files would be 0644
    try:
        parent = tmp_path / "conversations"
        conv = Conversation.create(parent)
        conv.add_frame(0, np.full(FRAME_SIZE, 0.1, np.float32), None, "hi")
        conv.close()
    finally:
        os.umask(before)
    assert _mode(parent) == 0o700 and _mode(conv.folder) == 0o700
    for path in conv.folder.iterdir():
        assert _mode(path) == 0o600, path.name


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
