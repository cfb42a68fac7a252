"""The photos on show: one record per file with its prediction and review, as a Qt list model.

The model holds the core's `Prediction` objects as they are; what the window adds is the person's
review (a corrected or confirmed label), the "unsure" mark, which follows the threshold slider,
and whether a classification run will still get to the photo (`queued`): a photo without a
result says "Classifying…" only while that is true, and "Not classified" otherwise. Results
arrive in batches and each batch is one model update, so a folder of thousands of photos never
floods the views with per-photo signals. The proxy filters by breed and file
name and sorts by confidence or name; it re-sorts only when asked, not on every update.

What the breed filter can show is a `BreedFilter`: every photo, the unsure ones, the ones that may
not be cats, or one breed. A breed is never mistaken for a special group, even a breed called
"Unsure"; `filter_counts` counts each choice with the very test the proxy filters with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt

from catbreed_desktop.core.classify import Prediction
from catbreed_desktop.core.sorting.folder_names import NOT_CAT_FOLDER, UNSURE_FOLDER

# The filter and caption texts are the names of the folders those photos are sorted into.
NOT_CAT_TEXT = NOT_CAT_FOLDER
UNSURE_TEXT = UNSURE_FOLDER
ALL_BREEDS = "All breeds"
CLASSIFYING_TEXT = "Classifying…"
NOT_CLASSIFIED_TEXT = "Not classified"
# Before a breed the person's corrections gave, rather than the model alone.
ADAPTED_MARK = "↻ "
SORT_KEYS = ("Name", "Confidence (highest first)", "Confidence (lowest first)")

RecordRole = Qt.ItemDataRole.UserRole + 1
PathRole = Qt.ItemDataRole.UserRole + 2

ModelIndex = QModelIndex | QPersistentModelIndex


@dataclass
class PhotoRecord:
    """One photo in the window: its file, what the model said, and what the person said."""

    path: Path
    prediction: Prediction | None = None
    corrected_label: str | None = None
    reviewed: bool = False  # the person confirmed or corrected the label
    from_watch: bool = False
    queued: bool = False  # waiting for, or in, a classification run; False again once it ends

    @property
    def classified(self) -> bool:
        return self.prediction is not None or self.corrected_label is not None

    @property
    def label(self) -> str | None:
        if self.corrected_label is not None:
            return self.corrected_label
        return self.prediction.label if self.prediction is not None else None

    @property
    def confidence(self) -> float:
        """1.0 for a label a person gave or confirmed: it counts as sure when sorting."""
        if self.reviewed or self.corrected_label is not None:
            return 1.0
        return self.prediction.confidence if self.prediction is not None else 0.0

    @property
    def is_cat(self) -> bool:
        if self.reviewed or self.corrected_label is not None:
            return True
        return self.prediction.is_cat if self.prediction is not None else True

    def is_unsure(self, threshold: float) -> bool:
        """Whether sorting puts it in Unsure: a cat (by the model) whose top breed is below `threshold`.

        A photo the model judges not to be a cat is not unsure: it goes to "Not a cat", and is
        counted there, as the sort preview and `catbreed classify` count it.
        """
        if self.prediction is None or self.reviewed or self.corrected_label is not None:
            return False
        return self.is_cat and self.confidence < threshold

    @property
    def is_not_cat(self) -> bool:
        """Whether sorting puts it in "Not a cat"."""
        return self.classified and not self.is_cat

    def caption(self) -> str:
        """The grid's caption: the breed and confidence, or why there is none."""
        name, figure = self.caption_parts()
        return f"{name}  {figure}" if figure else name

    def caption_parts(self) -> tuple[str, str]:
        """(the breed or the state, the confidence): a narrow cell shortens the first and keeps the second."""
        if not self.classified:
            return (CLASSIFYING_TEXT if self.queued else NOT_CLASSIFIED_TEXT), ""
        if not self.is_cat:
            return f"{NOT_CAT_TEXT}?", ""
        mark = "✓ " if self.reviewed or self.corrected_label is not None else ""
        if not mark and getattr(self.prediction, "moved_by", None) is not None:
            mark = ADAPTED_MARK
        return f"{mark}{self.label}", f"{self.confidence:.0%}"


# The kinds of choice of the breed filter.
ALL, UNSURE, NOT_CAT, BREED = "all", "unsure", "not a cat", "breed"
_SPECIAL_TEXTS = {ALL: ALL_BREEDS, UNSURE: UNSURE_TEXT, NOT_CAT: NOT_CAT_TEXT}


@dataclass(frozen=True)
class BreedFilter:
    """One choice of the breed filter: `kind` is "all", "unsure", "not a cat" or "breed" (then `breed`)."""

    kind: str
    breed: str = ""

    @property
    def text(self) -> str:
        """What the filter box shows for it."""
        return self.breed if self.kind == BREED else _SPECIAL_TEXTS[self.kind]

    def accepts(self, record: PhotoRecord, threshold: float) -> bool:
        if self.kind == ALL:
            return True
        if self.kind == UNSURE:
            return record.is_unsure(threshold)
        if self.kind == NOT_CAT:
            return record.is_not_cat
        return record.label == self.breed


SHOW_ALL = BreedFilter(ALL)
SHOW_UNSURE = BreedFilter(UNSURE)
SHOW_NOT_CAT = BreedFilter(NOT_CAT)
# The filter's choices above the breeds, in the order shown.
SPECIAL_FILTERS = (SHOW_ALL, SHOW_UNSURE, SHOW_NOT_CAT)


def show_breed(label: str) -> BreedFilter:
    return BreedFilter(BREED, label)


def filter_counts(records: Iterable[PhotoRecord], threshold: float) -> Counter[BreedFilter]:
    """How many photos each choice of the breed filter shows (the file-name search aside)."""
    counts: Counter[BreedFilter] = Counter()
    for record in records:
        counts[SHOW_ALL] += 1
        counts[SHOW_UNSURE] += SHOW_UNSURE.accepts(record, threshold)
        counts[SHOW_NOT_CAT] += SHOW_NOT_CAT.accepts(record, threshold)
        if record.label is not None:
            counts[show_breed(record.label)] += 1
    return counts


@dataclass
class PhotoCounts:
    """The figures of the status bar; `unsure` and `not_cat` count what sorting puts in those folders."""

    photos: int = 0
    classified: int = 0
    unsure: int = 0
    not_cat: int = 0
    reviewed: int = 0
    not_classified: int = 0


class PhotoListModel(QAbstractListModel):
    """The photos in the order they were added; looked up by path for batched updates."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._records: list[PhotoRecord] = []
        self._rows: dict[Path, int] = {}
        self.threshold = 0.5

    # --- Qt model interface ---------------------------------------------------------------------

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's own signature
        return 0 if parent.isValid() else len(self._records)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._records):
            return None
        record = self._records[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return record.caption()
        if role == RecordRole:
            return record
        if role == PathRole:
            return str(record.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            moved_by = getattr(record.prediction, "moved_by", None)
            return str(record.path) + (f"\nchanged by your correction {moved_by}" if moved_by else "")
        return None

    # --- access --------------------------------------------------------------------------------------

    @property
    def records(self) -> Sequence[PhotoRecord]:
        return self._records

    def record(self, row: int) -> PhotoRecord:
        return self._records[row]

    def row_of(self, path: Path) -> int | None:
        return self._rows.get(Path(path))

    def __contains__(self, path: object) -> bool:
        return isinstance(path, Path) and path in self._rows

    def counts(self) -> PhotoCounts:
        """How many photos there are, and how many are classified, unsure, not cats, reviewed and not classified."""
        counts = PhotoCounts(photos=len(self._records))
        for record in self._records:
            counts.classified += record.classified
            counts.unsure += record.is_unsure(self.threshold)
            counts.not_cat += record.is_not_cat
            counts.reviewed += record.reviewed or record.corrected_label is not None
            counts.not_classified += not record.classified and not record.queued
        return counts

    # --- changes (each is one signal for the views, whatever its size) --------------------------

    def add_paths(self, paths: Iterable[Path], from_watch: bool = False) -> list[Path]:
        """Add photos not already shown; returns the paths that are new."""
        new: list[Path] = []
        seen = set(self._rows)
        for path in paths:
            path = Path(path)
            if path not in seen:
                seen.add(path)
                new.append(path)
        if not new:
            return []
        first = len(self._records)
        self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
        for offset, path in enumerate(new):
            self._records.append(PhotoRecord(path, from_watch=from_watch))
            self._rows[path] = first + offset
        self.endInsertRows()
        return new

    def apply_predictions(self, predictions: Iterable[Any]) -> list[PhotoRecord]:
        """Store a batch of predictions; returns the records that changed."""
        changed_rows: list[int] = []
        for prediction in predictions:
            row = self._rows.get(Path(prediction.path))
            if row is not None:
                self._records[row].prediction = prediction
                changed_rows.append(row)
        self._rows_changed(changed_rows)
        return [self._records[row] for row in changed_rows]

    def remove_paths(self, paths: Iterable[Path]) -> None:
        """Take photos out (files that could not be read); contiguous rows go in one step."""
        rows = sorted({self._rows[p] for p in map(Path, paths) if p in self._rows}, reverse=True)
        while rows:
            last = rows.pop(0)
            first = last
            while rows and rows[0] == first - 1:
                first = rows.pop(0)
            self.beginRemoveRows(QModelIndex(), first, last)
            del self._records[first : last + 1]
            self.endRemoveRows()
        self._rows = {record.path: row for row, record in enumerate(self._records)}

    def set_label(self, row: int, label: str | None, reviewed: bool = True) -> None:
        """Record the person's label for a photo (None takes the correction back)."""
        record = self._records[row]
        prediction_label = record.prediction.label if record.prediction is not None else None
        record.corrected_label = None if label is None or label == prediction_label else label
        record.reviewed = reviewed and label is not None
        self._rows_changed([row])

    def move_paths(self, moves: Iterable[tuple[Path, Path]]) -> None:
        """Follow files the app moved: the photo stays, under its new path."""
        changed: list[int] = []
        for old, new in moves:
            row = self._rows.pop(Path(old), None)
            if row is None or Path(new) in self._rows:
                continue
            self._records[row].path = Path(new)
            self._rows[Path(new)] = row
            changed.append(row)
        self._rows_changed(changed)

    def set_queued(self, paths: Iterable[Path], queued: bool) -> None:
        """Mark photos as waiting for (or no longer in) a classification run."""
        changed = []
        for path in paths:
            row = self._rows.get(Path(path))
            if row is not None and self._records[row].queued != queued:
                self._records[row].queued = queued
                changed.append(row)
        self._rows_changed(changed)

    def set_threshold(self, threshold: float) -> None:
        self.threshold = threshold
        self._rows_changed(range(len(self._records)))

    def clear(self) -> None:
        self.beginResetModel()
        self._records.clear()
        self._rows.clear()
        self.endResetModel()

    def refresh_path(self, path: Path) -> None:
        """Repaint one photo (its thumbnail arrived)."""
        row = self._rows.get(Path(path))
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def sort_records(self, key: str) -> None:
        """Reorder the photos by one of `SORT_KEYS`, as one layout change the views follow.

        Sorting here with one Python key function is far cheaper than a proxy comparing rows
        pair by pair through Python, which froze the window for a large folder.
        """
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort order {key!r}; use one of {', '.join(SORT_KEYS)}")
        if key == "Name":
            order = sorted(range(len(self._records)), key=lambda row: _name_key(self._records[row]))
        else:
            sign = -1.0 if key == "Confidence (highest first)" else 1.0
            order = sorted(
                range(len(self._records)),
                key=lambda row: (sign * self._records[row].confidence, _name_key(self._records[row])),
            )
        if order == list(range(len(order))):
            return
        self.layoutAboutToBeChanged.emit()
        new_row = {old: new for new, old in enumerate(order)}
        persistent = self.persistentIndexList()
        self._records = [self._records[old] for old in order]
        self._rows = {record.path: row for row, record in enumerate(self._records)}
        self.changePersistentIndexList(persistent, [self.index(new_row[index.row()]) for index in persistent])
        self.layoutChanged.emit()

    def _rows_changed(self, rows: Iterable[int]) -> None:
        rows = list(rows)
        if rows:
            roles = [Qt.ItemDataRole.DisplayRole, RecordRole, PathRole]
            self.dataChanged.emit(self.index(min(rows)), self.index(max(rows)), roles)


class PhotoFilterProxy(QSortFilterProxyModel):
    """Breed filter and file-name search over the photos, and the sort order it asks the photos for.

    Filter and order are re-applied on `refresh()` (the window calls it after each run and now and
    then during one), not after every batch of results.
    """

    SORT_KEYS = SORT_KEYS

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setDynamicSortFilter(False)
        self._breed = SHOW_ALL
        self._search = ""
        self._sort_key = "Name"
        self._filtered = False

    @property
    def photos(self) -> PhotoListModel:
        return cast(PhotoListModel, self.sourceModel())

    @property
    def breed_filter(self) -> BreedFilter:
        return self._breed

    def set_breed_filter(self, choice: BreedFilter | None) -> None:
        self._breed = choice or SHOW_ALL
        self.refresh()

    def set_search(self, text: str) -> None:
        self._search = text.strip().casefold()
        self.refresh()

    def set_sort_key(self, key: str) -> None:
        if key not in self.SORT_KEYS:
            raise ValueError(f"unknown sort order {key!r}")
        self._sort_key = key
        self.refresh()

    def refresh(self) -> None:
        self.photos.sort_records(self._sort_key)
        filtered = self._breed != SHOW_ALL or bool(self._search)
        if filtered or self._filtered:
            self._refilter()
        self._filtered = filtered

    def _refilter(self) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt 6.9+ replaces invalidateRowsFilter with this pair
            self.beginFilterChange()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        record = self.photos.record(source_row)
        if self._search and self._search not in record.path.name.casefold():
            return False
        return self._breed.accepts(record, self.photos.threshold)


def _name_key(record: PhotoRecord) -> tuple[str, str]:
    return record.path.name.casefold(), str(record.path)
