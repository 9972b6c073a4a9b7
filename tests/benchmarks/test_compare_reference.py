"""benchmarks/compare_reference.py: ours and Kyutai's original, timed on the same frames."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_reference.py"
STAGES = ("encode", "temporal", "depformer", "lm", "decode")


@pytest.fixture
def compare(monkeypatch):
    pytest.importorskip("moshi.models.loaders", reason="needs the original `moshi`")
    threads = torch.get_num_threads()
    spec = importlib.util.spec_from_file_location("compare_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    torch.set_num_threads(threads)


def test_the_original_beside_ours_on_the_tiny_model(compare, capsys):
    args = ["--config", "tiny", "--random-weights", "--frames", "5", "--warmup", "1"]
    assert compare.main([*args, "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for run in (report, report["reference"]):
        assert run["frames"] == 5
        assert 0 < run["ms_per_frame_p50"] <= run["ms_per_frame_p90"]
        for stage in STAGES:
            assert 0 < run[f"{stage}_ms_p50"] <= run["ms_per_frame_p50"], stage
    assert report["speedup"] == pytest.approx(
        report["reference"]["ms_per_frame_p50"] / report["ms_per_frame_p50"]
    )


def test_the_table_has_the_originals_columns(compare, capsys):
    args = ["--config", "tiny", "--random-weights", "--frames", "3", "--warmup", "1"]
    assert compare.main([*args, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "original p50" in out and "the original's frames per second" in out


def test_int8_is_refused(compare, capsys):
    assert compare.main(["--config", "tiny", "--random-weights", "--dtype", "int8"]) == 2
    assert "float models" in capsys.readouterr().err
