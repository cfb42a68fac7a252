"""The journal survives what disks and people do to it.

A torn last record, a full disk, a file name that is not UTF-8, a read-only data folder or a
damaged record must never make undo or resume impossible, and never end in a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sorting_helpers import contents, items_for, snapshot, write

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.sorting import (
    JournalError,
    JournalWriteError,
    NothingToUndo,
    execute_plan,
    list_journals,
    plan_sort,
    resume_interrupted_sort,
    undo_last_sort,
)
from catbreed_desktop.core.sorting.journal import journals_dir, read_journal


def _photos(root: Path, name: str, count: int = 3) -> list[Path]:
    return [write(root / name / f"cat{number}.jpg", f"{name} photo {number}") for number in range(count)]


def _sort(root: Path, sources: list[Path], mode: str = "move") -> None:
    execute_plan(plan_sort(items_for(sources), root / "out", mode=mode))


def test_a_torn_last_record_does_not_block_undoing_the_sort_before(tmp_path: Path) -> None:
    first, second = _photos(tmp_path, "first"), _photos(tmp_path, "second")
    before = snapshot(tmp_path)
    _sort(tmp_path, first)
    _sort(tmp_path, second)
    newest = list_journals()[-1]
    with open(newest, "r+b") as handle:  # truncate -s -10: the "end" record loses its tail
        handle.truncate(newest.stat().st_size - 10)

    undo_last_sort()
    undo_last_sort()

    assert snapshot(tmp_path) == before


def test_a_record_torn_by_a_full_disk_is_taken_back_and_the_sort_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(6)]
    before = snapshot(tmp_path)
    real_write = os.write
    journal_writes = []

    def fill_the_disk(fd: int, data: bytes) -> int:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == journals_dir():
            journal_writes.append(fd)
            if len(journal_writes) > 6:  # start, then a few records, then the disk is full
                if len(journal_writes) == 7:
                    return real_write(fd, bytes(data)[: len(data) // 2])  # a short write
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fill_the_disk)
    with pytest.raises(JournalWriteError, match="No space left on device"):
        execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    monkeypatch.setattr(os, "write", real_write)

    assert sorted(contents(tmp_path)) == sorted(before.values())  # every photo exactly once
    state = read_journal(list_journals()[-1])  # whole lines only: still readable
    assert 0 < len([op for op in state.operations if op.outcome == "done"]) < 6
    result = resume_interrupted_sort()
    assert result is not None and len(result.done) == 6
    undo_last_sort()
    assert snapshot(tmp_path) == before


def test_a_full_disk_at_the_start_leaves_no_journal_that_blocks_undo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _photos(tmp_path, "first")
    later = _photos(tmp_path, "later")
    before = snapshot(tmp_path)
    _sort(tmp_path, first)
    journals = list_journals()

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", disk_full)
        with pytest.raises(JournalWriteError, match="nothing was sorted"):
            execute_plan(plan_sort(items_for(later), tmp_path / "out"))

    assert list_journals() == journals
    assert not list(journals_dir().glob(".*.new"))
    assert main(["undo"]) == 0
    assert "3 photos put back" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_a_start_record_left_half_made_by_a_kill_is_cleared_by_the_next_sort(tmp_path: Path) -> None:
    stale = journals_dir() / ".sort-20260101T000000-000000-1.jsonl.new"
    stale.write_text('{"type": "start"}\n')

    _sort(tmp_path, _photos(tmp_path, "first"))

    assert not stale.exists() and len(list_journals()) == 1


def test_an_empty_journal_left_by_an_older_version_does_not_block_undo(tmp_path: Path) -> None:
    sources = _photos(tmp_path, "first")
    _sort(tmp_path, sources)
    (journals_dir() / "sort-29990101T000000-000000-1.jsonl").write_bytes(b"")

    result = undo_last_sort()

    assert result.restored == 3 and all(path.exists() for path in sources)


def test_file_names_that_are_not_utf8_are_sorted_journaled_and_undone_exactly(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    names = [b"caf\xe9.jpg", b"\xff\xfe photo.jpg", b"plain.jpg"]
    for number, name in enumerate(names):
        (inbox / os.fsdecode(name)).write_bytes(b"bytes of photo %d" % number)
    before = snapshot(tmp_path)
    sources = sorted(inbox.iterdir())

    result = execute_plan(plan_sort(items_for(sources), tmp_path / "out", mode="move"))

    assert len(result.done) == 3 and not result.failed
    journal_text = list_journals()[-1].read_bytes().decode("ascii")  # strict: no raw bytes in it
    assert "\\udce9" in journal_text
    assert sorted(os.fsencode(p.name) for p in (tmp_path / "out" / "Bengal").iterdir()) == sorted(names)
    undo_last_sort()
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(os.fsencode(inbox))) == sorted(names)


def test_cli_sort_and_undo_print_non_utf8_names_escaped_under_a_strict_utf8_stdout(
    tmp_path: Path, colour_bundle
) -> None:
    from factories import make_photo

    inbox = tmp_path / "in"
    make_photo(inbox / os.fsdecode(b"caf\xe9.jpg"), (200, 30, 30))
    environment = dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8")
    command = [sys.executable, "-m", "catbreed_desktop.cli.main"]
    sort = subprocess.run(
        [
            *command,
            "-v",
            "sort",
            str(inbox),
            "--into",
            str(tmp_path / "out"),
            "--model",
            str(colour_bundle.path),
        ]
        + ["--engine", "cpu"],
        capture_output=True,
        env=environment,
        timeout=120,
    )
    assert sort.returncode == 0, sort.stderr.decode()
    assert b"Traceback" not in sort.stderr
    assert b"caf\\xe9.jpg" in sort.stdout
    undo = subprocess.run([*command, "undo"], capture_output=True, env=environment, timeout=120)
    assert undo.returncode == 0 and b"1 photo put back" in undo.stdout
    assert os.listdir(os.fsencode(inbox)) == [b"caf\xe9.jpg"]


def test_after_every_sort_is_undone_the_message_says_so(tmp_path: Path) -> None:
    _sort(tmp_path, _photos(tmp_path, "first"))
    _sort(tmp_path, _photos(tmp_path, "second"))
    undo_last_sort()
    undo_last_sort()

    with pytest.raises(NothingToUndo, match="all 2 sorts .* are undone"):
        undo_last_sort()


def test_an_unusable_data_folder_is_a_clear_error_for_sort_and_undo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, colour_bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    from factories import make_photo

    blocker = write(tmp_path / "not-a-folder", "a file where the data folder should be")
    monkeypatch.setenv("CATBREED_DATA_DIR", str(blocker / "data"))
    make_photo(tmp_path / "in" / "cat.jpg", (200, 30, 30))
    before = snapshot(tmp_path)

    with pytest.raises(JournalError, match="cannot use the folder for sort journals"):
        undo_last_sort()
    sort_status = main(
        ["sort", str(tmp_path / "in"), "--into", str(tmp_path / "out"), "--model", str(colour_bundle.path)]
        + ["--engine", "cpu"]
    )
    undo_status = main(["undo"])

    err = capsys.readouterr().err
    assert (sort_status, undo_status) == (2, 2)
    assert err.count("cannot use the folder for sort journals") == 2 and "Traceback" not in err
    assert snapshot(tmp_path) == before


def _journal_with_every_record_type(root: Path) -> Path:
    """A journal holding mkdir, intent, done, duplicate, failed and undo records."""
    write(root / "out" / "Bengal" / "same.jpg", "same bytes")
    sources = [write(root / "in" / f"cat{n}.jpg", f"photo {n}") for n in range(3)]
    sources.append(write(root / "in" / "same.jpg", "same bytes"))
    sources.append(root / "in" / "vanished.jpg")
    execute_plan(plan_sort(items_for(sources), root / "out"))
    return list_journals()[-1]


def _corruptions(lines: list[dict]) -> list[tuple[str, list[dict]]]:
    """Every field of every record removed, set to null, to a list, to a string and to -1."""
    cases = []
    for index, record in enumerate(lines):
        for key in record:
            for label, value in (
                ("missing", ...),
                ("null", None),
                ("list", []),
                ("text", "x"),
                ("minus", -1),
            ):
                changed = [dict(line) for line in lines]
                if value is ...:
                    del changed[index][key]
                else:
                    changed[index][key] = value
                cases.append((f"line {index + 1} {key} {label}", changed))
        cases.append((f"line {index + 1} not an object", [*lines[:index], [1, 2], *lines[index + 1 :]]))
    cases.append(("id past the plan", [*lines, {"type": "done", "id": 99, "destination": "/x"}]))
    cases.append(("id true", [*lines, {"type": "undo-done", "id": True}]))
    cases.append(("operations not objects", [{**lines[0], "operations": ["a", "b"]}, *lines[1:]]))
    return cases


def test_no_damaged_journal_gives_a_traceback_or_loses_a_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A damaged name that is relative would resolve against the working folder: watch that one too.
    elsewhere = tmp_path.parent / f"{tmp_path.name}-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = _journal_with_every_record_type(tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    sorted_state = snapshot(tmp_path)
    outcomes = {"read": 0, "refused": 0}
    for name, changed in _corruptions(lines):
        path.write_text("".join(json.dumps(line) + "\n" for line in changed))
        try:
            read_journal(path)
            outcomes["read"] += 1
        except JournalError as error:
            assert str(path) in str(error), name
            outcomes["refused"] += 1
        with contextlib.suppress(JournalError, NothingToUndo):
            undo_last_sort()
        assert not any(elsewhere.iterdir()), name
        # Whatever undo made of it, every photo still exists exactly once.
        assert sorted(contents(tmp_path)) == sorted(sorted_state.values()), name
        if snapshot(tmp_path) != sorted_state:  # undone: sort again for the next case
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            for placed, original in _moves(lines):
                if original.exists() and not placed.exists():
                    placed.parent.mkdir(parents=True, exist_ok=True)
                    original.rename(placed)
        assert snapshot(tmp_path) == sorted_state, name
    assert outcomes["refused"] > 50


def _moves(lines: list[dict]) -> list[tuple[Path, Path]]:
    return [(Path(r["destination"]), Path(r["source"])) for r in lines if r.get("type") == "intent"]
