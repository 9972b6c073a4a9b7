"""`moshi-desktop conversations`: the kept conversations, from the command line.

    conversations list [--json]            newest first: a table, or one JSON array
    conversations show ID                  metadata and transcript
    conversations export ID PATH [PATH ...]  format by extension: .wav .flac .ogg .txt .md .json
                                           .srt .vtt
    conversations delete ID [ID ...] [--yes]  asks on a terminal without --yes, refuses otherwise
    conversations search TEXT              case-insensitive, over titles and transcripts

Before any of them, conversations cut short by a killed process are recovered and those older
than the kept days are deleted (see app/conversation/store.py). An unknown id, a damaged
conversation or a path that cannot be written: one line, exit status 1, nothing deleted or
half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "conversations",
        help="list, show, search, export and delete the kept conversations",
        description="The conversations kept on this computer (the window's History).",
    )
    commands = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = commands.add_parser("list", help="the conversations, newest first")
    listing.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    listing.set_defaults(handler=run_list)
    show = commands.add_parser("show", help="a conversation's metadata and transcript")
    show.add_argument("id")
    show.set_defaults(handler=run_show)
    export = commands.add_parser(
        "export", help="write a conversation to files, the format by each one's extension"
    )
    export.add_argument("id")
    export.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    export.set_defaults(handler=run_export)
    delete = commands.add_parser("delete", help="delete conversations")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.set_defaults(handler=run_delete)
    search = commands.add_parser("search", help="find text in the titles and transcripts")
    search.add_argument("text")
    search.set_defaults(handler=run_search)


def _root() -> Path:
    """The store, made ready: what was cut short recovered, what expired deleted."""
    from ..conversation import preferences
    from ..conversation.store import prepare, recovered_sentence

    prefs = preferences.load()
    done = prepare(prefs.root, prefs.keep_days)
    if done.recovered:
        print(
            f"{recovered_sentence(len(done.recovered))}: {', '.join(done.recovered)}",
            file=sys.stderr,
        )
    for line in done.failed:
        print(f"could not compact {line}; its raw audio is kept", file=sys.stderr)
    return prefs.root


def run_list(args: argparse.Namespace) -> int:
    from ..conversation.store import list_conversations

    entries = list_conversations(_root())
    if args.json:
        print(json.dumps([e.as_json() for e in entries], ensure_ascii=False, indent=1))
        return 0
    if not entries:
        print("no conversations kept yet")
        return 0
    header = ("id", "started", "duration", "model", "", "title")
    rows = [
        (
            e.id,
            e.when,
            _clock(e.duration),
            e.model,
            _mark(e),
            f"damaged: {e.damaged}" if e.damaged else e.title,
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..conversation.record import META_FILE
    from ..conversation.store import open_conversation

    conv = open_conversation(_root(), args.id)
    assert conv.folder is not None
    meta = json.loads((conv.folder / META_FILE).read_text(encoding="utf-8"))
    for key in (
        "id",
        "title",
        "started",
        "duration",
        "model",
        "revision",
        "backend",
        "device",
        "dtype",
        "sampling",
        "seed",
        "app_version",
        "recovered",
    ):
        print(f"{key}: {meta.get(key)}")
    print(f"folder: {conv.folder}")
    print()
    for turn in conv.turns:
        print(f"[{_clock(turn.start)}] {turn.text}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..conversation.record import check_export
    from ..conversation.store import open_conversation

    conv = open_conversation(_root(), args.id)
    for path in args.paths:
        check_export(path)
    for path in args.paths:
        conv.export(path)
        print(f"wrote {path}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from ..conversation.store import delete, list_conversations

    root = _root()
    known = {e.id for e in list_conversations(root)}
    unknown = [i for i in args.ids if i not in known]
    if unknown:
        raise UserError(
            f"no conversation {unknown[0]!r}; nothing was deleted "
            "(`moshi-desktop conversations list` shows them)"
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError("not deleting without --yes when there is no terminal to ask on")
        answer = input(f"Delete {len(args.ids)} conversation(s) for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    delete(root, args.ids)
    for id in args.ids:
        print(f"deleted {id}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from ..conversation.store import search

    found = 0
    for match in search(_root(), args.text):
        found += 1
        print(f"{match.entry.id}  {_clock(match.time)}  {match.line}")
    if not found:
        print(f"nothing found for {args.text!r}", file=sys.stderr)
    return 0


def _mark(entry) -> str:
    if entry.running:
        return "running"
    return "recovered" if entry.recovered else ""


def _clock(seconds: float) -> str:
    from ..conversation.record import clock_text

    return clock_text(seconds)
