"""The side panels: files that could not be read, and the watched folders with auto-sort.

Panels show state and report what the person asks for through signals; the window acts on them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.printable import printable
from catbreed_desktop.core.sorting.plan import COPY, MOVE
from catbreed_desktop.gui.watch_controller import WatchState


class _ProblemList(QListWidget):
    """A list as tall as its rows, up to `ROWS_SHOWN`; the dock may still be made taller by hand."""

    ROWS_SHOWN = 4

    def sizeHint(self) -> QSize:
        rows = min(max(self.count(), 1), self.ROWS_SHOWN)
        row_height = self.sizeHintForRow(0) if self.count() else self.fontMetrics().height() + 4
        return QSize(super().sizeHint().width(), rows * row_height + 2 * self.frameWidth())

    def minimumSizeHint(self) -> QSize:
        return QSize(
            super().minimumSizeHint().width(), self.fontMetrics().height() + 4 + 2 * self.frameWidth()
        )


class ErrorsPanel(QWidget):
    """Files that could not be read or classified, with the reason; the rest go on regardless.

    It is as tall as its few rows (the grid keeps the room), with *Clear* beside the list.
    """

    count_changed = Signal(int)
    cleared = Signal()  # the person emptied the list

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = _ProblemList()
        self.list.setAlternatingRowColors(True)
        clear = QToolButton()
        clear.setText("Clear")
        clear.setToolTip("Empty the list (the files are not touched)")
        clear.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.list, 1)
        layout.addWidget(clear, 0, Qt.AlignmentFlag.AlignTop)

    def add_errors(self, errors: list[tuple[Path | None, str]]) -> None:
        for path, reason in errors:
            self.list.addItem(f"{printable(path.name)}: {reason}" if path is not None else reason)
            if path is not None:
                self.list.item(self.list.count() - 1).setToolTip(printable(path))
        self.list.updateGeometry()
        self.count_changed.emit(self.list.count())

    def messages(self) -> list[str]:
        return [self.list.item(row).text() for row in range(self.list.count())]

    def clear(self) -> None:
        self.list.clear()
        self.list.updateGeometry()
        self.count_changed.emit(0)
        self.cleared.emit()


class WatchPanel(QWidget):
    """Watched folders, the auto-sort switch, its target folder and whether it moves or copies."""

    folder_added = Signal(str)
    folder_removed = Signal(str)
    auto_sort_changed = Signal(bool)
    target_changed = Signal(str)
    mode_changed = Signal(str)  # "move" or "copy"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folders = QListWidget()
        self.folders.setToolTip(
            "New photos written into these folders are classified as soon as they are complete"
        )
        add = QPushButton("Add folder…")
        add.clicked.connect(self._choose_folder)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Stop watching the selected folder")
        self.remove_button.clicked.connect(self._remove_selected)
        self.auto_sort = QCheckBox("Sort new photos")
        self.auto_sort.setToolTip("Sort new photos into the folder below once they are classified")
        self.auto_sort.toggled.connect(self.auto_sort_changed)
        self.mode = QComboBox()
        self.mode.addItem("Move them", MOVE)
        self.mode.addItem("Copy them", COPY)
        self.mode.setToolTip("What auto-sort does with new photos; the Sort dialog has its own choice")
        self.mode.currentIndexChanged.connect(lambda index: self.mode_changed.emit(self.mode.itemData(index)))
        self.target = QLineEdit()
        self.target.setPlaceholderText("Target folder")
        self.target.editingFinished.connect(lambda: self.target_changed.emit(self.target.text().strip()))
        browse = QPushButton("…")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._choose_target)
        self.state = QLabel("Not watching any folder.")
        self.state.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(self.remove_button)
        mode_row = QHBoxLayout()
        mode_row.addWidget(self.mode)
        mode_row.addWidget(QLabel("into:"))
        target_row = QHBoxLayout()
        target_row.addWidget(self.target, 1)
        target_row.addWidget(browse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.folders, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.auto_sort)
        layout.addLayout(mode_row)
        layout.addLayout(target_row)
        layout.addWidget(self.state)
        # The dock must not widen the window: the list, the line edit and the wrapping label shrink.
        self.folders.setMinimumWidth(60)
        self.target.setMinimumWidth(60)

    def show_state(self, state: WatchState, description: str) -> None:
        """Show the watcher's state without echoing it back as requests."""
        widgets = (self.folders, self.auto_sort, self.target, self.mode)
        for widget in widgets:
            widget.blockSignals(True)
        self.folders.clear()
        self.folders.addItems(list(state.folders))
        self.auto_sort.setChecked(state.auto_sort)
        self.target.setText(state.target)
        self.mode.setCurrentIndex(max(0, self.mode.findData(state.mode)))
        for widget in widgets:
            widget.blockSignals(False)
        self.mode.setEnabled(state.auto_sort)
        self.state.setText(description)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Watch folder")
        if folder:
            self.folder_added.emit(folder)

    def _choose_target(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Sort new photos into", self.target.text())
        if folder:
            self.target.setText(folder)
            self.target_changed.emit(folder)

    def _remove_selected(self) -> None:
        item = self.folders.currentItem()
        if item is not None:
            self.folder_removed.emit(item.text())
