"""Sorting's awkward inputs: each is a clear report, the rest goes on.

Link loops, breed folders that are links out of the target, names near the 255-byte limit,
unreadable sub-folders, an inbox inside the target, and labels named like the special folders.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from sorting_helpers import contents, items_for, sha256, snapshot, write

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.sorting import (
    NOT_CAT_FOLDER,
    UNSURE_FOLDER,
    SortItem,
    execute_plan,
    fileops,
    plan_sort,
    undo_last_sort,
)


@pytest.fixture
def sort_cli(colour_bundle):
    """Runs `catbreed sort` with the colour bundle on the CPU."""

    def run(*arguments: str) -> int:
        return main(["sort", *arguments, "--model", str(colour_bundle.path), "--engine", "cpu"])

    return run


def test_an_explicit_link_loop_is_reported_and_the_other_photos_are_sorted(
    tmp_path: Path, sort_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = tmp_path / "in" / "loop.jpg"
    loop.parent.mkdir()
    loop.symlink_to(loop)
    photo = make_photo(tmp_path / "in" / "red.jpg", COLOURS["Red Cat"])

    status = sort_cli(str(loop), str(photo), "--into", str(tmp_path / "out"))

    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert "loop.jpg" in err
    assert (tmp_path / "out" / "Red Cat" / "red.jpg").is_file() and loop.is_symlink()


def test_a_breed_folder_linking_out_of_the_target_skips_that_photo_only(
    tmp_path: Path, sort_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "Red Cat").symlink_to(elsewhere)
    make_photo(tmp_path / "in" / "red.jpg", COLOURS["Red Cat"])
    make_photo(tmp_path / "in" / "green.jpg", COLOURS["Green Cat"])

    status = sort_cli(str(tmp_path / "in"), "--into", str(tmp_path / "out"))

    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert "red.jpg" in err and "leads out of" in err
    assert (tmp_path / "in" / "red.jpg").is_file() and not any(elsewhere.iterdir())
    assert (tmp_path / "out" / "Green Cat" / "green.jpg").is_file()


def test_plan_skips_a_photo_whose_breed_folder_leaves_the_target(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "Bengal").symlink_to(tmp_path)
    photos = [write(tmp_path / "in" / "a.jpg", "a"), write(tmp_path / "in" / "b.jpg", "b")]

    plan = plan_sort(
        [SortItem(photos[0], "Bengal", 0.9), SortItem(photos[1], "Persian", 0.9)], tmp_path / "out"
    )

    assert [op.source for op in plan.operations] == [photos[1]]
    assert [path for path, _ in plan.skipped] == [photos[0]]


def _cross_device(monkeypatch: pytest.MonkeyPatch) -> None:
    same_disk_rename = fileops.rename_no_replace

    def rename(source: Path, destination: Path) -> None:
        if Path(source).parent != Path(destination).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        same_disk_rename(source, destination)

    monkeypatch.setattr(fileops, "rename_no_replace", rename)


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_names_near_255_bytes_are_copied_and_moved_across_disks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    _cross_device(monkeypatch)
    long_latin = "p" * 249 + ".jpg"  # 253 bytes: " (2)" would make it 257
    long_cjk = "猫" * 80 + ".jpg"  # 244 bytes in 84 characters
    sources = [write(tmp_path / "in" / name, f"photo {name[:3]}") for name in (long_latin, long_cjk)]
    for name in (long_latin, long_cjk):  # taken in the target: the sort must use "name (2)"
        write(tmp_path / "out" / "Bengal" / name, f"another photo {name[:3]}")
    before = sorted(contents(tmp_path))

    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode=mode))

    assert not result.failed, result.failed
    assert len(result.done) == 2
    for operation in result.done:
        assert len(os.fsencode(operation.destination.name)) <= 255
        assert " (2)" in operation.destination.name
    expected = before + (sorted(contents(tmp_path / "in")) if mode == "copy" else [])
    assert sorted(contents(tmp_path)) == sorted(expected)
    undo_last_sort()
    assert sorted(contents(tmp_path)) == before


def test_an_unreadable_sub_folder_is_reported_not_skipped_silently(
    tmp_path: Path, sort_cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_photo(tmp_path / "in" / "red.jpg", COLOURS["Red Cat"])
    locked = tmp_path / "in" / "locked"
    make_photo(locked / "green.jpg", COLOURS["Green Cat"])
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)) == locked:  # root reads everything: stand in for chmod 000
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    status = sort_cli(str(tmp_path / "in"), "--recursive", "--into", str(tmp_path / "out"))

    err = capsys.readouterr().err
    assert status == 1
    assert f"skipped folder, left untouched: {locked}: Permission denied" in err
    assert (tmp_path / "out" / "Red Cat" / "red.jpg").is_file()


def test_an_inbox_inside_the_target_is_sorted(
    tmp_path: Path, sort_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    make_photo(tmp_path / "out" / "inbox" / "red.jpg", COLOURS["Red Cat"])

    status = sort_cli(str(tmp_path / "out" / "inbox"), "--into", str(tmp_path / "out"))

    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "Red Cat" / "red.jpg").is_file()


def test_sorting_a_folder_into_itself_works_and_the_next_recursive_run_leaves_the_result_alone(
    tmp_path: Path, sort_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = tmp_path / "inbox"
    for number, colour in enumerate(COLOURS.values()):
        make_photo(inbox / f"cat{number}.jpg", colour)
    before = sorted(contents(inbox))

    first = sort_cli(str(inbox), "--into", str(inbox))
    assert first == 0, capsys.readouterr().err
    assert sorted(p.parent.name for p in inbox.rglob("*.jpg")) == sorted(COLOURS)
    capsys.readouterr()
    new_photo = sha256(make_photo(inbox / "new.jpg", COLOURS["Blue Cat"], seed=3))
    second = sort_cli(str(inbox), "-r", "--into", str(inbox))

    out, err = capsys.readouterr()
    assert second == 0
    assert "left out 3 photos already filed" in err
    assert "1 moved" in out
    assert len(list((inbox / "Blue Cat").iterdir())) == 2
    assert sorted(contents(inbox)) == sorted([*before, new_photo])


def test_naming_a_sort_folder_sorts_it_again(
    tmp_path: Path, sort_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    make_photo(tmp_path / "out" / UNSURE_FOLDER / "red.jpg", COLOURS["Red Cat"])

    status = sort_cli(str(tmp_path / "out" / UNSURE_FOLDER), "--into", str(tmp_path / "out"))

    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "Red Cat" / "red.jpg").is_file()


def test_labels_named_like_the_special_folders_get_folders_of_their_own(tmp_path: Path) -> None:
    photos = [write(tmp_path / "in" / f"{n}.jpg", f"photo {n}") for n in range(4)]
    items = [
        SortItem(photos[0], "Unsure", 0.9),
        SortItem(photos[1], "not a cat", 0.9),
        SortItem(photos[2], "Bengal", 0.1),
        SortItem(photos[3], "Bengal", 0.9, is_cat=False),
    ]

    plan = plan_sort(items, tmp_path / "out", min_confidence=0.5)

    assert [op.folder for op in plan.operations] == [
        "Unsure (breed)",
        "not a cat (breed)",
        UNSURE_FOLDER,
        NOT_CAT_FOLDER,
    ]
    before = snapshot(tmp_path)
    execute_plan(plan)
    undo_last_sort()
    assert snapshot(tmp_path) == before
