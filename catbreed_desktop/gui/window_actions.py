"""Menus, toolbar and status bar of the main window: `ActionsMixin` builds them.

It creates the actions (`add_folder_action`, `sort_action`, `undo_action`, `cancel_action`, ...),
`recent_menu`, `subfolders_box` and the status-bar widgets (`progress`, `rate_label`,
`cancel_button`, `count_label`, `engine_label`). A mixin of `MainWindow`: it relies on what
`MainWindow.__init__` and its other build steps create (`settings`, `watch_dock`, `errors_dock`)
and on the slots of `MainWindow` and its other mixins the actions trigger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QCheckBox, QLabel, QProgressBar, QPushButton, QStyle, QToolBar


class ActionsMixin:
    """Builds the window's actions, menus, toolbar and status bar (part of `MainWindow`)."""

    def _action(
        self, text: str, slot: Callable, shortcut: Any = None, icon: Any = None, tip: str = ""
    ) -> QAction:
        action = QAction(text, self)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda checked=False: slot())
        return action

    def _build_actions(self) -> None:
        pixmap = QStyle.StandardPixmap
        self.add_folder_action = self._action(
            "Add &folder…", self.choose_folder, QKeySequence.StandardKey.Open, pixmap.SP_DirOpenIcon,
            "Add every photo of a folder",
        )  # fmt: skip
        self.add_files_action = self._action(
            "Add &photos…", self.choose_files, "Ctrl+Shift+O", pixmap.SP_FileIcon, "Add photo files"
        )
        self.subfolders_action = QAction("Include sub&folders", self, checkable=True)
        self.subfolders_action.setChecked(self.settings.include_subfolders)
        self.subfolders_action.toggled.connect(self._set_include_subfolders)
        self.open_model_action = self._action(
            "Open &model bundle…", self.choose_model, None, pixmap.SP_DriveHDIcon, "Use another model bundle"
        )
        self.sort_action = self._action(
            "&Sort into folders…", self.open_sort_dialog, "Ctrl+S", pixmap.SP_DialogApplyButton,
            "Move or copy the photos into one folder per breed, after a preview",
        )  # fmt: skip
        self.undo_action = self._action(
            "&Undo last sort", self.undo_last_sort, QKeySequence.StandardKey.Undo, pixmap.SP_ArrowBack,
            "Put the photos of the last sort back where they were",
        )  # fmt: skip
        self.cancel_action = self._action(
            "&Cancel", self.cancel, "Esc", pixmap.SP_BrowserStop, "Stop classifying or sorting"
        )
        self.cancel_action.setEnabled(False)
        self.export_csv_action = self._action("Export corrections as &CSV…", self.choose_csv_export)
        self.export_folders_action = self._action(
            "Export corrections as &folders…", self.choose_folder_export
        )
        self.settings_action = self._action(
            "Se&ttings…",
            self.open_settings,
            QKeySequence.StandardKey.Preferences,
            pixmap.SP_FileDialogDetailedView,
        )
        self.clear_action = self._action(
            "C&lear photos", self.clear_photos, None, pixmap.SP_DialogResetButton
        )
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.watch_action = self.watch_dock.toggleViewAction()
        self.watch_action.setIcon(self.style().standardIcon(pixmap.SP_FileDialogContentsView))
        self.watch_action.setText("&Watched folders")
        self.problems_action = self.errors_dock.toggleViewAction()
        self.problems_action.setIcon(self.style().standardIcon(pixmap.SP_MessageBoxWarning))

        menu = self.menuBar().addMenu("&File")
        menu.addActions([self.add_folder_action, self.add_files_action])
        self.recent_menu = menu.addMenu("&Recent folders")
        menu.addAction(self.subfolders_action)
        menu.addSeparator()
        menu.addActions([self.open_model_action, self.export_csv_action, self.export_folders_action])
        menu.addSeparator()
        menu.addActions([self.clear_action, self.quit_action])
        edit = self.menuBar().addMenu("&Edit")
        edit.addActions([self.undo_action, self.sort_action, self.cancel_action])
        edit.addSeparator()
        edit.addAction(self.settings_action)
        view = self.menuBar().addMenu("&View")
        view.addActions([self.watch_action, self.problems_action])
        self._rebuild_recent_menu()

        toolbar = QToolBar("Main", self)
        toolbar.setObjectName("main-toolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.setMovable(False)
        toolbar.addActions([self.add_folder_action, self.add_files_action])
        self.subfolders_box = QCheckBox("Include subfolders")
        self.subfolders_box.setChecked(self.settings.include_subfolders)
        self.subfolders_box.toggled.connect(self.subfolders_action.setChecked)
        self.subfolders_action.toggled.connect(self.subfolders_box.setChecked)
        toolbar.addWidget(self.subfolders_box)
        toolbar.addSeparator()
        toolbar.addActions([self.sort_action, self.undo_action, self.cancel_action])
        toolbar.addSeparator()
        toolbar.addActions([self.watch_action, self.settings_action])
        self.addToolBar(toolbar)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(240)
        self.progress.hide()
        self.rate_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.count_label = QLabel()
        self.engine_label = QLabel("Engine: loading model…")
        bar.addPermanentWidget(self.rate_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.count_label)
        bar.addPermanentWidget(self.engine_label)
