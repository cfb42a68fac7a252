"""`catbreed classify`: print each photo's most likely breeds, as a table, JSON lines or CSV.

Unreadable files get an error line and do not stop the run; the exit status is 1 when any file
failed, 0 when all were classified, 2 for usage or model errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any, Protocol, TextIO

from catbreed_desktop.cli.common import (
    PROGRAM,
    ProgressReporter,
    add_model_options,
    fail,
    open_classifier,
    positive_int,
)
from catbreed_desktop.core.classify import Failure, Prediction
from catbreed_desktop.core.imaging import iter_photo_paths

NOT_A_CAT = "not a cat"
WIDEST_PATH_COLUMN = 60


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="print the most likely breeds of photos",
        description="Print the most likely breeds of each photo with their probabilities.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photo files or folders")
    parser.add_argument(
        "--top-k", type=positive_int, default=3, metavar="K", help="breeds per photo (default: 3)"
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders too")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per photo (JSON lines)")
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    photos = iter_photo_paths(args.paths, recursive=args.recursive)
    if not photos:
        hint = "" if args.recursive else " (use --recursive to look into sub-folders)"
        raise fail(f"no photos found in {', '.join(args.paths)}{hint}")
    classifier = open_classifier(args, top_k=args.top_k)
    writer = _make_writer(args, sys.stdout, classifier.top_k, photos)
    progress = ProgressReporter()
    failures = 0
    try:
        for result in classifier.classify(photos, on_progress=progress.update):
            if isinstance(result, Failure):
                failures += 1
            progress.clear()
            writer.write(result)
            sys.stdout.flush()
    finally:
        classifier.close()
    progress.finish()
    if failures:
        print(f"{PROGRAM}: {failures} of {len(photos)} files could not be classified", file=sys.stderr)
    return 1 if failures else 0


def _make_writer(args: argparse.Namespace, out: TextIO, top_k: int, photos: list) -> _Writer:
    if args.json:
        return JsonLinesWriter(out)
    if args.csv:
        return CsvWriter(out, top_k)
    width = min(WIDEST_PATH_COLUMN, max(len(str(p)) for p in photos))
    return TableWriter(out, width)


class _Writer(Protocol):
    def write(self, result: Prediction | Failure) -> None: ...


class TableWriter:
    """`path  Breed 91.2%  Other 5.0% ...`; failures go to stderr so stdout stays a clean table."""

    def __init__(self, out: TextIO, width: int) -> None:
        self.out = out
        self.width = width

    def write(self, result: Prediction | Failure) -> None:
        if isinstance(result, Failure):
            print(f"{PROGRAM}: error: {result.path}: {result.reason}", file=sys.stderr)
            return
        breeds = "  ".join(f"{label} {probability:.1%}" for label, probability in result.top)
        if not result.is_cat:
            breeds = f"[{NOT_A_CAT}]  {breeds}"
        print(f"{str(result.path):<{self.width}}  {breeds}", file=self.out)


def result_record(result: Prediction | Failure) -> dict[str, Any]:
    """A JSON-ready dict of one result, as `--json` prints it."""
    if isinstance(result, Failure):
        return {"path": str(result.path), "ok": False, "error": result.reason}
    return {
        "path": str(result.path),
        "ok": True,
        "label": result.label,
        "confidence": round(result.confidence, 6),
        "is_cat": result.is_cat,
        "ood_score": None if result.ood_score is None else round(result.ood_score, 6),
        "top": [{"label": label, "probability": round(p, 6)} for label, p in result.top],
    }


class JsonLinesWriter:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, result: Prediction | Failure) -> None:
        print(json.dumps(result_record(result), ensure_ascii=False), file=self.out)


class CsvWriter:
    def __init__(self, out: TextIO, top_k: int) -> None:
        self.top_k = top_k
        self.writer = csv.writer(out, lineterminator="\n")
        ranked = [
            column for rank in range(1, top_k + 1) for column in (f"label_{rank}", f"probability_{rank}")
        ]
        self.writer.writerow(["path", "status", *ranked, "is_cat", "ood_score", "error"])

    def write(self, result: Prediction | Failure) -> None:
        if isinstance(result, Failure):
            self.writer.writerow([str(result.path), "error", *[""] * (2 * self.top_k), "", "", result.reason])
            return
        ranked: list[str] = []
        for label, probability in result.top:
            ranked += [label, f"{probability:.6f}"]
        ranked += [""] * (2 * self.top_k - len(ranked))
        score = "" if result.ood_score is None else f"{result.ood_score:.6f}"
        status = "ok" if result.is_cat else NOT_A_CAT
        self.writer.writerow([str(result.path), status, *ranked, str(result.is_cat).lower(), score, ""])
