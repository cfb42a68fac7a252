"""The thumbnail grid: a QListView in icon mode and the delegate that paints each photo.

The delegate asks the thumbnail loader for a picture only while painting, so only photos that
are on screen are ever decoded; each cell shows the top breed and its confidence, in orange when
the photo is below the threshold or may not be a cat.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QKeyEvent, QPainter, QPalette, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from catbreed_desktop.core.printable import printable
from catbreed_desktop.gui.photo_model import PhotoListModel, PhotoRecord, RecordRole
from catbreed_desktop.gui.thumbnails import ThumbnailLoader

CAPTION_HEIGHT = 36
PADDING = 6
UNSURE_COLOUR = QColor(214, 120, 0)
REVIEWED_COLOUR = QColor(30, 140, 60)


class PhotoDelegate(QStyledItemDelegate):
    """Paints a thumbnail with its breed caption; thumbnails are requested lazily."""

    def __init__(
        self,
        loader: ThumbnailLoader,
        thumbnail_size: int,
        photos: PhotoListModel,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._loader = loader
        self.thumbnail_size = thumbnail_size
        self._photos = photos  # whose threshold moves with the slider

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(self.thumbnail_size + 2 * PADDING, self.thumbnail_size + CAPTION_HEIGHT + 2 * PADDING)

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        record: PhotoRecord | None = index.data(RecordRole)
        if record is None:
            return
        painter.save()
        style = option.widget.style() if option.widget else None
        if style is not None:
            style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, option.widget)
        size = self.thumbnail_size
        cell = option.rect
        picture_box = QRect(cell.x() + PADDING, cell.y() + PADDING, cell.width() - 2 * PADDING, size)
        image = self._loader.thumbnail(record.path, size)
        photo_box = picture_box
        if image is not None:
            scaled = image.size().scaled(picture_box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            photo_box = QRect(0, 0, scaled.width(), scaled.height())
            photo_box.moveCenter(picture_box.center())
            painter.drawImage(photo_box, image)
        else:
            painter.fillRect(
                picture_box.adjusted(8, 8, -8, -8), option.palette.color(QPalette.ColorRole.AlternateBase)
            )

        unsure = record.is_unsure(self._photos.threshold)
        if unsure:
            self._paint_badge(painter, option, photo_box, "unsure")
        flagged = unsure or record.is_not_cat  # the caption stands out for both
        caption_box = QRect(
            cell.x() + PADDING, picture_box.bottom() + 4, cell.width() - 2 * PADDING, CAPTION_HEIGHT - 4
        )
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            colour = option.palette.color(QPalette.ColorRole.HighlightedText)
        elif flagged:
            colour = UNSURE_COLOUR
        elif record.reviewed or record.corrected_label is not None:
            colour = REVIEWED_COLOUR
        else:
            colour = option.palette.color(QPalette.ColorRole.Text)
        painter.setPen(colour)
        font = QFont(option.font)
        font.setBold(flagged)
        painter.setFont(font)
        first_line = caption_text(record, painter.fontMetrics(), caption_box.width())
        painter.drawText(caption_box, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, first_line)
        painter.setFont(option.font)
        painter.setPen(colour if selected else option.palette.color(QPalette.ColorRole.Text))
        metrics = painter.fontMetrics()
        name = metrics.elidedText(
            printable(record.path.name), Qt.TextElideMode.ElideMiddle, caption_box.width()
        )
        painter.drawText(caption_box, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, name)
        painter.restore()

    def _paint_badge(self, painter: QPainter, option: QStyleOptionViewItem, box: QRect, text: str) -> None:
        """A small label in the photo's top-right corner; the caption keeps its width for the breed."""
        font = QFont(option.font)
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        badge = QRect(0, 0, metrics.horizontalAdvance(text) + 8, metrics.height() + 2)
        badge.moveTopRight(box.topRight() + QPoint(-2, 2))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(UNSURE_COLOUR)
        painter.drawRoundedRect(badge, 4, 4)
        painter.setPen(QColor("white"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)


def caption_text(record: PhotoRecord, metrics: QFontMetrics, width: int) -> str:
    """The caption's first line as it fits `width`: a long breed is shortened, its confidence never."""
    name, figure = record.caption_parts()
    if not figure:
        return metrics.elidedText(name, Qt.TextElideMode.ElideRight, width)
    figure = f"  {figure}"
    room = max(0, width - metrics.horizontalAdvance(figure))
    return metrics.elidedText(name, Qt.TextElideMode.ElideRight, room) + figure


class PhotoGrid(QListView):
    """Icon-mode list of photos laid out in batches, so thousands of items never block the window.

    Review keys: 1-9 pick the model's breed of that rank, Enter confirms, Backspace or Delete
    takes a correction back; arrow keys move as in any list.
    """

    rank_chosen = Signal(int)
    confirmed = Signal()
    correction_cleared = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(200)
        self.setSpacing(4)
        self.setWordWrap(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragEnabled(False)
        self.setAcceptDrops(False)  # drops go to the window, which adds the files
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self._cell = QSize(100, 100)

    def set_cell_size(self, delegate: PhotoDelegate, thumbnail_size: int) -> None:
        delegate.thumbnail_size = thumbnail_size
        self._cell = delegate.sizeHint(QStyleOptionViewItem(), QModelIndex()) + QSize(4, 4)
        self._fit_cells()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_cells()

    def _fit_cells(self) -> None:
        """Share the width out among the columns, so no strip of the grid stays empty on the right.

        The width is counted without the scroll bar whether it shows or not, so the bar coming and
        going never changes the number of columns (which could make it come and go again).
        """
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self)
        width = self.width() - 2 * self.frameWidth() - bar
        columns = max(1, width // self._cell.width())
        size = QSize(max(self._cell.width(), width // columns), self._cell.height())
        if size != self.gridSize():
            self.setGridSize(size)
            self.scheduleDelayedItemsLayout()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key, modifiers = event.key(), event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if modifiers == Qt.KeyboardModifier.NoModifier:
            if Qt.Key.Key_1 <= key <= Qt.Key.Key_9:
                self.rank_chosen.emit(key - Qt.Key.Key_1)
                return
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.confirmed.emit()
                return
            if key in (Qt.Key.Key_Backspace, Qt.Key.Key_Delete):
                self.correction_cleared.emit()
                return
        super().keyPressEvent(event)

    def keyboardSearch(self, search: str) -> None:
        # Letters are review shortcuts in this window; jumping by file name would fight them.
        return
