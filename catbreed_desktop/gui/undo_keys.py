"""Ctrl+Z between the text fields and *Undo last sort*.

Qt lets a focused line edit claim every Ctrl+Z, even with nothing to undo, so the window's Undo
shortcut never fired from the search box; and typing done before a sort was taken back instead of
the sort. `SortUndoKeys` settles it: a text field keeps Ctrl+Z only while it has typing of its own
to undo that is newer than the last sort (the person is editing it); otherwise Ctrl+Z goes to the
window's action. The menu item works whatever has the focus.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QComboBox, QLineEdit, QWidget


def _line_edit_of(widget: QObject) -> QLineEdit | None:
    # An editable combo box takes the key events itself and hands them to its line edit directly.
    if isinstance(widget, QLineEdit):
        return widget
    if isinstance(widget, QComboBox):
        return widget.lineEdit()
    return None


class SortUndoKeys(QObject):
    """Watches the text fields of `window` (those there when it is made, and any given to `watch`)."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self._fields: list[QLineEdit] = []
        for widget in window.findChildren(QWidget):
            if _line_edit_of(widget) is not None:
                self.watch(widget)

    def watch(self, widget: QWidget) -> None:
        """Watch a line edit or an editable combo box."""
        widget.installEventFilter(self)
        field = _line_edit_of(widget)
        if field is not None and field not in self._fields:
            self._fields.append(field)

    def sort_undo_changed(self, available: bool) -> None:
        """Connected to the sort controller's `undo_available`: a new sort to undo forgets older typing."""
        if available:
            self.forget_typing()

    def forget_typing(self) -> None:
        """Files were sorted: Ctrl+Z belongs to that now, not to typing done before."""
        for field in self._fields:
            if field.isUndoAvailable():
                field.setText(field.text())  # the same text; setText clears the field's undo history

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and event.matches(QKeySequence.StandardKey.Undo)
        ):
            field = _line_edit_of(watched)
            if field is not None and not field.isUndoAvailable():
                event.ignore()  # not claimed: the window's shortcut gets the key
                return True
        return False
