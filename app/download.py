"""`moshi-desktop download`: fetch a model into the Hugging Face cache, with a progress bar.

Every command that runs the model downloads what it lacks the same way (`locate`). An interrupted
download resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def register(subparsers) -> None:
    from .talk import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "download",
        help="download a model into the Hugging Face cache",
        description="Download a model's files into the Hugging Face cache (shared with other "
        "tools), with progress. Run it again after an interruption: it resumes.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="REPO",
        help="Hugging Face repository id (default %(default)s)",
    )
    parser.add_argument("--revision", help="a branch, tag or commit of the repository")
    parser.set_defaults(handler=run, offline=False)


class ProgressBars:
    """Draws one tqdm bar per file on stderr; shows the weights' licence before the first."""

    def __init__(self) -> None:
        self.bar = None
        self.filename = None
        self.licence_shown = False

    def __call__(self, update) -> None:
        from tqdm import tqdm

        from model.hub import LICENSE

        if not self.licence_shown:
            print(LICENSE, file=sys.stderr)
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


def locate(args: argparse.Namespace, download: bool = True):
    """The files of `args.model` (with `args.revision`, `args.offline`), downloading what is
    missing; every failure is a UserError."""
    from model.checkpoint import CheckpointError
    from model.hub import locate_model

    bars = ProgressBars()
    try:
        return locate_model(
            args.model,
            revision=getattr(args, "revision", None),
            offline=getattr(args, "offline", False) or None,
            download=download,
            progress=bars,
        )
    except CheckpointError as e:
        raise UserError(f"cannot load the model: {e}") from e
    except KeyboardInterrupt:
        bars.close()
        raise UserError("download interrupted; run the same command again to resume") from None
    finally:
        bars.close()


def run(args: argparse.Namespace) -> int:
    from model.hub import is_repo_id

    if not is_repo_id(args.model):
        raise UserError(f"{args.model} is not a Hugging Face repository id (owner/name)")
    files = locate(args)
    size = sum(p.stat().st_size for p in (files.lm_weights, files.mimi_weights, files.tokenizer))
    print(f"{args.model}: {size / 1e9:.2f} GB in {files.folder}")
    return 0
