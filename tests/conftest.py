"""Shared test set-up: Qt without a screen, user folders redirected into a temporary folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).parent))

SHARED_CATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oxford-pet-cats"


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Journals, caches and settings of every test go to a fresh folder, never the user's."""
    root = tmp_path_factory.mktemp("user")
    for name in ("DATA", "CACHE", "CONFIG"):
        monkeypatch.setenv(f"CATBREED_{name}_DIR", str(root / name.lower()))
    # Decode in threads whatever the machine's core count (processes are chosen from 8 cores up):
    # some tests replace the decoder with a local function that a worker process cannot import.
    # tests/test_decode_processes.py asks for processes itself.
    monkeypatch.setenv("CATBREED_DECODE_PROCESSES", "0")
    return root


@pytest.fixture
def colour_bundle(tmp_path: Path):
    """A valid three-label bundle that classifies photos by dominant colour."""
    from factories import make_colour_bundle

    return make_colour_bundle(tmp_path / "bundle")


@pytest.fixture
def shared_cats() -> Path:
    """The shared Oxford-IIIT Pet cat photos; tests that need them skip where they are absent."""
    if not SHARED_CATS.is_dir():
        pytest.skip(f"shared cat photos not found at {SHARED_CATS}")
    return SHARED_CATS


@pytest.fixture
def window(qtbot, colour_bundle):
    """The main window with the colour bundle loaded on the CPU, shown, closed after the test."""
    from catbreed_desktop.core.settings import Settings
    from catbreed_desktop.gui.main_window import MainWindow

    window = MainWindow(Settings(engine="cpu", batch_size=4), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.classifier is not None, timeout=10_000)
    yield window
    window.close()
