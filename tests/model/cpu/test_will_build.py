"""model.cpu.native.will_build: whether loading will compile our CPU kernel first (seconds), so
that the window and chat can say so while they load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ASK = "from model.cpu import native; print(native.will_build())"


def _ask(env: dict[str, str], code: str = ASK) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
@pytest.mark.slow
def test_a_new_machine_builds_once(tmp_path):
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env.pop("NO_NATIVE_KERNEL", None)
    assert _ask(env) == "True"  # an empty cache: the first load builds
    build = "from model.cpu import native; native.status(); print(native.will_build())"
    assert _ask(env, build) == "False"  # tried in this process
    assert _ask(env) == "False"  # built for this machine: the next process loads it


@pytest.mark.slow
def test_nothing_is_built_where_it_is_turned_off(tmp_path):
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "NO_NATIVE_KERNEL": "1"}
    assert _ask(env) == "False"
