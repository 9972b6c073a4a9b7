"""`moshi-desktop self-test`: a tiny model through the pipeline, the audio libraries, the window."""

import sys

import pytest

from app import cli
from app.commands import selftest


def test_self_test_passes_here(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["self-test", "--frames", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[1].rstrip(":") for line in lines[:-1]]
    assert names == ["resources", "model", "soxr", "libsndfile", "PortAudio", "Opus", "window"]
    assert all(line.split()[0] == "ok" for line in lines[:-1]), lines  # offscreen: the window too
    assert "3 frames" in lines[1]
    assert lines[-1].startswith("moshi-desktop self-test: OK (moshi-desktop ")


def test_a_failed_check_fails_the_self_test(monkeypatch, capsys) -> None:
    from app.audio.devices import PortAudioMissing

    def no_portaudio():
        raise PortAudioMissing("cannot load the PortAudio audio library")

    monkeypatch.setattr(selftest, "check_portaudio", no_portaudio)
    assert cli.main(["self-test", "--no-window"]) == 1
    out = capsys.readouterr().out
    assert "  FAIL  PortAudio: PortAudioMissing: cannot load the PortAudio audio library\n" in out
    assert "  ok    model: " in out  # the other checks still ran
    assert "  skip  window: not opened (--no-window)\n" in out
    assert out.splitlines()[-1].startswith("moshi-desktop self-test: FAILED (1 of 7 checks")


def test_without_a_display_the_window_is_skipped(monkeypatch) -> None:
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    level, message = selftest.check_window()
    assert level == "skip" and "QT_QPA_PLATFORM=offscreen" in message


def test_one_frame_is_too_few(capsys) -> None:
    assert cli.main(["self-test", "--frames", "1"]) == 2
    assert "--frames must be at least 2" in capsys.readouterr().err
