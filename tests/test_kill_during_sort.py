"""The kill test: a real process sorting photos is killed with SIGKILL at random moments.

After each kill every photo must exist exactly once, with its bytes, in its source folder or the
target; then resuming finishes the sort, or undoing restores the starting tree exactly. The child
slows its file operations and journal writes down a little so the kills land mid-sort.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sorting_helpers import sha256, snapshot, write

from catbreed_desktop.core.sorting import resume_interrupted_sort, undo_last_sort
from catbreed_desktop.core.sorting.fileops import TEMP_SUFFIX
from catbreed_desktop.core.sorting.journal import list_journals

REPO = Path(__file__).resolve().parents[1]
PHOTOS = 40
DELAY_S = 0.003
RUNS = 5
LABELS = ("Bengal", "Persian", "Maine Coon", "Sphynx")

# The sorting child (shared with bench/soak_sort.py): slows the journal and the file operations,
# says "ready", then sorts.
CHILD = Path(__file__).with_name("sort_child.py")


def _make_photos(root: Path, rng: random.Random) -> list[tuple[str, str]]:
    items = []
    for number in range(PHOTOS):
        # Repeated names in sub-folders force "name (2).jpg"; sizes vary so hashes all differ.
        path = root / "in" / f"roll{number % 3}" / f"IMG_{number % 7:04d}.jpg"
        while path.exists():
            path = path.with_name(f"x{path.name}")
        write(path, rng.randbytes(200 + number))
        items.append((str(path), LABELS[number % len(LABELS)]))
    write(root / "out" / "Bengal" / "IMG_0000.jpg", b"a photo that was already sorted")
    return items


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _kill_at_random_moment(config_path: Path, rng: random.Random, expected_run_s: float) -> bool:
    """Start the sorting child, SIGKILL it at a random moment; True when it was killed mid-way."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(config_path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, expected_run_s))
        killed = child.poll() is None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stdout.close()
    return killed


@pytest.mark.slow
@pytest.mark.parametrize("cross_device", [False, True], ids=["same-file-system", "across-file-systems"])
def test_killing_a_sort_loses_nothing_and_it_can_be_resumed_or_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cross_device: bool
) -> None:
    rng = random.Random(20240611 + cross_device)
    per_photo_s = DELAY_S * 2 * (5 if cross_device else 4)
    killed_mid_way = 0
    for run in range(RUNS):
        root = tmp_path / f"run{run}"
        monkeypatch.setenv("CATBREED_DATA_DIR", str(tmp_path / f"data{run}"))
        items = _make_photos(root, rng)
        before = snapshot(root)
        originals = Counter(before.values())
        config = tmp_path / f"config{run}.json"
        settings = {
            "items": items,
            "target": str(root / "out"),
            "delay": DELAY_S,
            "simulate_exdev": cross_device,
            "action": "sort",
            "via": "api",
        }
        config.write_text(json.dumps(settings))

        killed_mid_way += _kill_at_random_moment(config, rng, expected_run_s=PHOTOS * per_photo_s)

        photos = [p for p in _files(root / "in") + _files(root / "out") if not p.name.endswith(TEMP_SUFFIX)]
        present = Counter(sha256(p) for p in photos)
        assert set(present) == set(originals), "a photo was lost"
        doubled = [digest for digest, count in present.items() if count > originals[digest]]
        if cross_device:
            # Between placing a verified copy and deleting the source a moved photo exists twice,
            # identical; only the one operation under way can be in that state.
            assert len(doubled) <= 1
        else:
            assert not doubled, "a photo exists twice"
            assert not [p for p in _files(root) if p.name.endswith(TEMP_SUFFIX)]

        if run % 2 == 0:
            result = resume_interrupted_sort()
            if result is not None:
                assert not result.failed
            if list_journals():
                assert not _files(root / "in"), "resume left photos behind"
            after = Counter(sha256(p) for p in _files(root / "in") + _files(root / "out"))
            assert after == originals
        elif list_journals():
            undone = undo_last_sort()
            assert not undone.problems
            assert snapshot(root) == before
        assert not [p for p in _files(root) if p.name.endswith(TEMP_SUFFIX)]
    assert killed_mid_way >= 3, "the kills came too late to test anything; slow the child down"
