"""Decoding photos in worker processes, for machines with more cores than threads can use.

Part of every decode holds the GIL (parsing the file, counting JPEG scans, EXIF, the float
conversion): by profile about 1.5 ms of the 4.5 ms a 500 x 375 photo takes, 3-4 ms of a
12-megapixel one. Threads therefore stop scaling after three or four on small photos, and all of
a process's decoding threads together cannot pass roughly 700 small photos/s; processes do not
share that limit. Each worker returns the preprocessed array pickled (600 KB for a 224-pixel
input), and a `PhotoError` survives the trip.

The workers share one decoding memory budget through shared memory, as the threads of one
process share `DECODE_BUDGET`: a budget per process would let each of them hold a whole
100-megapixel photo at once. A worker that dies (a crashing decoder, the out-of-memory killer)
breaks its pool; `ProcessDecodePool.restart` starts a fresh one with a fresh budget.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from catbreed_desktop.core import imaging
from catbreed_desktop.core.decode_budget import DECODE_MEMORY_BUDGET

# At 8 cores and more the default is processes. Below that the cores, not the GIL, limit
# decoding (the engine needs them too), and threads spare the workers' memory and the pickling.
PROCESS_DECODE_MIN_CPUS = 8
# "0" or "1" overrides the automatic choice, for troubleshooting and for tests that replace the
# decoder with a function a worker process could not import.
PROCESS_DECODE_VARIABLE = "CATBREED_DECODE_PROCESSES"

_log = logging.getLogger(__name__)


def processes_by_default() -> bool:
    """Whether `Classifier` decodes in processes when not told: many cores, or the environment says so."""
    setting = os.environ.get(PROCESS_DECODE_VARIABLE, "").strip().lower()
    if setting in ("0", "1", "false", "true", "no", "yes"):
        return setting in ("1", "true", "yes")
    return (os.cpu_count() or 1) >= PROCESS_DECODE_MIN_CPUS


def default_process_workers() -> int:
    """Every core but one (the engine's feeder and the window), and never fewer than two."""
    return max(2, (os.cpu_count() or 1) - 1)


class SharedMemoryBudget:
    """`MemoryBudget`'s weighted first-come-first-served semaphore, shared by processes.

    The state lives in shared memory under a process-shared condition, so the object can be
    handed to worker processes when they start (not later: multiprocessing locks travel only then).
    """

    def __init__(self, capacity: int, context: Any) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget must be at least one byte, not {capacity}")
        self.capacity = int(capacity)
        self._changed = context.Condition()
        self._state = context.RawArray("q", 3)  # bytes in use, next ticket, ticket being served

    @property
    def in_use(self) -> int:
        with self._changed:
            return int(self._state[0])

    @property
    def waiting(self) -> int:
        with self._changed:
            return int(self._state[1] - self._state[2])

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        """Reserve `amount` bytes for the duration of the block, waiting for them to be free."""
        amount = max(0, min(int(amount), self.capacity))  # a too-large request waits for an empty budget
        state = self._state
        with self._changed:
            ticket = state[1]
            state[1] += 1
            while ticket != state[2] or (state[0] and state[0] + amount > self.capacity):
                self._changed.wait()
            state[2] += 1
            state[0] += amount
            self._changed.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._changed:
                state[0] -= amount
                self._changed.notify_all()


def _start_worker(budget: SharedMemoryBudget, started: Any) -> None:
    """Set up a decoding process: the shared budget, Ctrl+C left to the parent, and a head count."""
    # The terminal sends SIGINT to the whole process group; the parent stops the run and the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    imaging.DECODE_BUDGET = budget  # type: ignore[assignment]  # `_decode` looks it up per call
    with started.get_lock():
        started.value += 1


def _start_method() -> str:
    # Never fork: the parent runs ONNX Runtime's and Qt's threads, whose locks a forked child
    # could inherit held. The fork server starts clean once and forks workers from itself; a
    # frozen app (PyInstaller) spawns, the method its `freeze_support` is documented for.
    if getattr(sys, "frozen", False) or "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "forkserver"


class ProcessDecodePool:
    """A process pool started at the first `submit` and kept for later runs until `close`.

    Keeping it saves starting the workers (a fraction of a second each) on every run; the window
    classifies each drop of photos as a run of its own. Where worker processes cannot start at
    all (a script that starts classifying without `if __name__ == "__main__":` re-runs itself in
    every worker and fails), `recover` hands decoding to threads for the pool's lifetime.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"at least one decoding process is needed, not {workers}")
        self.workers = int(workers)
        self._executor: ProcessPoolExecutor | None = None
        self._started: Any = None  # how many workers of the current executor got going
        self._worked = False  # whether any worker of this pool ever got going
        self._threads: ThreadPoolExecutor | None = None  # the fallback, once processes failed

    @property
    def in_threads(self) -> bool:
        """True once decoding fell back to threads."""
        return self._threads is not None

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `function(*args)` in a worker; a pool broken since its last use is replaced first."""
        if self._threads is not None:
            return self._threads.submit(function, *args)
        if self._executor is None:
            self._executor = self._start()
        try:
            return self._executor.submit(function, *args)
        except BrokenProcessPool:
            self.restart()
            self._executor = self._start()
            return self._executor.submit(function, *args)

    def _start(self) -> ProcessPoolExecutor:
        # Workers start as work arrives; the budget and the head count reach them as they start.
        context = multiprocessing.get_context(_start_method())
        self._started = context.Value("q", 0)
        budget = SharedMemoryBudget(DECODE_MEMORY_BUDGET, context)
        return ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_start_worker, initargs=(budget, self._started)
        )

    def recover(self) -> bool:
        """After a worker died: True when workers had been running (a decode crashed; fresh ones
        start at the next `submit`), False when none ever started, and threads decode from now on.
        """
        self.restart()
        if not self._worked:
            _log.warning(
                "decoding processes could not start (does the main script lack "
                "`if __name__ == '__main__':`?); decoding in threads instead"
            )
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="catbreed-decode")
        return self._worked

    def restart(self) -> None:
        """Give up the current workers (they end once idle); the next `submit` starts fresh ones."""
        # Read before the counter goes: the decode that crashed may be from an executor older
        # than the current one, which `submit` may have replaced before its workers started.
        self._worked = self._worked or (self._started is not None and self._started.value > 0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            self._started = None

    def close(self) -> None:
        self.restart()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)


def crashed(future: Future[Any]) -> bool:
    """Whether a finished decode failed because its worker process died, not because of the photo."""
    return not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)
