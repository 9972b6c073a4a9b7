"""The seam between the model and the app: one 80 ms frame of the user's voice in, Moshi's out.

    pcm [1920] at 24 kHz -> Mimi encode -> LM step (text token + Moshi's codes) -> Mimi decode
                         -> (text piece or "", pcm [1920] or None)

The first step returns no audio: Moshi's first frame is complete one step later (codebooks 1..7 are
delayed by a frame). Every frame given is stepped exactly once, in order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_lm, load_mimi
from .config import FRAME_SIZE, STT_MODEL_TYPE
from .cpu import speed_up
from .cpu.threads import ThreadPolicy
from .files import CheckpointError, ModelFiles, resolve_folder
from .generate import FrameGenerator, SamplingSettings
from .graphs import Graphed, graphs_wanted
from .lm import LM
from .memory import check_fits
from .mimi import Mimi
from .persona import PersonaGenerator, VoicePrompt, persona_tokens, run_as_the_fork
from .streaming import (
    reset_streaming,
    restore_streaming,
    save_streaming,
    start_streaming,
    stop_streaming,
)
from .text import IncrementalDetokenizer, TextTokenizer, open_tokenizer

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
INT8 = "int8"  # int8 weight-only linears (model/quant.py), floats at the default run dtype
INT4 = "int4"  # int4 weight-only transformer linears (model/int4.py), the rest as for int8


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for, but this torch build or machine has no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("MPS was asked for, but it is not available on this machine")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The LM's run dtype (its activations, embeddings and norms): bf16 on a GPU, fp32 on the CPU
    unless asked otherwise. "int8" (int8 weight-only linears, see `wants_int8`) runs at that same
    default: bf16 on a GPU, fp32 on the CPU."""
    if name is None or name in ("auto", INT8, INT4):
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise ValueError(
            f"unknown dtype {name!r} (expected one of {', '.join([*DTYPES, INT8, INT4])})"
        )
    return DTYPES[name]


def wants_int8(name: str | None) -> bool | None:
    """Whether the dtype name asks for int8 linears: True for "int8", else None (the checkpoint
    decides: a q8 checkpoint's linears stay int8, a float checkpoint's stay float)."""
    return True if name == INT8 else None


# The prompt states kept (`Pipeline._prompt`): the temporal transformer's keys and values of the
# prompt's few hundred steps, about 0.1 GB each for the 7B in bfloat16.
_PROMPTS_KEPT = 2


@dataclass
class _AfterPrompt:
    states: list  # model.streaming.save_streaming of the generator
    rng: torch.Tensor  # the random state after the prompt


def load_models(files: ModelFiles, device: str = "auto", dtype: str | None = None):
    """(Mimi, the LM) of `files` on `device` (a name, see `resolve_device`) at `dtype` (a name,
    see `Pipeline.load`); on the CPU in fp32, the modules' fast forms (model/cpu)."""
    dev = resolve_device(device)
    with torch.device("meta"):
        mimi_parameters = sum(p.numel() for p in Mimi(files.mimi_config).parameters())
    counted = "int8" if files.config.quantize and dtype != INT4 else dtype or "auto"  # a q8 file
    check_fits(files.config.lm, counted, dev, mimi_parameters)  # before anything is loaded
    mimi = speed_up(load_mimi(files, dev))
    lm = load_lm(
        files, dev, resolve_dtype(dtype, dev), quantize=wants_int8(dtype), int4=dtype == INT4
    )
    return mimi, speed_up(lm)


@dataclass
class StepResult:
    text: str  # the new piece of Moshi's inner monologue, "" if none
    pcm: np.ndarray | None  # [1920] float32 at 24 kHz, None on the first step
    text_token: int | None = None
    audio_tokens: list[int] | None = None
    ms: dict[str, float] = field(default_factory=dict)  # per stage: encode, lm, decode


class Pipeline:
    def __init__(
        self,
        mimi: Mimi,
        lm: LM,
        tokenizer: TextTokenizer,
        *,
        sampling: SamplingSettings | None = None,
        seed: int | None = None,
        files: ModelFiles | None = None,
        cuda_graphs: bool | None = None,
        threads: int | None = None,
    ):
        """`cuda_graphs`: replay each stage of a frame as a CUDA graph (`model/graphs.py`);
        None: on CUDA devices unless NO_CUDA_GRAPH=1. `threads`: the CPU threads to compute
        with; None follows the free cores (`model.cpu.threads`)."""
        self.mimi, self.lm, self.tokenizer, self.files = mimi, lm, tokenizer, files
        self.device = lm.device
        self.thread_policy = ThreadPolicy(threads) if self.device.type == "cpu" else None
        if sampling is None:
            sampling = SamplingSettings.from_lm_gen_config(
                files.config.lm_gen_config if files else {}
            )
        # PersonaPlex (model.persona): its depth transformer generates the user's codebooks too,
        # and a prompt schedule (voice, persona) runs before each conversation.
        self.personaplex = lm.cfg.dep_q == lm.cfg.n_q
        self.voice: VoicePrompt | None = None
        self.persona = ""
        self._voice_key = ""
        self._prompted = False
        self._seed = seed  # what the random state was seeded with for this conversation, if any
        # The model's state after each prompt (voice, persona) run lately: the next conversation
        # with the same ones starts from it instead of stepping through the prompt again.
        self._after_prompt: dict[tuple, _AfterPrompt] = {}
        self.generator: FrameGenerator | PersonaGenerator
        if self.personaplex:
            self.generator = PersonaGenerator(lm, sampling, seed)
            run_as_the_fork(self.mimi)  # Mimi's attention too, as the fork's server runs it
        else:
            self.generator = FrameGenerator(lm, sampling, seed)
        self.detokenizer = IncrementalDetokenizer(
            tokenizer,
            pad_id=lm.cfg.existing_text_padding_id,
            end_of_padding_id=lm.cfg.existing_text_end_padding_id,
        )
        self.frames = 0
        start_streaming(self.mimi, 1)
        start_streaming(self.generator, 1)
        graphs = graphs_wanted(self.device) if cuda_graphs is None else cuda_graphs
        self._encode = Graphed(self.mimi.encode, enabled=graphs)  # [1, 1, 1920] -> [1, K, 1]
        self._advance = Graphed(  # user codes [1, K] -> [1, 1 + dep_q]
            getattr(self.generator, "advance", self.generator.step),
            enabled=graphs and not self.personaplex,  # PersonaPlex's step runs eagerly
            generators=[self.generator.rng],
        )
        self._decode = Graphed(self.mimi.decode, enabled=graphs)  # [1, dep_q, 1] -> [1, 1, 1920]

    @classmethod
    def load(
        cls,
        source: str | Path | ModelFiles,
        device: str = "auto",
        dtype: str | None = None,
        *,
        sampling: SamplingSettings | None = None,
        seed: int | None = None,
        cuda_graphs: bool | None = None,
        threads: int | None = None,
    ) -> Pipeline:
        """Load from a folder in Kyutai's layout, or files located by `model.hub.locate_model`.

        `dtype`: "auto" (or None), "bfloat16", "float16", "float32" or "int8" (see
        `resolve_dtype`). "int8" quantizes a float checkpoint's linears while loading. A q8
        checkpoint loads with int8 linears whatever `dtype` says: a float dtype then sets the
        dtype of everything else (activations, embeddings, norms), e.g. float16 for GPUs without
        bfloat16. Mimi always runs in float32.
        """
        files = source if isinstance(source, ModelFiles) else resolve_folder(source)
        if files.config.model_type == STT_MODEL_TYPE:
            raise CheckpointError(
                f"{files.folder} holds Kyutai's speech-to-text, which does not talk: transcribe "
                "audio with it (`moshi-desktop transcribe AUDIO --model ...`) and talk with a "
                "Moshi, such as kyutai/moshiko-pytorch-bf16"
            )
        mimi, lm = load_models(files, device, dtype)
        return cls(
            mimi,
            lm,
            open_tokenizer(files.tokenizer),
            sampling=sampling,
            seed=seed,
            files=files,
            cuda_graphs=cuda_graphs,
            threads=threads,
        )

    @property
    def cuda_graphs(self) -> bool:
        """Whether the stages replay CUDA graphs; switching captures afresh."""
        return self._encode.enabled

    @cuda_graphs.setter
    def cuda_graphs(self, on: bool) -> None:
        for stage in (self._encode, self._advance, self._decode):
            stage.enabled = on and not (stage is self._advance and self.personaplex)
            stage.reset()

    @property
    def sampling(self) -> SamplingSettings:
        return self.generator.sampling

    @sampling.setter
    def sampling(self, settings: SamplingSettings) -> None:
        """Applies from the next step. A captured LM step reads the temperatures from the
        device, so only a change of greedy or top-k (`step_shape`) captures it again."""
        reshaped = settings.step_shape() != self.generator.sampling.step_shape()
        self.generator.sampling = settings
        if reshaped:
            self._advance.reset()

    def set_persona(self, voice: VoicePrompt | None, persona: str = "") -> None:
        """PersonaPlex's voice prompt and persona (role text) for the next conversation (from
        the next `reset`, or now if none has started). The model's state after the prompt is
        kept (`_prompt`), so the next conversation with the same voice and persona starts at
        once."""
        if not self.personaplex:
            raise ValueError("a voice and a persona need a PersonaPlex model")
        if voice is not self.voice:  # the same voice keeps its key after its state is kept
            self._voice_key = voice.fingerprint() if voice is not None else ""
        self.voice, self.persona = voice, persona
        if self.frames == 0:
            self._prompted = False

    def _prompt(self) -> None:
        """PersonaPlex's prompt schedule, before the conversation's first frame; or the state
        it left the last time, put back (the same as running it again: a seeded conversation
        gets the random state the prompt would have left too)."""
        self._prompted = True
        if not self.personaplex:
            return
        assert isinstance(self.generator, PersonaGenerator)
        seeded = None if self._seed is None else (self._seed, repr(self.sampling))
        key = (self._voice_key, self.persona, seeded)
        after = self._after_prompt.get(key)
        if after is not None:
            restore_streaming(self.generator, after.states)
            if seeded is not None:
                self.generator.rng.set_state(after.rng)
            return
        tokens = persona_tokens(self.tokenizer, self.persona)
        kept = self.generator.prompt(self.voice, tokens, self.mimi)
        reset_streaming(self.mimi)  # the conversation's audio starts a fresh stream
        if self.voice is not None and self.voice.embeddings is None:
            self.voice = kept  # its saved state, so Mimi need not encode it again
        while len(self._after_prompt) >= _PROMPTS_KEPT:
            self._after_prompt.pop(next(iter(self._after_prompt)))
        self._after_prompt[key] = _AfterPrompt(
            save_streaming(self.generator), self.generator.rng.get_state()
        )

    def prepare(self) -> None:
        """Run what comes before the conversation's first frame now (PersonaPlex's prompt), so
        the first frame answers at once; nothing for Moshi."""
        if not self._prompted:
            self._prompt()

    def forget_prompt_states(self) -> None:
        """Drop the states kept after prompts: the next prompt runs in full."""
        self._after_prompt.clear()

    def reset(self, seed: int | None = None) -> None:
        """Start a new conversation: every streaming state back to its start."""
        reset_streaming(self.mimi)
        reset_streaming(self.generator)
        self.detokenizer.reset()
        self.frames = 0
        self._prompted = False
        self._seed = seed
        if seed is not None:
            self.generator.seed(seed)
            self._advance.reset()

    def warm_up(self) -> None:
        """Run a few frames of silence, then forget them, so that a conversation's first frames
        run at full speed: kernels chosen, memory allocated, each stage's CUDA graph captured
        (Kyutai's server warms up the same way before its first client). The random state is
        put back: a seeded conversation is the same with or without a warm-up."""
        rng_state, seed = self.generator.rng.get_state(), self._seed
        silence = np.zeros(FRAME_SIZE, dtype=np.float32)
        # One eager call per stage, one capture, one replay; Mimi decode starts a step later.
        for _ in range(self.generator.max_delay + 3):
            self.step(silence)
        self._sync()
        self.reset()
        self.generator.rng.set_state(rng_state)
        self._seed = seed

    def close(self) -> None:
        stop_streaming(self.mimi)
        stop_streaming(self.generator)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def step(self, pcm: np.ndarray | torch.Tensor) -> StepResult:
        """One frame: pcm [1920] float in [-1, 1] at 24 kHz."""
        frame = torch.as_tensor(pcm, dtype=torch.float32).reshape(-1)
        if frame.numel() != FRAME_SIZE:
            raise ValueError(f"a frame is {FRAME_SIZE} samples, got {frame.numel()}")
        ms: dict[str, float] = {}
        self.prepare()
        t0 = time.perf_counter()
        codes = self._encode(frame.to(self.device)[None, None])  # [1, 8, 1]
        self._sync()
        t1 = time.perf_counter()
        out = self.generator.step(codes[:, :, 0], self._advance)  # [1, 1 + dep_q] or None
        if out is not None:
            tokens = out[0].tolist()  # one host sync per frame, after the step
        self._sync()
        t2 = time.perf_counter()
        ms["encode"], ms["lm"] = 1000 * (t1 - t0), 1000 * (t2 - t1)
        self.frames += 1
        if out is None:
            ms["decode"] = 0.0
            return StepResult("", None, ms=ms)
        moshi = 1 + self.mimi.num_codebooks  # text, then Moshi's codes (not PersonaPlex's user's)
        audio = self._decode(out[:, 1:moshi, None])  # [1, 1, 1920]
        pcm_out = audio[0, 0].float().cpu().numpy()
        ms["decode"] = 1000 * (time.perf_counter() - t2)
        if self.thread_policy is not None:
            self.thread_policy.step_done()
        return StepResult(self.detokenizer.push(tokens[0]), pcm_out, tokens[0], tokens[1:moshi], ms)
