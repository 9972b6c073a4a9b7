"""Errors a user can meet, raised as our own types and reported at the CLI boundary.

The message is one sentence that says what happened and what to do, e.g.
``UserError("No microphone found; plug one in or pick another with --input-device.")``.
`app.cli.main` prints it as ``moshi-desktop: error: <message>`` (no traceback) and exits with
`exit_code`.
"""


class UserError(Exception):
    """Something went wrong that the user can fix (exit status 1): missing files, no device, ..."""

    exit_code: int = 1


class UsageError(UserError):
    """The command line itself is wrong (exit status 2, like argparse's own usage errors)."""

    exit_code: int = 2
