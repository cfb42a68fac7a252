"""Which files some process still holds open for writing, as Linux's /proc tells.

Elsewhere (macOS, Windows) there is no such table to read, so `open_for_writing` answers None and
callers fall back to what they can observe themselves: open and close events where the file
system reports them, and a size and time stamp that stay the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_PROC = "/proc"
_DELETED = " (deleted)"
_ACCESS_MODE = 0o3  # O_ACCMODE: the low bits of fdinfo's octal "flags:" say read, write or both
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


def can_tell() -> bool:
    """Whether this system shows open files (Linux /proc); where it does not, every answer is None."""
    return os.path.isdir(f"{_PROC}/self/fdinfo")


def open_for_writing(paths: Iterable[Path]) -> set[Path] | None:
    """Those of `paths` that some process has open for writing, or None where that cannot be known.

    One pass over /proc answers for all the paths, so ask for all candidates at once. Each open
    file is matched by its name first and then by device and inode, so renames are followed and
    files on other (perhaps unresponsive) mounts are never examined. Processes this user may not
    look into are skipped: for them only the caller's own checks remain.
    """
    if not can_tell():
        return None
    wanted: dict[str, dict[tuple[int, int], Path]] = {}
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue  # gone: nobody writes it any more under this name
        wanted.setdefault(path.name, {})[(info.st_dev, info.st_ino)] = path
    found: set[Path] = set()
    if not wanted:
        return found
    for pid in _process_ids():
        for path in _written_by(pid, wanted):
            found.add(path)
    return found


def _process_ids() -> list[str]:
    try:
        return [entry for entry in os.listdir(_PROC) if entry.isdigit()]
    except OSError:
        return []


def _written_by(pid: str, wanted: dict[str, dict[tuple[int, int], Path]]) -> list[Path]:
    """The wanted files that process `pid` has open for writing (none if it cannot be read)."""
    fd_folder = f"{_PROC}/{pid}/fd"
    try:
        descriptors = os.listdir(fd_folder)
    except OSError:
        return []  # gone, or another user's process
    written = []
    for descriptor in descriptors:
        link = f"{fd_folder}/{descriptor}"
        try:
            target = os.readlink(link)
        except OSError:
            continue
        name = target.removesuffix(_DELETED).rpartition("/")[2]
        by_inode = wanted.get(name)
        if by_inode is None:
            continue
        try:
            info = os.stat(link)
        except OSError:
            continue
        path = by_inode.get((info.st_dev, info.st_ino))
        if path is not None and _opened_for_writing(f"{_PROC}/{pid}/fdinfo/{descriptor}"):
            written.append(path)
    return written


def _opened_for_writing(fdinfo: str) -> bool:
    try:
        with open(fdinfo, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & _ACCESS_MODE in _WRITE_MODES
    except (OSError, ValueError, IndexError):
        pass
    return False
