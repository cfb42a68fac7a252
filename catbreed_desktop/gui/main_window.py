"""The main window: photo grid, details pane, panels, menus; it presents the core and commands it.

Every piece of real work is the core's (classify, plan_sort, execute_plan, undo_last_sort,
corrections export, folder watching), run in the background threads of `workers`; the window
keeps the photo model up to date from their results and records the person's review.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QStyle,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.imaging import PHOTO_SUFFIXES
from catbreed_desktop.core.paths import default_model_dir
from catbreed_desktop.core.settings import Settings, load_settings, save_settings
from catbreed_desktop.core.watching import FolderWatcher
from catbreed_desktop.gui.details import DetailsPane
from catbreed_desktop.gui.grid import PhotoDelegate, PhotoGrid
from catbreed_desktop.gui.panels import ErrorsPanel, WatchPanel
from catbreed_desktop.gui.photo_model import (
    ALL_BREEDS,
    NOT_CAT_TEXT,
    UNSURE_TEXT,
    PhotoFilterProxy,
    PhotoListModel,
    PhotoRecord,
)
from catbreed_desktop.gui.thumbnails import ThumbnailLoader
from catbreed_desktop.gui.workers import ClassifyThread, ModelLoadThread, ScanThread, TaskThread

APP_TITLE = "CatBreed"
# While a long run goes on, the sorted and filtered view catches up at most this often.
VIEW_REFRESH_MS = 1500


class MainWindow(QMainWindow):
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

    def _action(
        self, text: str, slot: Callable, shortcut: Any = None, icon: Any = None, tip: str = ""
    ) -> QAction:
        action = QAction(text, self)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda checked=False: slot())
        return action

    def _build_actions(self) -> None:
        pixmap = QStyle.StandardPixmap
        self.add_folder_action = self._action(
            "Add &folder…", self.choose_folder, QKeySequence.StandardKey.Open, pixmap.SP_DirOpenIcon,
            "Add every photo of a folder",
        )  # fmt: skip
        self.add_files_action = self._action(
            "Add &photos…", self.choose_files, "Ctrl+Shift+O", pixmap.SP_FileIcon, "Add photo files"
        )
        self.subfolders_action = QAction("Include sub&folders", self, checkable=True)
        self.subfolders_action.setChecked(self.settings.include_subfolders)
        self.subfolders_action.toggled.connect(self._set_include_subfolders)
        self.open_model_action = self._action(
            "Open &model bundle…", self.choose_model, None, pixmap.SP_DriveHDIcon, "Use another model bundle"
        )
        self.sort_action = self._action(
            "&Sort into folders…", self.open_sort_dialog, "Ctrl+S", pixmap.SP_DialogApplyButton,
            "Move or copy the photos into one folder per breed, after a preview",
        )  # fmt: skip
        self.undo_action = self._action(
            "&Undo last sort", self.undo_last_sort, QKeySequence.StandardKey.Undo, pixmap.SP_ArrowBack,
            "Put the photos of the last sort back where they were",
        )  # fmt: skip
        self.cancel_action = self._action(
            "&Cancel", self.cancel, "Esc", pixmap.SP_BrowserStop, "Stop classifying or sorting"
        )
        self.cancel_action.setEnabled(False)
        self.export_csv_action = self._action("Export corrections as &CSV…", self.choose_csv_export)
        self.export_folders_action = self._action(
            "Export corrections as &folders…", self.choose_folder_export
        )
        self.settings_action = self._action(
            "Se&ttings…",
            self.open_settings,
            QKeySequence.StandardKey.Preferences,
            pixmap.SP_FileDialogDetailedView,
        )
        self.clear_action = self._action(
            "C&lear photos", self.clear_photos, None, pixmap.SP_DialogResetButton
        )
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.watch_action = self.watch_dock.toggleViewAction()
        self.watch_action.setIcon(self.style().standardIcon(pixmap.SP_FileDialogContentsView))
        self.watch_action.setText("&Watched folders")
        self.problems_action = self.errors_dock.toggleViewAction()
        self.problems_action.setIcon(self.style().standardIcon(pixmap.SP_MessageBoxWarning))

        menu = self.menuBar().addMenu("&File")
        menu.addActions([self.add_folder_action, self.add_files_action])
        self.recent_menu = menu.addMenu("&Recent folders")
        menu.addAction(self.subfolders_action)
        menu.addSeparator()
        menu.addActions([self.open_model_action, self.export_csv_action, self.export_folders_action])
        menu.addSeparator()
        menu.addActions([self.clear_action, self.quit_action])
        edit = self.menuBar().addMenu("&Edit")
        edit.addActions([self.undo_action, self.sort_action, self.cancel_action])
        edit.addSeparator()
        edit.addAction(self.settings_action)
        view = self.menuBar().addMenu("&View")
        view.addActions([self.watch_action, self.problems_action])
        self._rebuild_recent_menu()

        toolbar = QToolBar("Main", self)
        toolbar.setObjectName("main-toolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.setMovable(False)
        toolbar.addActions([self.add_folder_action, self.add_files_action])
        self.subfolders_box = QCheckBox("Include subfolders")
        self.subfolders_box.setChecked(self.settings.include_subfolders)
        self.subfolders_box.toggled.connect(self.subfolders_action.setChecked)
        self.subfolders_action.toggled.connect(self.subfolders_box.setChecked)
        toolbar.addWidget(self.subfolders_box)
        toolbar.addSeparator()
        toolbar.addActions([self.sort_action, self.undo_action, self.cancel_action])
        toolbar.addSeparator()
        toolbar.addActions([self.watch_action, self.settings_action])
        self.addToolBar(toolbar)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(240)
        self.progress.hide()
        self.rate_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.count_label = QLabel()
        self.engine_label = QLabel("Engine: loading model…")
        bar.addPermanentWidget(self.rate_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.count_label)
        bar.addPermanentWidget(self.engine_label)

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

    # --- review -----------------------------------------------------------------------------------------

    def current_record(self) -> PhotoRecord | None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return None
        return self.photos.record(self.proxy.mapToSource(index).row())

    def _selected_rows(self) -> list[int]:
        indexes = self.grid.selectionModel().selectedIndexes()
        if not indexes and self.grid.currentIndex().isValid():
            indexes = [self.grid.currentIndex()]
        return sorted({self.proxy.mapToSource(index).row() for index in indexes})

    def select_path(self, path: Path) -> None:
        row = self.photos.row_of(path)
        if row is None:
            return
        index = self.proxy.mapFromSource(self.photos.index(row))
        self.grid.setCurrentIndex(index)
        self.grid.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)

    def set_label(self, label: str, rows: Sequence[int] | None = None) -> None:
        """Record the person's breed for the selected photos (or `rows`); sorting will use it."""
        for row in rows if rows is not None else self._selected_rows():
            if self.photos.record(row).classified:
                self.photos.set_label(row, label)
        self._show_current()

    def choose_top_label(self, rank: int) -> None:
        """Number keys: give the current photo the model's breed of that rank."""
        record = self.current_record()
        if record is None or record.prediction is None or rank >= len(record.prediction.top):
            return
        self.set_label(record.prediction.top[rank][0])

    def confirm_selection(self) -> None:
        """Enter: the shown breed is right; move on to the next photo."""
        rows = self._selected_rows()
        for row in rows:
            record = self.photos.record(row)
            if record.classified:
                self.photos.set_label(row, record.label)
        self._move_current(1)

    def clear_correction(self) -> None:
        for row in self._selected_rows():
            self.photos.set_label(row, None, reviewed=False)
        self._show_current()

    def _label_typed(self, label: str) -> None:
        self.set_label(label)
        self.grid.setFocus()
        self._move_current(1)

    def _move_current(self, step: int) -> None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return
        following = self.proxy.index(index.row() + step, 0)
        if following.isValid():
            self.grid.setCurrentIndex(following)
        self._show_current()

    def _focus_breed_box(self) -> None:
        self.details.breed_box.setFocus()
        self.details.breed_box.lineEdit().selectAll()

    def _show_current(self, *args: Any) -> None:
        self.details.show_record(self.current_record(), self.photos.threshold)

    def corrections(self) -> list[Any]:
        """Every photo the person corrected or confirmed, with its label."""
        from catbreed_desktop.core.corrections import Correction

        return [
            Correction(r.path, r.label)
            for r in self.photos.records
            if (r.reviewed or r.corrected_label is not None) and r.label is not None
        ]

    def choose_csv_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export corrections as CSV", "corrections.csv", "CSV (*.csv)"
        )
        if path:
            self.export_corrections_csv(Path(path))

    def export_corrections_csv(self, path: Path) -> None:
        from catbreed_desktop.core.corrections import export_corrections_csv

        try:
            count = export_corrections_csv(self.corrections(), path)
        except OSError as error:
            QMessageBox.warning(self, APP_TITLE, f"Could not write {path}: {error}")
            return
        self.statusBar().showMessage(
            f"Wrote {count} reviewed labels to {path} (use: python -m trainer prepare --data {path})", 8000
        )

    def choose_folder_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export corrections into folder")
        if folder:
            self.export_corrections_folders(Path(folder))

    def export_corrections_folders(self, folder: Path) -> None:
        from catbreed_desktop.core.corrections import export_corrections_folders

        corrections = self.corrections()
        self._run_task(
            "export",
            f"Copying {len(corrections)} reviewed photos…",
            lambda progress, stop: export_corrections_folders(corrections, folder, progress),
            self._export_done,
        )

    def _export_done(self, result: Any) -> None:
        self._report([(path, reason) for path, reason in result.failed])
        self.statusBar().showMessage(
            f"Exported {len(result.copied)} photos; {len(result.skipped_duplicates)} were already there", 8000
        )

    # --- sorting ----------------------------------------------------------------------------------------

    def sort_items(self) -> list[Any]:
        """What sorting gets: each classified photo with the reviewed label when there is one."""
        from catbreed_desktop.core.sorting import SortItem

        return [SortItem(r.path, r.label, r.confidence, r.is_cat) for r in self.photos.records if r.label]

    def make_sort_dialog(self) -> Any:
        from catbreed_desktop.gui.sort_dialog import SortDialog

        return SortDialog(
            self.sort_items(), self.settings.sort_target, self.settings.sort_mode, self.photos.threshold, self
        )

    def open_sort_dialog(self) -> None:
        if self._task_thread is not None:
            self.statusBar().showMessage("Wait for the running sort to finish first", 4000)
            return
        dialog = self.make_sort_dialog()
        if dialog.exec() and dialog.plan() is not None:
            self.settings.sort_target = dialog.target
            self.settings.sort_mode = dialog.mode
            self._save_settings()
            self.start_sort(dialog.plan())

    def start_sort(self, plan: Any) -> None:
        """Execute a previewed plan in the background; the grid follows the moved files."""
        from catbreed_desktop.core.sorting import execute_plan

        self._ignore_target(plan.target)
        self._run_task(
            "sort",
            f"Sorting {len(plan.operations)} photos…",
            lambda progress, stop: execute_plan(plan, progress, stop),
            self._sort_done,
        )

    def _sort_done(self, result: Any) -> None:
        moves = [(op.source, op.destination) for op in result.done if op.action == "move"]
        self.photos.move_paths(moves)
        self._report([(op.source, reason) for op, reason in result.failed])
        stopped = " (stopped)" if result.stopped else ""
        self.statusBar().showMessage(
            f"Sorted {len(result.done)} photos{stopped}; {len(result.duplicates)} were already there; "
            f"{len(result.failed)} could not be sorted. Edit ▸ Undo last sort puts them back.",
            10000,
        )
        self._show_current()

    def undo_last_sort(self) -> None:
        watcher = self.watcher
        self._run_task(
            "undo", "Undoing the last sort…", lambda p, s: _undo_with_moves(watcher, p), self._undo_done
        )

    def _undo_done(self, outcome: tuple[Any, list[tuple[Path, Path]]]) -> None:
        result, moves = outcome
        self.photos.move_paths(moves)
        self._report([(None, problem) for problem in result.problems])
        self.statusBar().showMessage(
            f"Undone: {result.restored} photos put back, {result.removed_copies} copies removed", 10000
        )
        self._show_current()

    def _run_task(self, kind: str, message: str, task: Callable, on_done: Callable[[Any], None]) -> bool:
        if self._task_thread is not None or self._closed:
            self.statusBar().showMessage("Another sort is still running; try again when it ends", 4000)
            return False
        thread = TaskThread(task, self)
        thread.progress.connect(self._on_task_progress)
        thread.finished_with.connect(on_done)
        thread.failed.connect(lambda text: self._task_failed(kind, text))
        thread.finished.connect(self._task_done)
        self._task_thread, self._task_kind = thread, kind
        self._set_busy(True, message)
        thread.start()
        return True

    def _on_task_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.rate_label.setText(f"{done} / {total}")

    def _task_failed(self, kind: str, message: str) -> None:
        self.statusBar().showMessage(message, 10000)
        self._report([(None, f"{kind}: {message}")])

    def _task_done(self) -> None:
        thread, kind = self._task_thread, self._task_kind
        if thread is not None:
            thread.wait()
        self._task_thread = None
        self._set_busy(self._classify_thread is not None, None)
        self.task_finished.emit(kind)
        self._run_auto_sort()

    def _run_auto_sort(self) -> None:
        """Sort photos that came from watched folders, once classified, when auto-sort is on."""
        if not (self.settings.auto_sort and self.settings.sort_target) or self._task_thread is not None:
            return
        rows = [self.photos.row_of(path) for path in self._auto_sort_paths]
        records = [self.photos.record(row) for row in rows if row is not None]
        records = [r for r in records if r.label is not None]
        if not records:
            return
        self._auto_sort_paths = []
        from catbreed_desktop.core.sorting import SortItem, execute_plan, plan_sort

        items = [SortItem(r.path, r.label, r.confidence, r.is_cat) for r in records]
        target, mode, threshold = (
            Path(self.settings.sort_target),
            self.settings.sort_mode,
            self.photos.threshold,
        )
        self._ignore_target(target)
        self._run_task(
            "sort",
            f"Sorting {len(items)} new photos…",
            lambda progress, stop: execute_plan(plan_sort(items, target, mode, threshold), progress, stop),
            self._sort_done,
        )

    # --- watching ---------------------------------------------------------------------------------------

    def _restore_watching(self) -> None:
        folders = []
        for folder in self.settings.watched_folders:
            try:
                folders.append(str(self.watcher.add_folder(folder)))
            except NotADirectoryError as error:
                self._report([(None, f"{error}; it is no longer watched")])
        self.settings.watched_folders = folders
        self._ignore_target(self.settings.sort_target)
        self.watcher.start()
        self._show_watch_state()
        if folders:
            self.watch_dock.show()

    def add_watch_folder(self, folder: str | Path) -> None:
        try:
            path = self.watcher.add_folder(folder)
        except NotADirectoryError as error:
            QMessageBox.warning(self, APP_TITLE, str(error))
            return
        if str(path) not in self.settings.watched_folders:
            self.settings.watched_folders.append(str(path))
        self._save_settings()
        self._show_watch_state()
        self.watch_dock.show()

    def remove_watch_folder(self, folder: str | Path) -> None:
        self.watcher.remove_folder(folder)
        self.settings.watched_folders = [f for f in self.settings.watched_folders if f != str(folder)]
        self._save_settings()
        self._show_watch_state()

    def set_auto_sort(self, enabled: bool) -> None:
        self.settings.auto_sort = bool(enabled)
        self._save_settings()
        self._show_watch_state()

    def set_sort_target(self, target: str) -> None:
        self.settings.sort_target = str(target)
        self._ignore_target(target)
        self._save_settings()
        self._show_watch_state()

    def _ignore_target(self, target: str | Path) -> None:
        if target:
            self.watcher.set_ignored_folders([target])

    def _show_watch_state(self) -> None:
        self.watch_panel.show_state(
            self.settings.watched_folders, self.settings.auto_sort, self.settings.sort_target
        )

    def _on_watched_photos(self, paths: list[Path]) -> None:
        if self._closed:
            return
        new = self.photos.add_paths(paths, from_watch=True)
        if new:
            self.statusBar().showMessage(f"{len(new)} new photos in watched folders", 4000)
        self._queue.extend(new)
        self._start_classification()

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


def _undo_with_moves(watcher: FolderWatcher, progress: Callable[[int, int], None]) -> tuple[Any, list]:
    """Undo the last sort; also say which moved photos went back where, for the grid to follow.

    The photos about to come back are announced to the watcher first, so their return into a
    watched folder is not taken for new photos.
    """
    from catbreed_desktop.core.sorting import moves_to_undo, undo_last_sort

    moved = moves_to_undo()
    watcher.expect(source for _, source in moved)
    result = undo_last_sort(progress)
    back = [
        (destination, source) for destination, source in moved if source.exists() and not destination.exists()
    ]
    return result, back
