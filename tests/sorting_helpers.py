"""Helpers of the sorting tests: small files with known bytes and snapshots of folder trees."""

from __future__ import annotations

import hashlib
from pathlib import Path

from catbreed_desktop.core.sorting import SortItem


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """{path relative to root: sha256} of every file under root, hidden files included."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def contents(root: Path) -> list[str]:
    """The sha256 of every file under root, with repeats, sorted: what exists regardless of names."""
    return sorted(sha256(p) for p in root.rglob("*") if p.is_file())


def items_for(paths: list[Path], label: str = "Bengal", confidence: float = 0.9) -> list[SortItem]:
    return [SortItem(path, label, confidence) for path in paths]
