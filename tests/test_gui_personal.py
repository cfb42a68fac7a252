"""The window learns from a correction: photos like it follow in the background, marked; off and forget
work; the sort preview names the photos a correction filed; the store is read and written off the GUI thread."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from factories import COLOUR_LABELS, COLOURS, colour_embedding, make_breeds_bundle, make_photo
from gui_fakes import InlineRunner
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QMessageBox

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.classify import Prediction
from catbreed_desktop.core.personal import PersonalStore
from catbreed_desktop.core.settings import Settings
from catbreed_desktop.gui.main_window import MainWindow
from catbreed_desktop.gui.personal_controller import PERSONAL_LANE, PersonalController
from catbreed_desktop.gui.photo_model import ADAPTED_MARK, PhotoListModel
from catbreed_desktop.gui.sort_dialog import ALL_FOLDERS, FROM_CORRECTIONS, FROM_CORRECTIONS_TEXT

pytestmark = pytest.mark.timeout(60)

# The colour model calls purple photos "Blue Cat"; the person says they are green cats.
PURPLE = (180, 30, 200)


def make_photos(folder: Path) -> Path:
    for seed in range(3):
        make_photo(folder / f"purple{seed}.png", PURPLE, seed=seed)
    make_photo(folder / "red.png", COLOURS["Red Cat"])
    return folder


@pytest.fixture
def loaded(qtbot, window: MainWindow, tmp_path: Path) -> MainWindow:
    window.add_inputs([make_photos(tmp_path / "photos")])
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


# --- the sort preview names the photos a correction filed -----------------------------------------


def folder_cells(dialog) -> dict[str, tuple[str, str]]:
    """{photo name: (Folder cell, its tooltip)} of the rows the preview's table shows."""
    table = dialog.table.model()
    return {
        table.index(row, 0).data(): (
            table.index(row, 1).data(),
            table.index(row, 1).data(Qt.ItemDataRole.ToolTipRole),
        )
        for row in range(table.rowCount())
    }


def test_the_sort_preview_marks_the_photos_filed_by_a_correction(
    qtbot, loaded: MainWindow, tmp_path: Path
) -> None:
    window = loaded
    correct(window, "purple0.png", "Green Cat")
    qtbot.waitUntil(lambda: record(window, "purple2.png").label == "Green Cat", timeout=2_000)
    dialog = window.make_sort_dialog()
    qtbot.addWidget(dialog)
    dialog.target_edit.setText(str(tmp_path / "sorted"))
    preview = dialog.preview()

    moved_by = "purple0.png → Green Cat"
    # The corrected photo is the person's own label, red.png the model's: neither is listed.
    assert {path.name: by for path, by in preview.personal.items()} == {
        "purple1.png": moved_by,
        "purple2.png": moved_by,
    }
    assert "2 photos are filed by the breed your corrections gave" in dialog.summary.text()
    assert (FROM_CORRECTIONS_TEXT, 2) in dialog.folder_counts()
    everything = folder_cells(dialog)
    assert not everything["purple0.png"][0].startswith(ADAPTED_MARK)
    assert not everything["red.png"][0].startswith(ADAPTED_MARK)
    dialog.show_folder(FROM_CORRECTIONS)
    shown = folder_cells(dialog)
    assert set(shown) == {"purple1.png", "purple2.png"}
    for cell, tip in shown.values():
        assert cell.startswith(ADAPTED_MARK) and moved_by in tip
    dialog.show_folder(ALL_FOLDERS)
    assert len(folder_cells(dialog)) == 4
    dialog.close()

    # Confirmed, the layer's answer becomes the person's own: no longer "from your corrections".
    correct(window, "purple2.png", "Green Cat")
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)
    dialog = window.make_sort_dialog()
    qtbot.addWidget(dialog)
    dialog.target_edit.setText(str(tmp_path / "sorted"))
    assert [path.name for path in dialog.preview().personal] == ["purple1.png"]
    assert "1 photo is filed by the breed your corrections gave" in dialog.summary.text()
    dialog.close()


# --- the store is read and written off the GUI thread ------------------------------------------------


def test_the_store_is_read_off_the_gui_thread_and_applied_once_loaded(
    qtbot, colour_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_photos(tmp_path / "photos")
    model = ("--model", str(colour_bundle.path))
    assert main(["correct", str(folder / "purple0.png"), "--breed", "Green Cat", *model]) == 0
    gui_thread = threading.get_ident()
    threads: dict[str, set[int]] = {"read": set(), "write": set()}
    reading, release = threading.Event(), threading.Event()
    read, write = PersonalStore._load, PersonalStore.save

    def slow_read(store: PersonalStore) -> None:
        threads["read"].add(threading.get_ident())
        reading.set()
        release.wait(timeout=10)  # a guard only: the test lets it go on as soon as it has looked
        read(store)

    def spied_write(store: PersonalStore) -> None:
        threads["write"].add(threading.get_ident())
        write(store)

    monkeypatch.setattr(PersonalStore, "_load", slow_read)
    monkeypatch.setattr(PersonalStore, "save", spied_write)
    window = MainWindow(Settings(engine="cpu", batch_size=4), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(reading.is_set, timeout=10_000)

    # While the store is being read, the event loop goes on: a timer fires, photos are classified...
    timer = QTimer(window, singleShot=True, interval=0)
    with qtbot.waitSignal(timer.timeout, timeout=5_000):
        timer.start()
    with qtbot.waitSignal(window.classification_finished, timeout=20_000):
        window.add_inputs([folder])
    # ...and show the model's own answers until the corrections are there.
    assert threads["read"] and gui_thread not in threads["read"]
    assert record(window, "purple1.png").label == "Blue Cat"
    assert record(window, "purple1.png").prediction.moved_by is None
    assert window.personal.loading and window.is_busy()

    release.set()
    qtbot.waitUntil(lambda: record(window, "purple1.png").label == "Green Cat", timeout=5_000)
    assert record(window, "purple1.png").prediction.moved_by == "purple0.png → Green Cat"
    assert record(window, "red.png").label == "Red Cat"
    assert window.personal_label.text() == "Adapted to 1 of your corrections"

    correct(window, "red.png", "Red Cat")  # confirmed: kept, and written in the background
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=5_000)
    assert threads["write"] and gui_thread not in threads["write"]
    assert len(PersonalStore(colour_bundle.model_sha256)) == 2
    window.close()


def blue_answer(path: Path, colour: tuple[int, int, int]) -> Prediction:
    """The model's answer "Blue Cat" for a photo, with the colour model's embedding of `colour`."""
    probabilities = np.array([0.1, 0.1, 0.8])
    top = tuple(sorted(zip(COLOUR_LABELS, probabilities.tolist(), strict=True), key=lambda t: -t[1]))
    return Prediction(
        path, top, probabilities, embedding=np.array(colour_embedding(colour), dtype=np.float32)
    )


@pytest.fixture
def waiting(colour_bundle, tmp_path: Path) -> tuple[PersonalController, PhotoListModel, InlineRunner]:
    """A controller whose store is still to be read (the runner runs it when told), with two
    purple photos the model calls "Blue Cat" shown, as the model alone says."""
    photos, runner = PhotoListModel(), InlineRunner()
    controller = PersonalController(photos, runner, store_folder=tmp_path / "personal")
    controller.set_bundle(colour_bundle)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    photos.add_paths(paths)
    controller.model_results(photos.apply_predictions([blue_answer(path, PURPLE) for path in paths]))
    assert controller.loading and controller.store is None and runner.kinds_run == []
    return controller, photos, runner


def test_a_correction_made_while_the_store_loads_is_kept_once_it_is_there(
    waiting, colour_bundle, tmp_path: Path
) -> None:
    controller, photos, runner = waiting
    row = photos.row_of(tmp_path / "a.png")
    photos.set_label(row, "Green Cat")
    controller.corrected([row])
    assert photos.record(1).label == "Blue Cat"

    runner.run_pending()

    assert runner.kinds_run[0] == "reading of your corrections"
    assert photos.record(1).label == "Green Cat"
    assert photos.record(1).prediction.moved_by == "a.png → Green Cat"
    assert PersonalStore(colour_bundle.model_sha256, tmp_path / "personal").labels == ["Green Cat"]
    assert not controller.is_busy()


def test_forgetting_while_the_store_loads_forgets_what_it_held(
    waiting, colour_bundle, tmp_path: Path
) -> None:
    controller, photos, runner = waiting
    kept = PersonalStore(colour_bundle.model_sha256, tmp_path / "personal")
    kept.add([tmp_path / "elsewhere.png"], ["Green Cat"], np.array([colour_embedding(PURPLE)]))

    assert controller.forget_all() is None  # not known yet: the store is being read
    runner.run_pending()

    assert controller.count == 0 and photos.record(1).label == "Blue Cat"
    assert not (tmp_path / "personal" / f"{colour_bundle.model_sha256}.npz").exists()


def test_a_correction_made_just_before_another_model_loads_is_still_written(
    waiting, colour_bundle, tmp_path: Path
) -> None:
    controller, photos, runner = waiting
    runner.run_pending()
    photos.set_label(0, "Green Cat")
    controller.corrected([0])  # its writing waits in the runner...
    controller.set_bundle(make_breeds_bundle(tmp_path / "other"))  # ...when another model comes

    runner.run_pending()

    assert PersonalStore(colour_bundle.model_sha256, tmp_path / "personal").labels == ["Green Cat"]
    assert controller.store is not None and len(controller.store) == 0  # the other model's own
    assert photos.record(1).label == "Blue Cat"  # no result for the old model is applied


def test_a_correction_made_while_the_store_loads_is_written_when_the_window_closes_first(
    qtbot, colour_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_photos(tmp_path / "photos")
    model = ("--model", str(colour_bundle.path))
    assert main(["correct", str(folder / "purple0.png"), "--breed", "Green Cat", *model]) == 0
    reading, release = threading.Event(), threading.Event()
    read = PersonalStore._load

    def slow_read(store: PersonalStore) -> None:
        reading.set()
        release.wait(timeout=10)
        read(store)

    monkeypatch.setattr(PersonalStore, "_load", slow_read)
    window = MainWindow(Settings(engine="cpu", batch_size=4), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(reading.is_set, timeout=10_000)
    with qtbot.waitSignal(window.classification_finished, timeout=20_000):
        window.add_inputs([folder])
    correct(window, "red.png", "Red Cat")
    assert window.personal.loading

    # The window closes while the store is still being read: the read ends once the lane is
    # stopping, too late for the window to take its result.
    stop_the_runner = window.runner.shutdown

    def shutdown_then_let_the_read_end() -> None:
        release.set()
        stop_the_runner()

    monkeypatch.setattr(window.runner, "shutdown", shutdown_then_let_the_read_end)
    window.close()

    kept = PersonalStore(colour_bundle.model_sha256)
    assert [Path(p).name for p in kept.photo_paths] == ["purple0.png", "red.png"]
    assert kept.labels == ["Green Cat", "Red Cat"]


def damage_the_store(bundle, folder: Path) -> None:
    kept = PersonalStore(bundle.model_sha256, folder)
    kept.add([folder / "elsewhere.png"], ["Green Cat"], np.array([colour_embedding(PURPLE)]))
    kept.path.write_bytes(kept.path.read_bytes()[:50])


def test_a_correction_made_while_a_damaged_store_loads_is_written_when_the_controller_shuts_down(
    waiting, colour_bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller, photos, runner = waiting
    damage_the_store(colour_bundle, tmp_path / "personal")
    photos.set_label(0, "Green Cat")
    controller.corrected([0])

    runner.shutdown()  # the store's reading never ran
    controller.shutdown()

    assert "could not be read" in caplog.text
    kept = PersonalStore(colour_bundle.model_sha256, tmp_path / "personal")
    assert kept.labels == ["Green Cat"] and kept.photo_paths == [str(tmp_path / "a.png")]
    assert [p for p in (tmp_path / "personal").iterdir() if ".damaged-" in p.name]


@pytest.mark.parametrize("damaged", [False, True], ids=["readable", "damaged"])
def test_a_correction_made_while_the_store_loads_is_written_when_another_model_comes_first(
    qtbot, waiting, colour_bundle, tmp_path: Path, damaged: bool
) -> None:
    controller, photos, runner = waiting
    if damaged:
        damage_the_store(colour_bundle, tmp_path / "personal")
    photos.set_label(0, "Green Cat")
    controller.corrected([0])
    photos.set_label(1, "Red Cat")
    controller.corrected([1])
    photos.set_label(1, None, reviewed=False)  # taken back: not kept
    controller.corrected([1])
    warnings: list[str] = []
    controller.warning.connect(warnings.append)

    controller.set_bundle(make_breeds_bundle(tmp_path / "other"))
    runner.run_pending()

    kept = PersonalStore(colour_bundle.model_sha256, tmp_path / "personal")
    assert kept.labels == ["Green Cat"] and kept.photo_paths == [str(tmp_path / "a.png")]
    assert controller.store is not None and len(controller.store) == 0  # the other model's own
    assert not controller.is_busy()
    assert len(warnings) == damaged and all("could not be read" in w for w in warnings)
