"""How a run is described, and the local backend: Moshi runs on this machine, heard through its
microphone and speakers.

The GUI describes a run with a `RunConfig` (plain values, read from the settings when the user
presses Start); the engine thread calls `load_pipeline(config)` and `open_audio(config)`. With
`server` set, Moshi runs on Kyutai's server instead (app.remote) and the model settings are unused;
the audio is the same. The model package is imported only inside these functions, so the GUI never
loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class RunConfig:
    model: str
    revision: str | None = None
    offline: bool = False
    device: str = "auto"
    dtype: str = "auto"
    seed: int | None = None
    input_device: str | None = None
    output_device: str | None = None
    input_file: Path | None = None  # instead of the microphone (tests, demos)
    server: str | None = None  # Kyutai's Moshi server (a ws:// or wss:// URL) instead of the model

    @property
    def model_key(self) -> tuple:
        """What, when it changes, needs the model loaded (or the server chosen) again."""
        if self.server is not None:
            return ("server", self.server)
        return (self.model, self.revision, self.device, self.dtype)


def locate(config: RunConfig, download: bool = False):
    from model.checkpoint import CheckpointError
    from model.hub import locate_model

    try:
        return locate_model(
            config.model,
            revision=config.revision,
            offline=config.offline or None,
            download=download,
        )
    except CheckpointError as e:
        raise UserError(f"cannot load the model: {e}") from e


def is_cached(config: RunConfig) -> bool:
    """Whether the model's files are all on this machine (looks at the cache only)."""
    try:
        locate(config)
        return True
    except UserError:
        return False


def load_files(
    files,
    device: str,
    dtype: str,
    *,
    sampling=None,
    seed: int | None = None,
    cuda_graphs: bool | None = None,
):
    """A pipeline from located model files; every failure to load is a UserError.
    `cuda_graphs`: None replays CUDA graphs on a CUDA device unless NO_CUDA_GRAPH=1."""
    from model.checkpoint import CheckpointError
    from model.config import ConfigError
    from model.pipeline import Pipeline
    from model.text import TokenizerError

    try:
        return Pipeline.load(
            files, device, dtype, sampling=sampling, seed=seed, cuda_graphs=cuda_graphs
        )
    except (CheckpointError, ConfigError, TokenizerError) as e:
        raise UserError(f"cannot load the model: {e}") from e
    except RuntimeError as e:  # no such device, out of memory while loading
        raise UserError(f"cannot load the model on {device}: {e}") from e


def load_pipeline(config: RunConfig):
    """What computes Moshi's frames: the model, loaded here, or a session with the server."""
    if config.server is not None:
        from .remote import RemoteSession

        return RemoteSession(config.server, seed=config.seed)
    return load_files(locate(config), config.device, config.dtype, seed=config.seed)


# A download this big is a full-size Moshi (7B: 15.4 GB in bfloat16, 8 GB in int8), which a CPU
# runs many times slower than real time (`doctor` says about 20x).
_BIG_DOWNLOAD = 4_000_000_000


def download_advice(config: RunConfig, check) -> str:
    """What to know before downloading the model `check` (an app.fetch.CheckResult) describes:
    that this machine cannot hold a live conversation with it, when the model is full-size and
    it would run on the CPU. Imports torch: call it off the GUI thread."""
    if check.total_size is None or check.total_size < _BIG_DOWNLOAD:
        return ""
    from model.pipeline import resolve_device

    try:
        device = resolve_device(config.device)
    except RuntimeError as e:  # CUDA asked for and not there, say
        return f"{e}."
    if device.type != "cpu":
        return ""
    where = "has no GPU that PyTorch can use" if config.device == "auto" else "is set to the CPU"
    return (
        f"This computer {where}: a model this size runs there many times slower than real "
        "time, too slow for a conversation (moshi-desktop talk still works on audio files). "
        "To talk with Moshi, choose “On a server” in Settings → Where Moshi runs."
    )


def open_audio(config: RunConfig):
    from .audio import DeviceAudio, FileAudio

    if config.input_file is not None:
        return FileAudio(config.input_file, realtime=True, trailing_silence=5.0)
    return DeviceAudio(config.input_device, config.output_device)


def audio_devices() -> list[tuple[str, bool, bool]]:
    """(name, has input, has output) of each audio device; empty without PortAudio."""
    from .audio import list_devices

    try:
        return [(d.name, d.input_channels > 0, d.output_channels > 0) for d in list_devices()]
    except UserError:
        return []
