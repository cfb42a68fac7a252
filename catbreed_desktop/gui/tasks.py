"""The one runner of the window's background work: scanning, model loading, classifying, sorting, undo, export.

A `Task` is a function of a `TaskContext` plus what to do with its results on the GUI thread. The
runner runs each task on a thread of its own and calls `on_partial`, `on_progress`, then `on_done`
(or `on_failed`) on the GUI thread; `on_done` runs after the thread has ended, so it may start the
next task of its lane at once. Tasks share a lane when they must not overlap (one sort, undo or
export at a time); `start` refuses a task whose lane is busy.

A task that raises is a failure and the window gets one line (`failed`). An expected error (a
`CatBreedError`: a photo, journal or model in the way) is that line; anything else is a bug, and
its full traceback goes to the log file in the data folder (`error_log`). Controllers take the runner as an argument, so tests can hand them
a runner that runs tasks inline, without threads.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from catbreed_desktop.core.errors import CatBreedError, error_line
from catbreed_desktop.gui.error_log import log_failure

# Progress reaches the GUI thread at most this often (plus the final report), whatever the task's pace.
PROGRESS_SECONDS = 0.15


class TaskContext:
    """What a running task may use, from its own thread: stop requests, progress, partial results."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._last_progress = float("-inf")
        # Set by the runner: how progress and partial results reach the GUI thread.
        self.send_progress: Callable[[int, int], None] | None = None
        self.send_partial: Callable[[Any], None] | None = None

    def stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def progress(self, done: int, total: int) -> None:
        """Report progress; calls closer together than `PROGRESS_SECONDS` are dropped, the last one never."""
        now = time.monotonic()
        if self.send_progress is not None and (
            done >= total or now - self._last_progress >= PROGRESS_SECONDS
        ):
            self._last_progress = now
            self.send_progress(done, total)

    def partial(self, value: Any) -> None:
        """Hand a part of the result to the GUI thread now (a batch of predictions, say)."""
        if self.send_partial is not None:
            self.send_partial(value)


@dataclass
class Task:
    """Background work and what the GUI thread does with what it gives."""

    kind: str  # what it is, in the words of the failure message: "sort", "classification", ...
    work: Callable[[TaskContext], Any]
    on_done: Callable[[Any], None] | None = None
    on_failed: Callable[[str], None] | None = None  # after the runner logged it and emitted `failed`
    on_partial: Callable[[Any], None] | None = None
    on_progress: Callable[[int, int], None] | None = None
    lane: str = ""  # tasks of one lane never overlap; "" means the lane named like the kind

    @property
    def lane_name(self) -> str:
        return self.lane or self.kind


@dataclass
class _Running:
    task: Task
    context: TaskContext
    thread: _TaskThread | None = None


class TaskRunner(QObject):
    """Runs tasks on background threads and reports on the GUI thread; see the module's docstring."""

    started = Signal(str)  # kind
    progress = Signal(str, int, int)  # kind, done, total
    failed = Signal(str, str, bool)  # kind, the reason in one line, whether a traceback went to the log
    finished = Signal(str)  # kind, after on_done or on_failed

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: dict[str, _Running] = {}
        self._closed = False

    def start(self, task: Task) -> bool:
        """Start `task`; False (and nothing started) while its lane is busy or after `shutdown`."""
        lane = task.lane_name
        if self._closed or lane in self._running:
            return False
        running = _Running(task, TaskContext())
        self._running[lane] = running
        self.started.emit(task.kind)
        self._launch(lane, running)
        return True

    def is_busy(self, lane: str | None = None) -> bool:
        """Whether a task runs in `lane`, or in any lane."""
        return lane in self._running if lane is not None else bool(self._running)

    def running_threads(self) -> list[QThread]:
        """The threads of the tasks running now (a test checks they are joined on close)."""
        return [item.thread for item in self._running.values() if item.thread is not None]

    def stop(self, lane: str) -> None:
        """Ask the task of `lane` to stop; it ends at its next look at `should_stop`."""
        running = self._running.get(lane)
        if running is not None:
            running.context.stop()

    def stop_and_wait(self, lane: str) -> None:
        """Stop the task of `lane` and wait for it: its `on_done` has run when this returns.

        Partial results it handed over but the GUI thread has not received yet are dropped.
        """
        running = self._running.get(lane)
        if running is None:
            return
        running.context.stop()
        thread = running.thread
        if thread is not None:
            thread.wait()
            self._end(lane, running, thread.result, thread.error, thread.details)

    def shutdown(self) -> None:
        """Stop every task and wait for its thread; no callback runs afterwards."""
        self._closed = True
        running = list(self._running.values())
        self._running.clear()
        for item in running:
            item.context.stop()
        for item in running:
            if item.thread is not None:
                item.thread.wait()

    # --- running: one thread per task; a subclass may run tasks otherwise -----------------------

    def _launch(self, lane: str, running: _Running) -> None:
        # No parent: the thread is freed with its last reference once it ended (`_thread_ended`);
        # deleteLater on a child of the runner crashed PySide when the runner went first.
        thread = _TaskThread(running.task.work, running.context)
        running.context.send_progress = thread.progress_made.emit
        running.context.send_partial = thread.partial_made.emit
        thread.progress_made.connect(lambda done, total: self._progress(lane, running, done, total))
        thread.partial_made.connect(lambda value: self._partial(running, value))
        thread.finished.connect(lambda: self._thread_ended(lane, running, thread))
        running.thread = thread
        thread.start()

    def _thread_ended(self, lane: str, running: _Running, thread: _TaskThread) -> None:
        thread.wait()
        for signal in (thread.progress_made, thread.partial_made, thread.finished):
            signal.disconnect()  # the connections hold the thread: without them it can be freed
        self._end(lane, running, thread.result, thread.error, thread.details)
        running.thread = None

    def _progress(self, lane: str, running: _Running, done: int, total: int) -> None:
        if self._running.get(lane) is not running:
            return  # shut down meanwhile
        if running.task.on_progress is not None:
            running.task.on_progress(done, total)
        self.progress.emit(running.task.kind, done, total)

    def _partial(self, running: _Running, value: Any) -> None:
        if running in self._running.values() and running.task.on_partial is not None:
            running.task.on_partial(value)

    def _end(
        self, lane: str, running: _Running, result: Any, error: BaseException | None, details: str
    ) -> None:
        if self._running.get(lane) is not running:
            return  # shut down meanwhile: nobody is waiting for the result
        del self._running[lane]
        task = running.task
        if error is not None:
            # An expected error (a CatBreedError) says all in its message; anything else is a bug,
            # whose traceback goes to the log file.
            expected = isinstance(error, CatBreedError)
            reason = (
                error_line(error)
                if isinstance(error, CatBreedError)
                else log_failure(task.kind, error, details)
            )
            self.failed.emit(task.kind, reason, not expected)
            if task.on_failed is not None:
                task.on_failed(reason)
        elif task.on_done is not None:
            task.on_done(result)
        self.finished.emit(task.kind)


class _TaskThread(QThread):
    """Runs one task's work and keeps its result or error for the runner."""

    progress_made = Signal(int, int)
    partial_made = Signal(object)

    def __init__(self, work: Callable[[TaskContext], Any], context: TaskContext) -> None:
        super().__init__()
        self._work = work
        self._context = context
        self.result: Any = None
        self.error: BaseException | None = None
        self.details = ""

    def run(self) -> None:
        try:
            self.result = self._work(self._context)
        except Exception as error:  # reported by the runner; the thread must end cleanly
            self.error = error
            self.details = traceback.format_exc()
