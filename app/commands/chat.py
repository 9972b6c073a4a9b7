"""`moshi-desktop chat`: a live conversation in the terminal.

The microphone and speakers (or `--input-file`, played as if spoken, and `--output-file`) feed the
realtime engine; Moshi's inner monologue prints as it comes, with a status line of stats. Moshi runs
here, or with `--server URL` on Kyutai's Moshi server. Ctrl+C ends the conversation (with an input
file it also ends by itself after the file and `--trailing-silence`), then `--export` writes each
file. Everything is also autosaved.
"""

from __future__ import annotations

import argparse
import queue
import sys
from pathlib import Path

from ..errors import UserError


def register(subparsers) -> None:
    from .arguments import (
        SECONDS,
        add_lora_argument,
        add_model_arguments,
        add_persona_arguments,
        add_sampling_arguments,
    )

    parser = subparsers.add_parser(
        "chat",
        help="talk with Moshi live in the terminal (microphone and speakers, or files)",
        description=__doc__.split("\n\n")[1],
    )
    add_model_arguments(parser)
    add_lora_argument(parser)
    add_sampling_arguments(parser)
    add_persona_arguments(parser)
    parser.add_argument(
        "--server",
        metavar="URL",
        help="talk to Kyutai's Moshi server (python -m moshi.server, or its Rust server) instead "
        "of running the model here: ws://HOST:PORT or wss://HOST (path /api/chat unless given; "
        "without a scheme, ws:// and port 8998). --model, --lora, --device and --dtype are unused; "
        "sampling flags and --seed are sent to the server, which honours them if it is the Rust "
        "server (the Python server ignores them)",
    )
    parser.add_argument("--input-device", help="microphone: index or part of its name")
    parser.add_argument("--output-device", help="speakers: index or part of its name")
    parser.add_argument("--input-file", type=Path, help="play this file as your voice")
    parser.add_argument("--output-file", type=Path, help="write Moshi's voice to this wav file")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="with --input-file: play it at real speed, not as fast as possible (always so "
        "with --server)",
    )
    parser.add_argument(
        "--trailing-silence",
        type=SECONDS,
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
        "--aec",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cancel the echo of Moshi's voice from the microphone, to talk without headphones "
        "(default: on with the speakers, off with --input-file); half duplex instead if the "
        "canceller is unavailable",
    )
    parser.add_argument(
        "--noise-suppression",
        choices=("off", "low", "high"),
        default="off",
        metavar="LEVEL",
        help="suppress steady noise in the microphone: off (default), low or high",
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


def _echo_cancellation(args: argparse.Namespace) -> bool:
    """--aec as given; by default on with the speakers, off with an input file (no echo)."""
    return args.input_file is None if args.aec is None else args.aec


def _open_audio(args: argparse.Namespace):
    from ..audio.devices import DeviceAudio
    from ..audio.echo import with_processing
    from ..audio.from_file import FileAudio

    if args.input_file is not None:
        audio = FileAudio(
            args.input_file,
            args.output_file,
            realtime=args.realtime or args.server is not None,  # a server talks in real time
            trailing_silence=args.trailing_silence,
        )
    elif args.output_file is not None:
        raise UserError("--output-file needs --input-file (live audio plays on the speakers)")
    else:
        audio = DeviceAudio(args.input_device, args.output_device)
    return with_processing(audio, _echo_cancellation(args), args.noise_suppression)


def _check_exports(paths: list[Path]) -> None:
    from ..conversation.record import check_export

    for path in paths:
        check_export(path)


def run(args: argparse.Namespace) -> int:
    from ..conversation.store import new_record as kept_record
    from ..engine.engine import Engine
    from ..engine.messages import (
        EngineState,
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
    from ..engine.run import loading_note

    _check_exports(args.export)
    config = _run_config(args)
    load, model, sampling = _compute(args)
    first_audio = _open_audio(args)  # device and file errors show before the model loads
    audios = iter([first_audio])

    def open_audio(config):
        return next(audios, None) or _open_audio(args)

    def new_record(_model: str, about: dict):
        """The engine's description, with chat's own sampling settings (greedy too), half duplex
        and the server's full address."""
        settings = {**about, "half_duplex": engine.half_duplex, **vars(sampling)}
        return kept_record(model, settings)

    engine = Engine(load, open_audio, new_record=new_record, loading_note=loading_note)
    engine.start()
    status = StatusLine()
    failed = None
    try:
        engine.send(SetHalfDuplex(args.half_duplex))
        if args.server is not None:
            engine.send(sampling)  # a SetSampling, sent with the connection
        engine.send(Start(config))
        while True:
            match engine.events.get():
                case TextPiece(text=text):
                    status.text(text)
                case Stats() as stats:
                    status.show(stats)
                case Notice(message=message):
                    status.say(message)
                case ErrorEvent(message=message):
                    failed = message
                    break
                case StateChanged(state=EngineState.FINISHED | EngineState.ERROR):
                    break
                case StateChanged(state=state, detail=detail):
                    _say(state, args, model, detail)
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


def _run_config(args: argparse.Namespace):
    """The run the command line describes (what the engine's record and notes read)."""
    from ..engine.run import RunConfig
    from .arguments import persona_request

    voice, persona = persona_request(args)
    if args.server is not None:
        from ..engine.remote import persona_query

        persona_query(voice, persona)  # a voice file cannot go to a server: said at once
    return RunConfig(
        model=args.model,
        revision=args.revision,
        lora=args.lora,
        offline=args.offline,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        input_file=args.input_file,
        server=args.server,
        voice=voice,
        persona=persona,
        echo_cancellation=_echo_cancellation(args),
        noise_suppression=args.noise_suppression,
    )


def _say(state, args: argparse.Namespace, server: str, detail: str = "") -> None:
    """A line on stderr as the conversation gets going (`state`: an EngineState)."""
    from ..engine.messages import EngineState

    lines = {
        EngineState.LOADING: "Loading the model…",
        EngineState.CONNECTING: f"Connecting to {server}…",
        EngineState.WAITING: "The server is busy with another conversation: waiting for a slot (Ctrl+C "
        "gives up)…",
    }
    if state is EngineState.RUNNING:
        if args.server is not None:
            print(f"Connected to {server}.", file=sys.stderr)
        if args.input_file is None:
            from ..audio.echo import available

            if _echo_cancellation(args) and available() is None:
                hint = "echo cancellation on: speakers are fine"
            else:
                hint = "headphones recommended"
            print(
                f"Listening: talk to Moshi ({hint}). Ctrl+C ends the conversation.",
                file=sys.stderr,
            )
    elif state in lines and not (state is EngineState.LOADING and args.server is not None):
        print(lines[state] + (f" ({detail})" if detail else ""), file=sys.stderr)


def _compute(args: argparse.Namespace):
    """What computes Moshi's frames, what the record calls it, and the sampling settings: the
    model (loaded on the engine thread) or a session with `--server`."""
    from .arguments import load_pipeline, sampling_settings

    if args.server is None:
        from ..engine.local import LocalCompute

        sampling = sampling_settings(args)
        return (
            (lambda config: LocalCompute(load_pipeline(args, sampling))),
            str(args.model),
            sampling,
        )

    from ..engine.messages import SetSampling
    from ..engine.remote import RemoteSession, server_url

    url = server_url(args.server)
    greedy = getattr(args, "greedy", False)
    sampling = SetSampling(
        temperature=0.0 if greedy else args.temperature,
        top_k=args.top_k,
        text_temperature=0.0 if greedy else args.text_temperature,
        text_top_k=args.text_top_k,
    )
    return (lambda config: RemoteSession(url, seed=args.seed)), url, sampling


def _next_event(engine, timeout: float):
    try:
        return engine.events.get(timeout=timeout)
    except queue.Empty:
        return None


class StatusLine:
    """Moshi's monologue on stdout as it comes; stats every 10 s of conversation (when stderr is a
    terminal) and notices on lines of their own on stderr, held until the monologue reaches the
    end of a word, so that no word is split."""

    def __init__(self, every: float = 10.0) -> None:
        self.active = sys.stderr.isatty()
        self.every, self.next_at = every, every
        self.mid_line = False  # the transcript's current line is not finished
        self.pending: list[str] = []  # lines for stderr, waiting for the end of a word

    def text(self, piece: str) -> None:
        if self.pending and piece[:1].isspace():  # a new word: the held lines go first
            self.end_line()
            piece = piece.lstrip()
        print(piece, end="", flush=True)
        self.mid_line = True

    def say(self, line: str) -> None:
        """A line on stderr, now or at the end of the word being written."""
        if self.mid_line:
            self.pending.append(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def show(self, stats) -> None:
        if not self.active or stats.elapsed < self.next_at:
            return
        self.next_at = stats.elapsed + self.every
        remote = stats.remote
        if remote is None:
            speed = f"{stats.ms_per_frame.get('total', 0):.0f} ms/frame, RTF {stats.rtf:.2f}"
        else:
            speed = (
                f"RTT {remote.rtt_ms:.0f} ms, buffer {remote.buffer_ms:.0f} ms, missed "
                f"{remote.missed_ms / 1000:.1f} s, reconnects {remote.reconnects}"
            )
        silenced = (
            f", silenced {stats.silenced_samples} bad samples" if stats.silenced_samples else ""
        )
        if "audio processing" in stats.ms_per_frame:  # the echo canceller's cost
            speed += f", echo cancellation {stats.ms_per_frame['audio processing']:.1f} ms/frame"
        self.say(
            f"[{stats.elapsed:.0f} s: {speed}, latency {stats.latency_ms:.0f} ms, dropped "
            f"{stats.dropped_frames}, xruns {stats.underruns + stats.overruns}{silenced}]"
        )

    def end_line(self) -> None:
        """Finish the monologue's line and write the held lines."""
        if self.mid_line:
            print(flush=True)
            self.mid_line = False
        for line in self.pending:
            print(line, file=sys.stderr, flush=True)
        self.pending.clear()
