"""The window's settings, kept as JSON in the user's config folder so they survive a restart.

Each number's allowed range is defined once, in `RANGES`: the loader checks saved values against
it and the settings dialog builds its spin boxes from it, so the two cannot disagree. Unknown keys
are ignored and values of the wrong type or out of range fall back to their defaults, so an old or
hand-edited file never stops the app from starting; a file that is not JSON at all is kept aside
as `settings.json.corrupt` before the next save replaces it.

Files carry a `schema_version`. A file without one is version 1 (written before versions existed)
and is migrated on load (`_MIGRATIONS`), so a setting that changes meaning keeps what the person
chose; a file from a newer version keeps every field this version knows.

A few numbers may be "not set" (`OPTIONAL_NUMBERS`), stored as JSON null: the unsure threshold is
the model bundle's recommendation until the person picks one, so only a choice they made is kept.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catbreed_desktop.core.engines.names import AUTO, PREFERENCES
from catbreed_desktop.core.files import atomic_write_text
from catbreed_desktop.core.paths import config_dir
from catbreed_desktop.core.sorting.plan import MODES, MOVE

SETTINGS_FILE = "settings.json"
MAX_RECENT_FOLDERS = 10
# 2: auto-sort has its own move/copy choice (`auto_sort_mode`), shown in the watch panel; version 1
# auto-sorted with whatever the last Sort dialog chose.
# 3: `confidence_threshold` may be null, "use the model bundle's recommendation"; version 2 always
# wrote a number, 0.5 unless the person moved the slider.
SCHEMA_VERSION = 3
# What versions 1 and 2 wrote for a threshold nobody had chosen.
_OLD_DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class NumberRange:
    """The values a numeric setting may take, and the step its spin box or slider moves by."""

    minimum: float
    maximum: float
    step: float = 1

    def contains(self, value: float) -> bool:
        return self.minimum <= value <= self.maximum

    def clamp(self, value: float) -> float:
        return min(max(value, self.minimum), self.maximum)


# The one definition of every numeric setting's range (the dialog's spin boxes use it too).
RANGES: dict[str, NumberRange] = {
    "batch_size": NumberRange(1, 256),
    "thumbnail_size": NumberRange(64, 512, step=16),
    "confidence_threshold": NumberRange(0.0, 1.0, step=0.05),
}
# Numeric settings that may be None, "not set": their default is worked out where they are used.
OPTIONAL_NUMBERS = frozenset({"confidence_threshold"})


@dataclass
class Settings:
    """Everything the window remembers between runs."""

    model_path: str = ""  # empty: the default bundle (`paths.default_model_dir()`)
    engine: str = AUTO
    triton_server: str = ""  # the Triton server's URL, used when `engine` is "triton"
    batch_size: int = 8
    thumbnail_size: int = 160
    include_subfolders: bool = True
    # Photos below it are unsure. None: the loaded bundle's recommendation (`ModelBundle.default_min_confidence`).
    confidence_threshold: float | None = None
    recent_folders: list[str] = field(default_factory=list)
    watched_folders: list[str] = field(default_factory=list)
    sort_target: str = ""
    sort_mode: str = MOVE  # what the Sort dialog proposes
    auto_sort: bool = False
    auto_sort_mode: str = MOVE  # what auto-sort of watched folders does
    learn_from_corrections: bool = True  # the personal layer adjusts the answers to the person's corrections
    schema_version: int = SCHEMA_VERSION

    def add_recent_folder(self, folder: str | Path) -> None:
        """Put `folder` first in the recent list, without repeats, keeping the list short."""
        text = str(folder)
        self.recent_folders = [text, *[f for f in self.recent_folders if f != text]][:MAX_RECENT_FOLDERS]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"schema_version": SCHEMA_VERSION}

    @classmethod
    def from_json(cls, data: Any) -> Settings:
        """Settings from parsed JSON of any schema version, keeping each valid value and defaulting the others."""
        settings = cls()
        if not isinstance(data, dict):
            return settings
        data = migrated(data)
        for spec in dataclasses.fields(cls):
            if spec.name in data and spec.name != "schema_version":
                value = _checked(spec.name, data[spec.name], getattr(settings, spec.name))
                setattr(settings, spec.name, value)
        return settings


def migrated(data: dict[str, Any]) -> dict[str, Any]:
    """`data` brought from its schema version (1 when it names none) to `SCHEMA_VERSION`."""
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        version = 1
    data = dict(data)
    while version < SCHEMA_VERSION:
        data = _MIGRATIONS[version](data)
        version += 1
    data["schema_version"] = max(version, SCHEMA_VERSION)
    return data


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    # Version 1 auto-sorted with the Sort dialog's mode; keep doing what the person saw happen.
    data.setdefault("auto_sort_mode", data.get("sort_mode", MOVE))
    # Version 1 accepted any size from 1 to 4096: bring such values into today's range, not to the default.
    for name in ("batch_size", "thumbnail_size"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096:
            data[name] = int(RANGES[name].clamp(value))
    return data


def _from_version_2(data: dict[str, Any]) -> dict[str, Any]:
    # Version 2 saved the default 0.5 for everyone who never touched the slider; read it as "not set",
    # so the model's calibrated threshold applies. Someone who chose exactly 50 % cannot be told
    # apart, and gets the model's recommendation instead, which the window shows where it came from.
    # Any other value was a choice and is kept.
    if data.get("confidence_threshold") == _OLD_DEFAULT_THRESHOLD:
        data["confidence_threshold"] = None
    return data


# _MIGRATIONS[n] turns a version-n file into a version n + 1 one.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_version_1, 2: _from_version_2}


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def load_settings() -> Settings:
    """The saved settings, or the defaults when there are none or the file is unreadable."""
    path = settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:  # missing or unreadable: start with the defaults
        return Settings()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # Keep the damaged file for the user to look at; the next save would replace it.
        shutil.copyfile(path, path.with_name(SETTINGS_FILE + ".corrupt"))
        return Settings()
    return Settings.from_json(data)


def save_settings(settings: Settings) -> Path:
    """Write the settings atomically (whole or not at all) and return the file's path."""
    path = settings_path()
    atomic_write_text(path, json.dumps(settings.to_json(), indent=2))
    return path


def _checked(name: str, value: Any, default: Any) -> Any:
    """`value` when it has the type (and range) the setting needs, else `default`."""
    if name in OPTIONAL_NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if RANGES[name].contains(value) else None
    if isinstance(default, bool):
        return value if isinstance(value, bool) else default
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return default
        if isinstance(default, int) and not isinstance(value, int):
            return default
        allowed = RANGES.get(name)
        if allowed is not None and not allowed.contains(value):
            return default
        return type(default)(value)
    if isinstance(default, list):
        return [str(v) for v in value if isinstance(v, str)] if isinstance(value, list) else default
    if not isinstance(value, str):
        return default
    if name == "engine" and value not in PREFERENCES:
        return default
    if name in ("sort_mode", "auto_sort_mode") and value not in MODES:
        return default
    return value
