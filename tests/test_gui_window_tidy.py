"""The window's small promises: Ctrl+Z reaches the sort, the sort dialog fits and proposes Copy,
the counts agree with the sort preview, the threshold does not jump, panels and tabs fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from factories import COLOURS, make_photo
from PySide6.QtCore import Qt

from catbreed_desktop.core.classify import Prediction
from catbreed_desktop.core.settings import Settings, load_settings
from catbreed_desktop.gui.main_window import MainWindow
from catbreed_desktop.gui.photo_model import SHOW_NOT_CAT, SHOW_UNSURE
from catbreed_desktop.gui.sort_dialog import SortDialog

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


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
    new_path = table.model().index(0, 2)  # inside the target named above; in full in its tooltip
    assert new_path.data() == str(Path("Red Cat") / "cat-0.png")
    assert new_path.data(Qt.ItemDataRole.ToolTipRole) == str(dialog.plan().operations[0].destination)
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


# --- smaller things: the threshold, the Sort action, the Problems panel, the undo time, ----------
# --- recent folders, and the settings' Engine and Model tabs ---------------------------------------


def test_the_threshold_slider_starts_at_the_bundles_threshold_before_the_model_loads(
    qtbot, tmp_path: Path
) -> None:
    from factories import make_breeds_bundle

    bundle = make_breeds_bundle(
        tmp_path / "bundle", decision={"min_confidence": 0.45, "chosen_on": "validation"}
    )
    window = MainWindow(Settings(engine="cpu"), model_path=bundle.path)
    qtbot.addWidget(window)
    assert window.classifier is None  # the model loads once the event loop runs
    assert window.ui.threshold_slider.value() == 450 and window.ui.threshold_label.text() == "45%"
    assert "recommended by the model bundle" in window.ui.threshold_slider.toolTip()
    window.show()
    qtbot.waitUntil(lambda: window.classifier is not None, timeout=10_000)
    assert window.ui.threshold_slider.value() == 450  # no jump
    window.close()


def test_sort_is_offered_only_with_classified_photos(qtbot, window: MainWindow, tmp_path: Path) -> None:
    sort = window.commands.sort
    assert not sort.isEnabled()
    window.photos.add_paths([make_photo(tmp_path / "waiting.png", COLOURS["Red Cat"])])
    qtbot.wait(50)  # counted once per pass of the event loop
    assert not sort.isEnabled()  # not classified yet: nothing to sort
    show_predictions(window, tmp_path / "photos", {"cat": ("Red Cat", 0.9, True)})
    qtbot.waitUntil(sort.isEnabled, timeout=2_000)
    window.clear_photos()
    qtbot.waitUntil(lambda: not sort.isEnabled(), timeout=2_000)


def test_the_problems_panel_is_as_tall_as_its_rows_and_goes_when_cleared(qtbot, window: MainWindow) -> None:
    dock, problems = window.errors_dock, window.errors
    window.report([(Path("broken.jpg"), "not an image")])
    qtbot.waitUntil(dock.isVisible, timeout=2_000)
    qtbot.wait(50)
    row = problems.list.sizeHintForRow(0)
    assert problems.list.height() < 2 * row  # one problem, one row (it was 130 px and a row of buttons)
    cell = window.ui.delegate.sizeHint(None, window.grid.currentIndex()).height()
    assert window.grid.viewport().height() > 2.8 * cell  # three rows of thumbnails, not two
    window.report([(Path(f"broken-{n}.jpg"), "not an image") for n in range(3)])
    qtbot.waitUntil(lambda: problems.list.height() >= 4 * row, timeout=2_000)  # grows to a few rows
    problems.clear()
    assert dock.isHidden()


def test_the_undo_question_gives_the_sorts_time_on_the_local_clock(
    qtbot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from catbreed_desktop.core.sorting import UndoPreview

    monkeypatch.setenv("TZ", "XYZ-5:30")  # POSIX: 5 h 30 east of UTC, called XYZ
    time.tzset()
    try:
        preview = UndoPreview(
            Path("journal"), "2026-01-02T03:04:05Z", "copy", Path("/sorted"), copies_to_remove=1
        )
        text = window.make_undo_question(preview).text()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "of 2026-01-02 08:34:05 XYZ:" in text and "03:04:05" not in text


def test_a_folder_opened_from_the_command_line_is_a_recent_folder(colour_bundle, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    make_photo(folder / "red.png", COLOURS["Red Cat"])
    command = [sys.executable, "-m", "catbreed_desktop", str(folder), "--model", str(colour_bundle.path)]
    completed = subprocess.run(
        [*command, "--engine", "cpu", "--screenshot", str(tmp_path / "shot.png")],
        cwd=ROOT,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert completed.returncode == 0, completed.stderr
    assert load_settings().recent_folders == [str(folder.resolve())]


def test_the_engine_tab_keeps_its_rows_together(qtbot, colour_bundle) -> None:
    from catbreed_desktop.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(model_path=str(colour_bundle.path), engine="cpu"))
    qtbot.addWidget(dialog)
    dialog.pages.setCurrentIndex(1)
    dialog.show()
    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)
    qtbot.wait(50)
    status, tree, details = dialog.engine_status, dialog.engine_tree, dialog.engine_details
    # Each is as tall as its text and follows the one above with the layout's spacing: the page's
    # spare room stays below the rows, not spread between them.
    for label in (status, details):
        assert label.height() <= label.heightForWidth(label.width()) + 4
    assert tree.y() - status.geometry().bottom() < 16
    assert details.y() - tree.geometry().bottom() < 16
    assert dialog.batch_spin.y() - details.geometry().bottom() < 24
    graph = tree.topLevelItem(0).text(4)
    assert "/" not in graph  # a file name; its folder is listed under the tree, in full
    assert not tree.horizontalScrollBar().isVisible()


def test_the_model_tab_leads_with_each_sources_figures_as_the_readme_does(qtbot) -> None:
    from catbreed_desktop.core.bundle import load_bundle
    from catbreed_desktop.core.paths import default_model_dir
    from catbreed_desktop.gui.bundle_facts import bundle_facts

    bundle_dir = default_model_dir()
    if not (bundle_dir / "bundle.json").is_file():
        pytest.skip("no shipped model in this checkout")
    shipped = load_bundle(bundle_dir, verify=False)
    names = [name for name, _value in bundle_facts(shipped).lines]
    lines = dict(bundle_facts(shipped).lines)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for source, figures in shipped.metrics["sources"].items():
        macro_f1 = f"{figures['test']['macro_f1']:.3f}"
        assert lines[f"Test, {source}"].startswith(f"macro F1 {macro_f1}, accuracy ")
        assert macro_f1 in readme  # the README quotes the same figure
    pooled = names.index("Test, all sources")
    sources = shipped.metrics["sources"]
    assert names[pooled - len(sources) : pooled] == [f"Test, {source}" for source in sources]
    assert "Accuracy" not in lines and "Macro F1" not in lines  # the pooled figures are named as such


def test_bundle_facts_give_each_source_and_say_when_a_float_model_measured_them(colour_bundle) -> None:
    import dataclasses

    from catbreed_desktop.gui.bundle_facts import bundle_facts

    metrics = {
        "test": {"accuracy": 0.6, "macro_f1": 0.5, "count": 30},
        "sources": {
            "easy": {"test": {"accuracy": 0.9, "macro_f1": 0.88, "count": 10}},
            "hard": {"test": {"accuracy": 0.45, "macro_f1": 0.3, "count": 20}},
        },
    }
    facts = dict(bundle_facts(dataclasses.replace(colour_bundle, metrics=metrics)).lines)
    assert facts["Test, easy"] == "macro F1 0.880, accuracy 90.0% on 10 photos"
    assert facts["Test, hard"] == "macro F1 0.300, accuracy 45.0% on 20 photos"
    assert facts["Test, all sources"] == "macro F1 0.500, accuracy 60.0% on 30 photos"
    int8 = dataclasses.replace(colour_bundle, metrics=metrics, provenance={"precision": "int8"})
    assert dict(bundle_facts(int8).lines)["Test, easy"].endswith("(measured on the float model)")
    measured = dataclasses.replace(int8, metrics={**metrics, "measured_with": "the shipped int8 model"})
    assert dict(bundle_facts(measured).lines)["Test, easy"].endswith("on 10 photos")
