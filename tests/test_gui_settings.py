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
    first.add_watch_folder(inbox)
    first.set_sort_target(str(target))
    first.set_auto_sort(True)
    first.set_threshold(0.7)
    first.close()

    saved = load_settings()
    assert saved.watched_folders == [str(inbox)]
    assert (saved.sort_target, saved.auto_sort, saved.confidence_threshold) == (str(target), True, 0.7)
    second = MainWindow()
    qtbot.addWidget(second)
    assert second.watcher.folders == [inbox]
    assert second.watch_panel.auto_sort.isChecked() and second.watch_panel.target.text() == str(target)
    assert second.threshold_slider.value() == 70
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
    info = dialog.bundle_info.toPlainText()
    assert "Red Cat, Green Cat, Blue Cat" in info and '"accuracy": 1.0' in info
    dialog.batch_spin.setValue(2)
    dialog.thumbnail_spin.setValue(96)
    old_classifier = window.classifier
    window.apply_settings(dialog.settings())
    qtbot.waitUntil(
        lambda: window.classifier is not None and window.classifier is not old_classifier, timeout=10_000
    )
    assert window.classifier.batch_size == 2 and window.delegate.thumbnail_size == 96
    assert load_settings().batch_size == 2
    dialog.model_edit.setText("/no/such/bundle")
    dialog.show_bundle_info()
    assert "/no/such/bundle" in dialog.bundle_info.toPlainText()
    window.close()


def test_settings_dialog_lists_the_engines_beside_the_engine_choice(
    qtbot, colour_bundle, monkeypatch
) -> None:
    from catbreed_desktop.core.engines import EngineUnavailable, onnx_runtime
    from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
    from catbreed_desktop.gui.settings_dialog import ENGINE_COLUMNS, SettingsDialog

    def missing_tensorrt():
        raise EngineUnavailable("TensorRT is not installed (test)")

    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing_tensorrt)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)
    dialog = SettingsDialog(Settings(model_path=str(colour_bundle.path), engine="cpu"))
    qtbot.addWidget(dialog)

    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)
    tree = dialog.engine_tree
    rows = [
        [tree.topLevelItem(row).text(column) for column in range(len(ENGINE_COLUMNS))]
        for row in range(tree.topLevelItemCount())
    ]
    assert [row[:4] for row in rows] == [
        ["TensorRT", "no", "fp16", "not started"],
        ["ONNX Runtime CUDA", "no", "fp16", "not started"],
        ["ONNX Runtime CPU", "yes", "fp32", "CPUExecutionProvider"],
    ]
    assert rows[2][4] == str(colour_bundle.model_path)
    assert rows[1][4].endswith("-fp16-v1.onnx (derived at first start)")
    assert tree.topLevelItem(1).toolTip(4) == rows[1][4].removesuffix(" (derived at first start)")
    details = dialog.engine_details.text().splitlines()
    assert details[0] == "TensorRT, why not: TensorRT is not installed (test)"
    assert details[1].startswith("ONNX Runtime CUDA, why not: ONNX Runtime CUDA is not available")
    assert "onnxruntime-gpu" in details[1] and len(details) == 2

    dialog.model_edit.setText("/no/such/bundle")
    dialog.show_bundle_info()
    qtbot.waitUntil(lambda: not dialog.is_listing(), timeout=10_000)
    assert tree.topLevelItemCount() == 0
    assert dialog.engine_status.text().startswith("Cannot list the engines:")
    assert "/no/such/bundle" in dialog.engine_status.text()
