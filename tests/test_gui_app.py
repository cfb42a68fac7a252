"""Starting and leaving the window: clean exit during work, --screenshot, start-up without a model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from PIL import Image

from catbreed_desktop.core.settings import Settings
from catbreed_desktop.gui.app import build_parser
from catbreed_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


def test_closing_during_classification_stops_and_joins_every_thread(
    qtbot, qtlog, colour_bundle, tmp_path
) -> None:
    folder = tmp_path / "photos"
    for index in range(300):
        make_photo(folder / f"cat-{index:03d}.png", COLOURS["Red Cat"], size=(32, 24), seed=index)
    window = MainWindow(Settings(engine="cpu", batch_size=4), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    window.show()
    window.add_inputs([folder])
    qtbot.waitUntil(lambda: window.runner.is_busy("classification"), timeout=10_000)
    threads = window.runner.running_threads()
    watcher = window.watching.watcher
    window.close()

    assert threads and all(thread.isFinished() and not thread.isRunning() for thread in threads)
    assert not window.runner.is_busy() and not watcher.running and window.classifier is None
    classified = sum(1 for r in window.photos.records if r.prediction is not None)
    assert classified < 300  # it really was stopped in the middle
    assert not [m for m in qtlog.records if "Destroyed while thread" in m.message]


def test_cancel_stops_the_run_and_keeps_the_window_usable(qtbot, colour_bundle, tmp_path) -> None:
    folder = tmp_path / "photos"
    for index in range(300):
        make_photo(folder / f"cat-{index:03d}.png", COLOURS["Blue Cat"], size=(32, 24), seed=index)
    window = MainWindow(Settings(engine="cpu", batch_size=4), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    window.add_inputs([folder])
    qtbot.waitUntil(lambda: window.runner.is_busy("classification"), timeout=10_000)
    window.cancel()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)
    assert len(window.photos.records) == 300
    window.close()


def test_screenshot_option_saves_a_png_of_the_window_and_exits(
    colour_bundle, tmp_path, isolated_user_dirs
) -> None:
    folder = tmp_path / "photos"
    for index, label in enumerate(COLOURS):
        make_photo(folder / f"{label}.jpg", COLOURS[label], seed=index)
    shot = tmp_path / "shot.png"
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    command = [sys.executable, "-m", "catbreed_desktop", str(folder), "--model", str(colour_bundle.path)]
    completed = subprocess.run(
        [*command, "--engine", "cpu", "--screenshot", str(shot)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert completed.returncode == 0, completed.stderr
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1200, 800)


def test_command_line_options() -> None:
    args = build_parser().parse_args(["a", "b", "--screenshot", "s.png", "--engine", "cpu"])
    assert args.paths == [Path("a"), Path("b")] and args.screenshot == Path("s.png") and args.engine == "cpu"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--engine", "warp"])
