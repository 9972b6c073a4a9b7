"""The local backend: Moshi runs on this machine (`model.pipeline.Pipeline`).

`LocalCompute` is the engine's `Compute` around a loaded pipeline; `locate` and `load_files` find
and load the model, turning every failure into a UserError. The model package is imported only
inside these functions, so the GUI never loads torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from model.config import SAMPLE_RATE

from ..errors import UserError
from .messages import SetSampling

if TYPE_CHECKING:
    from .run import RunConfig


def locate(
    model: str,
    revision: str | None = None,
    offline: bool = False,
    *,
    lora: str | None = None,
    download: bool = False,
    progress=None,
):
    """The files of `model` (a folder, or a repository at `revision`), from the cache or, with
    `download`, fetched (`progress`: a model.hub.ProgressCallback), with the LoRA at `lora` (a
    folder or file) on top; failures are UserErrors."""
    from model.files import CheckpointError, with_lora
    from model.hub import locate_model

    try:
        files = locate_model(
            model, revision=revision, offline=offline or None, download=download, progress=progress
        )
    except CheckpointError as e:
        raise UserError(f"cannot load the model: {e}") from e
    try:
        return with_lora(files, lora)
    except CheckpointError as e:
        raise UserError(f"cannot load the LoRA: {e}") from e


def is_cached(config: RunConfig) -> bool:
    """Whether the model's files are all on this machine (looks at the cache only)."""
    try:
        locate(config.model, config.revision, config.offline)
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
    threads: int | None = None,
):
    """A pipeline from located model files; every failure to load is a UserError.
    `cuda_graphs`: None replays CUDA graphs on a CUDA device unless NO_CUDA_GRAPH=1."""
    from model.config import ConfigError
    from model.files import CheckpointError
    from model.pipeline import Pipeline
    from model.text import TokenizerError

    try:
        return Pipeline.load(
            files,
            device,
            dtype,
            sampling=sampling,
            seed=seed,
            cuda_graphs=cuda_graphs,
            threads=threads,
        )
    except (CheckpointError, ConfigError, TokenizerError, ValueError) as e:
        raise UserError(f"cannot load the model: {e}") from e
    except RuntimeError as e:  # no such device, out of memory while loading
        raise UserError(f"cannot load the model on {device}: {e}") from e


def voice_prompt(voice: str, files):
    """The PersonaPlex voice prompt `voice` names: a voice packaged with the model (NATF2), a .pt
    voice prompt, or a recording of 5 to 20 s of a voice (any format and rate `read_audio`
    takes). Every failure is a UserError."""
    from model.files import CheckpointError
    from model.persona import VoicePrompt, packaged_voice
    from model.voices import is_voice_name, voice_length_problem

    from ..audio.files import read_audio

    path = Path(voice).expanduser()
    try:
        if is_voice_name(voice) and not path.is_file():
            return packaged_voice(files.folder, voice, files.config.lm)
        if path.suffix.lower() == ".pt":
            return VoicePrompt.load(path, files.config.lm)
        audio = read_audio(path)
        problem = voice_length_problem(len(audio) / SAMPLE_RATE)
        if problem:
            raise UserError(f"cannot use {path.name} as a voice: {problem}")
        return VoicePrompt.from_audio(audio)
    except CheckpointError as e:
        raise UserError(f"cannot use the voice: {e}") from None
    except ValueError as e:  # too short to measure its loudness, say
        raise UserError(f"cannot use the voice {path.name}: {e}") from None


def set_persona(pipeline, voice: str | None, persona: str | None) -> None:
    """PersonaPlex's voice (see `voice_prompt`) and persona for the pipeline's next
    conversation; nothing when neither is asked. A model that is not PersonaPlex takes neither:
    a UserError."""
    if voice is None and persona is None:
        return
    if not pipeline.personaplex:
        raise UserError(
            "a voice and a persona need a PersonaPlex model (nvidia/personaplex-7b-v1, or a "
            "folder in its layout): this model takes neither"
        )
    prompt = voice_prompt(voice, pipeline.files) if voice else None
    pipeline.set_persona(prompt, persona or "")


# A download this big is a full-size Moshi (7B: 15.4 GB in bfloat16, 8 GB in int8), which a CPU
# runs many times slower than real time (`doctor` says about 20x).
_BIG_DOWNLOAD = 4_000_000_000


def download_advice(config: RunConfig, check) -> str:
    """What to know before downloading the model `check` (an app.engine.fetch.CheckResult) describes:
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


class LocalCompute:
    """The engine's `Compute` for a pipeline on this machine: always connected, no link."""

    connected = True
    waiting = False

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline  # model.pipeline.Pipeline, or anything that steps like it
        self._persona: tuple[str | None, str | None] = (None, None)

    def set_sampling(self, sampling: SetSampling) -> None:
        from model.generate import SamplingSettings

        self.pipeline.sampling = SamplingSettings(
            sampling.temperature, sampling.top_k, sampling.text_temperature, sampling.text_top_k
        )

    def set_persona(self, voice: str | None, persona: str | None) -> None:
        """PersonaPlex's voice and persona, from the next conversation (`set_persona`). The
        voice is read once: a new persona with it does not read it again."""
        if (voice, persona) == self._persona:
            return
        if voice is not None and voice == self._persona[0] and self.pipeline.personaplex:
            self.pipeline.set_persona(self.pipeline.voice, persona or "")
        else:
            set_persona(self.pipeline, voice, persona)
        self._persona = (voice, persona)

    def warm_up(self) -> None:
        """A few silent frames with the user's sampling settings in place
        (`model.pipeline.Pipeline.warm_up`), so the conversation's first frames run at full
        speed, without a CUDA graph capture among them."""
        self.pipeline.warm_up()

    def connect(self) -> None:
        pass

    def wait_ready(self, timeout: float) -> bool:
        return True

    def step(self, pcm):
        return self.pipeline.step(pcm)

    def reset(self) -> None:
        self.pipeline.reset()

    def disconnect(self) -> None:
        pass

    def stats(self) -> None:
        return None

    @property
    def gpu_mb(self) -> float | None:
        """The CUDA memory the model holds now, in MB; None off a CUDA GPU."""
        device = getattr(self.pipeline, "device", None)
        if device is None or device.type != "cuda":
            return None
        import torch

        return torch.cuda.memory_allocated(device) / 1e6

    @property
    def threads(self) -> int | None:
        """The CPU threads computing now (they follow the free cores); None on a GPU."""
        policy = getattr(self.pipeline, "thread_policy", None)
        return policy.threads if policy is not None else None
