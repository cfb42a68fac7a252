"""The window stays responsive while classifying thousands of photos: no decoding or inference on its thread.

How long the GUI thread may freeze depends on the machine and its load, so it is measured by
`bench/bench_gui_responsiveness.py`, not asserted here (a 396 ms gap on a loaded
CI machine once failed a 100 ms limit). What makes the window responsive does not depend on load: every
decode (for classification and for thumbnails) and every inference runs on another thread, and
results reach the GUI thread in batches, at most one per `BATCH_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from factories import COLOURS
from PIL import Image

from catbreed_desktop.core import classify
from catbreed_desktop.core.settings import Settings
from catbreed_desktop.gui import thumbnails
from catbreed_desktop.gui.classify_controller import BATCH_SECONDS
from catbreed_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.timeout(120)

PHOTOS = 2000


def make_tiny_photos(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    images = [Image.new("RGB", (12, 10), colour) for colour in COLOURS.values()]
    for index in range(count):
        images[index % len(images)].save(folder / f"cat-{index:05d}.png")


def test_no_decoding_or_inference_runs_on_the_gui_thread_while_classifying_2000_photos(
    qtbot, colour_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gui_thread = threading.get_ident()
    threads: dict[str, set[int]] = {"inference": set(), "thumbnail decode": set()}

    def spy(kind: str, function):
        def recorded(*args, **kwargs):
            threads[kind].add(threading.get_ident())
            return function(*args, **kwargs)

        return recorded

    monkeypatch.setattr(
        classify.Classifier, "_classify_items", spy("inference", classify.Classifier._classify_items)
    )
    monkeypatch.setattr(thumbnails, "load_photo", spy("thumbnail decode", thumbnails.load_photo))
    folder = tmp_path / "many"
    make_tiny_photos(folder, PHOTOS)
    window = MainWindow(Settings(engine="cpu", batch_size=16), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.classifier is not None, timeout=10_000)
    batches: list[int] = []
    window.classify.classified.connect(lambda records: batches.append(len(records)))

    started = time.monotonic()
    with qtbot.waitSignal(window.classification_finished, timeout=90_000):
        window.add_inputs([folder])
    elapsed = time.monotonic() - started
    qtbot.waitUntil(window.loader.is_idle, timeout=10_000)  # the thumbnails on screen were decoded

    assert sum(1 for r in window.photos.records if r.prediction is not None) == PHOTOS
    assert threads["inference"] and gui_thread not in threads["inference"]
    assert threads["thumbnail decode"] and gui_thread not in threads["thumbnail decode"]
    assert sum(batches) == PHOTOS
    assert len(batches) <= elapsed / BATCH_SECONDS + 2  # one GUI update per batch, not per photo
    window.close()
