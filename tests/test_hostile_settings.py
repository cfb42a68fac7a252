"""Damaged and foreign settings files: the window starts with the defaults and one line saying what
happened, the damaged file is kept aside (or it says it could not be), nothing raises, and a file
from a newer version is never written over.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catbreed_desktop.core import settings as settings_module
from catbreed_desktop.core.settings import (
    MAX_SETTINGS_BYTES,
    SCHEMA_VERSION,
    Settings,
    SettingsError,
    load_settings,
    read_settings,
    save_settings,
    settings_path,
)
from catbreed_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.timeout(90)

DAMAGED = {
    "not UTF-8": (b'{"engine": "cpu\xff\xfe"}', "not UTF-8 text"),
    "nested deep": (b'{"recent_folders": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deep"),
    "5000-digit integer": (b'{"batch_size": ' + b"9" * 5000 + b"}", "not valid JSON"),
    "over the size bound": (
        b'{"recent_folders": ["' + b"a" * (MAX_SETTINGS_BYTES + 10) + b'"]}',
        "larger than 1 MB",
    ),
    "not an object": (b"[1, 2, 3]", "not a JSON object"),
    "truncated": (b'{"batch_size": 16, "eng', "not valid JSON"),
}


def _write(content: bytes) -> Path:
    path = settings_path()
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_file_is_kept_aside_and_the_defaults_used(case: str) -> None:
    content, reason = DAMAGED[case]
    path = _write(content)

    loaded = read_settings()

    assert loaded.settings == Settings()
    aside = path.with_name("settings.json.corrupt")
    assert loaded.problem == (
        f"The settings file was damaged ({reason}): kept it as {aside}; started with the defaults"
    )
    assert aside.read_bytes() == content and not path.exists()
    save_settings(Settings(batch_size=4))  # the next save writes a fresh file
    assert load_settings().batch_size == 4


def test_a_fifo_in_place_of_the_file_does_not_hold_the_window_up() -> None:
    os.mkfifo(settings_path())
    loaded = read_settings()
    assert loaded.settings == Settings() and "not a regular file" in (loaded.problem or "")


def test_each_damaged_file_is_kept_not_only_the_last() -> None:
    path = _write(b"first damage")
    read_settings()
    _write(b"second damage")
    assert "settings.json.corrupt-2" in (read_settings().problem or "")
    assert path.with_name("settings.json.corrupt").read_bytes() == b"first damage"
    assert path.with_name("settings.json.corrupt-2").read_bytes() == b"second damage"


def test_damage_in_a_folder_that_cannot_be_written_is_named_not_raised(monkeypatch) -> None:
    path = _write(b"{corrupt")
    folder = path.parent
    if os.geteuid() == 0:  # root writes to any folder: refuse the rename as a read-only folder would

        def refuse(source: object, target: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(settings_module.os, "replace", refuse)
    folder.chmod(0o555)
    try:
        loaded = read_settings()
        assert loaded.settings == Settings()
        assert loaded.problem == (
            "The settings file is damaged (not valid JSON) and could not be kept aside "
            "(Permission denied); started with the defaults"
        )
        assert path.read_bytes() == b"{corrupt"
        with pytest.raises(OSError):  # nor written over: the window shows this as one line
            save_settings(Settings())
        assert path.read_bytes() == b"{corrupt"
    finally:
        folder.chmod(0o755)


def test_a_file_damaged_after_loading_is_kept_aside_by_the_next_save() -> None:
    path = _write(b"\x00\x01 not settings")
    save_settings(Settings(batch_size=2))
    assert path.with_name("settings.json.corrupt").read_bytes() == b"\x00\x01 not settings"
    assert load_settings().batch_size == 2


def test_a_newer_versions_file_is_read_but_never_written_over() -> None:
    newer = {
        "schema_version": SCHEMA_VERSION + 1,
        "batch_size": 16,
        "engine": "cpu",
        "a setting of the future": {"kept": [1, 2, 3]},
    }
    path = _write(json.dumps(newer).encode())
    before = path.read_bytes()

    loaded = read_settings()
    assert (loaded.settings.batch_size, loaded.settings.engine) == (16, "cpu")
    assert loaded.problem is not None and "newer CatBreed" in loaded.problem
    with pytest.raises(SettingsError, match="from a newer CatBreed"):
        save_settings(loaded.settings)
    assert path.read_bytes() == before


def test_the_window_shows_the_damage_in_the_status_bar_and_problems(qtbot, colour_bundle) -> None:
    _write(b"\xff" * 64)
    window = MainWindow(model_path=colour_bundle.path)
    qtbot.addWidget(window)
    line = window.statusBar().currentMessage()
    assert line.startswith("The settings file was damaged (not UTF-8 text): kept it as ")
    assert "\n" not in line
    assert window.errors.messages() == [line]
    window.close()


def test_the_window_does_not_write_over_a_newer_versions_file(qtbot, colour_bundle) -> None:
    path = _write(json.dumps({"schema_version": SCHEMA_VERSION + 5, "thumbnail_size": 128}).encode())
    before = path.read_bytes()
    window = MainWindow(model_path=colour_bundle.path)
    qtbot.addWidget(window)
    assert "newer CatBreed" in window.statusBar().currentMessage()
    window.settings.batch_size = 3
    window.save_settings()
    refused = window.statusBar().currentMessage()
    assert refused.startswith("Settings not saved: the settings file is from a newer CatBreed")
    window.close()
    assert path.read_bytes() == before


def test_the_program_starts_without_a_traceback_on_a_damaged_file(colour_bundle, tmp_path) -> None:
    path = _write(b'{"batch_size": ' + b"7" * 5000 + b"}")
    shot = tmp_path / "shot.png"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "catbreed_desktop",
            "--model",
            str(colour_bundle.path),
            "--engine",
            "cpu",
            "--screenshot",
            str(shot),
        ],
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0 and "Traceback" not in completed.stderr, completed.stderr
    assert shot.is_file() and path.with_name("settings.json.corrupt").is_file()
