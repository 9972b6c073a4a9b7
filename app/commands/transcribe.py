"""`moshi-desktop transcribe`: what is said in an audio file, with word times, by Kyutai's
streaming speech-to-text (kyutai/stt-1b-en_fr by default).

The file (any format soundfile reads, any rate and channel count: mixed to mono, resampled to
24 kHz) is streamed through the model frame by frame, as Kyutai's own script does it: silence
before it where the model wants it, then silence after it until the delayed text of the last
words has come out. Words print as they come; each --output is written at the end, in the format
its extension names: .txt (the text), .srt and .vtt (subtitles), .json (each word with its start
and end in seconds, and the end-of-turn probability per frame where the model has those heads).
--trace writes one JSON line per step with its text token.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.config import FRAME_SECONDS
from model.stt import DEFAULT_STT_REPO

from ..audio.files import check_writable, read_audio, write_text
from ..errors import UserError
from .arguments import add_model_arguments, locate

FORMATS = (".txt", ".srt", ".vtt", ".json")
CUE_SECONDS = 6.0  # a subtitle cue holds the words of at most this long
CUE_WORDS = 14


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="write down what is said in an audio file (Kyutai's speech-to-text)",
        description=__doc__.split("\n\n")[0].removeprefix("`moshi-desktop transcribe`: "),
    )
    parser.add_argument("audio", type=Path, help="wav, flac, ogg, mp3: any rate, any channels")
    add_model_arguments(parser)
    for action in parser._actions:
        if action.dest == "model":
            action.default = DEFAULT_STT_REPO
            action.help = (
                f"a Kyutai speech-to-text repository (default {DEFAULT_STT_REPO}; "
                "kyutai/stt-2.6b-en for English only, 2.5 s behind) or a local folder in its layout"
            )
    parser.add_argument(
        "--output",
        type=Path,
        nargs="+",
        default=[],
        metavar="PATH",
        help=f"write the transcript: {' '.join(FORMATS)} (by the extension)",
    )
    parser.add_argument(
        "--trace", type=Path, metavar="T.jsonl", help="one JSON line per step: its text token"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model.files import CheckpointError
    from model.stt import Transcriber

    for path in args.output:
        if path.suffix.lower() not in FORMATS:
            raise UserError(f"cannot write {path.name}: use one of {', '.join(FORMATS)}")
    for path in [*args.output, *([args.trace] if args.trace else [])]:
        check_writable(path)
    audio = read_audio(args.audio)
    files = locate(args)
    try:
        transcriber = Transcriber.load(files, args.device, args.dtype, args.threads)
    except (CheckpointError, ValueError) as e:
        raise UserError(f"cannot load the model: {e}") from e
    except RuntimeError as e:
        raise UserError(f"cannot load the model on {args.device}: {e}") from e

    tokenizer, cfg = transcriber.tokenizer, transcriber.lm.cfg
    trace: list[dict] = []
    printed = [False]
    bar = tqdm(total=1, desc="transcribing", unit="frame", file=sys.stderr, disable=None,
               leave=False)  # fmt: skip

    def on_step(index: int, count: int, step) -> None:
        bar.total = count
        line = {"step": index, "time": round(index * FRAME_SECONDS, 2), "text_token": step.token}
        if step.end_of_turn is not None:
            line["end_of_turn"] = round(step.end_of_turn, 4)
        trace.append(line)
        if step.token > cfg.existing_text_padding_id and tokenizer.is_piece_id(step.token):
            bar.clear()
            print(tokenizer.id_to_piece(step.token).replace("▁", " "), end="", flush=True)
            printed[0] = True
        bar.update()

    transcript = transcriber.transcribe(audio, on_step)
    bar.close()
    if printed[0]:
        print()
    transcriber.close()
    assert transcript is not None
    result = {
        "audio": str(args.audio),
        "model": str(args.model),
        "duration": round(len(audio) / 24000, 3),
        "text": transcript.text,
        "words": [
            {"text": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in transcript.words
        ],
        "end_of_turn": [round(p, 4) for p in transcript.end_of_turn],  # per 80 ms of the audio
    }
    for path in args.output:
        write_text(path, _render(path.suffix.lower(), result))
        print(f"wrote {path}", file=sys.stderr)
    if args.trace:
        write_text(args.trace, "".join(json.dumps(line) + "\n" for line in trace))
    return 0


def _render(kind: str, result: dict) -> str:
    if kind == ".json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if kind == ".txt":
        return result["text"] + "\n"
    cues = _cues(result["words"])
    if kind == ".srt":
        return "".join(
            f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{text}\n\n"
            for i, (a, b, text) in enumerate(cues, 1)
        )
    return "WEBVTT\n\n" + "".join(f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{text}\n\n"
                                  for a, b, text in cues)  # fmt: skip


def _cues(words: list[dict]) -> list[tuple[float, float, str]]:
    """Words grouped into subtitle cues of a few seconds, a new cue after a sentence's end."""
    cues, current = [], []
    for word in words:
        if current and (
            word["end"] - current[0]["start"] > CUE_SECONDS
            or len(current) >= CUE_WORDS
            or current[-1]["text"].endswith((".", "?", "!"))
        ):
            cues.append(current)
            current = []
        current.append(word)
    if current:
        cues.append(current)
    return [
        (c[0]["start"], max(c[-1]["end"], c[0]["start"] + 0.1), " ".join(w["text"] for w in c))
        for c in cues
    ]


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
