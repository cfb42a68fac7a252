"""The `catbreed` command: argument parsing and dispatch to the subcommand modules.

Each subcommand module offers `register(subparsers)` and sets `handler=` (a function taking the
parsed arguments and returning an exit status). `main` always returns an int: 0 success, 1 some
files failed, 2 usage or model errors, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from catbreed_desktop import __version__
from catbreed_desktop.cli import classify_command, engines_command
from catbreed_desktop.cli.common import PROGRAM, USAGE_ERROR

try:  # sort and undo live in their own module, which may not be installed in every build
    import catbreed_desktop.cli.sort_command as sort_command
except ModuleNotFoundError as error:
    if error.name != "catbreed_desktop.cli.sort_command":
        raise
    sort_command = None

INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Classify cat photos by breed and sort them into per-breed folders, on this machine.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show more detail on stderr")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    classify_command.register(subparsers)
    if sort_command is not None:
        sort_command.register(subparsers)
    engines_command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return USAGE_ERROR
        _configure_logging(args.verbose)
        return int(handler(args))
    except SystemExit as exit_request:  # argparse and `fail` exit; callers of main() get the status
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else USAGE_ERROR)
    except KeyboardInterrupt:
        print(f"\n{PROGRAM}: interrupted", file=sys.stderr)
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
