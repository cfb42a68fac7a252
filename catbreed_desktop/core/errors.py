"""The one base class of the errors people meet and can act on, and the exit statuses they map to.

Every expected failure raises a subclass of `CatBreedError`: a model bundle that cannot be used, a
photo that cannot be read, an engine that cannot run here, a sort journal in the way, nothing to
undo, a trainer input to fix or a quality check that refused a result. Its message says what is
wrong in words, and its class says which exit status a command line gives it. Anything else is a
bug and keeps its traceback.

`report_error` is the one place where both command lines (`catbreed` and `python -m trainer`) turn
such an error into a single line on stderr and an exit status.
"""

from __future__ import annotations

import sys
from typing import TextIO

from catbreed_desktop.core.printable import printable

SOME_FAILED = 1  # some files could not be handled, nothing to undo, a quality check refused a result
USAGE_ERROR = 2  # a command line, model or input the user has to fix
INTERRUPTED = 130  # Ctrl+C, as shells report a SIGINT


class CatBreedError(Exception):
    """An expected failure, with the reason in words.

    `exit_status` is what a command line exits with when this error ends it; `label`, when not
    empty, is put before the message ("check failed: ...").
    """

    exit_status: int = USAGE_ERROR
    label: str = ""


class UsageError(CatBreedError):
    """A command line that asks for what cannot be done: no photos where it points, a file for a folder."""


def error_line(error: CatBreedError) -> str:
    """The error as one line that is safe to print: its label, then its message with every line joined."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    message = message or type(error).__name__
    # Messages carry file names and labels from anywhere; escaped, they cannot act on the terminal.
    return printable(f"{error.label}: {message}" if error.label else message)


def report_error(error: CatBreedError, program: str, stream: TextIO | None = None) -> int:
    """Print `program: message` as one line on stderr (or `stream`); return the error's exit status."""
    print(f"{program}: {error_line(error)}", file=stream if stream is not None else sys.stderr)
    return error.exit_status
