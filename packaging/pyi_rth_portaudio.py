"""PyInstaller runtime hook (runs in the frozen app before our code): PortAudio on Linux.

sounddevice finds PortAudio with `ctypes.util.find_library("portaudio")`, which on Linux asks
ldconfig and so sees only a system-wide library. Prefer the system's PortAudio where there is one
(it matches the system's ALSA and JACK); otherwise use the copy the bundle carries.
"""

import ctypes.util
import os
import sys

_BUNDLED = os.path.join(getattr(sys, "_MEIPASS", ""), "libportaudio.so.2")

if sys.platform.startswith("linux") and os.path.isfile(_BUNDLED):
    _system_find_library = ctypes.util.find_library

    def _find_library(name):
        found = _system_find_library(name)
        if found is None and name == "portaudio":
            return _BUNDLED
        return found

    ctypes.util.find_library = _find_library
