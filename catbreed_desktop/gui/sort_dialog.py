"""The sort dialog: target folder, copy or move, threshold, and a preview of every planned operation.

The preview is what the sort controller's planner returns (`SortPreview`: the core's plan, less
the photos already filed in the target); photos the plan cannot take are listed with the reason.
Nothing on disk changes until the person presses Sort, and then the window executes exactly the
plan that was shown.

Beside the table, the folders of the plan are listed with how many photos go to each: the special
folders (Unsure, Not a cat) first and set apart, then the breeds in alphabetical order, so a plan
over 33 breeds or more is read at a glance; choosing a folder shows only its photos. Photos whose
breed the person's corrections gave are marked in the Folder column (the tooltip names the
correction), and a last row of the list, "From your corrections", shows only them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.core.sorting import COPY, MOVE, PlannedOperation, SortPlan
from catbreed_desktop.core.sorting.folder_names import SPECIAL_FOLDERS
from catbreed_desktop.core.sorting.plan import SortMode
from catbreed_desktop.gui.breed_box import CountDelegate, alphabetical
from catbreed_desktop.gui.photo_model import ADAPTED_MARK
from catbreed_desktop.gui.sort_controller import SortPreview
from catbreed_desktop.gui.threshold import threshold_spin_box

COLUMNS = ("Photo", "Folder", "New path", "Action")
# The cells are short; their tooltips say it all (the new path in full, say).
DUPLICATE_TEXT = "already there"
DUPLICATE_TIP = "already there with the same bytes: left in place"
Planner = Callable[[Path, SortMode, float], SortPreview]
# Keys of the folder list's rows that are not folders; a folder's key is its name.
ALL_FOLDERS = ("all",)
NOT_SORTED = ("not sorted",)
FROM_CORRECTIONS = ("from your corrections",)
FROM_CORRECTIONS_TEXT = "From your corrections"


def ordered_folders(folders: dict[str, int]) -> list[str]:
    """The folders of a plan as the preview lists them: the special ones first, then alphabetical."""
    special = [name for name in SPECIAL_FOLDERS if name in folders]
    return special + alphabetical(name for name in folders if name not in SPECIAL_FOLDERS)


def fit_columns(table: QTableView) -> None:
    """Size the plan's columns so all four show at once: the new path takes what the others leave.

    The new path is shown inside the target (named above the table) and every cell's tooltip holds
    its whole text; too long a text is shortened in the middle, keeping both ends readable.
    """
    header = table.horizontalHeader()
    header.setStretchLastSection(False)
    metrics = table.fontMetrics()
    letter = metrics.averageCharWidth()
    widths = {0: 24 * letter, 1: 20 * letter, 3: metrics.horizontalAdvance(DUPLICATE_TEXT) + 3 * letter}
    for column in range(len(COLUMNS)):
        if column in widths:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            table.setColumnWidth(column, widths[column])
        else:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    table.setWordWrap(False)  # one line per photo, shortened, rather than rows of varying height


class PlanTableModel(QAbstractTableModel):
    """The operations of a sort plan as table rows, then the photos it cannot sort, with the reason."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._operations: list[PlannedOperation] = []
        self._target: Path | None = None
        self._skipped: list[tuple[Path, str]] = []
        self._personal: dict[Path, str] = {}

    def folder_of(self, row: int) -> str | None:
        """The folder the row's photo goes to; None for a photo the plan cannot sort."""
        return self._operations[row].folder if row < len(self._operations) else None

    def moved_by(self, row: int) -> str | None:
        """The correction that gave the row's photo its breed; None where the model alone did."""
        return self._personal.get(self._operations[row].source) if row < len(self._operations) else None

    def set_plan(self, plan: SortPlan | None, personal: dict[Path, str] | None = None) -> None:
        """Show `plan`; `personal` names its photos whose breed a correction gave (see `SortPreview`)."""
        self.beginResetModel()
        self._operations = list(plan.operations) if plan is not None else []
        self._target = plan.target if plan is not None else None
        self._skipped = list(plan.skipped) if plan is not None else []
        self._personal = dict(personal or {})
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._operations) + len(self._skipped)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if not index.isValid() or role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        row, column = index.row(), index.column()
        if row >= len(self._operations):
            source, reason = self._skipped[row - len(self._operations)]
            cells = (printable(source.name), "", "", f"not sorted: {reason}")
            return printable(source) if column == 0 and role == Qt.ItemDataRole.ToolTipRole else cells[column]
        operation = self._operations[row]
        if column == 0:
            path = operation.source
            return printable(path) if role == Qt.ItemDataRole.ToolTipRole else printable(path.name)
        if column == 1:
            return self._folder_cell(operation, role)
        if column == 2:
            if role == Qt.ItemDataRole.ToolTipRole or self._target is None:
                return printable(operation.destination)
            return printable(_inside(operation.destination, self._target))
        if operation.action == "duplicate":
            return DUPLICATE_TIP if role == Qt.ItemDataRole.ToolTipRole else DUPLICATE_TEXT
        return operation.action

    def _folder_cell(self, operation: PlannedOperation, role: int) -> str:
        """The folder, marked as the grid marks it where a correction, not the model, chose the breed."""
        folder = printable(operation.folder)
        moved_by = self._personal.get(operation.source)
        if moved_by is None:
            return folder
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{folder}: your correction {printable(moved_by)} changed the model's answer"
        return f"{ADAPTED_MARK}{folder}"


def _inside(path: Path, folder: Path) -> Path:
    """`path` relative to `folder` when it lies inside, else as it is."""
    try:
        return path.relative_to(folder)
    except ValueError:
        return path


class FolderFilter(QSortFilterProxyModel):
    """The plan's rows of one folder (`folder` a folder name), the photos not sorted, those whose
    breed came from a correction, or all."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.folder: Any = ALL_FOLDERS

    def set_folder(self, folder: Any) -> None:
        self.folder = folder
        if hasattr(self, "beginFilterChange"):  # Qt 6.9+ replaces invalidateRowsFilter with this pair
            self.beginFilterChange()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if self.folder == ALL_FOLDERS:
            return True
        model = self.sourceModel()
        plan = model if isinstance(model, PlanTableModel) else None
        if self.folder == FROM_CORRECTIONS:
            return plan is not None and plan.moved_by(source_row) is not None
        folder = plan.folder_of(source_row) if plan is not None else None
        return folder is None if self.folder == NOT_SORTED else folder == self.folder


class SortDialog(QDialog):
    """Asks where and how to sort, shows the plan, and returns it from `plan()` when accepted."""

    def __init__(
        self,
        photo_count: int,
        planner: Planner,
        target: str,
        mode: SortMode,
        threshold: float,
        parent: QWidget | None = None,
        threshold_note: str = "",
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sort photos into breed folders")
        self.resize(900, 560)
        self._photo_count = photo_count
        self._planner = planner
        self._preview: SortPreview | None = None

        self.target_edit = QLineEdit(target)
        self.target_edit.setPlaceholderText("Folder that will hold one folder per breed")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        target_row = QHBoxLayout()
        target_row.addWidget(self.target_edit, 1)
        target_row.addWidget(browse)
        self.move_button = QRadioButton("Move (the photos leave their folder)")
        self.copy_button = QRadioButton("Copy (the originals stay)")
        (self.copy_button if mode == COPY else self.move_button).setChecked(True)
        mode_row = QHBoxLayout()
        mode_row.addWidget(self.move_button)
        mode_row.addWidget(self.copy_button)
        mode_row.addStretch(1)
        self.threshold_spin = threshold_spin_box(threshold)
        # A number of a few digits: the form must not stretch it across the dialog.
        self.threshold_spin.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.threshold_spin.setToolTip(
            threshold_note or "Photos whose top breed is less likely than this go to the “Unsure” folder"
        )

        form = QFormLayout()
        form.addRow("Target folder:", target_row)
        form.addRow("Files:", mode_row)
        form.addRow("Minimum confidence:", self.threshold_spin)

        self.table_model = PlanTableModel(self)
        self.table_filter = FolderFilter(self)
        self.table_filter.setSourceModel(self.table_model)
        self.table = QTableView()
        self.table.setModel(self.table_filter)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        fit_columns(self.table)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.folder_list = QListWidget()
        self.folder_list.setItemDelegate(CountDelegate(self.folder_list))
        self.folder_list.setToolTip("How many photos go to each folder; choose one to see only its photos")
        self.folder_list.currentItemChanged.connect(self._folder_chosen)
        panes = QSplitter()
        panes.addWidget(self.folder_list)
        panes.addWidget(self.table)
        panes.setStretchFactor(1, 1)
        panes.setCollapsible(1, False)
        panes.setSizes([200, 700])

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.sort_button = self.buttons.addButton("Sort", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel(f"Preview of what will happen to {plural(photo_count, 'classified photo')}:"))
        layout.addWidget(panes, 1)
        layout.addWidget(self.summary)
        layout.addWidget(self.buttons)

        # Typing a path replans once the typing pauses, not on every key.
        self._replan_timer = QTimer(self, singleShot=True, interval=250)
        self._replan_timer.timeout.connect(self.update_preview)
        self.target_edit.textChanged.connect(self._replan_timer.start)
        self.move_button.toggled.connect(self._replan_timer.start)
        self.threshold_spin.valueChanged.connect(self._replan_timer.start)
        self.update_preview()

    @property
    def target(self) -> str:
        return self.target_edit.text().strip()

    @property
    def mode(self) -> SortMode:
        return COPY if self.copy_button.isChecked() else MOVE

    @property
    def threshold(self) -> float:
        return float(self.threshold_spin.value())

    def preview(self) -> SortPreview | None:
        """The sort shown in the preview (None when the options do not make one)."""
        if self._replan_timer.isActive():
            self._replan_timer.stop()
            self.update_preview()
        return self._preview

    def plan(self) -> SortPlan | None:
        """The plan shown in the preview (None when the options do not make one)."""
        preview = self.preview()
        return preview.plan if preview is not None else None

    def update_preview(self) -> None:
        self._preview = None
        if not self.target:
            self.summary.setText("Choose a target folder to see the plan.")
        elif not self._photo_count:
            self.summary.setText("There are no classified photos to sort yet.")
        else:
            try:
                self._preview = self._planner(Path(self.target), self.mode, self.threshold)
            except (OSError, ValueError) as error:
                self.summary.setText(f"Cannot sort into this folder: {error}")
            else:
                self.summary.setText(self._preview.summary())
        preview = self._preview
        if preview is not None:
            self.table_model.set_plan(preview.plan, preview.personal)
        else:
            self.table_model.set_plan(None)
        self._list_folders(preview)
        # A plan of duplicates alone would change nothing and still take an undo slot.
        self.sort_button.setEnabled(self._preview is not None and self._preview.has_work)

    def accept(self) -> None:
        if self.plan() is None:
            return
        super().accept()

    def folder_counts(self) -> list[tuple[str, int]]:
        """The folder list as shown: (name, photos) per row."""
        delegate = self.folder_list.itemDelegate()
        counts = delegate.counts if isinstance(delegate, CountDelegate) else {}
        rows = (self.folder_list.item(row) for row in range(self.folder_list.count()))
        return [(item.text(), counts.get(item.data(Qt.ItemDataRole.UserRole), 0)) for item in rows if item]

    def show_folder(self, folder: Any) -> None:
        """Show only the photos going to `folder` (a name, `NOT_SORTED`, `FROM_CORRECTIONS` or `ALL_FOLDERS`)."""
        for row in range(self.folder_list.count()):
            item = self.folder_list.item(row)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == folder:
                self.folder_list.setCurrentItem(item)
                return

    def _list_folders(self, preview: SortPreview | None) -> None:
        shown = self.table_filter.folder
        plan = preview.plan if preview is not None else None
        folders = plan.folders() if plan is not None else {}
        counts: dict[Any, int] = dict(folders)
        rows: list[tuple[str, Any, bool]] = [("All folders", ALL_FOLDERS, True)]
        counts[ALL_FOLDERS] = len(plan.operations) if plan is not None else 0
        rows += [(printable(name), name, name in SPECIAL_FOLDERS) for name in ordered_folders(folders)]
        if plan is not None and plan.skipped:
            rows.append(("Not sorted", NOT_SORTED, True))
            counts[NOT_SORTED] = len(plan.skipped)
        if preview is not None and preview.personal:
            rows.append((FROM_CORRECTIONS_TEXT, FROM_CORRECTIONS, True))
            counts[FROM_CORRECTIONS] = len(preview.personal)
        italic = QFont(self.folder_list.font())
        italic.setItalic(True)
        blocked = self.folder_list.blockSignals(True)
        self.folder_list.clear()
        for text, key, special in rows:
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, key)
            if special:
                item.setFont(italic)  # not a breed: the eye must not take it for one
            self.folder_list.addItem(item)
        delegate = self.folder_list.itemDelegate()
        if isinstance(delegate, CountDelegate):
            delegate.counts = counts
        self.folder_list.blockSignals(blocked)
        # Keep showing the folder chosen when the plan changes (a new threshold), while it has photos.
        self.show_folder(shown if shown in counts else ALL_FOLDERS)

    def _folder_chosen(self, item: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        self.table_filter.set_folder(item.data(Qt.ItemDataRole.UserRole) if item is not None else ALL_FOLDERS)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Sort into folder", self.target)
        if folder:
            self.target_edit.setText(folder)
            self.update_preview()
