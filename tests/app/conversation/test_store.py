"""app/conversation/store.py: compaction that never loses audio, expiry, privacy, reading while
compacting."""

import errno
import json
import stat
import sys
from datetime import datetime, timedelta

import numpy as np
import pytest

from app.conversation import store
from app.conversation.record import FRAME_SIZE, Conversation


def _raw(root, frames=20):
    conv = Conversation.create(root, model="m")
    for i in range(frames):
        conv.add_frame(i, np.full(FRAME_SIZE, 0.25, np.float32), None, " a" if i == 2 else "")
    conv.close()
    return conv


def test_a_full_disk_during_compaction_keeps_the_raw_audio(tmp_path, monkeypatch):
    conv = _raw(tmp_path)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_write_flac", full)
    done = store.prepare(tmp_path)
    assert done.failed and "disk is full" in done.failed[0]
    assert (conv.folder / "user.f32").exists() and not (conv.folder / "audio.flac").exists()
    assert [p.name for p in conv.folder.iterdir() if p.name.startswith(".")] == []
    [entry] = store.list_conversations(tmp_path)
    assert entry.duration == pytest.approx(1.6) and not entry.damaged
    back = store.open_conversation(tmp_path, entry.id)  # still readable, from the raw files
    np.testing.assert_array_equal(back.user_audio(), conv.user_audio())
    monkeypatch.undo()
    assert store.prepare(tmp_path).compacted == [entry.id]  # the next start finishes it
    assert not (conv.folder / "user.f32").exists()


def test_expired_conversations_are_deleted_at_start(tmp_path):
    old, new = _raw(tmp_path), None
    meta = json.loads((old.folder / "meta.json").read_text())
    meta["started"] = (datetime.now().astimezone() - timedelta(days=40)).isoformat()
    (old.folder / "meta.json").write_text(json.dumps(meta))
    new = store.new_conversation(tmp_path / "other")
    new.close()
    done = store.prepare(tmp_path, keep_days=30)
    assert done.expired == [old.folder.name] and not old.folder.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_compacted_files_stay_private(tmp_path):
    conv = store.new_conversation(tmp_path)
    conv.add_frame(0, None, None, " hi")
    conv.close()
    conv.wait_compacted()
    assert stat.S_IMODE(conv.folder.stat().st_mode) == 0o700
    for path in conv.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_running_conversation_is_neither_recovered_nor_compacted(tmp_path):
    conv = store.new_conversation(tmp_path)
    conv.add_frame(0, None, None, " hi")
    conv.flush()
    assert store.prepare(tmp_path).recovered == []
    [entry] = store.list_conversations(tmp_path)
    assert entry.running and not entry.recovered
    conv.close()
    conv.wait_compacted()
    [entry] = store.list_conversations(tmp_path)
    assert not entry.running and entry.title == "hi"
    np.testing.assert_array_equal(conv.user_audio(), np.zeros(FRAME_SIZE, np.float32))
