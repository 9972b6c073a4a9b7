"""`moshi-desktop download`: fetch a model into the Hugging Face cache, with a progress bar.

Every command that runs the model downloads what it lacks the same way (`locate`). An interrupted
download resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse

from model.files import DEFAULT_REPO, is_repo_id

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
    parser.set_defaults(handler=run, offline=False)


def run(args: argparse.Namespace) -> int:
    if not is_repo_id(args.model):
        raise UserError(f"{args.model} is not a Hugging Face repository id (owner/name)")
    try:
        files = locate(args)
    except UserError as e:  # not "run `moshi-desktop download`": that is this command
        raise UserError(
            str(e).replace(f"run `moshi-desktop download --model {args.model}`", "run it again")
        ) from e
    size = sum(p.stat().st_size for p in (files.lm_weights, files.mimi_weights, files.tokenizer))
    print(f"{args.model}: {size / 1e9:.2f} GB in {files.folder}")
    return 0
