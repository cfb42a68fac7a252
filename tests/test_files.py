"""The one atomic file write and the one file hash that the app and the trainer share."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from catbreed_desktop.core import files
from catbreed_desktop.core.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    file_digest,
    sha256_file,
)
from catbreed_desktop.core.sorting.fileops import Fingerprint, fingerprint


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "settings.json"
    target.write_text("old")

    atomic_write_text(target, "new ✓\n")

    assert target.read_bytes() == "new ✓\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    target.write_bytes(b"the previous state")

    def half_then_fail(stream) -> None:
        stream.write(b"half a new state")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, half_then_fail)

    assert target.read_bytes() == b"the previous state"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_a_failed_rename_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a folder where the file should go: the rename fails

    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")

    assert [p.name for p in tmp_path.iterdir()] == ["taken"] and not any(target.iterdir())


def test_the_file_and_then_its_folder_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("folder" if stat.S_ISDIR(mode) else f"file of {os.fstat(fd).st_size} bytes")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", recording_fsync)
    atomic_write_bytes(tmp_path / "engine.plan", b"12345")

    # The data is on disk before the rename, and the rename is on disk before the call returns
    # (Windows cannot open a folder to sync it).
    expected = ["file of 5 bytes", "folder"] if os.name == "posix" else ["file of 5 bytes"]
    assert synced == expected

    synced.clear()  # a rebuildable cache (thumbnails) skips the syncs, not the rename
    atomic_write(tmp_path / "thumbnail.png", lambda stream: stream.write(b"png"), durable=False)
    assert synced == [] and (tmp_path / "thumbnail.png").read_bytes() == b"png"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_the_new_file_gets_the_mode_a_plain_open_would_give(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "corrections.csv", "path,label\n")
    finally:
        os.umask(previous)
    # Not the 0600 of a temporary file: an exported CSV must stay readable to the user's other tools.
    assert stat.S_IMODE((tmp_path / "corrections.csv").stat().st_mode) == 0o644


def test_a_name_at_the_length_limit_still_gets_a_temporary_that_fits(tmp_path: Path) -> None:
    target = tmp_path / (
        "é" * 120 + ".csv"
    )  # 244 bytes: the temporary name must be shorter than the target's

    atomic_write_bytes(target, b"x")

    assert target.read_bytes() == b"x" and len(list(tmp_path.iterdir())) == 1


def test_one_hash_for_every_file_checksum(tmp_path: Path) -> None:
    data = os.urandom(3 * files.CHUNK + 17)  # several chunks and a partial one
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()

    assert sha256_file(path) == expected
    assert file_digest(path, chunk_size=4096) == (len(data), expected)
    assert fingerprint(path) == Fingerprint(len(data), expected)  # what sorting and undo compare
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_digest(empty) == (0, hashlib.sha256(b"").hexdigest())
