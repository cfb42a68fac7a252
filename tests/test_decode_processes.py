"""Decoding in worker processes: the same arrays and predictions as threads, failures per file, stop.

The decoders these tests swap in are module-level functions of this file, so that a worker
process can import them by name (pytest puts tests/ on sys.path, and workers inherit it).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from factories import COLOUR_LABELS, COLOURS, make_photo

from catbreed_desktop.core import classify as classify_module
from catbreed_desktop.core import decode_pool, imaging
from catbreed_desktop.core.classify import Classifier, Failure, Prediction
from catbreed_desktop.core.decode_pool import ProcessDecodePool, SharedMemoryBudget
from catbreed_desktop.core.imaging import Preprocessing, load_and_preprocess

# Long enough never to be reached by a working stop, short enough not to hang a broken one.
STUCK_SECONDS = 30.0


# --- decoders and helpers that run inside worker processes ---------------------------------------------


def crash_on_marked(path: Path, spec: Preprocessing) -> np.ndarray:
    """Decode normally, except that a file named *crash* kills its process, as a segfaulting decoder would."""
    if "crash" in Path(path).name:
        if multiprocessing.parent_process() is None:  # decoding fell back to threads: spare pytest
            raise RuntimeError("the crashing decoder ran in the test process, not in a worker")
        os._exit(70)
    return load_and_preprocess(path, spec)


def stall_on_marked(path: Path, spec: Preprocessing) -> np.ndarray:
    """Decode normally, except that a file named *stuck* blocks until `<name>.release` appears."""
    path = Path(path)
    if "stuck" in path.name:
        path.with_suffix(".started").touch()
        deadline = time.monotonic() + STUCK_SECONDS
        while not path.with_suffix(".release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        path.with_suffix(".finished").touch()
    return load_and_preprocess(path, spec)


def failing_start(*args: object) -> None:
    """A worker set-up that fails, as when a script without a __main__ guard re-runs itself."""
    raise RuntimeError("this worker cannot start")


def budget_kind() -> str:
    return type(imaging.DECODE_BUDGET).__name__


def hold_until(budget: SharedMemoryBudget, amount: int, held: object, release: object) -> None:
    with budget.hold(amount):
        held.set()  # type: ignore[attr-defined]
        release.wait(STUCK_SECONDS)  # type: ignore[attr-defined]


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> dict[Path, str]:
    """Twelve photos, four per colour label, in three formats; maps path -> expected label."""
    expected = {}
    for i in range(12):
        label = COLOUR_LABELS[i % 3]
        suffix = (".png", ".jpg", ".webp")[i % 3]
        expected[make_photo(tmp_path / "photos" / f"photo{i:02d}{suffix}", COLOURS[label], seed=i)] = label
    return expected


@pytest.fixture
def bad_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file with a photo's name\n")
    good = make_photo(folder / "whole.png", (200, 10, 10), size=(200, 150))
    (folder / "truncated.png").write_bytes(good.read_bytes()[:300])
    good.unlink()
    return [folder / "empty.jpg", folder / "notes.jpg", folder / "truncated.png", folder / "missing.jpg"]


def run(classifier: Classifier, paths: list[Path]) -> list[Prediction | Failure]:
    return list(classifier.classify(paths))


# --- tests ------------------------------------------------------------------------------------------------


def test_processes_decode_the_same_arrays_as_the_calling_process(colour_bundle, photos):
    spec = colour_bundle.preprocessing
    pool = ProcessDecodePool(2)
    try:
        decoded = [pool.submit(load_and_preprocess, path, spec) for path in photos]
        for path, future in zip(photos, decoded, strict=True):
            np.testing.assert_array_equal(future.result(), load_and_preprocess(path, spec))
    finally:
        pool.close()


def test_processes_and_threads_give_the_same_predictions(colour_bundle, photos, bad_files):
    paths = [*photos, *bad_files]
    with Classifier(colour_bundle, engine="cpu", batch_size=4, decode_in_processes=False) as threads:
        expected = run(threads, paths)
    with Classifier(
        colour_bundle, engine="cpu", batch_size=4, decode_in_processes=True, decode_workers=2
    ) as processes:
        first, second = run(processes, paths), run(processes, paths)  # the pool is kept between runs

    for results in (first, second):
        assert [r.path for r in results] == paths
        for mine, theirs in zip(results, expected, strict=True):
            assert type(mine) is type(theirs)
            if isinstance(mine, Prediction):
                assert mine.top == theirs.top
                np.testing.assert_array_equal(mine.probabilities, theirs.probabilities)
    assert [r.label for r in first[: len(photos)]] == list(photos.values())


def test_unreadable_files_fail_one_by_one_with_the_decoders_reason(colour_bundle, photos, bad_files):
    paths = [bad_files[0], *list(photos)[:3], *bad_files[1:]]
    with Classifier(colour_bundle, engine="cpu", batch_size=2, decode_in_processes=False) as threads:
        expected = {r.path: r for r in run(threads, paths)}
    with Classifier(
        colour_bundle, engine="cpu", batch_size=2, decode_in_processes=True, decode_workers=2
    ) as processes:
        results = run(processes, paths)

    failures = [r for r in results if isinstance(r, Failure)]
    assert [f.path for f in failures] == bad_files
    for failure in failures:
        assert failure.reason == expected[failure.path].reason  # PhotoError came back whole
    assert sum(isinstance(r, Prediction) for r in results) == 3


def test_a_decoder_that_kills_its_process_fails_only_its_own_photo(colour_bundle, photos, monkeypatch):
    monkeypatch.setattr(classify_module, "load_and_preprocess", crash_on_marked)
    crash = make_photo(next(iter(photos)).parent / "photo-crash.png", COLOURS["Red Cat"])
    paths = list(photos)
    paths.insert(5, crash)

    with Classifier(
        colour_bundle, engine="cpu", batch_size=4, decode_in_processes=True, decode_workers=2
    ) as classifier:
        results = run(classifier, paths)
        again = run(classifier, list(photos))  # a fresh pool after the crash

        assert classifier._processes is not None and not classifier._processes.in_threads

    assert [r.path for r in results] == paths
    assert isinstance(results[5], Failure) and "crashed" in results[5].reason
    others = [r for r in results if r.path != crash]
    assert [r.label for r in others] == list(photos.values())  # type: ignore[union-attr]
    assert [r.label for r in again] == list(photos.values())  # type: ignore[union-attr]


def test_stop_ends_the_run_while_a_worker_process_is_stuck(colour_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(classify_module, "load_and_preprocess", stall_on_marked)
    paths = [make_photo(tmp_path / f"cat-{i}.png", COLOURS["Green Cat"], seed=i) for i in range(8)]
    stuck = make_photo(tmp_path / "cat-stuck.png", COLOURS["Green Cat"])
    paths.insert(3, stuck)
    stop = threading.Event()
    results: list[Prediction | Failure] = []
    classifier = Classifier(
        colour_bundle, engine="cpu", batch_size=2, decode_in_processes=True, decode_workers=2
    )
    try:
        for result in classifier.classify(paths, should_stop=stop.is_set):
            results.append(result)
            if len(results) == 2:
                deadline = time.monotonic() + STUCK_SECONDS
                while not stuck.with_suffix(".started").exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                stop.set()
        # The run is over while the stuck decode still waits: a stop does not wait for decodes.
        assert stuck.with_suffix(".started").exists()
        assert not stuck.with_suffix(".finished").exists()
    finally:
        stuck.with_suffix(".release").touch()
        classifier.close()

    assert [r.path for r in results] == paths[:2]
    assert all(isinstance(r, Prediction) for r in results)


def test_workers_that_cannot_start_hand_decoding_to_threads(colour_bundle, photos, monkeypatch, caplog):
    monkeypatch.setattr(decode_pool, "_start_worker", failing_start)

    with (
        caplog.at_level(logging.WARNING, logger="catbreed_desktop.core.decode_pool"),
        Classifier(
            colour_bundle, engine="cpu", batch_size=4, decode_in_processes=True, decode_workers=2
        ) as classifier,
    ):
        results = run(classifier, list(photos))
        assert classifier._processes is not None and classifier._processes.in_threads

    assert [r.label for r in results] == list(photos.values())  # type: ignore[union-attr]
    assert "decoding in threads instead" in caplog.text


def test_workers_share_one_decoding_budget(colour_bundle, photos):
    pool = ProcessDecodePool(2)
    try:
        assert pool.submit(budget_kind).result() == "SharedMemoryBudget"
    finally:
        pool.close()

    context = multiprocessing.get_context(decode_pool._start_method())
    budget = SharedMemoryBudget(100, context)
    held, release, second_held = context.Event(), context.Event(), context.Event()
    # Kept here: a worker reopens the named semaphores of its arguments as it starts.
    second_release = context.Event()
    first = context.Process(target=hold_until, args=(budget, 100, held, release))
    second = context.Process(target=hold_until, args=(budget, 10, second_held, second_release))
    first.start()
    try:
        assert held.wait(STUCK_SECONDS)
        assert budget.in_use == 100  # seen from this process too
        second.start()
        deadline = time.monotonic() + STUCK_SECONDS
        while budget.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert budget.waiting == 1 and not second_held.is_set()  # the budget is full: it waits
        release.set()
        assert second_held.wait(STUCK_SECONDS)  # and goes once the first gives its share back
    finally:
        release.set()
        second_release.set()
        first.join(STUCK_SECONDS)
        second.join(STUCK_SECONDS)


@pytest.mark.parametrize(
    ("cores", "setting", "expected"),
    [(16, None, True), (8, None, True), (4, None, False), (2, None, False), (16, "0", False), (2, "1", True)],
)
def test_processes_are_the_default_on_many_cores(colour_bundle, monkeypatch, cores, setting, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if setting is None:
        monkeypatch.delenv(decode_pool.PROCESS_DECODE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(decode_pool.PROCESS_DECODE_VARIABLE, setting)

    with Classifier(colour_bundle, engine="cpu") as classifier:
        assert classifier.decode_in_processes is expected
        assert classifier.decode_workers == (max(2, cores - 1) if expected else min(4, cores))
