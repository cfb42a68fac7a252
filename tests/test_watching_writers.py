"""Photos still being written: the watcher keeps them pending, and a move across disks keeps them.

Real writers with real pauses: rewritten in place, reopened to append, renamed in while open, held
open for long. A writer that comes back after a pause no check can foresee is caught by the sort:
a move across file systems removes the source only if it is unchanged and not open for writing.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sorting_helpers import items_for, write
from test_watching import Collector

from catbreed_desktop.core import open_files, watching
from catbreed_desktop.core.sorting import execute_plan, fileops, plan_sort
from catbreed_desktop.core.sorting.fileops import TEMP_SUFFIX
from catbreed_desktop.core.sorting.folder_names import is_inside
from catbreed_desktop.core.watching import FolderWatcher

JPEG = b"\xff\xd8" + os.urandom(100_000) + b"\xff\xd9"
TRAILER = os.urandom(1024 * 1024)  # a motion photo's video, appended after the still
QUICK = {"check_interval": 0.1, "quiet_period": 0.3}
needs_proc = pytest.mark.skipif(
    not open_files.can_tell(), reason="needs /proc to see other programs' open files"
)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def other_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on another file system: a real tmpfs where mounting is allowed, else EXDEV simulated."""
    folder = tmp_path / "other-disk"
    folder.mkdir()
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("mount"):
        mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)]
        if subprocess.run(mount, capture_output=True).returncode == 0:
            try:
                assert folder.stat().st_dev != tmp_path.stat().st_dev
                yield folder
            finally:
                subprocess.run(["umount", "-l", str(folder)], check=True)
            return
    same_disk_rename = fileops.rename_no_replace

    def rename(source: Path, destination: Path) -> None:
        if is_inside(Path(source), folder) != is_inside(Path(destination), folder):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        same_disk_rename(source, destination)

    monkeypatch.setattr(fileops, "rename_no_replace", rename)
    yield folder


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


# --- the watcher ---------------------------------------------------------------------------------


@needs_proc
def test_a_photo_rewritten_in_place_with_a_pause_is_sorted_across_disks_whole(
    inbox: Path, other_disk: Path
) -> None:
    """The issue's case: an existing file reopened (its open never seen as a new file's), the still
    written, a pause, the trailer appended; auto-sort moves it to another disk as soon as handed over."""
    photo = write(inbox / "PXL_0001.MP.jpg", b"an older version")
    sorted_sizes: list[int] = []
    failures: list[str] = []

    def auto_sort(paths: list[Path]) -> None:
        result = execute_plan(plan_sort(items_for(paths), other_disk))
        sorted_sizes.extend(op.destination.stat().st_size for op in result.done)
        failures.extend(reason for _, reason in result.failed)

    with FolderWatcher(auto_sort, **QUICK) as watcher:
        watcher.add_folder(inbox)
        with open(photo, "wb") as writer:  # O_TRUNC: rewritten in place
            writer.write(JPEG)
            writer.flush()
            time.sleep(1.0)  # over three quiet periods, ten checks
            assert sorted_sizes == [] and photo.exists()
            writer.write(TRAILER)
        deadline = time.monotonic() + 10
        while not (sorted_sizes or failures) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert failures == []
    assert sorted_sizes == [len(JPEG) + len(TRAILER)]
    assert not photo.exists()
    assert (other_disk / "Bengal" / photo.name).read_bytes() == JPEG + TRAILER


@pytest.mark.slow
def test_a_photo_reopened_after_a_pause_to_append_is_handed_over_once_complete(inbox: Path) -> None:
    """Written and closed, then reopened 3 s later for its trailer: the default quiet period outlasts it."""
    collector = Collector()
    photo = inbox / "PXL_0002.MP.jpg"
    with FolderWatcher(collector, check_interval=0.1) as watcher:
        watcher.add_folder(inbox)
        photo.write_bytes(JPEG)
        time.sleep(3.0)
        assert collector.ready == []
        with open(photo, "ab") as writer:
            writer.write(TRAILER)
        assert collector.ready == []
        collector.wait_for(1)
    assert collector.ready == [(photo, len(JPEG) + len(TRAILER))]


@needs_proc
def test_a_photo_renamed_in_while_still_open_waits_for_its_writer(inbox: Path) -> None:
    collector = Collector()
    part = inbox / ".cat.jpg.part"  # a hidden name the watcher ignores, as downloaders use
    photo = inbox / "cat.jpg"
    with FolderWatcher(collector, **QUICK) as watcher:
        watcher.add_folder(inbox)
        with open(part, "wb") as writer:
            writer.write(JPEG)
            writer.flush()
            part.rename(photo)
            time.sleep(0.8)
            assert collector.ready == []
            writer.write(TRAILER)
        collector.wait_for(1)
    assert collector.ready == [(photo, len(JPEG) + len(TRAILER))]


@needs_proc
def test_a_writer_holding_a_photo_open_keeps_it_pending_however_long(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten minutes pass on the watcher's clock (past any time limit) while the writer keeps it open."""
    later = [0.0]
    real_clock = time.monotonic
    monkeypatch.setattr(watching, "time", SimpleNamespace(monotonic=lambda: real_clock() + later[0]))
    collector = Collector()
    photo = inbox / "held.jpg"
    with FolderWatcher(collector, **QUICK) as watcher:
        watcher.add_folder(inbox)
        with open(photo, "wb") as writer:
            writer.write(JPEG)
            writer.flush()
            while photo not in watcher.pending():
                time.sleep(0.02)
            later[0] = 600.0
            time.sleep(0.6)  # six checks, each asking /proc anew past the quiet period
            assert collector.ready == [] and watcher.pending() == [photo]
            writer.write(TRAILER)
        collector.wait_for(1)
    assert collector.ready == [(photo, len(JPEG) + len(TRAILER))]


@needs_proc
def test_a_photo_overwritten_in_place_slowly_is_handed_over_once_complete(inbox: Path) -> None:
    photo = write(inbox / "cat.jpg", JPEG)
    collector = Collector()
    new_bytes = os.urandom(300_000)
    with FolderWatcher(collector, **QUICK) as watcher:
        watcher.add_folder(inbox)
        fd = os.open(photo, os.O_WRONLY | os.O_TRUNC)
        try:
            for start in range(0, len(new_bytes), 100_000):
                os.write(fd, new_bytes[start : start + 100_000])
                time.sleep(0.5)
                assert collector.ready == []
        finally:
            os.close(fd)
        collector.wait_for(1)
    assert collector.ready == [(photo, len(new_bytes))]


@needs_proc
def test_a_reader_holding_a_finished_photo_open_does_not_keep_it_pending(inbox: Path) -> None:
    """A viewer or thumbnailer that opened the photo is no writer, whatever inotify counted."""
    collector = Collector()
    photo = inbox / "cat.jpg"
    with FolderWatcher(collector, **QUICK) as watcher:
        watcher.add_folder(inbox)
        photo.write_bytes(JPEG)
        with open(photo, "rb"):
            collector.wait_for(1, timeout=5.0)
    assert collector.ready == [(photo, len(JPEG))]


def test_without_proc_an_open_writer_seen_by_its_events_keeps_the_photo_pending(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where open files cannot be listed, inotify's open and close events are what is left."""
    monkeypatch.setattr(watching, "open_for_writing", lambda paths: None)
    collector = Collector()
    photo = inbox / "cat.jpg"
    with FolderWatcher(collector, **QUICK) as watcher:
        watcher.add_folder(inbox)
        with open(photo, "wb") as writer:
            writer.write(JPEG)
            writer.flush()
            time.sleep(0.8)
            assert collector.ready == []
            writer.write(TRAILER)
        collector.wait_for(1)
    assert collector.ready == [(photo, len(JPEG) + len(TRAILER))]


# --- the move across disks -------------------------------------------------------------------------


def test_a_source_that_grows_between_copy_and_removal_is_kept_whole(
    tmp_path: Path, other_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path / "in" / "cat.jpg", JPEG)
    real_copy = fileops._copy_bytes

    def copy_then_writer_appends(src: Path, temp: Path) -> None:
        real_copy(src, temp)
        with open(src, "ab") as writer:  # the trailer lands after the copy was taken
            writer.write(TRAILER)

    monkeypatch.setattr(fileops, "_copy_bytes", copy_then_writer_appends)
    result = execute_plan(plan_sort(items_for([source]), other_disk))
    assert not result.done and len(result.failed) == 1
    assert "changed while it was being moved" in result.failed[0][1]
    assert source.read_bytes() == JPEG + TRAILER
    assert not list(other_disk.rglob("*.jpg"))
    assert _no_temp_files(tmp_path)


@needs_proc
def test_a_source_its_writer_still_holds_open_is_not_removed(tmp_path: Path, other_disk: Path) -> None:
    """The writer pauses mid-file while the sort runs: nothing changes, but it is not finished."""
    source = tmp_path / "in" / "cat.jpg"
    source.parent.mkdir()
    with open(source, "wb") as writer:
        writer.write(JPEG)
        writer.flush()
        result = execute_plan(plan_sort(items_for([source]), other_disk))
        writer.write(TRAILER)
    assert not result.done and len(result.failed) == 1
    assert "still open for writing" in result.failed[0][1]
    assert source.read_bytes() == JPEG + TRAILER
    assert not list(other_disk.rglob("*.jpg"))
    assert _no_temp_files(tmp_path)


# --- open files ----------------------------------------------------------------------------------


@needs_proc
def test_open_for_writing_sees_write_modes_only_and_follows_renames(tmp_path: Path) -> None:
    appended, both, read, closed = (write(tmp_path / f"{name}.jpg", b"x") for name in ("a", "b", "c", "d"))
    with open(appended, "ab"), open(both, "r+b"), open(read, "rb"):
        open(closed, "wb").close()
        renamed = appended.rename(tmp_path / "renamed.jpg")
        found = open_files.open_for_writing([renamed, both, read, closed, tmp_path / "missing.jpg"])
    assert found == {renamed, both}
    assert open_files.open_for_writing([renamed, both]) == set()
