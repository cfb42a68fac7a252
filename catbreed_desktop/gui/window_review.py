"""Reviewing photos in the main window: `ReviewMixin`.

It owns the selection and current photo, the person's labels (set, confirm, clear), moving
through the grid, and exporting the reviewed labels (corrections) as CSV or breed folders.
A mixin of `MainWindow`: it relies on attributes `MainWindow.__init__` creates (`photos`,
`proxy`, `grid`, `details`) and on its `_report` and the sorting mixin's `_run_task`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel
from PySide6.QtWidgets import QFileDialog, QMessageBox

from catbreed_desktop.gui import APP_TITLE
from catbreed_desktop.gui.photo_model import PhotoRecord


class ReviewMixin:
    """Selection, labels and corrections export of `MainWindow`."""

    def current_record(self) -> PhotoRecord | None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return None
        return self.photos.record(self.proxy.mapToSource(index).row())

    def _selected_rows(self) -> list[int]:
        indexes = self.grid.selectionModel().selectedIndexes()
        if not indexes and self.grid.currentIndex().isValid():
            indexes = [self.grid.currentIndex()]
        return sorted({self.proxy.mapToSource(index).row() for index in indexes})

    def select_path(self, path: Path) -> None:
        row = self.photos.row_of(path)
        if row is None:
            return
        index = self.proxy.mapFromSource(self.photos.index(row))
        self.grid.setCurrentIndex(index)
        self.grid.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)

    def set_label(self, label: str, rows: Sequence[int] | None = None) -> None:
        """Record the person's breed for the selected photos (or `rows`); sorting will use it."""
        for row in rows if rows is not None else self._selected_rows():
            if self.photos.record(row).classified:
                self.photos.set_label(row, label)
        self._show_current()

    def choose_top_label(self, rank: int) -> None:
        """Number keys: give the current photo the model's breed of that rank."""
        record = self.current_record()
        if record is None or record.prediction is None or rank >= len(record.prediction.top):
            return
        self.set_label(record.prediction.top[rank][0])

    def confirm_selection(self) -> None:
        """Enter: the shown breed is right; move on to the next photo."""
        rows = self._selected_rows()
        for row in rows:
            record = self.photos.record(row)
            if record.classified:
                self.photos.set_label(row, record.label)
        self._move_current(1)

    def clear_correction(self) -> None:
        for row in self._selected_rows():
            self.photos.set_label(row, None, reviewed=False)
        self._show_current()

    def _label_typed(self, label: str) -> None:
        self.set_label(label)
        self.grid.setFocus()
        self._move_current(1)

    def _move_current(self, step: int) -> None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return
        following = self.proxy.index(index.row() + step, 0)
        if following.isValid():
            self.grid.setCurrentIndex(following)
        self._show_current()

    def _focus_breed_box(self) -> None:
        self.details.breed_box.setFocus()
        self.details.breed_box.lineEdit().selectAll()

    def _show_current(self, *args: Any) -> None:
        self.details.show_record(self.current_record(), self.photos.threshold)

    def corrections(self) -> list[Any]:
        """Every photo the person corrected or confirmed, with its label."""
        from catbreed_desktop.core.corrections import Correction

        return [
            Correction(r.path, r.label)
            for r in self.photos.records
            if (r.reviewed or r.corrected_label is not None) and r.label is not None
        ]

    def choose_csv_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export corrections as CSV", "corrections.csv", "CSV (*.csv)"
        )
        if path:
            self.export_corrections_csv(Path(path))

    def export_corrections_csv(self, path: Path) -> None:
        from catbreed_desktop.core.corrections import export_corrections_csv

        try:
            count = export_corrections_csv(self.corrections(), path)
        except OSError as error:
            QMessageBox.warning(self, APP_TITLE, f"Could not write {path}: {error}")
            return
        self.statusBar().showMessage(
            f"Wrote {count} reviewed labels to {path} (use: python -m trainer prepare --data {path})", 8000
        )

    def choose_folder_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export corrections into folder")
        if folder:
            self.export_corrections_folders(Path(folder))

    def export_corrections_folders(self, folder: Path) -> None:
        from catbreed_desktop.core.corrections import export_corrections_folders

        corrections = self.corrections()
        self._run_task(
            "export",
            f"Copying {len(corrections)} reviewed photos…",
            lambda progress, stop: export_corrections_folders(corrections, folder, progress),
            self._export_done,
        )

    def _export_done(self, result: Any) -> None:
        self._report([(path, reason) for path, reason in result.failed])
        self.statusBar().showMessage(
            f"Exported {len(result.copied)} photos; {len(result.skipped_duplicates)} were already there", 8000
        )
