"""The folder watcher hands over new photos only once their writing has finished."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from factories import COLOURS, make_photo

from catbreed_desktop.core.watching import FolderWatcher


class Collector:
    """Records what the watcher hands over, with the file's size at that moment."""

    def __init__(self) -> None:
        self.ready: list[tuple[Path, int]] = []
        self.event = threading.Event()

    def __call__(self, paths: list[Path]) -> None:
        self.ready.extend((path, path.stat().st_size) for path in paths)
        self.event.set()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ready) < count and time.monotonic() < deadline:
            time.sleep(0.05)


def test_a_photo_written_slowly_is_handed_over_once_complete(tmp_path: Path) -> None:
    watched = tmp_path / "inbox"
    watched.mkdir()
    photo_bytes = make_photo(tmp_path / "source.png", COLOURS["Red Cat"], size=(200, 150)).read_bytes()
    collector = Collector()
    with FolderWatcher(collector, check_interval=0.1, quiet_period=0.3) as watcher:
        watcher.add_folder(watched)
        target = watched / "new.png"
        chunks = [
            photo_bytes[i : i + len(photo_bytes) // 6 + 1]
            for i in range(0, len(photo_bytes), len(photo_bytes) // 6 + 1)
        ]
        # Pauses longer than several checks: only the writer still holding the file open says it is unfinished.
        with open(target, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                handle.flush()
                time.sleep(0.35)
                assert collector.ready == []
        collector.wait_for(1)
    assert collector.ready == [(target, len(photo_bytes))]


def test_a_photo_moved_in_is_handed_over_and_other_files_are_not(tmp_path: Path) -> None:
    watched = tmp_path / "inbox"
    (watched / "sub").mkdir(parents=True)
    outside = make_photo(tmp_path / "outside.jpg", COLOURS["Blue Cat"])
    collector = Collector()
    with FolderWatcher(collector, check_interval=0.1, quiet_period=0.3) as watcher:
        watcher.add_folder(watched)
        time.sleep(0.2)
        (watched / "notes.txt").write_text("not a photo")
        (watched / ".hidden.png").write_bytes(outside.read_bytes())
        outside.rename(watched / "sub" / "moved.jpg")
        collector.wait_for(1)
        time.sleep(0.5)  # give an unwanted file time to show up, were it going to
    assert [path for path, _ in collector.ready] == [watched / "sub" / "moved.jpg"]


def test_expected_paths_and_ignored_folders_raise_nothing(tmp_path: Path) -> None:
    watched = tmp_path / "inbox"
    sorted_folder = watched / "Sorted"
    sorted_folder.mkdir(parents=True)
    collector = Collector()
    with FolderWatcher(collector, check_interval=0.1, quiet_period=0.3) as watcher:
        watcher.add_folder(watched)
        watcher.set_ignored_folders([sorted_folder])
        watcher.expect([watched / "restored.png"])
        make_photo(sorted_folder / "Red Cat" / "a.png", COLOURS["Red Cat"])
        make_photo(watched / "restored.png", COLOURS["Red Cat"])
        make_photo(watched / "fresh.png", COLOURS["Green Cat"])
        collector.wait_for(1)
        time.sleep(0.5)
    assert [path for path, _ in collector.ready] == [watched / "fresh.png"]


def test_removed_folders_are_no_longer_watched(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    collector = Collector()
    with FolderWatcher(collector, check_interval=0.1, quiet_period=0.3) as watcher:
        watcher.add_folder(first)
        watcher.add_folder(second)
        watcher.remove_folder(first)
        assert watcher.folders == [second]
        make_photo(first / "a.png", COLOURS["Red Cat"])
        make_photo(second / "b.png", COLOURS["Red Cat"])
        collector.wait_for(1)
        time.sleep(0.4)
    assert [path for path, _ in collector.ready] == [second / "b.png"]


def test_watching_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    watcher = FolderWatcher(lambda paths: None)
    try:
        watcher.add_folder(tmp_path / "nowhere")
    except NotADirectoryError as error:
        assert "nowhere" in str(error)
    else:
        raise AssertionError("a missing folder was accepted")


def test_without_close_events_a_stable_size_over_two_checks_decides(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "a.png", COLOURS["Red Cat"])
    watcher = FolderWatcher(lambda paths: None, stable_checks=2, quiet_period=0)
    watcher.add_folder(tmp_path)
    from watchdog.events import FileCreatedEvent, FileModifiedEvent

    watcher.handle(FileCreatedEvent(str(photo)))
    assert watcher.check_now() == []  # first look: nothing to compare with
    assert watcher.check_now() == []  # one unchanged check
    with open(photo, "ab") as handle:
        handle.write(b"\0")
    watcher.handle(FileModifiedEvent(str(photo)))
    assert watcher.check_now() == []  # changed: start again
    assert watcher.check_now() == []
    assert watcher.check_now() == [photo]
    assert watcher.pending() == []
