"""File operations: no-replace renames (all fallbacks), collisions and races, cross-file-system moves
with verification, duplicates, and files that cannot be sorted."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from sorting_helpers import contents, items_for, sha256, snapshot, write

from catbreed_desktop.core.sorting import execute_plan, fileops, plan_sort
from catbreed_desktop.core.sorting.fileops import TEMP_SUFFIX, Fingerprint, VerificationError


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def _without_native_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fileops, "_native_rename", None)


def _without_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", refuse)


@pytest.mark.parametrize("fallback", ["native", "link", "reserve"])
def test_rename_no_replace_refuses_to_replace_and_otherwise_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback: str
) -> None:
    if fallback != "native":
        _without_native_rename(monkeypatch)
    if fallback == "reserve":
        _without_hard_links(monkeypatch)
    source = write(tmp_path / "a" / "photo.jpg", "mine")
    taken = write(tmp_path / "b" / "photo.jpg", "someone else's")
    with pytest.raises(FileExistsError):
        fileops.rename_no_replace(source, taken)
    assert source.read_text() == "mine" and taken.read_text() == "someone else's"

    free = tmp_path / "b" / "free.jpg"
    fileops.rename_no_replace(source, free)
    assert free.read_text() == "mine" and not source.exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["free.jpg", "photo.jpg"]


def test_a_name_taken_between_plan_and_execution_gets_the_next_number(tmp_path: Path) -> None:
    source = write(tmp_path / "in" / "cat.jpg", "mine")
    plan = plan_sort(items_for([source]), tmp_path / "out")
    assert plan.operations[0].destination.name == "cat.jpg"
    intruder = write(tmp_path / "out" / "Bengal" / "cat.jpg", "arrived after the plan")
    result = execute_plan(plan)
    assert [op.destination.name for op in result.done] == ["cat (2).jpg"]
    assert intruder.read_text() == "arrived after the plan"
    assert (tmp_path / "out" / "Bengal" / "cat (2).jpg").read_text() == "mine"
    assert not source.exists()


def test_a_file_appearing_at_the_very_moment_of_the_move_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path / "in" / "cat.jpg", "mine")
    plan = plan_sort(items_for([source]), tmp_path / "out")
    real_move = fileops.move_file
    raced: list[Path] = []

    def racing_move(src: Path, dst: Path, temp: Path, expected: Fingerprint) -> None:
        if not raced:  # another program writes the name after our check, before our rename
            raced.append(write(dst, "the racer's file"))
        real_move(src, dst, temp, expected)

    monkeypatch.setattr(fileops, "move_file", racing_move)
    result = execute_plan(plan)
    assert raced[0].read_text() == "the racer's file"
    assert [op.destination.name for op in result.done] == ["cat (2).jpg"]
    assert (tmp_path / "out" / "Bengal" / "cat (2).jpg").read_text() == "mine"


def _cross_device(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, Path]]:
    """Make renames between different folders fail as they do across file systems."""
    real = fileops.rename_no_replace
    refused: list[tuple[Path, Path]] = []

    def rename(source: Path, destination: Path) -> None:
        if Path(source).parent != Path(destination).parent:
            refused.append((source, destination))
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(source, destination)

    monkeypatch.setattr(fileops, "rename_no_replace", rename)
    return refused


def test_a_cross_file_system_move_copies_verifies_then_removes_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = [write(tmp_path / "in" / f"{n}.jpg", os.urandom(50_000 + n)) for n in range(3)]
    hashes = sorted(sha256(p) for p in sources)
    refused = _cross_device(monkeypatch)
    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    assert len(refused) == 3 and len(result.done) == 3 and not result.failed
    assert not any(p.exists() for p in sources)
    assert contents(tmp_path / "out") == hashes
    assert _no_temp_files(tmp_path)


def test_a_copy_that_does_not_verify_keeps_the_source_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path / "in" / "cat.jpg", os.urandom(10_000))
    original = sha256(source)
    _cross_device(monkeypatch)
    real_copy = fileops._copy_bytes

    def corrupting_copy(src: Path, temp: Path) -> None:
        real_copy(src, temp)
        with open(temp, "r+b") as handle:  # one flipped byte, as a failing disk or cable would do
            first = handle.read(1)
            handle.seek(0)
            handle.write(bytes([first[0] ^ 0xFF]))

    monkeypatch.setattr(fileops, "_copy_bytes", corrupting_copy)
    result = execute_plan(plan_sort(items_for([source]), tmp_path / "out"))
    assert not result.done and len(result.failed) == 1
    assert "does not match" in result.failed[0][1]
    assert sha256(source) == original
    assert not (tmp_path / "out" / "Bengal" / "cat.jpg").exists()
    assert _no_temp_files(tmp_path)


def test_verified_copy_raises_and_cleans_up_on_mismatch(tmp_path: Path) -> None:
    source = write(tmp_path / "cat.jpg", "real bytes")
    destination = tmp_path / "out" / "cat.jpg"
    destination.parent.mkdir()
    temp = fileops.temp_name_for(destination, "t")
    with pytest.raises(VerificationError):
        fileops.verified_copy(source, destination, temp, Fingerprint(3, "0" * 64))
    assert not destination.exists() and not temp.exists()


def test_copies_are_verified_and_originals_kept(tmp_path: Path) -> None:
    sources = [write(tmp_path / "in" / f"{n}.jpg", os.urandom(2000)) for n in range(4)]
    before = snapshot(tmp_path / "in")
    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode="copy"))
    assert len(result.done) == 4
    assert snapshot(tmp_path / "in") == before
    assert contents(tmp_path / "out") == sorted(before.values())
    assert _no_temp_files(tmp_path)


def test_identical_bytes_at_the_destination_are_reported_and_the_source_stays(tmp_path: Path) -> None:
    source = write(tmp_path / "in" / "new.jpg", "same bytes")
    plan = plan_sort(items_for([source]), tmp_path / "out")
    assert plan.operations[0].action == "move"
    existing = write(tmp_path / "out" / "Bengal" / "older-copy.jpg", "same bytes")  # after the plan
    result = execute_plan(plan)
    assert not result.done and [op.destination for op in result.duplicates] == [existing]
    assert source.read_text() == "same bytes"
    assert sorted(p.name for p in existing.parent.iterdir()) == ["older-copy.jpg"]


def test_missing_and_linked_sources_fail_without_touching_anything(tmp_path: Path) -> None:
    vanished = write(tmp_path / "in" / "vanished.jpg", "v")
    real = write(tmp_path / "elsewhere" / "real.jpg", "r")
    link = tmp_path / "in" / "link.jpg"
    link.symlink_to(real)
    plan = plan_sort(items_for([vanished, link]), tmp_path / "out")
    vanished.unlink()
    result = execute_plan(plan)
    assert not result.done and len(result.failed) == 2
    assert link.is_symlink() and real.read_text() == "r"
    assert not list((tmp_path / "out").rglob("*.jpg"))
