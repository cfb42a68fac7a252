"""Settings: saved as JSON, robust to damaged files, restored by the window after a restart, edited in a dialog."""

from __future__ import annotations

from pathlib import Path

import pytest

from catbreed_desktop.core.settings import Settings, load_settings, save_settings, settings_path
from catbreed_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.timeout(60)


def test_watched_folders_and_sort_options_survive_a_restart(qtbot, colour_bundle, tmp_path: Path) -> None:
    inbox, target = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    first = MainWindow(Settings(engine="cpu"), model_path=colour_bundle.path)
    qtbot.addWidget(first)
    first.watching.add_folder(inbox)
    first.watching.set_target(str(target))
    first.watching.set_auto_sort(True)
    first.set_threshold(0.7)
    first.close()

    saved = load_settings()
    assert saved.watched_folders == [str(inbox)]
    assert (saved.sort_target, saved.auto_sort, saved.confidence_threshold) == (str(target), True, 0.7)
    second = MainWindow()
    qtbot.addWidget(second)
    assert second.watching.watcher.folders == [inbox]
    assert second.watch_panel.auto_sort.isChecked() and second.watch_panel.target.text() == str(target)
    assert second.ui.threshold_slider.value() == 700 and second.photos.threshold == 0.7
    second.close()


def test_settings_file_keeps_good_values_and_sets_aside_a_broken_one(tmp_path: Path) -> None:

    save_settings(Settings(batch_size=16, engine="cuda", recent_folders=["/a"]))
    assert load_settings() == Settings(batch_size=16, engine="cuda", recent_folders=["/a"])
    settings_path().write_text(
        '{"batch_size": "many", "engine": "warp", "thumbnail_size": 200}', encoding="utf-8"
    )
    assert load_settings() == Settings(thumbnail_size=200)
    settings_path().write_text("{not json", encoding="utf-8")
    assert load_settings() == Settings()
    assert settings_path().with_name("settings.json.corrupt").read_text(encoding="utf-8") == "{not json"
    settings = Settings()
    for index in range(15):
        settings.add_recent_folder(f"/folder/{index}")
    settings.add_recent_folder("/folder/3")
    assert settings.recent_folders[:2] == ["/folder/3", "/folder/14"] and len(settings.recent_folders) == 10


def test_settings_dialog_shows_the_bundle_and_applies_changes(qtbot, colour_bundle) -> None:
    from catbreed_desktop.gui.settings_dialog import SettingsDialog

    window = MainWindow(Settings(engine="cpu"), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.classifier is not None, timeout=10_000)
    dialog = SettingsDialog(window.settings, window)
    info = dialog.bundle_info.text()
    assert "Accuracy: 100.0%" in info and "Breeds: 3" in info
    breeds = [dialog.breed_table.item(row, 0).text() for row in range(dialog.breed_table.rowCount())]
    assert breeds == ["Blue Cat", "Green Cat", "Red Cat"]  # alphabetical, not the model's order
    dialog.batch_spin.setValue(2)
    dialog.thumbnail_spin.setValue(96)
    old_classifier = window.classifier
    window.apply_settings(dialog.settings())
    qtbot.waitUntil(
        lambda: window.classifier is not None and window.classifier is not old_classifier, timeout=10_000
    )
    assert window.classifier.batch_size == 2 and window.ui.delegate.thumbnail_size == 96
    assert load_settings().batch_size == 2
    dialog.model_edit.setText("/no/such/bundle")
    dialog.show_bundle_info()
    assert "/no/such/bundle" in dialog.bundle_info.text() and dialog.breed_table.rowCount() == 0
    window.close()


def test_settings_dialog_lists_the_engines_beside_the_engine_choice(
    qtbot, colour_bundle, monkeypatch
) -> None:
    from catbreed_desktop.core.engines import EngineUnavailable, onnx_runtime, openvino_engine, tensorrt_rtx
    from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
    from catbreed_desktop.gui.settings_dialog import ENGINE_COLUMNS, SettingsDialog

    def missing(what: str):
        def refuse():
            raise EngineUnavailable(f"{what} is not installed (test)")

        return refuse

    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing("TensorRT"))
    monkeypatch.setattr(tensorrt_rtx, "load_plugin", missing("TensorRT for RTX"))
    monkeypatch.setattr(openvino_engine, "load_openvino", missing("OpenVINO"))
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)
    dialog = SettingsDialog(Settings(model_path=str(colour_bundle.path), engine="cpu"))
    qtbot.addWidget(dialog)

    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)
    choices = [dialog.engine_box.itemData(index) for index in range(dialog.engine_box.count())]
    assert choices == ["auto", "tensorrt", "tensorrt-rtx", "cuda", "cpu", "openvino", "triton"]
    tree = dialog.engine_tree
    rows = [
        [tree.topLevelItem(row).text(column) for column in range(len(ENGINE_COLUMNS))]
        for row in range(tree.topLevelItemCount())
    ]
    assert [row[:4] for row in rows] == [
        ["TensorRT", "no", "fp16", "not started"],
        ["TensorRT for RTX", "no", "fp16", "not started"],
        ["ONNX Runtime CUDA", "no", "fp16", "not started"],
        ["ONNX Runtime CPU", "yes", "fp32", "CPUExecutionProvider"],
        ["OpenVINO CPU", "no", "fp32", "not started"],
    ]
    # The graph's file name in the column, its path in the tooltip and its folder below.
    assert rows[3][4] == colour_bundle.model_path.name
    assert tree.topLevelItem(3).toolTip(4) == str(colour_bundle.model_path)
    assert rows[2][4].endswith("-fp16-v1.onnx")
    assert tree.topLevelItem(2).toolTip(4).endswith(f"/{rows[2][4]}")
    details = dialog.engine_details.text().splitlines()
    assert details[0] == "TensorRT, why not: TensorRT is not installed (test)"
    assert details[1] == f"TensorRT, graph: {rows[0][4]}, derived from the bundle at first start"
    assert details[2] == "TensorRT for RTX, why not: TensorRT for RTX is not installed (test)"
    assert details[4].startswith("ONNX Runtime CUDA, why not: ONNX Runtime CUDA is not available")
    assert "onnxruntime-gpu" in details[4]
    assert details[6] == "OpenVINO CPU, why not: OpenVINO is not installed (test)" and len(details) == 9
    assert details[7:] == [
        f"Graphs in: {Path(tree.topLevelItem(2).toolTip(4)).parent}",
        f"Graphs in: {colour_bundle.path}",
    ]

    dialog.model_edit.setText("/no/such/bundle")
    dialog.show_bundle_info()
    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)
    assert tree.topLevelItemCount() == 0
    assert dialog.engine_status.text().startswith("Cannot list the engines:")
    assert "/no/such/bundle" in dialog.engine_status.text()


def test_each_range_is_defined_once_for_the_loader_and_the_dialog(qtbot, tmp_path: Path) -> None:
    from catbreed_desktop.core.settings import RANGES
    from catbreed_desktop.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(model_path=str(tmp_path / "none")))
    qtbot.addWidget(dialog)
    for name, box in (("batch_size", dialog.batch_spin), ("thumbnail_size", dialog.thumbnail_spin)):
        allowed = RANGES[name]
        assert (box.minimum(), box.maximum(), box.singleStep()) == (
            allowed.minimum,
            allowed.maximum,
            allowed.step,
        )
        # The loader keeps exactly what the dialog can produce, and refuses one step beyond.
        for value, kept in (
            (allowed.maximum, True),
            (allowed.maximum + 1, False),
            (allowed.minimum - 1, False),
        ):
            loaded = Settings.from_json({"schema_version": 2, name: int(value)})
            assert (getattr(loaded, name) == value) is kept
    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)


def test_a_file_without_schema_version_is_migrated_keeping_what_it_meant() -> None:
    from catbreed_desktop.core.settings import SCHEMA_VERSION

    # Version 1: no schema_version; auto-sort copied because the Sort dialog's mode said so, and
    # sizes up to 4096 were accepted.
    settings_path().write_text(
        '{"sort_mode": "copy", "auto_sort": true, "thumbnail_size": 1000, "batch_size": 300}',
        encoding="utf-8",
    )
    migrated = load_settings()
    assert (migrated.auto_sort_mode, migrated.sort_mode, migrated.auto_sort) == ("copy", "copy", True)
    assert (migrated.thumbnail_size, migrated.batch_size) == (512, 256)  # brought into today's range
    save_settings(migrated)
    assert f'"schema_version": {SCHEMA_VERSION}' in settings_path().read_text(encoding="utf-8")
    # A current file is taken as it is: its own auto-sort mode, not the dialog's.
    save_settings(Settings(sort_mode="copy", auto_sort_mode="move"))
    assert load_settings().auto_sort_mode == "move"


def test_the_triton_engine_takes_its_server_from_the_settings(qtbot, colour_bundle) -> None:
    from catbreed_desktop.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(engine="cpu", model_path=str(colour_bundle.path)))
    qtbot.addWidget(dialog)
    assert not dialog.server_edit.isEnabled()  # only the Triton engine uses a server
    dialog.engine_box.setCurrentIndex(dialog.engine_box.findData("triton"))
    assert dialog.server_edit.isEnabled()
    dialog.server_edit.setText("http://127.0.0.1:9")  # the discard port: no server answers there
    settings = dialog.settings()
    assert (settings.engine, settings.triton_server) == ("triton", "http://127.0.0.1:9")

    window = MainWindow(settings, model_path=colour_bundle.path)
    qtbot.addWidget(window)
    failures: list[str] = []
    window.classify.model_failed.connect(failures.append)
    qtbot.waitUntil(lambda: bool(failures), timeout=30_000)
    assert "127.0.0.1:9" in failures[0]
    window.close()
