"""Tests for app/cli.py: the `moshi-desktop` command line."""

import argparse
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
