"""resources/ is found by the app however it is installed: from a checkout or an editable
install (where it lies), and from a wheel (as package data of `app.resources`). The bundle's copy
is checked by test_bundle.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOW = (
    "from app import appinfo; "
    "files = [appinfo.DESKTOP_FILE, appinfo.ICON_SVG] + "
    "[appinfo.icon_png(n) for n in appinfo.ICON_SIZES]; "
    "assert all(f.is_file() for f in files), files; print(appinfo.RESOURCES)"
)


def _resources_seen(cwd: Path, env: dict[str, str] | None = None) -> Path:
    out = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def test_a_checkout_reads_them_where_they_are(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert _resources_seen(tmp_path, env) == ROOT / "resources"


@pytest.mark.slow
def test_a_wheel_carries_them_beside_the_app(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, ROOT], check=True, timeout=600)
    (wheel,) = wheels.glob("moshi_desktop-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site)}
    seen = _resources_seen(tmp_path, env)
    assert seen == site / "app" / "resources"
    assert not (site / "app" / "resources" / "README.md").exists()
