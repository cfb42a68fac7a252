"""Watching folders for new photos, handed over only once their writing has finished.

A new or changed photo becomes a candidate; a checker thread looks at every candidate each
`check_interval` seconds and hands it over when

- its size and time stamp stayed the same, and no event touched it, for `quiet_period` seconds
  (and at least `stable_checks` checks): a writer that closes the file and opens it again after
  a pause, as cameras writing motion photos do, is caught unless it pauses longer than that; and
- no process has it open for writing. On Linux /proc says so, whoever opened it and whenever
  (see `open_files`); elsewhere, open and close events are counted where the platform reports
  them (inotify does; FSEvents and Windows do not, leaving the quiet period alone to decide).

A writer holding a file open keeps it pending however long it takes. What no check can foresee,
a writer coming back after a longer pause, is left to the sort: a move across file systems
removes the source only if it is unchanged and not open for writing (`fileops.move_file`).

Paths the app itself is about to create or move back (`expect`) and folders it sorts into
(`ignored_folders`) raise nothing, so the app's own moves never come back to it as new photos.
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
from watchdog.observers.api import BaseObserver, ObservedWatch

from catbreed_desktop.core.open_files import open_for_writing
from catbreed_desktop.core.photos import is_photo_path

ReadyCallback = Callable[[list[Path]], None]


@dataclass
class _Candidate:
    """What is known about one file being written."""

    quiet_since: float  # when it was last seen written: an event, a new size or time stamp, a writer
    signature: tuple[int, int] | None = None  # (size, mtime_ns) at the last check
    stable: int = 0  # checks in a row that saw the same signature
    open_handles: int = 0  # opens minus closes seen; where /proc can tell, only a hint


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
        quiet_period: float = 5.0,
    ) -> None:
        if check_interval <= 0 or stable_checks < 1 or quiet_period < 0:
            raise ValueError(
                "check_interval must be positive, stable_checks at least 1 and quiet_period not negative"
            )
        self._on_ready = on_ready
        self._recursive = recursive
        self.check_interval = check_interval
        self.stable_checks = stable_checks
        self.quiet_period = quiet_period
        self._lock = threading.Lock()
        self._candidates: dict[Path, _Candidate] = {}
        # Opens of photos that are not candidates (yet): an existing file opened to be rewritten
        # in place is written before its first modification event makes it one.
        self._opens: dict[Path, int] = {}
        self._expected: dict[Path, float] = {}
        self._ignored_folders: tuple[Path, ...] = ()
        self._watches: dict[Path, ObservedWatch | None] = {}
        self._observer: BaseObserver | None = None
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
            self._opens = {p: n for p, n in self._opens.items() if not _inside(p, path)}
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
                self._opens.pop(absolute, None)

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
            self._opens.clear()

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
        now = time.monotonic()
        with self._lock:
            if isinstance(event, FileMovedEvent):
                self._moved(Path(os.fsdecode(event.src_path)), Path(os.fsdecode(event.dest_path)), now)
                return
            path = Path(os.fsdecode(event.src_path))
            if isinstance(event, FileDeletedEvent):
                self._candidates.pop(path, None)
                self._opens.pop(path, None)
                return
            known = self._candidates.get(path)
            if known is None:
                if isinstance(event, (FileCreatedEvent, FileModifiedEvent)) and self._wanted(path):
                    known = self._candidates[path] = _Candidate(now, open_handles=self._opens.pop(path, 0))
                else:
                    self._count_open(path, event)
                    return
            if isinstance(event, FileOpenedEvent):
                known.open_handles += 1
                known.quiet_since = now  # perhaps a writer coming back
            elif isinstance(event, FileClosedNoWriteEvent):
                known.open_handles = max(0, known.open_handles - 1)
            elif isinstance(event, (FileClosedEvent, FileCreatedEvent, FileModifiedEvent)):
                if isinstance(event, FileClosedEvent):
                    known.open_handles = max(0, known.open_handles - 1)
                known.quiet_since = now
                known.stable = 0

    def _moved(self, source: Path, destination: Path, now: float) -> None:
        """A rename: the candidate (and its writer's open handles) go with the file (lock held)."""
        before = self._candidates.pop(source, None)
        handles = (before.open_handles if before else 0) + self._opens.pop(source, 0)
        self._candidates.pop(destination, None)  # a file renamed over it is another file
        self._opens.pop(destination, None)
        if self._wanted(destination):
            self._candidates[destination] = _Candidate(now, open_handles=handles)
        elif handles:
            self._opens[destination] = handles

    def _count_open(self, path: Path, event: FileSystemEvent) -> None:
        """Opens and closes of a photo that is no candidate (lock held): most are readers."""
        if isinstance(event, FileOpenedEvent):
            if self._wanted(path):
                self._opens[path] = self._opens.get(path, 0) + 1
        elif isinstance(event, (FileClosedEvent, FileClosedNoWriteEvent)) and path in self._opens:
            self._opens[path] -= 1
            if self._opens[path] <= 0:
                del self._opens[path]

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
        quiet: list[tuple[Path, _Candidate, float]] = []
        for path, candidate in candidates:
            signature = _signature(path)
            with self._lock:
                if self._candidates.get(path) is not candidate:
                    continue
                if signature is None:
                    del self._candidates[path]  # gone, or not a regular file
                    continue
                if signature != candidate.signature:
                    candidate.signature, candidate.stable, candidate.quiet_since = signature, 0, now
                    continue
                candidate.stable += 1
                if (
                    candidate.stable >= self.stable_checks
                    and now - candidate.quiet_since >= self.quiet_period
                    and signature[0] > 0
                ):
                    quiet.append((path, candidate, candidate.quiet_since))
        if not quiet:
            return []
        # One pass over /proc for all quiet candidates; it is the costly part of a check.
        writing = open_for_writing(path for path, _, _ in quiet)
        ready: list[Path] = []
        with self._lock:
            for path, candidate, quiet_since in quiet:
                if self._candidates.get(path) is not candidate or candidate.quiet_since != quiet_since:
                    continue  # an event came meanwhile
                held = path in writing if writing is not None else candidate.open_handles > 0
                if held:
                    # Ask /proc again only after another quiet period (or the writer's close event).
                    candidate.quiet_since = time.monotonic()
                    continue
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
