"""`catbreed correct`: teach the model's personal layer what breed some photos show, list or forget it.

`catbreed correct PHOTO... --breed NAME` runs the model on the photos for their embeddings and keeps
them with the breed, in the store of the bundle in use (user data folder; no pixels are kept).
`--from FILE.csv` reads the `path,label` file the window's *Export corrections* writes. `--list`
prints what is kept, `--export FILE.csv` writes it in that same form (for `python -m trainer
prepare`), `--forget` forgets it (all of it, or only the photos named). After that,
`catbreed classify` and `catbreed sort` take the corrections into account (unless `--no-personal`).
Nothing here changes a photo.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from catbreed_desktop.cli.common import PROGRAM, add_model_options, open_bundle, open_classifier
from catbreed_desktop.core.classify import Failure, Prediction
from catbreed_desktop.core.corrections import Correction, export_corrections_csv, read_corrections_csv
from catbreed_desktop.core.errors import UsageError
from catbreed_desktop.core.personal import PersonalStore
from catbreed_desktop.core.photos import iter_photo_paths
from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.core.program import SOME_FAILED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "correct",
        help="tell the app the breed of some photos; classify and sort learn from it at once",
        description=(
            "Keep the breed of photos (the model's embedding of each, never its pixels) so that "
            "`catbreed classify` and `catbreed sort` answer like you for these photos and ones like them."
        ),
    )
    parser.add_argument("paths", nargs="*", metavar="PHOTO", help="photo files or folders")
    parser.add_argument("--breed", metavar="NAME", help="the breed the photos show (one of the model's)")
    parser.add_argument(
        "--from",
        dest="from_csv",
        type=Path,
        metavar="FILE.csv",
        help="read 'path,label' rows, as the window's Export corrections writes them",
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders too")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the corrections kept for this model")
    action.add_argument(
        "--export",
        type=Path,
        metavar="FILE.csv",
        help="write the corrections kept as 'path,label' rows, as the window exports them, for "
        "`python -m trainer prepare --data FILE.csv`",
    )
    action.add_argument(
        "--forget",
        action="store_true",
        help="forget the photos named, or every correction when none is named",
    )
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.list or args.forget or args.export:
        if args.breed or args.from_csv:
            raise UsageError("--list, --export and --forget take no --breed or --from")
        store = PersonalStore(open_bundle(args).model_sha256)
        if args.export:
            count = export_corrections_csv(
                [Correction(Path(e.path), e.label) for e in store.entries], args.export
            )
            print(f"wrote {plural(count, 'correction')} to {printable(args.export)}")
            return 0
        return _list(store) if args.list else _forget(store, args.paths)
    corrections = _requested(args)
    classifier = open_classifier(args, top_k=1)
    labels = classifier.bundle.labels
    unknown = sorted({label for _, label in corrections if label not in labels})
    if unknown:
        classifier.close()
        raise UsageError(
            f"the model knows no breed {', '.join(map(repr, unknown))}; its breeds are: {', '.join(labels)}"
        )
    store = PersonalStore(classifier.bundle.model_sha256)
    if store.warning:
        print(f"{PROGRAM}: warning: {printable(store.warning)}", file=sys.stderr)
    label_of = dict(corrections)
    kept: list[Prediction] = []
    failures = 0
    try:
        for result in classifier.classify(list(label_of)):
            if isinstance(result, Failure):
                failures += 1
                print(
                    f"{PROGRAM}: skipped: {printable(result.path)}: {printable(result.reason)}",
                    file=sys.stderr,
                )
            elif result.embedding is None:
                raise UsageError(
                    f"the model in {printable(classifier.bundle.path)} gives no embedding to learn from"
                )
            else:
                kept.append(result)
    finally:
        classifier.close()
    if kept:
        store.add(
            [p.path for p in kept],
            [label_of[p.path] for p in kept],
            np.stack([p.embedding for p in kept]),  # type: ignore[misc]
        )
    print(f"kept {plural(len(kept), 'correction')}; {plural(len(store), 'correction')} in all for this model")
    return SOME_FAILED if failures else 0


def _requested(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """(photo, breed) pairs the command line asks to keep, the last one given for a photo winning."""
    pairs: list[tuple[Path, str]] = []
    if args.from_csv is not None:
        try:
            pairs += [(c.path, c.label) for c in read_corrections_csv(args.from_csv)]
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read {printable(args.from_csv)}: {error}") from None
    if args.paths:
        if not args.breed:
            raise UsageError("name the breed of the photos with --breed NAME")
        photos = iter_photo_paths(args.paths, recursive=args.recursive)
        if not photos:
            raise UsageError(f"no photos found in {', '.join(map(printable, args.paths))}")
        pairs += [(photo, args.breed) for photo in photos]
    elif args.breed:
        raise UsageError("--breed needs the photos it names")
    if not pairs:
        raise UsageError("name photos and --breed, or --from FILE.csv (or --list, --forget)")
    return list(dict(pairs).items())


def _list(store: PersonalStore) -> int:
    if store.warning:
        print(f"{PROGRAM}: warning: {printable(store.warning)}", file=sys.stderr)
    for entry in store.entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.time))
        print(f"{when}  {printable(entry.label)}  {printable(entry.path)}")
    counts = Counter(store.labels)
    summary = ", ".join(f"{printable(label)} {count}" for label, count in sorted(counts.items()))
    print(f"{plural(len(store), 'correction')} kept for this model" + (f": {summary}" if summary else ""))
    return 0


def _forget(store: PersonalStore, photos: list[str]) -> int:
    gone = store.forget([Path(p) for p in photos] if photos else None)
    print(f"forgot {plural(gone, 'correction')}; {len(store)} left")
    return 0
