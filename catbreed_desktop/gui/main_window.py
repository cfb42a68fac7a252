"""The main window: photo grid, details pane, panels, menus; it presents the core and commands it.

Every piece of real work is the core's (classify, plan_sort, execute_plan, undo_last_sort,
corrections export, folder watching), run in the background threads of `workers`; the window
keeps the photo model up to date from their results and records the person's review.

One `MainWindow` object owns every widget, thread and the watcher; groups of its methods live in
mixins: `window_actions` (menus, toolbar, status bar), `window_review` (selection, labels,
corrections export), `window_sorting` (sort, undo, background tasks), `window_watching`
(watched folders). This module keeps building the window, model loading, adding photos,
classification, settings, the screenshot and shutdown.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.imaging import PHOTO_SUFFIXES
from catbreed_desktop.core.paths import default_model_dir
from catbreed_desktop.core.settings import Settings, load_settings, save_settings
from catbreed_desktop.core.watching import FolderWatcher
from catbreed_desktop.gui import APP_TITLE
from catbreed_desktop.gui.details import DetailsPane
from catbreed_desktop.gui.grid import PhotoDelegate, PhotoGrid
from catbreed_desktop.gui.panels import ErrorsPanel, WatchPanel
from catbreed_desktop.gui.photo_model import (
    ALL_BREEDS,
    NOT_CAT_TEXT,
    UNSURE_TEXT,
    PhotoFilterProxy,
    PhotoListModel,
)
from catbreed_desktop.gui.thumbnails import ThumbnailLoader
from catbreed_desktop.gui.window_actions import ActionsMixin
from catbreed_desktop.gui.window_review import ReviewMixin
from catbreed_desktop.gui.window_sorting import SortingMixin
from catbreed_desktop.gui.window_watching import WatchingMixin
from catbreed_desktop.gui.workers import ClassifyThread, ModelLoadThread, ScanThread, TaskThread

# While a long run goes on, the sorted and filtered view catches up at most this often.
VIEW_REFRESH_MS = 1500


class MainWindow(ActionsMixin, ReviewMixin, SortingMixin, WatchingMixin, QMainWindow):
    """The CatBreed window. `settings` default to the saved ones; `model_path` overrides the bundle."""

    model_ready = Signal(str)  # the engine in use
    model_failed = Signal(str)
    classification_finished = Signal()
    task_finished = Signal(str)  # "sort", "undo", "export"
    screenshot_saved = Signal(str)
    _watched_ready = Signal(object)  # list[Path], from the watcher's thread

    def __init__(self, settings: Settings | None = None, model_path: Path | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else load_settings()
        if model_path is not None:
            self.settings.model_path = str(model_path)
        self.classifier: Any = None
        self.model_error: str | None = None
        self._queue: list[Path] = []
        self._classify_thread: ClassifyThread | None = None
        self._model_thread: ModelLoadThread | None = None
        self._scan_threads: list[ScanThread] = []
        self._task_thread: TaskThread | None = None
        self._task_kind = ""
        self._task_outcome: tuple[Any, Any] | None = None  # (on_done, result) of the task that ended
        self._auto_sort_paths: list[Path] = []
        self._screenshot_path: Path | None = None
        self._closed = False

        self.setWindowTitle(APP_TITLE)
        self.resize(1200, 800)
        self.setAcceptDrops(True)
        self.loader = ThumbnailLoader(self)
        self.photos = PhotoListModel(self)
        self.photos.threshold = self.settings.confidence_threshold
        self.proxy = PhotoFilterProxy(self)
        self.proxy.setSourceModel(self.photos)
        self._build_status_bar()
        self._build_central()
        self._build_docks()
        self._build_actions()
        self._view_refresh = QTimer(self, interval=VIEW_REFRESH_MS)
        self._view_refresh.timeout.connect(self.proxy.refresh)

        self.watcher = FolderWatcher(self._watched_ready.emit, recursive=True)
        self._watched_ready.connect(self._on_watched_photos)
        self._restore_watching()
        QTimer.singleShot(0, self.load_model)

    # --- building the window ---------------------------------------------------------------------

    def _build_central(self) -> None:
        self.breed_filter = QComboBox()
        self.breed_filter.setMinimumWidth(160)
        self.breed_filter.addItem(ALL_BREEDS)
        self.breed_filter.currentTextChanged.connect(self.proxy.set_breed)
        self.sort_order = QComboBox()
        self.sort_order.addItems(PhotoFilterProxy.SORT_KEYS)
        self.sort_order.currentTextChanged.connect(self.proxy.set_sort_key)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search file names")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_search)
        filter_bar = QHBoxLayout()
        filter_bar.addWidget(QLabel("Breed:"))
        filter_bar.addWidget(self.breed_filter)
        filter_bar.addWidget(QLabel("Sort by:"))
        filter_bar.addWidget(self.sort_order)
        filter_bar.addWidget(self.search, 1)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_slider.setFixedWidth(140)
        self.threshold_slider.setValue(round(self.settings.confidence_threshold * 100))
        self.threshold_slider.setToolTip(
            "Photos below this confidence are marked unsure and sorted into “Unsure”"
        )
        self.threshold_label = QLabel(f"{self.threshold_slider.value()}%")
        self.threshold_label.setMinimumWidth(36)
        self.threshold_slider.valueChanged.connect(self._threshold_moved)
        filter_bar.addWidget(QLabel("Unsure below:"))
        filter_bar.addWidget(self.threshold_slider)
        filter_bar.addWidget(self.threshold_label)

        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.banner.setStyleSheet("QLabel { background: #fff4d6; color: #5a4100; padding: 8px; }")
        self.banner.setTextFormat(Qt.TextFormat.RichText)
        self.banner.hide()
        self.empty_hint = QLabel(
            "Drop photos or folders here, or choose File ▸ Add folder… to start.",
            alignment=Qt.AlignmentFlag.AlignCenter,
        )
        self.empty_hint.setEnabled(False)

        self.grid = PhotoGrid()
        self.delegate = PhotoDelegate(self.loader, self.settings.thumbnail_size, self.photos, self.grid)
        self.grid.setItemDelegate(self.delegate)
        self.grid.setModel(self.proxy)
        self.grid.set_cell_size(self.delegate, self.settings.thumbnail_size)
        self.grid.selectionModel().currentChanged.connect(self._show_current)
        self.loader.ready.connect(lambda path, size: self.photos.refresh_path(Path(path)))

        self.details = DetailsPane(self.loader)
        self.details.label_chosen.connect(self._label_typed)
        self.details.correction_cleared.connect(self.clear_correction)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(6, 6, 0, 6)
        left_layout.addWidget(self.banner)
        left_layout.addLayout(filter_bar)
        left_layout.addWidget(self.empty_hint)
        left_layout.addWidget(self.grid, 1)
        self.splitter = QSplitter()
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([860, 340])
        self.setCentralWidget(self.splitter)
        self.photos.rowsInserted.connect(self._update_empty_hint)
        self.photos.rowsRemoved.connect(self._update_empty_hint)
        self.photos.modelReset.connect(self._update_empty_hint)
        self._update_empty_hint()

        self.grid.rank_chosen.connect(self.choose_top_label)
        self.grid.confirmed.connect(self.confirm_selection)
        self.grid.correction_cleared.connect(self.clear_correction)
        QShortcut(QKeySequence("Ctrl+L"), self).activated.connect(self._focus_breed_box)

    def _build_docks(self) -> None:
        self.errors = ErrorsPanel()
        self.errors_dock = QDockWidget("Problems", self)
        self.errors_dock.setObjectName("problems")
        self.errors_dock.setWidget(self.errors)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.errors_dock)
        self.errors_dock.hide()
        self.errors.count_changed.connect(
            lambda count: self.errors_dock.setWindowTitle(f"Problems ({count})" if count else "Problems")
        )
        self.watch_panel = WatchPanel()
        self.watch_dock = QDockWidget("Watched folders", self)
        self.watch_dock.setObjectName("watched")
        self.watch_dock.setWidget(self.watch_panel)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.watch_dock)
        self.watch_dock.hide()
        self.watch_panel.folder_added.connect(self.add_watch_folder)
        self.watch_panel.folder_removed.connect(self.remove_watch_folder)
        self.watch_panel.auto_sort_changed.connect(self.set_auto_sort)
        self.watch_panel.target_changed.connect(self.set_sort_target)

    # --- model loading --------------------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        return (
            Path(self.settings.model_path).expanduser() if self.settings.model_path else default_model_dir()
        )

    def load_model(self) -> None:
        """(Re)load the bundle in a background thread; photos already shown are classified again."""
        if self._closed:
            return
        reloading = self.classifier is not None
        self._stop_classification(clear_queue=False)
        if self.classifier is not None:
            self.classifier.close()
            self.classifier = None
        if self._model_thread is not None:
            self._model_thread.stop_and_wait()
        if reloading:
            self._queue = [record.path for record in self.photos.records]
        self.engine_label.setText("Engine: loading model…")
        self.banner.hide()
        thread = ModelLoadThread(self.model_path, self.settings.engine, self.settings.batch_size, self)
        # A thread replaced by a newer load may still report; only the current one counts.
        thread.loaded.connect(lambda classifier, thread=thread: self._model_loaded(classifier, thread))
        thread.failed.connect(lambda message, thread=thread: self._model_failed(message, thread))
        self._model_thread = thread
        thread.start()

    def _model_loaded(self, classifier: Any, thread: ModelLoadThread) -> None:
        thread.wait()
        if thread is not self._model_thread:
            classifier.close()
            return
        self._model_thread = None
        self.classifier = classifier
        self.model_error = None
        labels = list(classifier.bundle.labels)
        self.engine_label.setText(f"Engine: {classifier.provider}")
        self.engine_label.setToolTip("\n".join(classifier.fallback_notes) or str(classifier.bundle.path))
        self.details.set_labels(labels)
        current = self.breed_filter.currentText()
        self.breed_filter.blockSignals(True)
        self.breed_filter.clear()
        self.breed_filter.addItems([ALL_BREEDS, UNSURE_TEXT, NOT_CAT_TEXT, *labels])
        self.breed_filter.setCurrentText(current if current in labels else ALL_BREEDS)
        self.breed_filter.blockSignals(False)
        self.statusBar().showMessage(
            f"Model loaded: {len(labels)} breeds from {classifier.bundle.path}", 5000
        )
        self.model_ready.emit(classifier.provider)
        self._start_classification()
        self._check_screenshot()

    def _model_failed(self, message: str, thread: ModelLoadThread) -> None:
        thread.wait()
        if thread is not self._model_thread:
            return
        self._model_thread = None
        self.model_error = message
        self.engine_label.setText("Engine: no model")
        self.banner.setText(
            f"<b>No model is loaded.</b> {html.escape(message)}<br>"
            "Train one with <code>python -m trainer</code> (it writes a bundle into the project's "
            "<code>models/</code> folder), or choose <b>File ▸ Open model bundle…</b> to use a bundle "
            "you already have. Photos can be added and browsed meanwhile."
        )
        self.banner.show()
        self.model_failed.emit(message)
        self._check_screenshot()

    # --- adding photos ----------------------------------------------------------------------------------

    def add_inputs(self, inputs: Iterable[str | Path], remember: bool = True) -> None:
        """Add files and folders (folders with sub-folders when the option is on); scanned off-thread."""
        paths = [Path(p).expanduser() for p in inputs]
        if not paths or self._closed:
            return
        if remember:
            for folder in (p for p in paths if p.is_dir()):
                self.settings.add_recent_folder(folder.resolve())
            self._rebuild_recent_menu()
            self._save_settings()
        thread = ScanThread(paths, self.settings.include_subfolders, self)
        thread.scanned.connect(self._scanned)
        thread.failed.connect(lambda message: self._report([(None, message)]))
        thread.finished.connect(lambda thread=thread: self._scan_done(thread))
        self._scan_threads.append(thread)
        thread.start()
        self.statusBar().showMessage("Looking for photos…")

    def _scanned(self, paths: list[Path]) -> None:
        new = self.photos.add_paths(paths)
        self.statusBar().showMessage(f"Added {len(new)} photos" if new else "No new photos found", 4000)
        self._queue.extend(new)
        self._start_classification()

    def _scan_done(self, thread: ScanThread) -> None:
        thread.wait()
        if thread in self._scan_threads:
            self._scan_threads.remove(thread)
        self._check_screenshot()

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add folder of photos")
        if folder:
            self.add_inputs([folder])

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self,
            "Add photos",
            "",
            "Photos (" + " ".join(f"*{suffix}" for suffix in sorted(PHOTO_SUFFIXES)) + ")",
        )
        if files:
            self.add_inputs(files)

    def choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open model bundle", str(self.model_path))
        if folder:
            self.settings.model_path = folder
            self._save_settings()
            self.load_model()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_inputs(paths)

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        for folder in self.settings.recent_folders:
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda checked=False, folder=folder: self.add_inputs([folder]))
        self.recent_menu.setEnabled(bool(self.settings.recent_folders))

    def clear_photos(self) -> None:
        self._stop_classification(clear_queue=True)
        self.photos.clear()
        self.details.show_record(None, self.photos.threshold)

    # --- classification ---------------------------------------------------------------------------------

    def _start_classification(self) -> None:
        if self.classifier is None or self._classify_thread is not None or not self._queue or self._closed:
            self._update_counts()
            return
        paths, self._queue = self._queue, []
        thread = ClassifyThread(self.classifier, paths, self)
        thread.results.connect(self._on_results)
        thread.progress.connect(self._on_progress)
        thread.finished.connect(lambda thread=thread: self._classification_done(thread))
        self._classify_thread = thread
        self.progress.setRange(0, len(paths))
        self.progress.setValue(0)
        self._set_busy(True, f"Classifying {len(paths)} photos…")
        self._view_refresh.start()
        thread.start()

    def _on_results(self, outcomes: list[Any]) -> None:
        from catbreed_desktop.core.classify import Failure

        failures = [o for o in outcomes if isinstance(o, Failure)]
        predictions = [o for o in outcomes if not isinstance(o, Failure)]
        changed = self.photos.apply_predictions(predictions)
        if failures:
            self.photos.remove_paths([f.path for f in failures])
            self._report([(f.path, f.reason) for f in failures])
        if self.settings.auto_sort and self.settings.sort_target:
            self._auto_sort_paths.extend(r.path for r in changed if r.from_watch)
        current = self.current_record()
        if current is not None and current in changed:
            self.details.show_record(current, self.photos.threshold)

    def _on_progress(self, done: int, total: int, rate: float) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.rate_label.setText(f"{done} / {total} · {rate:.1f} photos/s")

    def _classification_done(self, thread: ClassifyThread) -> None:
        thread.wait()
        if thread is not self._classify_thread:
            return  # stopped and replaced already (model reload, clear, exit)
        self._classify_thread = None
        self._view_refresh.stop()
        self.proxy.refresh()
        self._update_counts()
        if self._queue and not self._closed:
            self._start_classification()
            return
        self._set_busy(
            False, "Classification cancelled" if thread.should_stop() else "Classification finished"
        )
        self.classification_finished.emit()
        self._run_auto_sort()
        self._check_screenshot()

    def _stop_classification(self, clear_queue: bool) -> None:
        if clear_queue:
            self._queue.clear()
        thread = self._classify_thread
        if thread is not None:
            thread.results.disconnect(self._on_results)
            thread.stop_and_wait()
            # Photos of the stopped run that got no result wait for the next run.
            if not clear_queue:
                self._queue[:0] = [r.path for r in self.photos.records if r.prediction is None]
            self._classify_thread = None
            self._view_refresh.stop()
            self._set_busy(False, "Stopped")

    def cancel(self) -> None:
        """Stop what runs now: the classification (photos stay unclassified) or the sort (between files)."""
        if self._classify_thread is not None:
            self._queue.clear()
            self._classify_thread.stop()
            self.statusBar().showMessage("Cancelling…")
        if self._task_thread is not None:
            self._task_thread.stop()

    def is_busy(self) -> bool:
        """Whether anything is still running or waiting (tests and --screenshot wait on this)."""
        return bool(
            self._scan_threads
            or self._classify_thread is not None
            or self._task_thread is not None
            or self._model_thread is not None
            or (self._queue and self.classifier is not None)
        )

    # --- settings and look ----------------------------------------------------------------------------

    def open_settings(self) -> None:
        from catbreed_desktop.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.settings())

    def apply_settings(self, new: Settings) -> None:
        """Take new settings; the model is reloaded only when the model, engine or batch size changed."""
        old = self.settings
        reload = (new.model_path, new.engine, new.batch_size) != (old.model_path, old.engine, old.batch_size)
        self.settings = new
        self.grid.set_cell_size(self.delegate, new.thumbnail_size)
        self._save_settings()
        if reload:
            self.load_model()

    def _set_include_subfolders(self, enabled: bool) -> None:
        self.settings.include_subfolders = bool(enabled)
        self._save_settings()

    def _threshold_moved(self, value: int) -> None:
        threshold = value / 100
        self.threshold_label.setText(f"{value}%")
        if threshold != self.photos.threshold:
            self.photos.set_threshold(threshold)
            if self.proxy.breed == UNSURE_TEXT:
                self.proxy.refresh()
            self._show_current()
        self.settings.confidence_threshold = threshold
        self._update_counts()

    def set_threshold(self, threshold: float) -> None:
        self.threshold_slider.setValue(round(threshold * 100))

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings)
        except OSError as error:
            self.statusBar().showMessage(f"Could not save settings: {error}", 8000)

    def _set_busy(self, busy: bool, message: str | None) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.cancel_action.setEnabled(busy)
        self.rate_label.setVisible(busy)
        if message:
            self.statusBar().showMessage(message, 0 if busy else 5000)
        self._update_counts()

    def _update_counts(self) -> None:
        records = self.photos.records
        unsure = sum(1 for r in records if r.is_unsure(self.photos.threshold))
        reviewed = sum(1 for r in records if r.reviewed or r.corrected_label is not None)
        self.count_label.setText(f"{len(records)} photos · {unsure} unsure · {reviewed} reviewed")

    def _update_empty_hint(self, *args: Any) -> None:
        self.empty_hint.setVisible(self.photos.rowCount() == 0)
        self._update_counts()

    def _report(self, errors: list[tuple[Path | None, str]]) -> None:
        if errors:
            self.errors.add_errors(errors)
            if self.errors_dock.isHidden():
                self.errors_dock.show()
                self.resizeDocks([self.errors_dock], [130], Qt.Orientation.Vertical)

    # --- screenshot and exit ------------------------------------------------------------------------------

    def screenshot_when_done(self, path: Path) -> None:
        """Save a PNG of the window once every photo given is classified (see `app.main`)."""
        self._screenshot_path = Path(path)
        self._check_screenshot()

    def _check_screenshot(self) -> None:
        if self._screenshot_path is None or self.is_busy():
            return
        if self.classifier is None and self.model_error is None:
            return
        if self.photos.rowCount() and self.grid.currentIndex().isValid() is False:
            self.grid.setCurrentIndex(self.proxy.index(0, 0))
        self._screenshot_wait = 0
        QTimer.singleShot(200, self._take_screenshot)

    def _take_screenshot(self) -> None:
        if self._screenshot_path is None:
            return
        # Give the visible thumbnails a moment to arrive, so the picture shows photos, not boxes.
        self._screenshot_wait += 1
        if not self.loader.is_idle() and self._screenshot_wait < 50:
            QTimer.singleShot(100, self._take_screenshot)
            return
        path, self._screenshot_path = self._screenshot_path, None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.grab().save(str(path), "PNG")
        self.screenshot_saved.emit(str(path))

    def shutdown(self) -> None:
        """Stop and join every thread; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._view_refresh.stop()
        self.watcher.stop()
        for thread in [self._classify_thread, self._task_thread, self._model_thread, *self._scan_threads]:
            if thread is not None:
                thread.stop_and_wait()
        self._classify_thread = self._task_thread = self._model_thread = None
        self._scan_threads.clear()
        self.loader.shutdown()
        if self.classifier is not None:
            self.classifier.close()
            self.classifier = None
        self._save_settings()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
