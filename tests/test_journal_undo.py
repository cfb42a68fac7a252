"""Journal, undo and resume: exact restoration, copies, crashes between intent and done, torn records."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from sorting_helpers import contents, items_for, snapshot, write

from catbreed_desktop.core.sorting import (
    NothingToUndo,
    execute_plan,
    fileops,
    last_journal,
    list_journals,
    moves_to_undo,
    plan_sort,
    resume_interrupted_sort,
    undo_last_sort,
)
from catbreed_desktop.core.sorting.fileops import TEMP_SUFFIX
from catbreed_desktop.core.sorting.journal import read_journal


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no cleanup records are written."""


def _library(root: Path) -> list[Path]:
    """Photos in two folders, with a name clash, plus a file already in the target."""
    write(root / "out" / "Bengal" / "a.jpg", "was already sorted")
    return [
        write(root / "in" / "a.jpg", "photo a"),
        write(root / "in" / "b.jpg", "photo b"),
        write(root / "in" / "sub" / "a.jpg", "another photo a"),
        write(root / "in" / "c.jpg", "photo c"),
    ]


def _records(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_text().splitlines()]


def _crash_during(monkeypatch: pytest.MonkeyPatch, name: str, call: int, after: bool) -> None:
    """Kill the run at the `call`-th call of fileops.`name`, before or after the real operation."""
    real = getattr(fileops, name)
    calls = []

    def crashing(*args: object) -> None:
        calls.append(args)
        if len(calls) == call and not after:
            raise Crash
        real(*args)
        if len(calls) == call:
            raise Crash

    monkeypatch.setattr(fileops, name, crashing)


def test_sort_then_undo_restores_paths_and_bytes_exactly(tmp_path: Path) -> None:
    sources = _library(tmp_path)
    before = snapshot(tmp_path)
    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    assert len(result.done) == 4 and not any(p.exists() for p in sources)
    assert sorted(contents(tmp_path)) == sorted(before.values())
    undone = undo_last_sort()
    assert (undone.restored, undone.removed_copies, undone.problems) == (4, 0, [])
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Bengal"]


def test_moves_to_undo_names_each_moved_photo_before_the_undo(tmp_path: Path) -> None:
    sources = _library(tmp_path)
    assert moves_to_undo() == []
    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out"))

    pending = moves_to_undo()
    assert sorted(pending) == sorted((op.destination, op.source) for op in result.done)
    assert all(now.exists() and not before.exists() for now, before in pending)
    undo_last_sort()
    assert moves_to_undo() == []


def test_the_journal_writes_each_intent_before_its_done(tmp_path: Path) -> None:
    sources = _library(tmp_path)
    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    assert list_journals() == [result.journal] and last_journal() == result.journal
    kinds = [(r["type"], r.get("id")) for r in _records(result.journal) if r["type"] in ("intent", "done")]
    assert kinds == [(kind, n) for n in range(4) for kind in ("intent", "done")]
    intent = next(r for r in _records(result.journal) if r["type"] == "intent")
    assert {"source", "destination", "temp", "size", "sha256"} <= intent.keys()


def test_copy_undo_removes_only_unchanged_copies(tmp_path: Path) -> None:
    sources = _library(tmp_path)
    before = snapshot(tmp_path)
    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode="copy"))
    edited = result.done[0].destination
    edited.write_text("edited by the user after the sort")
    undone = undo_last_sort()
    assert undone.removed_copies == 3 and undone.restored == 0
    assert len(undone.problems) == 1 and str(edited) in undone.problems[0]
    assert edited.read_text() == "edited by the user after the sort"
    after = snapshot(tmp_path)
    del after[str(edited.relative_to(tmp_path))]
    assert after == before


def test_undo_never_overwrites_a_new_file_at_the_original_place(tmp_path: Path) -> None:
    source = write(tmp_path / "in" / "a.jpg", "photo a")
    result = execute_plan(plan_sort(items_for([source]), tmp_path / "out"))
    write(source, "a new file with the old name")
    undone = undo_last_sort()
    assert undone.restored == 0 and "taken by another file" in undone.problems[0]
    assert source.read_text() == "a new file with the old name"
    assert result.done[0].destination.read_text() == "photo a"


def test_undo_walks_back_through_sorts_then_says_there_is_nothing_left(tmp_path: Path) -> None:
    with pytest.raises(NothingToUndo, match="no sort"):
        undo_last_sort()
    first = write(tmp_path / "in" / "1.jpg", "one")
    before = snapshot(tmp_path)
    execute_plan(plan_sort(items_for([first]), tmp_path / "out"))
    second = write(tmp_path / "in" / "2.jpg", "two")
    execute_plan(plan_sort(items_for([second], label="Persian"), tmp_path / "out"))
    assert undo_last_sort().restored == 1
    assert second.exists() and not first.exists()
    assert undo_last_sort().restored == 1
    second.unlink()
    assert snapshot(tmp_path) == before
    with pytest.raises(NothingToUndo):
        undo_last_sort()


@pytest.mark.parametrize("after", [False, True], ids=["before-the-move", "after-the-move"])
def test_a_sort_that_died_mid_operation_is_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    sources = _library(tmp_path)
    expected = sorted(contents(tmp_path))
    plan = plan_sort(items_for(sources), tmp_path / "out")
    with monkeypatch.context() as patch, pytest.raises(Crash):
        _crash_during(patch, "move_file", call=2, after=after)
        execute_plan(plan)
    state = read_journal(last_journal())
    assert [op.outcome for op in state.operations] == ["done", None, None, None]
    assert len(state.operations[1].intents) == 1
    assert sorted(contents(tmp_path)) == expected  # nothing lost, nothing doubled

    result = resume_interrupted_sort()
    assert result is not None and len(result.done) == 4 and not result.failed
    assert not any(p.exists() for p in sources)
    assert sorted(contents(tmp_path)) == expected
    assert resume_interrupted_sort() is None


def test_a_sort_that_died_mid_operation_can_be_undone_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = _library(tmp_path)
    before = snapshot(tmp_path)
    with monkeypatch.context() as patch, pytest.raises(Crash):
        _crash_during(patch, "move_file", call=3, after=True)
        execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    undone = undo_last_sort()
    assert undone.restored == 3 and not undone.problems
    assert snapshot(tmp_path) == before
    assert resume_interrupted_sort() is None  # an undone sort is never resumed


def test_a_cross_file_system_move_that_died_after_placing_the_copy_is_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path / "in" / "a.jpg", os.urandom(5000))
    expected = sorted(contents(tmp_path))
    real_rename = fileops.rename_no_replace

    def cross_device(src: Path, dst: Path) -> None:
        if Path(src).parent != Path(dst).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(fileops, "rename_no_replace", cross_device)
        _crash_during(patch, "verified_copy", call=1, after=True)  # copy in place, source not yet removed
        execute_plan(plan_sort(items_for([source]), tmp_path / "out"))
    assert source.exists() and len(contents(tmp_path)) == 2  # the one moment a move exists twice
    result = resume_interrupted_sort()
    assert len(result.done) == 1 and not source.exists()
    assert sorted(contents(tmp_path)) == expected


def test_a_half_written_temporary_copy_is_removed_on_resume(tmp_path: Path) -> None:
    source = write(tmp_path / "in" / "a.jpg", "photo a")
    plan = plan_sort(items_for([source]), tmp_path / "out", mode="copy")
    journal_path = execute_plan(plan, should_stop=lambda: True).journal
    state = read_journal(journal_path)
    assert state.stopped and len(state.pending) == 1
    destination = plan.operations[0].destination
    temp = fileops.temp_name_for(destination, "0")
    destination.parent.mkdir(parents=True)
    write(temp, "pho")  # what a kill during the copy leaves
    with open(journal_path, "a") as journal:
        intent = {"type": "intent", "id": 0, "action": "copy", "source": str(source)}
        intent |= {"destination": str(destination), "temp": str(temp), "size": 7}
        intent["sha256"] = fileops.fingerprint(source).sha256
        journal.write(json.dumps(intent) + "\n")
    result = resume_interrupted_sort()
    assert len(result.done) == 1 and destination.read_text() == "photo a" and source.exists()
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))


def test_an_undo_that_died_half_way_finishes_when_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = _library(tmp_path)
    before = snapshot(tmp_path)
    execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    with monkeypatch.context() as patch, pytest.raises(Crash):
        _crash_during(patch, "move_file", call=2, after=True)
        undo_last_sort()
    undone = undo_last_sort()
    assert undone.restored == 3 and not undone.problems  # the first went back before the crash
    assert snapshot(tmp_path) == before


def test_a_record_cut_short_by_a_kill_is_ignored(tmp_path: Path) -> None:
    source = write(tmp_path / "in" / "a.jpg", "photo a")
    result = execute_plan(plan_sort(items_for([source]), tmp_path / "out"))
    with open(result.journal, "a") as journal:
        journal.write('{"type": "undo-st')
    assert undo_last_sort().restored == 1
    assert source.read_text() == "photo a"


def test_a_move_that_died_between_link_and_unlink_is_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel has no no-replace rename, a move is link + unlink: a kill in between leaves
    two names of one file, which resume turns back into one."""
    source = write(tmp_path / "in" / "a.jpg", "photo a")
    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(fileops, "_native_rename", None)

        def die(path: object) -> None:
            raise Crash

        patch.setattr(os, "unlink", die)
        execute_plan(plan_sort(items_for([source]), tmp_path / "out"))
    placed = tmp_path / "out" / "Bengal" / "a.jpg"
    assert os.path.samefile(source, placed)
    result = resume_interrupted_sort()
    assert len(result.done) == 1 and not source.exists() and placed.read_text() == "photo a"
