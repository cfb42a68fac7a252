"""Executing a sort plan, journaled operation by operation, and resuming one that was cut off.

Every destination name is checked again at the moment of the operation; the journal gets the
exact destination and content before the file is touched, and "done" after, so reconcile() can
settle an operation interrupted at any point by looking at the file system.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from catbreed_desktop.core.files import fsync_dir
from catbreed_desktop.core.printable import printable
from catbreed_desktop.core.sorting import fileops
from catbreed_desktop.core.sorting.folder_names import collision_names, is_inside
from catbreed_desktop.core.sorting.folders import FolderContents
from catbreed_desktop.core.sorting.journal import (
    Intent,
    Journal,
    JournalError,
    JournalState,
    OperationState,
    exclusive_lock,
    read_journal,
    read_journals_newest_first,
    within_by_name,
)
from catbreed_desktop.core.sorting.plan import DUPLICATE, MODES, MOVE, PlannedOperation, SortPlan, check_mode

ProgressCallback = Callable[[int, int], None]
MAX_NAME_ATTEMPTS = 10_000
# Why a photo is not sorted when it left its place before the sort reached it (another sort on the
# same inbox, a file manager): it is not left where it was, since it is not there.
MOVED_AWAY = "was moved or deleted by another program before this sort reached it"


@dataclass
class SortResult:
    """What a sort did: operations done (with their real destinations), duplicates left, failures."""

    journal: Path
    done: list[PlannedOperation]
    duplicates: list[PlannedOperation]
    failed: list[tuple[PlannedOperation, str]]
    stopped: bool


def execute_plan(
    plan: SortPlan,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SortResult:
    """Carry out a plan, never overwriting anything; `should_stop` is asked between operations.

    A file that cannot be handled (unreadable, vanished, a failed copy check) is recorded as failed
    and left where it is; the other files go on.
    """
    check_mode(plan.mode, plan.min_confidence)
    with exclusive_lock(), _made_and_locked(plan.target) as made, Journal.create(plan) as journal:
        for folder in made:  # journaled, so that undo removes them again once empty
            journal.append({"type": "mkdir", "path": str(folder)})
        return _run(read_journal(journal.path), journal, on_progress, should_stop)


def resume_interrupted_sort(
    on_progress: ProgressCallback | None = None, should_stop: Callable[[], bool] | None = None
) -> SortResult | None:
    """Finish the last sort if it was killed or stopped before the end; None when there is none."""
    with exclusive_lock():
        state = latest_active_journal()
        if state is None or not state.pending:
            return None
        with target_lock(state.plan.target), Journal(state.path) as journal:
            for operation in state.pending:
                reconcile(operation, journal, state.plan.target)
                if is_unaccounted(operation):
                    _record_unaccounted(operation, journal, state.plan.target)
            return _run(read_journal(state.path), journal, on_progress, should_stop)


def is_unaccounted(operation: OperationState) -> bool:
    """A move not begun by the journal's account whose photo has left its place all the same.

    Either another program took it, or the sort moved it and its journal lost the record (a
    disk fault, a truncated file) with the photo somewhere other than its planned destination.
    """
    return (
        operation.outcome is None
        and operation.last_intent is None
        and operation.planned.action == MOVE
        and not os.path.lexists(operation.planned.source)
    )


def unaccounted_reason(target: Path) -> str:
    """Why undo cannot put back a photo that `is_unaccounted` (or was recorded so)."""
    return (
        "is not where it was before the sort, and the sort's journal does not say where it went "
        f"(look for it in {printable(target)})"
    )


def _record_unaccounted(operation: OperationState, journal: Journal, target: Path) -> None:
    reason = unaccounted_reason(target)
    journal.append({"type": "failed", "id": operation.index, "reason": reason, "unaccounted": True})


@contextlib.contextmanager
def target_lock(target: Path) -> Iterator[None]:
    """Keep two sorts or undos from working in one target at once, whatever their data folders.

    `exclusive_lock` keeps apart the sorts that share a data folder; this one, a lock on the target
    folder itself, those that do not (two users, or `CATBREED_DATA_DIR` set for one). Nothing is
    written into the folder and a killed process leaves no lock behind. Where the folder is missing
    or cannot be locked (no fcntl, a file system without locks) none is taken: every operation
    still never overwrites.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        descriptor = os.open(
            target, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
        )
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(
                f"another sort or undo is working in {printable(target)}; wait for it to finish"
            ) from None
        except OSError:
            pass  # a file system that cannot lock: go on as without fcntl
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _made_and_locked(target: Path) -> Iterator[list[Path]]:
    """The target made where missing and locked (`target_lock`) before its sort's journal begins.

    Yields the folders made, parents first. Should the sort end with an error (the target busy,
    the journal not writable), those still empty are removed again.
    """
    made = []
    for folder in (target, *target.parents):
        if os.path.isdir(folder):
            break
        made.append(folder)
    made.reverse()
    try:
        for folder in made:
            folder.mkdir(exist_ok=True)
    except OSError:
        pass  # each operation then fails with the reason
    try:
        with target_lock(target):
            yield made
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def latest_active_journal() -> JournalState | None:
    """The most recent sort that no undo has touched, or None."""
    state = next(read_journals_newest_first(), None)
    return None if state is None or state.undo_started else state


def _run(
    state: JournalState,
    journal: Journal,
    on_progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
) -> SortResult:
    runner = _Runner(state, journal)
    total = len(state.operations)
    finished = total - len(state.pending)
    stopped = False
    if on_progress:
        on_progress(finished, total)
    for operation in state.pending:
        if should_stop is not None and should_stop():
            stopped = True
            break
        runner.perform(operation)
        finished += 1
        if on_progress:
            on_progress(finished, total)
    journal.append({"type": "end", "stopped": stopped})
    return result_of(read_journal(journal.path), stopped)


def result_of(state: JournalState, stopped: bool) -> SortResult:
    """Summarise a journal's operations into a SortResult."""
    result = SortResult(state.path, [], [], [], stopped)
    for operation in state.operations:
        planned = operation.planned
        if operation.outcome == "done":
            intent = operation.done_intent
            result.done.append(
                PlannedOperation(planned.source, intent.destination, intent.action, planned.folder)
            )
        elif operation.outcome == "duplicate":
            result.duplicates.append(planned)
        elif operation.outcome == "failed":
            result.failed.append((planned, operation.reason))
    return result


class _Runner:
    """Performs operations of one journal, remembering folders it created and what they hold."""

    def __init__(self, state: JournalState, journal: Journal) -> None:
        self.target = state.plan.target
        self.mode = state.plan.mode
        self.journal = journal
        self._contents: dict[Path, FolderContents] = {}

    def perform(self, operation: OperationState) -> None:
        try:
            self._perform(operation)
        except OSError as error:
            self._fail(operation, f"{error.strerror or error}")

    def _fail(self, operation: OperationState, reason: str) -> None:
        self.journal.append({"type": "failed", "id": operation.index, "reason": reason})

    def _duplicate(self, operation: OperationState, existing: Path) -> None:
        self.journal.append({"type": "duplicate", "id": operation.index, "existing": str(existing)})

    def _perform(self, operation: OperationState) -> None:
        planned = operation.planned
        source = planned.source
        if source.is_symlink():
            return self._fail(operation, "is a symbolic link; left where it is")
        if not os.path.lexists(source):
            return self._fail(operation, MOVED_AWAY)
        if not source.is_file():
            return self._fail(operation, "is not a regular file; left where it is")
        content = fileops.fingerprint(source)
        folder = planned.destination.parent
        leaves_target = f"its destination {planned.destination} leaves {self.target}"
        if not is_inside(planned.destination, self.target):
            return self._fail(operation, leaves_target)
        self._ensure_folder(folder)
        if not is_inside(planned.destination, self.target):  # a link may have appeared meanwhile
            return self._fail(operation, leaves_target)
        contents = self._contents.get(folder) or self._contents.setdefault(folder, FolderContents(folder))
        identical = contents.find_identical(content, ignore=source)
        if identical is not None:
            return self._duplicate(operation, identical)
        for candidate in self._candidates(planned):
            if os.path.lexists(candidate):
                if fileops.has_content(candidate, content):
                    return self._duplicate(operation, candidate)
                continue
            intent = Intent(
                self.mode, source, candidate, fileops.temp_name_for(candidate, str(operation.index)), content
            )
            self.journal.append(intent.to_record(operation.index))
            try:
                if self.mode == MOVE:
                    fileops.move_file(source, candidate, intent.temp, content)
                else:
                    fileops.verified_copy(source, candidate, intent.temp, content)
            except FileExistsError:
                # Another program took the name between our check and the rename: try the next one.
                self.journal.append(
                    {"type": "abandoned", "id": operation.index, "destination": str(candidate)}
                )
                continue
            except OSError as error:
                if self.mode == MOVE:
                    return self._take_back_copy(operation, intent, error)
                raise
            self.journal.append({"type": "done", "id": operation.index, "destination": str(candidate)})
            contents.add(candidate, content=content)
            return None
        return self._fail(operation, f"no free name found in {folder}")

    def _take_back_copy(self, operation: OperationState, intent: Intent, error: OSError) -> None:
        """A move across disks that placed its copy but could not remove the original (a read-only
        folder, say): remove our verified copy again, so the photo is in one place, its original."""
        reason = error.strerror or str(error)
        placed = intent.destination
        if fileops.holds_its_own_copy(intent.source, placed, intent.content) and fileops.has_content(
            placed, intent.content
        ):
            os.unlink(placed)
            fsync_dir(placed.parent)
            reason = f"the original could not be removed ({reason}), so it was left where it is"
        self._fail(operation, reason)

    def _candidates(self, planned: PlannedOperation) -> Iterator[Path]:
        tried = set()
        if planned.action != DUPLICATE:
            tried.add(planned.destination)
            yield planned.destination
        for attempt, candidate in enumerate(
            collision_names(planned.destination.parent / planned.source.name)
        ):
            if attempt >= MAX_NAME_ATTEMPTS:
                return
            if candidate not in tried:
                yield candidate

    def _ensure_folder(self, folder: Path) -> None:
        """Create the folder and any missing parents, journaling each so undo can remove them if empty."""
        missing = []
        for parent in (folder, *folder.parents):
            if parent.exists():
                break
            missing.append(parent)
        for path in reversed(missing):
            self.journal.append({"type": "mkdir", "path": str(path)})
            path.mkdir(exist_ok=True)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder", str(folder))


def reconcile(operation: OperationState, journal: Journal, target: Path) -> None:
    """Settle an operation that has no outcome, by looking at the file system.

    Cleans up a temporary copy, finishes a move whose file is already complete at the destination
    (removing a second name of it at the source), records "done" when the destination holds the
    bytes, and otherwise leaves the operation pending with its source untouched. An operation with
    no intent whose photo is gone from its place but lies at its planned destination (a journal
    that lost its last records) is recorded with the intent it must have had, then settled alike.
    """
    for earlier in operation.intents[:-1]:
        fileops.remove_if_exists(earlier.temp)
    intent = operation.last_intent
    if intent is None:
        intent = found_at_planned_destination(operation, target)
        if intent is None:
            return
        journal.append(intent.to_record(operation.index))
        operation.intents.append(intent)
    source, destination, content = intent.source, intent.destination, intent.content
    temp_was_there = os.path.lexists(intent.temp)
    source_there = os.path.lexists(source)
    if intent.action == MOVE and not source_there and not os.path.lexists(destination):
        if fileops.has_content(intent.temp, content):
            fileops.rename_no_replace(intent.temp, destination)  # copy verified, source already gone
        else:
            journal.append(
                {
                    "type": "failed",
                    "id": operation.index,
                    "reason": "missing from both places",
                    "unaccounted": True,
                }
            )
            return
    fileops.remove_if_exists(intent.temp)
    if _is_reserved_placeholder(destination, content, temp_was_there or source_there):
        fileops.remove_if_exists(destination)
    if not fileops.has_content(destination, content):
        return  # not done: the source is untouched, the operation runs again
    if intent.action == MOVE and source_there:
        if fileops.holds_its_own_copy(source, destination, content):
            # A second name (hard link) or a verified copy left by the interrupted move.
            os.unlink(source)
            fsync_dir(source.parent)
        elif not (os.path.islink(source) or fileops.same_entry(source, destination)):
            reason = "the original changed during the move; both were kept"
            journal.append({"type": "failed", "id": operation.index, "reason": reason})
            return
        # Otherwise the source path is a link, or leads to the destination itself through a linked
        # folder: the photo is in place, and removing that name could remove the photo.
    journal.append({"type": "done", "id": operation.index, "destination": str(destination)})


def _is_reserved_placeholder(destination: Path, content: fileops.Fingerprint, interrupted: bool) -> bool:
    """An empty file left by the reserve-the-name fallback when the process died before the rename."""
    try:
        return interrupted and content.size > 0 and destination.is_file() and destination.stat().st_size == 0
    except OSError:
        return False


def found_at_planned_destination(operation: OperationState, target: Path) -> Intent | None:
    """The intent of a move or copy with no record of one, whose photo left its place for its
    planned destination: a regular file there of the size the photo had when the sort began.

    Only where the journal recorded that size (the plan has no digest), the photo's place is empty
    (a photo still there is simply sorted again) and the destination lies inside the target.
    """
    planned = operation.planned
    size = operation.planned_size
    if planned.action not in MODES or size is None or os.path.lexists(planned.source):
        return None
    destination = planned.destination
    # By name too: the intent must read back as one inside the target, or the journal is damaged.
    inside = within_by_name(destination, target) and is_inside(destination, target)
    if not inside or not fileops.is_regular_file(destination):
        return None
    try:
        content = fileops.fingerprint(destination)
    except OSError:
        return None
    if content.size != size:
        return None
    temp = fileops.temp_name_for(destination, str(operation.index))
    return Intent(planned.action, planned.source, destination, temp, content)
