"""The Qt window (PySide6): presents the core's results and commands it; owns no logic of its own."""

APP_TITLE = "CatBreed"
