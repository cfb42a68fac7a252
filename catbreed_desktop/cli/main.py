"""The `catbreed` command: argument parsing and dispatch to the subcommand modules.

Each subcommand module offers `register(subparsers)` and sets `handler=` (a function taking the
parsed arguments and returning an exit status). `main` always returns an int: 0 success, 1 some
files failed, 2 usage or model errors, 130 interrupted; `core.program.run_program`, which the
trainer's command line shares, turns expected errors into one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from catbreed_desktop import __version__
from catbreed_desktop.cli import (
    classify_command,
    correct_command,
    engines_command,
    serve_command,
    sort_command,
)
from catbreed_desktop.cli.common import PROGRAM
from catbreed_desktop.core.program import run_program


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Classify cat photos by breed and sort them into per-breed folders, on this machine.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show more detail on stderr")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    classify_command.register(subparsers)
    sort_command.register(subparsers)
    correct_command.register(subparsers)
    engines_command.register(subparsers)
    serve_command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_program(build_parser(), argv, prepare=lambda args: _configure_logging(args.verbose))


def _configure_logging(verbose: bool) -> None:
    # Engine builds log at INFO ("building a TensorRT engine ..."), which people should see.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{PROGRAM}: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for noisy in ("PIL", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
