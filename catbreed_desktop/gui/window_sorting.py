"""Sorting in the main window: `SortingMixin` previews, runs and undoes sorts in the background.

It also runs every other background task of the window (`_run_task`: sort, undo, corrections
export) one at a time, and auto-sorts photos from watched folders. A mixin of `MainWindow`:
it relies on attributes `MainWindow.__init__` creates (`settings`, `photos`, `watcher`,
`progress`, `rate_label`, `_task_thread`, `_task_kind`, `_task_outcome`, `_classify_thread`, `_auto_sort_paths`,
`_closed`, the `task_finished` signal), on its `_set_busy`, `_report`, `_save_settings`, and on
`_show_current` (`ReviewMixin`) and `_ignore_target` (`WatchingMixin`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QMessageBox

from catbreed_desktop.core.printable import plural
from catbreed_desktop.core.watching import FolderWatcher
from catbreed_desktop.gui.workers import TaskThread


class SortingMixin:
    """Sorting, undo and the background task runner of `MainWindow`."""

    def sort_items(self) -> list[Any]:
        """What sorting gets: each classified photo with the reviewed label when there is one."""
        from catbreed_desktop.core.sorting import SortItem

        return [SortItem(r.path, r.label, r.confidence, r.is_cat) for r in self.photos.records if r.label]

    def make_sort_dialog(self) -> Any:
        from catbreed_desktop.gui.sort_dialog import SortDialog

        return SortDialog(
            self.sort_items(), self.settings.sort_target, self.settings.sort_mode, self.photos.threshold, self
        )

    def open_sort_dialog(self) -> None:
        if self._task_thread is not None:
            self.statusBar().showMessage("Wait for the running sort to finish first", 4000)
            return
        dialog = self.make_sort_dialog()
        if dialog.exec() and dialog.plan() is not None:
            self.settings.sort_target = dialog.target
            self.settings.sort_mode = dialog.mode
            self._save_settings()
            self.start_sort(dialog.plan())

    def start_sort(self, plan: Any) -> None:
        """Execute a previewed plan in the background; the grid follows the moved files."""
        from catbreed_desktop.core.sorting import execute_plan

        self._ignore_target(plan.target)
        self._run_task(
            "sort",
            f"Sorting {len(plan.operations)} photos…",
            lambda progress, stop: execute_plan(plan, progress, stop),
            self._sort_done,
        )

    def _sort_done(self, result: Any) -> None:
        moves = [(op.source, op.destination) for op in result.done if op.action == "move"]
        self.photos.move_paths(moves)
        self._report([(op.source, reason) for op, reason in result.failed])
        stopped = " (stopped)" if result.stopped else ""
        self.statusBar().showMessage(
            f"Sorted {plural(len(result.done), 'photo')}{stopped}; {len(result.duplicates)} already there; "
            f"{len(result.failed)} could not be sorted. Edit ▸ Undo last sort puts them back.",
            10000,
        )
        self._show_current()

    def undo_last_sort(self) -> None:
        """Edit ▸ Undo last sort: work out what undo would do (in the background), ask, then undo."""
        from catbreed_desktop.core.sorting import plan_undo

        self._run_task("undo-check", "Checking the last sort…", lambda p, s: plan_undo(), self._confirm_undo)

    def make_undo_question(self, preview: Any) -> QMessageBox:
        """The confirmation shown before an undo, saying what will happen to which files."""
        question = QMessageBox(
            QMessageBox.Icon.Question,
            "Undo last sort",
            preview.describe(),
            QMessageBox.StandardButton.Cancel,
            self,
        )
        question.addButton("Undo sort", QMessageBox.ButtonRole.AcceptRole)
        question.setDefaultButton(QMessageBox.StandardButton.Cancel)  # Enter must not undo by accident
        return question

    def ask_to_undo(self, preview: Any) -> bool:
        question = self.make_undo_question(preview)
        question.exec()
        return question.buttonRole(question.clickedButton()) == QMessageBox.ButtonRole.AcceptRole

    def _confirm_undo(self, preview: Any) -> None:
        if not self.ask_to_undo(preview):
            self.statusBar().showMessage("Undo cancelled; nothing was changed", 4000)
            return
        watcher = self.watcher
        self._run_task(
            "undo", "Undoing the last sort…", lambda p, s: _undo_with_moves(watcher, p), self._undo_done
        )

    def _undo_done(self, outcome: tuple[Any, list[tuple[Path, Path]]]) -> None:
        result, moves = outcome
        self.photos.move_paths(moves)
        self._report([(None, problem) for problem in result.problems])
        kept = (
            f", {plural(len(result.kept_copies), 'copy', 'copies')} kept because their originals are gone"
            if result.kept_copies
            else ""
        )
        self.statusBar().showMessage(
            f"Undone: {plural(result.restored, 'photo')} put back, "
            f"{plural(result.removed_copies, 'copy', 'copies')} removed{kept}",
            10000,
        )
        self._show_current()

    def _run_task(self, kind: str, message: str, task: Callable, on_done: Callable[[Any], None]) -> bool:
        if self._task_thread is not None or self._closed:
            self.statusBar().showMessage("Another sort is still running; try again when it ends", 4000)
            return False
        thread = TaskThread(task, self)
        thread.progress.connect(self._on_task_progress)
        # on_done runs once the thread is over (in _task_done), so it may start the next task.
        thread.finished_with.connect(lambda result: setattr(self, "_task_outcome", (on_done, result)))
        thread.failed.connect(lambda text: self._task_failed(kind, text))
        thread.finished.connect(self._task_done)
        self._task_thread, self._task_kind = thread, kind
        self._set_busy(True, message)
        thread.start()
        return True

    def _on_task_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.rate_label.setText(f"{done} / {total}")

    def _task_failed(self, kind: str, message: str) -> None:
        self.statusBar().showMessage(message, 10000)
        self._report([(None, f"{kind}: {message}")])

    def _task_done(self) -> None:
        thread, kind = self._task_thread, self._task_kind
        if thread is not None:
            thread.wait()
        self._task_thread = None
        outcome, self._task_outcome = self._task_outcome, None
        if outcome is not None and not self._closed:
            on_done, result = outcome
            on_done(result)
        if self._task_thread is None:
            self._set_busy(self._classify_thread is not None, None)
        self.task_finished.emit(kind)
        self._run_auto_sort()

    def _run_auto_sort(self) -> None:
        """Sort photos that came from watched folders, once classified, when auto-sort is on."""
        if not (self.settings.auto_sort and self.settings.sort_target) or self._task_thread is not None:
            return
        rows = [self.photos.row_of(path) for path in self._auto_sort_paths]
        records = [self.photos.record(row) for row in rows if row is not None]
        records = [r for r in records if r.label is not None]
        if not records:
            return
        self._auto_sort_paths = []
        from catbreed_desktop.core.sorting import SortItem, execute_plan, plan_sort

        items = [SortItem(r.path, r.label, r.confidence, r.is_cat) for r in records]
        target, mode, threshold = (
            Path(self.settings.sort_target),
            self.settings.sort_mode,
            self.photos.threshold,
        )
        self._ignore_target(target)
        self._run_task(
            "sort",
            f"Sorting {len(items)} new photos…",
            lambda progress, stop: execute_plan(plan_sort(items, target, mode, threshold), progress, stop),
            self._sort_done,
        )


def _undo_with_moves(watcher: FolderWatcher, progress: Callable[[int, int], None]) -> tuple[Any, list]:
    """Undo the last sort; also say which moved photos went back where, for the grid to follow.

    The photos about to come back are announced to the watcher first, so their return into a
    watched folder is not taken for new photos.
    """
    from catbreed_desktop.core.sorting import moves_to_undo, undo_last_sort

    moved = moves_to_undo()
    watcher.expect(source for _, source in moved)
    result = undo_last_sort(progress)
    back = [
        (destination, source) for destination, source in moved if source.exists() and not destination.exists()
    ]
    return result, back
