"""The window stays responsive while classifying thousands of photos: results arrive in batches."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from factories import COLOURS
from PIL import Image
from PySide6.QtCore import QTimer

from catbreed_desktop.core.settings import Settings
from catbreed_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.timeout(120)

PHOTOS = 2000
LONGEST_ALLOWED_GAP = 0.100


def make_tiny_photos(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    images = [Image.new("RGB", (12, 10), colour) for colour in COLOURS.values()]
    for index in range(count):
        images[index % len(images)].save(folder / f"cat-{index:05d}.png")


class GapRecorder:
    """A 10 ms timer on the GUI thread; the longest time between two ticks is how long the GUI froze."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.ticks = 0
        self._last = time.perf_counter()
        self.timer = QTimer(interval=10)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._last = time.perf_counter()
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now
        self.ticks += 1


def test_the_gui_thread_never_stalls_while_classifying_2000_photos(
    qtbot, colour_bundle, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    make_tiny_photos(folder, PHOTOS)
    window = MainWindow(Settings(engine="cpu", batch_size=16), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.classifier is not None, timeout=10_000)

    recorder = GapRecorder()
    window.add_inputs([folder])
    qtbot.waitUntil(lambda: window._classify_thread is not None, timeout=10_000)
    recorder.start()
    with qtbot.waitSignal(window.classification_finished, timeout=90_000):
        pass
    recorder.timer.stop()

    assert sum(1 for r in window.photos.records if r.prediction is not None) == PHOTOS
    print(f"longest GUI gap {recorder.longest * 1000:.0f} ms over {recorder.ticks} ticks")
    assert recorder.ticks > 10
    assert recorder.longest < LONGEST_ALLOWED_GAP
    window.close()
