"""The side panels: files that could not be read, and the watched folders with auto-sort.

Panels show state and report what the person asks for through signals; the window acts on them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class ErrorsPanel(QWidget):
    """Files that could not be read or classified, with the reason; the rest go on regardless."""

    count_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setAlternatingRowColors(True)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(clear)
        layout.addLayout(buttons)

    def add_errors(self, errors: list[tuple[Path | None, str]]) -> None:
        for path, reason in errors:
            self.list.addItem(f"{path.name}: {reason}" if path is not None else reason)
            if path is not None:
                self.list.item(self.list.count() - 1).setToolTip(str(path))
        self.count_changed.emit(self.list.count())

    def messages(self) -> list[str]:
        return [self.list.item(row).text() for row in range(self.list.count())]

    def clear(self) -> None:
        self.list.clear()
        self.count_changed.emit(0)


class WatchPanel(QWidget):
    """Watched folders, the auto-sort switch and its target folder."""

    folder_added = Signal(str)
    folder_removed = Signal(str)
    auto_sort_changed = Signal(bool)
    target_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folders = QListWidget()
        self.folders.setToolTip(
            "New photos written into these folders are classified as soon as they are complete"
        )
        add = QPushButton("Watch folder…")
        add.clicked.connect(self._choose_folder)
        self.remove_button = QPushButton("Stop watching")
        self.remove_button.clicked.connect(self._remove_selected)
        self.auto_sort = QCheckBox("Sort new photos automatically into:")
        self.auto_sort.toggled.connect(self.auto_sort_changed)
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
        target_row = QHBoxLayout()
        target_row.addWidget(self.target, 1)
        target_row.addWidget(browse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.folders, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.auto_sort)
        layout.addLayout(target_row)
        layout.addWidget(self.state)

    def show_state(self, folders: list[str], auto_sort: bool, target: str) -> None:
        """Show the watcher's state without echoing it back as requests."""
        for widget in (self.folders, self.auto_sort, self.target):
            widget.blockSignals(True)
        self.folders.clear()
        self.folders.addItems(folders)
        self.auto_sort.setChecked(auto_sort)
        self.target.setText(target)
        for widget in (self.folders, self.auto_sort, self.target):
            widget.blockSignals(False)
        if not folders:
            self.state.setText("Not watching any folder.")
        elif auto_sort and target:
            self.state.setText(f"Watching {len(folders)} folder(s); new photos are sorted into {target}.")
        else:
            self.state.setText(f"Watching {len(folders)} folder(s); new photos are added to the grid.")

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
