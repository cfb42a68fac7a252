"""The window learns from a correction: photos like it follow in the background, marked; off and forget work."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from PySide6.QtWidgets import QMessageBox

from catbreed_desktop.core.personal import PersonalStore
from catbreed_desktop.gui.main_window import MainWindow
from catbreed_desktop.gui.personal_controller import PERSONAL_LANE
from catbreed_desktop.gui.photo_model import ADAPTED_MARK

pytestmark = pytest.mark.timeout(60)

# The colour model calls purple photos "Blue Cat"; the person says they are green cats.
PURPLE = (180, 30, 200)


@pytest.fixture
def loaded(qtbot, window: MainWindow, tmp_path: Path) -> MainWindow:
    folder = tmp_path / "photos"
    for seed in range(3):
        make_photo(folder / f"purple{seed}.png", PURPLE, seed=seed)
    make_photo(folder / "red.png", COLOURS["Red Cat"])
    window.add_inputs([folder])
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=20_000)
    return window


def record(window: MainWindow, name: str):
    return next(r for r in window.photos.records if r.path.name == name)


def correct(window: MainWindow, name: str, label: str) -> None:
    window.review.set_label(label, rows=[window.photos.row_of(record(window, name).path)])


def test_a_correction_updates_similar_photos_in_the_background(qtbot, loaded: MainWindow) -> None:
    window = loaded
    assert record(window, "purple1.png").label == "Blue Cat"
    correct(window, "purple0.png", "Green Cat")
    # The neighbours are worked out on a thread of the task runner, not while the key press is handled.
    assert window.runner.is_busy(PERSONAL_LANE)
    assert record(window, "purple1.png").label == "Blue Cat"
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Green Cat", timeout=2_000)

    neighbour = record(window, "purple1.png")
    assert neighbour.prediction.moved_by == "purple0.png → Green Cat"
    assert neighbour.caption().startswith(ADAPTED_MARK + "Green Cat")
    assert not neighbour.reviewed  # still the person's to confirm
    assert (
        record(window, "red.png").label == "Red Cat" and record(window, "red.png").prediction.moved_by is None
    )
    assert window.personal_label.text() == "Adapted to 1 of your corrections"
    assert len(PersonalStore(window.classifier.bundle.model_sha256)) == 1

    # The photos like the corrected one are offered for review as one selection.
    assert window.similar_button.isVisibleTo(window) and "2 similar photos" in window.similar_button.text()
    window.select_similar()
    assert {window.photos.record(r).path.name for r in window.review.selected_rows()} == {
        "purple1.png",
        "purple2.png",
    }


def test_taking_a_correction_back_restores_the_model_answer(qtbot, loaded: MainWindow) -> None:
    window = loaded
    correct(window, "purple0.png", "Green Cat")
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Green Cat", timeout=2_000)
    window.review.select_paths([record(window, "purple0.png").path])
    window.review.clear_correction()
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Blue Cat", timeout=2_000)
    assert window.personal_label.text() == ""
    qtbot.waitUntil(lambda: not window.runner.is_busy(PERSONAL_LANE), timeout=2_000)
    assert len(PersonalStore(window.classifier.bundle.model_sha256)) == 0


def test_forget_everything_asks_and_restores_the_model_answers(
    qtbot, loaded: MainWindow, monkeypatch
) -> None:
    window = loaded
    correct(window, "purple0.png", "Green Cat")
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Green Cat", timeout=2_000)

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    window.forget_corrections()
    assert len(PersonalStore(window.classifier.bundle.model_sha256)) == 1

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.forget_corrections()
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Blue Cat", timeout=2_000)
    assert len(PersonalStore(window.classifier.bundle.model_sha256)) == 0
    # What the person said in this window stays.
    assert record(window, "purple0.png").label == "Green Cat"


def test_turning_it_off_in_settings_restores_the_model_answers(qtbot, loaded: MainWindow) -> None:
    window = loaded
    correct(window, "purple0.png", "Green Cat")
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Green Cat", timeout=2_000)
    new = window.settings.__class__(**{**window.settings.__dict__, "learn_from_corrections": False})
    window.apply_settings(new)
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Blue Cat", timeout=2_000)
    assert window.personal_label.text() == "Learning from corrections: off"
