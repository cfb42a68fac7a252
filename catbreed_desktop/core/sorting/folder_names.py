"""Names on disk: breed labels made into safe folder names, collision names, staying inside the target."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

UNSURE_FOLDER = "Unsure"
NOT_CAT_FOLDER = "Not a cat"
UNKNOWN_FOLDER = "Unknown breed"
SPECIAL_FOLDERS = (UNSURE_FOLDER, NOT_CAT_FOLDER, UNKNOWN_FOLDER)
MAX_FOLDER_NAME = 80
# The longest file name, in bytes, of every common file system (ext4, NTFS in UTF-16 units, APFS).
MAX_NAME_BYTES = 255

# Characters Windows refuses in names, plus both path separators so no label can nest folders.
_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{stem}{digit}" for stem in ("COM", "LPT") for digit in "123456789¹²³"
}


def safe_folder_name(label: str) -> str:
    """Turn a breed label into a folder name that is valid everywhere and cannot leave its parent.

    Separators and characters Windows forbids become "_", control characters and surrounding dots
    and spaces go, reserved Windows device names get "_" after their stem, the length is bounded, and an
    empty result becomes "Unknown breed".
    """
    text = unicodedata.normalize("NFC", str(label))
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = _FORBIDDEN.sub("_", text)
    text = " ".join(text.split())
    text = text.strip(" .")
    if len(text) > MAX_FOLDER_NAME:
        text = text[:MAX_FOLDER_NAME].rstrip(" .")
    if not text or set(text) <= {"_", ".", " "}:
        return UNKNOWN_FOLDER
    stem, dot, rest = text.partition(".")
    if stem.rstrip().upper() in _WINDOWS_RESERVED:
        # Windows ignores the extension ("NUL.txt" is the device too), so the stem itself must change.
        text = f"{stem.rstrip()}_{dot}{rest}"
    if name_key(text) in {name_key(special) for special in SPECIAL_FOLDERS}:
        # A breed called "Unsure" must not share the folder of the photos the model was unsure of.
        text = f"{text} (breed)"
    return text


def truncate_to_bytes(text: str, max_bytes: int) -> str:
    """The longest start of `text` whose file-system encoding fits in `max_bytes`, cut between characters."""
    size = 0
    for index, character in enumerate(text):
        size += len(os.fsencode(character))
        if size > max_bytes:
            return text[:index]
    return text


def collision_names(original: Path) -> Iterator[Path]:
    """The names to try, in order, for a file called like `original`: itself, then "name (2).jpg", ..."""
    yield original
    stem, suffix = original.stem, original.suffix
    number = 2
    while True:
        # A name near the limit is shortened, never pushed over it by " (2)".
        mark = f" ({number}){suffix}"
        short_stem = truncate_to_bytes(stem, MAX_NAME_BYTES - len(os.fsencode(mark)))
        yield original.with_name(f"{short_stem}{mark}")
        number += 1


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path`, once links and ".." are resolved, lies inside `folder`."""
    resolved_folder = folder.resolve()
    resolved = path.resolve()
    return resolved != resolved_folder and resolved.is_relative_to(resolved_folder)


def name_key(name: str) -> str:
    """How a file system that ignores case and normalisation (Windows, macOS) compares names."""
    return unicodedata.normalize("NFC", name).casefold()
