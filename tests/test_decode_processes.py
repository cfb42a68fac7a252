"""Decoding in worker processes: the same arrays and predictions as threads, failures per file, stop.

The decoders these tests swap in live in tests/decode_fakes.py, so that a worker process can
import them by name (pytest puts tests/ on sys.path, and workers inherit it).
Workers are killed from outside as `kill -9` or the out-of-memory killer would: the run must end
(with its results, or with one error when they keep dying), and so must the process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from decode_fakes import (
    STUCK_SECONDS,
    budget_kind,
    crash_on_marked,
    failing_start,
    hold_budget,
    stall_on_marked,
    stall_until_released,
    wait_for,
)
from factories import COLOUR_LABELS, COLOURS, make_photo

from catbreed_desktop.core import classify as classify_module
from catbreed_desktop.core.classify import Classifier, Failure, Prediction
from catbreed_desktop.core.photos import decode_pool, load_and_preprocess
from catbreed_desktop.core.photos.decode_pool import DecodeProcessesFailed, ProcessDecodePool

TESTS = Path(__file__).resolve().parent
REPOSITORY = TESTS.parent


# --- helpers in the test process ------------------------------------------------------------------------


def started_by(marker: Path, not_by: int = 0) -> int:
    """The id of the process that wrote `marker`, once one other than `not_by` has."""

    def written() -> bool:
        return marker.exists() and marker.read_text() not in ("", str(not_by))

    assert wait_for(written), f"{marker.name} was not written"
    return int(marker.read_text())


def _children(parent: int) -> list[int]:
    """Living (not zombie) child processes of `parent`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]  # the name may hold spaces and ")"
        if int(ppid) == parent and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def decoding_processes_of(pid: int) -> list[int]:
    """The decoding workers of process `pid`: the children of its multiprocessing fork server."""
    workers = []
    for child in _children(pid):
        try:
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers += _children(child)
        except OSError:
            continue
    return workers


class WorkerKiller(threading.Thread):
    """Kills a decoding worker of process `pid` with SIGKILL every `interval` seconds, `kills` times."""

    def __init__(self, pid: int, kills: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.kills, self.interval = pid, kills, interval
        self.killed: set[int] = set()
        self.seen: set[int] = set()  # every worker found alive
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            workers = decoding_processes_of(self.pid)
            self.seen.update(workers)
            for worker in workers[: len(self.killed) < self.kills]:
                try:
                    os.kill(worker, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.killed.add(worker)

    def stop(self) -> None:
        self.done.set()
        self.join(STUCK_SECONDS)


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="finds worker processes through /proc and the fork server",
)


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
        caplog.at_level(logging.WARNING, logger="catbreed_desktop.core.photos.decode_pool"),
        Classifier(
            colour_bundle, engine="cpu", batch_size=4, decode_in_processes=True, decode_workers=2
        ) as classifier,
    ):
        results = run(classifier, list(photos))
        assert classifier._processes is not None and classifier._processes.in_threads

    assert [r.label for r in results] == list(photos.values())  # type: ignore[union-attr]
    assert "decoding in threads instead" in caplog.text


@needs_proc
def test_workers_share_one_decoding_budget_and_a_dead_worker_gives_its_share_back(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    pool = ProcessDecodePool(2, budget_bytes=100)
    try:
        assert pool.submit(budget_kind).result(STUCK_SECONDS) == "_BudgetFromParent"
        first_done = pool.submit(hold_budget, first, 100)
        holder = started_by(first.with_suffix(".held"))
        second_done = pool.submit(hold_budget, second, 10)
        assert wait_for(lambda: pool.budget_waiting == 1)
        assert pool.budget_in_use == 100 and not second.with_suffix(".held").exists()  # full: it waits

        os.kill(holder, signal.SIGKILL)  # as the out-of-memory killer would, while it holds its share
        started_by(second.with_suffix(".held"))  # the share came back: the second goes ahead
        second.with_suffix(".release").touch()
        assert second_done.result(STUCK_SECONDS) is None
        started_by(first.with_suffix(".held"), not_by=holder)  # the first's task ran again, in a new worker
        first.with_suffix(".release").touch()
        assert first_done.result(STUCK_SECONDS) is None
        assert pool.budget_in_use == 0 and pool.deaths == 1
    finally:
        first.with_suffix(".release").touch()
        second.with_suffix(".release").touch()
        pool.close()


@needs_proc
def test_a_photo_whose_worker_is_killed_twice_fails_alone(colour_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(classify_module, "load_and_preprocess", stall_on_marked)
    paths = [make_photo(tmp_path / f"cat-{i}.png", COLOURS["Green Cat"], seed=i) for i in range(8)]
    stuck = make_photo(tmp_path / "cat-stuck.png", COLOURS["Green Cat"])
    paths.insert(3, stuck)
    results: list[Prediction | Failure] = []
    runner = threading.Thread(target=lambda: results.extend(run(classifier, paths)), daemon=True)
    classifier = Classifier(
        colour_bundle, engine="cpu", batch_size=2, decode_in_processes=True, decode_workers=2
    )
    try:
        runner.start()
        first = started_by(stuck.with_suffix(".started"))
        os.kill(first, signal.SIGKILL)
        os.kill(started_by(stuck.with_suffix(".started"), not_by=first), signal.SIGKILL)  # its second try
        runner.join(STUCK_SECONDS)
        assert not runner.is_alive()
    finally:
        stuck.with_suffix(".release").touch()
        classifier.close()

    assert [r.path for r in results] == paths
    assert isinstance(results[3], Failure) and results[3].reason == (
        "the decoder crashed on this file (its process ended: killed by SIGKILL)"
    )
    assert all(isinstance(r, Prediction) and r.label == "Green Cat" for r in results if r.path != stuck)


@needs_proc
def test_workers_killed_again_and_again_stop_the_run_with_one_error(colour_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(classify_module, "load_and_preprocess", stall_until_released)
    paths = [make_photo(tmp_path / f"cat-{i}.png", COLOURS["Blue Cat"], seed=i) for i in range(6)]
    outcome: dict[str, object] = {}

    def classify() -> None:
        try:
            outcome["results"] = run(classifier, paths)
        except Exception as error:
            outcome["error"] = error

    classifier = Classifier(
        colour_bundle, engine="cpu", batch_size=2, decode_in_processes=True, decode_workers=2
    )
    runner = threading.Thread(target=classify, daemon=True)
    killer = WorkerKiller(os.getpid(), kills=60, interval=0.05)
    try:
        runner.start()
        killer.start()
        runner.join(STUCK_SECONDS)
        assert not runner.is_alive(), "the run hung while its workers were being killed"
    finally:
        killer.stop()
        (tmp_path / "release").touch()
        classifier.close()

    error = outcome.get("error")
    assert isinstance(error, DecodeProcessesFailed), outcome
    assert str(error).startswith("decoding processes") and "\n" not in str(error)
    assert decoding_processes_of(os.getpid()) == []  # closing the classifier ended its workers


CLASSIFY_WITH_STALLED_DECODER = """
import sys
from catbreed_desktop.cli.main import main
from catbreed_desktop.core import classify
import decode_fakes

classify.load_and_preprocess = decode_fakes.stall_until_released
sys.exit(main(sys.argv[1:]))
"""


@needs_proc
@pytest.mark.parametrize("command", ["classify", "sort"])
def test_the_command_line_exits_when_its_workers_keep_being_killed(colour_bundle, tmp_path, command):
    inbox = tmp_path / "inbox"
    photos = [make_photo(inbox / f"cat-{i}.png", COLOURS["Red Cat"], seed=i) for i in range(6)]
    arguments = [str(inbox), "--model", str(colour_bundle.path), "--engine", "cpu"]
    if command == "sort":
        arguments += ["--into", str(tmp_path / "sorted")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(TESTS)]),
        decode_pool.PROCESS_DECODE_VARIABLE: "1",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CLASSIFY_WITH_STALLED_DECODER, command, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    killer = WorkerKiller(child.pid, kills=60, interval=0.1)
    killer.start()
    try:
        out, err = child.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"catbreed {command} did not exit while its workers were being killed:\n{err[-2000:]}")
    finally:
        killer.stop()
        (inbox / "release").touch()

    assert child.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("catbreed: decoding processes"), err
    assert "Traceback" not in err
    if command == "classify":
        assert out == "" and lines[-2] == "catbreed: stopped after 0 of 6 photos"
    else:
        assert "nothing was moved or copied" in lines[-1]
        assert all(photo.exists() for photo in photos) and not (tmp_path / "sorted").exists()
    assert killer.killed and wait_for(lambda: not any(alive(pid) for pid in killer.seen), 10)  # none is left


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
