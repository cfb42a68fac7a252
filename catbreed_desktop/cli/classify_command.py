"""`catbreed classify`: print each photo's most likely breeds, as a table, JSON lines or CSV.

Every breed the bundle has can be shown (`--top-k` up to its number of labels). A photo whose top
breed is less likely than the unsure threshold (`--min-confidence`, by default the bundle's own
recommendation) is marked unsure: `[unsure]` in the table, `"unsure": true` in JSON, an `unsure`
column in CSV; it is where `catbreed sort` would put it. A breed the person's corrections gave,
not the model alone, is said too: `[from your correction ...]` in the table, `"personal": true`
in JSON, a `personal` column in CSV (the last, so scripts reading the earlier columns by position
keep working).

Unreadable files get an error line and do not stop the run; the exit status is 1 when any file
failed, 0 when all were classified, 2 for usage or model errors. An engine that fails for good
mid-run (a Triton server that stops answering) ends the run with its error: the results already
printed stand, and the count of photos done is said.

Paths and labels are printed through `printable`, so a file name that is not valid UTF-8 or a
label with an ANSI escape shows as visible escapes instead of crashing a strict UTF-8 stdout or
driving the terminal. `--json` stays strict UTF-8 JSON and lossless: such a file name is escaped
in "path" and given exactly, as base64 of its bytes, in "path_bytes_b64".
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

from catbreed_desktop.cli.common import (
    PROGRAM,
    ProgressReporter,
    adapted_in_batches,
    add_min_confidence_option,
    add_model_options,
    add_personal_option,
    find_photos,
    open_classifier,
    open_personal_layer,
    resolve_min_confidence,
)
from catbreed_desktop.core.classify import Failure, Prediction
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.printable import printable
from catbreed_desktop.core.program import SOME_FAILED, positive_int

NOT_A_CAT = "not a cat"
UNSURE = "unsure"
WIDEST_PATH_COLUMN = 60


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="print the most likely breeds of photos",
        description="Print the most likely breeds of each photo with their probabilities.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photo files or folders")
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=3,
        metavar="K",
        help="breeds per photo, up to every breed the model has (default: 3)",
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders too")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per photo (JSON lines); a file name that is not valid UTF-8 is escaped in "path" '
        'and given exactly, as base64 of its bytes, in "path_bytes_b64"',
    )
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    add_min_confidence_option(parser, "is marked unsure (where `catbreed sort` would put it)")
    add_personal_option(parser)
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    photos = find_photos(args.paths, args.recursive)
    classifier = open_classifier(args, top_k=args.top_k)
    min_confidence = resolve_min_confidence(args, classifier.bundle)
    layer = open_personal_layer(args, classifier.bundle)
    writer = _make_writer(args, sys.stdout, classifier.top_k, photos, min_confidence)
    progress = ProgressReporter()
    failures = 0
    written = 0
    results = classifier.classify(photos, on_progress=progress.update)
    try:
        for result in results if layer is None else adapted_in_batches(layer, results, classifier.batch_size):
            if isinstance(result, Failure):
                failures += 1
            progress.clear()
            writer.write(result)
            sys.stdout.flush()
            written += 1
    except CatBreedError:
        # The engine failed for good (a Triton server gone): what was printed stands, the rest is said.
        progress.clear()
        print(f"{PROGRAM}: stopped after {written} of {len(photos)} photos", file=sys.stderr)
        raise
    finally:
        classifier.close()
    progress.finish(read=written - failures)
    if failures:
        print(f"{PROGRAM}: {failures} of {len(photos)} files could not be classified", file=sys.stderr)
    return SOME_FAILED if failures else 0


def _make_writer(
    args: argparse.Namespace, out: TextIO, top_k: int, photos: list[Path], min_confidence: float
) -> _Writer:
    if args.json:
        return JsonLinesWriter(out, min_confidence)
    if args.csv:
        return CsvWriter(out, top_k, min_confidence)
    width = min(WIDEST_PATH_COLUMN, max(len(printable(p)) for p in photos))
    return TableWriter(out, width, min_confidence)


def is_unsure(result: Prediction, min_confidence: float) -> bool:
    """Whether `catbreed sort` would put the photo in Unsure: a cat whose top breed is below the threshold."""
    return result.is_cat and result.confidence < min_confidence


class _Writer(Protocol):
    def write(self, result: Prediction | Failure) -> None: ...


class TableWriter:
    """`path  Breed 91.2%  Other 5.0% ...`; failures go to stderr so stdout stays a clean table."""

    def __init__(self, out: TextIO, width: int, min_confidence: float = 0.0) -> None:
        self.out = out
        self.width = width
        self.min_confidence = min_confidence

    def write(self, result: Prediction | Failure) -> None:
        if isinstance(result, Failure):
            print(f"{PROGRAM}: error: {printable(result.path)}: {printable(result.reason)}", file=sys.stderr)
            return
        breeds = "  ".join(f"{printable(label)} {probability:.1%}" for label, probability in result.top)
        if result.moved_by is not None:
            breeds = f"{breeds}  [from your correction {printable(result.moved_by)}]"
        if not result.is_cat:
            breeds = f"[{NOT_A_CAT}]  {breeds}"
        elif is_unsure(result, self.min_confidence):
            breeds = f"[{UNSURE}]  {breeds}"
        print(f"{printable(result.path):<{self.width}}  {breeds}", file=self.out)


def result_record(result: Prediction | Failure, min_confidence: float = 0.0) -> dict[str, Any]:
    """A JSON-ready dict of one result, as `--json` prints it; every string encodes as strict UTF-8."""
    record = _path_fields(result.path)
    if isinstance(result, Failure):
        return record | {"ok": False, "error": _unicode(result.reason)}
    return record | {
        "ok": True,
        "label": _unicode(result.label),
        "confidence": round(result.confidence, 6),
        "is_cat": result.is_cat,
        "unsure": is_unsure(result, min_confidence),
        "ood_score": None if result.ood_score is None else round(result.ood_score, 6),
        "personal": result.personal,
        "top": [{"label": _unicode(label), "probability": round(p, 6)} for label, p in result.top],
    }


def _path_fields(path: Path) -> dict[str, str]:
    text = str(path)
    if _is_unicode(text):
        return {"path": text}  # JSON escapes control characters itself, so this is exact and safe
    # Undecodable bytes (kept as surrogates) cannot be written as UTF-8: shown escaped, given exactly.
    exact = base64.b64encode(os.fsencode(path)).decode("ascii")
    return {"path": printable(text), "path_bytes_b64": exact}


def _unicode(text: str) -> str:
    return text if _is_unicode(text) else printable(text)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JsonLinesWriter:
    def __init__(self, out: TextIO, min_confidence: float = 0.0) -> None:
        self.out = out
        self.min_confidence = min_confidence

    def write(self, result: Prediction | Failure) -> None:
        # allow_nan=False: a bare NaN is not JSON, and readers would choke on it.
        record = result_record(result, self.min_confidence)
        print(json.dumps(record, ensure_ascii=False, allow_nan=False), file=self.out)


class CsvWriter:
    def __init__(self, out: TextIO, top_k: int, min_confidence: float = 0.0) -> None:
        self.top_k = top_k
        self.min_confidence = min_confidence
        self.writer = csv.writer(out, lineterminator="\n")
        ranked = [
            column for rank in range(1, top_k + 1) for column in (f"label_{rank}", f"probability_{rank}")
        ]
        # "unsure" is a column of its own, not a status: "ok" rows keep meaning "classified".
        # "personal" came later, so it is last: the columns before it keep their places.
        self.writer.writerow(
            ["path", "status", *ranked, "is_cat", "unsure", "ood_score", "error", "personal"]
        )

    def write(self, result: Prediction | Failure) -> None:
        if isinstance(result, Failure):
            empty = [""] * (2 * self.top_k + 3)
            self.writer.writerow([printable(result.path), "error", *empty, printable(result.reason), ""])
            return
        ranked: list[str] = []
        for label, probability in result.top:
            ranked += [printable(label), f"{probability:.6f}"]
        ranked += [""] * (2 * self.top_k - len(ranked))
        score = "" if result.ood_score is None else f"{result.ood_score:.6f}"
        status = "ok" if result.is_cat else NOT_A_CAT
        unsure = str(is_unsure(result, self.min_confidence)).lower()
        personal = str(result.personal).lower()
        self.writer.writerow(
            [printable(result.path), status, *ranked, str(result.is_cat).lower(), unsure, score, "", personal]
        )
