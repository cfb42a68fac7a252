"""The main window: it builds the widgets, creates the controllers and wires their signals together.

The work lives in objects that own it: `ClassifyController` (model, photos found, classification),
`SortController` (sort, undo, export, auto-sort), `WatchController` (watched folders) and
`ReviewController` (selection and labels), with background work run by the one `TaskRunner`.
The window shows what they report (status bar, banner, Problems list, panels), turns the
person's gestures into their calls, and holds the settings they share.

The unsure threshold is the person's when they chose one (`Settings.confidence_threshold`), else
the loaded bundle's recommendation: a model loaded, or settings applied, bring the slider to it
without making it the person's choice; only their own moves of the slider do that.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QPushButton

from catbreed_desktop.core.corrections import export_corrections_csv
from catbreed_desktop.core.errors import error_line
from catbreed_desktop.core.paths import default_model_dir
from catbreed_desktop.core.photos import PHOTO_SUFFIXES
from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.core.settings import Settings, SettingsError, read_settings, save_settings
from catbreed_desktop.core.sorting import SortPlan, UndoPreview
from catbreed_desktop.core.sorting.plan import SortMode
from catbreed_desktop.gui import APP_TITLE
from catbreed_desktop.gui.actions import ActionSlots, build_actions, build_menus, build_toolbar
from catbreed_desktop.gui.classify_controller import ClassifyController, ModelInfo, PhotoClassifier
from catbreed_desktop.gui.error_log import log_path
from catbreed_desktop.gui.layout import WindowWidgets, build_widgets
from catbreed_desktop.gui.personal_controller import PersonalController
from catbreed_desktop.gui.photo_model import (
    SHOW_ALL,
    SHOW_UNSURE,
    SPECIAL_FILTERS,
    PhotoFilterProxy,
    PhotoListModel,
    filter_counts,
    show_breed,
)
from catbreed_desktop.gui.review_controller import ReviewController
from catbreed_desktop.gui.settings_dialog import SettingsDialog
from catbreed_desktop.gui.sort_controller import (
    SortController,
    SortPreview,
    personal_answers,
    preview_sort,
    sort_items,
)
from catbreed_desktop.gui.sort_dialog import SortDialog
from catbreed_desktop.gui.status_bar import StatusWidgets
from catbreed_desktop.gui.tasks import TaskRunner
from catbreed_desktop.gui.threshold import (
    SLIDER_SCALE,
    UnsureThreshold,
    bundle_threshold,
    describe,
    effective_threshold,
    percent,
)
from catbreed_desktop.gui.thumbnails import ThumbnailLoader
from catbreed_desktop.gui.undo_keys import SortUndoKeys
from catbreed_desktop.gui.watch_controller import WatchController

# While a long run goes on, the sorted and filtered view catches up at most this often.
VIEW_REFRESH_MS = 1500
DEFAULT_SIZE = (1200, 800)


class MainWindow(QMainWindow):
    """The CatBreed window. `settings` default to the saved ones; `model_path` overrides the bundle."""

    screenshot_saved = Signal(str)

    def __init__(
        self,
        settings: Settings | None = None,
        model_path: Path | None = None,
        settings_problem: str | None = None,
    ) -> None:
        """`settings_problem`: what went wrong reading the settings, shown once the window is up."""
        super().__init__()
        if settings is None:
            loaded = read_settings()
            settings, settings_problem = loaded.settings, loaded.problem
        self.settings = settings
        if model_path is not None:
            self.settings.model_path = str(model_path)
        self._screenshot_path: Path | None = None
        self._screenshot_wait = 0
        self._closed = False
        self.setWindowTitle(APP_TITLE)
        self.resize(*DEFAULT_SIZE)
        self.setAcceptDrops(True)

        self.runner = TaskRunner(self)
        self.photos = PhotoListModel(self)
        # What the bundle recommends (read before it loads: the slider starts there); the threshold
        # in use is `self.threshold`.
        self.recommended_threshold = bundle_threshold(self.model_folder())
        self.threshold = effective_threshold(self.settings.confidence_threshold, self.recommended_threshold)
        self.photos.threshold = self.threshold.value
        self.proxy = PhotoFilterProxy(self)
        self.proxy.setSourceModel(self.photos)
        self.loader = ThumbnailLoader(self)
        self.ui: WindowWidgets = build_widgets(self, self.settings, self.photos, self.proxy, self.loader)
        ui = self.ui
        # The widgets the controllers and tests talk to most, by their short names.
        self.grid, self.details, self.errors = ui.grid, ui.details, ui.errors
        self.watch_panel, self.watch_dock, self.errors_dock = ui.watch_panel, ui.watch_dock, ui.errors_dock
        self.status = StatusWidgets(self.statusBar(), self.photos)

        self.classify = ClassifyController(self.photos, self.runner, parent=self)
        self.watching = WatchController(self.settings, parent=self)
        self.sorting = SortController(
            self.photos,
            self.runner,
            self.settings,
            confirm_undo=lambda preview: self.ask_to_undo(preview),
            expect_returning=self.watching.expect,
            ignore_target=self.watching.ignore_target,
            parent=self,
        )
        self.review = ReviewController(self.photos, self.proxy, self.grid, self.details, parent=self)
        self.personal = PersonalController(
            self.photos, self.runner, self.settings.learn_from_corrections, parent=self
        )
        # "Adapted to N of your corrections", and the offer to review the photos like a corrected one.
        self.personal_label = QLabel()
        self.similar_button = QPushButton()
        self.similar_button.hide()
        self._similar: list[Path] = []
        self.statusBar().addPermanentWidget(self.similar_button)
        self.statusBar().addPermanentWidget(self.personal_label)
        self.commands = build_actions(
            self,
            ActionSlots(
                add_folder=self.choose_folder,
                add_files=self.choose_files,
                set_include_subfolders=self._set_include_subfolders,
                open_model=self.choose_model,
                sort=self.open_sort_dialog,
                undo=self.undo_last_sort,
                classify_again=self.classify.classify_again,
                cancel=self.cancel,
                export_csv=self.choose_csv_export,
                export_folders=self.choose_folder_export,
                settings=self.open_settings,
                clear=self.clear_photos,
                quit=self.close,
            ),
            self.settings.include_subfolders,
            ui.watch_dock,
            ui.errors_dock,
        )
        self.recent_menu = build_menus(self, self.commands)
        self.subfolders_box = build_toolbar(self, self.commands)
        self.undo_keys = SortUndoKeys(self)  # Ctrl+Z reaches the sort from the text fields too
        self._use_threshold(self.threshold)
        self._view_refresh = QTimer(self, interval=VIEW_REFRESH_MS)
        self._view_refresh.timeout.connect(self.proxy.refresh)
        self._wire()
        self._update_actions()
        self._rebuild_recent_menu()
        self.watching.start()
        if self.settings.watched_folders:
            ui.watch_dock.show()
        self.sorting.refresh_undo_state()
        if settings_problem:
            self.show_message(settings_problem, 0)
            self.report([(None, settings_problem)])
        QTimer.singleShot(0, self.load_model)

    # --- wiring ----------------------------------------------------------------------------------

    def _wire(self) -> None:
        ui, review = self.ui, self.review
        classify, sorting, watching = self.classify, self.sorting, self.watching
        ui.breed_filter.currentIndexChanged.connect(
            lambda _row: self.proxy.set_breed_filter(ui.breed_filter.current_key())
        )
        ui.sort_order.currentTextChanged.connect(self.proxy.set_sort_key)
        ui.search.textChanged.connect(self.proxy.set_search)
        ui.threshold_slider.valueChanged.connect(self._threshold_moved)
        self.grid.selectionModel().currentChanged.connect(review.show_current)
        self.grid.rank_chosen.connect(review.choose_top_label)
        self.grid.confirmed.connect(review.confirm_selection)
        self.grid.correction_cleared.connect(review.clear_correction)
        self.details.label_chosen.connect(review.label_typed)
        self.details.correction_cleared.connect(review.clear_correction)
        QShortcut(QKeySequence("Ctrl+L"), self).activated.connect(review.focus_breed_box)
        self.loader.ready.connect(lambda path, size: self.photos.refresh_path(Path(path)))
        for signal in (self.photos.rowsInserted, self.photos.rowsRemoved, self.photos.modelReset):
            signal.connect(self._photos_changed)
        self.status.counts_changed.connect(lambda counts: self._counts_changed())
        self.status.cancel_button.clicked.connect(self.cancel)

        classify.model_loading.connect(self._model_loading)
        classify.model_ready.connect(self._model_ready)
        classify.model_failed.connect(self._model_failed)
        classify.running_changed.connect(self._classification_running)
        classify.progress.connect(self.status.show_progress)
        classify.classified.connect(
            self.personal.model_results
        )  # first: the details show the adjusted answer
        classify.classified.connect(self._classified)
        classify.finished.connect(lambda stopped: self._work_ended())
        classify.message.connect(self.show_message)
        classify.problems.connect(self.report)

        review.labels_changed.connect(self.personal.corrected)
        self.personal.changed.connect(self._personal_changed)
        self.personal.similar_found.connect(self._offer_similar)
        self.personal.warning.connect(lambda text: self.report([(None, text)]))
        self.similar_button.clicked.connect(self.select_similar)

        sorting.message.connect(self.show_message)
        sorting.problems.connect(self.report)
        sorting.undo_available.connect(lambda available: self._update_actions())
        sorting.undo_available.connect(self.undo_keys.sort_undo_changed)
        sorting.photos_moved.connect(review.show_current)

        watching.photos_arrived.connect(lambda paths: classify.add_found(paths, from_watch=True))
        watching.photos_arrived.connect(sorting.photos_arrived)
        watching.state_changed.connect(lambda state: self.watch_panel.show_state(state, watching.describe()))
        watching.problems.connect(self.report)
        watching.settings_changed.connect(self.save_settings)
        self.watch_panel.folder_added.connect(self._watch_folder)
        self.watch_panel.folder_removed.connect(watching.remove_folder)
        self.watch_panel.auto_sort_changed.connect(watching.set_auto_sort)
        self.watch_panel.target_changed.connect(watching.set_target)
        self.watch_panel.mode_changed.connect(watching.set_mode)

        self.runner.started.connect(self._task_started)
        self.runner.progress.connect(self._task_progress)
        self.runner.failed.connect(self._task_failed)
        self.runner.finished.connect(self._task_finished)

    # --- what the controllers report ---------------------------------------------------------------

    @property
    def classifier(self) -> PhotoClassifier | None:
        """The classifier in use, or None while there is none (for scripts and benchmarks)."""
        return self.classify.classifier

    @property
    def model_error(self) -> str | None:
        return self.classify.model_error

    @property
    def classification_finished(self) -> Any:
        """The signal emitted when the photos waiting for classification are done (or cancelled)."""
        return self.classify.finished

    def show_message(self, text: str, milliseconds: int = 8000) -> None:
        self.statusBar().showMessage(text, milliseconds)

    def report(self, problems: list[tuple[Path | None, str]]) -> None:
        """Add problems to the Problems list, showing it when it was hidden."""
        if not problems:
            return
        self.errors.add_errors(problems)
        appears = self.ui.errors_dock.isHidden()
        self.ui.errors_dock.show()
        # Once the dock has laid out its new rows: its size hint lags until then.
        QTimer.singleShot(0, lambda: self._fit_problems(appears))

    def _fit_problems(self, appears: bool) -> None:
        """The Problems dock as tall as its rows (a few at most), so the grid keeps its room.

        While shown, it grows with new rows but is never shrunk below the height the person gave it.
        """
        dock = self.ui.errors_dock
        wanted = dock.sizeHint().height()
        if dock.isVisible() and (appears or dock.height() < wanted):
            self.resizeDocks([dock], [wanted], Qt.Orientation.Vertical)

    def _model_loading(self) -> None:
        self.status.engine_label.setText("Engine: loading model…")
        self.ui.banner.hide()
        self._update_actions()

    def _model_ready(self, info: ModelInfo) -> None:
        labels = list(info.labels)
        self.status.engine_label.setText(f"Engine: {info.provider}")
        self.status.engine_label.setToolTip("\n".join(info.notes) or printable(info.path))
        self.details.set_labels(labels)
        box = self.ui.breed_filter
        box.set_items(labels, [(choice.text, choice) for choice in SPECIAL_FILTERS], key=show_breed)
        if box.current_key() != self.proxy.breed_filter:  # that breed is not in the new model
            box.choose(SHOW_ALL)
            self.proxy.set_breed_filter(SHOW_ALL)
        self._update_filter_counts()
        if self.classify.classifier is not None:
            self.personal.set_bundle(self.classify.classifier.bundle)
        self.recommended_threshold = UnsureThreshold(info.min_confidence, info.min_confidence_source)
        self._apply_threshold_setting()
        self._update_actions()
        self._check_screenshot()

    def _personal_changed(self, text: str) -> None:
        self.personal_label.setText(text)
        current = self.review.current_record()
        if current is not None:
            self.review.show_current()

    def _offer_similar(self, paths: list[Path], label: str) -> None:
        self._similar = list(paths)
        self.similar_button.setText(f"Review {plural(len(paths), 'similar photo')} as {label}…")
        self.similar_button.setToolTip(
            "Select the photos most like the one you just corrected; a key or Ctrl+L labels them all"
        )
        self.similar_button.show()

    def select_similar(self) -> None:
        """Select the photos like the last corrected one, for the person to check and label."""
        self.similar_button.hide()
        self.review.select_paths([p for p in self._similar if p in self.photos])
        self._similar = []

    def forget_corrections(self) -> None:
        answer = QMessageBox.question(
            self,
            "Forget your corrections",
            "Forget every correction kept for this model? The photos get the model's own answers back. "
            "Labels you set in this window stay.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            gone = self.personal.forget_all()
            if gone is None:  # the store is still being read
                self.show_message("Your corrections will be forgotten as soon as they are loaded")
            else:
                self.show_message(f"Forgot {plural(gone, 'correction')}")

    def _model_failed(self, message: str) -> None:
        self.status.engine_label.setText("Engine: no model")
        self.ui.banner.setText(
            f"<b>No model is loaded.</b> {html.escape(message)}<br>"
            "Train one with <code>python -m trainer</code> (it writes a bundle into the project's "
            "<code>models/</code> folder), or choose <b>File ▸ Open model bundle…</b> to use a bundle "
            "you already have. Photos can be added and browsed meanwhile."
        )
        self.ui.banner.show()
        self._update_actions()
        self._check_screenshot()

    def _classification_running(self, running: bool) -> None:
        if running:
            self._view_refresh.start()
        else:
            self._view_refresh.stop()
            self.proxy.refresh()
        self._show_busy()

    def _classified(self, records: list[Any]) -> None:
        current = self.review.current_record()
        if current is not None and current in records:
            self.review.show_current()

    def _task_started(self, kind: str) -> None:
        self._show_busy()

    def _task_progress(self, kind: str, done: int, total: int) -> None:
        if kind in ("sort", "undo", "export"):
            self.status.show_progress(done, total)

    def _task_failed(self, kind: str, reason: str, logged: bool) -> None:
        text = f"The {kind} failed: {reason}"
        self.show_message(f"{text} (details in {printable(log_path())})" if logged else text, 15000)
        self.report([(None, text)])

    def _task_finished(self, kind: str) -> None:
        self._show_busy()
        self._work_ended()

    def _show_busy(self) -> None:
        busy = self.runner.is_busy("classification") or self.runner.is_busy("files")
        self.status.show_busy(busy)
        self._update_actions()

    def _work_ended(self) -> None:
        self._update_actions()
        self._check_screenshot()

    def _counts_changed(self) -> None:
        self._update_filter_counts()
        self._update_actions()

    def _update_filter_counts(self) -> None:
        self.ui.breed_filter.set_counts(filter_counts(self.photos.records, self.photos.threshold))

    def _photos_changed(self, *args: Any) -> None:
        self.ui.empty_hint.setVisible(self.photos.rowCount() == 0)
        self._update_actions()

    def _update_actions(self) -> None:
        files_busy = self.runner.is_busy("files")
        running = self.runner.is_busy("classification")
        self.commands.cancel.setEnabled(running or files_busy)
        self.commands.undo.setEnabled(self.sorting.can_undo and not files_busy)
        self.commands.sort.setEnabled(self.status.counts.classified > 0)  # else there is nothing to sort
        self.commands.classify_again.setEnabled(
            self.classifier is not None and not running and self.status.counts.not_classified > 0
        )

    # --- the person's gestures ---------------------------------------------------------------------

    def load_model(self) -> None:
        """(Re)load the model the settings name, in the background."""
        self.classify.load_model(
            self.model_folder(), self.settings.engine, self.settings.batch_size, self.settings.triton_server
        )

    def model_folder(self) -> Path:
        """The bundle the settings name, or the default one."""
        return (
            Path(self.settings.model_path).expanduser() if self.settings.model_path else default_model_dir()
        )

    def add_inputs(self, inputs: Iterable[str | Path], remember: bool = True) -> None:
        """Add files and folders (with sub-folders when the option is on); scanned off-thread."""
        paths = [Path(p).expanduser() for p in inputs]
        if not paths or self._closed:
            return
        if remember:
            for folder in (p for p in paths if p.is_dir()):
                self.settings.add_recent_folder(folder.resolve())
            self._rebuild_recent_menu()
            self.save_settings()
        self.classify.add_inputs(paths, self.settings.include_subfolders)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add folder of photos")
        if folder:
            self.add_inputs([folder])

    def choose_files(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in sorted(PHOTO_SUFFIXES))
        files, _ = QFileDialog.getOpenFileNames(self, "Add photos", "", f"Photos ({patterns})")
        if files:
            self.add_inputs(files)

    def choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open model bundle", self.settings.model_path)
        if folder:
            self.settings.model_path = folder
            self.save_settings()
            self.load_model()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
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
        self.classify.clear()
        self.details.show_record(None, self.photos.threshold)

    def cancel(self) -> None:
        """Stop what runs: the classification (photos stay, not classified) and the sort (between files)."""
        self.classify.cancel()
        self.runner.stop("files")

    def is_busy(self) -> bool:
        """Whether anything is still running or waiting (tests and --screenshot wait on this)."""
        return self.classify.is_busy() or self.sorting.is_busy() or self.personal.is_busy()

    def _watch_folder(self, folder: str) -> None:
        error = self.watching.add_folder(folder)
        if error is not None:
            QMessageBox.warning(self, APP_TITLE, error)
        else:
            self.ui.watch_dock.show()

    # --- sorting and undo ----------------------------------------------------------------------------

    def make_sort_dialog(self) -> SortDialog:
        items = sort_items(self.photos.records)
        sources, labels = list(self.classify.sources), self.classify.labels
        personal = personal_answers(self.photos.records)

        def planner(target: Path, mode: SortMode, threshold: float) -> SortPreview:
            return preview_sort(items, sources, target, mode, threshold, labels, personal)

        return SortDialog(
            len(items),
            planner,
            self.settings.sort_target,
            self.settings.sort_mode,
            self.threshold.value,
            self,
            threshold_note=describe(self.threshold, self.recommended_threshold),
        )

    def open_sort_dialog(self) -> None:
        if self.runner.is_busy("files"):
            self.show_message("Wait for the sort, undo or export that is running to finish first", 4000)
            return
        dialog = self.make_sort_dialog()
        preview = dialog.preview() if dialog.exec() else None
        if preview is not None:
            self.settings.sort_target = dialog.target
            self.settings.sort_mode = dialog.mode
            self.save_settings()
            self.sorting.start_sort(preview.plan, len(preview.left_out))

    def start_sort(self, plan: SortPlan, left_out: int = 0) -> bool:
        """Execute a previewed plan in the background."""
        return self.sorting.start_sort(plan, left_out)

    def undo_last_sort(self) -> None:
        self.sorting.undo_last_sort()

    def make_undo_question(self, preview: UndoPreview) -> QMessageBox:
        """The confirmation shown before an undo, saying what will happen to which files."""
        question = QMessageBox(
            QMessageBox.Icon.Question,
            "Undo last sort",
            preview.describe(),
            QMessageBox.StandardButton.Cancel,
            self,
        )
        question.addButton("Undo sort", QMessageBox.ButtonRole.AcceptRole)
        question.setDefaultButton(QMessageBox.StandardButton.Cancel)  # Enter must not undo by accident
        return question

    def ask_to_undo(self, preview: UndoPreview) -> bool:
        question = self.make_undo_question(preview)
        question.exec()
        return question.buttonRole(question.clickedButton()) == QMessageBox.ButtonRole.AcceptRole

    # --- corrections export --------------------------------------------------------------------------

    def choose_csv_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export corrections as CSV", "corrections.csv", "CSV (*.csv)"
        )
        if path:
            self.export_corrections_csv(Path(path))

    def export_corrections_csv(self, path: Path) -> None:
        try:
            count = export_corrections_csv(self.review.corrections(), path)
        except OSError as error:
            QMessageBox.warning(self, APP_TITLE, f"Could not write {printable(path)}: {error}")
            return
        self.show_message(
            f"Wrote {count} reviewed labels to {printable(path)} "
            f"(use: python -m trainer prepare --data {printable(path)})"
        )

    def choose_folder_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export corrections into folder")
        if folder:
            self.export_corrections_folders(Path(folder))

    def export_corrections_folders(self, folder: Path) -> None:
        self.sorting.export_corrections(self.review.corrections(), folder)

    # --- settings --------------------------------------------------------------------------------------

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        dialog.forget_corrections.connect(self.forget_corrections)
        if dialog.exec():
            self.apply_settings(dialog.settings())

    def apply_settings(self, new: Settings) -> None:
        """Take new settings; the model is reloaded only when the model, engine or batch size changed."""
        old = self.settings
        reload = (new.model_path, new.engine, new.batch_size) != (old.model_path, old.engine, old.batch_size)
        # The controllers hold this very object: it is updated in place.
        for spec in dataclasses.fields(Settings):
            setattr(old, spec.name, getattr(new, spec.name))
        self.grid.set_cell_size(self.ui.delegate, old.thumbnail_size)
        self._apply_threshold_setting()  # a new model brings its own recommendation when it is loaded
        self.personal.set_enabled(old.learn_from_corrections)
        self.save_settings()
        if reload:
            self.load_model()

    def save_settings(self) -> None:
        try:
            save_settings(self.settings)
        except SettingsError as error:
            self.show_message(f"Settings not saved: {error_line(error)}")
        except OSError as error:
            self.show_message(f"Could not save settings: {printable(str(error))}")

    def _set_include_subfolders(self, enabled: bool) -> None:
        self.settings.include_subfolders = bool(enabled)
        self.save_settings()

    # --- the unsure threshold ------------------------------------------------------------------------

    def set_threshold(self, threshold: float) -> None:
        """Make `threshold` the person's own (as moving the slider does); scripts and tests call it."""
        self.settings.confidence_threshold = float(threshold)
        self._apply_threshold_setting()

    def _apply_threshold_setting(self) -> None:
        """Use the person's threshold, or the model's recommendation when they have not chosen one."""
        self._use_threshold(
            effective_threshold(self.settings.confidence_threshold, self.recommended_threshold)
        )

    def _threshold_moved(self, value: int) -> None:
        """The person moved the slider: the threshold is theirs from now on."""
        self.settings.confidence_threshold = value / SLIDER_SCALE
        self._apply_threshold_setting()

    def _use_threshold(self, threshold: UnsureThreshold) -> None:
        self.threshold = threshold
        slider = self.ui.threshold_slider
        blocked = slider.blockSignals(True)  # the value was not moved by the person
        slider.setValue(round(threshold.value * SLIDER_SCALE))
        slider.blockSignals(blocked)
        self.ui.threshold_label.setText(percent(threshold.value))
        tip = describe(threshold, self.recommended_threshold)
        slider.setToolTip(tip)
        self.ui.threshold_label.setToolTip(tip)
        if threshold.value != self.photos.threshold:
            self.photos.set_threshold(threshold.value)
            if self.proxy.breed_filter == SHOW_UNSURE:
                self.proxy.refresh()
            self.review.show_current()

    # --- screenshot and exit -----------------------------------------------------------------------------

    def screenshot_when_done(self, path: Path) -> None:
        """Save a PNG of the window once every photo given is classified (see `app.main`)."""
        self._screenshot_path = Path(path)
        self._check_screenshot()

    def _check_screenshot(self) -> None:
        if self._screenshot_path is None or self.is_busy():
            return
        if self.classifier is None and self.model_error is None:
            return
        if self.photos.rowCount() and not self.grid.currentIndex().isValid():
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
        """Stop the watcher and every task and join their threads; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._view_refresh.stop()
        self.watching.stop()
        self.sorting.shutdown()
        self.classify.shutdown()
        self.runner.shutdown()
        self.personal.shutdown()  # after the runner: its lane no longer writes the store
        self.loader.shutdown()
        self.save_settings()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
