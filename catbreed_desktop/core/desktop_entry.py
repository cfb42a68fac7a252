"""The freedesktop menu entry: `catbreed-desktop --install-desktop-entry` and its undoing.

Linux desktops list an application, and offer it under "Open with" for image files, when a
`.desktop` file names it in `$XDG_DATA_HOME/applications/` and its icon lies in the hicolor
theme under `$XDG_DATA_HOME/icons/`. Both are written for the current user only; no Qt is needed.

Nothing is written or removed outside the data home, nor through a symbolic link: each file is
written as a new file and renamed into place, and only over a file CatBreed wrote (the entry and the
icons carry a mark); a link or someone else's file at one of these names is left as it is and named.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops
from PIL.PngImagePlugin import PngInfo

from catbreed_desktop.core import paths
from catbreed_desktop.core.errors import CatBreedError

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
_ENTRY_FOLDER = ("applications",)
# The marks by which uninstalling (and installing again) knows a file for CatBreed's own.
_ENTRY_MARK = "X-CatBreed-Installed-By=catbreed-desktop"
_ICON_MARK = ("Software", f"{APP_ID} desktop entry")
# Written before the marks existed, an entry is known by these lines, an icon by its pixels, which a
# newer Pillow may resample a little differently.
_OLDER_ENTRY_LINES = frozenset({f"Icon={APP_ID}", f"StartupWMClass={WM_CLASS}"})
_OLDER_ICON_TOLERANCE = 8
# CatBreed's files are a few kilobytes: anything larger at one of their names is someone else's.
_MAX_OWN_FILE_BYTES = 1024 * 1024
_CLOSE_ON_EXEC = getattr(os, "O_CLOEXEC", 0)
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOSE_ON_EXEC


class DesktopEntryError(CatBreedError):
    """A file or folder of the desktop entry that is not CatBreed's to replace or remove."""


def data_home() -> Path:
    """`$XDG_DATA_HOME`, or `~/.local/share` where it is unset or not absolute (as the spec says)."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".local" / "share"


def desktop_file_path(base: Path | None = None) -> Path:
    """Where the `.desktop` file goes."""
    return (base or data_home()).joinpath(*_ENTRY_FOLDER, f"{APP_ID}.desktop")


def _icon_folder(size: int) -> tuple[str, ...]:
    return ("icons", "hicolor", f"{size}x{size}", "apps")


def icon_paths(base: Path | None = None) -> list[Path]:
    """Where the icon goes, one PNG per size of the hicolor theme."""
    return [(base or data_home()).joinpath(*_icon_folder(size), f"{APP_ID}.png") for size in ICON_SIZES]


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
        _ENTRY_MARK,
    ]
    return "\n".join(lines) + "\n"


def _icon_images(source: Path) -> dict[int, Image.Image]:
    """The app icon at each hicolor size."""
    with Image.open(source) as image:
        icon = image.convert("RGBA")
    return {
        size: icon if icon.size == (size, size) else icon.resize((size, size), Image.Resampling.LANCZOS)
        for size in ICON_SIZES
    }


def _png_bytes(image: Image.Image) -> bytes:
    """The icon as a PNG that carries the mark by which uninstalling knows it for ours."""
    marked = PngInfo()
    marked.add_text(*_ICON_MARK)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True, pnginfo=marked)
    return buffer.getvalue()


def _entry_is_ours(content: bytes) -> bool:
    lines = set(content.decode("utf-8", "replace").splitlines())
    return _ENTRY_MARK in lines or lines >= _OLDER_ENTRY_LINES


def _icon_is_ours(content: bytes, expected: Image.Image | None, size: int) -> bool:
    """A PNG of the right size with our mark, or (written before the mark) showing our icon."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            if image.format != "PNG" or image.size != (size, size):
                return False
            if image.info.get(_ICON_MARK[0]) == _ICON_MARK[1]:
                return True
            if expected is None:
                return False
            difference = ImageChops.difference(image.convert("RGBA"), expected)
    except (OSError, ValueError, SyntaxError):  # Pillow's errors for a damaged PNG
        return False
    return max(difference.tobytes(), default=0) <= _OLDER_ICON_TOLERANCE


@dataclass(frozen=True)
class _Target:
    """One file of the entry: its folder below the data home, its name, its bytes, and how to know it is ours."""

    folder: tuple[str, ...]
    name: str
    content: bytes
    is_ours: Callable[[bytes], bool]

    def path(self, base: Path) -> Path:
        return base.joinpath(*self.folder, self.name)


def _targets(entry_text: str, icons: Mapping[int, Image.Image]) -> list[_Target]:
    """The entry, then one icon per size; a size missing from `icons` gets empty content."""
    targets = [_Target(_ENTRY_FOLDER, f"{APP_ID}.desktop", entry_text.encode("utf-8"), _entry_is_ours)]
    for size in ICON_SIZES:
        image = icons.get(size)
        targets.append(
            _Target(
                _icon_folder(size),
                f"{APP_ID}.png",
                b"" if image is None else _png_bytes(image),
                functools.partial(_icon_is_ours, expected=image, size=size),
            )
        )
    return targets


def _open_folder(base: Path, folder: Sequence[str], create: bool) -> int:
    """A descriptor of the folder `base/folder...`, made where missing when `create` is true.

    Each folder below the data home is opened without following a symbolic link. A folder that is
    a link is followed only where it leads to a folder inside the data home, so nothing is ever
    written or removed outside it. A missing folder (with `create` false) raises FileNotFoundError.
    """
    if create:
        base.mkdir(parents=True, exist_ok=True)
    home = os.path.realpath(base)
    where = home
    descriptor = os.open(home, _FOLDER_FLAGS)
    try:
        for part in folder:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=descriptor)
            shown = os.path.join(where, part)
            mode = os.stat(part, dir_fd=descriptor, follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                where = os.path.realpath(shown)
                if os.path.commonpath([home, where]) != home or not os.path.isdir(where):
                    raise DesktopEntryError(
                        f"{shown} is a symbolic link that does not lead to a folder inside {base}"
                    )
                child = os.open(where, _FOLDER_FLAGS)
            elif stat.S_ISDIR(mode):
                child = os.open(part, _FOLDER_FLAGS | _NO_FOLLOW, dir_fd=descriptor)
                where = shown
            else:
                raise DesktopEntryError(f"{shown} is not a folder")
            os.close(descriptor)
            descriptor = child
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _why_not_ours(folder: int, target: _Target) -> str | None:
    """Why the file at the target's name must be left alone; None where there is none, or it is ours."""
    try:
        mode = os.stat(target.name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    # Non-blocking: should a FIFO take the file's place meanwhile, opening it does not wait for a writer.
    flags = os.O_RDONLY | os.O_NONBLOCK | _NO_FOLLOW | _CLOSE_ON_EXEC
    with os.fdopen(os.open(target.name, flags, dir_fd=folder), "rb") as stream:
        content = stream.read(_MAX_OWN_FILE_BYTES + 1)
    if len(content) > _MAX_OWN_FILE_BYTES or not target.is_ours(content):
        return "was not written by CatBreed"
    return None


def _write_new_file(folder: int, name: str, content: bytes) -> None:
    """Put `content` at `name` in `folder`: written as a new file under a fresh name, then renamed over.

    Creating with O_EXCL and O_NOFOLLOW never writes into an existing file or through a link, and a
    rename replaces the name itself, never what a link there points to.
    """
    temporary = f".{name}.{uuid.uuid4().hex[:12]}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | _CLOSE_ON_EXEC
    descriptor = os.open(temporary, flags, 0o666, dir_fd=folder)  # as open() gives, under the umask
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        raise
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder
        os.fsync(folder)


def _refresh_mime_cache(base: Path) -> None:
    """Rebuild the MIME-type index of "Open with" now; desktops also rebuild it later, so failure is fine."""
    tool = shutil.which("update-desktop-database")
    if tool is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([tool, "-q", str(base / "applications")], check=False, capture_output=True, timeout=30)


def install_desktop_entry(command: Sequence[str] | None = None, base: Path | None = None) -> list[Path]:
    """Write the `.desktop` file and icons for the current user; returns the files written.

    A file at one of the entry's names that is a link or not written by CatBreed stops the install
    with a `DesktopEntryError` before anything is written, and is left as it was.
    """
    base = base or data_home()
    icon = paths.app_icon_path()
    if not icon.is_file():
        raise FileNotFoundError(f"the app icon is missing: {icon}")
    targets = _targets(desktop_entry_text(command or launcher_command()), _icon_images(icon))
    for target in targets:  # all checked first, so that a refusal leaves the menu as it was
        try:
            folder = _open_folder(base, target.folder, create=False)
        except FileNotFoundError:
            continue
        try:
            _refuse_unless_ours(folder, target, base)
        finally:
            os.close(folder)
    for target in targets:
        folder = _open_folder(base, target.folder, create=True)
        try:
            _refuse_unless_ours(folder, target, base)  # again: it may have changed meanwhile
            _write_new_file(folder, target.name, target.content)
        finally:
            os.close(folder)
    _refresh_mime_cache(base)
    return [target.path(base) for target in targets]


def _refuse_unless_ours(folder: int, target: _Target, base: Path) -> None:
    reason = _why_not_ours(folder, target)
    if reason is not None:
        raise DesktopEntryError(
            f"{target.path(base)} {reason}; it was left as it is (move it away to install)"
        )


@dataclass(frozen=True)
class Removal:
    """What uninstalling removed, and the files at the entry's names it left alone, with why."""

    removed: list[Path]
    kept: list[tuple[Path, str]]


def uninstall_desktop_entry(base: Path | None = None) -> Removal:
    """Remove what `install_desktop_entry` wrote, and only that: links and others' files are kept."""
    base = base or data_home()
    icon = paths.app_icon_path()
    # Without the app's icon, icons are known for ours by their mark alone.
    targets = _targets("", _icon_images(icon) if icon.is_file() else {})
    removed: list[Path] = []
    kept: list[tuple[Path, str]] = []
    for target in targets:
        try:
            folder = _open_folder(base, target.folder, create=False)
        except FileNotFoundError:
            continue
        except DesktopEntryError as error:
            kept.append((target.path(base), str(error)))
            continue
        try:
            if not _exists(folder, target.name):
                continue
            reason = _why_not_ours(folder, target)
            if reason is not None:
                kept.append((target.path(base), reason))
                continue
            os.unlink(target.name, dir_fd=folder)  # removes a name; never follows a link
            removed.append(target.path(base))
        finally:
            os.close(folder)
    _refresh_mime_cache(base)
    return Removal(removed, kept)


def _exists(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
