"""`moshi-desktop doctor`: the model's files and this machine, checked without loading the model.

The full-size cases reuse the sparse Moshi 7B folder of tests/model/test_inspect.py (headers with
the real names, shapes and dtypes; no data). The memory on hand and the audio library are
replaced where a test needs them fixed, so the outcome does not depend on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
import types
from pathlib import Path

import pytest

from app.commands import doctor
from model.config import MOSHI_NAME, TOKENIZER_NAME


def _load_inspect_tests():
    path = Path(__file__).resolve().parents[2] / "model" / "test_inspect.py"
    spec = importlib.util.spec_from_file_location("_inspect_tests_for_doctor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inspect_tests = _load_inspect_tests()
GB = 1_000_000_000


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moshi-desktop")
    doctor.register(parser.add_subparsers())
    return parser.parse_args(["doctor", *argv])


def run_doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = doctor.run(parse(*argv))
    return status, capsys.readouterr().out


def status_lines(out: str, level: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith(level + " ")]


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch):
    """Set the memory the device has: `memory(64 * GB)`."""

    def set_available(n: int | None) -> None:
        monkeypatch.setattr(doctor, "available_memory", lambda device: (n, "the test machine"))

    set_available(64 * GB)
    return set_available


def fake_sounddevice(devices: list[dict], rates: dict[int, set[int]], default=(0, 1)):
    """A sounddevice module: `devices` as query_devices lists them; device i accepts the sample
    rates in rates[i]."""

    def check(device: int, samplerate: int, channels: int) -> None:
        if samplerate not in rates.get(device, set()):
            raise ValueError("Invalid sample rate")

    return types.SimpleNamespace(
        get_portaudio_version=lambda: (1246720, "PortAudio V19.6.0-devel, revision 396fe4b"),
        query_devices=lambda: [dict(d, index=i) for i, d in enumerate(devices)],
        check_input_settings=check,
        check_output_settings=check,
        default=types.SimpleNamespace(device=list(default)),
    )


# --- The model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_tiny_checkpoint_passes(
    layout: str, tiny_checkpoint: Path, tmp_path: Path, capsys, memory
) -> None:
    from model.tiny import write_tiny_checkpoint

    folder = (
        tiny_checkpoint if layout == "fused" else write_tiny_checkpoint(tmp_path, layout=layout)
    )
    status, out = run_doctor(capsys, "--model", str(folder), "--device", "cpu")
    assert status == 0, out
    assert out.startswith(f"Model  {folder}\n")
    assert "\nMachine\n" in out
    assert not status_lines(out, "FAIL")
    assert "ok    LM weights model.safetensors" in out
    assert "ok    memory: needs about" in out
    assert "The model can run here" in out


def test_full_size_7b_from_headers_in_seconds(
    capsys, memory, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    import model.checkpoint

    folder = inspect_tests.write_full_size(tmp_path_factory.mktemp("moshi-7b"))

    def refuse(*args, **kwargs):
        raise AssertionError("tensor data was loaded")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(model.checkpoint, "safe_open", refuse, raising=False)
    monkeypatch.setattr(model.checkpoint, "read_safetensors", refuse)
    start = time.perf_counter()
    status, out = run_doctor(capsys, "--model", str(folder), "--device", "cpu")
    elapsed = time.perf_counter() - start
    assert status == 0, out
    assert "7.69 B parameters" in out
    assert "Mimi: 79.31 M parameters" in out
    assert "warn  CPU only: a model this size runs about 20x slower than real time" in out
    assert "memory: needs about" in out
    assert elapsed < 10, f"{elapsed:.1f} s"
    print(out, file=sys.stderr)  # the sample output, for `pytest -s`

    # on the CPU, int8 linears (other weights and caches in float32) need far less than float32
    def needs_gb(text: str) -> float:
        return float(text.split("memory: needs about ")[1].split(" GB")[0])

    _, fp32 = run_doctor(capsys, "--model", str(folder), "--device", "cpu", "--dtype", "float32")
    _, int8 = run_doctor(capsys, "--model", str(folder), "--device", "cpu", "--dtype", "int8")
    assert "with the LM in int8 linears" in int8
    assert needs_gb(int8) < 0.4 * needs_gb(fp32)


def test_not_enough_memory_fails(capsys, memory, tiny_checkpoint: Path) -> None:
    memory(100_000_000)
    status, out = run_doctor(capsys, "--model", str(tiny_checkpoint), "--device", "cpu")
    assert status == 1
    (line,) = status_lines(out, "FAIL")
    assert "memory: needs about 257.2 MB" in line
    assert "but the test machine has only 0.1 GB" in line
    assert "; --dtype bfloat16 halves the LM's share" in line  # float32 on the CPU by default
    assert "1 problem(s): the model cannot run here" in out


def test_unknown_memory_warns(capsys, memory, tiny_checkpoint: Path) -> None:
    memory(None)
    status, out = run_doctor(capsys, "--model", str(tiny_checkpoint), "--device", "cpu")
    assert status == 0
    assert "warn  memory: needs about" in out


def test_wrong_shape_is_named_and_fails(capsys, memory, tmp_path: Path) -> None:
    lm, mimi = inspect_tests.full_size_layout()
    lm["depformer.layers.2.gating.4.linear_out.weight"] = ("BF16", (1024, 2817))
    folder = inspect_tests.write_full_size(tmp_path, lm_tensors=lm)
    status, out = run_doctor(capsys, "--model", str(folder), "--device", "cpu")
    assert status == 1
    assert (
        "depformer.layers.2.gating.4.linear_out.weight: expected shape (1024, 2816), "
        "found (1024, 2817)" in out
    )
    assert "FAIL  LM weights model.safetensors do not fit the model" in out


def test_every_missing_file_is_named(capsys, memory, tiny_checkpoint: Path, tmp_path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / MOSHI_NAME).unlink()
    (folder / TOKENIZER_NAME).unlink()
    status, out = run_doctor(capsys, "--model", str(folder), "--device", "cpu")
    assert status == 1
    (line,) = status_lines(out, "FAIL")
    assert f"LM weights ({MOSHI_NAME})" in line
    assert f"text tokenizer ({TOKENIZER_NAME})" in line
    assert "\nMachine\n" in out  # the machine is still checked


def test_missing_folder_fails(capsys, tmp_path: Path) -> None:
    status, out = run_doctor(capsys, "--model", str(tmp_path / "nowhere"), "--device", "cpu")
    assert status == 1
    assert "model folder not found" in out


def test_repository_not_in_the_cache_fails_without_downloading(capsys) -> None:
    status, out = run_doctor(capsys, "--model", "kyutai/moshiko-pytorch-bf16", "--device", "cpu")
    assert status == 1
    assert "kyutai/moshiko-pytorch-bf16/model.safetensors" in status_lines(out, "FAIL")[0]
    # what the catalog says of it, first
    assert (
        status_lines(out, "ok")[0]
        == "ok    Moshiko (male voice), bfloat16: English · 15.8 GB · CC-BY 4.0"
    )


def test_another_member_of_the_family_is_named(capsys, tmp_path: Path) -> None:
    folder = tmp_path / "hibiki"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "hibiki"}')
    status, out = run_doctor(capsys, "--model", str(folder), "--device", "cpu")
    assert status == 1
    assert "this is Hibiki, Kyutai's French-to-English" in status_lines(out, "FAIL")[0]


def test_cuda_asked_for_without_cuda_fails(capsys, memory, tiny_checkpoint: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    status, out = run_doctor(capsys, "--model", str(tiny_checkpoint), "--device", "cuda")
    assert status == 1
    assert "FAIL  --device cuda: CUDA was asked for" in out


# --- The machine --------------------------------------------------------------------------------


def test_machine_section_runs_on_this_machine() -> None:
    section = doctor.check_machine()
    text = doctor.format_sections([section])
    assert text.startswith("Machine\n")
    assert "Python 3." in text
    assert "torch " in text
    assert not [level for level, _ in section.checks if level == doctor.FAIL]


def test_no_audio_devices_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "import_sounddevice", lambda: fake_sounddevice([], {}, (-1, -1)))
    section = doctor.check_machine()
    assert (
        doctor.WARN,
        "no audio devices: live conversation unavailable; `talk` works with files",
    ) in section.checks


@pytest.mark.parametrize("error", [OSError("PortAudio library not found"), ImportError("nope")])
def test_portaudio_missing_warns(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing():
        raise error

    monkeypatch.setattr(doctor, "import_sounddevice", missing)
    section = doctor.check_machine()
    (line,) = [m for level, m in section.checks if m.startswith("PortAudio")]
    assert (doctor.WARN, line) in section.checks
    assert str(error) in line
    assert "live conversation unavailable" in line


def test_portaudio_missing_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` raises
    section = doctor.check_machine()
    assert any(m.startswith("PortAudio: cannot load") for _, m in section.checks)


def test_audio_devices_and_their_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        {"name": "USB mic", "max_input_channels": 1, "max_output_channels": 0,
         "default_samplerate": 48000.0},
        {"name": "Speakers", "max_input_channels": 0, "max_output_channels": 2,
         "default_samplerate": 44100.0},
        {"name": "Headset", "max_input_channels": 1, "max_output_channels": 2,
         "default_samplerate": 24000.0},
    ]  # fmt: skip
    sd = fake_sounddevice(devices, {0: {48000}, 1: {44100}, 2: {24000}}, default=(0, 1))
    monkeypatch.setattr(doctor, "import_sounddevice", lambda: sd)
    lines = [m for _, m in doctor.check_machine().checks]
    assert "input 0: USB mic (default): resampled from 48 kHz (24 kHz mono not supported)" in lines
    assert "input 2: Headset: 24 kHz mono directly" in lines
    assert "output 1: Speakers (default): resampled from 44.1 kHz (24 kHz mono not supported)" in (
        lines
    )
    assert "output 2: Headset: 24 kHz mono directly" in lines


def test_no_microphone_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [{"name": "Speakers", "max_input_channels": 0, "max_output_channels": 2}]
    monkeypatch.setattr(
        doctor, "import_sounddevice", lambda: fake_sounddevice(devices, {0: {24000}}, (-1, 0))
    )
    section = doctor.check_machine()
    assert any(level == doctor.WARN and "no microphone" in m for level, m in section.checks)


def test_help_describes_the_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse("--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--model" in out and "--device" in out and "--dtype" in out


def test_cuda_paths_with_a_fake_gpu(
    capsys, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine may have no GPU: torch.cuda's answers are faked to run the CUDA paths."""
    import torch

    gpu = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "get_device_name": lambda index=0: "Fake T4",
        "get_device_capability": lambda index=0: (7, 5),
        "mem_get_info": lambda index=0: (15 * GB, 16 * GB),
        "is_bf16_supported": lambda: False,
    }
    for name, fake in gpu.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    status, out = run_doctor(capsys, "--model", str(tiny_checkpoint), "--device", "cuda")
    assert status == 0, out
    assert "runs on cuda with the LM in bfloat16, Mimi in float32" in out
    assert "warn  this GPU has no native bfloat16: --dtype float16" in out
    assert "ok    memory: needs about" in out
    assert "; Fake T4 (free memory) has 15.0 GB" in out
    assert "ok    GPU 0: Fake T4 (compute 7.5), 15.0 GB free of 16.0 GB" in out


def test_the_format_and_a_lora_are_named(capsys, memory, tiny_checkpoint: Path, tmp_path) -> None:
    """Which member and which format, from the headers: Kyutai's layout here, with a LoRA."""
    import json

    from model.tiny import write_random_lora

    status, out = run_doctor(capsys, "--model", str(tiny_checkpoint), "--device", "cpu")
    assert "Model: a Moshi of dim 32 and 2 layers, Kyutai's layout (fused attention keys)" in out
    base = json.loads((tiny_checkpoint / "config.json").read_text())
    lora = write_random_lora(tmp_path / "lora", base, rank=4)
    status, out = run_doctor(
        capsys, "--model", str(tiny_checkpoint), "--lora", str(lora), "--device", "cpu"
    )
    assert status == 0, out
    assert f"+ LoRA {lora}" in out
    assert "with a moshi-finetune LoRA of rank 4 (scaling 2) merged at load" in out
