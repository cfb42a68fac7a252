"""Breed labels as folder names: odd, hostile and reserved labels all stay one folder inside the target."""

from __future__ import annotations

from pathlib import Path

import pytest

from catbreed_desktop.core.sorting import SortItem, plan_sort, safe_folder_name
from catbreed_desktop.core.sorting.folder_names import (
    MAX_FOLDER_NAME,
    UNKNOWN_FOLDER,
    collision_names,
    is_inside,
)

HOSTILE_LABELS = [
    "../../etc",
    "..",
    ".",
    "/absolute/path",
    "C:\\Windows\\System32",
    "a/b\\c",
    "name\x00with\x1fcontrols\n",
    "  .dotted and spaced.  ",
    "CON",
    "nul.txt",
    "Com1",
    "lpt9",
    'what?<is>:"this"|*',
    "x" * 500,
    "",
    "   ",
    "\u202eevil\u200b",
]


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_hostile_labels_become_one_plain_folder_inside_the_target(tmp_path: Path, label: str) -> None:
    name = safe_folder_name(label)
    assert name and len(name) <= MAX_FOLDER_NAME + 1
    assert "/" not in name and "\\" not in name and name not in (".", "..")
    assert not any(ord(ch) < 32 for ch in name)
    assert name == name.strip(" .")
    assert not set('<>:"|?*') & set(name)
    assert name.split(".")[0].strip().upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT9"}
    folder = tmp_path / "target" / name
    assert is_inside(folder, tmp_path / "target")
    assert folder.parent == tmp_path / "target"
    folder.mkdir(parents=True)  # and it is a name the file system accepts


def test_ordinary_breed_names_are_kept_as_they_are() -> None:
    for label in ("Maine Coon", "British Shorthair", "Sphynx", "Chat de Gouttière", "Ragdoll"):
        assert safe_folder_name(label) == label
    assert safe_folder_name("Maine_Coon") == "Maine_Coon"


def test_labels_that_are_nothing_once_cleaned_get_a_stated_name() -> None:
    assert safe_folder_name("...") == UNKNOWN_FOLDER
    assert safe_folder_name("/") == UNKNOWN_FOLDER
    assert safe_folder_name("\x00\x01") == UNKNOWN_FOLDER


def test_reserved_windows_names_get_a_suffix_not_dropped() -> None:
    assert safe_folder_name("CON") == "CON_"
    assert safe_folder_name("aux.cat") == "aux_.cat"
    assert safe_folder_name("nul .txt") == "nul_.txt"
    assert safe_folder_name("Console") == "Console"


def test_collision_names_count_up_from_two() -> None:
    names = collision_names(Path("/t/cat.photo.jpg"))
    assert [next(names).name for _ in range(4)] == [
        "cat.photo.jpg",
        "cat.photo (2).jpg",
        "cat.photo (3).jpg",
        "cat.photo (4).jpg",
    ]


def test_a_plan_with_hostile_labels_only_targets_direct_subfolders(tmp_path: Path) -> None:
    target = tmp_path / "target"
    sources = []
    for number, label in enumerate(HOSTILE_LABELS):
        source = tmp_path / "in" / f"{number}.jpg"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(f"photo {number}".encode())
        sources.append(SortItem(source, label, 0.99))
    plan = plan_sort(sources, target)
    assert len(plan.operations) == len(HOSTILE_LABELS)
    for operation in plan.operations:
        assert operation.destination.parent.parent == target.resolve()
        assert is_inside(operation.destination, target)
