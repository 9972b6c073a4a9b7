"""`moshi-desktop download`: fetch a model into the Hugging Face cache, with a progress bar.

Before fetching it says what the model is: for a repository of the catalog (`--list` shows them
all), its title, language, size, licence and whether it is gated; for another one, where its
licence is. Every command that runs the model downloads what it lacks the same way (`locate`). An
interrupted download resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse

from model.catalog import CATALOG, DEFAULT_REPO, licence_notice
from model.files import is_repo_id

from ..errors import UserError
from .arguments import locate


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download a model into the Hugging Face cache",
        description="Download a model's files into the Hugging Face cache (shared with other "
        "tools), with progress. Run it again after an interruption: it resumes.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_REPO,
        metavar="REPO",
        help="Hugging Face repository id (default %(default)s)",
    )
    parser.add_argument("--revision", help="a branch, tag or commit of the repository")
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the models this app knows (language, size, licence), download nothing",
    )
    parser.set_defaults(handler=run, offline=False)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(catalog_text())
        return 0
    if not is_repo_id(args.model):
        raise UserError(f"{args.model} is not a Hugging Face repository id (owner/name)")
    entry = CATALOG.get(args.model)
    print("\n".join(entry.describe()) if entry else licence_notice(args.model), flush=True)
    try:
        files = locate(args, licence_shown=True)
    except UserError as e:  # not "run `moshi-desktop download`": that is this command
        raise UserError(
            str(e).replace(f"run `moshi-desktop download --model {args.model}`", "run it again")
        ) from e
    size = sum(p.stat().st_size for p in (files.lm_weights, files.mimi_weights, files.tokenizer))
    print(f"{args.model}: {size / 1e9:.2f} GB in {files.folder}")
    return 0


def catalog_text() -> str:
    """Every entry of the catalog, a block each, the default first."""
    blocks = ["\n".join(entry.describe()) for entry in CATALOG.values()]
    return (
        "\n\n".join(blocks)
        + f"\n\nDownload one with `moshi-desktop download --model REPO` (default {DEFAULT_REPO})."
    )
