"""Can Qt open a window here? Checked without opening one in this process, because Qt aborts
the whole process (a core dump, exit 134) when its platform plugin cannot load.

On Linux, X11 windows go through Qt's xcb plugin, which needs the X libraries of
`XCB_PACKAGES`; a Debian desktop may lack some (`libxcb-cursor0`, which Qt 6.5+ loads by name
at run time, `libxcb-icccm4`, `libxcb-keysyms1`). `missing_libraries` reads `ldd` of the plugin
(plus that one library), `probe_window` opens a window in a child process and reports how it
ended. `doctor`, `self-test` and the launcher say which packages to install.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# What Qt 6's xcb plugin links or loads, by Debian/Ubuntu package (README.md's apt line).
XCB_PACKAGES = (
    "libx11-xcb1",
    "libxcb-cursor0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-randr0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-xfixes0",
    "libxcb-xkb1",
    "libxkbcommon-x11-0",
)
_LOADED_BY_NAME = {"xcb-cursor": "libxcb-cursor.so.0"}  # dlopen()ed by Qt, so not in ldd


def platform_plugin(name: str = "xcb") -> Path | None:
    """The installed PySide6's platform plugin `name`, found without importing Qt."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "Qt" / "plugins" / "platforms" / f"libq{name}.so"
    return path if path.is_file() else None


def missing_libraries(plugin: Path | None = None) -> list[str]:
    """The shared libraries the xcb plugin needs and this machine lacks (Linux; else [])."""
    if not sys.platform.startswith("linux"):
        return []
    plugin = plugin or platform_plugin("xcb")
    missing: set[str] = set()
    if plugin is not None and shutil.which("ldd"):
        out = subprocess.run(
            ["ldd", str(plugin)], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        missing |= {m.group(1) for m in re.finditer(r"^\s*(\S+) => not found", out, re.M)}
    for name, soname in _LOADED_BY_NAME.items():
        if ctypes.util.find_library(name) is None:
            missing.add(soname)
    return sorted(missing)


def packages_for(libraries: list[str]) -> list[str]:
    """Debian's package names for shared libraries: libxcb-icccm.so.4 -> libxcb-icccm4."""
    packages = []
    for library in libraries:
        m = re.match(r"(lib[\w+.-]*?)\.so\.(\d+)", library)
        if m is None:
            packages.append(library)
            continue
        name, version = m.group(1).lower().replace("_", "-"), m.group(2)
        packages.append(f"{name}{'-' if name[-1].isdigit() else ''}{version}")
    return sorted(set(packages))


def advice(libraries: list[str]) -> str:
    """One sentence: what is missing and the command that installs it."""
    return (
        f"Qt cannot open a window on X11: this machine lacks {', '.join(libraries)}. "
        f"Install them with: sudo apt-get install {' '.join(packages_for(libraries))}"
    )


def display_error() -> str:
    """Why the X display (DISPLAY) cannot be connected to, or "" if it can (or libxcb, which the
    library check names, is missing). Qt aborts the process on an X server it cannot reach;
    asking libxcb first costs a connection."""
    library = ctypes.util.find_library("xcb")
    if library is None:
        return ""
    xcb = ctypes.CDLL(library)
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(None, None)
    try:
        failed = xcb.xcb_connection_has_error(connection)
    finally:
        xcb.xcb_disconnect(connection)
    if not failed:
        return ""
    return (
        f"cannot connect to the X display {os.environ.get('DISPLAY', '')!r}: start the app from "
        "your desktop session, or talk in the terminal with `moshi-desktop chat`"
    )


def uses_xcb() -> bool:
    """Whether Qt would open its windows through the xcb plugin here (Linux, X11)."""
    chosen = os.environ.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(":")[0] == "xcb"
    return sys.platform.startswith("linux") and not os.environ.get("WAYLAND_DISPLAY")


def probe_window(in_process: Callable[[], str], timeout: float = 60.0) -> tuple[bool, str]:
    """Open (and close) the window in a child process: (it worked, what it said). A crash of
    Qt there, a missing library or no display, is reported instead of taking this process. The
    desktop bundle has no interpreter to start: there, the libraries are checked, then the
    window opens here (`in_process`: `app.gui.check_window`)."""
    libraries = missing_libraries() if uses_xcb() else []
    if libraries:
        return False, advice(libraries)
    if getattr(sys, "frozen", False):
        return True, in_process()
    child = subprocess.run(
        [sys.executable, "-c", "from app.gui import check_window; print(check_window())"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if child.returncode == 0:
        return True, child.stdout.strip().splitlines()[-1]
    said = [line for line in child.stderr.strip().splitlines() if line.strip()]
    return False, f"the window could not open (exit {child.returncode}): " + (
        said[-1] if said else "Qt said nothing"
    )
