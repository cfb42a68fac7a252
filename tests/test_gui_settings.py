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
