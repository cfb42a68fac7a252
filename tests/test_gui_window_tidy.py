"""The window's small promises: Ctrl+Z reaches the sort, the sort dialog fits and proposes Copy,
the counts agree with the sort preview, the threshold does not jump, panels and tabs fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import COLOURS, make_photo
from PySide6.QtCore import Qt

from catbreed_desktop.core.classify import Prediction
from catbreed_desktop.core.settings import load_settings
from catbreed_desktop.gui.main_window import MainWindow
from catbreed_desktop.gui.photo_model import SHOW_NOT_CAT, SHOW_UNSURE
from catbreed_desktop.gui.sort_dialog import SortDialog

pytestmark = pytest.mark.timeout(60)


def show_predictions(
    window: MainWindow, folder: Path, predictions: dict[str, tuple[str, float, bool]]
) -> None:
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


# --- the sort dialog: every column in view, a compact threshold box, Copy proposed first -----------


def test_the_sort_dialog_shows_every_column_and_a_compact_threshold_box(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    show_predictions(window, tmp_path / "photos", {f"cat-{n}": ("Red Cat", 0.9, True) for n in range(3)})
    dialog = window.make_sort_dialog()
    qtbot.addWidget(dialog)
    dialog.target_edit.setText(str(tmp_path / "a rather long target folder name" / "sorted"))
    dialog.preview()
    dialog.show()
    qtbot.waitExposed(dialog)
    table, header = dialog.table, dialog.table.horizontalHeader()
    last = header.count() - 1
    assert table.model().headerData(last, Qt.Orientation.Horizontal) == "Action"
    assert header.sectionViewportPosition(last) + header.sectionSize(last) <= table.viewport().width()
    assert not table.horizontalScrollBar().isVisible()
    action = table.model().index(0, last)
    assert header.sectionSize(last) >= table.fontMetrics().horizontalAdvance(action.data()) + 8
    assert dialog.threshold_spin.width() < dialog.width() // 4


def test_the_sort_dialog_proposes_copy_first_then_the_last_choice(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    show_predictions(window, tmp_path / "photos", {"cat": ("Red Cat", 0.9, True)})
    first = window.make_sort_dialog()
    assert first.mode == "copy" and first.copy_button.isChecked()
    first.close()
    choices: list[object] = []

    def choose_move(dialog) -> int:
        dialog.target_edit.setText(str(tmp_path / "sorted"))
        dialog.move_button.setChecked(True)
        choices.append(dialog.mode)
        return 1

    window.start_sort = lambda plan, left_out=0: True  # only the choice matters here
    SortDialog.exec, original = choose_move, SortDialog.exec  # type: ignore[method-assign]
    try:
        window.open_sort_dialog()
    finally:
        SortDialog.exec = original  # type: ignore[method-assign]
    assert choices == ["move"]
    assert load_settings().sort_mode == "move"  # kept between runs
    assert window.make_sort_dialog().mode == "move"


# --- Ctrl+Z undoes the sort unless a text field has typing of its own to undo ----------------------


def sort_copies(qtbot, window: MainWindow, tmp_path: Path) -> None:
    dialog = window.make_sort_dialog()
    dialog.target_edit.setText(str(tmp_path / "sorted"))
    plan = dialog.plan()
    dialog.close()
    window.start_sort(plan)
    qtbot.waitUntil(lambda: not window.is_busy() and window.commands.undo.isEnabled(), timeout=10_000)


def test_ctrl_z_in_the_search_box_undoes_the_sort_unless_there_is_typing_to_undo(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    show_predictions(window, tmp_path / "photos", {f"cat-{n}": ("Red Cat", 0.9, True) for n in range(2)})
    asked: list[str] = []
    # Each question is declined, so nothing is undone and the sort can be asked for again.
    window.ask_to_undo = lambda preview: asked.append(preview.describe()) and False
    search = window.ui.search
    window.activateWindow()
    qtbot.waitActive(window)
    search.setFocus()
    qtbot.keyClicks(search, "cat-1")
    search.clear()  # the person typed, then emptied the box
    sort_copies(qtbot, window, tmp_path)

    qtbot.keyClick(search, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(asked) == 1, timeout=5_000)  # the sort's undo was asked for
    assert search.text() == ""  # not the old search brought back
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)

    qtbot.keyClicks(search, "cat")  # typing after the sort: Ctrl+Z takes it back first
    qtbot.keyClick(search, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert search.text() == "" and len(asked) == 1
    qtbot.keyClick(search, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # nothing left to take back
    qtbot.waitUntil(lambda: len(asked) == 2, timeout=5_000)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)

    window.grid.setFocus()
    qtbot.keyClick(window.grid, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(asked) == 3, timeout=5_000)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)
    filter_box = window.ui.breed_filter  # an editable box, with nothing typed
    filter_box.setFocus()
    qtbot.keyClick(filter_box, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(asked) == 4, timeout=5_000)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)
