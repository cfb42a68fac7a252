"""Learning from corrections in the window: keeps each correction and updates the other photos.

The controller keeps the model's own prediction of every photo (`base`), so that the answers it
shows are always the model's answer adjusted by the corrections kept now, never adjusted twice.
A new batch of results is adjusted at once (a batch is a few photos). A correction is kept in the
bundle's store, and the photos nobody reviewed yet are adjusted again in the background (lane
"personal"), newest request winning; their records then show the adjusted answer, with the
correction that moved it. Reviewed photos keep what the person said. Turning it off or forgetting
brings back the model's own answers. "Similar photos" are the unreviewed photos nearest to a
corrected one whose answer is not yet that label, for the person to review and label in one go.

The store's file is read and written on that lane too, never on the GUI thread: a store of
20,000 corrections takes a while to read, and the grid must not stall meanwhile. Until a new
model's store is loaded, its results show the model's own answers; once it is, the photos not
reviewed yet are adjusted in the background. What the person does meanwhile is not lost:
corrections made while it loads (each taken down as it is made: label and embedding) are kept
once it is there, and a "forget" forgets what it held. If another model comes first, a job of the
lane reads that store again, does the same to it and writes it; if the window closes first,
`shutdown` does that itself.
The lane runs one job at a time: a store's loading before any adjusting. Each save writes the
newest copy of the store, taken when it changed, at the start of the next job, and the result of
a job that a newer model made stale is dropped (a damaged file it set aside is still reported).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from catbreed_desktop.core.classify import Prediction
from catbreed_desktop.core.errors import error_line
from catbreed_desktop.core.personal import LayerSettings, PersonalLayer, PersonalStore, PersonalStoreError
from catbreed_desktop.core.personal.combine import Metric, layer_setup
from catbreed_desktop.core.printable import plural
from catbreed_desktop.gui.photo_model import PhotoListModel, PhotoRecord
from catbreed_desktop.gui.tasks import Task, TaskContext, TaskRunner

PERSONAL_LANE = "personal"
SIMILAR_LIMIT = 50
CHUNK = 256  # photos adjusted between looks at a stop request

log = logging.getLogger(__name__)
Kept = list[tuple[Path, str, np.ndarray]]  # corrections kept: photo, label, the model's embedding


@dataclass(frozen=True)
class _Loaded:
    """A bundle's store as read in the background, with the layer of its corrections.

    `problem` is the one line saying why there is no store (an unusable data folder).
    """

    store: PersonalStore | None
    setup: tuple[Metric, LayerSettings]
    layer: PersonalLayer | None
    problem: str | None = None

    @property
    def warning(self) -> str | None:
        """What the person is told: why there is no store, or that a damaged file was set aside."""
        return self.problem or (self.store.warning if self.store is not None else None)


def load_store(bundle: Any, folder: Path | None) -> _Loaded:
    """Read the bundle's store and build its layer; runs on the lane's thread."""
    try:
        store = PersonalStore(bundle.model_sha256, folder)
    except PersonalStoreError as error:
        return _Loaded(None, (Metric(), LayerSettings()), None, error_line(error))
    setup = layer_setup(bundle)
    return _Loaded(store, setup, PersonalLayer.from_store(store, tuple(bundle.labels), *setup))


@dataclass
class _WhileLoading:
    """What the person did while the store of the model `model_sha256` was loading, to do to it
    once it is there: forget what it held, then keep these corrections (None: taken back)."""

    model_sha256: str
    forget_all: bool = False
    corrections: dict[Path, tuple[str, np.ndarray] | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.forget_all or bool(self.corrections)

    def note(self, keep: Kept, taken_back: Sequence[Path]) -> None:
        self.corrections.update({path: None for path in taken_back})
        self.corrections.update({path: (label, embedding) for path, label, embedding in keep})

    def apply(self, store: PersonalStore) -> bool:
        """Do it to `store` (in memory); whether the store changed."""
        forgot = self.forget_all and store.forget(save=False) > 0
        keep: Kept = [(path, *kept) for path, kept in self.corrections.items() if kept is not None]
        taken_back = [path for path, kept in self.corrections.items() if kept is None]
        return keep_corrections(store, keep, taken_back) or forgot


def keep_corrections(store: PersonalStore, keep: Kept, taken_back: Sequence[Path]) -> bool:
    """Put these corrections in `store` (in memory) and forget the photos taken back; whether it changed."""
    if taken_back:  # a photo taken back is no longer a correction
        store.forget(taken_back, save=False)
    if keep:
        store.add(
            [p for p, _, _ in keep],
            [label for _, label, _ in keep],
            np.stack([e for _, _, e in keep]),
            save=False,
        )
    return bool(keep or taken_back)


def write_left_behind(left_behind: _WhileLoading, folder: Path | None) -> str | None:
    """Read the store that `left_behind` was waiting for, do it to it and write it; the warning of
    a damaged file set aside (the corrections made meanwhile are in the fresh one)."""
    store = PersonalStore(left_behind.model_sha256, folder)
    if left_behind.apply(store):
        store.save()
    return store.warning


class PersonalController(QObject):
    """See the module's docstring."""

    changed = Signal(str)  # the status text, after each update
    similar_found = Signal(object, str)  # list[Path] like a corrected photo, and its label
    warning = Signal(str)

    def __init__(
        self,
        photos: PhotoListModel,
        runner: TaskRunner,
        enabled: bool = True,
        store_folder: Path | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.photos = photos
        self.runner = runner
        self.enabled = enabled
        self.store_folder = store_folder
        self.store: PersonalStore | None = None
        self.layer: PersonalLayer | None = None
        self._labels: tuple[str, ...] = ()
        self._setup: tuple[Metric, LayerSettings] = (Metric(), LayerSettings())
        self._base: dict[Path, Prediction] = {}
        # The lane's waiting work (see the module): a store to load, a refresh, a copy to write.
        self._generation = 0  # one per model: a job's result for an older one is dropped
        self._wanted_bundle: Any = None
        self._again = False
        self._ready_layer: PersonalLayer | None = None  # the next refresh may use it as it is
        self._unsaved: PersonalStore | None = None
        # What the person does while the store is loading (None: it is not), done to it once it
        # is there; and what was done while the store of an earlier model loaded, to write to it.
        self._while_loading: _WhileLoading | None = None
        self._left_behind: list[_WhileLoading] = []

    # --- state -----------------------------------------------------------------------------------

    @property
    def loading(self) -> bool:
        """The model's store is being read: corrections wait for it."""
        return self._while_loading is not None

    @property
    def count(self) -> int:
        return len(self.layer) if self.layer is not None and self.enabled else 0

    def status_text(self) -> str:
        if not self.enabled:
            return "Learning from corrections: off"
        if not self.count:
            return ""
        return f"Adapted to {plural(self.count, 'of your corrections', 'of your corrections')}"

    def is_busy(self) -> bool:
        """Whether the store is loading or photos wait to be adjusted or a copy to be written."""
        return self.loading or self._again or bool(self._left_behind) or self.runner.is_busy(PERSONAL_LANE)

    def set_bundle(self, bundle: Any) -> None:
        """A new model: its own store of corrections, read in the background; its results come as
        new base predictions and show the model's own answers until the store is there."""
        self._labels = tuple(bundle.labels)
        self._base.clear()
        self.store, self.layer = None, None
        self._generation += 1
        self._wanted_bundle = bundle
        if self._while_loading:  # the old store is no longer wanted, but what was done to it is
            self._left_behind.append(self._while_loading)
        self._while_loading = _WhileLoading(bundle.model_sha256)
        self._again, self._ready_layer = False, None
        self.runner.stop(PERSONAL_LANE)  # adjusting for the old model is of no use now
        self.changed.emit(self.status_text())
        self._start_next()

    def set_enabled(self, enabled: bool) -> None:
        if enabled != self.enabled:
            self.enabled = enabled
            self.refresh()

    def forget_all(self) -> int | None:
        """Forget every correction of this model; the photos get the model's own answers back.

        How many were forgotten; None while the store is loading: it is forgotten once loaded.
        """
        if self._while_loading is not None:
            # Corrections made before the forget are forgotten too.
            self._while_loading.forget_all, self._while_loading.corrections = True, {}
            return None
        if self.store is None:
            return 0
        gone = self.store.forget(save=False)
        self.refresh(save=True)  # the file goes in the background
        return gone

    def shutdown(self) -> None:
        """Write the corrections not written yet; call it once the runner has stopped.

        The window is closing, and the lane that writes them has stopped: writing them here is
        what keeps the last correction, and nothing else touches the file any more. Corrections
        made while a store was loading need that store: it is read here, on the GUI thread, as
        nothing is drawn any more and the read is bounded (`MAX_ENTRIES` rows of one file).
        """
        unsaved, self._unsaved = self._unsaved, None
        left_behind, self._left_behind = self._left_behind, []
        if self._while_loading:
            left_behind.append(self._while_loading)
        self._while_loading = None
        if unsaved is not None:  # first: it may be the store a correction made while loading needs
            try:
                unsaved.save()
            except OSError as error:
                log.warning("the corrections could not be written to %s: %s", unsaved.path, error)
        for waiting in left_behind:
            try:
                write_left_behind(waiting, self.store_folder)  # a damaged file's warning is logged
            except (OSError, PersonalStoreError) as error:
                log.warning("the corrections made while they were being read could not be kept: %s", error)

    # --- what happens in the window ---------------------------------------------------------------

    def model_results(self, records: Sequence[PhotoRecord]) -> None:
        """New predictions from the model: keep them as base, show them adjusted."""
        fresh = [r.prediction for r in records if r.prediction is not None]
        for prediction in fresh:
            self._base[Path(prediction.path)] = prediction
        if self.layer is not None and self.enabled and len(self.layer):
            adjusted = self.layer.adapt([p for p in fresh if not self._reviewed(p.path)])
            self.photos.apply_predictions(
                [p for p in adjusted if p.personal or p.top != self._base[p.path].top]
            )

    def corrected(self, rows: Sequence[int]) -> None:
        """The person set, confirmed or took back labels of these rows: keep that, then update the rest."""
        if self._while_loading is not None:
            self._while_loading.note(*self._corrections(rows))
            return
        if self.store is None:
            return
        keep, taken_back = self._corrections(rows)
        if keep_corrections(self.store, keep, taken_back):
            self.refresh(save=True)  # written in the background
        if len(keep) == 1 and self.enabled:
            path, label, embedding = keep[0]
            similar = self.similar(embedding, label, exclude=path)
            if similar:
                self.similar_found.emit(similar, label)

    def _corrections(self, rows: Sequence[int]) -> tuple[Kept, list[Path]]:
        """The corrections these rows hold now, and the photos among them whose correction was taken back."""
        keep: Kept = []
        taken_back: list[Path] = []
        for row in rows:
            record = self.photos.record(row)
            base = self._base.get(record.path, record.prediction)
            if record.label is not None and (record.reviewed or record.corrected_label is not None):
                if base is not None and base.embedding is not None:
                    keep.append((record.path, record.label, base.embedding))
            else:
                taken_back.append(record.path)
        return keep, taken_back

    def similar(self, embedding: np.ndarray, label: str, exclude: Path | None = None) -> list[Path]:
        """Unreviewed photos most like `embedding` whose answer is not `label` yet, nearest first."""
        candidates = [
            r
            for r in self.photos.records
            if r.path != exclude and not self._reviewed(r.path) and r.label != label
        ]
        bases = [self._base.get(r.path, r.prediction) for r in candidates]
        usable = [
            (r, b.embedding)
            for r, b in zip(candidates, bases, strict=True)
            if b is not None and b.embedding is not None
        ]
        if not usable or self.layer is None:
            return []
        rows = self.layer.nearest_photos(embedding, np.stack([row for _, row in usable]), SIMILAR_LIMIT)
        return [usable[i][0].path for i, _ in rows]

    def refresh(self, save: bool = False) -> None:
        """Adjust every unreviewed photo to the corrections kept now, in the background; `save`
        writes the store there first."""
        if self.store is None:
            return
        if save:
            self._unsaved = self.store.copy()
        self._ask_refresh(None)

    # --- the lane's jobs ---------------------------------------------------------------------------

    def _ask_refresh(self, layer: PersonalLayer | None) -> None:
        """Adjust the photos once the lane is free, with `layer` as it is or (None) one built then."""
        self._again, self._ready_layer = True, layer
        self._start_next()

    def _start_next(self) -> None:
        """Start the lane's next job unless one runs: the corrections made while an earlier
        model's store loaded to write to it (before any store is read: it may be the same one),
        else a new model's store to load (once the old one's corrections are written, by a job of
        their own: a failure to write them must not keep the new store from loading), else a
        refresh, else a write."""
        if self.runner.is_busy(PERSONAL_LANE):
            return
        if self._left_behind:
            left_behind, folder = self._left_behind.pop(0), self.store_folder
            self._start(
                "saving of your corrections",
                lambda context: write_left_behind(left_behind, folder),
                self._warn,
                on_stale=self._warn,
            )
        elif self._wanted_bundle is not None and self._unsaved is None:
            bundle, folder, self._wanted_bundle = self._wanted_bundle, self.store_folder, None
            self._start(
                "reading of your corrections",
                lambda context: load_store(bundle, folder),
                self._loaded,
                on_failed=self._load_failed,
                on_stale=lambda loaded: self._warn(loaded.warning),  # a file set aside is news still
            )
        elif self._again and self.store is not None:
            self._again = False
            self._start("learning from corrections", self._adjusting(self.store), self._adjusted)
        elif self._unsaved is not None:
            self._start("saving of your corrections", lambda context: None, lambda result: None)

    def _start(
        self,
        kind: str,
        job: Callable[[TaskContext], Any],
        on_done: Callable[[Any], None],
        on_failed: Callable[[], None] = lambda: None,
        on_stale: Callable[[Any], None] = lambda result: None,
    ) -> None:
        """Run `job` on the lane after writing the store's newest unsaved copy; its result goes to
        `on_done`, or to `on_stale` if a newer model came meanwhile. The lane's next job follows
        either way."""
        unsaved, self._unsaved = self._unsaved, None
        generation = self._generation

        def work(context: TaskContext) -> Any:
            if unsaved is not None:
                unsaved.save()
            return job(context)

        def done(result: Any) -> None:
            (on_done if generation == self._generation else on_stale)(result)
            self._start_next()

        def failed(reason: str) -> None:  # the runner has said why, in the status bar and Problems
            if generation == self._generation:
                on_failed()
            self._start_next()

        self.runner.start(Task(kind, work, on_done=done, on_failed=failed, lane=PERSONAL_LANE))

    def _warn(self, warning: str | None) -> None:
        if warning:
            self.warning.emit(warning)

    def _loaded(self, loaded: _Loaded) -> None:
        while_loading, self._while_loading = self._while_loading, None
        self._warn(loaded.warning)
        if loaded.store is None:
            self._load_failed()
            return
        self.store, self._setup, self.layer = loaded.store, loaded.setup, loaded.layer
        if while_loading is not None and while_loading.apply(loaded.store):
            self.refresh(save=True)
        elif self.enabled and self.count and self._base:
            # Results that came while it loaded show the model's own answers: adjust them now.
            self._ask_refresh(loaded.layer)
        self.changed.emit(self.status_text())

    def _load_failed(self) -> None:
        """No store for this model: corrections are not kept, the model's answers stand."""
        self._while_loading = None
        self.changed.emit(self.status_text())

    def _adjusting(
        self, kept: PersonalStore
    ) -> Callable[[TaskContext], tuple[PersonalLayer, list[Prediction]] | None]:
        """The job that adjusts the unreviewed photos to a copy of the store `kept` as it is now."""
        store, ready, self._ready_layer = kept.copy(), self._ready_layer, None
        labels, enabled, setup = self._labels, self.enabled, self._setup
        bases = [b for path, b in self._base.items() if not self._reviewed(path)]

        def work(context: TaskContext) -> tuple[PersonalLayer, list[Prediction]] | None:
            if ready is not None:
                layer = ready
            else:
                layer = PersonalLayer.from_store(store, labels if enabled else (), *setup)
            adjusted: list[Prediction] = []
            for start in range(0, len(bases), CHUNK):
                if context.should_stop():
                    return None
                adjusted += layer.adapt(bases[start : start + CHUNK])
            return layer, adjusted

        return work

    def _adjusted(self, result: tuple[PersonalLayer, list[Prediction]] | None) -> None:
        if self._again or result is None:
            return  # a newer refresh follows, with the corrections kept since
        self.layer, adjusted = result
        current = [p for p in adjusted if not self._reviewed(p.path) and p.path in self.photos]
        self.photos.apply_predictions(current)
        self.changed.emit(self.status_text())

    def _reviewed(self, path: Path) -> bool:
        row = self.photos.row_of(path)
        if row is None:
            return True
        record = self.photos.record(row)
        return record.reviewed or record.corrected_label is not None
