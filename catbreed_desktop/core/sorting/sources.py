"""Which photos a sort takes: those of its sources, less the ones already filed in the target.

A sort may go into its own inbox (`sort inbox --into inbox`) or into a folder that holds the inbox
(`sort out/new --into out`): the photos of the inbox are sorted, and the breed folders the sort
makes there are left out of every later run, recursive or not. Only a breed or special folder
that the user names as a source is sorted again (say `sort out/Unsure --into out` with a lower
threshold).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from catbreed_desktop.core.sorting.folder_names import SPECIAL_FOLDERS, name_key, safe_folder_name


def sort_folder_keys(labels: Iterable[str]) -> set[str]:
    """The names (as the file system compares them) of every folder a sort with these labels makes."""
    return {name_key(safe_folder_name(label)) for label in labels} | {
        name_key(folder) for folder in SPECIAL_FOLDERS
    }


def leave_out_sorted(
    photos: Iterable[Path], sources: Iterable[str | Path], target: Path, labels: Iterable[str]
) -> tuple[list[Path], list[Path]]:
    """Split `photos` into (to sort, already filed in one of the target's breed or special folders)."""
    resolved_target = _resolved(Path(target).expanduser())
    folder_keys = sort_folder_keys(labels)
    named = [_resolved(Path(source).expanduser()) for source in sources]

    def sort_folder_of(path: Path | None, itself_counts: bool = False) -> Path | None:
        """The target's sort folder that holds `path` (or is `path`, when `itself_counts`)."""
        if resolved_target is None or path is None or not path.is_relative_to(resolved_target):
            return None
        parts = path.relative_to(resolved_target).parts
        if len(parts) < (1 if itself_counts else 2) or name_key(parts[0]) not in folder_keys:
            return None
        return resolved_target / parts[0]

    # A sort folder named as a source (or a folder or photo inside one) is sorted again on purpose.
    chosen = {sort_folder_of(source, itself_counts=True) for source in named} - {None}
    to_sort: list[Path] = []
    filed: list[Path] = []
    for photo in photos:
        folder = sort_folder_of(_resolved(photo))
        (filed if folder is not None and folder not in chosen else to_sort).append(photo)
    return to_sort, filed


def _resolved(path: Path) -> Path | None:
    """The path with links and ".." resolved, or None for a link loop."""
    try:
        return Path(os.path.realpath(path, strict=False))
    except (OSError, RuntimeError, ValueError):
        return None
