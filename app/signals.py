"""The signals that end a program when the user logs out, closes its terminal or `kill`s it.

A command treats SIGTERM and SIGHUP as Ctrl+C (`interrupt_on_termination`): `chat` then closes the
conversation cleanly, finishes its autosave and writes its `--export` files before it exits. The
window closes as its close button does (`app.gui.close_on_signals`).
"""

from __future__ import annotations

import signal
import threading


def terminating_signals() -> list[signal.Signals]:
    """SIGTERM, and SIGHUP where the platform has it."""
    return [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


def interrupt_on_termination() -> None:
    """Raise KeyboardInterrupt in the main thread on SIGTERM or SIGHUP, as Ctrl+C does."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in terminating_signals():
        signal.signal(sig, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
