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
corrections made while it loads are kept once it is there, and a "forget" forgets what it held.
The lane runs one job at a time: a store's loading before any adjusting. Each save writes the
newest copy of the store, taken when it changed, at the start of the next job, and the result of
a job that a newer model made stale is dropped.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
# How like the corrected photo a photo must be to be offered as "similar" (cosine similarity).
SIMILAR_MIN = 0.6
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


def load_store(bundle: Any, folder: Path | None) -> _Loaded:
    """Read the bundle's store and build its layer; runs on the lane's thread."""
    try:
        store = PersonalStore(bundle.model_sha256, folder)
    except PersonalStoreError as error:
        return _Loaded(None, (Metric(), LayerSettings()), None, error_line(error))
    setup = layer_setup(bundle)
    return _Loaded(store, setup, PersonalLayer.from_store(store, tuple(bundle.labels), *setup))


def snapshot(store: PersonalStore) -> PersonalStore:
    """A copy of `store` for another thread to read or write while this one goes on changing it.

    Its arrays are replaced, never changed in place; its lists grow in place, so they are copied.
    """
    copied = copy.copy(store)
    copied.labels, copied.photo_paths, copied.keys = (
        list(store.labels),
        list(store.photo_paths),
        list(store.keys),
    )
    return copied


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
        self.loading = False  # the model's store is being read: corrections wait for it
        self._labels: tuple[str, ...] = ()
        self._setup: tuple[Metric, LayerSettings] = (Metric(), LayerSettings())
        self._base: dict[Path, Prediction] = {}
        # The lane's waiting work (see the module): a store to load, a refresh, a copy to write.
        self._generation = 0  # one per model: a job's result for an older one is dropped
        self._wanted_bundle: Any = None
        self._again = False
        self._ready_layer: PersonalLayer | None = None  # the next refresh may use it as it is
        self._unsaved: PersonalStore | None = None
        # What the person did while the store was loading, done to it once it is there.
        self._corrected_while_loading: set[Path] = set()
        self._forget_when_loaded = False

    # --- state -----------------------------------------------------------------------------------

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
        return self.loading or self._again or self.runner.is_busy(PERSONAL_LANE)

    def set_bundle(self, bundle: Any) -> None:
        """A new model: its own store of corrections, read in the background; its results come as
        new base predictions and show the model's own answers until the store is there."""
        self._labels = tuple(bundle.labels)
        self._base.clear()
        self.store, self.layer = None, None
        self._generation += 1
        self._wanted_bundle = bundle
        self.loading = True
        self._again, self._ready_layer = False, None
        self._corrected_while_loading.clear()
        self._forget_when_loaded = False
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
        if self.loading:
            self._forget_when_loaded = True
            self._corrected_while_loading.clear()  # made before the forget: forgotten too
            return None
        if self.store is None:
            return 0
        gone = self.store.forget(save=False)
        self.refresh(save=True)  # the file goes in the background
        return gone

    def shutdown(self) -> None:
        """Write the corrections not written yet; call it once the runner has stopped.

        The window is closing, and the lane that writes them has stopped: writing them here is
        what keeps the last correction, and nothing else touches the file any more.
        """
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is None:
            return
        try:
            unsaved.save()
        except OSError as error:
            log.warning("the corrections could not be written to %s: %s", unsaved.path, error)

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
        if self.loading:
            self._corrected_while_loading.update(self.photos.record(row).path for row in rows)
            return
        if self.store is None:
            return
        keep, changed = self._keep_corrections(self.store, rows)
        if changed:
            self.refresh(save=True)  # written in the background
        if len(keep) == 1 and self.enabled:
            path, label, embedding = keep[0]
            similar = self.similar(embedding, label, exclude=path)
            if similar:
                self.similar_found.emit(similar, label)

    def _keep_corrections(self, store: PersonalStore, rows: Sequence[int]) -> tuple[Kept, bool]:
        """Put the labels of these rows in `store` (in memory); the ones kept, and whether it changed."""
        keep: Kept = []
        forget: list[Path] = []
        for row in rows:
            record = self.photos.record(row)
            base = self._base.get(record.path, record.prediction)
            if record.label is not None and (record.reviewed or record.corrected_label is not None):
                if base is not None and base.embedding is not None:
                    keep.append((record.path, record.label, base.embedding))
            else:
                forget.append(record.path)
        if forget:  # a photo taken back is no longer a correction
            store.forget(forget, save=False)
        if keep:
            store.add(
                [p for p, _, _ in keep],
                [label for _, label, _ in keep],
                np.stack([e for _, _, e in keep]),
                save=False,
            )
        return keep, bool(keep or forget)

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
        rows = self.layer.nearest_photos(
            embedding, np.stack([row for _, row in usable]), SIMILAR_LIMIT, minimum=SIMILAR_MIN
        )
        return [usable[i][0].path for i, _ in rows]

    def refresh(self, save: bool = False) -> None:
        """Adjust every unreviewed photo to the corrections kept now, in the background; `save`
        writes the store there first."""
        if self.store is None:
            return
        if save:
            self._unsaved = snapshot(self.store)
        self._ask_refresh(None)

    # --- the lane's jobs ---------------------------------------------------------------------------

    def _ask_refresh(self, layer: PersonalLayer | None) -> None:
        """Adjust the photos once the lane is free, with `layer` as it is or (None) one built then."""
        self._again, self._ready_layer = True, layer
        self._start_next()

    def _start_next(self) -> None:
        """Start the lane's next job unless one runs: a new model's store to load (once the old
        one's corrections are written, by a job of their own: a failure to write them must not
        keep the new store from loading), else a refresh, else a write."""
        if self.runner.is_busy(PERSONAL_LANE):
            return
        if self._wanted_bundle is not None and self._unsaved is None:
            bundle, folder, self._wanted_bundle = self._wanted_bundle, self.store_folder, None
            self._start(
                "reading of your corrections",
                lambda context: load_store(bundle, folder),
                self._loaded,
                on_failed=self._load_failed,
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
    ) -> None:
        """Run `job` on the lane after writing the store's newest unsaved copy; its result goes to
        `on_done` unless a newer model came meanwhile. The lane's next job follows either way."""
        unsaved, self._unsaved = self._unsaved, None
        generation = self._generation

        def work(context: TaskContext) -> Any:
            if unsaved is not None:
                unsaved.save()
            return job(context)

        def done(result: Any) -> None:
            if generation == self._generation:
                on_done(result)
            self._start_next()

        def failed(reason: str) -> None:  # the runner has said why, in the status bar and Problems
            if generation == self._generation:
                on_failed()
            self._start_next()

        self.runner.start(Task(kind, work, on_done=done, on_failed=failed, lane=PERSONAL_LANE))

    def _loaded(self, loaded: _Loaded) -> None:
        self.loading = False
        if loaded.store is None:
            if loaded.problem:
                self.warning.emit(loaded.problem)
            self._load_failed()
            return
        if loaded.store.warning:
            self.warning.emit(loaded.store.warning)
        self.store, self._setup, self.layer = loaded.store, loaded.setup, loaded.layer
        if self._catch_up(loaded.store):
            self.refresh(save=True)
        elif self.enabled and self.count and self._base:
            # Results that came while it loaded show the model's own answers: adjust them now.
            self._ask_refresh(loaded.layer)
        self.changed.emit(self.status_text())

    def _load_failed(self) -> None:
        """No store for this model: corrections are not kept, the model's answers stand."""
        self.loading = False
        self._corrected_while_loading.clear()
        self._forget_when_loaded = False
        self.changed.emit(self.status_text())

    def _catch_up(self, store: PersonalStore) -> bool:
        """Do to the store just loaded what the person did while it loaded; whether that changed it."""
        forgot = self._forget_when_loaded and store.forget(save=False) > 0
        rows = [row for row in map(self.photos.row_of, self._corrected_while_loading) if row is not None]
        self._corrected_while_loading.clear()
        self._forget_when_loaded = False
        _, changed = self._keep_corrections(store, rows)
        return forgot or changed

    def _adjusting(
        self, kept: PersonalStore
    ) -> Callable[[TaskContext], tuple[PersonalLayer, list[Prediction]] | None]:
        """The job that adjusts the unreviewed photos to a copy of the store `kept` as it is now."""
        store, ready, self._ready_layer = snapshot(kept), self._ready_layer, None
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
