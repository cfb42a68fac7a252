"""Which files are photos: the suffixes the app decodes, and folders expanded into their photos.

Free of numpy and PIL (`tests/test_layers.py` holds it), so code that only lists photos does not
pay for loading the decoders.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif"}
)


def is_photo_path(path: str | Path) -> bool:
    """True when the file name has a photo suffix we can decode."""
    return Path(path).suffix.lower() in PHOTO_SUFFIXES


FolderErrorCallback = Callable[[Path, str], None]


def iter_photo_paths(
    paths: Iterable[str | Path], recursive: bool = False, on_error: FolderErrorCallback | None = None
) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of photo paths.

    Files named explicitly are kept whatever their suffix (and even when missing), so that a
    mislabelled file is reported by the decoder rather than silently ignored. Folders contribute
    their photo-suffixed files, skipping hidden ones such as macOS `._IMG_0001.jpg` resource forks.
    A folder that cannot be read is passed to `on_error(folder, reason)` and the scan goes on.
    """
    found: dict[Path, Path] = {}  # resolved path -> path as the caller spelled it

    def add(path: Path) -> None:
        try:
            key = path.resolve()
        except (OSError, RuntimeError):  # a link loop: the decoder reports the file itself
            key = Path(os.path.abspath(path))
        found.setdefault(key, path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in _photos_in_folder(path, recursive, on_error):
                add(child)
        else:
            add(path)
    return sorted(found.values())


def photos_in_subfolders(paths: Iterable[str | Path], found: Iterable[Path] = ()) -> int:
    """How many photos the folders among `paths` hold in their sub-folders, besides those in `found`.

    What `iter_photo_paths` without `recursive` leaves out. Paths are compared as spelled (made
    absolute, not resolved), which spares a few system calls per photo over a resolving scan.
    """
    seen = {os.path.abspath(path) for path in found}
    below: set[str] = set()
    for raw in paths:
        folder = Path(raw)
        if folder.is_dir():
            below.update(
                os.path.abspath(child)
                for child in _photos_in_folder(folder, True, None)
                if child.parent != folder
            )
    return len(below - seen)


def _photos_in_folder(folder: Path, recursive: bool, on_error: FolderErrorCallback | None) -> Iterable[Path]:
    """Photo-suffixed, non-hidden regular files of a folder (and its sub-folders when recursive)."""

    def unreadable(error: OSError) -> None:
        if on_error is not None:
            on_error(Path(error.filename or folder), error.strerror or str(error))

    # os.walk goes on past unreadable sub-folders (reporting them through `unreadable`), and does
    # not follow symlinked folders, so a link loop cannot recurse forever.
    for root, folders, files in os.walk(folder, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            child = Path(root) / name
            if not name.startswith(".") and is_photo_path(child) and child.is_file():
                yield child
        if not recursive:
            break
