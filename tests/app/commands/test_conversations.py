"""`moshi-desktop conversations`: the kept conversations through the real command line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from app.conversation.record import FRAME_SIZE
from app.conversation.store import new_conversation

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def home(tmp_path):
    """A data and a config folder of the test's own, for the subprocesses."""
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    return env, tmp_path / "data" / "moshi-desktop" / "conversations"


def cli(env, *args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "app", "conversations", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
    )


def _keep(root, words, frames=20, model="tiny"):
    conv = new_conversation(root, model=model, settings={"seed": 1, "top_k": 250})
    rng = np.random.default_rng(len(words))
    for i in range(frames):
        text = f" {words[i]}" if i < len(words) else ""
        conv.add_frame(i, rng.normal(0, 0.1, FRAME_SIZE), rng.normal(0, 0.1, FRAME_SIZE), text)
    conv.close()
    conv.wait_compacted()
    return conv


def test_list_show_search_export_delete(home, tmp_path):
    env, root = home
    first = _keep(root, ["Hello", "there", "my", "friend"])
    time.sleep(1.01)  # another second: another folder name
    second = _keep(root, ["Bonjour", "les", "amis"], model="other")
    assert {p.name for p in second.folder.iterdir()} == {
        "meta.json",
        "audio.flac",
        "peaks.u8",
        "transcript.jsonl",
    }

    out = cli(env, "list", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [c["id"] for c in listed] == [second.folder.name, first.folder.name]
    assert listed[0]["model"] == "other" and listed[0]["recovered"] is False
    assert listed[0]["duration"] == pytest.approx(1.6) and listed[0]["title"] == "Bonjour les amis"
    assert listed[0]["started"].startswith(str(second.started.year))
    table = cli(env, "list").stdout
    assert "Hello there my friend" in table and table.index("Bonjour") < table.index("Hello")

    shown = cli(env, "show", first.folder.name)
    assert shown.returncode == 0 and "[0:00] Hello there my friend" in shown.stdout
    assert "seed: 1" in shown.stdout and "backend: local" in shown.stdout

    found = cli(env, "search", "FRIEND").stdout.splitlines()
    assert found and all(line.startswith(first.folder.name) for line in found)
    assert "friend" in found[-1]

    paths = [
        tmp_path / f"out.{k}" for k in ("wav", "flac", "ogg", "txt", "md", "json", "srt", "vtt")
    ]
    out = cli(env, "export", first.folder.name, *map(str, paths))
    assert out.returncode == 0, out.stderr
    stereo, rate = soundfile.read(paths[1], dtype="float32")
    assert rate == 24000 and stereo.shape == (20 * FRAME_SIZE, 2)
    np.testing.assert_allclose(stereo[:, 0], first.user_audio(), atol=2**-23)
    assert soundfile.info(str(paths[2])).format == "OGG"
    assert "Hello there my friend" in paths[3].read_text()

    refused = cli(env, "delete", second.folder.name)  # no terminal, no --yes
    assert refused.returncode == 1 and "--yes" in refused.stderr
    unknown = cli(env, "delete", second.folder.name, "nope", "--yes")
    assert unknown.returncode == 1 and "nope" in unknown.stderr
    assert second.folder.is_dir()
    assert cli(env, "delete", second.folder.name, "--yes").returncode == 0
    assert not second.folder.exists() and first.folder.is_dir()


def test_failures_are_one_line_and_change_nothing(home, tmp_path):
    env, root = home
    conv = _keep(root, ["one", "two"])
    for args in (
        ("show", "nope"),
        ("export", "nope", str(tmp_path / "a.txt")),
        ("export", conv.folder.name, str(tmp_path / "a.txt"), str(tmp_path / "no" / "b.wav")),
        ("export", conv.folder.name, str(tmp_path / "a.mp3")),
    ):
        out = cli(env, *args)
        assert out.returncode == 1, args
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "a.txt").exists()  # the later path was bad: nothing written


def test_damaged_and_older_folders_are_listed(home):
    env, root = home
    good = _keep(root, ["fine"])
    cut = root / "2020-01-01_00-00-00"
    cut.mkdir()
    (cut / "meta.json").write_text('{"format": "moshi-desktop-conversation", "ver')
    empty = root / "2020-01-02_00-00-00"
    empty.mkdir()
    (empty / "meta.json").write_text('{"format": "moshi-desktop-conversation", "version": 2}')
    (root / "stranger.txt").write_text("not ours")
    (root / "some folder").mkdir()
    # format version 1, as earlier versions wrote it: raw float32 tracks, settings only
    old = root / "2021-05-05_10-00-00"
    old.mkdir()
    (old / "meta.json").write_text(
        json.dumps(
            {
                "format": "moshi-desktop-conversation",
                "version": 1,
                "started": "2021-05-05T10:00:00+02:00",
                "ended": "2021-05-05T10:00:01+02:00",
                "model": "kyutai/moshiko-pytorch-bf16",
                "settings": {"dtype": "bfloat16", "seed": 3, "temperature": 0.8},
                "frames": 10,
            }
        )
    )
    audio = np.linspace(-0.5, 0.5, 10 * FRAME_SIZE, dtype="<f4")
    audio.tofile(old / "user.f32")
    (-audio).tofile(old / "moshi.f32")
    (old / "transcript.jsonl").write_text('{"frame": 2, "time": 0.16, "text": " Old times"}\n')

    out = cli(env, "list", "--json")
    assert out.returncode == 0, out.stderr
    listed = {c["id"]: c for c in json.loads(out.stdout)}
    assert set(listed) == {good.folder.name, cut.name, empty.name, old.name}
    assert "cut short" in listed[cut.name]["damaged"]
    assert "audio is missing" in listed[empty.name]["damaged"]
    assert listed[old.name]["title"] == "Old times" and listed[old.name]["recovered"] is False
    assert listed[old.name]["duration"] == pytest.approx(0.8)
    assert not (old / "user.f32").exists() and (old / "audio.flac").exists()
    meta = json.loads((old / "meta.json").read_text())
    assert meta["version"] == 2 and meta["dtype"] == "bfloat16" and meta["seed"] == 3
    out = cli(env, "show", cut.name)
    assert out.returncode == 1 and "damaged" in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_chat_is_recovered_by_the_next_list(home, tiny_checkpoint, tmp_path):
    env, root = home
    t = np.arange(30 * 24000) / 24000
    voice = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    soundfile.write(tmp_path / "in.wav", voice, 24000)
    chat = subprocess.Popen(
        [sys.executable, "-m", "app", "chat", "--model", str(tiny_checkpoint), "--realtime",
         "--input-file", str(tmp_path / "in.wav"), "--seed", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        saved = 0
        while saved < 30 and time.monotonic() < deadline:  # 2.4 s of audio on disk
            time.sleep(0.1)
            tracks = list(root.glob("*/user.f32"))
            saved = tracks[0].stat().st_size // (FRAME_SIZE * 4) if tracks else 0
        assert saved >= 30, chat.stderr.read1().decode() if chat.poll() is not None else saved
        heard = np.fromfile(tracks[0], "<f4")[: saved * FRAME_SIZE]  # what was saved by then
        lines_before = (tracks[0].parent / "transcript.jsonl").read_text().count("\n")
    finally:
        chat.send_signal(signal.SIGKILL)
        chat.wait()
    [folder] = root.iterdir()
    assert not json.loads((folder / "meta.json").read_text())["ended"]  # killed: no clean end

    out = cli(env, "list", "--json")
    assert out.returncode == 0 and "1 conversation that was cut short was recovered" in out.stderr
    [entry] = json.loads(out.stdout)
    assert entry["recovered"] is True and entry["id"] == folder.name
    assert entry["duration"] >= saved * 0.08
    stereo, _ = soundfile.read(folder / "audio.flac", dtype="float32")
    assert len(stereo) == round(entry["duration"] * 24000)
    np.testing.assert_allclose(stereo[: saved * FRAME_SIZE, 0], heard, atol=2**-23)
    assert np.abs(heard).max() > 0.2  # the voice, not silence
    assert (folder / "transcript.jsonl").read_text().count("\n") >= lines_before
    assert not (folder / "user.f32").exists()
    again = json.loads(cli(env, "list", "--json").stdout)
    assert again == [entry]  # recovered once
