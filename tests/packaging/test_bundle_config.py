"""What the bundle collects and excludes, checked without PyInstaller: the spec runs against a
stand-in PyInstaller that records what it is given; the macOS plists and the PortAudio runtime
hook are read and run directly."""

import ctypes.util
import json
import os
import plistlib
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import app
from app import appinfo

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"

# What PyInstaller's analysis might hand the spec: (name in the bundle, source, kind).
ANALYSED_BINARIES = [
    ("libportaudio.so.2", "/usr/lib/libportaudio.so.2", "BINARY"),
    ("libasound.so.2", "/usr/lib/libasound.so.2", "BINARY"),
    ("torch/lib/libtorch_cpu.so", "/venv/torch/lib/libtorch_cpu.so", "BINARY"),
    ("torch/lib/libtorchbind_test.so", "/venv/torch/lib/libtorchbind_test.so", "BINARY"),
    ("torch/bin/torch_shm_manager", "/venv/torch/bin/torch_shm_manager", "BINARY"),
    ("torch/bin/test_api", "/venv/torch/bin/test_api", "BINARY"),
    ("torch/test/Dict_test", "/venv/torch/test/Dict_test", "BINARY"),
    ("PySide6/Qt/plugins/platforms/libqoffscreen.so", "/venv/libqoffscreen.so", "BINARY"),
    ("PySide6/Qt/plugins/platforms/libqxcb.so", "/venv/libqxcb.so", "BINARY"),
]
KEPT_BINARIES = {
    "libportaudio.so.2",
    "torch/lib/libtorch_cpu.so",
    "torch/bin/torch_shm_manager",
    "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/plugins/platforms/libqxcb.so",
}


def run_spec(monkeypatch: pytest.MonkeyPatch, platform: str) -> dict[str, SimpleNamespace]:
    """Execute the spec as PyInstaller would on `platform`, with stand-ins for PyInstaller's
    build targets; returns each target's call by name."""
    calls: dict[str, SimpleNamespace] = {}

    def target(name: str):
        def call(*args, **kwargs):
            calls[name] = SimpleNamespace(args=args, kwargs=kwargs)
            if name == "Analysis":
                calls[name].binaries = list(ANALYSED_BINARIES)
                calls[name].datas = [("torch/include/ATen/ATen.h", "/venv/x.h", "DATA")]
                calls[name].pure = calls[name].scripts = []
            return calls[name]

        return call

    hooks = ModuleType("PyInstaller.utils.hooks")
    hooks.copy_metadata = lambda dist: [(f"/venv/{dist}.dist-info", f"{dist}.dist-info")]
    hooks.collect_data_files = lambda package: [(f"/venv/{package}/data", package)]
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "bundle_config", raising=False)
    spec = PACKAGING / "moshi-desktop.spec"
    namespace = {"SPECPATH": str(PACKAGING), "__file__": str(spec)}
    namespace.update({name: target(name) for name in ("Analysis", "PYZ", "EXE", "COLLECT")})
    namespace["BUNDLE"] = target("BUNDLE")  # made on macOS only
    exec(compile(spec.read_text(encoding="utf-8"), str(spec), "exec"), namespace)
    monkeypatch.delitem(sys.modules, "bundle_config", raising=False)
    return calls


def test_the_spec_collects_the_app_its_data_and_metadata(monkeypatch, load_packaging) -> None:
    config = load_packaging("bundle_config")
    calls = run_spec(monkeypatch, "linux")
    analysis = calls["Analysis"]
    assert analysis.args[0] == [str(ROOT / "app" / "__main__.py")]
    datas = analysis.kwargs["datas"]
    assert (str(appinfo.RESOURCES), "app/resources") in datas
    assert ("/venv/moshi-desktop.dist-info", "moshi-desktop.dist-info") in datas  # --version
    assert ("/venv/sentencepiece/data", "sentencepiece") in datas
    assert analysis.kwargs["excludes"] == config.EXCLUDES
    assert all(Path(hook).is_file() for hook in analysis.kwargs["runtime_hooks"])
    assert calls["EXE"].kwargs["name"] == "moshi-desktop"
    assert calls["EXE"].kwargs["console"] is True  # on Linux the CLI prints to the terminal
    assert calls["COLLECT"].kwargs["name"] == "moshi-desktop"
    assert "BUNDLE" not in calls


def test_the_spec_drops_test_programs_headers_and_alsa(monkeypatch) -> None:
    analysis = run_spec(monkeypatch, "linux")["Analysis"]  # the spec's `a`, filtered
    assert {name for name, _, _ in analysis.binaries} == KEPT_BINARIES
    assert analysis.datas == []  # the header


def test_the_macos_bundle_asks_for_the_microphone(monkeypatch) -> None:
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    calls = run_spec(monkeypatch, "darwin")
    bundle = calls["BUNDLE"].kwargs
    plist = bundle["info_plist"]
    assert "microphone" in plist["NSMicrophoneUsageDescription"].lower()
    assert plist["CFBundleIdentifier"] == bundle["bundle_identifier"] == appinfo.BUNDLE_ID
    assert plist["CFBundleShortVersionString"] == bundle["version"] == app.__version__ == version
    assert bundle["name"] == "Moshi Desktop.app"
    assert bundle["icon"] == str(appinfo.icon_png(512))
    plistlib.dumps(plist)  # every value is one a plist can hold
    entitlements = calls["EXE"].kwargs["entitlements_file"]
    with open(entitlements, "rb") as f:
        assert plistlib.load(f) == {"com.apple.security.device.audio-input": True}
    assert calls["EXE"].kwargs["console"] is False  # a windowed app: no console with the window


@pytest.mark.slow
def test_excluded_modules_are_never_imported(load_packaging) -> None:
    """self-test (the tiny model, audio libraries, the window) and every command's module leave
    none of the excluded modules imported: excluding them cannot break the bundle there."""
    config = load_packaging("bundle_config")
    script = textwrap.dedent(
        f"""
        import json, sys
        from app import cli
        status = cli.main(["self-test", "--frames", "2"])
        import app.commands.bench, app.commands.chat, app.commands.devices, app.commands.doctor, app.commands.download, app.engine.fetch, app.commands.talk
        import app.engine.remote, websockets.sync.client
        import huggingface_hub.file_download
        excluded = {config.EXCLUDES!r}
        found = [e for e in excluded if any(m == e or m.startswith(e + ".") for m in sys.modules)]
        print(json.dumps({{"status": status, "found": found}}))
        """
    )
    # The bundle never builds our CPU kernel (model/cpu/native.py), which imports cpp_extension.
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NO_NATIVE_KERNEL": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"status": 0, "found": []}


@pytest.mark.parametrize(
    ("system", "expected"),
    [(None, "bundled"), ("libportaudio.so.2", "libportaudio.so.2")],
    ids=["no system PortAudio: the bundle's", "the system's first"],
)
def test_the_runtime_hook_finds_portaudio(monkeypatch, tmp_path, system, expected) -> None:
    bundled = tmp_path / "libportaudio.so.2"
    bundled.write_bytes(b"")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: system if name == "portaudio" else "libc.so.6"
    )
    runpy.run_path(str(PACKAGING / "pyi_rth_portaudio.py"))
    found = ctypes.util.find_library("portaudio")
    assert found == (str(bundled) if expected == "bundled" else expected)
    assert ctypes.util.find_library("c") == "libc.so.6"
