"""The local backend's advice before a download (app.engine.local.download_advice)."""

import pytest

from app.engine.fetch import CheckResult, FileInfo
from app.engine.local import download_advice
from app.engine.run import RunConfig


def _check(size: int | None) -> CheckResult:
    return CheckResult("kyutai/moshiko-pytorch-bf16", False, files=(FileInfo("m", size),))


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_a_full_size_model_on_the_cpu_points_to_a_server(device, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: False)
    advice = download_advice(RunConfig(model="m", device=device), _check(15_400_000_000))
    assert "slower than real time" in advice and "On a server" in advice
    assert ("no GPU" in advice) == (device == "auto")


def test_no_advice_for_a_small_model_an_unknown_size_or_a_gpu(monkeypatch):
    cpu = RunConfig(model="m", device="cpu")
    assert download_advice(cpu, _check(300_000_000)) == ""
    assert download_advice(cpu, _check(None)) == ""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert download_advice(RunConfig(model="m", device="auto"), _check(15_400_000_000)) == ""


def test_a_gpu_asked_for_and_missing_says_so(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    advice = download_advice(RunConfig(model="m", device="cuda"), _check(15_400_000_000))
    assert "CUDA" in advice and advice.endswith(".")


def test_the_loading_note_says_a_personaplex_takes_in_its_voice_and_persona():
    from app.engine.run import RunConfig, loading_note

    note = loading_note(RunConfig(model="m", device="cpu", voice="NATF2", persona="Hi."))
    assert note.endswith("taking in the voice and persona")
    assert "voice" not in loading_note(RunConfig(model="m", device="cpu"))
