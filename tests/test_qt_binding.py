"""The Qt binding keeps Python's reference counts: PySide6 6.12.0 does not, so it is excluded.

In 6.12.0 every call from Qt into a Python `data()` that returns None, every emit of a
`Signal(bool)` and every `processEvents()` dropped one reference to None or True. The window
calls such methods thousands of times a session, and the interpreter aborted ("deallocating
None", "deallocating True or False") at exit or sooner. These checks fail on a binding with
that bug, so an upgrade cannot bring it back unnoticed.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import (
    QAbstractListModel,
    QCoreApplication,
    QModelIndex,
    QObject,
    QSortFilterProxyModel,
    Qt,
    Signal,
)

CALLS = 500


class OneRowModel(QAbstractListModel):
    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else 1

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        return "cat" if role == Qt.ItemDataRole.DisplayRole else None


class Switch(QObject):
    toggled = Signal(bool)


def _references_lost(action) -> dict[str, int]:
    before = {"None": sys.getrefcount(None), "True": sys.getrefcount(True)}
    for _ in range(CALLS):
        action()
    return {name: before[name] - sys.getrefcount(value) for name, value in (("None", None), ("True", True))}


def test_model_data_returning_none_keeps_none_alive(qapp) -> None:
    source = OneRowModel()
    proxy = QSortFilterProxyModel()
    proxy.setSourceModel(source)  # the proxy calls the Python data() from C++, as views do
    index = proxy.index(0, 0)

    lost = _references_lost(lambda: proxy.data(index, Qt.ItemDataRole.ToolTipRole))

    assert lost["None"] < CALLS // 10


def test_bool_signals_and_process_events_keep_references(qapp) -> None:
    switch = Switch()
    switch.toggled.connect(lambda checked: None)

    lost_by_emit = _references_lost(lambda: switch.toggled.emit(True))
    lost_by_events = _references_lost(QCoreApplication.processEvents)

    assert lost_by_emit["True"] < CALLS // 10
    assert lost_by_events["None"] < CALLS // 10
