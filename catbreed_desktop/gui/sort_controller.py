"""Sorting, undo, corrections export and auto-sort: `SortController`, the window's file operations.

Every file operation is a task of the runner's one "files" lane, so two never overlap. A sort
previews exactly what `preview_sort` plans: the core's plan of the photos on show, less those
already filed in the target's breed folders (the rule `catbreed sort` follows, so a folder can be
sorted into itself or into a folder around it); photos the plan cannot take (`plan.skipped`) are
listed in the preview and in the Problems list. The preview also names the photos whose breed the
person's corrections gave rather than the model alone (`personal_answers`), with the correction
that moved each, as `catbreed sort` prints them; a label the person set or confirmed is theirs,
not the layer's.

Auto-sort gathers the photos of a burst from the watched folders and sorts them in one go, when
no new photo has arrived for `burst_quiet_ms` (or `burst_longest_ms` after the first one), so one
*Undo* puts a whole burst back. Undo works out what it will do first and asks (`confirm_undo`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from catbreed_desktop.core.corrections import Correction, export_corrections_folders
from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.core.settings import Settings
from catbreed_desktop.core.sorting import (
    NothingToUndo,
    SortItem,
    SortPlan,
    SortResult,
    UndoPreview,
    UndoResult,
    execute_plan,
    moves_to_undo,
    plan_sort,
    plan_undo,
    undo_last_sort,
)
from catbreed_desktop.core.sorting.journal import read_journals_newest_first
from catbreed_desktop.core.sorting.plan import MOVE, SortMode
from catbreed_desktop.core.sorting.sources import leave_out_sorted
from catbreed_desktop.gui.photo_model import ADAPTED_MARK, PhotoListModel, PhotoRecord
from catbreed_desktop.gui.tasks import Task, TaskContext, TaskRunner

FILES_LANE = "files"
JOURNAL_LANE = "journal"
# A burst of photos from the watched folders: they arrive less than this apart...
BURST_QUIET_MS = 10_000
# ...and one sort takes them at the latest this long after the first, however long the burst goes on.
BURST_LONGEST_MS = 60_000

Problems = list[tuple[Path | None, str]]
BUSY_TEXT = "Wait for the sort, undo or export that is running to finish first"


@dataclass
class SortPreview:
    """A sort as the preview shows it: the plan, the photos left out because they are filed already,
    and the planned photos whose breed came from the person's corrections (photo: the correction)."""

    plan: SortPlan
    left_out: list[Path] = field(default_factory=list)
    personal: dict[Path, str] = field(default_factory=dict)

    def summary(self) -> str:
        """What the sort will do, in a sentence or three."""
        plan = self.plan
        counts = plan.summary()
        action = "moved" if plan.mode == MOVE else "copied"
        parts = []
        if counts[plan.mode]:
            # The folders are counted one by one beside the preview: with dozens of breeds a
            # sentence listing them all was too long to read.
            parts.append(
                f"{plural(counts[plan.mode], 'photo')} will be {action} into {printable(plan.target)}, "
                f"in {plural(len(plan.folders()), 'folder')}."
            )
        else:
            parts.append("Nothing to sort: every photo is already in its folder.")
        if counts["duplicate"]:
            parts.append(f"{plural(counts['duplicate'], 'photo')} already there stay where they are.")
        if self.left_out:
            parts.append(
                f"{plural(len(self.left_out), 'photo')} already filed in the breed folders of "
                f"{printable(plan.target)} {'is' if len(self.left_out) == 1 else 'are'} left out."
            )
        if self.personal:
            parts.append(
                f"{plural(len(self.personal), 'photo')} {'is' if len(self.personal) == 1 else 'are'} filed "
                f"by the breed your corrections gave, not the model's (marked {ADAPTED_MARK.strip()})."
            )
        if plan.skipped:
            parts.append(
                f"{plural(len(plan.skipped), 'photo')} cannot be sorted (listed below, with the reason)."
            )
        parts += [f"Note: {note}." for note in plan.shared_folder_notes()]
        return " ".join(parts)

    @property
    def has_work(self) -> bool:
        """Whether executing the plan would move or copy anything (duplicates alone change nothing)."""
        return any(operation.action != "duplicate" for operation in self.plan.operations)


def sort_items(records: Iterable[PhotoRecord]) -> list[SortItem]:
    """What sorting gets: each classified photo, with the person's label where there is one."""
    return [SortItem(r.path, r.label, r.confidence, r.is_cat) for r in records if r.label is not None]


def personal_answers(records: Iterable[PhotoRecord]) -> dict[Path, str]:
    """{photo: the correction that moved it} for each photo whose breed the personal layer gave.

    A photo the person labelled or confirmed is left out: its breed is theirs, whatever the layer said.
    """
    return {
        _absolute(r.path): r.prediction.moved_by
        for r in records
        if r.prediction is not None
        and r.prediction.moved_by is not None
        and not r.reviewed
        and r.corrected_label is None
    }


def preview_sort(
    items: Sequence[SortItem],
    sources: Sequence[Path],
    target: Path,
    mode: SortMode,
    threshold: float,
    labels: Sequence[str],
    personal: Mapping[Path, str] | None = None,
) -> SortPreview:
    """Plan the sort of `items` into `target`, leaving out photos already filed there (see the module).

    `personal` (from `personal_answers`) names the photos whose breed came from a correction; the
    preview keeps those the plan takes.
    """
    every_label = {*labels, *(item.label for item in items)}
    to_sort, filed = leave_out_sorted([item.source for item in items], sources, target, every_label)
    keep = set(to_sort)
    plan = plan_sort([item for item in items if item.source in keep], target, mode, threshold)
    moved = personal or {}
    planned = {op.source: moved[op.source] for op in plan.operations if op.source in moved}
    return SortPreview(plan, filed, planned)


def _absolute(path: Path) -> Path:
    """A photo's path as the plan names its source (absolute, not resolved)."""
    return Path(os.path.abspath(path))


def undo_with_moves(
    expect: Callable[[Iterable[Path]], None], progress: Callable[[int, int], None]
) -> tuple[UndoResult, list[tuple[Path, Path]]]:
    """Undo the last sort; also say which photos went back where, for the grid to follow.

    The photos about to come back are announced first (`expect`), so that their return into a
    watched folder is not taken for new photos.
    """
    moved = moves_to_undo()
    expect(source for _, source in moved)
    result = undo_last_sort(progress)
    back = [
        (destination, source) for destination, source in moved if source.exists() and not destination.exists()
    ]
    return result, back


def has_sort_to_undo() -> bool:
    """Whether a journaled sort is left to undo; reads journals only, touches no photo."""
    return any(not state.is_undone for state in read_journals_newest_first())


class SortController(QObject):
    """Sorts, undoes, exports and auto-sorts in the runner's files lane; see the module's docstring."""

    message = Signal(str)
    problems = Signal(object)  # Problems
    undo_available = Signal(bool)
    photos_moved = Signal()  # photos on show now have other paths

    def __init__(
        self,
        photos: PhotoListModel,
        runner: TaskRunner,
        settings: Settings,
        confirm_undo: Callable[[UndoPreview], bool],
        expect_returning: Callable[[Iterable[Path]], None] = lambda paths: None,
        ignore_target: Callable[[Path], None] = lambda target: None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.photos = photos
        self.runner = runner
        self.settings = settings
        self._confirm_undo = confirm_undo
        self._expect_returning = expect_returning
        self._ignore_target = ignore_target
        self.can_undo = False
        self._journals_changed = False
        self._arrived: list[Path] = []  # from watched folders, waiting for auto-sort
        self.burst_quiet_ms = BURST_QUIET_MS
        self.burst_longest_ms = BURST_LONGEST_MS
        self._quiet_timer = QTimer(self, singleShot=True)
        self._quiet_timer.timeout.connect(self._auto_sort_burst)
        self._longest_timer = QTimer(self, singleShot=True)
        self._longest_timer.timeout.connect(self._auto_sort_burst)
        self._closed = False

    def is_busy(self) -> bool:
        return self.runner.is_busy(FILES_LANE) or self.runner.is_busy(JOURNAL_LANE)

    # --- sort ----------------------------------------------------------------------------------

    def start_sort(self, plan: SortPlan, left_out: int = 0, auto: bool = False) -> bool:
        """Execute a previewed plan in the background; the grid follows the moved files."""
        if self._closed:
            return False
        if self.runner.is_busy(FILES_LANE):
            self.message.emit(BUSY_TEXT)
            return False
        self._ignore_target(plan.target)
        count = len(plan.operations)
        self.message.emit(f"Sorting {plural(count, 'new photo' if auto else 'photo')}…")
        task = Task(
            "sort",
            lambda context: execute_plan(plan, context.progress, context.should_stop),
            on_done=lambda result: self._sorted(plan, result, left_out, auto),
            on_failed=lambda reason: self._refresh_undo_state(),
            lane=FILES_LANE,
        )
        return self.runner.start(task)

    def _sorted(self, plan: SortPlan, result: SortResult, left_out: int, auto: bool) -> None:
        moves = [(op.source, op.destination) for op in result.done if op.action == MOVE]
        self.photos.move_paths(moves)
        self.problems.emit(
            [(op.source, reason) for op, reason in result.failed]
            + [(path, f"not sorted: {reason}") for path, reason in plan.skipped]
        )
        verb = "Moved" if plan.mode == MOVE else "Copied"
        parts = [f"{verb} {plural(len(result.done), 'photo')} into {printable(plan.target)}"]
        if result.stopped:
            parts[0] += " (stopped)"
        if result.duplicates:
            parts.append(f"{len(result.duplicates)} already there")
        if result.failed or plan.skipped:
            parts.append(f"{len(result.failed) + len(plan.skipped)} could not be sorted")
        if left_out:
            parts.append(f"{left_out} already filed left out")
        prefix = "Auto-sort: " if auto else ""
        self.message.emit(f"{prefix}{'; '.join(parts)}. Edit ▸ Undo last sort puts them back.")
        if moves:
            self.photos_moved.emit()
        self._refresh_undo_state()
        self._auto_sort_burst()  # photos that arrived during the sort

    # --- undo ----------------------------------------------------------------------------------

    def undo_last_sort(self) -> None:
        """Work out what undo would do (in the background), ask, then undo."""

        def check(context: TaskContext) -> UndoPreview | str:
            try:
                return plan_undo()
            except NothingToUndo as nothing:
                return str(nothing)

        if self.runner.is_busy(FILES_LANE):
            self.message.emit(BUSY_TEXT)
            return
        self.message.emit("Checking the last sort…")
        self.runner.start(Task("undo", check, on_done=self._undo_checked, lane=FILES_LANE))

    def _undo_checked(self, preview: UndoPreview | str) -> None:
        if isinstance(preview, str):  # nothing to undo: said, not a problem
            self.message.emit(preview)
            self._set_can_undo(False)
            return
        if not self._confirm_undo(preview):
            self.message.emit("Undo cancelled; nothing was changed")
            return
        expect = self._expect_returning
        self.message.emit("Undoing the last sort…")
        self.runner.start(
            Task(
                "undo",
                lambda context: undo_with_moves(expect, context.progress),
                on_done=self._undone,
                on_failed=lambda reason: self._refresh_undo_state(),
                lane=FILES_LANE,
            )
        )

    def _undone(self, outcome: tuple[UndoResult, list[tuple[Path, Path]]]) -> None:
        result, moves = outcome
        self.photos.move_paths(moves)
        self.problems.emit([(None, problem) for problem in result.problems])
        kept = (
            f", {plural(len(result.kept_copies), 'copy', 'copies')} kept because their originals are gone"
            if result.kept_copies
            else ""
        )
        self.message.emit(
            f"Undone: {plural(result.restored, 'photo')} put back, "
            f"{plural(result.removed_copies, 'copy', 'copies')} removed{kept}"
        )
        if moves:
            self.photos_moved.emit()
        self._refresh_undo_state()

    def refresh_undo_state(self) -> None:
        """Find out (in the background) whether there is a sort to undo; `undo_available` says."""
        self._refresh_undo_state()

    def _refresh_undo_state(self) -> None:
        if self._closed:
            return
        task = Task("journal check", lambda context: has_sort_to_undo(), on_done=self._checked_journals)
        task.lane = JOURNAL_LANE
        # A check already running may have read the journals before this change: check again after it.
        self._journals_changed = not self.runner.start(task)

    def _checked_journals(self, available: bool) -> None:
        self._set_can_undo(available)
        if self._journals_changed:
            self._refresh_undo_state()

    def _set_can_undo(self, available: bool) -> None:
        self.can_undo = bool(available)
        self.undo_available.emit(self.can_undo)

    # --- corrections export --------------------------------------------------------------------

    def export_corrections(self, corrections: Sequence[Correction], folder: Path) -> bool:
        """Copy the reviewed photos into one folder per breed, in the background."""
        if self.runner.is_busy(FILES_LANE):
            self.message.emit(BUSY_TEXT)
            return False
        self.message.emit(f"Copying {plural(len(corrections), 'reviewed photo')}…")
        task = Task(
            "export",
            lambda context: export_corrections_folders(corrections, folder, context.progress),
            on_done=self._exported,
            lane=FILES_LANE,
        )
        return self.runner.start(task)

    def _exported(self, result: Any) -> None:
        self.problems.emit([(path, reason) for path, reason in result.failed])
        self.message.emit(
            f"Exported {plural(len(result.copied), 'photo')}; {len(result.skipped_duplicates)} were already there"
        )

    # --- auto-sort of watched folders ----------------------------------------------------------

    def photos_arrived(self, paths: Sequence[Path]) -> None:
        """Photos from the watched folders: sorted with the rest of their burst once classified."""
        if not paths:
            return
        if not self._arrived:
            self._longest_timer.start(self.burst_longest_ms)
        self._arrived.extend(path for path in paths if path not in self._arrived)
        self._quiet_timer.start(self.burst_quiet_ms)

    def _auto_sort_burst(self) -> None:
        """Sort the burst's classified photos in one sort, once the burst is over (see the module)."""
        if not self._arrived or self._closed:
            return
        if not (self.settings.auto_sort and self.settings.sort_target):
            self._arrived.clear()  # auto-sort is off: they stay where they are
            self._quiet_timer.stop()
            self._longest_timer.stop()
            return
        if self._quiet_timer.isActive() and self._longest_timer.isActive():
            return  # the burst goes on
        records = [
            self.photos.record(row) for row in map(self.photos.row_of, self._arrived) if row is not None
        ]
        waiting = [r for r in records if r.queued]
        if (waiting and self._longest_timer.isActive()) or self.runner.is_busy(FILES_LANE):
            self._quiet_timer.start(min(self.burst_quiet_ms, 1000))  # look again soon
            return
        ready = [r for r in records if r.label is not None]
        # What still waits for classification after the longest wait starts the next burst.
        self._arrived = [r.path for r in waiting]
        self._quiet_timer.stop()
        self._longest_timer.stop()
        if self._arrived:
            self._longest_timer.start(self.burst_longest_ms)
            self._quiet_timer.start(self.burst_quiet_ms)
        if not ready:
            return
        target = Path(self.settings.sort_target)
        folders = [Path(folder) for folder in self.settings.watched_folders]
        try:
            preview = preview_sort(
                sort_items(ready), folders, target, self.settings.auto_sort_mode, self.photos.threshold, ()
            )
        except (OSError, ValueError) as error:
            self.problems.emit([(None, f"auto-sort into {printable(target)}: {error}")])
            return
        if preview.has_work:
            self.start_sort(preview.plan, len(preview.left_out), auto=True)
        elif preview.plan.skipped:  # nothing to do but say why: an empty sort would take an undo slot
            self.problems.emit([(path, f"not sorted: {reason}") for path, reason in preview.plan.skipped])

    def shutdown(self) -> None:
        self._closed = True
        self._quiet_timer.stop()
        self._longest_timer.stop()
        self.runner.stop(FILES_LANE)
