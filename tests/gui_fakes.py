"""Stand-ins for the window's controllers to run against: a task runner without threads, a classifier without a model."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catbreed_desktop.core.classify import Failure, Prediction
from catbreed_desktop.gui.classify_controller import PhotoClassifier
from catbreed_desktop.gui.tasks import TaskRunner, _Running


class InlineRunner(TaskRunner):
    """Runs each task on the calling thread when `run_pending()` is called, in the order started.

    Callbacks and signals come exactly as from the threaded runner (`on_done` after the task is
    over, so it may start the next one), only at a moment the test chooses.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[tuple[str, _Running]] = []
        self.kinds_run: list[str] = []

    def _launch(self, lane: str, running: _Running) -> None:
        running.context.send_progress = lambda done, total: self._progress(lane, running, done, total)
        running.context.send_partial = lambda value: self._partial(running, value)
        self._pending.append((lane, running))

    def run_pending(self) -> None:
        """Run every task started so far, and those their callbacks start, until none is left."""
        while self._pending:
            lane, running = self._pending.pop(0)
            self.kinds_run.append(running.task.kind)
            result, error, details = None, None, ""
            try:
                result = running.task.work(running.context)
            except Exception as failure:  # the runner reports it, as the threaded one does
                error, details = failure, traceback.format_exc()
            self._end(lane, running, result, error, details)


@dataclass
class FakeBundle:
    labels: tuple[str, ...]
    path: Path = Path("/fake/bundle")

    @property
    def num_labels(self) -> int:
        return len(self.labels)


@dataclass
class FakeClassifier:
    """Says each photo is the breed its file name starts with ("Red-1.png": "Red Cat"), at `confidence`.

    Files whose name starts with "broken" fail. `after_each(count)` is called after each result,
    so a test can cancel in the middle of a run.
    """

    labels: tuple[str, ...] = ("Red Cat", "Green Cat", "Blue Cat")
    confidence: float = 0.9
    after_each: Callable[[int], None] = lambda count: None
    provider: str = "Fake engine"
    fallback_notes: list[str] = field(default_factory=list)
    runs: list[list[Path]] = field(default_factory=list)
    closed: bool = False

    @property
    def bundle(self) -> FakeBundle:
        return FakeBundle(self.labels)

    def classify(
        self, paths: Iterable[Path], should_stop: Callable[[], bool] | None = None
    ) -> Iterator[Prediction | Failure]:
        paths = list(paths)
        self.runs.append(paths)
        for count, path in enumerate(paths, start=1):
            if should_stop is not None and should_stop():
                return
            if path.name.startswith("broken"):
                yield Failure(path, "not a photo")
            else:
                label = f"{path.name.split('-')[0]} Cat"
                rest = (1 - self.confidence) / 2
                others = tuple((other, rest) for other in self.labels if other != label)[:2]
                yield Prediction(path, ((label, self.confidence), *others), np.zeros(len(self.labels)))
            self.after_each(count)

    def close(self) -> None:
        self.closed = True


def _fits_the_protocol(fake: FakeClassifier) -> PhotoClassifier:
    """Never called: mypy, run on this file by the test command, checks here that the fake has
    what the controllers use of a classifier, so the tests drive them with what the app gives them."""
    return fake
