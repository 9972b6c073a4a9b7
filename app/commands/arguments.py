"""What the commands that run the model share: their arguments (--model, --device, --dtype,
--lora, sampling), and finding and loading the model with a progress bar on the terminal."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from model.catalog import DEFAULT_REPO, licence_notice
from model.config import LMConfig
from model.files import DEVICES, DTYPES
from model.voices import DEFAULT_VOICE, PERSONAS

from ..errors import UserError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype: shared by every command that runs the model."""
    parser.add_argument(
        "--model",
        default=DEFAULT_REPO,
        metavar="REPO_OR_FOLDER",
        help="a Hugging Face repository id (default %(default)s; `moshi-desktop download "
        "--list` shows the ones this app knows), downloaded into the Hugging Face cache, or a "
        "local folder in Kyutai's layout",
    )
    parser.add_argument("--revision", help="a branch, tag or commit of the repository")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use only what is in the cache (also HF_HUB_OFFLINE=1; automatic when the hub "
        "cannot be reached)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where the model runs (auto, the default: CUDA, then MPS, then CPU)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="the LM's dtype (auto, the default: bfloat16 on a GPU, float32 on the CPU); int8: int8 "
        "weight-only linears, about half the memory of bfloat16, the rest at the auto dtype. "
        "A -q8 model is int8 whatever this says (a float dtype then applies to the rest). "
        "Mimi always runs in float32",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="CPU threads to compute with (default: the free cores, followed while running: "
        "fewer when other programs take the CPU)",
    )
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="on a CUDA GPU, launch each step's kernels one by one instead of replaying CUDA "
        "graphs (slower; also NO_CUDA_GRAPH=1)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_lora_argument(parser: argparse.ArgumentParser) -> None:
    """--lora: a LoRA from Kyutai's moshi-finetune on top of --model (talk, chat)."""
    parser.add_argument(
        "--lora",
        metavar="PATH",
        help="a LoRA fine-tune from Kyutai's moshi-finetune, merged into the model's weights as "
        "they load: the folder it saved (lora.safetensors and config.json), or that "
        "lora.safetensors; --model is the base model it was trained from",
    )


def add_persona_arguments(parser: argparse.ArgumentParser) -> None:
    """--voice, --persona, --persona-file: PersonaPlex's voice prompt and role (talk, chat)."""
    parser.add_argument(
        "--voice",
        metavar="NAME|PATH",
        help="PersonaPlex only: the voice Moshi speaks with, a voice packaged with the model "
        f"({DEFAULT_VOICE}, say: voices/ or voices.tgz in its folder), a .pt voice prompt, or a "
        "recording of 5 to 20 s of a voice (wav, flac, ogg; its speaker must have agreed to "
        "it). With --server: the name of one of the server's voices",
    )
    persona = parser.add_mutually_exclusive_group()
    persona.add_argument(
        "--persona",
        metavar="TEXT",
        help=f'PersonaPlex only: its role, e.g. "{PERSONAS[0].text}"',
    )
    persona.add_argument(
        "--persona-file", type=Path, metavar="PATH", help="PersonaPlex only: its role, from a file"
    )


def persona_request(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(the voice, the persona text) that --voice and --persona/--persona-file ask for; None
    for what is not asked. The persona file is read here: a failure is a UserError."""
    text = getattr(args, "persona", None)
    persona_file = getattr(args, "persona_file", None)
    if persona_file is not None:
        try:
            text = persona_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the persona from {persona_file}: {e}") from None
    return getattr(args, "voice", None), None if text is None else text.strip()


def number_in(kind: type, low: float, high: float | None = None) -> Callable[[str], float]:
    """An argparse `type`: a number of `kind` (int or float) from `low` to `high`; anything
    else is a usage error (exit 2) with argparse's message."""
    what = "a whole number" if kind is int else "a number"
    span = f"from {low:g} to {high:g}" if high is not None else f"of {low:g} or more"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} {span}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what} {span}")
        return value

    return parse


SECONDS = number_in(float, 0)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    vocabulary, codebook = LMConfig().text_card, LMConfig().card  # Moshi's
    temperature = number_in(float, 0, 10)
    parser.add_argument(
        "--temperature",
        type=temperature,
        default=0.8,
        help="audio sampling temperature, 0 to 10 (0: greedy; default %(default)s)",
    )
    parser.add_argument(
        "--text-temperature",
        type=temperature,
        default=0.7,
        help="text sampling temperature, 0 to 10 (0: greedy; default %(default)s)",
    )
    parser.add_argument(
        "--top-k",
        type=number_in(int, 0, codebook),
        default=250,
        help=f"audio top-k, 0 to {codebook} (0: all tokens; default %(default)s)",
    )
    parser.add_argument(
        "--text-top-k",
        type=number_in(int, 0, vocabulary),
        default=25,
        help=f"text top-k, 0 to {vocabulary} (0: all tokens; default %(default)s)",
    )
    parser.add_argument(
        "--greedy", action="store_true", help="always take the most likely token (deterministic)"
    )
    parser.add_argument(
        "--seed",
        type=number_in(int, 0, 2**63 - 1),
        default=None,
        help="random seed for sampling, 0 or more (default: a random one)",
    )


def sampling_settings(args: argparse.Namespace):
    """The model's sampling settings from --temperature, --top-k, ... (argparse checked them)."""
    from model.generate import SamplingSettings

    return SamplingSettings(
        temperature=args.temperature,
        top_k=args.top_k,
        text_temperature=args.text_temperature,
        text_top_k=args.text_top_k,
        greedy=args.greedy,
    )


def load_pipeline(args: argparse.Namespace, sampling=None):
    """Load the model named by --model/--device/--dtype (downloading what is missing, with a
    progress bar), turning every failure into a UserError."""
    from ..engine.local import load_files

    return load_files(
        locate(args),
        args.device,
        args.dtype,
        sampling=sampling,
        seed=getattr(args, "seed", None),
        cuda_graphs=False if getattr(args, "no_cuda_graphs", False) else None,
        threads=getattr(args, "threads", None),
    )


class ProgressBars:
    """Draws one tqdm bar per file on stderr; shows the licence of the weights of the repository
    downloaded from (its catalog entry's) before the first, unless `licence_shown` already."""

    def __init__(self, licence_shown: bool = False) -> None:
        self.bar = None
        self.filename = None
        self.licence_shown = licence_shown

    def __call__(self, update) -> None:
        from tqdm import tqdm

        if not self.licence_shown:
            print(licence_notice(update.repo), file=sys.stderr)
            self.licence_shown = True
        if update.filename != self.filename:
            self.close()
            self.filename = update.filename
            self.bar = tqdm(
                total=update.total,
                initial=update.done,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                disable=None,
                desc=f"[{update.index}/{update.count}] {update.filename}",
            )
        elif self.bar is not None:
            self.bar.update(update.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def locate(args: argparse.Namespace, licence_shown: bool = False):
    """The files of `args.model` (with `args.revision`, `args.offline`), downloading what is
    missing with progress bars (after the weights' licence, unless `licence_shown`); every
    failure is a UserError."""
    from ..engine.local import locate as locate_files

    bars = ProgressBars(licence_shown)
    try:
        return locate_files(
            args.model,
            getattr(args, "revision", None),
            getattr(args, "offline", False),
            lora=getattr(args, "lora", None),
            download=True,
            progress=bars,
        )
    except KeyboardInterrupt:
        bars.close()
        raise UserError("download interrupted; run the same command again to resume") from None
    finally:
        bars.close()
