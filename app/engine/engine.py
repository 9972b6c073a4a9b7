"""The realtime engine: a worker thread that holds the conversation.

    GUI / terminal --commands--> engine thread: read a 1920-sample frame of the user's voice,
        compute Moshi's answer, play Moshi's frame, record both --events--> GUI

Where Moshi's frames are computed is the engine's *compute* (`app.engine.compute.Compute`), made
by `open_compute(config)`: the local model (`app.engine.local.LocalCompute`: Mimi encode -> LM
step -> Mimi decode) or Kyutai's server (`app.engine.remote.RemoteSession`). The engine does the
rest the same way for both, and never asks which it has: audio in and out, events, the record.

Commands go in through `Engine.send` (a queue); events come out of `Engine.events`, a bounded
queue: when the reader is slow, the oldest events are dropped (and counted) rather than stalling
the audio. Qt never appears here; the GUI drains `events` on a timer.

When the model is slower than real time, the engine drops the user's frames that piled up
(counted) instead of letting latency grow, and says once that this machine cannot keep up.
A worker exception becomes an `ErrorEvent`; the engine stops cleanly, keeps the record, and can be
started again (a lost connection is connected again, and the conversation goes on).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from model.config import FRAME_SECONDS, FRAME_SIZE

from ..audio.interface import silence_nonfinite
from ..errors import UserError
from ..logs import SHOWN
from .compute import Compute
from .messages import (
    AudioBlock,
    Autosave,
    EngineState,
    ErrorEvent,
    Export,
    Exported,
    FallingBehind,
    Mute,
    NewConversation,
    Notice,
    SetHalfDuplex,
    SetPersona,
    SetSampling,
    Shutdown,
    Start,
    StateChanged,
    Stats,
    Stop,
    TextPiece,
)
from .run import RunConfig

log = logging.getLogger(__name__)

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
    """Owns a compute (loaded on the first Start) and an audio device while running."""

    def __init__(
        self,
        open_compute: Callable[[RunConfig], Compute],
        open_audio: Callable[[RunConfig], object],  # -> an app.audio.interface.AudioIO
        *,
        new_record: Callable[[str, dict], object] | None = None,  # (model, settings) -> record
        loading_note: Callable[[RunConfig], str] | None = None,  # what loading will also do
        max_events: int = 500,
    ):
        self._open_compute = open_compute
        self._open_audio = open_audio
        self._new_record = new_record
        self._loading_note = loading_note
        self._commands: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue(maxsize=max_events)
        self._thread = threading.Thread(target=self._run, name="moshi-engine", daemon=True)
        self.compute: Compute | None = None
        self._model_key = None  # what the compute was made from
        self._config = None  # of the last Start
        self._opened_audio = None  # found by Start, started once the compute is ready
        self._seed = None  # the one the compute was made with
        self.audio = None
        self.record = None
        self.state = EngineState.STOPPED
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

    def _set_state(self, state: EngineState, detail: str = "") -> None:
        self.state = state
        self._emit(StateChanged(state, detail))

    def _reset_counters(self) -> None:
        self._timing = _Timing()
        self._dropped_frames = 0
        self._skipped = 0  # frames to leave as a gap before the next one
        self._overrun_frames = 0  # frames the input buffer dropped, as counted so far
        self._silenced = 0
        self._autosave_reported = False
        self._speaking_hangover = 0
        self._warned_slow = False

    def _run(self) -> None:
        while True:
            frame = None
            try:  # a worker exception must not kill the thread
                if self.state is EngineState.RUNNING:
                    frame = self._read()
                elif self.state in (EngineState.CONNECTING, EngineState.WAITING):
                    self._poll_connection()
            except Exception as e:
                self._fail(e)
            # Commands sent before a frame arrived apply to that frame.
            block = not self.state.active
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
            if frame is not None and self.state is EngineState.RUNNING:
                try:
                    self._step(frame)
                except Exception as e:
                    self._fail(e)

    def _handle(self, command: object) -> None:
        try:
            self._HANDLERS[type(command)](self, command)
        except Exception as e:
            self._fail(e)

    def _on_stop(self, command: Stop) -> None:
        self._release()
        self._set_state(EngineState.STOPPED)

    def _on_mute(self, command: Mute) -> None:
        self.muted = command.muted

    def _on_half_duplex(self, command: SetHalfDuplex) -> None:
        self.half_duplex = command.enabled

    def _on_sampling(self, command: SetSampling) -> None:
        self._sampling = command
        self._apply_sampling()

    def _apply_sampling(self) -> None:
        if self.compute is not None and self._sampling is not None:
            self.compute.set_sampling(self._sampling)

    def _on_start(self, command: Start) -> None:
        if self.state.active:
            return
        config = command.config
        # The microphone and speaker (or the input file) are found first: a missing one is said
        # at once, not after the model has loaded. They start once the compute is ready.
        self._opened_audio = self._open_audio(config)
        model_key = getattr(config, "model_key", None)
        if self.compute is not None and model_key != self._model_key:
            self.compute = None  # another model: load it, and start a new conversation
            self._new_conversation()
        if self.compute is None:
            note = self._loading_note(config) if self._loading_note is not None else ""
            self._set_state(EngineState.LOADING, note)
            self.compute = self._open_compute(config)
            self._model_key = model_key
            self._seed = getattr(config, "seed", None)  # a seed takes effect as the model loads
            self._apply_sampling()
            self._apply_persona(config)  # before the warm-up, which runs its prompt once
            self.compute.warm_up()
        else:
            self._apply_persona(config)  # from the next conversation
        self._config = config
        self._fall_back_to_half_duplex(config)
        self._connect()

    def _apply_persona(self, config) -> None:
        """PersonaPlex's voice and persona, where the run asks for them."""
        voice, persona = getattr(config, "voice", None), getattr(config, "persona", None)
        if voice is not None or persona is not None:
            self.compute.set_persona(voice, persona)

    def _on_set_persona(self, command: SetPersona) -> None:
        """For the next conversation; a voice that cannot be used is said and changes nothing
        else (the conversation goes on). Before the model loads, the next Start's config says."""
        if dataclasses.is_dataclass(self._config):  # what the next record says
            self._config = dataclasses.replace(
                self._config, voice=command.voice, persona=command.persona
            )
        if self.compute is None:
            return
        try:
            self._apply_persona(command)
        except UserError as e:
            log.warning("cannot use the voice or persona: %s", e)
            self._emit(ErrorEvent(str(e)))

    def _fall_back_to_half_duplex(self, config: RunConfig) -> None:
        """Echo cancellation asked for but unavailable: half duplex instead, said once a start."""
        if not getattr(config, "echo_cancellation", False):
            return
        from ..audio.echo import available

        why = available()
        if why is not None:
            self.half_duplex = True
            self._emit(
                Notice(
                    f"{why[0].upper()}{why[1:]}. Half duplex instead: your microphone is "
                    "muted while Moshi speaks."
                )  # fmt: skip
            )

    def _connect(self) -> None:
        """Connect; the audio opens once the far end is ready (at once for a local model)."""
        self.compute.connect()
        if self.compute.wait_ready(0):
            self._open_audio_and_run()
        else:
            self._set_state(EngineState.CONNECTING)

    def _poll_connection(self) -> None:
        if self.compute.wait_ready(0.1):
            self._open_audio_and_run()
        elif self.compute.waiting and self.state is not EngineState.WAITING:
            self._set_state(EngineState.WAITING)

    def _open_audio_and_run(self) -> None:
        audio, self._opened_audio = self._opened_audio, None
        self.audio = audio if audio is not None else self._open_audio(self._config)
        self._ensure_record()  # it says whether the echo canceller is on
        self.audio.start()
        self._overrun_frames = self._overrun_frames_now()
        self._set_state(EngineState.RUNNING)

    def _ensure_record(self) -> None:
        """A record once the conversation runs (a server that cannot be reached leaves none)."""
        if self.record is None and self._new_record is not None:
            self.record = self._new_record(*self._about())
            folder = getattr(self.record, "folder", None)
            self._emit(Autosave(str(folder) if folder is not None else None))

    def _about(self) -> tuple[str, dict]:
        """What made this conversation, for its record and every export: the model (or the
        server), where and how it ran, the sampling settings, the seed and the app's version."""
        from .. import __version__

        config, sampling = self._config, self._sampling
        settings: dict = {}
        if config is not None:
            settings.update(
                revision=config.revision, device=config.device, dtype=config.dtype, seed=self._seed
            )
            if getattr(config, "lora", None):
                settings["lora"] = str(config.lora)
            for key in ("voice", "persona"):  # PersonaPlex's
                if getattr(config, key, None) is not None:
                    settings[key] = getattr(config, key)
        if sampling is not None:
            settings.update(dataclasses.asdict(sampling))
        # What processed the user's voice before Moshi heard it (and the record keeps).
        settings["echo_cancellation"] = bool(getattr(self.audio, "echo_cancellation", False))
        settings["noise_suppression"] = getattr(self.audio, "noise_suppression", "off")
        settings["app_version"] = __version__
        model = "" if config is None else (config.server or config.model)
        return model, settings

    def _on_export(self, command: Export) -> None:
        """A failed export is reported and changes nothing else: the record stays."""
        path = command.path
        if self.record is None:
            self._emit(ErrorEvent("There is nothing to export yet: start a conversation first."))
            return
        try:
            self.record.export(path)
        except Exception as e:
            log.error("export to %s failed", path, exc_info=True, extra=SHOWN)
            self._emit(ErrorEvent(_describe(e)))
        else:
            self._emit(Exported(path))

    def _on_new_conversation(self, command: NewConversation) -> None:
        self._new_conversation()

    def _new_conversation(self) -> None:
        if self.compute is not None:
            self.compute.reset()
        self._close_record()
        self._frame = 0
        self._reset_counters()
        if self.audio is not None:
            self._overrun_frames = self._overrun_frames_now()
        if self.state in (EngineState.CONNECTING, EngineState.WAITING, EngineState.RUNNING):
            if not self.compute.connected:  # reset() closed the link
                self._stop_audio()
                self._connect()
            else:
                self._ensure_record()

    def _stop_audio(self) -> None:
        self._opened_audio = None  # found, never started: nothing to close
        audio, self.audio = self.audio, None
        if audio is not None:
            audio.stop()

    def _release(self) -> None:
        """Close the audio and the connection, if any."""
        try:
            self._stop_audio()
        finally:
            if self.compute is not None:
                self.compute.disconnect()

    def _close_record(self) -> None:
        record, self.record = self.record, None
        if record is not None and hasattr(record, "close"):
            record.close()

    def _fail(self, error: Exception) -> None:
        log.error("the conversation stopped: %s", error, exc_info=error, extra=SHOWN)
        try:
            self._release()
        except Exception:
            log.warning("closing the audio after a failure failed too", exc_info=True)
        self._emit(ErrorEvent(_describe(error)))
        self._set_state(EngineState.ERROR)

    _HANDLERS: dict[type, Callable[[Engine, object], None]] = {
        Start: _on_start,
        Stop: _on_stop,
        NewConversation: _on_new_conversation,
        Mute: _on_mute,
        SetHalfDuplex: _on_half_duplex,
        SetPersona: _on_set_persona,
        SetSampling: _on_sampling,
        Export: _on_export,
    }

    def _read(self) -> np.ndarray | None:
        """The user's next frame, or None (none yet, or the input file ended). Frames skipped on
        the way (piled up while the model worked, or dropped by a full input buffer) leave a gap
        of that many frames in the timeline (`_skipped`), which runs by the wall clock."""
        audio = self.audio
        frame = audio.read_frame(timeout=0.2)
        if frame is None:
            if audio.finished:
                self._release()
                self._set_state(EngineState.FINISHED)
            return None
        if audio.realtime:  # frames that piled up while the model worked: keep only the newest
            while (newer := audio.read_frame(timeout=0)) is not None:
                frame = newer
                self._dropped_frames += 1
                self._skipped += 1
            overrun = self._overrun_frames_now()
            self._skipped += max(0, overrun - self._overrun_frames)
            self._overrun_frames = overrun
        self._silenced += silence_nonfinite(frame)  # however the audio came
        return frame

    def _overrun_frames_now(self) -> int:
        """Whole frames the audio's input buffer has dropped since it opened."""
        dropped_ms = getattr(self.audio.stats(), "input_dropped_ms", 0.0)
        return int(dropped_ms / (1000 * FRAME_SECONDS))

    def _step(self, frame: np.ndarray) -> None:
        """One frame: what Moshi hears (silence while muted, or while it speaks in half duplex)
        is what is computed, drawn and recorded; the captured voice goes no further."""
        audio = self.audio
        self._frame += self._skipped  # a gap in the timeline
        self._skipped = 0
        heard = frame
        if self.muted or (self.half_duplex and self._speaking_hangover > 0):
            heard = np.zeros_like(frame)

        started = time.perf_counter()
        result = self.compute.step(heard)
        compute_ms = 1000 * (time.perf_counter() - started)
        if result.pcm is not None:
            audio.write_frame(result.pcm)
            speaking = float(np.sqrt(np.mean(result.pcm**2))) > _SPEAKING_RMS
            self._speaking_hangover = (
                _HANGOVER_FRAMES if speaking else max(0, self._speaking_hangover - 1)
            )

        now = self._frame * FRAME_SECONDS
        if self.record is not None:
            self.record.add_frame(self._frame, heard, result.pcm, result.text)
            self._report_autosave()
        if result.text:
            self._emit(TextPiece(result.text, now))
        moshi = result.pcm if result.pcm is not None else np.zeros(FRAME_SIZE, np.float32)
        self._emit(AudioBlock(heard, moshi, now))
        processing_ms = getattr(audio, "processing_ms", None)  # echo cancellation, if on
        extra = {"audio processing": processing_ms} if processing_ms is not None else {}
        self._timing.add({**result.ms, "total": compute_ms, **extra})
        self._frame += 1
        if self._frame % _STATS_EVERY == 0:
            self._emit(self._stats(now))

    def _report_autosave(self) -> None:
        """Say once that the autosave stopped; the conversation goes on in memory."""
        error = getattr(self.record, "autosave_error", None)
        if error and not self._autosave_reported:
            self._autosave_reported = True
            log.warning("autosave stopped: %s", error, extra=SHOWN)
            self._emit(Autosave(None))
            self._emit(
                Notice(
                    f"The conversation is no longer saved to disk ({error}). It is kept in "
                    "memory: export it (File → Export) to keep it."
                )
            )

    def _stats(self, now: float) -> Stats:
        p50 = self._timing.p50()
        rtf = p50.get("total", 0.0) / (1000 * FRAME_SECONDS)
        audio_stats = self.audio.stats() if self.audio is not None else None
        playback_ms = getattr(audio_stats, "playback_buffer_ms", 0.0)
        remote = self.compute.stats()
        # A frame waits to be whole (80 ms), is computed (here, or on the server and back),
        # waits in the playback buffer(s), and Moshi's codebooks 1..7 lag one frame (80 ms).
        if remote is None:
            latency = 1000 * FRAME_SECONDS * 2 + p50.get("total", 0.0) + playback_ms
        else:
            latency = 1000 * FRAME_SECONDS * 2 + remote.rtt_ms + remote.buffer_ms + playback_ms
        stats = Stats(
            p50,
            rtf,
            latency,
            self._dropped_frames,
            getattr(audio_stats, "underruns", 0),
            getattr(audio_stats, "overruns", 0),
            self.dropped_events,
            now + FRAME_SECONDS,
            remote,
            self._silenced + getattr(audio_stats, "silenced_samples", 0),
            getattr(self.compute, "threads", None),
            getattr(self.compute, "gpu_mb", None),
        )
        self._warn_if_slow(stats)
        return stats

    def _warn_if_slow(self, stats: Stats) -> None:
        """Say once that the conversation cannot be live: this machine, or the server or the
        network, is slower than real time."""
        if self._warned_slow or self._frame < 25 or not self.audio.realtime:
            return
        remote = stats.remote
        late = remote is not None and remote.missed_ms > 2000
        if late or (remote is None and stats.rtf > 1.0):
            self._warned_slow = True
            self._emit(FallingBehind.of(stats))


def _describe(error: Exception) -> str:
    """The message for the user, whole (a load error may list one problem a line; the traceback
    is in the log); running out of GPU memory gets advice first (a server's errors are
    UserErrors, which say what they mean)."""
    text = str(error) or type(error).__name__
    if not isinstance(error, UserError) and "out of memory" in text.splitlines()[0].lower():
        return (
            "The GPU ran out of memory: close other programs using it, or run the model in "
            f"int8 (--dtype int8). ({text})"
        )
    if isinstance(error, UserError):
        return text
    return f"{type(error).__name__}: {text}"
