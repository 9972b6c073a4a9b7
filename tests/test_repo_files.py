"""README.md and .ci/run describe the same setup: the same test command, the same system packages."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_RUN = ROOT / ".ci" / "run"


def _readme_command(*needles: str) -> str:
    lines = [line for line in README.splitlines() if line.startswith("python3 -m venv .venv")]
    matches = [line for line in lines if all(n in line for n in needles)]
    assert len(matches) == 1, f"README.md should have one set-up line with {needles}: {matches}"
    return matches[0]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = _readme_command("pytest")
    ci_lines = CI_RUN.read_text(encoding="utf-8").splitlines()
    assert any(line.startswith(command + " ||") for line in ci_lines), (
        "the test command in .ci/run differs from README.md's: keep them identical"
    )


def test_readme_run_command_starts_the_app() -> None:
    assert _readme_command("moshi-desktop").endswith("&& .venv/bin/moshi-desktop")


def test_ci_installs_the_system_packages_the_readme_lists() -> None:
    ci = CI_RUN.read_text(encoding="utf-8")
    ci_packages = set(re.search(r"packages=\(([^)]*)\)", ci).group(1).split())
    install = re.search(r"apt-get install --no-install-recommends ([^`]*?)\n```", README)
    assert install is not None, "README.md should show one apt-get install command"
    # python3-venv and g++: CI installs them only where they are missing
    readme_packages = set(install.group(1).replace("\\", " ").split()) - {"python3-venv", "g++"}
    assert ci_packages == readme_packages


def test_ci_run_is_executable() -> None:
    assert os.access(CI_RUN, os.X_OK)


def test_every_package_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists its packages (resources/ installs as `app.resources`): a new folder
    of code must be added there, or a wheel would leave it out."""
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("app", "model")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == folders | set(setuptools["package-dir"])
