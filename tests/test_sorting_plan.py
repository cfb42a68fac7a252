"""The sort plan: folders by confidence and cat-ness, unique names, duplicates, nothing touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from sorting_helpers import items_for, snapshot, write

from catbreed_desktop.core.sorting import NOT_CAT_FOLDER, UNSURE_FOLDER, SortItem, plan_sort


def test_folders_follow_label_threshold_and_cat_ness(tmp_path: Path) -> None:
    a, b, c, d = (write(tmp_path / "in" / f"{n}.jpg", n) for n in "abcd")
    plan = plan_sort(
        [
            SortItem(a, "Bengal", 0.9),
            SortItem(b, "Bengal", 0.49),
            SortItem(c, "Persian", 0.5),
            SortItem(d, "Persian", 0.99, is_cat=False),
        ],
        tmp_path / "out",
        min_confidence=0.5,
    )
    target = (tmp_path / "out").resolve()
    assert [(op.folder, op.destination) for op in plan.operations] == [
        ("Bengal", target / "Bengal" / "a.jpg"),
        (UNSURE_FOLDER, target / UNSURE_FOLDER / "b.jpg"),
        ("Persian", target / "Persian" / "c.jpg"),
        (NOT_CAT_FOLDER, target / NOT_CAT_FOLDER / "d.jpg"),
    ]
    assert plan.summary() == {"move": 4, "copy": 0, "duplicate": 0, "total": 4}
    assert plan.folders() == {"Bengal": 1, UNSURE_FOLDER: 1, "Persian": 1, NOT_CAT_FOLDER: 1}


def test_planning_changes_nothing_on_disk(tmp_path: Path) -> None:
    sources = [write(tmp_path / "in" / f"{n}.jpg", f"bytes {n}") for n in range(5)]
    write(tmp_path / "out" / "Bengal" / "0.jpg", "already here")
    before = snapshot(tmp_path)
    plan_sort(items_for(sources), tmp_path / "out", mode="copy")
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Bengal"]


def test_names_taken_on_disk_or_earlier_in_the_plan_get_numbered(tmp_path: Path) -> None:
    first = write(tmp_path / "in" / "one" / "cat.jpg", "first")
    second = write(tmp_path / "in" / "two" / "cat.jpg", "second")
    third = write(tmp_path / "in" / "three" / "CAT.jpg", "third")  # same name where case is ignored
    write(tmp_path / "out" / "Bengal" / "cat.jpg", "different bytes already there")
    plan = plan_sort(items_for([first, second, third]), tmp_path / "out")
    names = [op.destination.name for op in plan.operations]
    assert names == ["cat (2).jpg", "cat (3).jpg", "CAT (4).jpg"]
    assert [op.action for op in plan.operations] == ["move"] * 3


def test_identical_bytes_already_in_the_folder_are_planned_as_duplicates(tmp_path: Path) -> None:
    source = write(tmp_path / "in" / "new-name.jpg", "same bytes")
    twin = write(tmp_path / "in" / "twin.jpg", "same bytes")
    existing = write(tmp_path / "out" / "Bengal" / "old-name.jpg", "same bytes")
    plan = plan_sort(items_for([source, twin]), tmp_path / "out")
    assert [(op.action, op.destination) for op in plan.operations] == [
        ("duplicate", existing.resolve()),
        ("duplicate", existing.resolve()),
    ]
    assert plan.summary()["duplicate"] == 2


def test_two_identical_sources_in_one_plan_become_one_file_and_one_duplicate(tmp_path: Path) -> None:
    first = write(tmp_path / "in" / "a.jpg", "same")
    second = write(tmp_path / "in" / "b.jpg", "same")
    plan = plan_sort(items_for([first, second]), tmp_path / "out", mode="copy")
    assert [op.action for op in plan.operations] == ["copy", "duplicate"]
    assert plan.operations[1].destination == plan.operations[0].destination


def test_repeated_items_and_photos_already_in_place_are_left_out(tmp_path: Path) -> None:
    source = write(tmp_path / "in" / "a.jpg", "a")
    placed = write(tmp_path / "out" / "Bengal" / "b.jpg", "b")
    plan = plan_sort(items_for([source, source, placed]), tmp_path / "out")
    assert [op.source for op in plan.operations] == [source]


def test_bad_mode_threshold_or_target_are_refused(tmp_path: Path) -> None:
    source = write(tmp_path / "a.jpg", "a")
    with pytest.raises(ValueError, match="mode"):
        plan_sort(items_for([source]), tmp_path / "out", mode="delete")
    with pytest.raises(ValueError, match="between 0 and 1"):
        plan_sort(items_for([source]), tmp_path / "out", min_confidence=1.5)
    with pytest.raises(NotADirectoryError):
        plan_sort(items_for([source]), source)
