"""The window with a 33-breed bundle: sorted, searchable breed lists with counts, and the bundle's unsure threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import BREEDS_33, make_breeds_bundle, make_photo
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont

from catbreed_desktop.core.settings import (
    SCHEMA_VERSION,
    Settings,
    load_settings,
    save_settings,
    settings_path,
)
from catbreed_desktop.gui.breed_box import VISIBLE_ROWS, BreedBox
from catbreed_desktop.gui.main_window import MainWindow
from catbreed_desktop.gui.photo_model import (
    SHOW_ALL,
    SHOW_NOT_CAT,
    SHOW_UNSURE,
    SPECIAL_FILTERS,
    PhotoRecord,
    filter_counts,
    show_breed,
)

pytestmark = pytest.mark.timeout(60)

DECISION = {"min_confidence": 0.45, "chosen_on": "validation", "rule": "lowest threshold keeping 95% right"}
# Red photos are a sure "Turkish Angora", green a sure "Tonkinese", purple an unsure "Sphynx" (0.41).
RED, GREEN, PURPLE = (220, 30, 30), (30, 200, 40), (150, 30, 150)


@pytest.fixture
def breeds_bundle(tmp_path: Path):
    return make_breeds_bundle(tmp_path / "bundle", decision=DECISION)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    named = (("red-0", RED), ("red-1", RED), ("red-2", RED), ("green-0", GREEN), ("green-1", GREEN))
    for seed, (name, colour) in enumerate(named):
        make_photo(folder / f"{name}.png", colour, seed=seed)  # each its own bytes: no duplicates
    make_photo(folder / "purple-0.png", PURPLE)
    return folder


def open_window(qtbot, bundle_path: Path, settings: Settings | None = None) -> MainWindow:
    window = MainWindow(settings or Settings(engine="cpu", batch_size=4), model_path=bundle_path)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.classifier is not None, timeout=10_000)
    return window


def classified(qtbot, window: MainWindow, folder: Path) -> dict[str, PhotoRecord]:
    window.add_inputs([folder], remember=False)
    qtbot.waitUntil(lambda: not window.is_busy() and len(window.photos.records) == 6, timeout=20_000)
    qtbot.waitUntil(lambda: window.status.counts.photos == 6, timeout=2_000)  # counted once per pass
    return {record.path.stem: record for record in window.photos.records}


def completions(box: BreedBox) -> list[str]:
    completer = box.completer()
    model = completer.completionModel()
    return [model.index(row, 0).data() for row in range(completer.completionCount())]


def test_the_correction_box_offers_all_33_breeds_sorted_and_finds_them_by_any_part(
    qtbot, breeds_bundle, photos: Path
) -> None:
    window = open_window(qtbot, breeds_bundle.path)
    records = classified(qtbot, window, photos)
    box = window.details.breed_box

    assert box.breeds() == list(BREEDS_33)  # alphabetical, though the bundle lists them in reverse
    assert window.classifier.bundle.labels[0] == "Turkish Angora"
    assert box.maxVisibleItems() == VISIBLE_ROWS < 33  # the popup scrolls instead of filling the screen
    box.showPopup()
    qtbot.waitUntil(lambda: box.view().isVisible(), timeout=2_000)
    assert box.view().verticalScrollBar().maximum() > 0
    box.hidePopup()

    red = records["red-0"]
    window.review.select_path(red.path)
    window.review.focus_breed_box()
    qtbot.keyClicks(box.lineEdit(), "rex")  # part of three names, not their start
    assert completions(box) == ["Cornish Rex", "Devon Rex", "Selkirk Rex"]
    qtbot.keyClick(box.lineEdit(), Qt.Key.Key_Return)  # several match: nothing is set, the list shows them
    qtbot.wait(50)
    assert red.corrected_label is None and "Several breeds contain “rex”" in window.details.status.text()

    box.lineEdit().selectAll()
    qtbot.keyClicks(box.lineEdit(), "FOLD")
    assert completions(box) == ["Scottish Fold"]
    qtbot.keyClick(box.lineEdit(), Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: red.corrected_label == "Scottish Fold", timeout=2_000)
    assert window.review.current_record() is not red  # on to the next photo, as Enter does

    # An exact name typed, then focus moves to another photo: leaving the box is no choice.
    window.activateWindow()
    qtbot.waitActive(window)  # focus moves, and leaves, only in the active window
    typed_on = records["red-1"]
    window.review.select_path(typed_on.path)
    window.review.focus_breed_box()
    assert box.lineEdit().hasFocus()
    qtbot.keyClicks(box.lineEdit(), "Korat")
    box.completer_popup.hide()
    # A click on another photo: focus leaves the box first, then the photo is selected.
    window.grid.setFocus(Qt.FocusReason.MouseFocusReason)
    window.review.select_path(records["red-2"].path)
    qtbot.wait(50)
    assert window.grid.hasFocus()
    for record in (typed_on, records["red-2"]):  # neither corrected nor confirmed behind the person's back
        assert record.corrected_label is None and not record.reviewed

    # Picking from the list with the mouse is a choice too.
    green = records["green-0"]
    window.review.select_path(green.path)
    box.showPopup()
    view = box.view()
    qtbot.waitUntil(view.isVisible, timeout=2_000)
    index = box.model().index(box.row_of("Selkirk Rex"), 0)  # far down: the list scrolls to it
    view.scrollTo(index)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(index).center())
    qtbot.waitUntil(lambda: green.corrected_label == "Selkirk Rex", timeout=2_000)
    assert not view.isVisible()
    window.close()


def test_the_breed_filter_is_sorted_counted_searchable_and_keeps_the_special_groups_apart(
    qtbot, breeds_bundle, photos: Path
) -> None:
    # The counts follow the person's own labels here: with learning from corrections on, the red
    # photos like the one corrected below would follow it (tests/test_gui_personal.py).
    settings = Settings(engine="cpu", batch_size=4, learn_from_corrections=False)
    window = open_window(qtbot, breeds_bundle.path, settings)
    records = classified(qtbot, window, photos)
    box, proxy = window.ui.breed_filter, window.proxy

    keys = box.keys()
    assert keys[:3] == list(SPECIAL_FILTERS) and keys[3:] == [show_breed(name) for name in BREEDS_33]
    separator = 3
    assert box.itemData(separator, Qt.ItemDataRole.AccessibleDescriptionRole) == "separator"
    for row in range(3):  # set apart in italics: "Unsure" must not read as a breed
        assert isinstance(box.itemData(row, Qt.ItemDataRole.FontRole), QFont)
        assert box.itemData(row, Qt.ItemDataRole.FontRole).italic()
    assert box.itemData(separator + 1, Qt.ItemDataRole.FontRole) is None

    counts = box.delegate.counts
    assert counts[SHOW_ALL] == 6 and counts[SHOW_UNSURE] == 1 and counts[SHOW_NOT_CAT] == 0
    assert counts[show_breed("Turkish Angora")] == 3 and counts[show_breed("Tonkinese")] == 2
    assert counts.get(show_breed("Korat"), 0) == 0
    for key in keys:  # each count is what choosing that item shows
        box.choose(key)
        assert proxy.rowCount() == counts.get(key, 0), key
    box.choose(SHOW_ALL)

    # Type part of a name and Enter: the one breed containing it is shown.
    line = box.lineEdit()
    line.setFocus()
    line.selectAll()
    qtbot.keyClicks(line, "angor")
    assert completions(box) == ["Turkish Angora"]
    qtbot.keyClick(line, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: proxy.breed_filter == show_breed("Turkish Angora"), timeout=2_000)
    assert proxy.rowCount() == 3 and box.currentText() == "Turkish Angora"
    line.selectAll()
    qtbot.keyClicks(line, "unsu")
    assert completions(box) == ["Unsure"]  # the special groups are found by typing too

    line.selectAll()
    qtbot.keyClicks(line, "no such breed")
    qtbot.keyClick(line, Qt.Key.Key_Return)
    qtbot.wait(50)
    assert proxy.breed_filter == show_breed("Turkish Angora") and box.currentText() == "Turkish Angora"

    # A correction moves a photo from one count to another.
    window.review.set_label("Korat", rows=[window.photos.row_of(records["red-1"].path)])
    qtbot.waitUntil(lambda: box.delegate.counts.get(show_breed("Korat"), 0) == 1, timeout=2_000)
    assert box.delegate.counts[show_breed("Turkish Angora")] == 2
    window.close()


def test_filter_counts_agree_with_the_filter_for_a_breed_called_unsure() -> None:
    import numpy as np

    from catbreed_desktop.core.classify import Prediction

    def record(name: str, label: str, confidence: float, is_cat: bool = True) -> PhotoRecord:
        prediction = Prediction(Path(name), ((label, confidence),), np.zeros(1), is_cat=is_cat)
        return PhotoRecord(Path(name), prediction)

    records = [record("a", "Unsure", 0.9), record("b", "Korat", 0.2), record("c", "Korat", 0.9, is_cat=False)]
    counts = filter_counts(records, threshold=0.5)
    # "c" is not a cat: it counts there, not as unsure, as sorting files it.
    assert counts[show_breed("Unsure")] == 1 and counts[SHOW_UNSURE] == 1 and counts[SHOW_NOT_CAT] == 1
    for key, count in counts.items():
        assert sum(key.accepts(r, 0.5) for r in records) == count
    assert show_breed("Unsure") != SHOW_UNSURE and show_breed("Unsure").text == SHOW_UNSURE.text


def test_the_window_uses_the_bundles_threshold_until_the_person_chooses_one(
    qtbot, breeds_bundle, photos: Path
) -> None:
    window = open_window(qtbot, breeds_bundle.path)
    records = classified(qtbot, window, photos)
    assert window.settings.confidence_threshold is None
    assert window.photos.threshold == 0.45 and window.ui.threshold_slider.value() == 450
    assert window.ui.threshold_label.text() == "45%"
    tip = window.ui.threshold_slider.toolTip()
    assert "Now 45%: recommended by the model bundle, chosen on validation photos" in tip
    assert window.ui.threshold_label.toolTip() == tip
    assert records["purple-0"].is_unsure(window.photos.threshold)
    assert window.status.counts.unsure == 1

    window.ui.threshold_slider.setValue(300)  # as the person drags it
    assert window.settings.confidence_threshold == 0.3 and window.photos.threshold == 0.3
    assert "Now 30%: your own setting" in window.ui.threshold_slider.toolTip()
    assert "The model’s own is 45%" in window.ui.threshold_slider.toolTip()
    qtbot.waitUntil(lambda: window.status.counts.unsure == 0, timeout=2_000)
    window.close()
    assert load_settings().confidence_threshold == 0.3

    # Saved and read back, the person's choice wins over the bundle's.
    again = open_window(qtbot, breeds_bundle.path, load_settings())
    assert again.photos.threshold == 0.3 and again.ui.threshold_label.text() == "30%"
    dialog = again.make_sort_dialog()
    assert dialog.threshold == 0.3 and "your own setting" in dialog.threshold_spin.toolTip()
    dialog.close()
    again.close()


def test_the_settings_dialog_says_the_models_threshold_and_goes_back_to_it(qtbot, breeds_bundle) -> None:
    from catbreed_desktop.gui.settings_dialog import SettingsDialog

    window = open_window(qtbot, breeds_bundle.path, Settings(engine="cpu", confidence_threshold=0.7))
    assert window.photos.threshold == 0.7
    dialog = SettingsDialog(window.settings, window)
    assert not dialog.threshold_auto.isChecked() and dialog.threshold_spin.isEnabled()
    assert dialog.threshold_spin.value() == 0.7
    note = dialog.threshold_note.text()
    assert (
        "This model’s threshold is 45%: recommended by the model bundle" in note and "Yours applies" in note
    )
    breeds = [dialog.breed_table.item(row, 0).text() for row in range(dialog.breed_table.rowCount())]
    assert breeds == list(BREEDS_33)

    dialog.threshold_auto.setChecked(True)
    assert not dialog.threshold_spin.isEnabled() and dialog.threshold_spin.value() == 0.45
    window.apply_settings(dialog.settings())
    assert window.settings.confidence_threshold is None and window.photos.threshold == 0.45
    assert load_settings().confidence_threshold is None

    dialog = SettingsDialog(window.settings, window)
    dialog.threshold_auto.setChecked(False)
    dialog.threshold_spin.setValue(0.62)
    window.apply_settings(dialog.settings())
    assert window.settings.confidence_threshold == 0.62 and window.ui.threshold_label.text() == "62%"
    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)
    window.close()


def test_a_bundle_without_a_decision_keeps_the_old_default(qtbot, colour_bundle) -> None:
    window = open_window(qtbot, colour_bundle.path)
    assert window.photos.threshold == 0.5 and window.ui.threshold_label.text() == "50%"
    assert "this model bundle recommends no threshold" in window.ui.threshold_slider.toolTip()
    window.close()


@pytest.mark.parametrize(("saved", "loaded"), [(0.5, None), (0.7, 0.7), (None, None), (2.0, None)])
def test_a_version_2_file_reads_the_old_default_threshold_as_not_set(saved, loaded) -> None:
    # Version 2 wrote 0.5 for everyone who never moved the slider: that is the bundle's to choose now.
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(
        json.dumps({"schema_version": 2, "confidence_threshold": saved}), encoding="utf-8"
    )
    assert load_settings().confidence_threshold == loaded


def test_a_threshold_not_set_is_saved_as_null_and_an_explicit_half_survives() -> None:
    save_settings(Settings())
    data = json.loads(settings_path().read_text(encoding="utf-8"))
    assert data["confidence_threshold"] is None and data["schema_version"] == SCHEMA_VERSION == 3
    save_settings(Settings(confidence_threshold=0.5))  # chosen under version 3: a choice
    assert load_settings().confidence_threshold == 0.5


def test_the_sort_preview_counts_each_folder_special_ones_first_then_alphabetical(
    qtbot, breeds_bundle, photos: Path, tmp_path: Path
) -> None:
    window = open_window(qtbot, breeds_bundle.path)
    classified(qtbot, window, photos)
    dialog = window.make_sort_dialog()
    assert dialog.threshold == 0.45 and "recommended by the model bundle" in dialog.threshold_spin.toolTip()
    dialog.target_edit.setText(str(tmp_path / "sorted"))
    dialog.update_preview()

    assert dialog.folder_counts() == [
        ("All folders", 6),
        ("Unsure", 1),
        ("Tonkinese", 2),
        ("Turkish Angora", 3),
    ]
    assert dialog.folder_list.item(1).font().italic() and not dialog.folder_list.item(2).font().italic()
    assert "6 photos will be copied into" in dialog.summary.text() and "in 3 folders" in dialog.summary.text()
    dialog.show_folder("Tonkinese")
    shown = [dialog.table.model().index(row, 0).data() for row in range(dialog.table.model().rowCount())]
    assert sorted(shown) == ["green-0.png", "green-1.png"]

    dialog.threshold_spin.setValue(0.3)  # the purple photo is sure enough now
    dialog.update_preview()
    assert ("Unsure", 1) not in dialog.folder_counts() and ("Sphynx", 1) in dialog.folder_counts()
    assert dialog.table.model().rowCount() == 2  # still showing Tonkinese
    dialog.close()
    window.close()
