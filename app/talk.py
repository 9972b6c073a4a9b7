"""`moshi-desktop talk`: a conversation with Moshi where the user's side is an audio file.

From a fresh state the pipeline steps once per consecutive 1920-sample frame of the input, in order
from the first sample (the last partial frame zero-padded), then over `--trailing-silence` seconds
of silence so Moshi can answer. Moshi's voice goes to OUTPUT (24 kHz wav), its inner monologue to
`--transcript`, and one JSON object per emitted frame to `--trace`. Outputs are written only once the
conversation is complete, each atomically, so a failure leaves no half-written file behind.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from .audiofile import SAMPLE_RATE, atomic_output, read_audio, write_wav
from .errors import UserError

FRAME_SIZE = 1920
DEFAULT_MODEL = "kyutai/moshiko-pytorch-bf16"  # the same as model.hub.DEFAULT_REPO


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype: shared by every command that runs the model."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="REPO_OR_FOLDER",
        help="a Hugging Face repository id (default %(default)s; also "
        "kyutai/moshika-pytorch-bf16 and the -q8 siblings), downloaded into the Hugging Face "
        "cache, or a local folder in Kyutai's layout",
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
        choices=["auto", "cpu", "cuda", "mps"],
        help="where the model runs (auto: CUDA, then MPS, then CPU)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32", "int8"],
        help="the LM's dtype (auto: bfloat16 on a GPU, float32 on the CPU); int8: int8 "
        "weight-only linears, about half the memory of bfloat16, the rest at the auto dtype. "
        "A -q8 model is int8 whatever this says (a float dtype then applies to the rest). "
        "Mimi always runs in float32",
    )
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="on a CUDA GPU, launch each step's kernels one by one instead of replaying CUDA "
        "graphs (slower; also NO_CUDA_GRAPH=1)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="audio sampling temperature (0: greedy)"
    )
    parser.add_argument(
        "--text-temperature", type=float, default=0.7, help="text sampling temperature (0: greedy)"
    )
    parser.add_argument("--top-k", type=int, default=250, help="audio top-k (0: all tokens)")
    parser.add_argument("--text-top-k", type=int, default=25, help="text top-k (0: all tokens)")
    parser.add_argument(
        "--greedy", action="store_true", help="always take the most likely token (deterministic)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "talk",
        help="talk with Moshi from an audio file; write its answer to a wav file",
        description=__doc__.split("\n\n")[0].removeprefix("`moshi-desktop talk`: "),
    )
    parser.add_argument(
        "input",
        type=Path,
        help="your side of the conversation: wav, flac, ogg (any rate; stereo is mixed down)",
    )
    parser.add_argument("output", type=Path, help="Moshi's voice, written as a 24 kHz wav")
    add_model_arguments(parser)
    add_sampling_arguments(parser)
    parser.add_argument(
        "--trace", type=Path, help="write a JSON Lines trace, one object per frame Moshi emits"
    )
    parser.add_argument("--transcript", type=Path, help="write Moshi's inner monologue as text")
    parser.add_argument(
        "--trailing-silence",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="silence to step through after the input so Moshi can answer (default 5)",
    )
    parser.set_defaults(handler=run)


def check_sampling(args: argparse.Namespace) -> None:
    """UserError unless every sampling flag is 0 or more."""
    for name in ("temperature", "text_temperature", "top_k", "text_top_k"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more")


def _sampling(args: argparse.Namespace):
    from model.generate import SamplingSettings

    check_sampling(args)
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
    from .download import locate
    from .local import load_files

    return load_files(
        locate(args),
        args.device,
        args.dtype,
        sampling=sampling,
        seed=getattr(args, "seed", None),
        cuda_graphs=False if getattr(args, "no_cuda_graphs", False) else None,
    )


def run(args: argparse.Namespace) -> int:
    if args.trailing_silence < 0:
        raise UserError("--trailing-silence must be 0 or more seconds")
    sampling = _sampling(args)
    for output in (args.output, args.transcript, args.trace):
        if output is not None and not output.parent.is_dir():
            raise UserError(f"output folder does not exist: {output.parent}")
    audio = read_audio(args.input)
    pipeline = load_pipeline(args, sampling)

    frames = math.ceil(len(audio) / FRAME_SIZE) + math.ceil(
        args.trailing_silence * SAMPLE_RATE / FRAME_SIZE
    )
    padded = np.zeros(frames * FRAME_SIZE, dtype=np.float32)
    padded[: len(audio)] = audio

    from tqdm import tqdm

    voice, text, trace = [], [], []
    for index in tqdm(
        range(frames), desc="talking", unit="frame", file=sys.stderr, disable=None, leave=False
    ):
        result = pipeline.step(padded[index * FRAME_SIZE : (index + 1) * FRAME_SIZE])
        if result.pcm is None:
            continue
        voice.append(result.pcm)
        text.append(result.text)
        # The frame Moshi emitted at step `index` is its frame index - 1 (one frame of delay).
        trace.append(
            {
                "frame": len(trace),
                "time": round(len(trace) * FRAME_SIZE / SAMPLE_RATE, 3),
                "text": result.text_token,
                "audio": result.audio_tokens,
                "piece": result.text,
            }
        )

    try:
        write_wav(args.output, np.concatenate(voice) if voice else np.zeros(0, np.float32))
        if args.transcript:
            with atomic_output(args.transcript) as tmp:
                tmp.write_text("".join(text).strip() + "\n", encoding="utf-8")
        if args.trace:
            with atomic_output(args.trace) as tmp:
                tmp.write_text("".join(json.dumps(t) + "\n" for t in trace), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write the output: {e.strerror or e}") from e
    seconds = len(voice) * FRAME_SIZE / SAMPLE_RATE
    print(f"wrote {seconds:.1f} s of Moshi's voice to {args.output}", file=sys.stderr)
    return 0
