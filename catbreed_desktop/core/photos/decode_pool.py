"""Decoding photos in worker processes, for machines with more cores than threads can use.

Part of every decode holds the GIL (parsing the file, counting JPEG scans, EXIF, the float
conversion): by profile about 1.5 ms of the 4.5 ms a 500 x 375 photo takes, 3-4 ms of a
12-megapixel one. Threads therefore stop scaling after three or four on small photos, and all of
a process's decoding threads together cannot pass roughly 700 small photos/s; processes do not
share that limit. Each worker returns the preprocessed array pickled (600 KB for a 224-pixel
input), and a `PhotoError` survives the trip.

Each worker has a pipe of its own to the parent and decodes one photo at a time, so a worker that
dies (a crashing decoder, the out-of-memory killer, a `kill`) takes only its own photo with it:
that photo is decoded once more by a fresh worker, and fails if that one dies too. Nothing is
shared between the processes that a dead one could leave locked or half written: no queue, no
lock, no semaphore (a semaphore handed to a starting worker could also be unlinked by the parent
before the worker opened it). The decoding memory budget the workers share, as the threads of one
process share `DECODE_BUDGET` (a budget per process would let each of them hold a whole
100-megapixel photo at once), is kept by the parent: it grants each reservation over the
worker's pipe and takes a dead worker's share back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.photos import decode
from catbreed_desktop.core.photos.decode_budget import DECODE_MEMORY_BUDGET, admits, reservation

# At 8 cores and more the default is processes. Below that the cores, not the GIL, limit
# decoding (the engine needs them too), and threads spare the workers' memory and the pickling.
PROCESS_DECODE_MIN_CPUS = 8
# "0" or "1" overrides the automatic choice, for troubleshooting and for tests that replace the
# decoder with a function a worker process could not import.
PROCESS_DECODE_VARIABLE = "CATBREED_DECODE_PROCESSES"
# A photo is decoded again after its worker died (the out-of-memory killer may have picked a
# worker at random); when the second worker dies as well, the photo is taken to be the cause.
DECODE_ATTEMPTS = 2
# How long `close` waits for a worker to end after asking it to, before killing it.
WORKER_END_SECONDS = 2.0

_log = logging.getLogger(__name__)


class WorkerDied(CatBreedError, RuntimeError):
    """A decode whose worker process ended before answering, at every attempt: the photo fails."""


class DecodeProcessesFailed(CatBreedError, RuntimeError):
    """Decoding processes keep ending or cannot start: the run stops instead of failing photo after photo.

    Exit status 2, as for an engine that cannot run: the run did not finish, and the photos are
    not at fault.
    """


def processes_by_default() -> bool:
    """Whether `Classifier` decodes in processes when not told: many cores, or the environment says so."""
    setting = os.environ.get(PROCESS_DECODE_VARIABLE, "").strip().lower()
    if setting in ("0", "1", "false", "true", "no", "yes"):
        return setting in ("1", "true", "yes")
    return (os.cpu_count() or 1) >= PROCESS_DECODE_MIN_CPUS


def default_process_workers() -> int:
    """Every core but one (the engine's feeder and the window), and never fewer than two."""
    return max(2, (os.cpu_count() or 1) - 1)


def describe_exit(exitcode: int | None) -> str:
    """How a process ended, in words: "killed by SIGKILL", "exit status 70"."""
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


# --- inside a worker process ------------------------------------------------------------------------------


class _BudgetFromParent:
    """`MemoryBudget.hold` for a worker: the parent keeps the budget and grants each reservation."""

    def __init__(self, parent: mp_connection.Connection) -> None:
        self._parent = parent

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        self._parent.send(("hold", int(amount)))
        self._parent.recv()  # the grant; EOF means the parent is gone, and so is the decode
        try:
            yield
        finally:
            self._parent.send(("release",))


def _start_worker(parent: mp_connection.Connection) -> None:
    """Set up a decoding process: its decodes reserve memory in the budget the parent keeps."""
    decode.DECODE_BUDGET = _BudgetFromParent(parent)  # type: ignore[assignment]  # looked up per call


def _serve(parent: mp_connection.Connection, set_up: Callable[[mp_connection.Connection], None]) -> None:
    """A worker's life: set up, say so, then run one task at a time until the parent hangs up."""
    # The terminal sends SIGINT to the whole process group; the parent stops the run and the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        set_up(parent)
    except BaseException as error:  # reported to the parent, which decides what to do without us
        parent.send(("failed", f"{type(error).__name__}: {error}"))
        sys.exit(1)
    parent.send(("ready",))
    while True:
        try:
            task = parent.recv_bytes()
        except (EOFError, OSError):
            return  # the pool was closed, or the parent is gone
        try:
            function, args = ForkingPickler.loads(task)
            outcome: tuple[str, bool, Any] = ("done", True, function(*args))
        except BaseException as error:  # the caller's future carries it, as in the calling process
            outcome = ("done", False, error)
        try:
            parent.send(outcome)
        except (EOFError, OSError):
            return
        except Exception as error:  # the outcome does not pickle; nothing of it was sent
            parent.send(("done", False, RuntimeError(f"the result cannot be sent back ({error})")))


# --- in the calling process ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Task:
    future: Future[Any]
    payload: bytes  # the function and its arguments, pickled when submitted
    deaths: int = 0  # workers that died running it


@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing's Process of the pool's context
    connection: mp_connection.Connection
    ready: bool = False
    task: _Task | None = None
    start_error: str = ""  # what its set-up said before it ended


class _GrantedBudget:
    """The parent's side of the shared budget: `MemoryBudget`'s rules, served to workers' requests."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget must be at least one byte, not {capacity}")
        self.capacity = int(capacity)
        self.in_use = 0
        self._held: dict[_Worker, int] = {}
        self._waiting: deque[tuple[_Worker, int]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def request(self, worker: _Worker, amount: int) -> None:
        self._waiting.append((worker, reservation(amount, self.capacity)))

    def release(self, worker: _Worker) -> None:
        self.in_use -= self._held.pop(worker, 0)

    def forget(self, worker: _Worker) -> None:
        """A worker ended: its share comes back, and its place in the line goes."""
        self.release(worker)
        self._waiting = deque(entry for entry in self._waiting if entry[0] is not worker)

    def grants(self) -> list[_Worker]:
        """The workers whose requests go ahead now, first come first served."""
        granted = []
        while self._waiting and admits(self.in_use, self._waiting[0][1], self.capacity):
            worker, amount = self._waiting.popleft()
            self._held[worker] = amount
            self.in_use += amount
            granted.append(worker)
        return granted


def _context() -> Any:
    """The multiprocessing context workers start in."""
    # Never fork: the parent runs ONNX Runtime's and Qt's threads, whose locks a forked child
    # could inherit held. The fork server starts clean once and forks workers from itself; a
    # frozen app (PyInstaller) spawns, the method its `freeze_support` is documented for.
    if getattr(sys, "frozen", False) or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server imports the decoders (NumPy, Pillow) once, before it starts, so a worker,
    # and the one that replaces a dead worker, starts without importing them again.
    context.set_forkserver_preload(["__main__", __name__])
    return context


def _run_here(task: _Task) -> None:
    """Run a task in the calling process's decoding threads, once processes could not start."""
    if not task.future.set_running_or_notify_cancel():
        return
    try:
        function, args = ForkingPickler.loads(task.payload)
        result = function(*args)
    except BaseException as error:
        task.future.set_exception(error)
    else:
        task.future.set_result(result)


class ProcessDecodePool:
    """Worker processes started as work arrives and kept for later runs until `close`.

    Keeping them saves starting the workers (a fraction of a second each) on every run; the window
    classifies each drop of photos as a run of its own. Where worker processes cannot start at
    all (a script that starts classifying without `if __name__ == "__main__":` re-runs itself in
    every worker and fails), decoding moves to threads for the pool's lifetime. One thread of the
    calling process hands tasks out, reads results and watches the workers.
    """

    def __init__(self, workers: int, budget_bytes: int = DECODE_MEMORY_BUDGET) -> None:
        if workers < 1:
            raise ValueError(f"at least one decoding process is needed, not {workers}")
        self.workers = int(workers)
        self._budget = _GrantedBudget(budget_bytes)
        # Reentrant: a future's done-callbacks run in the dispatching thread, which holds the lock.
        self._lock = threading.RLock()
        self._queue: deque[_Task] = deque()
        self._live: list[_Worker] = []
        self._dispatcher: threading.Thread | None = None
        self._wake_read = self._wake_write = -1
        self._threads: ThreadPoolExecutor | None = None  # the fallback, once processes failed
        self._worked = False  # whether any worker of this pool ever got going
        self._failed_starts = 0  # workers in a row that ended before they got going
        self._closed = False
        self.deaths = 0  # workers that ended unasked, those that could not start included
        self.last_death = ""  # how the last one ended, in words

    @property
    def in_threads(self) -> bool:
        """True once decoding fell back to threads."""
        return self._threads is not None

    @property
    def budget_in_use(self) -> int:
        """Bytes the workers have reserved right now (for tests and diagnostics)."""
        with self._lock:
            return self._budget.in_use

    @property
    def budget_waiting(self) -> int:
        """Workers waiting for their reservation right now (for tests and diagnostics)."""
        with self._lock:
            return self._budget.waiting

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `function(*args)` in a worker; both must pickle (a module-level function)."""
        payload = bytes(ForkingPickler.dumps((function, args)))
        with self._lock:
            if self._closed:
                raise RuntimeError("the decoding pool is closed")
            if self._threads is not None:
                return self._threads.submit(function, *args)
            task = _Task(Future(), payload)
            self._queue.append(task)
            if self._dispatcher is None:
                self._wake_read, self._wake_write = os.pipe()
                os.set_blocking(self._wake_read, False)
                os.set_blocking(self._wake_write, False)
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name="catbreed-decode-processes", daemon=True
                )
                self._dispatcher.start()
            self._wake()
        return task.future

    def close(self) -> None:
        """End the workers (a decode in progress is not waited for) and the dispatching thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            dispatcher = self._dispatcher
            if dispatcher is not None:
                self._wake()
        if dispatcher is not None:
            dispatcher.join(WORKER_END_SECONDS)
            if dispatcher.is_alive():  # reading from a worker that stopped halfway (SIGSTOP): end it
                for worker in list(self._live):
                    worker.process.kill()
                dispatcher.join()
            with self._lock:
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._wake_read = self._wake_write = -1
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def _wake(self) -> None:
        # Called with the lock held, so the pipe cannot be closed (and its number reused) meanwhile.
        with suppress(BlockingIOError):  # full of wake-ups already
            os.write(self._wake_write, b"\0")

    # --- the dispatching thread -------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                    self._start_workers()
                    self._hand_out()
                    live = list(self._live)
                watched: list[Any] = [self._wake_read]
                watched += [worker.connection for worker in live]
                watched += [worker.process.sentinel for worker in live]
                ready = set(mp_connection.wait(watched))
                if self._wake_read in ready:
                    self._drain_wake_ups()
                for worker in live:
                    if worker.connection in ready or worker.process.sentinel in ready:
                        self._listen(worker)
        except BaseException as error:  # a bug here must fail the decodes, not leave them waiting
            _log.exception("the decoding processes' dispatcher failed")
            with self._lock:
                self._closed = True
                self._fail_all(DecodeProcessesFailed(f"decoding processes failed ({error})"))
        finally:
            self._end_workers()

    def _drain_wake_ups(self) -> None:
        with suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass

    def _listen(self, worker: _Worker) -> None:
        """Read one message from a worker, or learn that it ended."""
        message: Any
        try:
            # Read without the lock: a large result takes a while, and `submit` must not wait.
            # Each worker has its own pipe, so a dead one leaves nothing half read: EOF.
            message = worker.connection.recv() if worker.connection.poll() else None
        except (EOFError, OSError):
            message = None
        except Exception as error:  # a result that does not unpickle here fails its decode
            message = ("done", False, error)
        with self._lock:
            if message is None:
                self._bury(worker)
            else:
                self._receive(worker, message)
            for granted in self._budget.grants():
                self._send(granted, ("granted",))

    def _receive(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = self._worked = True
            self._failed_starts = 0
        elif kind == "failed":
            worker.start_error = str(message[1])
        elif kind == "hold":
            self._budget.request(worker, int(message[1]))
        elif kind == "release":
            self._budget.release(worker)
        elif kind == "done":
            self._budget.release(worker)
            task, worker.task = worker.task, None
            if task is not None:
                _, succeeded, value = message
                if succeeded:
                    task.future.set_result(value)
                else:
                    task.future.set_exception(value)

    def _send(self, worker: _Worker, message: tuple[Any, ...]) -> bool:
        try:
            worker.connection.send(message)
        except OSError:  # it is ending; its sentinel says so next
            return False
        return True

    def _bury(self, worker: _Worker) -> None:
        """A worker ended: its photo goes back in line (or fails), and its share of the budget is freed."""
        worker.process.join(WORKER_END_SECONDS)
        if worker.process.is_alive():  # it hung up but did not go: it must not keep a core
            worker.process.kill()
            worker.process.join()
        worker.connection.close()
        self._live.remove(worker)
        self._budget.forget(worker)
        self.deaths += 1
        self.last_death = describe_exit(worker.process.exitcode)
        task = worker.task
        if task is not None:
            task.deaths += 1
            if task.deaths < DECODE_ATTEMPTS:
                self._queue.appendleft(task)
            else:
                task.future.set_exception(WorkerDied(f"its process ended: {self.last_death}"))
        if not worker.ready:
            self._failed_starts += 1
            reason = worker.start_error or self.last_death
            _log.debug("a decoding process could not start (%s)", reason)
            if self._failed_starts >= self.workers:
                killed = (worker.process.exitcode or 0) < 0
                self._give_up_starting(reason, in_threads=not killed)

    def _start_workers(self) -> None:
        """Start workers for the tasks in line that the idle and starting ones cannot take."""
        free = sum(worker.task is None for worker in self._live)
        while not self._closed and len(self._live) < self.workers and len(self._queue) > free:
            context = _context()
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve, args=(theirs, _start_worker), name="catbreed-decode", daemon=True
            )
            try:
                process.start()
            except Exception as error:  # out of processes or memory, a fork server gone
                ours.close()
                self.deaths += 1
                self._failed_starts += 1
                self.last_death = f"could not start: {error}"
                if self._failed_starts >= self.workers:
                    self._give_up_starting(self.last_death, in_threads=True)
                continue
            finally:
                theirs.close()  # the worker's end lives in the worker: its death is our EOF
            self._live.append(_Worker(process, ours))
            free += 1

    def _hand_out(self) -> None:
        for worker in self._live:
            if worker.ready and worker.task is None and (task := self._next_task()) is not None:
                try:
                    worker.connection.send_bytes(task.payload)
                except OSError:
                    self._queue.appendleft(task)  # the worker is ending; the task waits for another
                    continue
                worker.task = task

    def _next_task(self) -> _Task | None:
        """The first task in line that was not cancelled meanwhile, marked as running."""
        while self._queue:
            task = self._queue.popleft()
            # A task back in line after its worker died is running already.
            if task.future.running() or task.future.set_running_or_notify_cancel():
                return task
        return None

    def _give_up_starting(self, reason: str, in_threads: bool) -> None:
        """Workers keep ending before they get going: the tasks in line fail, or move to threads.

        Threads take over when no worker of the pool ever got going and the last one failed by
        itself (a script without a __main__ guard, no processes to be had): processes cannot work
        here. Workers killed as they start say nothing about that.
        """
        self._failed_starts = 0
        if self._worked or not in_threads:
            self._fail_all(DecodeProcessesFailed(f"decoding processes cannot start ({reason})"))
            return
        _log.warning(
            "decoding processes could not start (%s; does the main script lack "
            "`if __name__ == '__main__':`?); decoding in threads instead",
            reason,
        )
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="catbreed-decode")
        for task in self._queue:
            self._threads.submit(_run_here, task)
        self._queue.clear()

    def _fail_all(self, error: BaseException) -> None:
        """Every task in line fails with `error` (or is cancelled, where it never started)."""
        while (task := self._next_task()) is not None:
            task.future.set_exception(error)

    def _end_workers(self) -> None:
        with self._lock:
            workers, self._live = self._live, []
            self._fail_all(RuntimeError("the decoding pool was closed"))
        for worker in workers:
            worker.connection.close()  # an idle worker ends at the EOF
            worker.process.terminate()  # a busy one is not waited for
        for worker in workers:
            worker.process.join(WORKER_END_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            if worker.task is not None and not worker.task.future.done():
                worker.task.future.set_exception(RuntimeError("the decoding pool was closed"))
