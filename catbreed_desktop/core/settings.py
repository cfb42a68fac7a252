"""The window's settings, kept as JSON in the user's config folder so they survive a restart.

Unknown keys are ignored and values of the wrong type fall back to their defaults, so an old or
hand-edited file never stops the app from starting; a file that is not JSON at all is kept aside
as `settings.json.corrupt` before the next save replaces it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catbreed_desktop.core.paths import config_dir

SETTINGS_FILE = "settings.json"
ENGINE_CHOICES = ("auto", "tensorrt", "cuda", "cpu")
SORT_MODES = ("move", "copy")
MAX_RECENT_FOLDERS = 10


@dataclass
class Settings:
    """Everything the window remembers between runs."""

    model_path: str = ""  # empty: the default bundle (`paths.default_model_dir()`)
    engine: str = "auto"
    batch_size: int = 8
    thumbnail_size: int = 160
    include_subfolders: bool = True
    confidence_threshold: float = 0.5
    recent_folders: list[str] = field(default_factory=list)
    watched_folders: list[str] = field(default_factory=list)
    sort_target: str = ""
    sort_mode: str = "move"
    auto_sort: bool = False

    def add_recent_folder(self, folder: str | Path) -> None:
        """Put `folder` first in the recent list, without repeats, keeping the list short."""
        text = str(folder)
        self.recent_folders = [text, *[f for f in self.recent_folders if f != text]][:MAX_RECENT_FOLDERS]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Settings:
        """Settings from parsed JSON, keeping each valid value and defaulting the others."""
        settings = cls()
        if not isinstance(data, dict):
            return settings
        for spec in dataclasses.fields(cls):
            if spec.name in data:
                value = _checked(spec.name, data[spec.name], getattr(settings, spec.name))
                setattr(settings, spec.name, value)
        return settings


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def load_settings() -> Settings:
    """The saved settings, or the defaults when there are none or the file is unreadable."""
    path = settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except OSError:
        return Settings()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # Keep the damaged file for the user to look at; the next save would replace it.
        shutil.copyfile(path, path.with_name(SETTINGS_FILE + ".corrupt"))
        return Settings()
    return Settings.from_json(data)


def save_settings(settings: Settings) -> Path:
    """Write the settings atomically (temporary file, then rename) and return the file's path."""
    path = settings_path()
    temporary = path.with_name(SETTINGS_FILE + ".tmp")
    temporary.write_text(json.dumps(settings.to_json(), indent=2), encoding="utf-8")
    os.replace(temporary, path)
    return path


def _checked(name: str, value: Any, default: Any) -> Any:
    """`value` when it has the type (and range) the setting needs, else `default`."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else default
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
            return default
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            return default
        return float(value)
    if isinstance(default, list):
        return [str(v) for v in value if isinstance(v, str)] if isinstance(value, list) else default
    if not isinstance(value, str):
        return default
    if name == "engine" and value not in ENGINE_CHOICES:
        return default
    if name == "sort_mode" and value not in SORT_MODES:
        return default
    return value
