"""What goes into the PyInstaller bundle, as plain data: the spec (moshi-desktop.spec) reads it,
and the tests check it without PyInstaller installed.

Nothing here imports the app beyond `app.appinfo` (plain Python), so reading it is cheap.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app import appinfo  # noqa: E402

ENTRY_SCRIPT = ROOT / "app" / "__main__.py"  # `python -m app`, the `moshi-desktop` command
MACOS_ENTITLEMENTS = ROOT / "packaging" / "macos" / "entitlements.plist"
RUNTIME_HOOKS = [ROOT / "packaging" / "pyi_rth_portaudio.py"]

# (source, folder in the bundle): the data files, where `app.appinfo` looks for them.
DATAS = [(str(appinfo.RESOURCES), "app/resources")]

# Packages whose data files PyInstaller's hooks leave out: sentencepiece's normalization tables,
# which training a tokenizer (the tiny model of `self-test`) reads; livekit's FFI library
# (rtc/resources/liblivekit_ffi.*, loaded by ctypes: the echo canceller, app/audio/echo.py).
DATA_PACKAGES = ["sentencepiece", "livekit"]

# Installed metadata the frozen app reads with importlib.metadata: our own (`app.__version__`,
# from pyproject.toml) and the versions the About dialog and `self-test` show.
METADATA = ["moshi-desktop", "torch", "sphn"]

# Modules the app never imports at run time: tests/packaging/test_bundle_config.py checks that
# `self-test` (model, audio, window) and importing every command leave none in sys.modules.
EXCLUDES = [
    # GUI toolkits and shells we do not use
    "tkinter",
    "_tkinter",
    "turtle",
    "turtledemo",
    "idlelib",
    "IPython",
    "matplotlib",
    # Development and test tools that may sit in the build venv
    "pytest",
    "_pytest",
    "pytestqt",
    "ruff",
    "srt",
    "webvtt",
    "einops",
    "moshi",  # Kyutai's reference package: only `bench --compare-reference` uses it
    "PyInstaller",
    # huggingface_hub's async inference client: the app only downloads files
    "aiohttp",
    "aiosignal",
    "frozenlist",
    "multidict",
    "propcache",
    "yarl",
    # Parts of torch only its tests, TensorBoard and C++ extensions use. Not more: building a
    # module with torch imports torch._dynamo, and with it sympy, torch.onnx and much else.
    "torch.utils.tensorboard",
    "torch.utils.benchmark",
    "torch.utils.cpp_extension",
    "torch.testing._internal.opinfo",
    "torch.testing._internal.optests",
    "functorch",
    "networkx",  # torch.compile's partitioner
    "jinja2",  # torch.compile's code generation
    # Qt modules the window does not use
    "PySide6.QtNetwork",
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuickWidgets",
    "PySide6.QtOpenGL",
    "PySide6.QtOpenGLWidgets",
    "PySide6.QtSql",
    "PySide6.QtTest",
    "PySide6.QtDesigner",
    "PySide6.QtHelp",
    "PySide6.QtPdf",
    "PySide6.QtUiTools",
    "PySide6.QtConcurrent",
    "PySide6.QtPrintSupport",
]

# Shared libraries left to the system even where the build machine's copy would be collected:
# ALSA loads its plugins (PulseAudio, PipeWire) from the system's own folders, so it must be the
# system's libasound, which every Linux desktop has.
EXCLUDE_BINARIES = ["libasound.so.2"]

# Files of collected packages the app never reads (paths in the bundle): torch's C++ test
# programs and test libraries (about 130 MB), its protobuf compiler, headers, static libraries.
EXCLUDE_DATA_PATTERNS = [
    "torch/test/*",
    "torch/lib/libjitbackend_test.so",
    "torch/lib/libtorchbind_test.so",
    "torch/lib/libbackend_with_compiler.so",
    "torch/lib/libaoti_custom_ops.so",
    "torch/include/*",
    "torch/share/*",
    "torch/bin/test_*",  # torch/bin/torch_shm_manager stays: `import torch` looks for it
    "torch/bin/*Test",
    "torch/bin/protoc*",
    "*.a",
    "*.lib",
    "*.pyi",
]


def info_plist(version: str = appinfo.VERSION) -> dict[str, object]:
    """The macOS bundle's Info.plist entries beyond what PyInstaller writes itself."""
    return {
        "CFBundleName": appinfo.DISPLAY_NAME,
        "CFBundleDisplayName": appinfo.DISPLAY_NAME,
        "CFBundleIdentifier": appinfo.BUNDLE_ID,
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        # Without it macOS refuses the microphone (and a signed app records silence).
        "NSMicrophoneUsageDescription": (
            "Moshi Desktop uses the microphone so that Moshi can hear you and answer."
        ),
        "NSHighResolutionCapable": True,
        "LSApplicationCategoryType": "public.app-category.productivity",
    }
