"""A model folder whose config.json (or Mimi's config) holds a wrong value, or names a file outside
the folder, through the real command line (`python -m app`, as a user runs it): one line that
names the key and its value, exit status 1, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[3]
PROG = "moshi-desktop: error: cannot load the model: "


def moshi_desktop(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *map(str, argv)],
        cwd=ROOT,
        env=os.environ,  # tests/conftest.py: offline, temporary settings, data and log folders
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def model(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of the tiny checkpoint, to spoil."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def spoil(folder: Path, file: str, key: str, value: object) -> None:
    """Set `key` ("section.key" in Mimi's config) of `file` in `folder` to `value`."""
    raw = json.loads((folder / file).read_text())
    section, _, key = key.rpartition(".")
    (raw[section] if section else raw)[key] = value
    (folder / file).write_text(json.dumps(raw))


def talk_fails(folder: Path, tmp_path: Path) -> str:
    """Run `talk` on `folder`: it must fail as a user error, with one line and no output
    written. Returns that line."""
    soundfile.write(tmp_path / "in.wav", np.zeros(4800, np.float32), 24000)
    out = tmp_path / "out"
    out.mkdir()
    result = moshi_desktop("talk", tmp_path / "in.wav", out / "answer.wav", "--model", folder)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PROG), result.stderr
    assert list(out.iterdir()) == []
    return lines[0].removeprefix(PROG)


BAD_VALUES = [  # the six of the issue first
    ("config.json", "dim", "32", "dim = '32' must be a whole number of 1 or more"),
    ("config.json", "context", 0, "context = 0 must be a whole number of 1 or more"),
    ("config.json", "hidden_scale", "big", "hidden_scale = 'big' must be a number above 0"),
    ("config.json", "depformer_num_heads", 0, "depformer_num_heads = 0 must be a whole number"),
    ("config.json", "num_layers", -1, "num_layers = -1 must be a whole number of 1 or more"),
    ("config.json", "card", 0, "card = 0 must be a whole number of 1 or more"),
    ("config.json", "num_heads", 3, "dim = 32 must be a multiple of num_heads = 3"),
    ("config.json", "delays", [0, 1], "delays = [0, 1] must be a list of 17 whole numbers"),
    ("config.json", "existing_text_padding_id", 999, "existing_text_padding_id = 999 must be"),
    ("config.json", "lm_gen_config", {"temp": "hot"}, "lm_gen_config.temp = 'hot' must be"),
    ("config.json", "tokenizer_name", 7, "tokenizer_name = 7 must be a file name"),
    ("mimi_config.json", "transformer.context", 1, "transformer.context = 1 must be at least 2"),
    ("mimi_config.json", "seanet.ratios", [8, 6, 5, 3], "seanet.ratios = [8, 6, 5, 3] give a"),
    ("mimi_config.json", "quantizer.n_q", 4, "quantizer.n_q = 4 is fewer than the 8 codebooks"),
]


def first_fast(cases: list, fast: int = 1) -> list:
    """Each case starts `python -m app`: all but the first `fast` are marked slow, so that the
    quick loop (`-m "not slow"`) keeps one of each kind."""
    marked = [pytest.param(*c, marks=pytest.mark.slow) for c in cases[fast:]]
    return [pytest.param(*c) for c in cases[:fast]] + marked


@pytest.mark.parametrize(("file", "key", "value", "message"), first_fast(BAD_VALUES))
def test_talk_names_a_wrong_value(model, tmp_path, file, key, value, message):
    spoil(model, file, key, value)
    assert talk_fails(model, tmp_path).startswith(f"{model / file}: {message}")


@pytest.mark.parametrize(
    ("text", "message"),
    first_fast(
        [
            ("[1, 2]", "it holds [1, 2], not a JSON object ({...})"),
            ('{"dim": 32', "cannot be used: it is not valid JSON"),
        ]
    ),
)
def test_talk_names_a_config_json_that_is_not_an_object(model, tmp_path, text, message):
    (model / "config.json").write_text(text)
    assert message in talk_fails(model, tmp_path)


@pytest.mark.parametrize(
    "name", first_fast([("file:///dev/zero",), ("../../x.safetensors",), ("/dev/zero",)])
)
def test_talk_refuses_a_file_name_outside_the_folder(model, tmp_path, name):
    spoil(model, "config.json", "mimi_name", name)
    assert talk_fails(model, tmp_path) == (
        f"config.json in {model} names mimi_name = {name!r}, which is outside the model's "
        "folder: file names must stay inside it"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    first_fast(
        [
            ("dim", "32", "config.json: dim = '32' must be a whole number of 1 or more"),
            ("mimi_name", "file:///dev/zero", "names mimi_name = 'file:///dev/zero', which is out"),
        ],
        fast=0,
    ),
)
def test_doctor_reports_the_wrong_value(model, key, value, message):
    spoil(model, "config.json", key, value)
    result = moshi_desktop("doctor", "--model", model)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    failures = [line.strip() for line in result.stdout.splitlines() if "FAIL" in line]
    assert len(failures) == 1 and message in failures[0], result.stdout
