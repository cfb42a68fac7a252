"""Reviewing photos: `ReviewController` turns the grid's selection and keys into the person's labels.

It owns what "the selected photos" and "the current photo" mean (grid selection through the
filter proxy), records labels in the photo model (set, confirm, take back), moves through the
grid, keeps the details pane on the current photo, and lists the corrections for export. The
status bar's counts follow the photo model's own signals, so no change here needs to tell them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QObject, QSortFilterProxyModel, Signal

from catbreed_desktop.core.corrections import Correction
from catbreed_desktop.gui.details import DetailsPane
from catbreed_desktop.gui.grid import PhotoGrid
from catbreed_desktop.gui.photo_model import PhotoListModel, PhotoRecord


class ReviewController(QObject):
    """Selection, labels and moving through the grid; see the module's docstring."""

    labels_changed = Signal(
        object
    )  # list[int]: photo rows whose label the person set, confirmed or took back

    def __init__(
        self,
        photos: PhotoListModel,
        proxy: QSortFilterProxyModel,
        grid: PhotoGrid,
        details: DetailsPane,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.photos = photos
        self.proxy = proxy
        self.grid = grid
        self.details = details

    def current_record(self) -> PhotoRecord | None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return None
        return self.photos.record(self.proxy.mapToSource(index).row())

    def selected_rows(self) -> list[int]:
        """Rows of the photo model selected in the grid, or the current one when none is selected."""
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
        changed = [
            row
            for row in (rows if rows is not None else self.selected_rows())
            if self.photos.record(row).classified
        ]
        for row in changed:
            self.photos.set_label(row, label)
        self.labels_changed.emit(changed)
        self.show_current()

    def choose_top_label(self, rank: int) -> None:
        """Number keys: give the current photo the model's breed of that rank."""
        record = self.current_record()
        if record is None or record.prediction is None or rank >= len(record.prediction.top):
            return
        self.set_label(record.prediction.top[rank][0])

    def confirm_selection(self) -> None:
        """Enter: the shown breed is right; move on to the next photo."""
        changed = [row for row in self.selected_rows() if self.photos.record(row).classified]
        for row in changed:
            self.photos.set_label(row, self.photos.record(row).label)
        self.labels_changed.emit(changed)
        self.move_current(1)

    def clear_correction(self) -> None:
        rows = self.selected_rows()
        for row in rows:
            self.photos.set_label(row, None, reviewed=False)
        self.labels_changed.emit(rows)
        self.show_current()

    def label_typed(self, label: str) -> None:
        """The details pane's breed box: set the breed, go back to the grid and on to the next photo."""
        self.set_label(label)
        self.grid.setFocus()
        self.move_current(1)

    def move_current(self, step: int) -> None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return
        following = self.proxy.index(index.row() + step, 0)
        if following.isValid():
            self.grid.setCurrentIndex(following)
        self.show_current()

    def focus_breed_box(self) -> None:
        self.details.breed_box.setFocus()
        line = self.details.breed_box.lineEdit()
        if line is not None:
            line.selectAll()

    def show_current(self, *args: Any) -> None:
        self.details.show_record(self.current_record(), self.photos.threshold)

    def select_paths(self, paths: Sequence[Path]) -> None:
        """Select these photos in the grid (those the filter shows), the first one current."""
        indexes = [
            self.proxy.mapFromSource(self.photos.index(row))
            for p in paths
            if (row := self.photos.row_of(p)) is not None
        ]
        indexes = [index for index in indexes if index.isValid()]
        if not indexes:
            return
        selection = self.grid.selectionModel()
        self.grid.setCurrentIndex(indexes[0])
        selection.select(indexes[0], QItemSelectionModel.SelectionFlag.ClearAndSelect)
        for index in indexes[1:]:
            selection.select(index, QItemSelectionModel.SelectionFlag.Select)
        self.show_current()

    def corrections(self) -> list[Correction]:
        """Every photo the person corrected or confirmed, with its label."""
        return [
            Correction(r.path, r.label)
            for r in self.photos.records
            if (r.reviewed or r.corrected_label is not None) and r.label is not None
        ]
