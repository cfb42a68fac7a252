"""Paths that may leave the build machine: bundles and model cards name no absolute path.

A bundle travels to users and a card gets committed; an absolute path would tell them nothing
but the builder's home folder and user name. Paths inside the repository become relative to
it, others are reduced to their last component.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# An absolute POSIX path (or file:// URI), a Windows drive path, or a home-relative path, starting
# a token (after a space, a quote, "=", "(" or ","): never the "//" of a web URL, nor the lone
# slash of "a / b".
_END = r"""[^\s'",)]"""
_ABSOLUTE = re.compile(
    rf"""(?<![^\s'"=(,])(?:(?:file://)?/{_END}+|[A-Za-z]:[\\/]{_END}*|~(?:[\\/]{_END}*)?(?!{_END}))"""
)


def is_absolute_text(text: str) -> bool:
    """True when `text` holds an absolute or home-relative path anywhere in it."""
    return bool(_ABSOLUTE.search(text))


def portable_path(path: str | Path, anchors: tuple[Path, ...] = ()) -> str:
    """`path` relative to the repository (then the first anchor) it lies in, else its name."""
    text = str(path)
    candidate = Path(text).expanduser()
    if not candidate.is_absolute() and not re.match(r"^[A-Za-z]:[\\/]", text):
        return text
    resolved = candidate.resolve() if candidate.is_absolute() else candidate
    for anchor in (REPO_ROOT, *anchors):
        try:
            relative = resolved.relative_to(anchor.resolve())
        except ValueError:
            continue
        return relative.as_posix() or "."
    parts = [part for part in re.split(r"[\\/]", text) if part and not part.endswith(":")]
    # A checkpoint is known by its work folder: WORKDIR/checkpoints/best, not just "best".
    keep = 3 if len(parts) >= 3 and parts[-2] == "checkpoints" else 1
    return "/".join(parts[-keep:]) or "."


def portable_text(text: str, anchors: tuple[Path, ...] = ()) -> str:
    """`text` (a command line, say) with every absolute path in it made portable."""
    return _ABSOLUTE.sub(lambda match: portable_path(match.group(0).removeprefix("file://"), anchors), text)


def portable(value: Any, anchors: tuple[Path, ...] = ()) -> Any:
    """A JSON-like value with every string in it made portable, keys included."""
    if isinstance(value, str):
        return portable_text(value, anchors)
    if isinstance(value, Mapping):
        return {portable(k, anchors): portable(v, anchors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, anchors) for v in value]
    return value
