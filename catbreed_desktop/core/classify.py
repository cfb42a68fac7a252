"""The classification pipeline: photo files in, one `Prediction` or `Failure` per file out, in order.

A small thread pool decodes and preprocesses photos ahead of the engine (PIL releases the GIL
while decoding), so the engine works on one batch while the next is being read; on machines of
8 cores and more a pool of processes does it instead (`decode_pool`), since the part of decoding
that holds the GIL stops threads scaling there. A file that cannot be read becomes a `Failure`
and the rest of its batch is classified as usual; so does a photo whose decoding process died at
every attempt. When decoding processes keep dying (the out-of-memory killer, a `kill`, many
photos that crash the decoder), the run stops with `DecodeProcessesFailed` instead. `should_stop` is
polled between batches and while waiting for a decode, so a run stops within a fraction of a
second even while a slow file is being decoded: that decode is left to finish on its own.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from catbreed_desktop.core.bundle import EMBEDDING_NAME, LOGITS_NAME, BundleError, ModelBundle
from catbreed_desktop.core.engines import Engine, create_engine, softmax
from catbreed_desktop.core.engines.base import ModelOutputError, check_outputs
from catbreed_desktop.core.engines.names import AUTO, DEFAULT_BATCH_SIZE, Preference
from catbreed_desktop.core.ood import OodConfigError, OodDetector
from catbreed_desktop.core.photos import PhotoError, load_and_preprocess, preprocess, stack_batch
from catbreed_desktop.core.photos.decode_pool import (
    DecodeProcessesFailed,
    ProcessDecodePool,
    WorkerDied,
    default_process_workers,
    processes_by_default,
)

ProgressCallback = Callable[[int, int], None]
StopCallback = Callable[[], bool]

# How often a wait for a decode looks at `should_stop`: Cancel in the window must take effect
# within a second, whatever file the decoders are busy with.
STOP_POLL_SECONDS = 0.1
# Decoding processes that may die in one run before it stops, at least (a photo that crashes the
# decoder costs two); a pool of many workers may lose several at once to the out-of-memory killer.
WORKER_DEATHS_PER_RUN = 10


@dataclass(frozen=True)
class Prediction:
    """The breeds a photo most likely shows, best first, with calibrated probabilities."""

    path: Path
    top: tuple[tuple[str, float], ...]
    probabilities: np.ndarray = field(compare=False, repr=False)
    ood_score: float | None = None
    is_cat: bool = True
    # The model's embedding of the photo (float32), where the model has one: the personal layer
    # compares photos with it.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Set by the personal layer where it changed the model's answer: the correction that moved it.
    moved_by: str | None = field(default=None, compare=False)

    @property
    def personal(self) -> bool:
        """Whether the person's own corrections, not the model alone, gave this answer."""
        return self.moved_by is not None

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        return self.top[0][1]


@dataclass(frozen=True)
class Failure:
    """A file that could not be classified, and why in words."""

    path: Path
    reason: str


class Classifier:
    """A bundle on the best available engine, classifying files or decoded photos in batches."""

    def __init__(
        self,
        bundle: ModelBundle,
        engine: Preference | Engine = AUTO,
        batch_size: int = DEFAULT_BATCH_SIZE,
        top_k: int = 3,
        *,
        fp16: bool = True,
        threads: int | None = None,
        decode_workers: int | None = None,
        decode_in_processes: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {batch_size}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        self.bundle = bundle
        self.batch_size = int(batch_size)
        self.top_k = min(int(top_k), bundle.num_labels)
        # None: processes on machines of `PROCESS_DECODE_MIN_CPUS` cores or more, else threads.
        self.decode_in_processes = (
            processes_by_default() if decode_in_processes is None else decode_in_processes
        )
        if not decode_workers:
            decode_workers = (
                default_process_workers() if self.decode_in_processes else min(4, os.cpu_count() or 1)
            )
        self.decode_workers = max(1, int(decode_workers))
        self._processes = ProcessDecodePool(self.decode_workers) if self.decode_in_processes else None
        self._ood = _ood_detector(bundle)
        if isinstance(engine, Engine):
            self.engine = engine
        else:
            self.engine = create_engine(
                bundle, engine, batch_size=self.batch_size, fp16=fp16, threads=threads
            )
        if self._ood is not None and not self.engine.has_embedding:
            self.engine.close()
            raise BundleError(
                f"{bundle.path}: bundle.json has an 'ood' section but the model has no "
                f"{EMBEDDING_NAME!r} output to score"
            )

    @property
    def provider(self) -> str:
        """What really runs the model, e.g. "TensorRT", "ONNX Runtime CUDA", "ONNX Runtime CPU"."""
        return self.engine.provider

    @property
    def fallback_notes(self) -> list[str]:
        """Why faster engines were passed over when the engine was chosen automatically."""
        return self.engine.fallback_notes

    def close(self) -> None:
        if self._processes is not None:
            self._processes.close()
        self.engine.close()

    def classify(
        self,
        paths: Iterable[Path],
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Iterator[Prediction | Failure]:
        """Yield a `Prediction` or `Failure` for each path, in the order given.

        `on_progress(done, total)` is called at the start and after every batch; when
        `should_stop()` turns true the run ends before the next batch, without waiting for
        decodes in progress.
        """
        path_list = [Path(p) for p in paths]
        total = len(path_list)
        if on_progress:
            on_progress(0, total)
        spec = self.bundle.preprocessing
        # Enough decodes in flight to fill the next batch while the engine runs the current one.
        ahead = 2 * self.batch_size + self.decode_workers
        # Many unreadable files in a row still reach the caller promptly.
        most_items = 4 * self.batch_size
        source = iter(path_list)
        pending: deque[tuple[Path, Future[np.ndarray]]] = deque()
        pool: Executor | ProcessDecodePool = self._processes or ThreadPoolExecutor(
            self.decode_workers, thread_name_prefix="catbreed-decode"
        )
        check_workers = self._worker_deaths_check()

        def submit(path: Path) -> Future[np.ndarray]:
            return pool.submit(load_and_preprocess, path, spec)

        def submit_ahead() -> None:
            while len(pending) < ahead and (path := next(source, None)) is not None:
                pending.append((path, submit(path)))

        stopped = False
        try:
            submit_ahead()
            done = 0
            items: list[tuple[Path, np.ndarray | Failure]] = []
            arrays = 0
            while pending or items:
                if pending and arrays < self.batch_size and len(items) < most_items:
                    path, future = pending[0]
                    try:
                        if not _finished(future, should_stop, check_workers):
                            stopped = True
                            return
                        outcome = _decoded(path, future)
                    except DecodeProcessesFailed:
                        stopped = True  # the decodes in progress may never end: not waited for
                        raise
                    pending.popleft()
                    submit_ahead()
                    arrays += not isinstance(outcome, Failure)
                    items.append((path, outcome))
                    continue
                if should_stop is not None and should_stop():
                    stopped = True
                    return
                yield from self._classify_items(items)
                done += len(items)
                items, arrays = [], 0
                if on_progress:
                    on_progress(done, total)
        finally:
            if isinstance(pool, ProcessDecodePool):
                # The pool stays for the next run; decodes not started are dropped from it.
                running = [future for _, future in pending if not future.cancel()]
                if not stopped:
                    wait(running)
            else:
                pool.shutdown(wait=False, cancel_futures=True)
                if not stopped:
                    # Nothing is left running after a whole run; a caller that drops the iterator
                    # early waits for the decodes in progress, bounded by the decoding limits.
                    pool.shutdown(wait=True)

    def _worker_deaths_check(self) -> Callable[[], None]:
        """A check that raises `DecodeProcessesFailed` once too many decoding processes died in this run."""
        processes = self._processes
        if processes is None:
            return lambda: None
        limit = max(WORKER_DEATHS_PER_RUN, 2 * processes.workers)
        before = processes.deaths

        def check() -> None:
            died = processes.deaths - before
            if died > limit:
                raise DecodeProcessesFailed(
                    f"decoding processes keep ending ({died} during this run, the last "
                    f"{processes.last_death}); stopped"
                )

        return check

    def classify_images(self, images: Sequence[Image.Image]) -> list[Prediction | Failure]:
        """Predictions for photos already decoded as RGB images; their `path` is Path("")."""
        spec = self.bundle.preprocessing
        predictions: list[Prediction | Failure] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                preprocess(image.convert("RGB"), spec) for image in images[start : start + self.batch_size]
            ]
            predictions.extend(self._predict_arrays([Path("")] * len(chunk), chunk))
        return predictions

    def _classify_items(self, items: list[tuple[Path, np.ndarray | Failure]]) -> list[Prediction | Failure]:
        decoded = [(path, array) for path, array in items if not isinstance(array, Failure)]
        predictions = iter(self._predict_arrays([p for p, _ in decoded], [a for _, a in decoded]))
        return [outcome if isinstance(outcome, Failure) else next(predictions) for _, outcome in items]

    def _predict_arrays(
        self, paths: Sequence[Path], arrays: Sequence[np.ndarray]
    ) -> list[Prediction | Failure]:
        """One outcome per photo: a `Prediction`, or a `Failure` where the model gave nothing usable."""
        if not arrays:
            return []
        try:
            # Checked here as well as in the engine, so that every engine (TensorRT too) is held to
            # the bundle: a logits row wider than the labels would index past them.
            outputs = check_outputs(self.engine.run(stack_batch(arrays)), self.bundle, len(arrays))
            embeddings = self._checked_embeddings(outputs) if self._ood is not None else None
            if embeddings is None and EMBEDDING_NAME in outputs:
                embeddings = _embedding_rows(outputs[EMBEDDING_NAME], len(arrays))
        except ModelOutputError as error:
            # The model, not the photos, is at fault; each photo says why and the run goes on.
            return [Failure(path, str(error)) for path in paths]
        logits = np.asarray(outputs[LOGITS_NAME], dtype=np.float64)
        # NaN or inf logits would give a NaN confidence that passes every threshold comparison.
        with np.errstate(over="ignore", invalid="ignore"):
            scored = np.asarray(np.isfinite(logits).all(axis=1))
            probabilities = softmax(np.where(scored[:, None], logits, 0.0), self.bundle.temperature)
            scored &= np.isfinite(probabilities).all(axis=1)
            scores: np.ndarray | None = None
            judged = np.ones(len(arrays), dtype=bool)
            if self._ood is not None and embeddings is not None:
                judged = np.isfinite(embeddings).all(axis=1)
                scores = self._ood.scores(
                    np.where(judged[:, None], embeddings, 0.0), np.where(scored[:, None], logits, 0.0)
                )
                judged &= np.isfinite(scores)
        labels = self.bundle.labels
        outcomes: list[Prediction | Failure] = []
        for row, (path, probs) in enumerate(zip(paths, probabilities, strict=True)):
            if not scored[row]:
                outcomes.append(
                    Failure(path, "the model gave no valid scores for this photo (NaN or infinite)")
                )
                continue
            if not judged[row]:
                outcomes.append(
                    Failure(path, "the model gave no valid not-a-cat score for this photo (NaN or infinite)")
                )
                continue
            best = np.argsort(-probs, kind="stable")[: self.top_k]
            top = tuple((labels[i], float(probs[i])) for i in best)
            score = None if scores is None else float(scores[row])
            is_cat = True if scores is None else bool(scores[row] <= self._ood.threshold)  # type: ignore[union-attr]
            embedding = None if embeddings is None else embeddings[row].astype(np.float32)
            outcomes.append(
                Prediction(
                    path=path,
                    top=top,
                    probabilities=probs,
                    ood_score=score,
                    is_cat=is_cat,
                    embedding=embedding,
                )
            )
        return outcomes

    def _checked_embeddings(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The batch's embeddings as float64, once they are as wide as the detector's matrices."""
        embeddings = outputs.get(EMBEDDING_NAME)
        size = self._ood.embedding_size  # type: ignore[union-attr]
        if embeddings is None or np.shape(embeddings)[1:] != (size,):
            shape = None if embeddings is None else np.shape(embeddings)
            raise ModelOutputError(
                f"the model in {self.bundle.path} gave an {EMBEDDING_NAME} of shape {shape}, but the "
                f"not-a-cat detector in its bundle.json expects {size}-wide embeddings"
            )
        return np.asarray(embeddings, dtype=np.float64)

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _embedding_rows(embeddings: np.ndarray, rows: int) -> np.ndarray | None:
    """A model's embeddings as float64 rows, or None when they are not one finite row per photo."""
    array = np.asarray(embeddings, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != rows:
        return None
    return array


def _finished(
    future: Future[np.ndarray], should_stop: StopCallback | None, check_workers: Callable[[], None]
) -> bool:
    """Wait for a decode; False as soon as a stop is requested instead.

    `check_workers` raises when the decoding processes keep dying, which may leave a decode
    waiting for a worker that never comes.
    """
    while not future.done():
        if should_stop is not None and should_stop():
            return False
        check_workers()
        wait([future], timeout=STOP_POLL_SECONDS)
    check_workers()
    return True


def _decoded(path: Path, future: Future[np.ndarray]) -> np.ndarray | Failure:
    try:
        return future.result()
    except PhotoError as error:
        return Failure(path, error.reason)
    except WorkerDied as error:
        return Failure(path, f"the decoder crashed on this file ({error})")
    except DecodeProcessesFailed:
        raise  # not the photo's fault: the run stops
    except Exception as error:  # an unexpected decoder bug must cost one file, not the whole run
        return Failure(path, f"cannot be processed ({type(error).__name__}: {error})")


def _ood_detector(bundle: ModelBundle) -> OodDetector | None:
    if bundle.ood is None:
        return None
    try:
        return OodDetector.from_config(bundle.ood, bundle.num_labels)
    except OodConfigError as error:
        raise BundleError(f"{bundle.path}: {error}") from None
