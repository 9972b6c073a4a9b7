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

from model.config import FRAME_SIZE, SAMPLE_RATE

from ..audio.files import check_writable, read_audio, write_text, write_wav
from ..engine.local import set_persona
from .arguments import (
    SECONDS,
    add_lora_argument,
    add_model_arguments,
    add_persona_arguments,
    add_sampling_arguments,
    load_pipeline,
    persona_request,
    sampling_settings,
)


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
    add_lora_argument(parser)
    add_sampling_arguments(parser)
    add_persona_arguments(parser)
    parser.add_argument(
        "--trace", type=Path, help="write a JSON Lines trace, one object per frame Moshi emits"
    )
    parser.add_argument("--transcript", type=Path, help="write Moshi's inner monologue as text")
    parser.add_argument(
        "--trailing-silence",
        type=SECONDS,
        default=5.0,
        metavar="SECONDS",
        help="silence to step through after the input so Moshi can answer (default 5)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sampling = sampling_settings(args)
    for output in (args.output, args.transcript, args.trace):
        if output is not None:
            check_writable(output)  # now, not after the whole conversation is computed
    audio = read_audio(args.input)
    pipeline = load_pipeline(args, sampling)
    # PersonaPlex's prompt schedule runs before the first frame: the trace holds only the
    # live conversation.
    set_persona(pipeline, *persona_request(args))

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

    write_wav(args.output, np.concatenate(voice) if voice else np.zeros(0, np.float32))
    if args.transcript:
        write_text(args.transcript, "".join(text).strip() + "\n")
    if args.trace:
        write_text(args.trace, "".join(json.dumps(t) + "\n" for t in trace))
    seconds = len(voice) * FRAME_SIZE / SAMPLE_RATE
    print(f"wrote {seconds:.1f} s of Moshi's voice to {args.output}", file=sys.stderr)
    return 0
