"""Build the one-folder bundle: `python packaging/build.py [--check]`.

Runs PyInstaller on packaging/moshi-desktop.spec, writing dist/moshi-desktop/ (and on macOS
dist/Moshi Desktop.app) with its work files in build/pyinstaller/; on Linux it adds
install-desktop-entry.sh to the bundle. Then it says how long the build took and how large the
bundle is. `--check` then starts the built program headless
(QT_QPA_PLATFORM=offscreen): `--version`, then `self-test` (a tiny model through the pipeline,
the audio libraries, the window). Needs the packaging extra: `pip install -e '.[packaging]'`.

tests/packaging/test_bundle.py runs the same build and checks (`pytest -m packaging`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "moshi-desktop.spec"
DESKTOP_ENTRY_SCRIPT = ROOT / "packaging" / "linux" / "install-desktop-entry.sh"
NAME = "moshi-desktop"


@dataclass(frozen=True)
class Build:
    program: Path  # the executable in the bundle
    seconds: float
    size: int  # bytes, every file in the bundle
    files: int

    def summary(self) -> str:
        return (
            f"built {self.program.parent} in {self.seconds:.0f} s: "
            f"{self.size / 1e6:.0f} MB in {self.files} files"
        )


def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) under `folder`, symbolic links not followed."""
    size = files = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            size += path.stat().st_size
            files += 1
    return size, files


def build(dist: Path, work: Path, clean: bool = False) -> Build:
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", str(SPEC)]
    command += ["--distpath", str(dist), "--workpath", str(work)] + (["--clean"] if clean else [])
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    program = dist / NAME / (NAME + (".exe" if sys.platform == "win32" else ""))
    if not program.is_file():
        raise SystemExit(f"build.py: PyInstaller finished but {program} is missing")
    if sys.platform.startswith("linux"):  # the bundle adds itself to the application menu
        shutil.copy2(DESKTOP_ENTRY_SCRIPT, program.parent)
    return Build(program, seconds, *folder_size(program.parent))


def headless_env() -> dict[str, str]:
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


def run_program(program: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the built program headless, with its output captured."""
    return subprocess.run(
        [str(program), *args],
        env=headless_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check(program: Path) -> bool:
    """`--version` and `self-test` of the built program; prints both, True if both passed."""
    passed = True
    for args in (["--version"], ["self-test"]):
        start = time.perf_counter()
        result = run_program(program, *args)
        seconds = time.perf_counter() - start
        print(f"$ QT_QPA_PLATFORM=offscreen {program} {' '.join(args)}  ({seconds:.1f} s)")
        print((result.stdout + result.stderr).rstrip())
        passed &= result.returncode == 0
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="then run --version and self-test")
    parser.add_argument("--clean", action="store_true", help="empty PyInstaller's caches first")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build" / "pyinstaller", help="default: build/"
    )
    args = parser.parse_args(argv)
    result = build(args.dist, args.work, clean=args.clean)
    print(result.summary())
    if args.check and not check(result.program):
        print("build.py: the built program failed its checks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
