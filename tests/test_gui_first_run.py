"""What a first run of the window must get right, each item driven through the real window.

The platform plugin is in test_gui_platform.py, the engine notes in
test_cli_engine_notes.py, responsiveness in test_gui_responsiveness.py; the controllers alone are in
test_gui_controllers.py.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPalette
from PySide6.QtWidgets import QLabel, QStyle

from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.paths import default_model_dir
from catbreed_desktop.core.settings import Settings
from catbreed_desktop.core.sorting import list_journals
from catbreed_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.timeout(90)


def wait_idle(qtbot, window: MainWindow, timeout: int = 20_000) -> None:
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=timeout)


def add_and_wait(qtbot, window: MainWindow, *inputs: Path) -> None:
    window.add_inputs(list(inputs))
    wait_idle(qtbot, window)


def captions(window: MainWindow) -> list[str]:
    photos = window.photos
    return [photos.data(photos.index(row), Qt.ItemDataRole.DisplayRole) for row in range(photos.rowCount())]


def colour_photos(folder: Path, count: int, size: tuple[int, int] = (64, 48)) -> Path:
    for index in range(count):
        label = list(COLOURS)[index % 3]
        make_photo(folder / f"{label.split()[0]}-{index}.png", COLOURS[label], size=size, seed=index)
    return folder


# --- 1: cancelled photos are not "Classifying…" for ever, and can be classified again -------------


def test_after_cancel_photos_show_as_not_classified_and_adding_the_folder_again_classifies_them(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    folder = colour_photos(tmp_path / "photos", 200, size=(240, 180))
    classified = lambda: sum(1 for r in window.photos.records if r.prediction is not None)  # noqa: E731
    # Esc part-way through, as the person who found the bug did (at 41 of 200).
    window.photos.dataChanged.connect(lambda *args: window.cancel() if classified() >= 8 else None)
    add_and_wait(qtbot, window, folder)
    window.photos.dataChanged.disconnect()

    left = [record for record in window.photos.records if not record.classified]
    assert left, "the cancel came too late to leave photos unclassified"
    assert {captions(window)[window.photos.row_of(r.path)] for r in left} == {"Not classified"}
    qtbot.waitUntil(lambda: f"{len(left)} not classified" in window.status.count_label.text(), timeout=2_000)

    add_and_wait(qtbot, window, folder)  # "No new photos found" used to be the end of it
    assert all(record.classified for record in window.photos.records)
    assert "Classifying" not in " ".join(captions(window))


def test_without_a_model_photos_do_not_claim_to_be_classifying(qtbot, tmp_path: Path) -> None:
    window = MainWindow(Settings(engine="cpu"), model_path=tmp_path / "no-model-here")
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.model_error is not None, timeout=10_000)
    add_and_wait(qtbot, window, colour_photos(tmp_path / "photos", 3))
    assert captions(window) == ["Not classified"] * 3
    window.close()


# --- 3: sorting into the inbox itself leaves out what is filed there; skipped photos are listed ----


def test_sorting_a_folder_into_itself_leaves_out_photos_already_filed_and_lists_skipped_ones(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    make_photo(inbox / "Red-0.png", COLOURS["Red Cat"])
    make_photo(inbox / "Blue-1.png", COLOURS["Blue Cat"], seed=1)
    make_photo(inbox / "Green-2.png", COLOURS["Green Cat"], seed=2)
    # Filed by an earlier sort (or by hand) under "Red Cat", though the model says blue.
    filed = make_photo(inbox / "Red Cat" / "Blue-filed.png", COLOURS["Blue Cat"], seed=3)
    elsewhere.mkdir()
    (inbox / "Green Cat").symlink_to(elsewhere, target_is_directory=True)  # leads out of the target
    add_and_wait(qtbot, window, inbox)
    assert window.photos.row_of(filed) is not None  # shown and classified like the others

    dialog = window.make_sort_dialog()
    dialog.target_edit.setText(str(inbox))
    dialog.move_button.setChecked(True)
    plan = dialog.plan()
    assert {op.source.name for op in plan.operations} == {"Red-0.png", "Blue-1.png"}
    assert "1 photo already filed in the breed folders of" in dialog.summary.text()
    table = dialog.table_model
    actions = [table.index(row, 3).data() for row in range(table.rowCount())]
    assert any(action.startswith("not sorted: its folder") for action in actions)
    dialog.close()

    window.start_sort(plan)
    wait_idle(qtbot, window)
    assert filed.is_file()  # left where it was filed
    assert (inbox / "Red Cat" / "Red-0.png").is_file() and (inbox / "Blue Cat" / "Blue-1.png").is_file()
    assert (inbox / "Green-2.png").is_file() and not any(elsewhere.iterdir())
    assert any(m.startswith("Green-2.png: not sorted: its folder") for m in window.errors.messages())


# --- 4: auto-sort shows its mode, sorts a burst in one go, one Undo puts the burst back -------------


def test_auto_sort_shows_its_mode_and_sorts_a_burst_as_one_undoable_sort(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    inbox, target = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    window.watching.watcher.quiet_period = 0.3
    window.sorting.burst_quiet_ms = 2_500  # longer than the pauses of this burst
    window.watching.add_folder(inbox)
    window.watching.set_target(str(target))
    window.watching.set_mode("copy")
    window.watching.set_auto_sort(True)
    assert window.watch_panel.mode.currentData() == "copy" and window.watch_panel.mode.isEnabled()
    assert "new photos are copied into" in window.watch_panel.state.text()

    for index in range(3):
        make_photo(inbox / f"Red-{index}.png", COLOURS["Red Cat"], seed=index)
        qtbot.wait(700)  # each is handed over on its own
    qtbot.waitUntil(
        lambda: len(list((target / "Red Cat").glob("*.png"))) == 3 if target.exists() else False,
        timeout=20_000,
    )
    wait_idle(qtbot, window)
    assert len(list_journals()) == 1  # one sort, not one per photo
    assert window.statusBar().currentMessage().startswith("Auto-sort: Copied 3 photos into")

    window.ask_to_undo = lambda preview: True
    window.undo_last_sort()
    wait_idle(qtbot, window)
    assert not list((target / "Red Cat").glob("*.png")) and len(list(inbox.glob("*.png"))) == 3


# --- 5: the status bar's counts follow corrections ---------------------------------------------------


def test_reviewed_count_follows_labels_set_confirmed_and_taken_back(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    folder = colour_photos(tmp_path / "photos", 6)
    add_and_wait(qtbot, window, folder)
    counts = window.status.count_label
    assert "0 reviewed" in counts.text()
    window.grid.setFocus()
    window.review.select_path(folder / "Red-0.png")
    qtbot.keyClick(window.grid, Qt.Key.Key_2)  # set_label
    qtbot.waitUntil(lambda: "1 reviewed" in counts.text(), timeout=2_000)
    window.review.select_path(folder / "Green-1.png")
    qtbot.keyClick(window.grid, Qt.Key.Key_Return)  # confirm_selection
    qtbot.waitUntil(lambda: "2 reviewed" in counts.text(), timeout=2_000)
    window.review.select_path(folder / "Red-0.png")
    qtbot.keyClick(window.grid, Qt.Key.Key_Backspace)
    qtbot.waitUntil(lambda: "1 reviewed" in counts.text(), timeout=2_000)


# --- 6: the settings describe the model in a table, with the shipped model's figures --------------


def test_settings_show_the_shipped_models_figures_as_a_table(qtbot) -> None:
    from catbreed_desktop.gui.settings_dialog import SettingsDialog

    bundle_dir = default_model_dir()
    if not (bundle_dir / "bundle.json").is_file():
        pytest.skip("no shipped model in this checkout")
    dialog = SettingsDialog(Settings(model_path=str(bundle_dir), engine="cpu"))
    qtbot.addWidget(dialog)
    text = dialog.bundle_info.text()
    shipped = load_bundle(bundle_dir)
    test = shipped.metrics["test"]
    # The shipped int8 model's own figures, never the fp32 checkpoint's (when it records one).
    pooled = f"macro F1 {test['macro_f1']:.3f}, accuracy {test['accuracy']:.1%} on {test['count']} photos"
    assert f"Test, all sources: {pooled}" in text
    if "fp32_pytorch" in shipped.metrics:
        assert f"{shipped.metrics['fp32_pytorch']['test']['macro_f1']:.3f}" not in text
    assert "{" not in text  # no raw JSON
    calibration = shipped.metrics["calibration"]
    ece = f"{calibration['test_ece_before']:.3f} before, {calibration['test_ece_after']:.3f} after"
    assert f"expected calibration error {ece}" in text
    sources = shipped.provenance["data_sources"]
    named = ", ".join(f"{source['name']} ({source['photos']} photos)" for source in sources)
    assert f"{named}; {shipped.provenance['data_photos']} photos in all" in text
    assert "oxford-pet-cats (2371 photos), petfinder-gano-cats (6349 photos)" in text
    table = dialog.breed_table
    rows = {table.item(row, 0).text(): table.item(row, 1).text() for row in range(table.rowCount())}
    assert len(rows) == len(shipped.labels) >= 50
    assert rows["Sphynx"] == f"{shipped.metrics['per_breed']['Sphynx']['f1']:.3f}"
    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)


def test_bundle_facts_quote_the_shipped_precision_and_never_the_baseline(colour_bundle) -> None:
    from catbreed_desktop.gui.bundle_facts import bundle_facts

    metrics = {
        "baseline_test": {"accuracy": 0.5, "macro_f1": 0.5},
        "test": {"accuracy": 0.9, "macro_f1": 0.8, "count": 30},
        "int8": {"test_accuracy_int8": 0.85, "test_macro_f1_int8": 0.75},
        "per_breed": {"Red Cat": {"f1": 0.9, "precision": 1.0, "recall": 0.8, "support": 10}},
    }
    int8 = dataclasses.replace(colour_bundle, metrics=metrics, provenance={"precision": "int8"})
    facts = dict(bundle_facts(int8).lines)
    assert facts["Accuracy"] == "85.0% on 30 test photos" and facts["Macro F1"] == "0.750"
    fp32 = bundle_facts(dataclasses.replace(colour_bundle, metrics=metrics))
    assert dict(fp32.lines)["Accuracy"].startswith("90.0%") and fp32.breed_note == ""
    assert [(r.breed, r.f1, r.photos) for r in fp32.breeds] == [
        ("Red Cat", "0.900", "10"),
        ("Green Cat", "—", "—"),
        ("Blue Cat", "—", "—"),
    ]


# --- 7: the layout fits a 1280 px screen with every panel open --------------------------------------


def contrast(one: QColor, other: QColor) -> float:
    """WCAG contrast ratio of two colours (4.5 is the minimum for body text)."""

    def luminance(colour: QColor) -> float:
        def channel(value: float) -> float:
            return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

        return (
            0.2126 * channel(colour.redF())
            + 0.7152 * channel(colour.greenF())
            + 0.0722 * channel(colour.blueF())
        )

    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_window_fits_1280_pixels_with_the_watch_panel_open(qtbot, window: MainWindow) -> None:
    window.resize(1200, 800)
    window.watch_dock.show()
    qtbot.wait(200)
    assert window.width() <= 1200, "opening Watched folders widened the window"
    search = window.ui.search
    assert search.width() >= search.fontMetrics().horizontalAdvance(search.placeholderText()) + 20  # not "S…"
    grid = window.grid
    columns = max(1, grid.viewport().width() // grid.gridSize().width())
    bar = grid.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, grid)
    assert grid.viewport().width() - columns * grid.gridSize().width() <= bar + columns  # no empty strip

    details = window.details
    assert not any(bar.isVisibleTo(details) for bar in details.top_bars)  # no empty boxes before a photo
    hint = next(label for label in details.findChildren(QLabel) if "Enter" in label.text())
    group = QPalette.ColorGroup.Active if hint.isEnabled() else QPalette.ColorGroup.Disabled
    text_colour = hint.palette().color(group, QPalette.ColorRole.WindowText)
    assert contrast(text_colour, hint.palette().color(QPalette.ColorRole.Window)) >= 4.5


def test_a_grid_caption_keeps_breed_and_confidence_and_marks_unsure_apart(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    import numpy as np

    from catbreed_desktop.core.classify import Prediction
    from catbreed_desktop.gui.grid import caption_text

    photo = make_photo(tmp_path / "maine.png", COLOURS["Red Cat"])
    window.photos.add_paths([photo])
    top = (("Maine Coon", 0.40), ("Ragdoll", 0.35), ("Siberian", 0.25))
    window.photos.apply_predictions([Prediction(photo, top, np.zeros(3))])
    record = window.photos.records[0]
    assert record.is_unsure(0.5)
    width = window.ui.delegate.sizeHint(None, QModelIndex()).width() - 12
    text = caption_text(record, QFontMetrics(window.grid.font()), width)
    assert text == "Maine Coon  40%"  # not "Maine Coon 40% (un…"


# --- 9 (window part): Settings has a shortcut on Linux too ----------------------------------------------


def test_settings_have_a_shortcut_everywhere(window: MainWindow) -> None:
    assert not window.commands.settings.shortcut().isEmpty()


# --- 11: a relative path on the command line shows as absolute ---------------------------------------


def test_photos_given_by_relative_path_are_shown_with_their_absolute_path(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    colour_photos(tmp_path / "photos", 2)
    monkeypatch.chdir(tmp_path)
    add_and_wait(qtbot, window, Path("photos"))
    assert all(record.path.is_absolute() for record in window.photos.records)
    window.review.select_path(window.photos.records[0].path)
    assert window.details.path_label.text() == os.fspath(
        tmp_path / "photos" / window.photos.records[0].path.name
    )
