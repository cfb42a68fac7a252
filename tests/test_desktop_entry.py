"""The freedesktop entry: what `--install-desktop-entry` writes, that desktop-file-validate accepts
it, that its Exec line starts the window on the photos a file manager hands over, and uninstalling.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from factories import COLOURS, make_photo
from PIL import Image

from catbreed_desktop.core import desktop_entry
from catbreed_desktop.gui.app import main as app_main

pytestmark = pytest.mark.timeout(120)
ENTRY_NAME = "org.catbreed.CatBreed.desktop"


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $XDG_DATA_HOME, so nothing is written into the user's menu."""
    home = tmp_path / "xdg data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def _read_entry(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if line and not line.startswith("#"))


def _unescape_string(value: str) -> str:
    """A string value as a desktop reads it (spec: "Possible value types")."""
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars)
            out.append({"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[following])
        else:
            out.append(char)
    return "".join(out)


def _exec_arguments(exec_value: str, files: list[str]) -> list[str]:
    """The command a desktop runs for `files`, per the spec's rules for the Exec key."""
    text, arguments, current, quoted, started = _unescape_string(exec_value), [], [], False, False
    chars = iter(text)
    for char in chars:
        if quoted:
            if char == "\\":
                current.append(next(chars))
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = started = True
        elif char == " ":
            if started:
                arguments.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        arguments.append("".join(current))
    expanded: list[str] = []
    for argument in arguments:
        if argument == "%F":
            expanded += files
        else:
            expanded.append(argument.replace("%%", "%"))
    return expanded


def _validate(path: Path) -> None:
    validator = shutil.which("desktop-file-validate")
    if validator is None:
        return  # desktop-file-utils is not installed here; the other checks still run
    completed = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0 and completed.stdout == "", completed.stdout + completed.stderr


def test_install_writes_a_valid_entry_and_icons_and_uninstall_removes_them(xdg, capsys) -> None:
    assert app_main(["--install-desktop-entry"]) == 0

    entry_path = xdg / "applications" / ENTRY_NAME
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {entry_path}" and len(printed) == 4
    _validate(entry_path)
    entry = _read_entry(entry_path)
    launcher = desktop_entry.launcher_command()
    assert _exec_arguments(entry["Exec"], ["/p/a.jpg"]) == [*launcher, "/p/a.jpg"]
    assert _unescape_string(entry["TryExec"]) == launcher[0]
    assert Path(launcher[0]).is_absolute() and os.access(launcher[0], os.X_OK)
    assert entry["Icon"] == "org.catbreed.CatBreed" and entry["Terminal"] == "false"
    assert entry["Categories"] == "Graphics;Photography;"
    assert {"image/jpeg", "image/png", "image/heic", "image/webp"} <= set(entry["MimeType"].split(";"))
    for size in (48, 128, 256):
        with Image.open(
            xdg / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "org.catbreed.CatBreed.png"
        ) as icon:
            assert icon.format == "PNG" and icon.size == (size, size) and icon.mode == "RGBA"
    if shutil.which("update-desktop-database"):
        # What file managers read to offer "Open with CatBreed" for a photo.
        assert f"image/jpeg={ENTRY_NAME};" in (xdg / "applications" / "mimeinfo.cache").read_text()

    assert app_main(["--uninstall-desktop-entry"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert not entry_path.exists() and not list((xdg / "icons").rglob("*.png"))
    assert app_main(["--uninstall-desktop-entry"]) == 0
    assert capsys.readouterr().out == "no desktop entry was installed\n"


@pytest.mark.parametrize(
    "launcher",
    ["/opt/cat breed/bin/catbreed-desktop", '/home/a"b/100%/$HOME/back\\slash/`x`/catbreed-desktop'],
)
def test_exec_line_gives_back_the_exact_launcher_path(xdg, launcher) -> None:
    desktop_entry.install_desktop_entry(command=[launcher, "--engine", "cpu"])
    entry_path = xdg / "applications" / ENTRY_NAME
    _validate(entry_path)
    entry = _read_entry(entry_path)
    assert _exec_arguments(entry["Exec"], ["/p/a.jpg", "/p/b c.png"]) == [
        launcher,
        "--engine",
        "cpu",
        "/p/a.jpg",
        "/p/b c.png",
    ]
    assert _unescape_string(entry["TryExec"]) == launcher


def test_a_line_break_in_the_launcher_path_is_refused(xdg) -> None:
    with pytest.raises(ValueError, match="line break"):
        desktop_entry.install_desktop_entry(command=["/opt/odd\nname/catbreed-desktop"])
    assert not (xdg / "applications" / ENTRY_NAME).exists()


def test_the_entry_opens_the_window_on_the_photos_it_is_given(xdg, colour_bundle, tmp_path) -> None:
    desktop_entry.install_desktop_entry()
    photos = [
        make_photo(tmp_path / "my cats" / "red cat.jpg", COLOURS["Red Cat"], size=(320, 240)),
        make_photo(tmp_path / "my cats" / "green cat.png", COLOURS["Green Cat"], size=(320, 240), seed=1),
    ]
    command = _exec_arguments(_read_entry(xdg / "applications" / ENTRY_NAME)["Exec"], list(map(str, photos)))
    shot = tmp_path / "shot.png"
    completed = subprocess.run(
        [*command, "--model", str(colour_bundle.path), "--engine", "cpu", "--screenshot", str(shot)],
        cwd=tmp_path,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"saved {shot}"
    # Both photos are on show: the window has no red or green of its own.
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    for red, green, blue in (COLOURS["Red Cat"], COLOURS["Green Cat"]):
        close = (
            (abs(pixels[..., 0] - red) < 40)
            & (abs(pixels[..., 1] - green) < 40)
            & (abs(pixels[..., 2] - blue) < 40)
        )
        assert close.sum() > 2000, (red, green, blue)
