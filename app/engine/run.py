"""How a run is described, and what it opens: the compute (the model here, or Kyutai's server)
and the audio (the microphone and speaker, or a file).

The GUI describes a run with a `RunConfig` (plain values, read from the settings when the user
presses Start); the engine thread calls `open_compute(config)` and `open_audio(config)`. The model
package is imported only inside these functions, so the GUI never loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .compute import Compute


@dataclass(frozen=True)
class RunConfig:
    model: str
    revision: str | None = None
    lora: str | None = None  # a LoRA from moshi-finetune on top of the model: its folder or file
    offline: bool = False
    device: str = "auto"
    dtype: str = "auto"
    seed: int | None = None
    threads: int | None = None  # CPU threads; None: the free cores (model/cpu/threads.py)
    input_device: str | None = None
    output_device: str | None = None
    input_file: Path | None = None  # instead of the microphone (tests, demos)
    server: str | None = None  # Kyutai's Moshi server (a ws:// or wss:// URL) instead of the model
    # PersonaPlex: the voice (a packaged voice's name, or a .pt or recording's path) and the
    # persona (role text) of the next conversation; None: not asked (a Moshi takes neither).
    voice: str | None = None
    persona: str | None = None
    echo_cancellation: bool = False  # cancel Moshi's echo from the microphone (app/audio/echo.py)
    noise_suppression: str = "off"  # off, low, high

    @property
    def model_key(self) -> tuple:
        """What, when it changes, needs the model loaded (or the server chosen) again."""
        if self.server is not None:
            return ("server", self.server)
        return (self.model, self.revision, self.lora, self.device, self.dtype)


def open_compute(config: RunConfig) -> Compute:
    """What computes Moshi's frames: the model, loaded here, or a session with the server."""
    if config.server is not None:
        from .remote import RemoteSession

        return RemoteSession(config.server, seed=config.seed)
    from .local import LocalCompute, load_files, locate

    files = locate(config.model, config.revision, config.offline, lora=config.lora)
    return LocalCompute(
        load_files(files, config.device, config.dtype, seed=config.seed, threads=config.threads)
    )


def loading_note(config: RunConfig | None) -> str:
    """What loading this model will take besides reading it, worth saying while it loads: the
    first run on a CPU builds our CPU kernel for it (seconds, once); PersonaPlex takes in its
    voice and persona (seconds; later conversations with them start at once)."""
    if config is None or config.server is not None:
        return ""
    from model.cpu import native
    from model.pipeline import resolve_device

    notes = []
    try:
        on_cpu = resolve_device(config.device).type == "cpu"
    except RuntimeError:  # the device asked for is not there: loading will say so
        return ""
    if on_cpu and native.will_build():
        notes.append("building the CPU kernel for this computer, once (about 10 s)")
    if config.voice is not None or config.persona is not None:
        notes.append("taking in the voice and persona")
    return ", then ".join(notes)


def open_audio(config: RunConfig):
    from ..audio.devices import DeviceAudio
    from ..audio.echo import with_processing
    from ..audio.from_file import FileAudio

    if config.input_file is not None:
        audio = FileAudio(config.input_file, realtime=True, trailing_silence=5.0)
    else:
        audio = DeviceAudio(config.input_device, config.output_device)
    return with_processing(audio, config.echo_cancellation, config.noise_suppression)
