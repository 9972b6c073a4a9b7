"""The realtime engine: a worker thread that holds the conversation.

    GUI / terminal --commands--> engine thread: read a 1920-sample frame of the user's voice,
        compute Moshi's answer, play Moshi's frame, record both --events--> GUI

Where Moshi's frames are computed is the engine's *compute*, made by `load_pipeline(config)`: the
local model (model.pipeline.Pipeline: Mimi encode -> LM step -> Mimi decode), or Kyutai's server
(app.remote.RemoteSession), which is also a `Connection`. The engine does the rest the same way
for both: audio in and out, events, the record.

Commands go in through `Engine.send` (a queue); events come out of `Engine.events`, a bounded
queue: when the reader is slow, the oldest events are dropped (and counted) rather than stalling
the audio. Qt never appears here; the GUI drains `events` on a timer.

When the model is slower than real time, the engine drops the user's frames that piled up
(counted) instead of letting latency grow, and says once that this machine cannot keep up.
A worker exception becomes an `ErrorEvent`; the engine stops cleanly, keeps the record, and can be
started again (a lost connection is connected again, and the conversation goes on).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

FRAME_SIZE = 1920
FRAME_SECONDS = 0.08

# --- Commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Load the model if needed, open the audio, and talk (continuing a stopped conversation).

    `config` is handed to the engine's `load_pipeline` and `open_audio`; when its `model_key`
    differs from the loaded model's, the model is loaded again (and a new conversation begins).
    """

    config: object = None


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

    def to_model(self):
        from model.generate import SamplingSettings

        return SamplingSettings(
            self.temperature, self.top_k, self.text_temperature, self.text_top_k
        )


@dataclass(frozen=True)
class Export:
    """Write the conversation to `path`; the format follows the suffix (see app.session)."""

    path: str


@dataclass(frozen=True)
class Shutdown:
    pass


# --- Events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    # "loading", "connecting" (to a server), "waiting" (for a slot on a busy server), "running",
    # "stopped", "finished" (the input file ended), "error"
    state: str


ACTIVE_STATES = ("loading", "connecting", "waiting", "running")
"""The states in which Stop has something to stop."""


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
    elapsed: float  # seconds of conversation
    remote: object = None  # app.remote.RemoteStats when Moshi runs on a server


@dataclass(frozen=True)
class Notice:
    message: str  # a warning worth showing once


@dataclass(frozen=True)
class ErrorEvent:
    message: str


@dataclass(frozen=True)
class Exported:
    path: str


# --- What computes the frames ---------------------------------------------------------------------


@runtime_checkable
class Connection(Protocol):
    """A compute that runs elsewhere (app.remote.RemoteSession): it connects before the first
    frame and can be lost at any time. Besides `step(pcm)`, `reset()` and `sampling` (read when
    connecting), it has:"""

    def connect(self) -> None:
        """Start connecting; return at once."""

    def wait_ready(self, timeout: float) -> bool:
        """True once the far end is ready for frames; raises (a UserError) when it cannot be."""

    @property
    def waiting(self) -> bool:
        """Connected, but the far end is busy: the engine shows "waiting"."""

    def disconnect(self) -> None:
        """Close; return at once."""

    def stats(self) -> object:
        """What matters about the link, for `Stats.remote`."""


# --- The engine ----------------------------------------------------------------------------------

_SPEAKING_RMS = 0.01  # Moshi's frame louder than this counts as speaking (half duplex)
_HANGOVER_FRAMES = 4  # keep the microphone muted this many frames after Moshi stops
_STATS_EVERY = 5  # frames between Stats events


@dataclass
class _Timing:
    recent: dict[str, deque] = field(default_factory=dict)

    def add(self, ms: dict[str, float]) -> None:
        for stage, value in ms.items():
            self.recent.setdefault(stage, deque(maxlen=25)).append(value)

    def p50(self) -> dict[str, float]:
        return {stage: float(np.median(values)) for stage, values in self.recent.items()}


class Engine:
    """Owns a pipeline (loaded on the first Start) and an audio device while running."""

    def __init__(
        self,
        load_pipeline: Callable[[object], object],  # config -> the compute (see Connection)
        open_audio: Callable[[object], object],
        *,
        new_record: Callable[[], object] | None = None,
        max_events: int = 500,
    ):
        self._load_pipeline = load_pipeline
        self._open_audio = open_audio
        self._new_record = new_record
        self._commands: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue(maxsize=max_events)
        self._thread = threading.Thread(target=self._run, name="moshi-engine", daemon=True)
        self.pipeline = None
        self._model_key = None  # what the loaded pipeline was loaded from
        self._config = None  # of the last Start
        self.audio = None
        self.record = None
        self.state = "stopped"
        self.muted = False
        self.half_duplex = False
        self.dropped_events = 0
        self._sampling = None  # settings sent before the model was loaded
        self._frame = 0  # frames of this conversation so far
        self._reset_counters()

    # Called from any thread.
    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def send(self, command: object) -> None:
        self._commands.put(command)

    def close(self, timeout: float = 10.0) -> None:
        self.send(Shutdown())
        if self._thread.is_alive():
            self._thread.join(timeout)

    # Everything below runs on the engine thread.
    def _emit(self, event: object) -> None:
        while True:
            try:
                self.events.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.events.get_nowait()  # the reader is behind: drop the oldest
                    self.dropped_events += 1
                except queue.Empty:
                    pass

    def _set_state(self, state: str) -> None:
        self.state = state
        self._emit(StateChanged(state))

    def _reset_counters(self) -> None:
        self._timing = _Timing()
        self._dropped_frames = 0
        self._speaking_hangover = 0
        self._warned_slow = False

    def _run(self) -> None:
        while True:
            frame = None
            try:  # a worker exception must not kill the thread
                if self.state == "running":
                    frame = self._read()
                elif self.state in ("connecting", "waiting"):
                    self._poll_connection()
            except Exception as e:
                self._fail(e)
            # Commands sent before a frame arrived apply to that frame.
            block = self.state not in ACTIVE_STATES
            while True:
                try:
                    command = self._commands.get(block=block)
                except queue.Empty:
                    break
                if isinstance(command, Shutdown):
                    self._release()
                    self._close_record()
                    return
                self._handle(command)
                block = False
            if frame is not None and self.state == "running":
                try:
                    self._step(frame)
                except Exception as e:
                    self._fail(e)

    def _handle(self, command: object) -> None:
        try:
            if isinstance(command, Start):
                self._start(command.config)
            elif isinstance(command, Stop):
                self._release()
                self._set_state("stopped")
            elif isinstance(command, NewConversation):
                self._new_conversation()
            elif isinstance(command, Mute):
                self.muted = command.muted
            elif isinstance(command, SetHalfDuplex):
                self.half_duplex = command.enabled
            elif isinstance(command, Export):
                self._export(command.path)
            elif isinstance(command, SetSampling):
                self._sampling = command
                self._apply_sampling()
        except Exception as e:
            self._fail(e)

    def _apply_sampling(self) -> None:
        """A server takes the settings as they are (it reads them when connecting); the local
        model takes model.generate.SamplingSettings."""
        if self.pipeline is not None and self._sampling is not None:
            remote = isinstance(self.pipeline, Connection)
            self.pipeline.sampling = self._sampling if remote else self._sampling.to_model()

    def _warm_up(self) -> None:
        """A local model runs a few silent frames while it loads, with the user's sampling
        settings in place (`model.pipeline.Pipeline.warm_up`), so that the conversation's first
        frames run at full speed, without a CUDA graph capture among them."""
        warm_up = getattr(self.pipeline, "warm_up", None)  # a server's session has none
        if warm_up is not None:
            warm_up()

    def _start(self, config: object) -> None:
        if self.state in ACTIVE_STATES:
            return
        model_key = getattr(config, "model_key", None)
        if self.pipeline is not None and model_key != self._model_key:
            self.pipeline = None  # another model: load it, and start a new conversation
            self._new_conversation()
        if self.pipeline is None:
            self._set_state("loading")
            self.pipeline = self._load_pipeline(config)
            self._model_key = model_key
            self._apply_sampling()
            self._warm_up()
        self._config = config
        if isinstance(self.pipeline, Connection):
            self._connect()
        else:
            self._open_audio_and_run()

    def _connect(self) -> None:
        """Connect; `_poll_connection` opens the audio once the far end is ready."""
        self._set_state("connecting")
        self.pipeline.connect()

    def _poll_connection(self) -> None:
        if self.pipeline.wait_ready(0.1):
            self._open_audio_and_run()
        elif self.pipeline.waiting and self.state != "waiting":
            self._set_state("waiting")

    def _open_audio_and_run(self) -> None:
        self._ensure_record()
        self.audio = self._open_audio(self._config)
        self.audio.start()
        self._set_state("running")

    def _ensure_record(self) -> None:
        """A record once the conversation runs (a server that cannot be reached leaves none)."""
        if self.record is None and self._new_record is not None:
            self.record = self._new_record()

    def _export(self, path: str) -> None:
        """A failed export is reported and changes nothing else: the record stays."""
        if self.record is None:
            self._emit(ErrorEvent("There is nothing to export yet: start a conversation first."))
            return
        try:
            self.record.export(path)
        except Exception as e:
            self._emit(ErrorEvent(_describe(e)))
        else:
            self._emit(Exported(path))

    def _new_conversation(self) -> None:
        if self.pipeline is not None:
            self.pipeline.reset()
        self._close_record()
        self._frame = 0
        self._reset_counters()
        if self.state in ("connecting", "waiting", "running"):
            if isinstance(self.pipeline, Connection):  # reset() closed the connection
                self._stop_audio()
                self._connect()
            else:
                self._ensure_record()

    def _stop_audio(self) -> None:
        audio, self.audio = self.audio, None
        if audio is not None:
            audio.stop()

    def _release(self) -> None:
        """Close the audio and the connection, if any."""
        try:
            self._stop_audio()
        finally:
            if isinstance(self.pipeline, Connection):
                self.pipeline.disconnect()

    def _close_record(self) -> None:
        record, self.record = self.record, None
        if record is not None and hasattr(record, "close"):
            record.close()

    def _fail(self, error: Exception) -> None:
        try:
            self._release()
        except Exception:
            pass
        self._emit(ErrorEvent(_describe(error, local=not isinstance(self.pipeline, Connection))))
        self._set_state("error")

    def _read(self) -> np.ndarray | None:
        """The user's next frame, or None (none yet, or the input file ended)."""
        audio = self.audio
        frame = audio.read_frame(timeout=0.2)
        if frame is None:
            if audio.finished:
                self._release()
                self._set_state("finished")
            return None
        if audio.realtime:  # frames that piled up while the model worked: keep only the newest
            while (newer := audio.read_frame(timeout=0)) is not None:
                frame = newer
                self._dropped_frames += 1
        return frame

    def _step(self, frame: np.ndarray) -> None:
        audio = self.audio
        heard = frame
        if self.muted or (self.half_duplex and self._speaking_hangover > 0):
            heard = np.zeros_like(frame)

        started = time.perf_counter()
        result = self.pipeline.step(heard)
        compute_ms = 1000 * (time.perf_counter() - started)
        if result.pcm is not None:
            audio.write_frame(result.pcm)
            speaking = float(np.sqrt(np.mean(result.pcm**2))) > _SPEAKING_RMS
            self._speaking_hangover = (
                _HANGOVER_FRAMES if speaking else max(0, self._speaking_hangover - 1)
            )

        now = self._frame * FRAME_SECONDS
        if self.record is not None:
            self.record.add_frame(self._frame, frame, result.pcm, result.text)
        if result.text:
            self._emit(TextPiece(result.text, now))
        moshi = result.pcm if result.pcm is not None else np.zeros(FRAME_SIZE, np.float32)
        self._emit(AudioBlock(frame, moshi, now))
        self._timing.add({**result.ms, "total": compute_ms})
        self._frame += 1
        if self._frame % _STATS_EVERY == 0:
            self._emit(self._stats(now))

    def _stats(self, now: float) -> Stats:
        p50 = self._timing.p50()
        rtf = p50.get("total", 0.0) / (1000 * FRAME_SECONDS)
        audio_stats = self.audio.stats() if self.audio is not None else None
        playback_ms = getattr(audio_stats, "playback_buffer_ms", 0.0)
        remote = self.pipeline.stats() if isinstance(self.pipeline, Connection) else None
        # A frame waits to be whole (80 ms), is computed (here, or on the server and back),
        # waits in the playback buffer(s), and Moshi's codebooks 1..7 lag one frame (80 ms).
        if remote is None:
            latency = 1000 * FRAME_SECONDS * 2 + p50.get("total", 0.0) + playback_ms
        else:
            latency = 1000 * FRAME_SECONDS * 2 + remote.rtt_ms + remote.buffer_ms + playback_ms
        self._warn_if_slow(p50, rtf, remote)
        return Stats(
            p50,
            rtf,
            latency,
            self._dropped_frames,
            getattr(audio_stats, "underruns", 0),
            getattr(audio_stats, "overruns", 0),
            self.dropped_events,
            now + FRAME_SECONDS,
            remote,
        )

    def _warn_if_slow(self, p50: dict[str, float], rtf: float, remote) -> None:
        """Say once that the conversation cannot be live: this machine, or the server or the
        network, is slower than real time."""
        if self._warned_slow or self._frame < 25 or not self.audio.realtime:
            return
        if remote is not None and remote.missed_ms > 2000:
            message = (
                f"Moshi's voice arrives late from the server ({remote.missed_ms / 1000:.1f} s "
                "missed so far): the server or the network is slower than real time."
            )
        elif remote is None and rtf > 1.0:
            message = (
                f"This machine cannot run Moshi in real time ({p50['total']:.0f} ms for each "
                "80 ms frame): your voice is being skipped. A GPU is needed for a live "
                "conversation."
            )
        else:
            return
        self._warned_slow = True
        self._emit(Notice(message))


def _describe(error: Exception, local: bool = True) -> str:
    """One line for the user; running out of GPU memory here gets advice."""
    from .errors import UserError

    first_line = (str(error) or type(error).__name__).splitlines()[0]
    if local and "out of memory" in first_line.lower():
        return (
            "The GPU ran out of memory: close other programs using it, or run the model in "
            f"int8 (--dtype int8). ({first_line})"
        )
    if isinstance(error, UserError):
        return first_line
    return f"{type(error).__name__}: {first_line}"
