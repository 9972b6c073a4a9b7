"""`moshi-desktop bench`: the whole pipeline timed per frame, through the real command line."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from app.commands import bench

STAGES = ("encode", "temporal", "depformer", "lm", "decode")
KEYS = {
    "ms_per_frame_p50",
    "ms_per_frame_p90",
    "ms_per_frame_p99",
    "rtf",
    "peak_host_mb",
    "rss_mb",
    *(f"{stage}_ms_p50" for stage in STAGES),
}


@pytest.fixture(autouse=True)
def keep_threads():
    """--threads sets torch's threads for the process: give them back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    status = main(["bench", *args, "--frames", "5", "--warmup", "1", "--threads", "1", "--json"])
    out = capsys.readouterr().out
    assert status == 0
    return json.loads(out.strip().splitlines()[-1])


def check_timings(report: dict, frames: int = 5) -> None:
    assert KEYS <= set(report)
    assert report["frames"] == frames
    total = report["ms_per_frame_p50"]
    assert 0 < total <= report["ms_per_frame_p90"] <= report["ms_per_frame_p99"]
    for stage in STAGES:  # each frame's total holds each stage, so its median does too
        assert 0 < report[f"{stage}_ms_p50"] <= total, stage
    assert report["temporal_ms_p50"] <= report["lm_ms_p50"]
    assert report["depformer_ms_p50"] <= report["lm_ms_p50"]
    assert report["rtf"] == pytest.approx(total / 80)
    assert report["peak_host_mb"] > 0


@pytest.mark.slow
def test_tiny_random_model_as_json(capsys):
    report = run_json(capsys, "--config", "tiny", "--random-weights")
    check_timings(report)
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    assert report["model"] == "random tiny" and report["lm_parameters"] < 1e6
    assert report["lm_weight_bytes_per_frame"] > 0 and report["lm_bandwidth_gb_s"] > 0
    assert "reference" not in report


@pytest.mark.slow
def test_a_personaplex_times_its_prompt_phase_too(capsys):
    """The voice and persona before the user speaks: from the recording, from the voice's
    saved state, and from the state kept after the prompt (much faster than running it)."""
    report = run_json(capsys, "--config", "tiny", "--random-weights", "--personaplex")
    assert report["model"] == "random tiny PersonaPlex"
    prompt = report["prompt"]
    assert prompt["steps"]["voice"] == 125 and prompt["steps"]["silence"] == 12
    assert prompt["steps"]["persona"] > 10
    assert prompt["prompt_seconds"] == pytest.approx(0.08 * sum(prompt["steps"].values()))
    assert prompt["from_recording_ms"] > 0 and prompt["from_saved_voice_ms"] > 0
    assert prompt["from_kept_state_ms"] < prompt["from_saved_voice_ms"] / 10


@pytest.mark.slow
def test_small_random_model_with_the_full_size_mimi(capsys):
    report = run_json(capsys, "--config", "small", "--random-weights")
    check_timings(report)
    assert report["lm_parameters"] == 92_356_608
    assert report["mimi_parameters"] > 70e6  # Kyutai's Mimi


def test_bench_has_no_comparison_with_the_original(capsys):
    """The side-by-side comparison is benchmarks/compare_reference.py's (tests/benchmarks/)."""
    assert main(["bench", "--compare-reference"]) == 2


def test_a_model_folder_with_the_table(capsys, tiny_checkpoint):
    status = main(
        ["bench", "--model", str(tiny_checkpoint), "--frames", "3", "--warmup", "1"]
        + ["--threads", "1"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert str(tiny_checkpoint) in out.splitlines()[0]
    for label in ("Mimi encode", "temporal transformer", "depformer", "Mimi decode", "total"):
        assert label in out
    assert "real-time factor" in out and "original" not in out


def test_moshi_7b_is_refused_on_the_cpu(capsys, monkeypatch):
    import model.pipeline

    monkeypatch.setattr(model.pipeline, "resolve_device", lambda name: torch.device("cpu"))
    assert main(["bench", "--config", "7b", "--random-weights"]) == 1
    err = capsys.readouterr().err
    assert "for a GPU" in err and "--device cpu" in err

    # Forced onto the CPU, it still needs the RAM.
    monkeypatch.setattr("app.commands.doctor.available_memory", lambda device: (8e9, "the system"))
    assert main(["bench", "--config", "7b", "--random-weights", "--device", "cpu"]) == 1
    assert "GB of RAM" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "small"],  # random weights must be asked for
        ["--random-weights"],
        ["--config", "tiny", "--random-weights", "--model", "kyutai/moshiko-pytorch-bf16"],
        ["--config", "tiny", "--random-weights", "--frames", "0"],
        ["--personaplex"],  # it needs --config
    ],
)
def test_usage_errors(capsys, args):
    assert main(["bench", *args]) == 2
    assert "moshi-desktop: error:" in capsys.readouterr().err


def test_the_7b_config_is_moshi_7b():
    from model.config import CheckpointConfig, LMConfig
    from model.tiny import TINY_LM

    assert CheckpointConfig.from_dict({**TINY_LM, **bench.MOSHI_7B_LM}).lm == LMConfig()


def test_random_checkpoint_with_a_mimi_config_loads_as_a_released_one(tmp_path):
    from model.pipeline import Pipeline
    from model.tiny import TINY_LM, TINY_MIMI, write_random_checkpoint

    folder = write_random_checkpoint(tmp_path, TINY_LM, TINY_MIMI)
    pipeline = Pipeline.load(folder, "cpu", seed=0)
    audio = bench.synthetic_input(3)
    results = [pipeline.step(frame) for frame in audio]
    assert results[0].pcm is None and results[-1].pcm.shape == (1920,)
    assert pipeline.lm.text_emb.weight.dtype == torch.float32  # bfloat16 on disk, run in fp32


def test_synthetic_input_is_fixed_and_voice_like():
    audio = bench.synthetic_input(4)
    assert audio.shape == (4, 1920) and audio.dtype == "float32"
    assert (audio == bench.synthetic_input(4)).all()
    assert 0.05 < float(abs(audio).max()) <= 1


def test_with_cuda_graphs_both_ways_are_timed(capsys, monkeypatch):
    """Where CUDA graphs run (here a stand-in capture that re-runs the call, on the CPU), the
    bench times the pipeline without them, stage by stage, and then with them."""
    from model import pipeline
    from model.graphs import Graphed

    monkeypatch.setattr(pipeline, "graphs_wanted", lambda device: True)
    monkeypatch.setattr(Graphed, "_cuda_capture", lambda self, record: record)
    report = run_json(capsys, "--config", "tiny", "--random-weights")
    assert report["cuda_graphs"] is True
    check_timings(report["eager"])
    assert 0 < report["lm_ms_p50"] <= report["ms_per_frame_p50"]
    assert report["temporal_ms_p50"] is None  # one graph: not told apart

    monkeypatch.setattr(pipeline, "graphs_wanted", lambda device: True)
    assert main(["bench", "--config", "tiny", "--random-weights", "--frames", "3"]) == 0
    assert "without CUDA graphs" in capsys.readouterr().out
    report = run_json(capsys, "--config", "tiny", "--random-weights", "--no-cuda-graphs")
    assert report["cuda_graphs"] is False and "eager" not in report
