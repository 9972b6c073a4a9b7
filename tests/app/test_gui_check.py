"""app/gui_check.py: a missing X11 library is named with its package by doctor, self-test and
the launcher, and never crashes the process (Qt aborts the one its xcb plugin fails in)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import gui_check

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 on Linux")


@pytest.mark.parametrize(
    ("library", "package"),
    [
        ("libxcb-icccm.so.4", "libxcb-icccm4"),
        ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
        ("libxcb-cursor.so.0", "libxcb-cursor0"),
        ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
        ("libX11-xcb.so.1", "libx11-xcb1"),
    ],
)
def test_a_library_is_named_by_its_package(library, package):
    assert gui_check.packages_for([library]) == [package]


@pytest.fixture
def no_icccm(tmp_path, monkeypatch):
    """An `ldd` on PATH that says libxcb-icccm.so.4 is not found, as on a Debian 12 desktop."""
    fake = tmp_path / "bin" / "ldd"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho '\tlibxcb-icccm.so.4 => not found'\necho '\tlibc.so.6 => /lib/libc.so.6'\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("QT_QPA_PLATFORM", None)  # X11, as a desktop
    env.pop("WAYLAND_DISPLAY", None)
    env["DISPLAY"] = ":99"
    return env


def _run(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_launcher_names_the_packages_instead_of_crashing(no_icccm):
    result = _run(no_icccm)
    assert result.returncode == 1, result.stderr
    assert "sudo apt-get install libxcb-icccm4" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
def test_self_test_fails_the_window_without_crashing(no_icccm):
    result = _run(no_icccm, "self-test", "--frames", "2")
    assert result.returncode == 1
    window = [line for line in result.stdout.splitlines() if "window" in line.lower()]
    assert window and "FAIL" in window[0] and "libxcb-icccm4" in window[0]


def test_doctor_fails_the_window_with_the_packages(no_icccm, tmp_path):
    result = _run(no_icccm, "doctor", "--model", str(tmp_path / "none"))
    line = next(line for line in result.stdout.splitlines() if "libxcb-icccm" in line)
    assert line.split()[0] == "FAIL" and "sudo apt-get install libxcb-icccm4" in line


def test_the_readme_lists_every_package_the_x11_plugin_needs():
    install = re.search(r"apt-get install --no-install-recommends ([^`]*?)\n```", README)
    listed = set(install.group(1).replace("\\", " ").split())
    assert set(gui_check.XCB_PACKAGES) <= listed


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="Debian's packages")
def test_with_the_readmes_packages_nothing_is_missing():
    """Where the README's packages are installed (CI installs exactly them), Qt's X11 plugin
    finds every library it needs."""
    for package in gui_check.XCB_PACKAGES:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )
        if "install ok installed" not in status.stdout:
            pytest.skip(f"{package} is not installed here")
    assert gui_check.missing_libraries() == []


def test_the_launcher_says_when_the_display_cannot_be_reached(tmp_path):
    """An X display that is not there (a closed session, a wrong DISPLAY) is a message, not Qt's
    abort."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":97"  # no X server answers there
    if gui_check.missing_libraries():
        pytest.skip("the X libraries are missing here: the launcher says that first")
    result = _run(env)
    assert result.returncode == 1, result.stderr
    assert "cannot connect to the X display ':97'" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
