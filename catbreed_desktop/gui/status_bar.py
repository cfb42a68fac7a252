"""The status bar's permanent widgets: progress, rate, Cancel, the photo counts and the engine.

The counts follow the photo model's own signals (rows added or removed, any record changed), so
every change is counted whoever makes it: a classification batch, a label set by a key, a
correction taken back. Changes in one pass of the event loop are counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar

from catbreed_desktop.core.printable import plural
from catbreed_desktop.gui.photo_model import PhotoCounts, PhotoListModel


class StatusWidgets(QObject):
    """The widgets at the right of the status bar, and the counts of `photos` kept up to date."""

    counts_changed = Signal(object)  # PhotoCounts, after the label shows them

    def __init__(self, bar: QStatusBar, photos: PhotoListModel) -> None:
        super().__init__(bar)
        self.photos = photos
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(240)
        self.progress.hide()
        self.rate_label = QLabel()
        self.rate_label.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.count_label = QLabel()
        self.engine_label = QLabel("Engine: loading model…")
        self.counts = PhotoCounts()
        for widget in (
            self.rate_label,
            self.progress,
            self.cancel_button,
            self.count_label,
            self.engine_label,
        ):
            bar.addPermanentWidget(widget)
        self._recount = QTimer(self, singleShot=True, interval=0)
        self._recount.timeout.connect(self.update_counts)
        photos.dataChanged.connect(self._data_changed)
        for signal in (photos.rowsInserted, photos.rowsRemoved, photos.modelReset):
            signal.connect(self._count_soon)
        self.update_counts()

    def _data_changed(self, first: Any, last: Any, roles: Sequence[int] = ()) -> None:
        if not roles or Qt.ItemDataRole.DisplayRole in roles:  # not a thumbnail that arrived
            self._recount.start()

    def _count_soon(self, *args: Any) -> None:
        self._recount.start()

    def update_counts(self) -> None:
        self.counts = counts = self.photos.counts()
        parts = [plural(counts.photos, "photo"), f"{counts.unsure} unsure"]
        if counts.not_cat:
            parts.append(f"{counts.not_cat} not a cat")
        parts.append(f"{counts.reviewed} reviewed")
        if counts.not_classified:
            parts.append(f"{counts.not_classified} not classified")
        self.count_label.setText(" · ".join(parts))
        self.counts_changed.emit(counts)

    def show_busy(self, busy: bool) -> None:
        for widget in (self.progress, self.cancel_button, self.rate_label):
            widget.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)  # until the first progress report
            self.rate_label.clear()

    def show_progress(self, done: int, total: int, rate: float | None = None) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.rate_label.setText(f"{done} / {total}" + (f" · {rate:.1f} photos/s" if rate is not None else ""))
