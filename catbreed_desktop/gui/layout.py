"""The window's widgets and where they sit: filter bar, banner, grid, details pane, docks.

`build_widgets` creates them and lays them out; it connects nothing to the controllers (the
window wires). Sizes are chosen so the window fits a 1280 x 800 screen with every panel open: the
filter bar and the docks shrink instead of widening the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QSizePolicy,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.settings import RANGES, Settings
from catbreed_desktop.gui.breed_box import BreedBox
from catbreed_desktop.gui.details import DetailsPane
from catbreed_desktop.gui.grid import PhotoDelegate, PhotoGrid
from catbreed_desktop.gui.panels import ErrorsPanel, WatchPanel
from catbreed_desktop.gui.photo_model import SPECIAL_FILTERS, PhotoFilterProxy, PhotoListModel, show_breed
from catbreed_desktop.gui.threshold import SLIDER_SCALE
from catbreed_desktop.gui.thumbnails import ThumbnailLoader

DETAILS_WIDTH = 340
WATCH_DOCK_WIDTH = 250


@dataclass
class WindowWidgets:
    """The widgets the window and its controllers talk to."""

    breed_filter: BreedBox
    sort_order: QComboBox
    search: QLineEdit
    threshold_slider: QSlider
    threshold_label: QLabel
    banner: QLabel
    empty_hint: QLabel
    grid: PhotoGrid
    delegate: PhotoDelegate
    details: DetailsPane
    splitter: QSplitter
    errors: ErrorsPanel
    errors_dock: QDockWidget
    watch_panel: WatchPanel
    watch_dock: QDockWidget


def make_breed_filter() -> BreedBox:
    """The filter bar's breed box: all photos, the unsure ones, those that may not be cats, or one breed.

    Every choice shows how many photos it holds; the window keeps the counts up to date.
    """
    breed_filter = BreedBox(keep_to_items=True)
    breed_filter.set_items((), [(choice.text, choice) for choice in SPECIAL_FILTERS], key=show_breed)
    # Sized for about 12 letters, not for the longest breed name of whatever model is loaded: the
    # popup and the completions widen themselves to the names.
    breed_filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    breed_filter.setMinimumContentsLength(12)
    breed_filter.setToolTip(
        "Show one breed, the unsure photos or the photos that may not be cats, with how many each has.\n"
        "Type any part of a breed’s name to find it."
    )
    return breed_filter


def build_widgets(
    window: QMainWindow,
    settings: Settings,
    photos: PhotoListModel,
    proxy: PhotoFilterProxy,
    loader: ThumbnailLoader,
) -> WindowWidgets:
    """Create the central area and the docks of `window`."""
    breed_filter = make_breed_filter()
    sort_order = QComboBox()
    sort_order.addItems(PhotoFilterProxy.SORT_KEYS)
    sort_order.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    sort_order.setMinimumContentsLength(10)
    sort_order.setToolTip("Order of the photos: by name or by confidence")
    search = QLineEdit()
    search.setPlaceholderText("Search file names")
    search.setClearButtonEnabled(True)
    search.setMinimumWidth(130)
    threshold = RANGES["confidence_threshold"]
    # The window sets the value and the tooltip, which says where the value comes from.
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(round(threshold.minimum * SLIDER_SCALE), round(threshold.maximum * SLIDER_SCALE))
    slider.setSingleStep(SLIDER_SCALE // 100)  # the arrow keys move by 1 %
    slider.setPageStep(round(threshold.step * SLIDER_SCALE))
    slider.setFixedWidth(100)
    threshold_label = QLabel()
    threshold_label.setMinimumWidth(threshold_label.fontMetrics().horizontalAdvance("00.0%") + 4)
    filter_bar = QHBoxLayout()
    filter_bar.addWidget(QLabel("Breed:"))
    filter_bar.addWidget(breed_filter)
    filter_bar.addWidget(sort_order)
    filter_bar.addWidget(search, 1)
    filter_bar.addWidget(QLabel("Unsure below:"))
    filter_bar.addWidget(slider)
    filter_bar.addWidget(threshold_label)

    banner = QLabel()
    banner.setWordWrap(True)
    banner.setFrameShape(QFrame.Shape.StyledPanel)
    banner.setStyleSheet("QLabel { background: #fff4d6; color: #5a4100; padding: 8px; }")
    banner.setTextFormat(Qt.TextFormat.RichText)
    banner.hide()
    empty_hint = QLabel(
        "Drop photos or folders here, or choose File ▸ Add folder… to start.",
        alignment=Qt.AlignmentFlag.AlignCenter,
    )
    empty_hint.setWordWrap(True)

    grid = PhotoGrid()
    delegate = PhotoDelegate(loader, settings.thumbnail_size, photos, grid)
    grid.setItemDelegate(delegate)
    grid.setModel(proxy)
    grid.set_cell_size(delegate, settings.thumbnail_size)
    details = DetailsPane(loader)

    left = QWidget()
    left_layout = QVBoxLayout(left)
    left_layout.setContentsMargins(6, 6, 0, 6)
    left_layout.addWidget(banner)
    left_layout.addLayout(filter_bar)
    left_layout.addWidget(empty_hint)
    left_layout.addWidget(grid, 1)
    splitter = QSplitter()
    splitter.addWidget(left)
    splitter.addWidget(details)
    splitter.setStretchFactor(0, 1)
    splitter.setStretchFactor(1, 0)  # the details pane keeps its width; the grid takes the rest
    splitter.setCollapsible(0, False)
    splitter.setSizes([window.width() - DETAILS_WIDTH, DETAILS_WIDTH])
    window.setCentralWidget(splitter)

    errors = ErrorsPanel()
    errors_dock = QDockWidget("Problems", window)
    errors_dock.setObjectName("problems")
    errors_dock.setWidget(errors)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, errors_dock)
    errors_dock.hide()
    errors.count_changed.connect(
        lambda count: errors_dock.setWindowTitle(f"Problems ({count})" if count else "Problems")
    )
    errors.cleared.connect(errors_dock.hide)  # an empty list only takes the grid's room
    watch_panel = WatchPanel()
    watch_panel.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    watch_dock = QDockWidget("Watched folders", window)
    watch_dock.setObjectName("watched")
    watch_dock.setWidget(watch_panel)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, watch_dock)
    window.resizeDocks([watch_dock], [WATCH_DOCK_WIDTH], Qt.Orientation.Horizontal)
    watch_dock.hide()
    return WindowWidgets(
        breed_filter=breed_filter,
        sort_order=sort_order,
        search=search,
        threshold_slider=slider,
        threshold_label=threshold_label,
        banner=banner,
        empty_hint=empty_hint,
        grid=grid,
        delegate=delegate,
        details=details,
        splitter=splitter,
        errors=errors,
        errors_dock=errors_dock,
        watch_panel=watch_panel,
        watch_dock=watch_dock,
    )
