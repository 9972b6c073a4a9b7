"""Tests for app/cli.py: the `moshi-desktop` command line."""

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest

import app
from app import cli
from app.errors import UsageError, UserError

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_name_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"moshi-desktop {app.__version__}\n"


def test_version_is_the_one_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as f:
        expected = tomllib.load(f)["project"]["version"]
    try:
        installed = version("moshi-desktop")
    except PackageNotFoundError:
        pytest.skip("moshi-desktop is not installed (pip install -e .)")
    assert installed == expected, "installed metadata is stale: run pip install -e . again"
    assert app.__version__ == expected


def test_no_subcommand_opens_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.gui

    opened = []
    monkeypatch.setattr(app.gui, "main", lambda: opened.append(True) or 0)
    assert cli.main([]) == 0 and opened == [True]


def test_subcommand_runs_its_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", (_add_fake("talk", 0),))
    assert cli.main(["talk"]) == 0


@pytest.mark.parametrize(("error", "status"), [(UserError, 1), (UsageError, 2)])
def test_user_errors_are_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: type[UserError],
    status: int,
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", (_add_fake("talk", error("No microphone found.")),))
    assert cli.main(["talk"]) == status
    captured = capsys.readouterr()
    assert captured.err == "moshi-desktop: error: No microphone found.\n"
    assert captured.out == ""


def test_bad_arguments_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--no-such-option"]) == 2
    assert "moshi-desktop: error:" in capsys.readouterr().err


def test_python_dash_m_app_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"moshi-desktop {app.__version__}\n"


def _add_fake(name: str, outcome: int | Exception) -> Callable[[Any], None]:
    """A registration function for `cli.COMMANDS` whose handler returns or raises `outcome`."""

    def run(args: argparse.Namespace) -> int:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def register(subparsers: Any) -> None:
        subparsers.add_parser(name).set_defaults(handler=run)

    return register


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["talk", "in.wav", "out.wav", "--temperature", "-3"], "--temperature"),
        (["talk", "in.wav", "out.wav", "--temperature", "nan"], "--temperature"),
        (["talk", "in.wav", "out.wav", "--trailing-silence", "-1"], "--trailing-silence"),
        (["talk", "in.wav", "out.wav", "--top-k", "5000"], "--top-k"),
        (["chat", "--text-top-k", "40000"], "--text-top-k"),
        (["chat", "--text-top-k", "abc-5"], "--text-top-k"),
        (["chat", "--seed", "-7"], "--seed"),
        (["chat", "--trailing-silence", "-1"], "--trailing-silence"),
    ],
)
def test_wrong_values_are_usage_errors(argv, flag, capsys) -> None:
    """Exit 2 with argparse's message, before anything is read or loaded."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and f"argument {flag}" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["talk", "chat"])
def test_help_shows_each_default(command, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at hyphens otherwise
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for default in ("default 0.8", "default 0.7", "default 250", "default 25", "default 5"):
        assert default in out, default
    assert "kyutai/moshiko-pytorch-bf16" in out and "auto, the default" in out


def test_download_offline_does_not_suggest_download(capsys) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py
    assert cli.main(["download", "--model", "kyutai/not-in-the-cache"]) == 1
    err = capsys.readouterr().err
    assert "not in the cache" in err and "moshi-desktop download" not in err
    assert "run it again" in err


def test_doctor_without_model_checks_the_windows_choice(tiny_checkpoint, capsys) -> None:
    from app.ui.settings import Settings

    settings = Settings()  # the user's, in the tests' own config folder (tests/conftest.py)
    before = settings.model_source
    settings.model_source = str(tiny_checkpoint)
    settings.qsettings.sync()
    try:
        assert cli.main(["doctor"]) in (0, 1)
    finally:
        settings.model_source = before
        settings.qsettings.sync()
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"Model  {tiny_checkpoint}"


def test_a_notice_in_chat_waits_for_the_end_of_a_word(capsys) -> None:
    from app.commands.chat import StatusLine

    status = StatusLine()
    status.text(" Hel")
    status.say("This machine cannot run Moshi in real time.")
    status.text("lo")
    assert capsys.readouterr() == (" Hello", "")  # nothing on stderr yet: the word goes on
    status.text(" world")
    out, err = capsys.readouterr()
    assert out == "\nworld" and err == "This machine cannot run Moshi in real time.\n"
