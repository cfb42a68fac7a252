"""Driving the window: add photos, classify, filter, review, export, sort with preview, undo."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from catbreed_desktop.core.corrections import read_corrections_csv
from catbreed_desktop.core.settings import Settings
from catbreed_desktop.gui.main_window import MainWindow
from catbreed_desktop.gui.photo_model import SHOW_ALL, SHOW_UNSURE, show_breed

pytestmark = pytest.mark.timeout(60)


def colour_of(path: Path) -> str:
    return path.stem.split("-")[0] + " Cat"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for index in range(6):
        label = list(COLOURS)[index % 3]
        make_photo(folder / f"{label.split()[0]}-{index}.png", COLOURS[label], seed=index)
    make_photo(folder / "nested" / "Blue-deep.png", COLOURS["Blue Cat"], seed=9)
    (folder / "broken.jpg").write_bytes(b"this is not a photo")
    return folder


def add_and_wait(qtbot, window: MainWindow, *inputs: Path) -> None:
    window.add_inputs(list(inputs))
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=20_000)


def by_name(window: MainWindow) -> dict[str, object]:
    return {record.path.name: record for record in window.photos.records}


def test_a_folder_is_classified_and_unreadable_files_are_listed(
    qtbot, window: MainWindow, photos: Path
) -> None:
    assert window.classifier.provider in window.status.engine_label.text()
    add_and_wait(qtbot, window, photos)
    records = by_name(window)
    assert set(records) == {p.name for p in photos.rglob("*.png")}
    for name, record in records.items():
        assert record.label == colour_of(Path(name))
        assert len(record.prediction.top) == 3
    assert any("broken.jpg" in message for message in window.errors.messages())
    assert window.settings.recent_folders[0] == str(photos.resolve())
    add_and_wait(qtbot, window, photos)  # adding again changes nothing
    assert len(window.photos.records) == len(records)


def test_without_subfolders_only_the_top_folder_is_added(qtbot, window: MainWindow, photos: Path) -> None:
    window.subfolders_box.setChecked(False)
    add_and_wait(qtbot, window, photos)
    assert "Blue-deep.png" not in by_name(window)
    assert window.settings.include_subfolders is False


def test_filter_search_sort_and_threshold(qtbot, window: MainWindow, photos: Path) -> None:
    add_and_wait(qtbot, window, photos)
    proxy = window.proxy
    window.ui.breed_filter.choose(show_breed("Red Cat"))
    shown = {proxy.index(row, 0).data(Qt.ItemDataRole.ToolTipRole) for row in range(proxy.rowCount())}
    assert shown and all(Path(path).name.startswith("Red") for path in shown)
    window.ui.breed_filter.choose(SHOW_ALL)
    window.ui.search.setText("deep")
    assert proxy.rowCount() == 1
    window.ui.search.clear()
    window.ui.sort_order.setCurrentText("Confidence (lowest first)")
    confidences = [
        window.photos.record(proxy.mapToSource(proxy.index(r, 0)).row()).confidence
        for r in range(proxy.rowCount())
    ]
    assert confidences == sorted(confidences)

    window.set_threshold(1.0)  # nothing is that sure: every photo is marked unsure
    window.ui.breed_filter.choose(SHOW_UNSURE)
    assert proxy.rowCount() == len(window.photos.records)
    window.set_threshold(0.0)
    assert proxy.rowCount() == 0
    assert window.settings.confidence_threshold == 0.0


def test_review_with_keys_and_type_ahead_then_export_csv(
    qtbot, window: MainWindow, photos: Path, tmp_path: Path
) -> None:
    add_and_wait(qtbot, window, photos)
    window.grid.setFocus()
    red = photos / "Red-0.png"
    window.review.select_path(red)
    qtbot.keyClick(window.grid, Qt.Key.Key_2)  # the model's second choice
    record = by_name(window)["Red-0.png"]
    second = record.prediction.top[1][0]
    assert record.label == second and record.confidence == 1.0
    assert window.details.status.text().startswith("Corrected by you")

    qtbot.keyClick(window.grid, Qt.Key.Key_Backspace)
    assert record.label == "Red Cat" and not record.reviewed

    window.review.select_path(red)
    qtbot.keyClick(window.grid, Qt.Key.Key_Return)  # confirm and move on
    assert record.reviewed and record.confidence == 1.0
    assert window.review.current_record() is not record

    green = by_name(window)["Green-1.png"]
    window.review.select_path(green.path)
    box = window.details.breed_box
    box.setEditText("blu")  # type-ahead: a unique partial name is enough
    qtbot.keyClick(box.lineEdit(), Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: green.corrected_label is not None, timeout=2_000)
    assert green.label == "Blue Cat" and green.corrected_label == "Blue Cat"

    csv_path = tmp_path / "corrections.csv"
    window.export_corrections_csv(csv_path)
    rows = {row.path.name: row.label for row in read_corrections_csv(csv_path)}
    assert rows == {"Red-0.png": "Red Cat", "Green-1.png": "Blue Cat"}
    assert csv_path.read_text(encoding="utf-8").splitlines()[0] == "path,label"

    window.export_corrections_folders(tmp_path / "export")
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)
    assert (tmp_path / "export" / "Blue Cat" / "Green-1.png").read_bytes() == green.path.read_bytes()
    assert (tmp_path / "export" / "Red Cat" / "Red-0.png").is_file()


def test_sort_with_preview_then_undo(qtbot, window: MainWindow, photos: Path, tmp_path: Path) -> None:
    add_and_wait(qtbot, window, photos)
    corrected = by_name(window)["Green-1.png"]
    window.review.set_label("Red Cat", rows=[window.photos.row_of(corrected.path)])
    originals = {record.path: record.path.read_bytes() for record in window.photos.records}
    target = tmp_path / "sorted"

    dialog = window.make_sort_dialog()
    dialog.target_edit.setText(str(target))
    dialog.move_button.setChecked(True)
    dialog.threshold_spin.setValue(0.5)
    plan = dialog.plan()
    assert dialog.table_model.rowCount() == len(originals) == len(plan.operations)
    assert not target.exists()  # the preview touches nothing
    dialog.close()

    window.start_sort(plan)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)
    for record in window.photos.records:
        assert record.path.parent.parent == target.resolve()
        assert (
            record.path.read_bytes()
            == originals[
                photos / record.path.name
                if record.path.name != "Blue-deep.png"
                else photos / "nested" / "Blue-deep.png"
            ]
        )
    assert corrected.path.parent.name == "Red Cat"  # the correction is what sorting uses
    assert {p.name for p in (target / "Blue Cat").iterdir()} == {"Blue-2.png", "Blue-5.png", "Blue-deep.png"}

    asked = []
    window.ask_to_undo = lambda preview: asked.append(preview.describe()) or True
    window.undo_last_sort()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)
    assert len(asked) == 1 and f"{len(originals)} photos will be moved back" in asked[0]
    assert {record.path for record in window.photos.records} == set(originals)
    for path, content in originals.items():
        assert path.read_bytes() == content


def test_undo_asks_first_and_cancel_changes_nothing(
    qtbot, window: MainWindow, photos: Path, tmp_path: Path
) -> None:
    add_and_wait(qtbot, window, photos)
    target = tmp_path / "sorted"
    dialog = window.make_sort_dialog()
    dialog.target_edit.setText(str(target))
    dialog.copy_button.setChecked(True)
    plan = dialog.plan()
    dialog.close()
    window.start_sort(plan)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)
    copies = sorted(target.rglob("*.png"))
    next(photos.glob("Red-*.png")).unlink()  # one original deleted after the sort
    questions = []

    def decline(preview) -> bool:
        question = window.make_undo_question(preview)
        questions.append(question.text())
        assert question.defaultButton() == question.button(QMessageBox.StandardButton.Cancel)
        return False

    window.ask_to_undo = decline
    window.commands.undo.trigger()  # Ctrl+Z
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)

    assert sorted(target.rglob("*.png")) == copies  # nothing undone
    assert len(questions) == 1
    assert f"{len(copies) - 1} copies will be removed" in questions[0]
    assert "1 copy will be kept, because its original is gone" in questions[0]
    assert "cancelled" in window.statusBar().currentMessage()


def test_undo_is_offered_only_when_there_is_a_sort_to_undo(qtbot, window: MainWindow) -> None:
    """Undo is disabled with nothing to undo, and a stale request is told so without a Problems entry."""
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)
    assert not window.commands.undo.isEnabled()
    window.undo_last_sort()  # a script or a stale shortcut may still ask: it is told, it is no problem
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)
    assert "no sort to undo" in window.statusBar().currentMessage()
    assert window.errors.messages() == []


def test_dropping_files_and_folders_adds_them(qtbot, window: MainWindow, photos: Path) -> None:
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(photos / "nested")), QUrl.fromLocalFile(str(photos / "Red-0.png"))])
    event = QDropEvent(
        QPointF(QPoint(50, 50)),
        Qt.DropAction.CopyAction,
        data,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(event)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)
    assert set(by_name(window)) == {"Blue-deep.png", "Red-0.png"}


def test_a_missing_model_is_explained_in_the_window(qtbot, tmp_path: Path, photos: Path) -> None:
    window = MainWindow(Settings(engine="cpu"), model_path=tmp_path / "no-model-here")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.model_error is not None, timeout=10_000)
    assert window.ui.banner.isVisible()
    assert "no-model-here" in window.ui.banner.text() and "Open model bundle" in window.ui.banner.text()
    assert "no model" in window.status.engine_label.text()
    window.add_inputs([photos])
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=10_000)
    assert len(window.photos.records) == 8 and not any(r.classified for r in window.photos.records)
    window.close()
