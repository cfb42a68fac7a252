"""Breed name aliases: map the spellings different datasets use onto one breed name.

The table is a JSON object `{"alias": "Breed"}` (default: `trainer/aliases.json`, which users
edit or replace with `--aliases FILE`). Matching ignores case, underscores versus spaces and
repeated spaces, so "British_Shorthair" and "british shorthair" are the same key. A name absent
from the table keeps its own spelling with underscores turned into spaces.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from trainer.errors import TrainerError

DEFAULT_ALIAS_FILE = Path(__file__).with_name("aliases.json")


class AliasError(TrainerError):
    """An alias table that cannot be used, with the reason in words."""


def name_key(name: str) -> str:
    """The comparison key of a breed name: case-folded, underscores as spaces, spaces collapsed."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().casefold()


def display_name(name: str) -> str:
    """A folder name as a breed name: underscores as spaces, spaces collapsed."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


def load_aliases(path: str | Path | None = None) -> dict[str, str]:
    """The alias table as {name_key(alias): canonical name}; keys starting with "_" are comments."""
    path = Path(path) if path is not None else DEFAULT_ALIAS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AliasError(f"alias file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AliasError(f"alias file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise AliasError(f'alias file {path} must hold a JSON object {{"alias": "Breed"}}')
    table: dict[str, str] = {}
    for alias, breed in data.items():
        if alias.startswith("_"):
            continue
        if not isinstance(breed, str) or not breed.strip():
            raise AliasError(f"alias file {path}: {alias!r} must map to a breed name, not {breed!r}")
        table[name_key(alias)] = display_name(breed)
    return table


def canonical_names(raw_names: Iterable[str], aliases: dict[str, str]) -> dict[str, str]:
    """Map every raw name to its breed name.

    Aliases win, and a breed the table names keeps the table's spelling; other names with the same
    key share the spelling used most often (ties go to the alphabetically first), so
    "Maine_Coon" and "maine coon" become one breed.
    """
    raw_list = list(raw_names)
    spellings: dict[str, Counter[str]] = {}
    for raw in raw_list:
        spellings.setdefault(name_key(raw), Counter())[display_name(raw)] += 1
    chosen = {
        key: min(counts.items(), key=lambda item: (-item[1], item[0]))[0] for key, counts in spellings.items()
    }
    # A breed named by the table is spelled as the table spells it, even where no alias was needed.
    chosen.update({name_key(breed): breed for breed in aliases.values()})
    return {raw: aliases.get(name_key(raw), chosen[name_key(raw)]) for raw in raw_list}
