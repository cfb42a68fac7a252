"""Thumbnails decoded off the GUI thread, cached in memory and on disk.

Decoding goes through the core's `load_photo`, so EXIF rotation is applied exactly as the
classifier sees the photo. The disk cache lives in `cache_dir()/thumbnails`, one PNG per photo
and size, named by a hash of the path, modification time and size: an edited photo gets a new
thumbnail and a stale one is never shown. Only photos a view actually paints are requested.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from catbreed_desktop.core.files import atomic_write
from catbreed_desktop.core.paths import cache_dir
from catbreed_desktop.core.photos import load_photo

MEMORY_CACHE_ENTRIES = 3000


def thumbnail_cache_dir() -> Path:
    folder = cache_dir() / "thumbnails"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cache_key(path: Path, size: int) -> str | None:
    """The cache file name for `path` at `size`, or None when the file cannot be looked at."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    text = f"{os.path.abspath(path)}|{info.st_mtime_ns}|{info.st_size}|{size}"
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def make_thumbnail(path: Path, size: int, cache_folder: Path | None) -> QImage:
    """Read a cached thumbnail or decode the photo and cache it; raises PhotoError for bad files."""
    key = cache_key(path, size)
    cached = cache_folder / f"{key}.png" if cache_folder is not None and key else None
    if cached is not None and cached.is_file():
        image = QImage(str(cached))
        if not image.isNull():
            return image

    photo = load_photo(path)
    photo.thumbnail((size, size))
    data = photo.tobytes("raw", "RGB")
    image = QImage(data, photo.width, photo.height, 3 * photo.width, QImage.Format.Format_RGB888).copy()
    if cached is not None:
        # Whole or not at all, without syncing: a lost cache entry is only made again. A failed write
        # only costs the cache.
        with contextlib.suppress(OSError):
            atomic_write(cached, lambda handle: photo.save(handle, "PNG"), durable=False)
    return image


class _Signals(QObject):
    done = Signal(str, int, QImage)
    failed = Signal(str, int, str)


class _ThumbnailJob(QRunnable):
    def __init__(self, path: Path, size: int, cache_folder: Path | None, signals: _Signals) -> None:
        super().__init__()
        self._path, self._size, self._cache_folder, self._signals = path, size, cache_folder, signals

    def run(self) -> None:
        try:
            image = make_thumbnail(self._path, self._size, self._cache_folder)
        except Exception as error:  # any decoder failure is one missing thumbnail, reported
            self._signals.failed.emit(str(self._path), self._size, str(error))
            return
        self._signals.done.emit(str(self._path), self._size, image)


class ThumbnailLoader(QObject):
    """Hands out thumbnails: at once from memory, else later through `ready(path, size)`."""

    ready = Signal(str, int)

    def __init__(self, parent: QObject | None = None, use_disk_cache: bool = True, threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, threads))
        self._memory: OrderedDict[tuple[str, int], QImage] = OrderedDict()
        self._pending: set[tuple[str, int]] = set()
        self._failed: set[tuple[str, int]] = set()
        self._signals = _Signals(self)
        self._signals.done.connect(self._store)
        self._signals.failed.connect(self._forget)
        self._cache_folder = thumbnail_cache_dir() if use_disk_cache else None

    def thumbnail(self, path: Path | str, size: int) -> QImage | None:
        """The thumbnail if it is ready; otherwise start decoding it (once) and return None."""
        key = (str(path), size)
        image = self._memory.get(key)
        if image is not None:
            self._memory.move_to_end(key)
            return image
        if key not in self._pending and key not in self._failed:
            self._pending.add(key)
            self._pool.start(_ThumbnailJob(Path(path), size, self._cache_folder, self._signals))
        return None

    def is_idle(self) -> bool:
        return not self._pending

    def shutdown(self) -> None:
        """Drop queued jobs and wait for running ones, so no thread outlives the window."""
        self._pool.clear()
        self._pool.waitForDone()

    def _store(self, path: str, size: int, image: QImage) -> None:
        key = (path, size)
        self._pending.discard(key)
        self._memory[key] = image
        while len(self._memory) > MEMORY_CACHE_ENTRIES:
            self._memory.popitem(last=False)
        self.ready.emit(path, size)

    def _forget(self, path: str, size: int, reason: str) -> None:
        key = (path, size)
        self._pending.discard(key)
        self._failed.add(key)
        self.ready.emit(path, size)
