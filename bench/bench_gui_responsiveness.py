"""How responsive the window stays while the real model classifies real photos.

A 10 ms timer runs on the GUI thread; the time between two of its ticks is how long the GUI could
not answer. It is measured twice in one run: with the window idle (the baseline: what the
machine and Qt cost anyway) and while the window classifies `--count` photos with the bundle
(thumbnails decoding, results arriving, the grid growing). The figures are the longest gap, the
99th percentile gap and the classification rate. Run it under a real display or Xvfb
(`QT_QPA_PLATFORM=xcb`); offscreen works too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Run from a checkout without installing it: the package is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oxford-pet-cats"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models"
TICK_MS = 10


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help=f"bundle (default: {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--photos", type=Path, default=DEFAULT_PHOTOS, help="photo folder, searched recursively"
    )
    parser.add_argument("--count", type=int, default=400, help="photos to classify (default: 400)")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="length of the idle baseline")
    return parser.parse_args(argv)


class GapRecorder:
    """Every gap between two ticks of a 10 ms timer on the GUI thread."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []
        self._last = 0.0
        self.timer = QTimer(interval=TICK_MS)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.gaps.clear()
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> np.ndarray:
        self.timer.stop()
        return np.asarray(self.gaps) * 1000

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now


def wait(condition, timeout: float) -> None:
    """Run the Qt event loop until `condition()` holds.

    A nested QEventLoop rather than a loop over `processEvents()`: in PySide6 6.12 every
    `processEvents()` call from Python drops one reference to None, and a few thousand calls
    crash the interpreter.
    """
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.perf_counter() + timeout

    def check() -> None:
        if condition() or time.perf_counter() > deadline:
            loop.quit()

    poll = QTimer(interval=5)
    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()
    if not condition():
        raise SystemExit("timed out waiting for the window")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="catbreed-bench-"))
    for name in ("DATA", "CACHE", "CONFIG"):  # never touch the user's settings, journals or caches
        os.environ[f"CATBREED_{name}_DIR"] = str(scratch / name.lower())
    from PySide6.QtWidgets import QApplication

    from catbreed_desktop.core.photos import iter_photo_paths
    from catbreed_desktop.core.settings import Settings
    from catbreed_desktop.gui.main_window import MainWindow

    found = iter_photo_paths([args.photos], recursive=True)
    photos = found[:: max(1, len(found) // args.count)][: args.count]
    folder = scratch / "photos"
    folder.mkdir()
    for path in photos:  # one flat folder, so the window reads exactly these
        os.symlink(path, folder / f"{path.parent.name}-{path.name}")

    _app = QApplication.instance() or QApplication([])  # kept referenced: Qt needs it alive
    window = MainWindow(Settings(engine="cpu"), model_path=args.model)
    window.show()
    try:
        wait(lambda: window.classifier is not None, 60)
        recorder = GapRecorder()
        recorder.timer.setParent(window)

        recorder.start()
        end = time.perf_counter() + args.idle_seconds
        wait(lambda: time.perf_counter() > end, args.idle_seconds + 5)
        idle = recorder.stop()

        finished = []
        window.classification_finished.connect(lambda *_: finished.append(True))
        start = time.perf_counter()
        window.add_inputs([folder], remember=False)
        recorder.start()
        wait(lambda: bool(finished), 600)
        busy = recorder.stop()
        seconds = time.perf_counter() - start
        engine = window.classifier.provider if window.classifier is not None else "no model"
    finally:
        window.close()
        # Qt objects deleted by Qt while Python still runs: left to interpreter shutdown, PySide6
        # can free them in the wrong order and crash.
        window.deleteLater()
        wait(lambda: True, 1)  # one pass of the event loop carries out the deletion
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"model      {args.model}, engine {engine}")
    print(f"photos     {len(photos)} from {args.photos}; {os.cpu_count()} CPUs")
    print(f"classified in {seconds:.1f} s ({len(photos) / seconds:.1f} photos/s)")
    print()
    print(f"{'GUI thread':<26}{'ticks':>8}{'longest gap':>14}{'99th pct':>11}{'vs idle':>9}")
    for name, gaps in (("idle window (baseline)", idle), ("classifying", busy)):
        print(
            f"{name:<26}{len(gaps):>8}{gaps.max():>11.0f} ms{np.percentile(gaps, 99):>8.0f} ms"
            f"{gaps.max() / idle.max():>8.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
