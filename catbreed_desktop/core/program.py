"""What both command lines share, `catbreed` and `python -m trainer`: the run loop and its exit statuses.

`run_program` parses the arguments, calls the chosen subcommand's `handler` and turns how it ended
into an exit status: an expected error (`CatBreedError`) becomes one line `program: message` on
stderr (through `report_error`) and its own status, Ctrl+C becomes 130, a reader that left the
pipe becomes 0. The program's name is the parser's `prog`, given once by each command line.
Exit statuses: 0 success, 1 some files failed (or a check refused a result), 2 usage, model or
input errors, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from catbreed_desktop.core.errors import INTERRUPTED, SOME_FAILED, USAGE_ERROR, CatBreedError, report_error

__all__ = ["INTERRUPTED", "SOME_FAILED", "USAGE_ERROR", "positive_int", "run_program"]


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run_program(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    prepare: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse `argv`, run the subcommand's `handler(args)` and return the exit status; never raises.

    Each subcommand sets `handler=` (a function taking the parsed arguments and returning an exit
    status, None meaning 0). `prepare(args)` runs first, once a subcommand was chosen.
    """
    program = parser.prog
    try:
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return USAGE_ERROR
        if prepare is not None:
            prepare(args)
        return int(handler(args) or 0)
    except CatBreedError as error:
        return report_error(error, program)
    except SystemExit as exit_request:  # argparse exits; callers of main() get the status instead
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else USAGE_ERROR)
    except KeyboardInterrupt:
        print(f"\n{program}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # `catbreed classify ... | head`: the reader left, nothing is wrong
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    # Python would report the broken pipe again when flushing stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
