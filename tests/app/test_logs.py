"""app/logs.py through the real entry points: tracebacks go to the log file, the terminal gets
one line that says where it is, --verbose shows debug lines, doctor names the file."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app import cli, logs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def log_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield tmp_path / "state" / "moshi-desktop" / "log" / logs.FILE_NAME
    logs.setup()  # back to the session's own log folder, handlers closed


def test_an_unexpected_error_is_one_line_and_its_traceback_is_logged(log_file, monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, _register("broken", broken)))
    assert cli.main(["broken"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "ZeroDivisionError: a bug" in err and str(log_file) in err
    logged = log_file.read_text()
    assert "Traceback" in logged and "raise ZeroDivisionError" in logged
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


def test_verbose_prints_debug_lines(log_file, monkeypatch, capsys):
    def chatty(args):
        logging.getLogger("app.test").debug("a debug line")
        return 0

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, _register("chatty", chatty)))
    assert cli.main(["chatty"]) == 0
    assert "a debug line" not in capsys.readouterr().err
    assert cli.main(["--verbose", "chatty"]) == 0
    assert "a debug line" in capsys.readouterr().err
    assert "a debug line" in log_file.read_text()


def test_a_failing_conversation_logs_its_traceback(log_file, start_engine):
    from app.engine.messages import ErrorEvent, Start

    logs.setup()

    class Broken:
        def __call__(self, config):
            raise RuntimeError("CUDA error: something broke")

    engine = start_engine(Broken(), lambda config: None)
    engine.send(Start())
    while not isinstance(event := engine.events.get(timeout=20), ErrorEvent):
        pass
    assert event.message == "RuntimeError: CUDA error: something broke"
    engine.close()
    for handler in logging.getLogger().handlers:
        handler.flush()
    logged = log_file.read_text()
    assert "Traceback" in logged and "CUDA error: something broke" in logged


@pytest.mark.slow
def test_doctor_names_the_log_file(tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "app", "doctor", "--model", str(tmp_path / "none")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert f"log file: {tmp_path / 'moshi-desktop' / 'log' / logs.FILE_NAME}" in out.stdout


def _register(name, handler):
    def register(subparsers):
        subparsers.add_parser(name).set_defaults(handler=handler)

    return register
