"""Undoing the last sort: moved photos go back, copies the sort made are removed, nothing is overwritten.

Undo works from the journal and checks every file's bytes first: a copy is removed only while it
still has the bytes the sort gave it, and a photo goes back only to a free place. Undo is itself
journaled, and repeating an interrupted undo finishes it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from catbreed_desktop.core.sorting import fileops
from catbreed_desktop.core.sorting.executor import ProgressCallback, reconcile
from catbreed_desktop.core.sorting.journal import (
    Journal,
    JournalState,
    OperationState,
    exclusive_lock,
    journals_dir,
    list_journals,
    read_journal,
)


class NothingToUndo(Exception):
    """There is no sort left to undo."""


@dataclass
class UndoResult:
    """Photos put back, copies removed, and what could not be undone (with the reason)."""

    restored: int = 0
    removed_copies: int = 0
    problems: list[str] = field(default_factory=list)


def undo_last_sort(on_progress: ProgressCallback | None = None) -> UndoResult:
    """Undo the most recent sort not yet undone, finished or interrupted.

    Raises NothingToUndo when there is no such sort. Calling it again undoes the sort before.
    """
    with exclusive_lock():
        state = _last_undoable()
        with Journal(state.path) as journal:
            if not state.undo_started:
                journal.append({"type": "undo-start"})
            for operation in state.pending:
                reconcile(operation, journal)
            state = read_journal(state.path)
            result = UndoResult()
            to_undo = [op for op in state.operations if op.outcome == "done" and not op.undone]
            if on_progress:
                on_progress(0, len(to_undo))
            for count, operation in enumerate(reversed(to_undo), start=1):
                _undo_one(operation, journal, result)
                if on_progress:
                    on_progress(count, len(to_undo))
            _remove_created_folders(state)
            journal.append({"type": "undo-end", "restored": result.restored})
    return result


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
        and op.last_intent.action == "move"
    ]


def _last_undoable() -> JournalState:
    for path in reversed(list_journals()):
        state = read_journal(path)
        if not state.is_undone:
            return state
    raise NothingToUndo(f"There is no sort to undo (no sort journal left in {journals_dir()}).")


def _undo_one(operation: OperationState, journal: Journal, result: UndoResult) -> None:
    intent = operation.last_intent
    original, placed, content = intent.source, intent.destination, intent.content
    if intent.action == "copy":
        if not os.path.lexists(placed):
            pass  # the copy was already deleted: nothing to undo
        elif fileops.has_content(placed, content):
            os.unlink(placed)
            fileops.fsync_dir(placed.parent)
            result.removed_copies += 1
        else:
            result.problems.append(f"{placed} was changed after the sort, so this copy was kept")
            return
        journal.append({"type": "undo-done", "id": operation.index})
        return

    for temp in operation.undo_temps:
        fileops.remove_if_exists(temp)
    if not os.path.lexists(placed):
        if fileops.has_content(original, content):
            result.restored += 1  # an earlier, interrupted undo already put it back
            journal.append({"type": "undo-done", "id": operation.index})
        else:
            result.problems.append(f"{placed} is no longer there, so it could not be put back at {original}")
        return
    if os.path.lexists(original):
        if _same_file(original, placed) or (
            fileops.has_content(original, content) and fileops.has_content(placed, content)
        ):
            # The original place already holds these exact bytes: drop the second name.
            os.unlink(placed)
            result.restored += 1
            journal.append({"type": "undo-done", "id": operation.index})
        else:
            result.problems.append(f"{original} is taken by another file, so {placed} was left where it is")
        return
    if not fileops.has_content(placed, content):
        result.problems.append(f"{placed} was changed after the sort, so it was left where it is")
        return
    temp = fileops.temp_name_for(original, f"undo{operation.index}")
    try:
        original.parent.mkdir(parents=True, exist_ok=True)
        journal.append({"type": "undo-intent", "id": operation.index, "temp": str(temp)})
        fileops.move_file(placed, original, temp, content)
    except FileExistsError:
        result.problems.append(f"{original} was taken meanwhile, so {placed} was left where it is")
        return
    except OSError as error:
        result.problems.append(f"{placed} could not be put back at {original}: {error.strerror or error}")
        return
    result.restored += 1
    journal.append({"type": "undo-done", "id": operation.index})


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _remove_created_folders(state: JournalState) -> None:
    """Remove the folders the sort created, deepest first, where they are empty again."""
    for folder in sorted(set(state.created_dirs), key=lambda path: len(path.parts), reverse=True):
        # A folder that is not empty (other files arrived) or already gone is left alone.
        with contextlib.suppress(OSError):
            folder.rmdir()
