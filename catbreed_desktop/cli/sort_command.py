"""`catbreed sort`, `catbreed undo` and `catbreed resume`: classify photos, sort them safely, undo.

`sort` classifies, shows the plan (`--dry-run` stops there), executes it with a journal and prints
the summary; unreadable files are reported and left where they are. `undo` restores the last sort,
`resume` finishes one that was interrupted. When classification fails for good mid-way (a Triton
server that stops answering), the sort stops before planning: nothing is moved or copied. Exit status: 0 all fine, 1 some files failed or
nothing to undo, 2 usage or model errors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from catbreed_desktop.cli.common import (
    PROGRAM,
    ProgressReporter,
    add_min_confidence_option,
    add_model_options,
    open_classifier,
    resolve_min_confidence,
)
from catbreed_desktop.core.classify import Classifier, Failure
from catbreed_desktop.core.errors import CatBreedError, UsageError, error_line
from catbreed_desktop.core.photos import iter_photo_paths
from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.core.program import SOME_FAILED
from catbreed_desktop.core.sorting import (
    COPY,
    MOVE,
    NOT_CAT_FOLDER,
    UNSURE_FOLDER,
    JournalError,
    JournalWriteError,
    SortItem,
    SortPlan,
    SortResult,
    execute_plan,
    plan_sort,
    plan_undo,
    resume_interrupted_sort,
    undo_last_sort,
)
from catbreed_desktop.core.sorting.executor import latest_active_journal
from catbreed_desktop.core.sorting.plan import DUPLICATE
from catbreed_desktop.core.sorting.sources import leave_out_sorted


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sort = subparsers.add_parser(
        "sort",
        help="sort photos into one folder per breed (undo with `catbreed undo`)",
        description=(
            f"Classify photos and move (default) or copy them into DIR/<Breed>/, DIR/{UNSURE_FOLDER}/ when "
            f"the model is not sure enough, or DIR/{NOT_CAT_FOLDER}/. Nothing is ever overwritten: a name already "
            "taken gets 'name (2).jpg', and a photo whose exact bytes are already there is left in "
            "place. Every operation is journaled so `catbreed undo` can put everything back."
        ),
    )
    sort.add_argument("sources", nargs="+", metavar="SRC", help="photo files or folders")
    sort.add_argument("--into", required=True, type=Path, metavar="DIR", help="folder to sort into")
    mode = sort.add_mutually_exclusive_group()
    mode.add_argument(
        "--move", dest="mode", action="store_const", const=MOVE, help="move the photos (the default)"
    )
    mode.add_argument(
        "--copy", dest="mode", action="store_const", const=COPY, help="copy, keep the originals"
    )
    add_min_confidence_option(sort, f"goes to '{UNSURE_FOLDER}'")
    sort.add_argument(
        "--dry-run", action="store_true", help="show what would happen to each file and change nothing"
    )
    sort.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders too")
    add_model_options(sort)
    sort.set_defaults(handler=run_sort, mode=MOVE)

    undo = subparsers.add_parser(
        "undo",
        help="undo the last sort",
        description=(
            "Put the photos of the last sort back where they were and remove the copies it made, "
            "only while they are unchanged and their originals are still in place with the same bytes "
            "(a copy whose original is gone is kept). Nothing is overwritten. Run it again to undo the "
            "sort before."
        ),
    )
    undo.add_argument("--dry-run", action="store_true", help="say what undo would do and change nothing")
    undo.set_defaults(handler=run_undo)

    resume = subparsers.add_parser(
        "resume",
        help="finish a sort that was interrupted",
        description="Finish the last sort if it was interrupted (killed, stopped or crashed) before the end.",
    )
    resume.set_defaults(handler=run_resume)


def run_sort(args: argparse.Namespace) -> int:
    target = Path(args.into).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"--into {printable(target)} is a file, not a folder")
    unreadable: list[tuple[Path, str]] = []

    def unreadable_folder(folder: Path, reason: str) -> None:
        print(f"{PROGRAM}: skipped folder, left untouched: {printable(folder)}: {reason}", file=sys.stderr)
        unreadable.append((folder, reason))

    found = iter_photo_paths(args.sources, recursive=args.recursive, on_error=unreadable_folder)
    if not found:
        hint = "" if args.recursive else " (use --recursive to look into sub-folders)"
        raise UsageError(f"no photos found in {', '.join(map(printable, args.sources))}{hint}")
    _warn_if_interrupted()

    classifier = open_classifier(args, top_k=3)
    min_confidence = resolve_min_confidence(args, classifier.bundle)
    photos, filed = leave_out_sorted(found, args.sources, target, classifier.bundle.labels)
    if filed:
        print(
            f"{PROGRAM}: left out {plural(len(filed), 'photo')} already filed in the breed folders of "
            f"{printable(target)} (name such a folder itself to sort it again)",
            file=sys.stderr,
        )
    if not photos:
        classifier.close()
        print("nothing to sort")
        return SOME_FAILED if unreadable else 0
    items, unreadable_photos = _classify(classifier, photos)
    unreadable += unreadable_photos
    for path, reason in unreadable_photos:
        print(f"{PROGRAM}: skipped, left untouched: {printable(path)}: {reason}", file=sys.stderr)
    plan = plan_sort(items, target, mode=args.mode, min_confidence=min_confidence)
    for path, reason in plan.skipped:
        print(f"{PROGRAM}: skipped, left untouched: {printable(path)}: {reason}", file=sys.stderr)
    problems = len(unreadable) + len(plan.skipped)
    _print_plan(plan, each_file=args.dry_run or getattr(args, "verbose", False))
    if args.dry_run:
        print(f"dry run: nothing was changed ({plural(problems, 'file')} skipped)")
        return SOME_FAILED if problems else 0
    if not plan.operations:
        print("nothing to sort")
        return SOME_FAILED if problems else 0

    progress = ProgressReporter(noun="files")
    try:
        with _stop_on_interrupt() as stop_requested:
            result = execute_plan(plan, on_progress=progress.update, should_stop=stop_requested.is_set)
    except JournalWriteError as error:
        progress.clear()
        raise JournalWriteError(
            f"{error}. The sort stopped; every photo is in its old place or its new one. Once the "
            "journal can be written again, `catbreed resume` finishes the sort and `catbreed undo` undoes it."
        ) from None
    progress.finish()
    _print_result(result, plan.mode)
    return SOME_FAILED if (problems or result.failed or result.stopped) else 0


def run_undo(args: argparse.Namespace) -> int:
    # NothingToUndo and JournalError end the command as one line (status 1 and 2).
    progress = ProgressReporter(noun="files")
    if args.dry_run:
        print(plan_undo().describe())
        return 0
    result = undo_last_sort(on_progress=progress.update)
    progress.finish()
    summary = f"undo: {plural(result.restored, 'photo')} put back, {plural(result.removed_copies, 'copy', 'copies')} removed"
    if result.kept_copies:
        summary += f", {plural(len(result.kept_copies), 'copy', 'copies')} kept (their originals are gone or changed)"
    print(summary)
    for kept in result.kept_copies:
        print(f"{PROGRAM}: {kept}", file=sys.stderr)
    for problem in result.problems:
        print(f"{PROGRAM}: not undone: {problem}", file=sys.stderr)
    return SOME_FAILED if result.problems else 0


def run_resume(args: argparse.Namespace) -> int:
    progress = ProgressReporter(noun="files")
    with _stop_on_interrupt() as stop_requested:
        result = resume_interrupted_sort(on_progress=progress.update, should_stop=stop_requested.is_set)
    if result is None:
        print(f"{PROGRAM}: no interrupted sort to resume", file=sys.stderr)
        return SOME_FAILED
    progress.finish()
    _print_result(result, "sort")
    return SOME_FAILED if (result.failed or result.stopped) else 0


def _warn_if_interrupted() -> None:
    try:
        state = latest_active_journal()
    except JournalError:
        return
    if state is not None and state.pending:
        print(
            f"{PROGRAM}: note: the previous sort was interrupted with {len(state.pending)} files left; "
            "`catbreed resume` finishes it, `catbreed undo` (run twice) would undo it after this one",
            file=sys.stderr,
        )


def _classify(classifier: Classifier, photos: list[Path]) -> tuple[list[SortItem], list[tuple[Path, str]]]:
    progress = ProgressReporter()
    items: list[SortItem] = []
    unreadable: list[tuple[Path, str]] = []
    try:
        for result in classifier.classify(photos, on_progress=progress.update):
            if isinstance(result, Failure):
                unreadable.append((result.path, result.reason))
            else:
                items.append(SortItem(result.path, result.label, result.confidence, result.is_cat))
    except CatBreedError as error:
        # Classification failed for good (a Triton server gone): nothing is planned, so nothing moves.
        progress.clear()
        stopped = CatBreedError(
            f"{error_line(error)}. Stopped after classifying {len(items) + len(unreadable)} of "
            f"{len(photos)} photos; nothing was moved or copied"
        )
        stopped.exit_status = error.exit_status
        raise stopped from None
    finally:
        classifier.close()
    progress.finish()
    return items, unreadable


def _print_plan(plan: SortPlan, each_file: bool) -> None:
    verbs = {MOVE: "move", COPY: "copy", DUPLICATE: "already there"}
    for operation in plan.operations if each_file else ():
        arrow = "=" if operation.action == DUPLICATE else "->"
        print(
            f"{verbs[operation.action]:<13} {printable(operation.source)} {arrow} {printable(operation.destination)}"
        )
    counts = plan.summary()
    print(
        f"plan into {printable(plan.target)}: {counts[MOVE]} to move, {counts[COPY]} to copy, "
        f"{counts[DUPLICATE]} already there (left in place)"
    )
    for folder, count in plan.folders().items():
        print(f"  {printable(folder)}: {count}")
    for note in plan.shared_folder_notes():
        print(f"{PROGRAM}: note: {note}", file=sys.stderr)


def _print_result(result: SortResult, mode: str) -> None:
    verb = {MOVE: "moved", COPY: "copied"}.get(mode, "sorted")
    print(f"{len(result.done)} {verb}, {len(result.duplicates)} already there (left in place)")
    for operation, reason in result.failed:
        # A photo another program moved away meanwhile is not "left where it is": it is not there.
        where = ", left where it is" if os.path.lexists(operation.source) else ""
        print(f"{PROGRAM}: failed{where}: {printable(operation.source)}: {reason}", file=sys.stderr)
    if result.stopped:
        print(f"{PROGRAM}: stopped before the end; `catbreed resume` finishes it", file=sys.stderr)
    print(f"journal: {printable(result.journal)}")
    print("undo with: catbreed undo")


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """Ctrl+C finishes the file operation under way and then stops, rather than cutting it in half."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def ask_to_stop(signum: int, frame: object) -> None:
        requested.set()

    previous = signal.signal(signal.SIGINT, ask_to_stop)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)
