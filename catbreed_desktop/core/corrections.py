"""Exporting reviewed labels: the photos a person checked, as training data for the trainer.

Two forms: a CSV with the header `path,label` (absolute paths) that `python -m trainer prepare
--data FILE.csv` reads, or a folder per breed holding copies of the photos. Exporting never
moves or overwrites anything: a name already taken gets "name (2).jpg", a photo whose bytes are
already in its breed folder is skipped, and a file that cannot be copied is reported, not fatal.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from catbreed_desktop.core.files import atomic_write_text
from catbreed_desktop.core.sorting import fileops
from catbreed_desktop.core.sorting.folder_names import collision_names, safe_folder_name

CSV_HEADER = ("path", "label")


@dataclass(frozen=True)
class Correction:
    """A photo and the label a person gave or confirmed for it."""

    path: Path
    label: str


@dataclass
class ExportResult:
    """What an export wrote: files copied (source, copy), duplicates skipped, failures with reasons."""

    copied: list[tuple[Path, Path]] = field(default_factory=list)
    skipped_duplicates: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def export_corrections_csv(corrections: Iterable[Correction], csv_path: str | Path) -> int:
    """Write `path,label` rows (one per photo, the last label given wins) and return how many.

    The file is written to a temporary name and renamed, so an existing CSV is never left half
    written; it is replaced only once the new one is complete.
    """
    rows = _unique(corrections)
    target = Path(csv_path).expanduser()
    if target.exists() and target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give a file name for the CSV")
    target.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_HEADER)
    for correction in rows:
        writer.writerow((str(Path(os.path.abspath(correction.path))), correction.label))
    atomic_write_text(target, text.getvalue())
    return len(rows)


def read_corrections_csv(csv_path: str | Path) -> list[Correction]:
    """Read back a CSV written by `export_corrections_csv`; raises ValueError for a wrong header."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise ValueError(f"{csv_path}: the first line must be 'path,label', not {header!r}")
        return [Correction(Path(row[0]), row[1]) for row in reader if len(row) >= 2 and row[0]]


def export_corrections_folders(
    corrections: Iterable[Correction],
    target: str | Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Copy each photo into `target/<breed>/`, verified, never replacing an existing file."""
    rows = _unique(corrections)
    root = Path(target).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the export target {root} exists and is not a folder")
    result = ExportResult()
    for done, correction in enumerate(rows, start=1):
        try:
            _copy_one(correction, root, result)
        except OSError as error:
            result.failed.append((correction.path, error.strerror or str(error)))
        if on_progress:
            on_progress(done, len(rows))
    return result


def _copy_one(correction: Correction, root: Path, result: ExportResult) -> None:
    source = correction.path
    content = fileops.fingerprint(source)
    folder = root / safe_folder_name(correction.label)
    folder.mkdir(parents=True, exist_ok=True)
    for candidate in collision_names(folder / source.name):
        if candidate.exists():
            if fileops.has_content(candidate, content):
                result.skipped_duplicates.append(source)
                return
            continue
        temporary = fileops.temp_name_for(candidate, uuid.uuid4().hex[:8])
        try:
            fileops.verified_copy(source, candidate, temporary, content)
        except FileExistsError:
            continue  # taken between the check and the rename: try the next name
        result.copied.append((source, candidate))
        return


def _unique(corrections: Iterable[Correction]) -> list[Correction]:
    latest: dict[Path, Correction] = {}
    for correction in corrections:
        path = Path(correction.path)
        latest[path] = Correction(path, str(correction.label))
    return list(latest.values())
