"""A sort journal that lost its last records (a disk fault, a truncated file), and two sorts taking
photos from one inbox: resume and undo count a photo already at its planned destination as moved
and put it back; a photo they cannot account for is named, the undo exits 1, and a later undo does
not claim that everything is back; a photo another sort took is not said to be "left where it is".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sorting_helpers import contents, items_for, snapshot, write

from catbreed_desktop.cli.main import main
from catbreed_desktop.cli.sort_command import _print_result
from catbreed_desktop.core.sorting import execute_plan, list_journals, plan_sort, plan_undo, undo_last_sort
from catbreed_desktop.core.sorting.executor import MOVED_AWAY

pytestmark = pytest.mark.timeout(60)
PHOTOS = 6


def _sorted_library(root: Path) -> tuple[list[Path], dict[str, str]]:
    """Six photos moved into root/out; the snapshot of root before the sort."""
    sources = [
        write(root / "inbox" / f"cat{number}.jpg", f"photo {number} " * (number + 1))
        for number in range(PHOTOS)
    ]
    before = snapshot(root)
    result = execute_plan(plan_sort(items_for(sources), root / "out"))
    assert len(result.done) == PHOTOS
    return sources, before


def _truncate_journal(keep_lines: int, drop_sizes: bool = False) -> list[dict]:
    """Cut the newest journal after its first `keep_lines` records; the records it had."""
    journal = list_journals()[-1]
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    kept = [dict(record) for record in records[:keep_lines]]
    if drop_sizes:  # as journals written before sizes were recorded
        kept[0]["operations"] = [
            {key: value for key, value in op.items() if key != "size"} for op in kept[0]["operations"]
        ]
    journal.write_text("".join(json.dumps(record) + "\n" for record in kept))
    return records


def _run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit status, stdout, and stderr without its progress lines ("catbreed: 6 files in 0.1 s")."""
    status = main(arguments)
    captured = capsys.readouterr()
    err = "".join(line for line in captured.err.splitlines(True) if " files in " not in line)
    return status, captured.out, err


def test_resume_after_a_journal_cut_to_its_plan_counts_placed_photos_and_undo_restores_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, before = _sorted_library(tmp_path)
    _truncate_journal(keep_lines=1)

    status, out, err = _run(["resume"], capsys)
    assert status == 0 and err == "", err
    assert out.startswith(f"{PHOTOS} sorted, 0 already there")

    status, out, err = _run(["undo"], capsys)
    assert status == 0 and err == "", err
    assert out.startswith(f"undo: {PHOTOS} photos put back")
    assert snapshot(tmp_path) == before

    status, _, err = _run(["undo"], capsys)
    assert status == 1 and "all 1 sorts" in err and "are undone" in err


@pytest.mark.parametrize("keep_lines", [1, 4, 5, 8])
def test_undo_without_resume_after_a_journal_cut_anywhere_restores_every_photo(
    tmp_path: Path, keep_lines: int
) -> None:
    _, before = _sorted_library(tmp_path)
    records = _truncate_journal(keep_lines)
    assert records[keep_lines - 1]["type"] in ("start", "mkdir", "intent", "done")

    assert plan_undo().to_move_back + plan_undo().interrupted >= PHOTOS
    undone = undo_last_sort()

    assert (undone.restored, undone.problems, undone.unaccounted) == (PHOTOS, [], 0)
    assert snapshot(tmp_path) == before


def test_a_photo_undo_cannot_account_for_is_named_and_a_later_undo_does_not_claim_all_is_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources, before = _sorted_library(tmp_path)
    _truncate_journal(keep_lines=1)
    # The sort had put this one under another name (its planned one was taken at that moment).
    placed = tmp_path / "out" / "Bengal" / "cat3.jpg"
    placed.rename(placed.with_name("cat3 (2).jpg"))

    assert "1 photo cannot be put back" in plan_undo().describe()
    status, out, err = _run(["undo"], capsys)

    assert status == 1
    assert out.startswith(f"undo: {PHOTOS - 1} photos put back")
    assert err.splitlines() == [
        f"catbreed: not undone: {sources[3]} is not where it was before the sort, and the sort's "
        f"journal does not say where it went (look for it in {tmp_path / 'out'})"
    ]
    assert sorted(contents(tmp_path)) == sorted(before.values())  # nothing lost, one not back

    status, _, err = _run(["undo"], capsys)
    assert status == 1
    assert "could not put back 1 photo" in err and "are undone" not in err


def test_a_journal_from_before_sizes_were_recorded_is_not_guessed_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, before = _sorted_library(tmp_path)
    _truncate_journal(keep_lines=1, drop_sizes=True)

    status, out, err = _run(["undo"], capsys)

    assert status == 1 and out.startswith("undo: 0 photos put back")
    assert len(err.splitlines()) == PHOTOS and "does not say where it went" in err
    assert sorted(contents(tmp_path)) == sorted(before.values())


def test_a_photo_another_sort_took_from_the_inbox_is_reported_as_moved_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = [write(tmp_path / "inbox" / f"cat{number}.jpg", f"photo {number}") for number in range(3)]
    before = snapshot(tmp_path)
    # Two sorts planned on one inbox into two targets; the first takes every photo.
    first = plan_sort(items_for(sources), tmp_path / "first")
    second = plan_sort(items_for(sources), tmp_path / "second")
    assert len(execute_plan(first).done) == 3

    result = execute_plan(second)

    assert [reason for _, reason in result.failed] == [MOVED_AWAY] * 3
    _print_result(result, "move")
    err = capsys.readouterr().err
    assert "left where it is" not in err
    assert f"catbreed: failed: {sources[0]}: was moved or deleted by another program" in err
    # Undoing the second sort has nothing to put back and nothing it cannot account for.
    undone = undo_last_sort()
    assert (undone.restored, undone.problems) == (0, [])
    undo_last_sort()
    assert snapshot(tmp_path) == before
