"""Watched folders in the window: a photo written slowly is classified only once complete, then auto-sorted."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import COLOURS, make_photo

from catbreed_desktop.core.settings import Settings
from catbreed_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.timeout(60)


def spy_on_classifier(window: MainWindow) -> list[tuple[Path, bytes]]:
    """Record each path the classifier is given, with its bytes at that moment."""
    seen: list[tuple[Path, bytes]] = []
    classifier = window.classifier
    original = classifier.classify

    def classify(paths, *args, **kwargs):
        paths = list(paths)
        seen.extend((Path(p), Path(p).read_bytes()) for p in paths)
        return original(paths, *args, **kwargs)

    classifier.classify = classify
    return seen


def write_slowly(qtbot, path: Path, content: bytes, chunks: int = 6, pause_ms: int = 300) -> None:
    """Write in chunks with pauses longer than the watcher's checks, keeping the GUI running."""
    step = len(content) // chunks + 1
    with open(path, "wb") as handle:
        for start in range(0, len(content), step):
            handle.write(content[start : start + step])
            handle.flush()
            qtbot.wait(pause_ms)


def test_a_photo_written_slowly_is_classified_only_when_complete_and_auto_sorted(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    target = inbox / "Sorted"  # inside the watched folder: the app's own moves must not come back
    window.watching.watcher.quiet_period = 1.0  # the writer's pauses are 10 times shorter than the default's
    window.sorting.burst_quiet_ms = 300  # one photo is the whole burst
    window.watching.add_folder(inbox)
    window.watching.set_target(str(target))
    window.watching.set_auto_sort(True)
    seen = spy_on_classifier(window)
    content = make_photo(tmp_path / "source.png", COLOURS["Green Cat"], size=(240, 180)).read_bytes()

    arrived = inbox / "new-cat.png"
    write_slowly(qtbot, arrived, content)
    assert seen == []  # nothing was handed over while the file was being written
    qtbot.waitUntil(lambda: (target / "Green Cat" / "new-cat.png").exists(), timeout=10_000)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)

    assert seen == [(arrived, content)]
    record = window.photos.records[0]
    assert record.path == target / "Green Cat" / "new-cat.png"  # the grid follows the move
    assert record.label == "Green Cat"
    qtbot.wait(800)  # long enough for the watcher to report the move, were it not ignored
    assert len(seen) == 1 and len(window.photos.records) == 1


def test_a_watched_folder_that_disappeared_is_reported_not_fatal(qtbot, tmp_path: Path) -> None:
    from catbreed_desktop.core.settings import save_settings

    save_settings(Settings(watched_folders=[str(tmp_path / "gone")], model_path=str(tmp_path / "none")))
    window = MainWindow()
    qtbot.addWidget(window)
    assert window.watching.watcher.folders == []
    assert any("gone" in message for message in window.errors.messages())
    window.close()
