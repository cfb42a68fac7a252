"""The window's settings, kept as JSON in the user's config folder so they survive a restart.

Each number's allowed range is defined once, in `RANGES`: the loader checks saved values against
it and the settings dialog builds its spin boxes from it, so the two cannot disagree. Unknown keys
are ignored and values of the wrong type or out of range fall back to their defaults, so an old or
hand-edited file never stops the app from starting. A damaged file (over `MAX_SETTINGS_BYTES`, not
UTF-8, not a JSON object, nested too deep, a number too long to read) is renamed aside as
`settings.json.corrupt` and the defaults are used; `read_settings` says so in one line.

Files carry a `schema_version`. A file without one is version 1 (written before versions existed)
and is migrated on load (`_MIGRATIONS`), so a setting that changes meaning keeps what the person
chose. A file from a newer version is read for every field this version knows, but never written
over: saving refuses with a `SettingsError`, so the newer version's settings are not downgraded.

A few numbers may be "not set" (`OPTIONAL_NUMBERS`), stored as JSON null: the unsure threshold is
the model bundle's recommendation until the person picks one, so only a choice they made is kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catbreed_desktop.core.engines.names import AUTO, DEFAULT_BATCH_SIZE, PREFERENCES, Preference
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.files import atomic_write_text
from catbreed_desktop.core.paths import config_dir
from catbreed_desktop.core.printable import printable
from catbreed_desktop.core.sorting.plan import COPY, MODES, MOVE, SortMode

SETTINGS_FILE = "settings.json"
# Settings take a few kilobytes; a larger file is damaged, and is not read into memory.
MAX_SETTINGS_BYTES = 1024 * 1024
# How many damaged files are kept aside (settings.json.corrupt, .corrupt-2, ...) before giving up.
_MAX_KEPT_ASIDE = 20
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
    engine: Preference = AUTO
    triton_server: str = ""  # the Triton server's URL, used when `engine` is "triton"
    batch_size: int = DEFAULT_BATCH_SIZE
    thumbnail_size: int = 160
    include_subfolders: bool = True
    # Photos below it are unsure. None: the loaded bundle's recommendation (`ModelBundle.default_min_confidence`).
    confidence_threshold: float | None = None
    recent_folders: list[str] = field(default_factory=list)
    watched_folders: list[str] = field(default_factory=list)
    sort_target: str = ""
    # What the Sort dialog proposes: Copy for a first sort (nothing leaves its folder), then the last choice.
    sort_mode: SortMode = COPY
    auto_sort: bool = False
    auto_sort_mode: SortMode = MOVE  # what auto-sort of watched folders does
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


class SettingsError(CatBreedError):
    """The settings file cannot be written: it is from a newer version, or could not be read."""


@dataclass(frozen=True)
class LoadedSettings:
    """The settings to start with, and one line on what went wrong with the file, if anything did."""

    settings: Settings
    problem: str | None = None


class _Damaged(CatBreedError):
    """A settings file that cannot be settings; the message says why in a few words (never raised out)."""


def read_settings() -> LoadedSettings:
    """The saved settings, or the defaults (with the reason) where the file is missing or cannot be used.

    Never raises: a damaged file is renamed aside (or said not to be), an unreadable one is named,
    and the window starts with the defaults either way.
    """
    try:
        path = settings_path()
        data = _parsed(path)
    except _Damaged as damage:
        return LoadedSettings(Settings(), _set_aside_message(path, str(damage)))
    except OSError as error:
        return LoadedSettings(
            Settings(), f"Could not read the settings ({_reason(error)}); started with the defaults"
        )
    if data is None:
        return LoadedSettings(Settings())
    problem = None
    if _version(data) > SCHEMA_VERSION:
        problem = "The settings file is from a newer CatBreed: changes made here will not be saved over it"
    return LoadedSettings(Settings.from_json(data), problem)


def load_settings() -> Settings:
    """The saved settings, or the defaults when there are none or the file cannot be used."""
    return read_settings().settings


def save_settings(settings: Settings) -> Path:
    """Write the settings atomically (whole or not at all) and return the file's path.

    A damaged file in the way is renamed aside first. Raises `SettingsError`, writing nothing, where
    the file there is from a newer version or cannot be read, and OSError where it cannot be written.
    """
    path = settings_path()
    try:
        data = _parsed(path)
    except _Damaged:
        _set_aside(path)
        data = None
    except OSError as error:
        raise SettingsError(
            f"the settings file could not be read ({_reason(error)}), so it is not written over"
        ) from None
    if data is not None and _version(data) > SCHEMA_VERSION:
        raise SettingsError(
            "the settings file is from a newer CatBreed; this version does not write over it (changes last until the window closes)"
        )
    atomic_write_text(path, json.dumps(settings.to_json(), indent=2))
    return path


def _parsed(path: Path) -> dict[str, Any] | None:
    """The JSON object in the settings file, None where there is no file; `_Damaged` where it is no settings."""
    try:
        # Non-blocking, so that a FIFO put there cannot hold the window up before it opens.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise _Damaged("not a regular file")
        raw = stream.read(MAX_SETTINGS_BYTES + 1)
    if len(raw) > MAX_SETTINGS_BYTES:
        raise _Damaged(f"larger than {MAX_SETTINGS_BYTES // (1024 * 1024)} MB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Damaged("not UTF-8 text") from None
    except RecursionError:
        raise _Damaged("nested too deep") from None
    except ValueError:  # not JSON, or a number with more digits than Python converts
        raise _Damaged("not valid JSON") from None
    if not isinstance(data, dict):
        raise _Damaged("not a JSON object")
    return data


def _version(data: dict[str, Any]) -> int:
    version = data.get("schema_version", 1)
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


def _set_aside(path: Path) -> Path:
    """Rename the damaged file to the first free `settings.json.corrupt[-N]` beside it; its new path."""
    for number in range(1, _MAX_KEPT_ASIDE + 1):
        aside = path.with_name(f"{SETTINGS_FILE}.corrupt" + (f"-{number}" if number > 1 else ""))
        if not os.path.lexists(aside):
            os.replace(path, aside)  # a rename: nothing is copied, however large the file
            return aside
    raise FileExistsError(f"{_MAX_KEPT_ASIDE} damaged settings files are kept beside it already")


def _set_aside_message(path: Path, damage: str) -> str:
    try:
        aside = _set_aside(path)
    except OSError as error:
        return (
            f"The settings file is damaged ({damage}) and could not be kept aside ({_reason(error)}); "
            "started with the defaults"
        )
    return (
        f"The settings file was damaged ({damage}): kept it as {printable(aside)}; started with the defaults"
    )


def _reason(error: OSError) -> str:
    return printable(error.strerror or str(error))


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
