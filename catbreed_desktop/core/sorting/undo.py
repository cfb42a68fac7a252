"""Undoing the last sort: moved photos go back, copies the sort made are removed, nothing is overwritten.

Undo works from the journal and checks every file's bytes first: a copy is removed only while it
still has the bytes the sort gave it, and a photo goes back only to a free place. Undo is itself
journaled, and repeating an interrupted undo finishes it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from catbreed_desktop.core.errors import SOME_FAILED, CatBreedError
from catbreed_desktop.core.files import fsync_dir
from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.core.sorting import fileops
from catbreed_desktop.core.sorting.executor import (
    ProgressCallback,
    found_at_planned_destination,
    is_unaccounted,
    reconcile,
    target_lock,
    unaccounted_reason,
)
from catbreed_desktop.core.sorting.journal import (
    Journal,
    JournalState,
    OperationState,
    exclusive_lock,
    journals_dir,
    read_journal,
    read_journals_newest_first,
)
from catbreed_desktop.core.sorting.plan import COPY, MOVE, SortMode


class NothingToUndo(CatBreedError):
    """There is no sort left to undo."""

    exit_status = SOME_FAILED  # nothing went wrong, but nothing was done either


@dataclass
class UndoResult:
    """Photos put back, copies removed, copies kept because their original is gone, and problems."""

    restored: int = 0
    removed_copies: int = 0
    kept_copies: list[str] = field(default_factory=list)  # copies whose original is gone: not removed
    problems: list[str] = field(default_factory=list)
    # Photos gone from their place with no record of where they went: among the problems too.
    unaccounted: int = 0


def undo_last_sort(on_progress: ProgressCallback | None = None) -> UndoResult:
    """Undo the most recent sort not yet undone, finished or interrupted.

    Raises NothingToUndo when there is no such sort. Calling it again undoes the sort before.
    """
    with exclusive_lock():
        state = _last_undoable()
        with target_lock(state.plan.target), Journal(state.path) as journal:
            if not state.undo_started:
                journal.append({"type": "undo-start"})
            for operation in state.pending:
                reconcile(operation, journal, state.plan.target)
            state = read_journal(state.path)
            result = UndoResult()
            for operation in state.operations:
                if operation.unaccounted or is_unaccounted(operation):
                    source = printable(operation.planned.source)
                    result.problems.append(f"{source} {unaccounted_reason(state.plan.target)}")
                    result.unaccounted += 1
            to_undo = [op for op in state.operations if op.outcome == "done" and not op.undone]
            if on_progress:
                on_progress(0, len(to_undo))
            for count, operation in enumerate(reversed(to_undo), start=1):
                _undo_one(operation, journal, result)
                if on_progress:
                    on_progress(count, len(to_undo))
            _remove_created_folders(state)
            journal.append(
                {"type": "undo-end", "restored": result.restored, "unaccounted": result.unaccounted}
            )
    return result


@dataclass
class UndoPreview:
    """What the next undo will do, worked out without changing anything: for a confirmation."""

    journal: Path
    created: str
    mode: SortMode
    target: Path
    to_move_back: int = 0
    copies_to_remove: int = 0
    copies_to_keep: int = 0  # their original is gone or changed: undo keeps them
    changed: int = 0  # changed after the sort: undo leaves them alone
    interrupted: int = 0  # operations cut off by a crash, settled before undoing
    unaccounted: int = 0  # gone from their place, and the journal does not say where

    def describe(self) -> str:
        """One paragraph for the user: which sort, and what will happen to its files."""
        parts = [f"Undo the {self.mode} sort into {printable(self.target)} of {local_time(self.created)}:"]
        if self.to_move_back:
            parts.append(
                f"{plural(self.to_move_back, 'photo')} will be moved back to where {_was(self.to_move_back)}."
            )
        if self.copies_to_remove:
            parts.append(
                f"{plural(self.copies_to_remove, 'copy', 'copies')} will be removed "
                "(their originals are still in place with the same bytes)."
            )
        if self.copies_to_keep:
            parts.append(
                f"{plural(self.copies_to_keep, 'copy', 'copies')} will be kept, because "
                f"{'its original is' if self.copies_to_keep == 1 else 'their originals are'} gone or changed."
            )
        if self.changed:
            parts.append(
                f"{plural(self.changed, 'file')} changed after the sort will be left where {_was(self.changed, now=True)}."
            )
        if self.interrupted:
            parts.append(
                f"{plural(self.interrupted, 'operation')} cut off by an interruption will be settled first."
            )
        if self.unaccounted:
            pronoun, verb = ("it", "is") if self.unaccounted == 1 else ("they", "are")
            parts.append(
                f"{plural(self.unaccounted, 'photo')} cannot be put back: {pronoun} {verb} gone from where "
                f"{_was(self.unaccounted)}, and the journal does not say where {pronoun} went."
            )
        if len(parts) == 1:
            parts.append("nothing is left to put back.")
        return " ".join(parts)


def local_time(created: str) -> str:
    """A journal's UTC time ("2026-01-02T03:04:05Z") as the person's clock shows it, with its zone.

    Text that is not such a time is returned as it is.
    """
    try:
        moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return created
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _was(number: int, now: bool = False) -> str:
    if now:
        return "it is" if number == 1 else "they are"
    return "it was" if number == 1 else "they were"


def plan_undo() -> UndoPreview:
    """What `undo_last_sort` would do now; raises NothingToUndo when there is no sort to undo."""
    state = _last_undoable()
    preview = UndoPreview(state.path, state.created, state.plan.mode, state.plan.target)
    preview.interrupted = sum(1 for op in state.pending if op.last_intent is not None)
    for operation in state.operations:
        intent = operation.last_intent
        if operation.outcome is None and intent is None:
            # A photo found at its planned destination is settled as done and goes back with the others.
            intent = found_at_planned_destination(operation, state.plan.target)
            if intent is not None:
                preview.interrupted += 1
                operation.outcome = "done"
            elif is_unaccounted(operation):
                preview.unaccounted += 1
        elif operation.unaccounted:
            preview.unaccounted += 1
        if operation.outcome != "done" or operation.undone or intent is None:
            continue
        placed, original, content = intent.destination, intent.source, intent.content
        if not os.path.lexists(placed):
            continue
        if not fileops.has_content(placed, content):
            preview.changed += 1
        elif intent.action == MOVE:
            preview.to_move_back += 1
        elif fileops.holds_its_own_copy(original, placed, content):
            preview.copies_to_remove += 1
        else:
            preview.copies_to_keep += 1
    return preview


def moves_to_undo() -> list[tuple[Path, Path]]:
    """(where it is now, where it came from) of each photo the next undo will move back.

    Lets a caller prepare before undoing, e.g. a folder watcher that must not take the returning
    photos for new ones. Empty when there is nothing to undo.
    """
    try:
        state = _last_undoable()
    except NothingToUndo:
        return []
    return [
        (op.last_intent.destination, op.planned.source)
        for op in state.operations
        if op.outcome == "done"
        and not op.undone
        and op.last_intent is not None
        and op.last_intent.action == MOVE
    ]


def _last_undoable() -> JournalState:
    undone = 0
    left_behind: JournalState | None = None  # the newest undo that could not account for every photo
    for state in read_journals_newest_first():
        if not state.is_undone:
            return state
        undone += 1
        if left_behind is None and state.undo_unaccounted:
            left_behind = state
    if left_behind is not None:
        count = left_behind.undo_unaccounted
        raise NothingToUndo(
            f"There is no sort left to undo in {journals_dir()}, but the undo of the sort of "
            f"{left_behind.created} could not put back {plural(count, 'photo')}: the journal does not "
            f"say where {'it' if count == 1 else 'they'} went (look in {printable(left_behind.plan.target)})."
        )
    if undone:
        raise NothingToUndo(
            f"There is no sort to undo: all {undone} sorts journaled in {journals_dir()} are undone."
        )
    raise NothingToUndo(f"There is no sort to undo: no sort has been journaled in {journals_dir()}.")


def _undo_one(operation: OperationState, journal: Journal, result: UndoResult) -> None:
    intent = operation.done_intent
    original, placed, content = intent.source, intent.destination, intent.content
    if intent.action == COPY:
        if not os.path.lexists(placed):
            pass  # the copy was already deleted: nothing to undo
        elif not fileops.has_content(placed, content):
            result.problems.append(f"{printable(placed)} was changed after the sort, so this copy was kept")
            return
        elif not fileops.holds_its_own_copy(original, placed, content):
            # "Copy, check, delete the originals": the copy may be the only one left.
            result.kept_copies.append(
                f"{printable(placed)} was kept: its original {printable(original)} is gone or changed"
            )
            return
        else:
            os.unlink(placed)
            fsync_dir(placed.parent)
            result.removed_copies += 1
        journal.append({"type": "undo-done", "id": operation.index})
        return

    for temp in operation.undo_temps:
        fileops.remove_if_exists(temp)
    shown_original, shown_placed = printable(original), printable(placed)
    if not os.path.lexists(placed):
        if fileops.is_regular_file(original) and fileops.has_content(original, content):
            result.restored += 1  # an earlier, interrupted undo already put it back
            journal.append({"type": "undo-done", "id": operation.index})
        else:
            result.problems.append(
                f"{shown_placed} is no longer there, so it could not be put back at {shown_original}"
            )
        return
    if os.path.lexists(original):
        if os.path.islink(original):
            result.problems.append(f"{shown_original} is now a link, so {shown_placed} was left where it is")
        elif fileops.same_entry(original, placed):
            result.problems.append(
                f"{shown_original} now leads to {shown_placed} itself (a folder on the way was replaced "
                "by a link), so it was left where it is"
            )
        elif fileops.has_content(placed, content) and fileops.holds_its_own_copy(original, placed, content):
            # The original place already holds these exact bytes (an interrupted undo, or a hard
            # link left by an interrupted move): drop the second name.
            os.unlink(placed)
            fsync_dir(placed.parent)
            result.restored += 1
            journal.append({"type": "undo-done", "id": operation.index})
        else:
            result.problems.append(
                f"{shown_original} is taken by another file, so {shown_placed} was left where it is"
            )
        return
    if not fileops.has_content(placed, content):
        result.problems.append(f"{shown_placed} was changed after the sort, so it was left where it is")
        return
    temp = fileops.temp_name_for(original, f"undo{operation.index}")
    try:
        original.parent.mkdir(parents=True, exist_ok=True)
        journal.append({"type": "undo-intent", "id": operation.index, "temp": str(temp)})
        fileops.move_file(placed, original, temp, content)
    except FileExistsError:
        result.problems.append(
            f"{shown_original} was taken meanwhile, so {shown_placed} was left where it is"
        )
        return
    except OSError as error:
        result.problems.append(
            f"{shown_placed} could not be put back at {shown_original}: {error.strerror or error}"
        )
        return
    result.restored += 1
    journal.append({"type": "undo-done", "id": operation.index})


def _remove_created_folders(state: JournalState) -> None:
    """Remove the folders the sort created, deepest first, where they are empty again."""
    for folder in sorted(set(state.created_dirs), key=lambda path: len(path.parts), reverse=True):
        # A folder that is not empty (other files arrived) or already gone is left alone.
        with contextlib.suppress(OSError):
            folder.rmdir()
