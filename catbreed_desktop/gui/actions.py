"""Every action of the window, built by one function, and the menus and toolbar that show them.

`build_actions` makes each QAction once, with its text, shortcut, icon and tip, connected to the
slot `ActionSlots` names; `build_menus` and `build_toolbar` only place them. Whether an action is
enabled is the window's business (it follows the controllers' signals).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QCheckBox, QDockWidget, QMainWindow, QMenu, QStyle, QToolBar

# Preferences has no standard key on Linux and Windows; Ctrl+, is what desktop apps there use.
SETTINGS_FALLBACK_SHORTCUT = "Ctrl+,"


@dataclass(frozen=True)
class ActionSlots:
    """What each action does: a callable taking no argument (what it returns is not used)."""

    add_folder: Callable[[], object]
    add_files: Callable[[], object]
    set_include_subfolders: Callable[[bool], None]
    open_model: Callable[[], object]
    sort: Callable[[], object]
    undo: Callable[[], object]
    classify_again: Callable[[], object]
    cancel: Callable[[], object]
    export_csv: Callable[[], object]
    export_folders: Callable[[], object]
    settings: Callable[[], object]
    clear: Callable[[], object]
    quit: Callable[[], object]


@dataclass(frozen=True)
class Actions:
    """The window's actions."""

    add_folder: QAction
    add_files: QAction
    include_subfolders: QAction
    open_model: QAction
    sort: QAction
    undo: QAction
    classify_again: QAction
    cancel: QAction
    export_csv: QAction
    export_folders: QAction
    settings: QAction
    clear: QAction
    quit: QAction
    watch: QAction  # shows or hides the watched folders
    problems: QAction  # shows or hides the Problems list


def build_actions(
    window: QMainWindow,
    slots: ActionSlots,
    include_subfolders: bool,
    watch_dock: QDockWidget,
    problems_dock: QDockWidget,
) -> Actions:
    """Every action of the window, connected to `slots`."""
    style = window.style()
    pixmap = QStyle.StandardPixmap

    def action(
        text: str,
        slot: Callable[[], object],
        shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
        icon: QStyle.StandardPixmap | None = None,
        tip: str = "",
    ) -> QAction:
        made = QAction(text, window)
        if icon is not None:
            made.setIcon(style.standardIcon(icon))
        if shortcut is not None:
            made.setShortcut(QKeySequence(shortcut))
        if tip:
            made.setStatusTip(tip)
            made.setToolTip(tip)
        made.triggered.connect(lambda checked=False: slot())
        return made

    subfolders = QAction("Include sub&folders", window, checkable=True)
    subfolders.setChecked(include_subfolders)
    subfolders.toggled.connect(slots.set_include_subfolders)
    settings = action(
        "Se&ttings…", slots.settings, QKeySequence.StandardKey.Preferences, pixmap.SP_FileDialogDetailedView,
        "Model, engine, batch size, thumbnails",
    )  # fmt: skip
    if settings.shortcut().isEmpty():
        settings.setShortcut(QKeySequence(SETTINGS_FALLBACK_SHORTCUT))
    watch = watch_dock.toggleViewAction()
    watch.setIcon(style.standardIcon(pixmap.SP_FileDialogContentsView))
    watch.setText("&Watched folders")
    problems = problems_dock.toggleViewAction()
    problems.setIcon(style.standardIcon(pixmap.SP_MessageBoxWarning))
    actions = Actions(
        add_folder=action(
            "Add &folder…",
            slots.add_folder,
            QKeySequence.StandardKey.Open,
            pixmap.SP_DirOpenIcon,
            "Add every photo of a folder",
        ),  # fmt: skip
        add_files=action(
            "Add &photos…", slots.add_files, "Ctrl+Shift+O", pixmap.SP_FileIcon, "Add photo files"
        ),
        include_subfolders=subfolders,
        open_model=action(
            "Open &model bundle…", slots.open_model, None, pixmap.SP_DriveHDIcon, "Use another model bundle"
        ),
        sort=action(
            "&Sort into folders…",
            slots.sort,
            "Ctrl+S",
            pixmap.SP_DialogApplyButton,
            "Move or copy the photos into one folder per breed, after a preview",
        ),  # fmt: skip
        undo=action(
            "&Undo last sort",
            slots.undo,
            QKeySequence.StandardKey.Undo,
            pixmap.SP_ArrowBack,
            "Put the photos of the last sort back where they were",
        ),  # fmt: skip
        classify_again=action(
            "Classify &again",
            slots.classify_again,
            "Ctrl+R",
            pixmap.SP_BrowserReload,
            "Classify the photos that are not classified (after a Cancel, say)",
        ),  # fmt: skip
        cancel=action("&Cancel", slots.cancel, "Esc", pixmap.SP_BrowserStop, "Stop classifying or sorting"),
        export_csv=action("Export corrections as &CSV…", slots.export_csv),
        export_folders=action("Export corrections as &folders…", slots.export_folders),
        settings=settings,
        clear=action("C&lear photos", slots.clear, None, pixmap.SP_DialogResetButton),
        quit=action("&Quit", slots.quit, QKeySequence.StandardKey.Quit),
        watch=watch,
        problems=problems,
    )
    for idle in (actions.cancel, actions.undo, actions.classify_again):
        idle.setEnabled(False)  # until there is something to cancel, undo or classify again
    return actions


def build_menus(window: QMainWindow, actions: Actions) -> QMenu:
    """The menu bar; returns the *Recent folders* menu, which the window fills."""
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addActions([actions.add_folder, actions.add_files])
    recent = file_menu.addMenu("&Recent folders")
    file_menu.addAction(actions.include_subfolders)
    file_menu.addSeparator()
    file_menu.addActions([actions.open_model, actions.export_csv, actions.export_folders])
    file_menu.addSeparator()
    file_menu.addActions([actions.clear, actions.quit])
    edit = bar.addMenu("&Edit")
    edit.addActions([actions.undo, actions.sort, actions.classify_again, actions.cancel])
    edit.addSeparator()
    edit.addAction(actions.settings)
    view = bar.addMenu("&View")
    view.addActions([actions.watch, actions.problems])
    return recent


def build_toolbar(window: QMainWindow, actions: Actions) -> QCheckBox:
    """The toolbar; returns its *Include subfolders* box, which mirrors the menu's action."""
    toolbar = QToolBar("Main", window)
    toolbar.setObjectName("main-toolbar")
    toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    toolbar.setMovable(False)
    toolbar.addActions([actions.add_folder, actions.add_files])
    box = QCheckBox("Include subfolders")
    box.setChecked(actions.include_subfolders.isChecked())
    box.toggled.connect(actions.include_subfolders.setChecked)
    actions.include_subfolders.toggled.connect(box.setChecked)
    toolbar.addWidget(box)
    toolbar.addSeparator()
    toolbar.addActions([actions.sort, actions.undo, actions.cancel])
    toolbar.addSeparator()
    toolbar.addActions([actions.watch, actions.settings])
    window.addToolBar(toolbar)
    return box
