"""Background threads that run the core for the window: scan, load model, classify, sort, undo, export.

Each is a QThread whose signals reach the window through queued connections, so the core runs
off the GUI thread and the window only receives results. Classification results travel in
lists, a batch at most every `BATCH_SECONDS`, so the GUI thread does one small update per batch
whatever the number of photos. Every thread can be asked to stop and is joined on exit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

BATCH_SECONDS = 0.15


class StoppableThread(QThread):
    """A QThread with a stop flag the core's `should_stop` callbacks can poll from any thread."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        self._stop_requested.set()

    def should_stop(self) -> bool:
        return self._stop_requested.is_set()

    def stop_and_wait(self) -> None:
        self.stop()
        self.wait()


class TaskThread(StoppableThread):
    """Runs `task(progress, should_stop)` once; `finished_with(result)` or `failed(message)` follows.

    `progress(done, total)` may be called from the task as often as it likes: it is forwarded at
    most every `BATCH_SECONDS`, plus the final call.
    """

    progress = Signal(int, int)
    finished_with = Signal(object)
    failed = Signal(str)

    def __init__(
        self, task: Callable[[Callable[[int, int], None], Callable[[], bool]], Any], parent=None
    ) -> None:
        super().__init__(parent)
        self._task = task
        self._last_progress = 0.0

    def _progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last_progress >= BATCH_SECONDS:
            self._last_progress = now
            self.progress.emit(done, total)

    def run(self) -> None:
        try:
            result = self._task(self._progress, self.should_stop)
        except Exception as error:  # reported in the window; the thread must end cleanly
            self.failed.emit(_describe(error))
            return
        self.finished_with.emit(result)


class ScanThread(StoppableThread):
    """Expands dropped or chosen files and folders into photo paths."""

    scanned = Signal(object)  # list[Path]
    failed = Signal(str)

    def __init__(self, inputs: Sequence[Path], recursive: bool, parent=None) -> None:
        super().__init__(parent)
        self._inputs = list(inputs)
        self._recursive = recursive

    def run(self) -> None:
        from catbreed_desktop.core.imaging import iter_photo_paths

        found: list[Path] = []
        problems: list[str] = []
        for item in self._inputs:
            if self.should_stop():
                break
            try:
                found.extend(iter_photo_paths([item], recursive=self._recursive))
            except (OSError, ValueError) as error:
                problems.append(_describe(error))
        self.scanned.emit(found)
        for problem in problems:
            self.failed.emit(problem)


class ModelLoadThread(StoppableThread):
    """Loads a bundle and starts its engine; `loaded(classifier)` or `failed(message)`."""

    loaded = Signal(object)
    failed = Signal(str)

    def __init__(self, model_path: Path, engine: str, batch_size: int, parent=None) -> None:
        super().__init__(parent)
        self.model_path = model_path
        self._engine = engine
        self._batch_size = batch_size

    def run(self) -> None:
        try:
            from catbreed_desktop.core.bundle import load_bundle
            from catbreed_desktop.core.classify import Classifier

            bundle = load_bundle(self.model_path)
            # One core stays free for the window, so it keeps drawing while a large folder runs.
            spare = max(1, (os.cpu_count() or 2) - 1)
            classifier = Classifier(
                bundle,
                engine=self._engine,
                batch_size=self._batch_size,
                top_k=3,
                threads=spare,
                decode_workers=min(4, spare),
            )
        except Exception as error:  # a bundle or engine problem is shown in the window, in words
            self.failed.emit(_describe(error))
            return
        if self.should_stop():
            classifier.close()
            return
        self.loaded.emit(classifier)


class ClassifyThread(StoppableThread):
    """Classifies paths with the core's Classifier; results come out in lists, not one by one."""

    results = Signal(object)  # list[Prediction | Failure]
    progress = Signal(int, int, float)  # done, total, photos per second

    def __init__(self, classifier: Any, paths: Sequence[Path], parent=None) -> None:
        super().__init__(parent)
        self._classifier = classifier
        self._paths = list(paths)
        self.total = len(self._paths)

    def run(self) -> None:
        started = time.monotonic()
        last_emit = started
        pending: list[Any] = []
        done = 0
        try:
            for outcome in self._classifier.classify(self._paths, should_stop=self.should_stop):
                pending.append(outcome)
                done += 1
                now = time.monotonic()
                if now - last_emit >= BATCH_SECONDS:
                    self._emit(pending, done, started, now)
                    pending, last_emit = [], now
        except Exception as error:  # an engine failure ends the run; the window says why
            from catbreed_desktop.core.classify import Failure

            reason = f"classification stopped: {_describe(error)}"
            pending.extend(Failure(path, reason) for path in self._paths[done:])
            done = len(self._paths)
        self._emit(pending, done, started, time.monotonic())

    def _emit(self, pending: list[Any], done: int, started: float, now: float) -> None:
        if pending:
            self.results.emit(pending)
        rate = done / (now - started) if now > started else 0.0
        self.progress.emit(done, self.total, rate)


def _describe(error: BaseException) -> str:
    text = str(error)
    return text if text else type(error).__name__
