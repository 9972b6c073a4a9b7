"""Who this app is: its names, version, desktop identity, data files, links and licences.

Plain Python (no Qt, no torch): the launcher, the About dialog, `self-test` and the packaging
files read it. The version itself has one source, pyproject.toml, read from the installed
metadata by `app.__version__` (the PyInstaller bundle carries that metadata too).

The data files live in ``resources/`` at the top of the repository. An installed wheel and the
PyInstaller bundle carry them as package data in ``app/resources/`` beside this file; a checkout
and an editable install read them where they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__

NAME = "moshi-desktop"  # the command, the distribution, the icon's name
DISPLAY_NAME = "Moshi Desktop"
VERSION = __version__
DESCRIPTION = "Talk full duplex with Kyutai's Moshi on your own machine."
# QGuiApplication.setDesktopFileName: on Wayland the window's app_id, which the desktop matches
# to `<DESKTOP_ID>.desktop` to find the app's name and icon.
DESKTOP_ID = NAME
BUNDLE_ID = "org.moshi-desktop.MoshiDesktop"  # macOS CFBundleIdentifier


def _resources() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "resources"  # a wheel, the bundle
    return installed if installed.is_dir() else here.parent / "resources"  # a checkout


RESOURCES = _resources()
DESKTOP_FILE = RESOURCES / f"{DESKTOP_ID}.desktop"
ICON_THEME = RESOURCES / "icons" / "hicolor"  # the freedesktop layout: copy it into a data dir
ICON_SVG = ICON_THEME / "scalable" / "apps" / f"{NAME}.svg"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def icon_png(size: int) -> Path:
    """The icon rendered at `size` x `size` pixels (one of `ICON_SIZES`)."""
    return ICON_THEME / f"{size}x{size}" / "apps" / f"{NAME}.png"


@dataclass(frozen=True)
class Link:
    title: str
    url: str


@dataclass(frozen=True)
class Licence:
    component: str
    licence: str
    url: str


LINKS = (
    Link("Kyutai's Moshi", "https://github.com/kyutai-labs/moshi"),
    Link("Moshi's weights on Hugging Face", "https://huggingface.co/kyutai"),
)

# What a bundle ships besides our code. Qt is used unmodified as shared libraries (LGPL-3.0: a
# user may replace them).
THIRD_PARTY = (
    Licence("Qt 6 and Qt for Python (PySide6)", "LGPL-3.0", "https://www.qt.io/licensing/"),
    Licence("PyTorch", "BSD-3-Clause and others", "https://github.com/pytorch/pytorch"),
    Licence("NumPy", "BSD-3-Clause", "https://numpy.org/"),
    Licence("PortAudio (sounddevice)", "MIT", "https://www.portaudio.com/"),
    Licence("libsndfile (soundfile)", "LGPL-2.1-or-later", "https://libsndfile.github.io/"),
    Licence("libsoxr (soxr)", "LGPL-2.1-or-later", "https://github.com/dofuuz/python-soxr"),
    Licence("SentencePiece", "Apache-2.0", "https://github.com/google/sentencepiece"),
    Licence(
        "safetensors, huggingface_hub", "Apache-2.0", "https://github.com/huggingface/safetensors"
    ),
)


def component_versions() -> dict[str, str]:
    """Python's and PyTorch's versions; PyTorch's from its metadata, without importing it (the
    GUI thread never imports torch). Qt's own version is Qt's to tell (`qVersion`)."""
    import platform

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "unknown"
    return {"Python": platform.python_version(), "PyTorch": torch_version}
