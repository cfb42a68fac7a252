"""The window's small promises: Ctrl+Z reaches the sort, the sort dialog fits and proposes Copy,
the counts agree with the sort preview, the threshold does not jump, panels and tabs fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import COLOURS, make_photo

from catbreed_desktop.core.classify import Prediction
from catbreed_desktop.gui.main_window import MainWindow
from catbreed_desktop.gui.photo_model import SHOW_NOT_CAT, SHOW_UNSURE

pytestmark = pytest.mark.timeout(60)


def show_predictions(window: MainWindow, folder: Path, predictions: dict[str, tuple[str, float, bool]]) -> None:
    """Put photos named as `predictions` keys in the window with those (label, confidence, is_cat)."""
    paths = []
    for seed, name in enumerate(predictions):
        paths.append(make_photo(folder / f"{name}.png", COLOURS["Red Cat"], seed=seed))
    window.photos.add_paths(paths)
    window.photos.apply_predictions(
        [
            Prediction(path, ((label, confidence), ("Blue Cat", 1 - confidence)), np.zeros(3), is_cat=is_cat)
            for path, (label, confidence, is_cat) in zip(paths, predictions.values(), strict=True)
        ]
    )


# --- the status bar counts what the sort preview files as Unsure and as Not a cat ------------------


def test_the_status_bar_counts_unsure_and_not_a_cat_as_the_sort_preview_does(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    show_predictions(
        window,
        tmp_path / "photos",
        {
            "sure": ("Red Cat", 0.9, True),
            "low-0": ("Red Cat", 0.3, True),
            "low-1": ("Green Cat", 0.2, True),
            "dog": ("Red Cat", 0.9, False),  # not a cat, however sure of the breed
            "landscape": ("Green Cat", 0.2, False),  # not a cat, and below the threshold too
        },
    )
    window.set_threshold(0.5)
    qtbot.waitUntil(lambda: window.status.counts.photos == 5, timeout=2_000)
    dialog = window.make_sort_dialog()
    dialog.target_edit.setText(str(tmp_path / "sorted"))
    dialog.preview()
    folders = dict(dialog.folder_counts())
    dialog.close()
    assert (folders["Unsure"], folders["Not a cat"]) == (2, 2)
    assert "2 unsure · 2 not a cat" in window.status.count_label.text()
    counts = window.status.counts
    assert (counts.unsure, counts.not_cat) == (2, 2)
    # The breed filter's choices show the same photos.
    filters = window.ui.breed_filter.delegate.counts
    assert (filters[SHOW_UNSURE], filters[SHOW_NOT_CAT]) == (2, 2)
