"""Watched folders: `WatchController` keeps the core's folder watcher, the settings and the watch panel in step.

It owns the `FolderWatcher` (and its threads), brings the photos it finds to the GUI thread
(`photos_arrived`), and keeps the watched folders, auto-sort switch, target and auto-sort mode in
the settings; `state_changed` gives the panel what to show. The folder auto-sort files into is
never watched for new photos, and photos the app moves back (undo) are announced to the watcher
first, so the app's own moves never come back as new photos.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from catbreed_desktop.core.printable import printable
from catbreed_desktop.core.settings import Settings
from catbreed_desktop.core.sorting.plan import MODES, MOVE, SortMode
from catbreed_desktop.core.watching import FolderWatcher

WatcherFactory = Callable[[Callable[[list[Path]], None]], FolderWatcher]


@dataclass(frozen=True)
class WatchState:
    """What the watch panel shows."""

    folders: tuple[str, ...]
    auto_sort: bool
    target: str
    mode: SortMode  # what auto-sort does


def recursive_watcher(on_ready: Callable[[list[Path]], None]) -> FolderWatcher:
    return FolderWatcher(on_ready, recursive=True)


class WatchController(QObject):
    """Watched folders and the auto-sort options; see the module's docstring."""

    photos_arrived = Signal(object)  # list[Path] of finished new photos, on the GUI thread
    state_changed = Signal(object)  # WatchState
    problems = Signal(object)  # list[(Path | None, str)]
    settings_changed = Signal()
    _found = Signal(object)  # list[Path], emitted on the watcher's thread

    def __init__(
        self,
        settings: Settings,
        make_watcher: WatcherFactory = recursive_watcher,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        # The watcher calls back on its own thread; the signal carries the paths to this object's thread.
        self.watcher = make_watcher(self._found.emit)
        self._found.connect(self._arrived)
        self._closed = False

    def state(self) -> WatchState:
        s = self.settings
        return WatchState(tuple(s.watched_folders), s.auto_sort, s.sort_target, s.auto_sort_mode)

    def start(self) -> None:
        """Watch the folders of the settings; a folder that is gone is reported and forgotten."""
        folders, problems = [], []
        for folder in self.settings.watched_folders:
            try:
                folders.append(str(self.watcher.add_folder(folder)))
            except NotADirectoryError as error:
                problems.append((None, f"{error}; it is no longer watched"))
        if problems:
            self.problems.emit(problems)
        if folders != self.settings.watched_folders:
            self.settings.watched_folders = folders
            self.settings_changed.emit()
        self.ignore_target(self.settings.sort_target)
        self.watcher.start()
        self.state_changed.emit(self.state())

    def add_folder(self, folder: str | Path) -> str | None:
        """Watch `folder`; the reason in words when it cannot be watched, else None."""
        try:
            path = self.watcher.add_folder(folder)
        except NotADirectoryError as error:
            return str(error)
        if str(path) not in self.settings.watched_folders:
            self.settings.watched_folders.append(str(path))
        self._changed()
        return None

    def remove_folder(self, folder: str | Path) -> None:
        self.watcher.remove_folder(folder)
        self.settings.watched_folders = [f for f in self.settings.watched_folders if f != str(folder)]
        self._changed()

    def set_auto_sort(self, enabled: bool) -> None:
        self.settings.auto_sort = bool(enabled)
        self._changed()

    def set_target(self, target: str | Path) -> None:
        self.settings.sort_target = str(target)
        self.ignore_target(target)
        self._changed()

    def set_mode(self, mode: str) -> None:
        """Whether auto-sort moves or copies; kept apart from the Sort dialog's choice."""
        if mode not in MODES:
            raise ValueError(f"unknown sort mode {mode!r}; use one of {', '.join(MODES)}")
        self.settings.auto_sort_mode = mode
        self._changed()

    def ignore_target(self, target: str | Path) -> None:
        """Never take photos in `target` (where sorts file them) for new ones."""
        if target:
            self.watcher.set_ignored_folders([target])

    def expect(self, paths: Iterable[Path]) -> None:
        """The app is about to put these photos back (undo): their arrival is not news. Any thread."""
        self.watcher.expect(paths)

    def describe(self) -> str:
        """The panel's sentence about what happens to new photos."""
        state = self.state()
        count = len(state.folders)
        if not count:
            return "Not watching any folder."
        watching = f"Watching {count} folder{'s' if count != 1 else ''}"
        if state.auto_sort and state.target:
            verb = "moved" if state.mode == MOVE else "copied"
            return f"{watching}; new photos are {verb} into {printable(state.target)} once classified."
        return f"{watching}; new photos are added to the grid."

    def stop(self) -> None:
        """Stop watching and join the watcher's threads."""
        self._closed = True
        self.watcher.stop()

    def _arrived(self, paths: list[Path]) -> None:
        if not self._closed and paths:
            self.photos_arrived.emit(paths)

    def _changed(self) -> None:
        self.settings_changed.emit()
        self.state_changed.emit(self.state())
