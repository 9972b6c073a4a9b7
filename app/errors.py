"""Errors a user can meet, raised as our own types and reported at the CLI boundary.

The message is one sentence that says what happened and what to do, e.g.
``UserError("No microphone found; plug one in or pick another with --input-device.")``.
`app.cli.main` prints it as ``moshi-desktop: error: <message>`` (no traceback) and exits with
`exit_code`.
"""

import errno


class UserError(Exception):
    """Something went wrong that the user can fix (exit status 1): missing files, no device, ..."""

    exit_code: int = 1


class UsageError(UserError):
    """The command line itself is wrong (exit status 2, like argparse's own usage errors)."""

    exit_code: int = 2


def io_reason(error: BaseException) -> str:
    """Why a file could not be read or written, in words a user acts on."""
    errno_ = getattr(error, "errno", None)
    if errno_ in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk is full; free some space or choose another drive"
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied; choose a folder you can write to"
    strerror = getattr(error, "strerror", None)
    if strerror:
        return strerror[:1].lower() + strerror[1:]
    return str(error) or type(error).__name__
