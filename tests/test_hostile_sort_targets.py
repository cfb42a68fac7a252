"""Sorts that meet in one place: labels that become one folder name are named in the plan, and sorts
with different data folders into one target are kept from working in it at the same time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sorting_helpers import items_for, snapshot, write

from catbreed_desktop.cli.sort_command import _print_plan
from catbreed_desktop.core.sorting import (
    JournalError,
    JournalWriteError,
    SortItem,
    execute_plan,
    list_journals,
    plan_sort,
    undo_last_sort,
)
from catbreed_desktop.core.sorting.journal import Journal
from catbreed_desktop.gui.sort_controller import SortPreview

pytestmark = pytest.mark.timeout(60)


def test_labels_that_become_one_folder_name_are_named_in_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = ["A/B", "A_B", "A:B", "Maine Coon", "maine coon", "Bengal"]
    items = [
        SortItem(write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}"), label, 0.9)
        for number, label in enumerate(labels)
    ]

    plan = plan_sort(items, tmp_path / "out")

    assert plan.shared_folders == {"A_B": ["A/B", "A:B", "A_B"], "Maine Coon": ["Maine Coon", "maine coon"]}
    notes = plan.shared_folder_notes()
    assert notes[0] == 'the labels "A/B", "A:B" and "A_B" all go to the folder A_B'
    _print_plan(plan, each_file=False)
    assert f"catbreed: note: {notes[0]}" in capsys.readouterr().err
    assert f"Note: {notes[1]}." in SortPreview(plan).summary()
    assert plan_sort(items[-1:], tmp_path / "out").shared_folders == {}


# What a sort holds on its target while it works in it: an exclusive lock on the folder itself.
HOLD_LOCK = """
import fcntl, os, sys
folder = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(folder, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def other_sort_in(tmp_path: Path):
    """A stand-in for a sort from another data folder: another process holding the target's lock."""
    processes = []

    def hold(target: Path) -> None:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "CATBREED_DATA_DIR": str(tmp_path / "other data")},
        )
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline() == "locked\n"

    yield hold
    for process in processes:
        process.communicate(timeout=30)


def test_a_sort_into_a_target_another_sort_works_in_waits_for_it(tmp_path: Path, other_sort_in) -> None:
    target = tmp_path / "sorted"
    target.mkdir()
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(3)]
    before = snapshot(tmp_path)
    plan = plan_sort(items_for(sources), target)
    other_sort_in(target)

    with pytest.raises(JournalError, match=f"another sort or undo is working in {target}"):
        execute_plan(plan)

    assert snapshot(tmp_path) == before and list_journals() == []
    assert list(target.iterdir()) == []


def test_undo_waits_for_the_other_sort_too(tmp_path: Path, other_sort_in) -> None:
    target = tmp_path / "sorted"
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(3)]
    assert len(execute_plan(plan_sort(items_for(sources), target)).done) == 3
    sorted_snapshot = snapshot(tmp_path)
    other_sort_in(target)

    with pytest.raises(JournalError, match="another sort or undo is working in"):
        undo_last_sort()

    assert snapshot(tmp_path) == sorted_snapshot


def test_a_target_made_for_a_sort_that_could_not_begin_is_removed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "new" / "sorted"
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(2)]
    plan = plan_sort(items_for(sources), target)

    def disk_full(plan: object) -> None:
        raise JournalWriteError("cannot write the sort journal: No space left on device")

    monkeypatch.setattr(Journal, "create", disk_full)
    with pytest.raises(JournalWriteError):
        execute_plan(plan)

    assert not (tmp_path / "new").exists() and all(source.exists() for source in sources)


def test_once_the_other_sort_is_done_sorting_and_undo_go_on(tmp_path: Path) -> None:
    target = tmp_path / "sorted"
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(3)]
    before = snapshot(tmp_path)
    assert len(execute_plan(plan_sort(items_for(sources), target)).done) == 3
    assert undo_last_sort().restored == 3
    assert snapshot(tmp_path) == before and not target.exists()
