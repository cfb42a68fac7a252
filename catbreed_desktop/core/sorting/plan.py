"""The sort plan: which folder each photo goes to, under which name, and what is already there.

A plan changes nothing on disk; it is what the preview shows. Execution re-checks every name at
the moment of the move, because folders may change between plan and execution.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from catbreed_desktop.core.printable import printable
from catbreed_desktop.core.sorting.fileops import fingerprint
from catbreed_desktop.core.sorting.folder_names import (
    NOT_CAT_FOLDER,
    SPECIAL_FOLDERS,
    UNSURE_FOLDER,
    collision_names,
    is_inside,
    name_key,
    safe_folder_name,
)
from catbreed_desktop.core.sorting.folders import FolderContents

# The sort modes, which are also the actions on a file; a "duplicate" is already there and stays put.
# How a sort treats the photos, and what it does with each one (a duplicate stays where it is).
SortMode = Literal["move", "copy"]
Action = Literal["move", "copy", "duplicate"]
MOVE: Final = "move"
COPY: Final = "copy"
DUPLICATE: Final = "duplicate"
MODES: tuple[SortMode, ...] = (MOVE, COPY)
ACTIONS: tuple[Action, ...] = (*MODES, DUPLICATE)


@dataclass(frozen=True)
class SortItem:
    """One classified photo: where it is, its best label and how sure the model is."""

    source: Path
    label: str
    confidence: float
    is_cat: bool = True


@dataclass(frozen=True)
class PlannedOperation:
    """What will happen to one photo.

    `action` is "move", "copy", or "duplicate" (identical bytes are already at `destination`, so
    nothing is done and the source stays). `folder` is the name of the folder inside the target.
    """

    source: Path
    destination: Path
    action: Action
    folder: str


@dataclass
class SortPlan:
    """Every planned operation of one sort, ready to preview or execute."""

    target: Path
    mode: SortMode
    min_confidence: float
    operations: list[PlannedOperation] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (photo, why it cannot be sorted)
    # Breed folders that more than one label of this plan goes to ("A/B", "A:B" and "A_B" all
    # become "A_B"; "Maine Coon" and "maine coon" are one folder where case is ignored): folder -> labels.
    shared_folders: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """How many photos will be moved, copied, or found already there, and the total."""
        counts = Counter(operation.action for operation in self.operations)
        return {action: counts.get(action, 0) for action in ACTIONS} | {"total": len(self.operations)}

    def shared_folder_notes(self) -> list[str]:
        """One sentence per folder that photos of different labels share, for the preview."""
        return [
            f"the labels {_listed(labels)} all go to the folder {printable(folder)}"
            for folder, labels in self.shared_folders.items()
        ]

    def folders(self) -> dict[str, int]:
        """How many photos go to each folder (duplicates included), largest first."""
        return dict(Counter(operation.folder for operation in self.operations).most_common())


def _listed(labels: list[str]) -> str:
    quoted = [f'"{printable(label)}"' for label in labels]
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


def folder_for(item: SortItem, min_confidence: float) -> str:
    """The folder name for one photo: "Not a cat", "Unsure" below the threshold, else its breed."""
    if not item.is_cat:
        return NOT_CAT_FOLDER
    if item.confidence < min_confidence:
        return UNSURE_FOLDER
    return safe_folder_name(item.label)


def check_mode(mode: str, min_confidence: float) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown sort mode {mode!r}; use one of {', '.join(MODES)}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"the minimum confidence must be between 0 and 1, not {min_confidence}")


def plan_sort(
    items: Iterable[SortItem], target: Path, mode: SortMode = MOVE, min_confidence: float = 0.5
) -> SortPlan:
    """Plan where each photo goes inside `target`, without touching anything.

    Names already taken in a folder, or planned for an earlier photo of the same plan, get
    "name (2).jpg" and so on; a photo whose exact bytes are already in its folder is planned as a
    duplicate. Photos already in their right folder are left out.
    """
    check_mode(mode, min_confidence)
    target = Path(target).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"the target {target} exists and is not a folder")
    plan = SortPlan(target=target, mode=mode, min_confidence=min_confidence)
    folders: dict[str, FolderContents] = {}
    labels_by_folder: dict[str, dict[str, None]] = {}  # folder's name_key -> its labels, in order met
    seen: set[Path] = set()
    for item in items:
        # abspath, not resolve: a symbolic link must be handled as itself, never as what it points to.
        source = Path(os.path.abspath(Path(item.source).expanduser()))
        if source in seen:
            continue
        seen.add(source)
        folder = folder_for(item, min_confidence)
        if folder not in SPECIAL_FOLDERS:
            labels_by_folder.setdefault(name_key(folder), {})[item.label] = None
        folder_path = target / folder
        if not is_inside(folder_path, target):
            # A link in the target leading elsewhere: this photo stays, the others go on.
            plan.skipped.append((source, f"its folder {folder_path} leads out of {target}"))
            continue
        if source.parent == folder_path:
            continue
        contents = folders.get(folder) or folders.setdefault(folder, FolderContents(folder_path))
        content = None
        try:
            if source.is_file() and contents.has_size(source.stat().st_size):
                content = fingerprint(source)
        except OSError:
            content = None  # unreadable now: execution reports it and leaves it alone
        identical = contents.find_identical(content, ignore=source) if content else None
        if identical is not None:
            plan.operations.append(PlannedOperation(source, identical, DUPLICATE, folder))
            continue
        destination = next(
            name for name in collision_names(folder_path / source.name) if not contents.is_taken(name.name)
        )
        contents.add(destination, holder=source, content=content)
        plan.operations.append(PlannedOperation(source, destination, mode, folder))
    for labels in labels_by_folder.values():
        if len(labels) > 1:
            plan.shared_folders[safe_folder_name(next(iter(labels)))] = sorted(labels)
    return plan
