"""Photos `prepare` leaves out before anything else sees them, each with its reason.

Web-search collections hold many photos that are not cats at all: whole folders of gin bottles or
cities named like a breed, and inside good folders a share of merchandise, drawings and people.
Removing them must not depend on any breed label (a test that asks "does this look like a
Siberian?" throws away exactly the photos that would correct a model trained on guessed labels),
so two breed-agnostic rules are used:

- skipped folders: a JSON file {"SOURCE/FOLDER": "reason"} naming breed folders that are almost
  all junk (the recipe's `skipped_folders.json`, from the source's own contact-sheet notes);
- not-a-cat screening: the JSON lines `catbreed classify --json` writes for a source, read with
  the bundle's own not-a-cat detector verdict (`is_cat`); every photo judged not to be a cat is left out.

`prepare` records every excluded photo in WORKDIR/excluded.csv (path, source, folder, reason),
counts per source and reason in summary.json, and draws contact sheets per source and reason
under WORKDIR/excluded/ so a person can see what went.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

from trainer.contact_sheets import SheetEntry, contact_sheet, file_stem
from trainer.errors import TrainerError

EXCLUDED_FILE = "excluded.csv"
EXCLUDED_FOLDER = "excluded"
NOT_A_CAT_REASON = "not a cat (the screening bundle's not-a-cat detector)"


class ExclusionError(TrainerError):
    """An exclusion list that cannot be read, with the reason in words."""


def load_skipped_folders(path: str | Path) -> dict[str, str]:
    """{"SOURCE/FOLDER": reason} from a JSON object; keys starting with "_" are comments."""
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExclusionError(f"cannot read the skipped-folders file {path}: {error}") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ExclusionError(f'{path}: expected a JSON object of "SOURCE/FOLDER": "reason"')
    folders = {key: reason for key, reason in table.items() if not key.startswith("_")}
    malformed = [key for key in folders if key.count("/") != 1]
    if malformed:
        raise ExclusionError(f"{path}: keys must read SOURCE/FOLDER, not {', '.join(malformed)}")
    return folders


def load_not_cats(path: str | Path) -> dict[Path, float]:
    """{resolved photo path: not-a-cat score} for every photo a `catbreed classify --json` run
    judged not to be a cat."""
    not_cats: dict[Path, float] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise ExclusionError(f"{path}, line {number}: not a JSON object") from None
                if row.get("ok") and row.get("is_cat") is False:
                    not_cats[Path(row["path"]).resolve()] = float(row.get("ood_score") or 0.0)
    except OSError as error:
        raise ExclusionError(f"cannot read the screening file {path}: {error.strerror or error}") from None
    return not_cats


def exclusion_reasons(
    raw: Mapping[Path, tuple[str, str]],
    skipped_folders: Mapping[str, str],
    not_cats: Mapping[Path, float],
) -> dict[Path, str]:
    """{photo: reason} for every scanned photo (raw: {path: (folder label, source)}) to leave out."""
    reasons = {}
    for path, (folder, source) in raw.items():
        skipped = skipped_folders.get(f"{source}/{folder}")
        if skipped is not None:
            reasons[path] = f"skipped folder: {skipped}"
        elif path in not_cats:
            reasons[path] = NOT_A_CAT_REASON
    return reasons


def record_exclusions(
    workdir: Path, raw: Mapping[Path, tuple[str, str]], reasons: Mapping[Path, str]
) -> dict[str, dict[str, int]]:
    """Write excluded.csv and the contact sheets; return {source: {reason: photos}}."""
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    sheets: dict[tuple[str, str], list[SheetEntry]] = defaultdict(list)
    with open(workdir / EXCLUDED_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "source", "folder", "reason"])
        for path in sorted(reasons):
            folder, source = raw[path]
            reason = reasons[path]
            writer.writerow([str(path), source, folder, reason])
            by_source[source][reason] += 1
            sheet_key = "skipped_folders" if reason.startswith("skipped folder") else "not_a_cat"
            sheets[(source, sheet_key)].append(SheetEntry(path, folder, path.name))
    for (source, kind), entries in sorted(sheets.items()):
        contact_sheet(
            workdir / EXCLUDED_FOLDER / f"{file_stem(source)}-{kind}.png",
            f"{source}: {len(entries)} left out ({kind.replace('_', ' ')})",
            entries,
        )
    return {source: dict(sorted(counts.items())) for source, counts in sorted(by_source.items())}
