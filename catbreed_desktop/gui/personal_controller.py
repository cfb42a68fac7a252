"""Learning from corrections in the window: keeps each correction and updates the other photos.

The controller keeps the model's own prediction of every photo (`base`), so that the answers it
shows are always the model's answer adjusted by the corrections kept now, never adjusted twice.
A new batch of results is adjusted at once (a batch is a few photos). A correction is kept in the
bundle's store, and the photos nobody reviewed yet are adjusted again in the background (lane
"personal"), newest request winning; their records then show the adjusted answer, with the
correction that moved it. Reviewed photos keep what the person said. Turning it off or forgetting
brings back the model's own answers. "Similar photos" are the unreviewed photos nearest to a
corrected one whose answer is not yet that label, for the person to review and label in one go.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
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
        self._again = False  # a refresh was asked for while one ran
        self._again_save = False

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

    def set_bundle(self, bundle: Any) -> None:
        """A new model: its own store of corrections; its results will come as new base predictions."""
        self._labels = tuple(bundle.labels)
        self._base.clear()
        try:
            self.store = PersonalStore(bundle.model_sha256, self.store_folder)
        except PersonalStoreError as error:
            self.store, self.layer = None, None
            self.warning.emit(error_line(error))
            return
        if self.store.warning:
            self.warning.emit(self.store.warning)
        self._setup = layer_setup(bundle)
        self.layer = PersonalLayer.from_store(self.store, self._labels, *self._setup)
        self.changed.emit(self.status_text())

    def set_enabled(self, enabled: bool) -> None:
        if enabled != self.enabled:
            self.enabled = enabled
            self.refresh()

    def forget_all(self) -> int:
        """Forget every correction of this model; the photos get the model's own answers back."""
        if self.store is None:
            return 0
        gone = self.store.forget()
        self.refresh()
        return gone

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
        if self.store is None:
            return
        keep: list[tuple[Path, str, np.ndarray]] = []
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
            self.store.forget(forget, save=False)
        if keep:
            self.store.add(
                [p for p, _, _ in keep],
                [label for _, label, _ in keep],
                np.stack([e for _, _, e in keep]),
                save=False,
            )
        if keep or forget:
            self.refresh(save=True)  # written in the background
        if len(keep) == 1 and self.enabled:
            path, label, embedding = keep[0]
            similar = self.similar(embedding, label, exclude=path)
            if similar:
                self.similar_found.emit(similar, label)

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
        """Adjust every unreviewed photo to the corrections kept now, in the background."""
        if self.store is None:
            return
        if self.runner.is_busy(PERSONAL_LANE):
            self._again = True
            self._again_save = self._again_save or save
            return
        store = copy.copy(self.store)  # its lists and arrays are replaced, never changed in place
        store.labels, store.photo_paths, store.keys = (
            list(store.labels),
            list(store.photo_paths),
            list(store.keys),
        )
        labels, enabled, setup = self._labels, self.enabled, self._setup
        bases = [b for path, b in self._base.items() if not self._reviewed(path)]

        def work(context: TaskContext) -> tuple[PersonalLayer, list[Prediction]] | None:
            if save:
                store.save()
            layer = PersonalLayer.from_store(store, labels if enabled else (), *setup)
            adjusted: list[Prediction] = []
            for start in range(0, len(bases), CHUNK):
                if context.should_stop():
                    return None
                adjusted += layer.adapt(bases[start : start + CHUNK])
            return layer, adjusted

        self.runner.start(Task("learning from corrections", work, on_done=self._adjusted, lane=PERSONAL_LANE))

    def _adjusted(self, result: tuple[PersonalLayer, list[Prediction]] | None) -> None:
        if self._again:
            save, self._again, self._again_save = self._again_save, False, False
            self.refresh(save=save)
            return
        if result is None:
            return
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
