"""The details pane: the selected photo larger, its top three breeds, its file, and the review box.

The review box is a `BreedBox`: every breed of the model in alphabetical order, searched by typing
any part of a name; picking one, or typing enough of one and pressing Enter, sets the breed. The
pane only reports what the person chose (`label_chosen`); the window records it.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.printable import printable
from catbreed_desktop.gui.breed_box import BreedBox
from catbreed_desktop.gui.photo_model import NOT_CAT_TEXT, PhotoRecord
from catbreed_desktop.gui.thumbnails import ThumbnailLoader

PREVIEW_SIZE = 420
TOP_K = 3


class DetailsPane(QWidget):
    """Shows one photo and lets the person confirm or correct its breed."""

    label_chosen = Signal(str)
    correction_cleared = Signal()

    def __init__(self, loader: ThumbnailLoader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._loader = loader
        self._record: PhotoRecord | None = None
        self.setMinimumWidth(250)

        self.picture = QLabel("Select a photo to see it here.")
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumHeight(240)
        self.picture.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)

        self.top_labels: list[QLabel] = []
        self.top_bars: list[QProgressBar] = []
        self.top_rows: list[QWidget] = []
        top_box = QVBoxLayout()
        for rank in range(TOP_K):
            name, bar = QLabel("—"), QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            bar.setFormat("")
            self.top_labels.append(name)
            self.top_bars.append(bar)
            self.top_rows.append(_row(rank + 1, name, bar))
            top_box.addWidget(self.top_rows[-1])

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.path_label = QLabel("")
        self.path_label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.size_label = QLabel("")

        self.breed_box = BreedBox()
        self.breed_box.setToolTip(
            "The photo's breed: pick one, or type any part of its name and press Enter (Ctrl+L comes here)"
        )
        line_edit = self.breed_box.lineEdit()
        if line_edit is not None:  # always, for an editable box
            line_edit.setPlaceholderText("Type part of a breed’s name")
        self.breed_box.chosen.connect(lambda label: self.label_chosen.emit(str(label)))
        self.breed_box.not_found.connect(self._not_a_breed)
        self.set_button = QPushButton("Set breed")
        self.set_button.clicked.connect(self.breed_box.choose_typed)
        self.clear_button = QPushButton("Use model's breed")
        self.clear_button.clicked.connect(self.correction_cleared)
        # Full-contrast text: a disabled (grey) label was hard to read, and these keys are the way to work.
        self.hint = QLabel(
            "Keys: <b>1–3</b> pick the top breeds · <b>Enter</b> confirms · <b>arrows</b> move · "
            "<b>Ctrl+L</b> types a breed · <b>Backspace</b> takes a correction back"
        )
        self.hint.setTextFormat(Qt.TextFormat.RichText)
        self.hint.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.picture, 1)
        layout.addLayout(top_box)
        layout.addWidget(self.status)
        review = QHBoxLayout()
        review.addWidget(self.breed_box, 1)
        review.addWidget(self.set_button)
        layout.addLayout(review)
        layout.addWidget(self.clear_button)
        layout.addWidget(self.hint)
        layout.addWidget(self.path_label)
        layout.addWidget(self.size_label)
        self._loader.ready.connect(self._thumbnail_ready)
        self.show_record(None, 0.5)

    def set_labels(self, labels: list[str]) -> None:
        self.breed_box.set_items(labels)

    def show_record(self, record: PhotoRecord | None, threshold: float) -> None:
        self._record = record
        enabled = record is not None and record.classified
        for widget in (self.breed_box, self.set_button, self.clear_button):
            widget.setEnabled(enabled)
        top = record.prediction.top if record is not None and record.prediction is not None else ()
        # Rows without a breed are hidden: empty bars looked like text boxes waiting for input.
        for rank in range(TOP_K):
            self.top_rows[rank].setVisible(rank < len(top))
        if record is None:
            self.picture.setPixmap(QPixmap())
            self.picture.setText("Select a photo to see it here.")
            self.status.setText("")
            self.path_label.setText("")
            self.size_label.setText("")
            return
        self._show_picture()
        for rank, (name, bar) in enumerate(zip(self.top_labels, self.top_bars, strict=True)):
            if rank < len(top):
                label, probability = top[rank]
                name.setText(label)
                bar.setValue(round(probability * 1000))
                bar.setFormat(f"{probability:.1%}")
            else:
                name.setText("—")
                bar.setValue(0)
                bar.setFormat("")
        self.status.setText(_status_text(record, threshold))
        self.path_label.setText(printable(record.path))
        self.size_label.setText(_file_size(record.path))
        if record.label is not None:
            self.breed_box.show_name(record.label)

    def _show_picture(self) -> None:
        if self._record is None:
            return
        image = self._loader.thumbnail(self._record.path, PREVIEW_SIZE)
        if image is None:
            self.picture.setPixmap(QPixmap())
            self.picture.setText("Loading…")
            return
        pixmap = QPixmap.fromImage(image)
        box = self.picture.size()
        if pixmap.width() > box.width() or pixmap.height() > box.height():
            pixmap = pixmap.scaled(
                box, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        self.picture.setPixmap(pixmap)
        self.size_label.setText(f"{_file_size(self._record.path)} · {image.width()}×{image.height()} preview")

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._show_picture()  # fit the photo to the pane's new size

    def _thumbnail_ready(self, path: str, size: int) -> None:
        if self._record is not None and size == PREVIEW_SIZE and path == str(self._record.path):
            self._show_picture()

    def _not_a_breed(self, text: str) -> None:
        # A part that several names contain is not a typo: say so, the list shows them.
        several = (
            bool(text) and sum(text.casefold() in name.casefold() for name in self.breed_box.breeds()) > 1
        )
        if several:
            self.status.setText(f"Several breeds contain “{text}”; pick one from the list.")
        else:
            self.status.setText(f"“{text}” is not a breed of this model; pick one from the list.")


def _row(rank: int, name: QLabel, bar: QProgressBar) -> QWidget:
    widget = QWidget()
    layout = QHBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(QLabel(f"{rank}."))
    name.setMinimumWidth(120)
    layout.addWidget(name, 1)
    layout.addWidget(bar, 1)
    return widget


def _status_text(record: PhotoRecord, threshold: float) -> str:
    moved_by = getattr(record.prediction, "moved_by", None)
    text = _review_text(record, threshold)
    if moved_by is not None and not record.reviewed and record.corrected_label is None:
        return f"Changed by your correction {moved_by}. {text}"
    return text


def _review_text(record: PhotoRecord, threshold: float) -> str:
    if not record.classified:
        return (
            "Being classified…"
            if record.queued
            else "Not classified: Edit ▸ Classify again (Ctrl+R) or adding it again classifies it."
        )
    if record.corrected_label is not None:
        return f"Corrected by you: {record.corrected_label} (counts as sure when sorting)."
    if record.reviewed:
        return f"Confirmed by you: {record.label}."
    if not record.is_cat:
        return f"{NOT_CAT_TEXT}? The model thinks this photo may not show a cat."
    if record.confidence < threshold:
        return f"Unsure: below the {threshold:.0%} threshold; sorting puts it in “Unsure”."
    return "Press Enter to confirm, or pick another breed."


def _file_size(path: Path) -> str:
    try:
        size: float = path.stat().st_size
    except OSError:
        return "file not found"
    for unit in ("bytes", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return ""
