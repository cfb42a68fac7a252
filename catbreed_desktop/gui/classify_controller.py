"""Model loading, finding photos and classifying them: `ClassifyController`, the window's classification.

It owns the classifier, the queue of photos waiting for it and the runs of the task runner that
load the model, scan folders and classify; it writes predictions into the photo model and says
what happened through signals. A photo is marked `queued` only while a loaded model will really
get to it: photos of a cancelled run, a failed run or a window without a model show as not
classified, and adding them again or *Classify again* queues them once more.

`open_classifier` is a parameter, so tests drive the controller with a fake classifier and an
inline task runner: no model, no threads. `PhotoClassifier` is what the controller (and the
window) need of a classifier; the real `Classifier` and the tests' fake both satisfy it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject, Signal

from catbreed_desktop.core.bundle import DEFAULT_MIN_CONFIDENCE, ModelBundle, load_bundle
from catbreed_desktop.core.classify import Classifier, Failure, Prediction
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.names import TRITON, Preference
from catbreed_desktop.core.errors import CatBreedError, error_line
from catbreed_desktop.core.photos import iter_photo_paths
from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.gui.photo_model import PhotoListModel
from catbreed_desktop.gui.tasks import Task, TaskContext, TaskRunner

# Results travel to the GUI thread in lists, one list at most this often, so the window does one
# small update per batch whatever the number of photos.
BATCH_SECONDS = 0.15
LOAD_LANE, SCAN_LANE, CLASSIFY_LANE = "model", "scan", "classification"

Problems = list[tuple[Path | None, str]]


class ClassifierBundle(Protocol):
    """What the window reads of a classifier's model bundle."""

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def path(self) -> Path: ...

    @property
    def num_labels(self) -> int: ...


class PhotoClassifier(Protocol):
    """What the window needs of a classifier: `core.classify.Classifier`, or a test's stand-in."""

    @property
    def bundle(self) -> ClassifierBundle: ...

    @property
    def provider(self) -> str: ...

    @property
    def fallback_notes(self) -> list[str]: ...

    def classify(
        self, paths: Iterable[Path], *, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[Prediction | Failure]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelInfo:
    """The model now in use, for the window to show."""

    provider: str  # the engine really running it
    labels: tuple[str, ...]
    path: Path
    notes: tuple[str, ...]  # why faster engines were passed over
    # The unsure threshold the bundle recommends (or the default for a bundle without one), and why.
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    min_confidence_source: str = ""


@dataclass(frozen=True)
class _LoadFailure:
    message: str


def open_classifier(model_path: Path, engine: Preference, batch_size: int, server: str = "") -> Classifier:
    """The bundle at `model_path` on `engine`, leaving one core free so the window keeps drawing.

    `server` is the Triton server's URL, for the "triton" engine.
    """
    spare = max(1, (os.cpu_count() or 2) - 1)
    bundle = load_bundle(model_path)
    return Classifier(
        bundle,
        engine=create_engine(bundle, TRITON, batch_size, server=server) if engine == TRITON else engine,
        batch_size=batch_size,
        top_k=3,
        threads=spare,
        decode_workers=min(4, spare),
    )


def _unsure_rule(bundle: ClassifierBundle) -> tuple[float, str]:
    """The bundle's recommended unsure threshold and its source in words."""
    if not isinstance(bundle, ModelBundle):
        # A stand-in classifier's bundle (tests, scripts) has no rule: it gets a real bundle's without one.
        return DEFAULT_MIN_CONFIDENCE, "the default: this model bundle recommends no threshold"
    return bundle.default_min_confidence, bundle.min_confidence_source()


def classify_in_batches(classifier: PhotoClassifier, paths: Sequence[Path], context: TaskContext) -> bool:
    """Classify `paths`, handing results over in lists; True when the run was stopped early."""
    pending: list[Prediction | Failure] = []
    last_handed = time.monotonic()
    done = 0
    for outcome in classifier.classify(paths, should_stop=context.should_stop):
        pending.append(outcome)
        done += 1
        context.progress(done, len(paths))
        if time.monotonic() - last_handed >= BATCH_SECONDS:
            context.partial(pending)
            pending, last_handed = [], time.monotonic()
    if pending:
        context.partial(pending)
    return done < len(paths)


def scan_inputs(inputs: Sequence[Path], recursive: bool, context: TaskContext) -> tuple[list[Path], Problems]:
    """The photos in `inputs` (files, folders), and a problem for each input that could not be read."""
    found: list[Path] = []
    problems: Problems = []
    for item in inputs:
        if context.should_stop():
            break
        try:
            found.extend(iter_photo_paths([item], recursive=recursive))
        except (OSError, ValueError) as error:
            problems.append((item, str(error) or type(error).__name__))
    return found, problems


class ClassifyController(QObject):
    """Loads the model, adds photos and classifies them in the background; see the module's docstring."""

    model_loading = Signal()
    model_ready = Signal(object)  # ModelInfo
    model_failed = Signal(str)
    running_changed = Signal(bool)  # whether a classification run is going on
    progress = Signal(int, int, float)  # done, total, photos per second
    classified = Signal(object)  # list[PhotoRecord] that just got their prediction
    finished = Signal(bool)  # the queue ran empty; True when it ended by a cancel or a failure
    message = Signal(str)  # for the status bar
    problems = Signal(object)  # Problems: files that could not be read or classified

    def __init__(
        self,
        photos: PhotoListModel,
        runner: TaskRunner,
        open_classifier: Callable[[Path, Preference, int, str], PhotoClassifier] = open_classifier,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.photos = photos
        self.runner = runner
        self._open_classifier = open_classifier
        self.classifier: PhotoClassifier | None = None
        self.model_error: str | None = None
        self.sources: list[Path] = []  # what the person added: folders and files, absolute
        self._queue: list[Path] = []
        self._run_paths: list[Path] = []
        self._run_started = 0.0
        self._load_generation = 0
        self._wanted_load: tuple[Path, Preference, int, str] | None = None  # model, engine, batch, server
        self._scans: list[tuple[list[Path], bool]] = []
        self._closed = False

    # --- the model -------------------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.classifier.bundle.labels) if self.classifier is not None else ()

    def load_model(self, model_path: Path, engine: Preference, batch_size: int, server: str = "") -> None:
        """(Re)load the model in the background; the photos shown are classified again with it."""
        if self._closed:
            return
        # No run may start with the old classifier while the current one is being stopped.
        old, self.classifier = self.classifier, None
        self.runner.stop_and_wait(CLASSIFY_LANE)
        if old is not None:
            old.close()
            self._queue = [record.path for record in self.photos.records]  # the new model does them all
        self.photos.set_queued(self._queue, False)  # until the new model is there
        self._load_generation += 1
        self._wanted_load = (model_path, engine, batch_size, server)
        self.model_loading.emit()
        if self.runner.is_busy(LOAD_LANE):
            self.runner.stop(LOAD_LANE)  # its result is dropped; this load starts when it ends
            return
        self._start_load()

    def _start_load(self) -> None:
        if self._wanted_load is None or self._closed:
            return
        model_path, engine, batch_size, server = self._wanted_load
        generation = self._load_generation
        self._wanted_load = None

        def load(context: TaskContext) -> PhotoClassifier | _LoadFailure | None:
            try:
                classifier = self._open_classifier(model_path, engine, batch_size, server)
            except (CatBreedError, OSError) as error:  # a missing or unusable model: told in the banner
                return _LoadFailure(error_line(error) if isinstance(error, CatBreedError) else str(error))
            if context.should_stop():
                classifier.close()
                return None
            return classifier

        self.runner.start(
            Task(
                "model loading",
                load,
                on_done=lambda result: self._loaded(result, generation),
                on_failed=lambda reason: self._load_failed(reason, generation),
                lane=LOAD_LANE,
            )
        )

    def _loaded(self, result: PhotoClassifier | _LoadFailure | None, generation: int) -> None:
        if generation != self._load_generation or self._closed:
            if result is not None and not isinstance(result, _LoadFailure):
                result.close()  # a newer load was asked for meanwhile
            self._start_load()
            return
        if result is None:
            return
        if isinstance(result, _LoadFailure):
            self._load_failed(result.message, generation)
            return
        self.classifier = result
        self.model_error = None
        bundle = result.bundle
        self.model_ready.emit(
            ModelInfo(
                result.provider,
                tuple(bundle.labels),
                Path(bundle.path),
                tuple(result.fallback_notes),
                *_unsure_rule(bundle),
            )
        )
        self.message.emit(f"Model loaded: {plural(bundle.num_labels, 'breed')} from {printable(bundle.path)}")
        self.photos.set_queued(self._queue, True)
        self._start_run()

    def _load_failed(self, message: str, generation: int) -> None:
        if generation != self._load_generation:
            self._start_load()
            return
        self.model_error = message
        self.model_failed.emit(message)

    # --- adding photos ---------------------------------------------------------------------------

    def add_inputs(self, inputs: Iterable[str | Path], recursive: bool) -> None:
        """Add files and folders (folders with sub-folders when `recursive`); they are scanned off-thread."""
        # Absolute, not resolved: the details pane names the file as given, links included.
        paths = [Path(os.path.abspath(Path(p).expanduser())) for p in inputs]
        if not paths or self._closed:
            return
        self.sources.extend(p for p in paths if p not in self.sources)
        self._scans.append((paths, recursive))
        self.message.emit("Looking for photos…")
        self._start_scan()

    def _start_scan(self) -> None:
        if not self._scans or self.runner.is_busy(SCAN_LANE):
            return
        paths, recursive = self._scans.pop(0)
        self.runner.start(
            Task(
                "scan",
                lambda context: scan_inputs(paths, recursive, context),
                on_done=self._scanned,
                on_failed=lambda reason: self._start_scan(),
                lane=SCAN_LANE,
            )
        )

    def _scanned(self, result: tuple[list[Path], Problems]) -> None:
        found, problems = result
        if problems:
            self.problems.emit(problems)
        self.add_found(found)
        self._start_scan()

    def add_found(self, paths: Sequence[Path], from_watch: bool = False) -> None:
        """Show these photos and classify the ones not classified yet (again, after a cancel)."""
        if self._closed:
            return
        new = self.photos.add_paths(paths, from_watch=from_watch)
        fresh = set(new)
        again = [path for path in paths if path not in fresh and self._waits_for_classification(path)]
        if new and from_watch:
            self.message.emit(f"{plural(len(new), 'new photo')} in watched folders")
        elif new:
            again_text = f"; {plural(len(again), 'photo')} not classified before will be classified too"
            self.message.emit(f"Added {plural(len(new), 'photo')}{again_text if again else ''}")
        elif again:
            self.message.emit(
                f"No new photos; classifying {plural(len(again), 'photo')} not classified before"
            )
        else:
            self.message.emit("No new photos found")
        self._enqueue([*new, *again])

    def classify_again(self) -> int:
        """Queue every photo that is not classified (a cancelled or failed run's); how many."""
        again = [r.path for r in self.photos.records if not r.classified and not r.queued]
        if again:
            self.message.emit(f"Classifying {plural(len(again), 'photo')} again")
        self._enqueue(again)
        return len(again)

    def _waits_for_classification(self, path: Path) -> bool:
        row = self.photos.row_of(path)
        if row is None:
            return False
        record = self.photos.record(row)
        return not record.classified and not record.queued and path not in self._queue

    def _enqueue(self, paths: list[Path]) -> None:
        self._queue.extend(paths)
        if self.classifier is not None:
            self.photos.set_queued(paths, True)
        self._start_run()

    # --- classifying -----------------------------------------------------------------------------

    def _start_run(self) -> None:
        if self.classifier is None or self.runner.is_busy(CLASSIFY_LANE) or not self._queue or self._closed:
            return
        paths, self._queue = self._queue, []
        classifier = self.classifier
        self._run_paths = paths
        self._run_started = time.monotonic()
        self.running_changed.emit(True)
        self.message.emit(f"Classifying {plural(len(paths), 'photo')}…")
        self.progress.emit(0, len(paths), 0.0)
        self.runner.start(
            Task(
                "classification",
                lambda context: classify_in_batches(classifier, paths, context),
                on_done=self._run_ended,
                on_failed=lambda reason: self._run_ended(True),
                on_partial=self._results,
                on_progress=self._progress,
                lane=CLASSIFY_LANE,
            )
        )

    def _results(self, outcomes: list[Prediction | Failure]) -> None:
        failures = [o for o in outcomes if isinstance(o, Failure)]
        predictions = [o for o in outcomes if not isinstance(o, Failure)]
        changed = self.photos.apply_predictions(predictions)
        self.photos.set_queued((record.path for record in changed), False)
        if failures:
            self.photos.remove_paths([f.path for f in failures])
            self.problems.emit([(f.path, f.reason) for f in failures])
        if changed:
            self.classified.emit(changed)

    def _progress(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self._run_started
        self.progress.emit(done, total, done / elapsed if elapsed > 0 else 0.0)

    def _run_ended(self, stopped: bool) -> None:
        # Photos of the run that got no result (stopped, or the engine failed) are not classified.
        self.photos.set_queued(self._run_paths, False)
        self._run_paths = []
        if self._closed:
            return
        if self._queue and self.classifier is not None:
            self._start_run()
            return
        self.running_changed.emit(False)
        self.message.emit("Classification cancelled" if stopped else "Classification finished")
        self.finished.emit(stopped)

    def cancel(self) -> bool:
        """Stop classifying: the photos not done yet stay, not classified; False when nothing ran."""
        if not self._queue and not self.runner.is_busy(CLASSIFY_LANE):
            return False
        self.photos.set_queued(self._queue, False)
        self._queue.clear()
        self.runner.stop(CLASSIFY_LANE)
        self.message.emit("Cancelling…")
        return True

    def clear(self) -> None:
        """Forget every photo (the model stays)."""
        self._queue.clear()
        self.runner.stop_and_wait(CLASSIFY_LANE)
        self.sources.clear()
        self.photos.clear()

    def is_busy(self) -> bool:
        """Whether a scan, model load or classification runs, or photos wait for a loaded model."""
        lanes = (LOAD_LANE, SCAN_LANE, CLASSIFY_LANE)
        return (
            any(self.runner.is_busy(lane) for lane in lanes)
            or bool(self._scans)
            or (bool(self._queue) and self.classifier is not None)
        )

    def shutdown(self) -> None:
        """Stop the work (the runner joins the threads) and close the classifier."""
        self._closed = True
        self._queue.clear()
        self._scans.clear()
        for lane in (CLASSIFY_LANE, SCAN_LANE, LOAD_LANE):
            self.runner.stop(lane)
        self.runner.stop_and_wait(CLASSIFY_LANE)
        if self.classifier is not None:
            self.classifier.close()
            self.classifier = None
