"""The Qt window (PySide6): it presents the core's results and commands it.

Controllers (`classify_controller`, `sort_controller`, `watch_controller`, `review`) own the work
and its state and run background work through the one task runner (`tasks`); the main window
(`main_window`, `layout`, `actions`, `status_bar`) builds the widgets and wires their signals.
"""

APP_TITLE = "CatBreed"
