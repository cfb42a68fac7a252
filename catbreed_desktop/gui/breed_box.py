"""`BreedBox`: an editable combo box over a model's breeds, in alphabetical order, searched by typing.

A model of 33 breeds or more is too long a list to scan in bundle order, so the box sorts the
breeds by name, keeps its popup to `VISIBLE_ROWS` rows with a scroll bar, and completes what is
typed from anywhere in a name ("fold" finds Scottish Fold). Choices that are not breeds (the
filter's "All breeds", "Unsure", "Not a cat") stay on top, in italics, above a separator line, so
they never read as breeds; each item carries a key (`itemData`) and a breed never shares one with
them, whatever it is called.

The box says what the person chose with `chosen(key)`: picked in the popup or the completer, or
typed and Enter pressed (the exact name, or a part that only one name contains). `not_found(text)`
says that typed text names no item. A box that must always show one of its items (the filter)
puts the current item's name back when the typing leads nowhere.

A box can show a count at the right of each row (`set_counts`). The counts are painted by the
item delegate, not written into the items: rewriting an item's text replaces the text in the line
edit, and counts change many times a second during a run, while the person may be typing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QCompleter,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

# Rows the popups show before they scroll: a screenful of breeds is a list nobody reads.
VISIBLE_ROWS = 14
# QComboBox marks its separator rows with this accessible description.
_SEPARATOR = "separator"
_COUNT_GAP = 16  # pixels between a name and its count
# Room around a row's text: plain list rows were too tight to pick one of 33 with the mouse.
_PAD_X, _PAD_Y = 6, 3

ModelIndex = QModelIndex | QPersistentModelIndex


def alphabetical(names: Iterable[str]) -> list[str]:
    """`names` as people look them up: case and accents aside ("Ängora" among the A's), ties by the exact text."""

    def key(name: str) -> tuple[str, str]:
        folded = unicodedata.normalize("NFKD", name.casefold())
        return "".join(c for c in folded if not unicodedata.combining(c)), name

    return sorted(names, key=key)


class CountDelegate(QStyledItemDelegate):
    """Paints each row's name, and its count right-aligned when `counts` has one for the row's key.

    Rows whose count is 0 are greyed: the breed exists in the model, no photo shows it yet.
    Separator rows are drawn as a thin line. Rows get some padding, so they are easy to hit.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.counts: Mapping[Any, int] = {}

    def count_of(self, index: ModelIndex) -> int | None:
        key = index.data(Qt.ItemDataRole.UserRole)
        if key is None or not self.counts:
            return None
        return self.counts.get(key, 0)

    def sizeHint(self, option: QStyleOptionViewItem, index: ModelIndex) -> QSize:
        if index.data(Qt.ItemDataRole.AccessibleDescriptionRole) == _SEPARATOR:
            return QSize(1, 7)
        size = super().sizeHint(option, index)
        size = QSize(size.width() + 2 * _PAD_X, size.height() + 2 * _PAD_Y)
        count = self.count_of(index)
        if count is not None:
            size.setWidth(size.width() + _COUNT_GAP + option.fontMetrics.horizontalAdvance(f"{count:,}"))
        return size

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        widget = option.widget
        if index.data(Qt.ItemDataRole.AccessibleDescriptionRole) == _SEPARATOR:
            rect = option.rect
            painter.save()
            painter.setPen(option.palette.color(QPalette.ColorRole.Mid))
            middle = rect.center().y()
            painter.drawLine(rect.left() + 4, middle, rect.right() - 4, middle)
            painter.restore()
            return
        count = self.count_of(index)
        item = QStyleOptionViewItem(option)
        self.initStyleOption(item, index)
        name = item.text
        item.text = ""  # the style draws background, selection and focus; the texts are drawn below
        style = widget.style() if widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, item, painter, widget)
        text_rect = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, item, widget)
        text_rect = text_rect.adjusted(_PAD_X, 0, -_PAD_X, 0)
        figure = f"{count:,}" if count is not None else ""
        metrics = item.fontMetrics
        selected = bool(item.state & QStyle.StateFlag.State_Selected)
        enabled = bool(item.state & QStyle.StateFlag.State_Enabled)
        palette = item.palette
        text = palette.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        faint = palette.color(QPalette.ColorRole.PlaceholderText)
        painter.save()
        painter.setFont(item.font)
        painter.setPen(text if enabled and (count != 0 or selected) else faint)
        name_rect = (
            text_rect.adjusted(0, 0, -(metrics.horizontalAdvance(figure) + _COUNT_GAP), 0)
            if figure
            else text_rect
        )
        elided = metrics.elidedText(name, Qt.TextElideMode.ElideRight, name_rect.width())
        painter.drawText(name_rect, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), elided)
        if figure:
            painter.setPen(text if selected else faint)  # the figure is secondary to the name
            painter.drawText(
                text_rect, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), figure
            )
        painter.restore()


class BreedBox(QComboBox):
    """Breeds in alphabetical order, special choices on top, type-to-search; see the module's docstring."""

    chosen = Signal(object)  # the key of the item the person chose
    not_found = Signal(str)  # typed text that names no item

    def __init__(self, keep_to_items: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._keep_to_items = keep_to_items
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.setMaxVisibleItems(VISIBLE_ROWS)
        self.delegate = CountDelegate(self)
        self.setItemDelegate(self.delegate)
        completer = QCompleter(self.model(), self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        completer.setMaxVisibleItems(VISIBLE_ROWS)
        self.setCompleter(completer)
        popup = self.completer_popup = QListView()
        # What QCompleter sets on the popup it would make itself; this one is kept, typed, for the delegate.
        popup.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        popup.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        popup.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        completer.setPopup(popup)
        popup.setItemDelegate(self.delegate)
        popup.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        popup.setTextElideMode(Qt.TextElideMode.ElideRight)
        self._first_breed_row = 0  # the rows above it are the special choices and the separator
        # One choice per gesture: the completer's popup passes Enter on to the line edit, and a
        # pick fires `activated` as well, so requests are gathered and settled once the event is over.
        self._settle_timer = QTimer(self, singleShot=True, interval=0)
        self._settle_timer.timeout.connect(self._settle)
        self._wants_choice = False
        self.activated.connect(self._activated)
        line_edit = self.lineEdit()
        if line_edit is not None:  # always, for an editable box
            line_edit.returnPressed.connect(lambda: self._request(choose=True))
            line_edit.editingFinished.connect(lambda: self._request(choose=False))

    # --- items ---------------------------------------------------------------------------------

    def set_items(
        self,
        breeds: Iterable[str],
        specials: Sequence[tuple[str, Hashable]] = (),
        key: Callable[[str], Hashable] = str,
    ) -> None:
        """Show `specials` ((text, key) pairs) on top in italics, then `breeds` alphabetically, keyed by `key(name)`.

        The current item stays current when it is still there; no signal is sent for the change.
        """
        current = self.current_key()
        text = self.currentText()
        blocked = self.blockSignals(True)
        try:
            self.clear()
            italic = QFont(self.font())
            italic.setItalic(True)
            for special_text, special_key in specials:
                self.addItem(special_text, special_key)
                self.setItemData(self.count() - 1, italic, Qt.ItemDataRole.FontRole)
            names = alphabetical(dict.fromkeys(breeds))
            if specials and names:
                self.insertSeparator(self.count())
            self._first_breed_row = self.count()
            for name in names:
                self.addItem(name, key(name))
            row = self.row_of(current) if current is not None else None
            if row is not None:
                self.setCurrentIndex(row)
            elif self._keep_to_items and self.count():
                self.setCurrentIndex(0)
            else:
                self.setCurrentIndex(-1)
                self.setEditText(text)
        finally:
            self.blockSignals(blocked)
        self._fit_popups()

    def keys(self) -> list[Hashable]:
        """The keys of the items, in the order shown (separators left out)."""
        return [key for row in range(self.count()) if (key := self.itemData(row)) is not None]

    def breeds(self) -> list[str]:
        """The names of the items that are breeds, in the order shown."""
        return [self.itemText(row) for row in range(self._first_breed_row, self.count())]

    def row_of(self, key: Hashable) -> int | None:
        # Compared in Python: keys may be any hashable object, which QComboBox.findData cannot compare.
        return next((row for row in range(self.count()) if self.itemData(row) == key), None)

    def current_key(self) -> Any:
        return self.currentData() if self.currentIndex() >= 0 else None

    def choose(self, key: Hashable) -> bool:
        """Make the item of `key` current (as a program, not the person: `chosen` is not sent)."""
        row = self.row_of(key)
        if row is None:
            return False
        self.setCurrentIndex(row)
        return True

    def show_name(self, name: str) -> None:
        """Show `name` in the line edit, its item current when there is one, so the popup opens at it.

        A program's doing, not the person's: no signal is sent.
        """
        row = next((row for row in range(self.count()) if self.itemText(row) == name), None)
        blocked = self.blockSignals(True)
        if row is not None:
            self.setCurrentIndex(row)
        self.setEditText(name)
        self.blockSignals(blocked)

    def set_counts(self, counts: Mapping[Any, int]) -> None:
        """Show `counts[key]` at the right of each item (0 for a key it lacks); an empty mapping shows none."""
        self.delegate.counts = counts
        self._fit_popups()
        for view in self._popups():
            if view.isVisible():
                view.viewport().update()

    # --- typing --------------------------------------------------------------------------------

    def find_typed(self, text: str) -> int | None:
        """The row `text` names: the item of that name (case aside), else the only item containing it."""
        wanted = text.strip().casefold()
        if not wanted:
            return None
        rows = [row for row in range(self.count()) if self.itemData(row) is not None]
        exact = [row for row in rows if self.itemText(row).casefold() == wanted]
        if exact:
            return exact[0]
        partial = [row for row in rows if wanted in self.itemText(row).casefold()]
        return partial[0] if len(partial) == 1 else None

    def choose_typed(self) -> None:
        """Take what is typed as the person's choice: `chosen` for an item it names, else `not_found`."""
        text = self.currentText()
        row = self.find_typed(text)
        if row is None:
            if self._keep_to_items:
                self._show_current_name()
            self.not_found.emit(text.strip())
            return
        self.setCurrentIndex(row)
        self.setEditText(self.itemText(row))
        self.chosen.emit(self.itemData(row))

    def _activated(self, row: int) -> None:
        # Qt also activates the item whose exact name is typed when focus leaves the box. Leaving
        # (perhaps by clicking another photo, which the choice would then be given to) is no choice:
        # only an activation while the focus is in the box or one of its popups counts.
        focus = QApplication.focusWidget()
        inside = focus is None or focus is self or self.isAncestorOf(focus) or focus in self._popups()
        if inside:
            self._request(choose=True)
        else:
            self._request(choose=False)

    def _request(self, choose: bool) -> None:
        self._wants_choice = self._wants_choice or choose
        self._settle_timer.start()

    def _settle(self) -> None:
        choose, self._wants_choice = self._wants_choice, False
        if choose:
            self.choose_typed()
        elif self._keep_to_items and self.currentText() != self.itemText(self.currentIndex()):
            self._show_current_name()  # the typing was left unfinished: show what is really chosen

    def _show_current_name(self) -> None:
        self.setEditText(self.itemText(self.currentIndex()) if self.currentIndex() >= 0 else "")

    # --- popups --------------------------------------------------------------------------------

    def _popups(self) -> tuple[QAbstractItemView, ...]:
        return (self.view(), self.completer_popup)

    def _fit_popups(self) -> None:
        """Make both popups wide enough for the longest name and its count, not just the box's width."""
        metrics = self.fontMetrics()
        widest = max(
            (metrics.horizontalAdvance(self.itemText(row)) for row in range(self.count())), default=0
        )
        counts = self.delegate.counts
        if counts:
            widest += _COUNT_GAP + metrics.horizontalAdvance(f"{max(counts.values(), default=0):,}")
        scroll_bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        padding = 4 * _PAD_X  # ours on both sides, and about as much from the style
        for view in self._popups():
            view.setMinimumWidth(widest + scroll_bar + 2 * view.frameWidth() + padding)
