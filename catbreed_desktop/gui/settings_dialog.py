"""The settings dialog: which model bundle (with its breeds and metrics), the unsure threshold, engine,
batch size, thumbnails.

The bundle is described in words and a table (`bundle_facts`): the shipped model's accuracy and
macro F1, calibration, training data, and each breed's F1, in alphabetical order or sorted by any
column (the weakest breeds first, say). The unsure threshold is the bundle's recommendation, named
with where it comes from, until the person unticks "Use the model's recommendation" and sets
their own. The spin boxes take their ranges from
the settings' own `RANGES`, which the loader checks too. It edits a copy of the settings; the window applies them (reloading the model when needed). Beside
the engine choice it shows, read-only, what `catbreed engines` lists for the chosen bundle: each
engine, whether it can run here or why not, the graph and precision it runs, the providers really
active. The listing opens a CPU session, so it is computed on a pool thread owned by the dialog
(a QThreadPool waits for its jobs when destroyed, so none outlives the dialog) and shown when it
arrives; results for a bundle the dialog no longer shows are dropped.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.bundle import DEFAULT_MIN_CONFIDENCE, BundleError, load_bundle
from catbreed_desktop.core.engines.inventory import list_engines
from catbreed_desktop.core.engines.names import (
    AUTO,
    CPU,
    CUDA,
    OPENVINO,
    PREFERENCES,
    TENSORRT,
    TENSORRT_RTX,
    TRITON,
)
from catbreed_desktop.core.paths import default_model_dir
from catbreed_desktop.core.printable import printable
from catbreed_desktop.core.settings import RANGES, Settings
from catbreed_desktop.gui.breed_box import alphabetical
from catbreed_desktop.gui.bundle_facts import bundle_facts
from catbreed_desktop.gui.threshold import UnsureThreshold, percent, threshold_spin_box

ENGINE_NAMES = {
    AUTO: "Automatic (fastest available)",
    TENSORRT: "TensorRT",
    TENSORRT_RTX: "TensorRT for RTX",
    CUDA: "CUDA",
    CPU: "CPU",
    OPENVINO: "OpenVINO (CPU)",
    TRITON: "Triton server",
}
ENGINE_COLUMNS = ("Engine", "Available", "Precision", "Providers", "Graph")
BREED_COLUMNS = ("Breed", "F1", "Precision", "Recall", "Test photos")


class _SortableItem(QTableWidgetItem):
    """A table cell sorted by `key` (a number, or a name's place in alphabetical order), not by its text."""

    def __init__(self, text: str, key: tuple[int, float]) -> None:
        super().__init__(text)
        self.key = key

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, _SortableItem):
            return self.key < other.key
        return super().__lt__(other)


def _figure_key(text: str) -> tuple[int, float]:
    # A cell without a figure (a dash) sorts after the numbers.
    try:
        return 0, float(text)
    except ValueError:
        return 1, 0.0


class _ListingSignals(QObject):
    done = Signal(int, object)  # request number, list[EngineInfo]
    failed = Signal(int, str)


class _ListingJob(QRunnable):
    """Loads the bundle in `folder` and lists the engines for it, off the GUI thread."""

    def __init__(self, request: int, folder: Path, batch_size: int, signals: _ListingSignals) -> None:
        super().__init__()
        self._request, self._folder, self._batch_size, self._signals = request, folder, batch_size, signals

    def run(self) -> None:
        try:
            infos = list_engines(load_bundle(self._folder), batch_size=self._batch_size)
        except Exception as error:  # shown in the dialog; the pool thread must end cleanly
            self._signals.failed.emit(self._request, str(error))
            return
        self._signals.done.emit(self._request, infos)


class SettingsDialog(QDialog):
    forget_corrections = Signal()  # "Forget my corrections…": the window asks and forgets

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.resize(760, 640)
        self._settings = copy.deepcopy(settings)

        self.model_edit = QLineEdit(settings.model_path)
        self.model_edit.setPlaceholderText(f"Default: {default_model_dir()}")
        browse = QPushButton("Open bundle…")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(browse)
        self.bundle_info = QLabel()
        self.bundle_info.setTextFormat(Qt.TextFormat.PlainText)  # names come from files anyone can make
        self.bundle_info.setWordWrap(True)
        self.bundle_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.breed_table = QTableWidget(0, len(BREED_COLUMNS))
        self.breed_table.setHorizontalHeaderLabels(BREED_COLUMNS)
        self.breed_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.breed_table.verticalHeader().setVisible(False)
        self.breed_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.breed_table.setSortingEnabled(True)
        self.breed_note = QLabel()
        self.breed_note.setWordWrap(True)
        bundle_box = QVBoxLayout()
        bundle_box.addWidget(self.bundle_info)
        bundle_box.addWidget(self.breed_table)
        bundle_box.addWidget(self.breed_note)

        # What the bundle shown recommends; `show_bundle_info` keeps it current.
        self._recommended = UnsureThreshold(DEFAULT_MIN_CONFIDENCE, "")
        chosen = settings.confidence_threshold
        self.threshold_spin = threshold_spin_box(chosen if chosen is not None else DEFAULT_MIN_CONFIDENCE)
        self.threshold_spin.setToolTip("Photos whose top breed is less likely than this are unsure")
        self.threshold_auto = QCheckBox("Use the model’s recommendation")
        self.threshold_auto.setChecked(chosen is None)
        self.threshold_auto.toggled.connect(self._show_threshold)
        self.threshold_note = QLabel()
        self.threshold_note.setWordWrap(True)
        self.threshold_note.setTextFormat(Qt.TextFormat.PlainText)  # the rule's words come from a file
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.threshold_spin)
        threshold_row.addWidget(self.threshold_auto)
        threshold_row.addStretch(1)
        threshold_box = QVBoxLayout()
        threshold_box.addLayout(threshold_row)
        threshold_box.addWidget(self.threshold_note)

        self.engine_box = QComboBox()
        # The Triton engine needs a server URL, which the window cannot pass on yet: local engines only.
        for engine in PREFERENCES:
            if engine in ENGINE_NAMES:
                self.engine_box.addItem(ENGINE_NAMES[engine], engine)
        self.engine_box.setCurrentIndex(max(0, self.engine_box.findData(settings.engine)))
        self.engine_status = QLabel()
        self.engine_status.setWordWrap(True)
        self.engine_status.setTextFormat(Qt.TextFormat.PlainText)  # error messages may hold "<"
        self.engine_tree = QTreeWidget()
        self.engine_tree.setColumnCount(len(ENGINE_COLUMNS))
        self.engine_tree.setHeaderLabels(ENGINE_COLUMNS)
        self.engine_tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.engine_tree.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.engine_tree.setRootIsDecorated(False)
        self.engine_tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keep the graph's file name
        # Sized to its rows: a scroll bar would hide the last one. Each graph's path is in its tooltip.
        self.engine_tree.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # The details (why not, first start, notes) go in a wrapping label: they name what to
        # install, and a tree row would cut them off.
        self.engine_details = QLabel()
        self.engine_details.setWordWrap(True)
        self.engine_details.setTextFormat(Qt.TextFormat.PlainText)
        self.engine_details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        engines_box = QVBoxLayout()
        engines_box.addWidget(self.engine_status)
        engines_box.addWidget(self.engine_tree)
        engines_box.addWidget(self.engine_details)
        # The pool is created before the signals, so it is destroyed (waiting for its job) first.
        self._listing_pool = QThreadPool(self)
        self._listing_pool.setMaxThreadCount(1)
        self._listing_signals = _ListingSignals(self)
        self._listing_signals.done.connect(self._show_engines)
        self._listing_signals.failed.connect(self._show_engines_failed)
        self._listing_request = 0
        self._listing_pending = False
        # Only the "Triton server" engine uses it: photos are decoded here, inferred there.
        self.server_edit = QLineEdit(settings.triton_server)
        self.server_edit.setPlaceholderText("http://127.0.0.1:8000 or grpc://127.0.0.1:8001")
        self.server_edit.setEnabled(settings.engine == TRITON)
        self.engine_box.currentIndexChanged.connect(
            lambda _index: self.server_edit.setEnabled(self.engine_box.currentData() == TRITON)
        )
        self.batch_spin = _spin_box("batch_size", settings.batch_size)
        self.thumbnail_spin = _spin_box("thumbnail_size", settings.thumbnail_size)
        self.thumbnail_spin.setSuffix(" px")

        self.learn_box = QCheckBox("Learn from my corrections (photos like a corrected one follow it)")
        self.learn_box.setChecked(settings.learn_from_corrections)
        forget = QPushButton("Forget my corrections…")
        forget.clicked.connect(self.forget_corrections)
        learn_row = QHBoxLayout()
        learn_row.addWidget(self.learn_box, 1)
        learn_row.addWidget(forget)

        # Two pages, so the dialog fits a 1280 x 800 screen: the model, and how it runs.
        model_page = QWidget()
        model_form = QFormLayout(model_page)
        model_form.addRow("Model bundle:", model_row)
        model_form.addRow("Breeds and metrics:", bundle_box)
        model_form.addRow("Unsure below:", threshold_box)
        model_form.addRow("Your corrections:", learn_row)
        engine_page = QWidget()
        engine_form = QFormLayout()
        engine_form.addRow("Engine:", self.engine_box)
        engine_form.addRow("Triton server:", self.server_edit)
        engine_form.addRow("Engines here:", engines_box)
        engine_form.addRow("Batch size:", self.batch_spin)
        engine_form.addRow("Thumbnail size:", self.thumbnail_spin)
        # The rows keep their own heights, top down; the room left over stays below them, not
        # spread between the lines of the engine listing.
        engine_layout = QVBoxLayout(engine_page)
        engine_layout.addLayout(engine_form)
        engine_layout.addStretch(1)
        self.pages = QTabWidget()
        self.pages.addTab(model_page, "Model")
        self.pages.addTab(engine_page, "Engine and display")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.pages)
        layout.addWidget(buttons)
        self.model_edit.editingFinished.connect(self.show_bundle_info)
        self.show_bundle_info()

    def settings(self) -> Settings:
        """The settings as edited in the dialog."""
        result = copy.deepcopy(self._settings)
        result.model_path = self.model_edit.text().strip()
        result.engine = self.engine_box.currentData()
        result.triton_server = self.server_edit.text().strip()
        result.batch_size = self.batch_spin.value()
        result.thumbnail_size = self.thumbnail_spin.value()
        result.confidence_threshold = None if self.threshold_auto.isChecked() else self.threshold_spin.value()
        result.learn_from_corrections = self.learn_box.isChecked()
        return result

    def show_bundle_info(self) -> None:
        folder = Path(self.model_edit.text().strip() or default_model_dir())
        self.refresh_engines(folder)
        self.breed_table.setRowCount(0)
        self.breed_note.clear()
        try:
            # The checksum is verified when the model loads; here only the description is read.
            bundle = load_bundle(folder, verify=False)
        except BundleError as error:
            self.bundle_info.setText(f"{error}")
            self._recommended = UnsureThreshold(DEFAULT_MIN_CONFIDENCE, "")
            self._show_threshold()
            return
        self._recommended = UnsureThreshold(bundle.default_min_confidence, bundle.min_confidence_source())
        self._show_threshold()
        facts = bundle_facts(bundle)
        self.bundle_info.setText("\n".join(f"{name}: {value}" for name, value in facts.lines))
        # Filled unsorted, then sorted: a table sorting as rows arrive would scatter each row's cells.
        self.breed_table.setSortingEnabled(False)
        self.breed_table.setRowCount(len(facts.breeds))
        places = {name: place for place, name in enumerate(alphabetical(b.breed for b in facts.breeds))}
        for row, breed in enumerate(facts.breeds):
            cells = (breed.breed, breed.f1, breed.precision, breed.recall, breed.photos)
            for column, text in enumerate(cells):
                key = (0, float(places[text])) if column == 0 else _figure_key(text)
                item = _SortableItem(text, key)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.breed_table.setItem(row, column, item)
        self.breed_table.setSortingEnabled(True)
        self.breed_table.sortItems(0, Qt.SortOrder.AscendingOrder)
        for column in range(1, len(BREED_COLUMNS)):
            self.breed_table.resizeColumnToContents(column)
        self.breed_note.setText(facts.breed_note)
        self.breed_note.setVisible(bool(facts.breed_note))

    def _show_threshold(self) -> None:
        """The threshold row for the bundle shown: its recommendation, and whether the person's own applies."""
        automatic = self.threshold_auto.isChecked()
        self.threshold_spin.setEnabled(not automatic)
        recommended = self._recommended
        if automatic:
            self.threshold_spin.setValue(recommended.value)
        if not recommended.source:
            self.threshold_note.setText(
                f"The model bundle above cannot be read; without one the threshold is {percent(recommended.value)}."
            )
            return
        said = f"This model’s threshold is {percent(recommended.value)}: {recommended.source}."
        if not automatic:
            said += " Yours applies instead."
        self.threshold_note.setText(said)

    def refresh_engines(self, folder: Path) -> None:
        """List the engines for the bundle in `folder` in the background; the tree fills when done."""
        self._listing_request += 1
        self._listing_pending = True
        self.engine_tree.clear()
        self.engine_details.clear()
        self.engine_status.setText("Looking at the engines…")
        job = _ListingJob(self._listing_request, folder, self.batch_spin.value(), self._listing_signals)
        self._listing_pool.start(job)

    def is_listing(self) -> bool:
        """Whether the listing for the bundle shown is still being computed."""
        return self._listing_pending

    def _show_engines(self, request: int, infos: list[Any]) -> None:
        if request != self._listing_request:
            return  # a listing for a bundle the dialog no longer shows
        self._listing_pending = False
        self.engine_tree.clear()
        lines = []
        folders: dict[Path, None] = {}
        for info in infos:
            # The file's name; its folder (a long path that the column would cut) is listed below.
            graph = printable(info.graph.name)
            folders[info.graph.parent] = None
            providers = ", ".join(info.providers) if info.started else "not started"
            row = QTreeWidgetItem(
                [info.title, "yes" if info.available else "no", info.precision, providers, graph]
            )
            row.setToolTip(4, printable(info.graph))
            self.engine_tree.addTopLevelItem(row)
            details = [("why not", info.reason), ("GPU", info.gpu), ("first start", info.first_start)]
            details += [("note", note) for note in info.notes]
            if not info.graph_ready:
                details.append(("graph", f"{info.graph.name}, derived from the bundle at first start"))
            lines += [f"{info.title}, {label}: {printable(text)}" for label, text in details if text]
        lines += [f"Graphs in: {printable(folder)}" for folder in folders]
        for column in range(len(ENGINE_COLUMNS) - 1):
            self.engine_tree.resizeColumnToContents(column)
        rows = self.engine_tree.topLevelItemCount()
        height = self.engine_tree.header().sizeHint().height() + rows * self.engine_tree.sizeHintForRow(0)
        self.engine_tree.setFixedHeight(height + 2 * self.engine_tree.frameWidth() + 4)
        self.engine_details.setText("\n".join(lines))
        self.engine_status.setText(
            "What each engine would run with this model. The engine that runs is the one chosen above "
            "(Automatic takes the first available, in this order)."
        )

    def _show_engines_failed(self, request: int, message: str) -> None:
        if request != self._listing_request:
            return
        self._listing_pending = False
        self.engine_tree.clear()
        self.engine_details.clear()
        self.engine_status.setText(f"Cannot list the engines: {message}")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open model bundle", self.model_edit.text())
        if folder:
            self.model_edit.setText(folder)
            self.show_bundle_info()


def _spin_box(name: str, value: int) -> QSpinBox:
    """A spin box over the range the settings allow for `name` (`RANGES`), showing `value`."""
    allowed = RANGES[name]
    box = QSpinBox()
    box.setRange(int(allowed.minimum), int(allowed.maximum))
    box.setSingleStep(int(allowed.step))
    box.setValue(value)
    return box
