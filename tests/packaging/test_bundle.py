"""The Linux bundle itself: build it with PyInstaller, then start it headless.

Run with `pytest -m packaging tests/packaging` (needs `pip install -e '.[packaging]'`): the build
takes about 1 to 2 minutes on the project's 2-core machine and the bundle about 900 MB, in a
temporary folder removed afterwards. packaging/README.md has the measured numbers.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import app
from app import appinfo

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux bundle"),
]


@pytest.fixture(scope="module")
def built(load_packaging):
    pytest.importorskip("PyInstaller", reason="install the packaging extra")
    build = load_packaging("build")
    with tempfile.TemporaryDirectory(prefix="moshi-desktop-bundle-") as folder:
        result = build.build(Path(folder) / "dist", Path(folder) / "build")
        print(result.summary())
        yield result


@pytest.fixture(scope="module")
def run(load_packaging, built):
    def run(*args: str) -> subprocess.CompletedProcess:
        return load_packaging("build").run_program(built.program, *args)

    return run


def test_the_bundle_prints_its_version(run) -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"moshi-desktop {app.__version__}\n"


def test_the_bundle_passes_its_self_test_headless(run) -> None:
    result = run("self-test")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("moshi-desktop self-test: OK"), output
    checks = [line.split()[0] for line in lines[:-1]]
    assert checks and set(checks) == {"ok"}, output  # the window too: none skipped


def test_the_bundle_carries_its_data_and_not_tests(built) -> None:
    internal = built.program.parent / "_internal"
    resources = internal / "app" / "resources"
    assert (resources / appinfo.DESKTOP_FILE.name).is_file()
    for size in appinfo.ICON_SIZES:
        assert (resources / appinfo.icon_png(size).relative_to(appinfo.RESOURCES)).is_file()
    assert (internal / "libportaudio.so.2").is_file()
    assert not (internal / "libasound.so.2").exists()
    assert not (internal / "torch" / "test").exists()
    platforms = internal / "PySide6" / "Qt" / "plugins" / "platforms"
    for plugin in ("libqoffscreen.so", "libqxcb.so", "libqwayland.so"):
        assert (platforms / plugin).is_file()


def test_the_bundle_adds_itself_to_the_menu(built, tmp_path) -> None:
    script = built.program.parent / "install-desktop-entry.sh"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=60)
    entry = tmp_path / "applications" / appinfo.DESKTOP_FILE.name
    assert f'Exec="{built.program}"' in entry.read_text().splitlines()
    assert (
        tmp_path / "icons" / appinfo.icon_png(48).relative_to(appinfo.ICON_THEME.parent)
    ).is_file()
    if shutil.which("desktop-file-validate"):
        subprocess.run(["desktop-file-validate", str(entry)], check=True, timeout=60)
