"""What goes in and out of the engine: commands (any thread -> engine thread) and events
(engine thread -> the GUI or the terminal), plain frozen dataclasses, and the engine's state.

Commands are handled in the order they are sent; events are put on a bounded queue that drops its
oldest entry when the reader falls behind. Nothing here imports torch or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from model.config import FRAME_SECONDS

if TYPE_CHECKING:
    from .remote import RemoteStats
    from .run import RunConfig


class EngineState(str, Enum):
    """Where the engine is. Stop has something to stop in the `active` ones. Its values are the
    words the command line and the logs use."""

    STOPPED = "stopped"  # not started, or stopped: the conversation and the model stay
    LOADING = "loading"  # loading the model (or making the session with a server)
    CONNECTING = "connecting"  # to a server
    WAITING = "waiting"  # connected, for a slot on a busy server
    RUNNING = "running"
    FINISHED = "finished"  # the input file ended
    ERROR = "error"  # a failure stopped it; the record stays, Start goes on

    @property
    def active(self) -> bool:
        return self in (
            EngineState.LOADING,
            EngineState.CONNECTING,
            EngineState.WAITING,
            EngineState.RUNNING,
        )


# --- Commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Load the model if needed, open the audio, and talk (continuing a stopped conversation).

    `config` is handed to the engine's `load_pipeline` and `open_audio`; when its `model_key`
    differs from the loaded model's, the model is loaded again (and a new conversation begins).
    """

    config: RunConfig | None = None


@dataclass(frozen=True)
class Stop:
    """Close the audio (and the connection) and pause; the conversation and the model stay."""


@dataclass(frozen=True)
class NewConversation:
    """Forget the conversation: the model's state and the record start again."""


@dataclass(frozen=True)
class Mute:
    muted: bool


@dataclass(frozen=True)
class SetHalfDuplex:
    """When on, the microphone is muted while Moshi speaks (for speakers without headphones)."""

    enabled: bool


@dataclass(frozen=True)
class SetSampling:
    """Applies from the next frame (on a server: from the next connection). A temperature of 0
    takes the most likely token; top-k 0 keeps every token."""

    temperature: float = 0.8
    top_k: int = 250
    text_temperature: float = 0.7
    text_top_k: int = 25


@dataclass(frozen=True)
class SetPersona:
    """PersonaPlex's voice (a packaged voice's name, or a voice file's path) and persona (role
    text), from the next conversation (on a server: from the next connection)."""

    voice: str | None
    persona: str | None


@dataclass(frozen=True)
class Export:
    """Write the conversation to `path`; the format follows the suffix (see app.conversation.record)."""

    path: str


@dataclass(frozen=True)
class Shutdown:
    pass


# --- Events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    state: EngineState
    detail: str = ""  # what the state is busy with, when worth saying (a kernel being built)


@dataclass(frozen=True)
class TextPiece:
    text: str
    time: float  # seconds into the conversation


@dataclass(frozen=True)
class AudioBlock:
    """One frame of both voices for the waveforms: 1920 samples each at 24 kHz."""

    user: np.ndarray
    moshi: np.ndarray
    time: float


@dataclass(frozen=True)
class Stats:
    ms_per_frame: dict[str, float]  # p50 over recent frames, per stage and "total"
    rtf: float  # compute time / real time; above 1 the machine cannot keep up
    latency_ms: float  # estimated mic-to-speaker latency
    dropped_frames: int  # input frames skipped because the model fell behind
    underruns: int
    overruns: int
    dropped_events: int
    elapsed: float  # seconds of conversation, by the wall clock (dropped stretches included)
    remote: RemoteStats | None = None  # when Moshi runs on a server: the link's counters
    silenced_samples: int = 0  # NaN or infinite input samples, heard as silence
    threads: int | None = None  # the CPU threads computing now (model/cpu/threads.py); None: GPU
    gpu_mb: float | None = None  # GPU memory the model holds (a CUDA GPU's), None elsewhere


@dataclass(frozen=True)
class Notice:
    message: str  # a warning worth showing once


@dataclass(frozen=True)
class ErrorEvent:
    message: str  # whole: a load error may list several problems, one a line


@dataclass(frozen=True)
class Exported:
    path: str


@dataclass(frozen=True)
class FallingBehind(Notice):
    """The conversation is not live: this machine, or the server or the network, is slower than
    real time. Sent once a conversation in place of a plain Notice (a reader that knows only
    Notice still shows `message`), with the Stats that showed it. `FallingBehind.of(stats)` makes
    one; a window that keeps the warning in view words it again from each Stats that follows
    (`describe`), so its figure stays current."""

    stats: Stats

    @classmethod
    def of(cls, stats: Stats) -> FallingBehind:
        return cls(cls.describe(stats), stats)

    @staticmethod
    def describe(stats: Stats) -> str:
        if stats.remote is not None:
            return (
                f"Moshi's voice arrives late from the server ({stats.remote.missed_ms / 1000:.1f} "
                "s missed so far): the server or the network is slower than real time."
            )
        ms = stats.ms_per_frame.get("total", 0.0)
        frame_ms = round(1000 * FRAME_SECONDS)
        if stats.rtf > 1.0:
            return (
                f"This machine cannot run Moshi in real time ({ms:.0f} ms for each {frame_ms} ms "
                "frame): your voice is being skipped. A GPU is needed for a live conversation."
            )
        return (
            f"This machine keeps up again ({ms:.0f} ms for each {frame_ms} ms frame), after "
            "falling behind real time: some of your voice was skipped."
        )


@dataclass(frozen=True)
class Autosave:
    """Where the conversation is saved as it goes. Sent when the engine makes a conversation's
    record (as the conversation starts running, and again after NewConversation while it runs):
    `folder` is its autosave folder, or None when the record is kept in memory only. Sent again
    with `folder` None when the autosave stops (the Notice that says so gives the reason)."""

    folder: str | None
