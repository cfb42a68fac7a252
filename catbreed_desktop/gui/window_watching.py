"""Watched folders in the main window: `WatchingMixin`.

It keeps the folder watcher, the settings and the watch panel in step, and adds photos that
arrive in watched folders. A mixin of `MainWindow`: it relies on attributes `MainWindow.__init__`
creates (`settings`, `watcher`, `watch_panel`, `watch_dock`, `photos`, `_queue`, `_closed`) and
on its `_report`, `_save_settings` and `_start_classification`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from catbreed_desktop.gui import APP_TITLE


class WatchingMixin:
    """Watched folders, auto-sort target and photos arriving from the watcher (part of `MainWindow`)."""

    def _restore_watching(self) -> None:
        folders = []
        for folder in self.settings.watched_folders:
            try:
                folders.append(str(self.watcher.add_folder(folder)))
            except NotADirectoryError as error:
                self._report([(None, f"{error}; it is no longer watched")])
        self.settings.watched_folders = folders
        self._ignore_target(self.settings.sort_target)
        self.watcher.start()
        self._show_watch_state()
        if folders:
            self.watch_dock.show()

    def add_watch_folder(self, folder: str | Path) -> None:
        try:
            path = self.watcher.add_folder(folder)
        except NotADirectoryError as error:
            QMessageBox.warning(self, APP_TITLE, str(error))
            return
        if str(path) not in self.settings.watched_folders:
            self.settings.watched_folders.append(str(path))
        self._save_settings()
        self._show_watch_state()
        self.watch_dock.show()

    def remove_watch_folder(self, folder: str | Path) -> None:
        self.watcher.remove_folder(folder)
        self.settings.watched_folders = [f for f in self.settings.watched_folders if f != str(folder)]
        self._save_settings()
        self._show_watch_state()

    def set_auto_sort(self, enabled: bool) -> None:
        self.settings.auto_sort = bool(enabled)
        self._save_settings()
        self._show_watch_state()

    def set_sort_target(self, target: str) -> None:
        self.settings.sort_target = str(target)
        self._ignore_target(target)
        self._save_settings()
        self._show_watch_state()

    def _ignore_target(self, target: str | Path) -> None:
        if target:
            self.watcher.set_ignored_folders([target])

    def _show_watch_state(self) -> None:
        self.watch_panel.show_state(
            self.settings.watched_folders, self.settings.auto_sort, self.settings.sort_target
        )

    def _on_watched_photos(self, paths: list[Path]) -> None:
        if self._closed:
            return
        new = self.photos.add_paths(paths, from_watch=True)
        if new:
            self.statusBar().showMessage(f"{len(new)} new photos in watched folders", 4000)
        self._queue.extend(new)
        self._start_classification()
