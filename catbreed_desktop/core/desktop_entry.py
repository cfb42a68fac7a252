"""The freedesktop menu entry: `catbreed-desktop --install-desktop-entry` and its undoing.

Linux desktops list an application, and offer it under "Open with" for image files, when a
`.desktop` file names it in `$XDG_DATA_HOME/applications/` and its icon lies in the hicolor
theme under `$XDG_DATA_HOME/icons/`. Both are written for the current user only; no Qt is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from catbreed_desktop.core import paths
from catbreed_desktop.core.files import atomic_write_text

# Reverse-DNS id, as the Desktop Entry spec recommends: the file name, the icon name and the
# Wayland app id (gui/app.py sets it as the desktop file name) must all agree.
APP_ID = "org.catbreed.CatBreed"
# The window's WM_CLASS class on X11: Qt takes it from the application name set in gui/app.py.
WM_CLASS = "CatBreed"
ICON_SIZES = (48, 128, 256)  # 48 is the size the icon theme spec asks every app to provide
MIME_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/heic",
    "image/heif",
    "image/tiff",
    "image/bmp",
    "image/gif",
)
# Characters that force an Exec argument into double quotes (Desktop Entry spec, "The Exec key").
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def data_home() -> Path:
    """`$XDG_DATA_HOME`, or `~/.local/share` where it is unset or not absolute (as the spec says)."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".local" / "share"


def desktop_file_path(base: Path | None = None) -> Path:
    """Where the `.desktop` file goes."""
    return (base or data_home()) / "applications" / f"{APP_ID}.desktop"


def icon_paths(base: Path | None = None) -> list[Path]:
    """Where the icon goes, one PNG per size of the hicolor theme."""
    root = (base or data_home()) / "icons" / "hicolor"
    return [root / f"{size}x{size}" / "apps" / f"{APP_ID}.png" for size in ICON_SIZES]


def launcher_command() -> list[str]:
    """The command that starts this installation's window, with absolute paths.

    Frozen, it is the `catbreed-desktop` executable itself. Installed with pip or pipx, it is the
    `catbreed-desktop` script beside this environment's Python (found there rather than on $PATH,
    which may lead to another installation). Without that script, `python -m catbreed_desktop`.
    """
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).absolute())]
    # Not resolved: a venv's python is a link to the system one, whose folder has no script.
    bin_dir = Path(sys.executable).absolute().parent
    for name in ("catbreed-desktop", "catbreed-desktop.exe"):
        script = bin_dir / name
        if script.is_file():
            return [str(script)]
    return [str(Path(sys.executable).absolute()), "-m", "catbreed_desktop"]


def _escape_string(value: str) -> str:
    """A value of type string: backslash and line breaks escaped (spec, "Possible value types")."""
    for raw, escaped in (("\\", "\\\\"), ("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r")):
        value = value.replace(raw, escaped)
    return value


def _exec_argument(argument: str) -> str:
    """One Exec argument, quoted where needed; `%` doubled so it is not read as a field code."""
    if "\n" in argument or "\r" in argument:
        raise ValueError(f"a line break cannot appear in a desktop entry's command: {argument!r}")
    argument = argument.replace("%", "%%")
    if any(char in _RESERVED for char in argument):
        for char in ("\\", '"', "`", "$"):
            argument = argument.replace(char, "\\" + char)
        argument = f'"{argument}"'
    return argument


def desktop_entry_text(command: Sequence[str]) -> str:
    """The `.desktop` file that starts `command` with the files it is asked to open (`%F`)."""
    exec_line = " ".join(_exec_argument(argument) for argument in command)
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",  # the newest the validator of Debian 12 knows; every key here is older
        "Name=CatBreed",
        "GenericName=Cat Photo Sorter",
        "Comment=Sort cat photos by breed on your own computer",
        # Hidden by desktops once the program is gone (pip uninstall leaves this file behind).
        f"TryExec={_escape_string(command[0])}",
        # Escaped twice over: first as an Exec command, then as a string value.
        f"Exec={_escape_string(exec_line)} %F",
        f"Icon={APP_ID}",
        "Terminal=false",
        "Categories=Graphics;Photography;",
        "MimeType=" + "".join(f"{mime};" for mime in MIME_TYPES),
        "Keywords=cat;breed;photo;sort;classify;",
        "StartupNotify=true",
        f"StartupWMClass={WM_CLASS}",
    ]
    return "\n".join(lines) + "\n"


def _write_icons(source: Path, targets: Sequence[Path]) -> None:
    with Image.open(source) as image:
        icon = image.convert("RGBA")
    for target in targets:
        size = int(target.parent.parent.name.split("x")[0])
        target.parent.mkdir(parents=True, exist_ok=True)
        resized = icon if icon.size == (size, size) else icon.resize((size, size), Image.Resampling.LANCZOS)
        resized.save(target, optimize=True)


def _refresh_mime_cache(base: Path) -> None:
    """Rebuild the MIME-type index of "Open with" now; desktops also rebuild it later, so failure is fine."""
    tool = shutil.which("update-desktop-database")
    if tool is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([tool, "-q", str(base / "applications")], check=False, capture_output=True, timeout=30)


def install_desktop_entry(command: Sequence[str] | None = None, base: Path | None = None) -> list[Path]:
    """Write the `.desktop` file and icons for the current user; returns the files written."""
    base = base or data_home()
    icon = paths.app_icon_path()
    if not icon.is_file():
        raise FileNotFoundError(f"the app icon is missing: {icon}")
    entry = desktop_file_path(base)
    entry.parent.mkdir(parents=True, exist_ok=True)
    text = desktop_entry_text(command or launcher_command())
    atomic_write_text(entry, text)  # a desktop never reads half a file
    icons = icon_paths(base)
    _write_icons(icon, icons)
    _refresh_mime_cache(base)
    return [entry, *icons]


def uninstall_desktop_entry(base: Path | None = None) -> list[Path]:
    """Remove what `install_desktop_entry` wrote; returns the files that were there."""
    base = base or data_home()
    removed = []
    for path in (desktop_file_path(base), *icon_paths(base)):
        if path.is_file():
            path.unlink()
            removed.append(path)
    _refresh_mime_cache(base)
    return removed
