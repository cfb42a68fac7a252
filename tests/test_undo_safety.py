"""Undo never deletes the last copy of a photo.

A copy the sort made is removed only while its original is still in place with the same bytes;
a link at the original path, or an original folder that now leads into the sorted folder, means
"the place is taken", never "the photo is already back".
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from sorting_helpers import contents, items_for, snapshot, write

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.sorting import execute_plan, fileops, plan_sort, plan_undo, undo_last_sort


def _three_photos(root: Path) -> list[Path]:
    return [write(root / "in" / f"cat{number}.jpg", f"photo number {number}") for number in range(3)]


def test_undo_of_a_copy_sort_keeps_the_copies_whose_originals_were_deleted(tmp_path: Path) -> None:
    sources = _three_photos(tmp_path)
    execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode="copy"))
    for source in sources[:2]:  # "copy, check, delete the originals"
        source.unlink()
    kept = contents(tmp_path / "out")

    result = undo_last_sort()

    assert result.removed_copies == 1  # cat2's original is still there: its copy goes
    assert len(result.kept_copies) == 2
    assert all("original" in reason for reason in result.kept_copies)
    assert sorted(p.name for p in (tmp_path / "out" / "Bengal").iterdir()) == ["cat0.jpg", "cat1.jpg"]
    assert set(contents(tmp_path / "out")) < set(kept)


def test_undo_of_a_copy_sort_keeps_a_copy_whose_original_was_changed(tmp_path: Path) -> None:
    sources = _three_photos(tmp_path)
    execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode="copy"))
    sources[0].write_text("edited in a photo editor after the sort")

    result = undo_last_sort()

    assert (tmp_path / "out" / "Bengal" / "cat0.jpg").read_text() == "photo number 0"
    assert result.removed_copies == 2 and len(result.kept_copies) == 1


def test_copy_sort_undo_keeps_copy_when_original_is_now_a_link_to_it(tmp_path: Path) -> None:
    sources = _three_photos(tmp_path)
    execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode="copy"))
    sources[0].unlink()
    sources[0].symlink_to(tmp_path / "out" / "Bengal" / "cat0.jpg")

    undo_last_sort()

    assert (tmp_path / "out" / "Bengal" / "cat0.jpg").read_text() == "photo number 0"


def test_undo_of_a_move_keeps_the_photo_when_the_original_path_is_a_link_to_it(tmp_path: Path) -> None:
    sources = _three_photos(tmp_path)
    execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    placed = tmp_path / "out" / "Bengal" / "cat0.jpg"
    sources[0].symlink_to(placed)

    result = undo_last_sort()

    assert placed.read_text() == "photo number 0"
    assert sources[0].is_symlink()
    assert any("link" in problem for problem in result.problems)
    assert result.restored == 2


def test_undo_keeps_every_photo_when_the_inbox_was_replaced_by_a_link_to_the_breed_folder(
    tmp_path: Path,
) -> None:
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(5)]
    execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    (tmp_path / "in").rmdir()
    (tmp_path / "in").symlink_to(tmp_path / "out" / "Bengal")
    before = sorted(contents(tmp_path / "out"))

    undo_last_sort()

    assert sorted(contents(tmp_path / "out")) == before  # all 5 photos still exist


def test_resume_does_not_delete_a_moved_photo_through_a_linked_inbox(tmp_path: Path, monkeypatch) -> None:
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(2)]
    plan = plan_sort(items_for(sources), tmp_path / "out")

    real_move = fileops.move_file

    def die_after_first_move(*args):
        real_move(*args)
        raise KeyboardInterrupt  # stands for a kill between the move and its "done" record

    monkeypatch.setattr(fileops, "move_file", die_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        execute_plan(plan)
    monkeypatch.setattr(fileops, "move_file", real_move)
    # The user replaces the inbox with a link to the breed folder before resuming.
    (tmp_path / "in" / "cat1.jpg").rename(tmp_path / "cat1.jpg")
    (tmp_path / "in").rmdir()
    (tmp_path / "in").symlink_to(tmp_path / "out" / "Bengal")

    undo_last_sort()

    assert (tmp_path / "out" / "Bengal" / "cat0.jpg").read_text() == "photo 0"


def test_plan_undo_says_what_will_happen_before_anything_changes(tmp_path: Path) -> None:
    moved = [write(tmp_path / "in" / f"m{number}.jpg", f"moved {number}") for number in range(2)]
    execute_plan(plan_sort(items_for(moved), tmp_path / "out"))
    copied = _three_photos(tmp_path)
    execute_plan(plan_sort(items_for(copied), tmp_path / "out", mode="copy"))
    copied[0].unlink()
    before = snapshot(tmp_path)

    preview = plan_undo()

    assert snapshot(tmp_path) == before
    assert (preview.mode, preview.to_move_back, preview.copies_to_remove, preview.copies_to_keep) == (
        "copy",
        0,
        2,
        1,
    )
    assert "2 copies will be removed" in preview.describe()
    assert "1 copy will be kept" in preview.describe()


def test_cli_undo_reports_the_copies_it_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources = _three_photos(tmp_path)
    execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode="copy"))
    for source in sources:
        source.unlink()

    status = main(["undo"])

    out, err = capsys.readouterr()
    assert status == 0
    assert "0 copies removed" in out and "3 copies kept" in out
    assert err.count("kept") == 3
    assert len(list((tmp_path / "out" / "Bengal").iterdir())) == 3


def test_read_only_source_moved_across_disks_leaves_no_stray_copy(tmp_path: Path, monkeypatch) -> None:
    sources = _three_photos(tmp_path)
    same_disk_rename = fileops.rename_no_replace

    def cross_device(source: Path, destination: Path) -> None:
        if Path(source).parent != Path(destination).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        same_disk_rename(source, destination)

    monkeypatch.setattr(fileops, "rename_no_replace", cross_device)
    real_unlink = os.unlink

    def read_only_inbox(path, *args, **kwargs):
        if Path(path).parent == tmp_path / "in":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", read_only_inbox)
    before = snapshot(tmp_path)

    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out"))

    assert len(result.failed) == 3 and not result.done
    assert all("could not be removed" in reason for _, reason in result.failed)
    monkeypatch.setattr(os, "unlink", real_unlink)
    undo_last_sort()
    assert snapshot(tmp_path) == before
