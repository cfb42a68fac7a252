"""Watching folders for new photos, handed over only once their writing has finished.

A new or changed photo becomes a candidate; a checker thread looks at every candidate each
`check_interval` seconds and hands it over when

- a close-after-write was seen (inotify's IN_CLOSE_WRITE, watchdog's `FileClosedEvent`), no
  writer still holds the file open, and its size and time stamp at the next check are those it
  had when it was closed; or
- its size and time stamp stayed the same over `stable_checks` checks in a row (for platforms
  and network shares that report no close events) and no writer is known to hold it open.

So a half-copied file is never handed over while its writer is still at work. Paths the app
itself is about to create or move back (`expect`) and folders it sorts into (`ignored_folders`)
raise nothing, so the app's own moves never come back to it as new photos.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from catbreed_desktop.core.imaging import is_photo_path

ReadyCallback = Callable[[list[Path]], None]


@dataclass
class _Candidate:
    """What is known about one file being written."""

    signature: tuple[int, int] | None = None  # (size, mtime_ns) at the last check
    stable: int = 0  # checks in a row that saw the same signature
    closed_signature: tuple[int, int] | None = None  # at the last close-after-write
    open_handles: int = 0
    first_seen: float = 0.0


class FolderWatcher:
    """Watches folders (and their sub-folders) and calls `on_ready(paths)` for finished new photos.

    `on_ready` runs on the watcher's own thread; a GUI must pass the paths on to its own thread.
    """

    def __init__(
        self,
        on_ready: ReadyCallback,
        *,
        recursive: bool = True,
        check_interval: float = 0.5,
        stable_checks: int = 2,
        open_wait_limit: float = 60.0,
    ) -> None:
        if check_interval <= 0 or stable_checks < 1:
            raise ValueError("check_interval must be positive and stable_checks at least 1")
        self._on_ready = on_ready
        self._recursive = recursive
        self.check_interval = check_interval
        self.stable_checks = stable_checks
        # A writer whose close event was missed must not hold a finished photo back for ever.
        self.open_wait_limit = open_wait_limit
        self._lock = threading.Lock()
        self._candidates: dict[Path, _Candidate] = {}
        self._expected: dict[Path, float] = {}
        self._ignored_folders: tuple[Path, ...] = ()
        self._watches: dict[Path, ObservedWatch | None] = {}
        self._observer: Observer | None = None
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None
        self._handler = _EventHandler(self)

    # --- configuration -------------------------------------------------------------------------

    @property
    def folders(self) -> list[Path]:
        with self._lock:
            return list(self._watches)

    @property
    def running(self) -> bool:
        return self._observer is not None

    def add_folder(self, folder: str | Path) -> Path:
        """Start watching `folder`; raises NotADirectoryError when it is not an existing folder."""
        path = Path(os.path.abspath(Path(folder).expanduser()))
        if not path.is_dir():
            raise NotADirectoryError(f"cannot watch {path}: it is not an existing folder")
        with self._lock:
            if path in self._watches:
                return path
            self._watches[path] = None  # scheduled below, or when the watcher starts
        if self._observer is not None:
            self._schedule(path)
        return path

    def remove_folder(self, folder: str | Path) -> None:
        path = Path(os.path.abspath(Path(folder).expanduser()))
        with self._lock:
            watch = self._watches.pop(path, None)
            self._candidates = {p: c for p, c in self._candidates.items() if not _inside(p, path)}
        if watch is not None and self._observer is not None:
            self._observer.unschedule(watch)

    def set_ignored_folders(self, folders: Iterable[str | Path]) -> None:
        """Folders whose events are ignored, such as the sort target inside a watched folder."""
        with self._lock:
            self._ignored_folders = tuple(Path(os.path.abspath(Path(f).expanduser())) for f in folders if f)

    def expect(self, paths: Iterable[str | Path], seconds: float = 60.0) -> None:
        """Ignore events on these paths for a while: the app itself is about to write them."""
        until = time.monotonic() + seconds
        with self._lock:
            for path in paths:
                absolute = Path(os.path.abspath(path))
                self._expected[absolute] = until
                self._candidates.pop(absolute, None)

    def pending(self) -> list[Path]:
        """Photos seen but not yet handed over (still being written, or not yet checked)."""
        with self._lock:
            return list(self._candidates)

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._observer is not None:
            return
        self._stop.clear()
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        for folder in self.folders:
            self._schedule(folder)
        self._checker = threading.Thread(target=self._check_loop, name="catbreed-watch-check", daemon=True)
        self._checker.start()

    def stop(self) -> None:
        """Stop watching and wait for the watcher's threads to end."""
        observer, checker = self._observer, self._checker
        self._observer, self._checker = None, None
        self._stop.set()
        if observer is not None:
            observer.stop()
            observer.join()
        if checker is not None:
            checker.join()
        with self._lock:
            self._watches = dict.fromkeys(self._watches)
            self._candidates.clear()

    def __enter__(self) -> FolderWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _schedule(self, folder: Path) -> None:
        observer = self._observer
        if observer is None:
            return
        watch = observer.schedule(self._handler, str(folder), recursive=self._recursive)
        with self._lock:
            if folder in self._watches:
                self._watches[folder] = watch
                return
        observer.unschedule(watch)  # removed meanwhile

    # --- events (observer thread) ----------------------------------------------------------------

    def _wanted(self, path: Path) -> bool:
        """A photo that is not hidden, not the app's own, and not in an ignored folder (lock held)."""
        if not is_photo_path(path) or path.name.startswith("."):
            return False
        until = self._expected.get(path)
        if until is not None:
            if time.monotonic() < until:
                return False
            del self._expected[path]
        return not any(path == f or _inside(path, f) for f in self._ignored_folders)

    def handle(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        with self._lock:
            if isinstance(event, FileMovedEvent):
                self._candidates.pop(Path(os.fsdecode(event.src_path)), None)
                destination = Path(os.fsdecode(event.dest_path))
                if self._wanted(destination):
                    # A rename is atomic: the file is complete unless still open for writing.
                    candidate = self._candidates.setdefault(
                        destination, _Candidate(first_seen=time.monotonic())
                    )
                    candidate.closed_signature = _signature(destination)
                return
            path = Path(os.fsdecode(event.src_path))
            if isinstance(event, FileDeletedEvent):
                self._candidates.pop(path, None)
                return
            known = self._candidates.get(path)
            if isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
                if known is None:
                    if not self._wanted(path):
                        return
                    known = self._candidates.setdefault(path, _Candidate(first_seen=time.monotonic()))
            elif known is None:
                return  # opening or closing a file that is not being written: someone reading it
            if isinstance(event, FileClosedNoWriteEvent):
                known.open_handles = max(0, known.open_handles - 1)
            elif isinstance(event, FileOpenedEvent):
                known.open_handles += 1
            elif isinstance(event, FileClosedEvent):
                known.open_handles = max(0, known.open_handles - 1)
                known.closed_signature = _signature(path)
            elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
                known.closed_signature = None  # written again since the last close
                known.stable = 0

    # --- checks (checker thread) -------------------------------------------------------------------

    def _check_loop(self) -> None:
        while not self._stop.wait(self.check_interval):
            ready = self.check_now()
            if ready and not self._stop.is_set():
                try:
                    self._on_ready(ready)
                except Exception:  # the receiver's bug must not end the watching
                    import logging

                    logging.getLogger(__name__).exception("the new-photo callback failed")

    def check_now(self) -> list[Path]:
        """Look at every candidate once; return (and forget) those whose writing has finished."""
        now = time.monotonic()
        with self._lock:
            candidates = list(self._candidates.items())
        ready: list[Path] = []
        for path, candidate in candidates:
            signature = _signature(path)
            with self._lock:
                if self._candidates.get(path) is not candidate:
                    continue
                if signature is None:
                    del self._candidates[path]  # gone, or not a regular file
                    continue
                candidate.stable = candidate.stable + 1 if signature == candidate.signature else 0
                candidate.signature = signature
                writer_gone = candidate.open_handles == 0 or now - candidate.first_seen > self.open_wait_limit
                closed_and_settled = candidate.closed_signature == signature
                settled = candidate.stable >= self.stable_checks and signature[0] > 0
                if writer_gone and (closed_and_settled or settled):
                    del self._candidates[path]
                    ready.append(path)
        return ready


class _EventHandler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        super().__init__()
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher.handle(event)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return info.st_size, info.st_mtime_ns


def _inside(path: Path, folder: Path) -> bool:
    return path.is_relative_to(folder) and path != folder
