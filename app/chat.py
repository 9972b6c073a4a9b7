"""`moshi-desktop chat`: a live conversation in the terminal.

The microphone and speakers (or `--input-file`, played as if spoken, and `--output-file`) feed the
realtime engine; Moshi's inner monologue prints as it comes, with a status line of stats. Ctrl+C
ends the conversation (with an input file it also ends by itself after the file and
`--trailing-silence`), then `--export` writes each file. Everything is also autosaved.
"""

from __future__ import annotations

import argparse
import queue
import sys
from pathlib import Path

from .errors import UserError


def register(subparsers) -> None:
    from .talk import add_model_arguments, add_sampling_arguments

    parser = subparsers.add_parser(
        "chat",
        help="talk with Moshi live in the terminal (microphone and speakers, or files)",
        description=__doc__.split("\n\n")[1],
    )
    add_model_arguments(parser)
    add_sampling_arguments(parser)
    parser.add_argument("--input-device", help="microphone: index or part of its name")
    parser.add_argument("--output-device", help="speakers: index or part of its name")
    parser.add_argument("--input-file", type=Path, help="play this file as your voice")
    parser.add_argument("--output-file", type=Path, help="write Moshi's voice to this wav file")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="with --input-file: play it at real speed, not as fast as possible",
    )
    parser.add_argument(
        "--trailing-silence",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="with --input-file: silence after it so Moshi can answer (default 5)",
    )
    parser.add_argument(
        "--half-duplex",
        action="store_true",
        help="mute the microphone while Moshi speaks (when not using headphones)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        nargs="+",
        default=[],
        metavar="PATH",
        help="write the conversation when it ends: .txt .md .json .srt .vtt, or "
        ".wav (stereo: you left, Moshi right)",
    )
    parser.set_defaults(handler=run)


def _open_audio(args: argparse.Namespace):
    from .audio import DeviceAudio, FileAudio

    if args.input_file is not None:
        return FileAudio(
            args.input_file,
            args.output_file,
            realtime=args.realtime,
            trailing_silence=args.trailing_silence,
        )
    if args.output_file is not None:
        raise UserError("--output-file needs --input-file (live audio plays on the speakers)")
    return DeviceAudio(args.input_device, args.output_device)


def _check_exports(paths: list[Path]) -> None:
    kinds = {".txt", ".md", ".json", ".srt", ".vtt", ".wav"}
    for path in paths:
        if path.suffix.lower() not in kinds:
            raise UserError(f"cannot export {path.name}: use one of {', '.join(sorted(kinds))}")
        if not path.parent.is_dir():
            raise UserError(f"export folder does not exist: {path.parent}")


def run(args: argparse.Namespace) -> int:
    from .engine import (
        Engine,
        ErrorEvent,
        Export,
        Exported,
        Notice,
        SetHalfDuplex,
        Start,
        StateChanged,
        Stats,
        Stop,
        TextPiece,
    )
    from .session import Conversation, default_recordings_dir
    from .talk import _sampling, load_pipeline

    _check_exports(args.export)
    sampling = _sampling(args)
    first_audio = _open_audio(args)  # device and file errors show before the model loads
    audios = iter([first_audio])

    def open_audio(config):
        return next(audios, None) or _open_audio(args)

    def new_record():
        return Conversation.create(
            default_recordings_dir(), model=str(args.model), settings=vars(sampling)
        )

    engine = Engine(lambda config: load_pipeline(args, sampling), open_audio, new_record=new_record)
    engine.start()
    status = StatusLine()
    failed = None
    try:
        engine.send(SetHalfDuplex(args.half_duplex))
        engine.send(Start())
        if args.input_file is None:
            print(
                "Listening: talk to Moshi (headphones recommended). Ctrl+C ends the conversation.",
                file=sys.stderr,
            )
        while True:
            event = engine.events.get()
            if isinstance(event, TextPiece):
                status.text(event.text)
            elif isinstance(event, Stats):
                status.show(event)
            elif isinstance(event, Notice):
                status.end_line()
                print(event.message, file=sys.stderr)
            elif isinstance(event, ErrorEvent):
                failed = event.message
                break
            elif isinstance(event, StateChanged) and event.state == "loading":
                print("Loading the model…", file=sys.stderr)
            elif isinstance(event, StateChanged) and event.state in ("finished", "error"):
                break
    except KeyboardInterrupt:
        pass
    finally:
        status.end_line()
        engine.send(Stop())
        for path in args.export:
            engine.send(Export(str(path)))
            while True:
                event = _next_event(engine, timeout=120)
                if isinstance(event, Exported):
                    print(f"wrote {path}", file=sys.stderr)
                    break
                if isinstance(event, ErrorEvent) or event is None:
                    failed = failed or (event.message if event else f"could not write {path}")
                    break
        record = engine.record
        engine.close()
    if record is not None and getattr(record, "folder", None):
        print(f"conversation saved in {record.folder}", file=sys.stderr)
    if failed:
        raise UserError(failed)
    return 0


def _next_event(engine, timeout: float):
    try:
        return engine.events.get(timeout=timeout)
    except queue.Empty:
        return None


class StatusLine:
    """Stats on a line of their own on stderr, every 10 s of conversation, when it is a terminal."""

    def __init__(self, every: float = 10.0) -> None:
        self.active = sys.stderr.isatty()
        self.every, self.next_at = every, every
        self.mid_line = False  # the transcript's current line is not finished

    def text(self, piece: str) -> None:
        print(piece, end="", flush=True)
        self.mid_line = True

    def show(self, stats) -> None:
        if not self.active or stats.elapsed < self.next_at:
            return
        self.next_at = stats.elapsed + self.every
        if self.mid_line:
            print(flush=True)
            self.mid_line = False
        print(
            f"[{stats.elapsed:.0f} s: {stats.ms_per_frame.get('total', 0):.0f} ms/frame, "
            f"RTF {stats.rtf:.2f}, latency {stats.latency_ms:.0f} ms, dropped "
            f"{stats.dropped_frames}, xruns {stats.underruns + stats.overruns}]",
            file=sys.stderr,
            flush=True,
        )

    def end_line(self) -> None:
        if self.mid_line:
            print(flush=True)
            self.mid_line = False
