"""Progress bars for everything long the trainer does: tqdm on stderr with rate and ETA."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

# Set TRAINER_PROGRESS=0 to silence the bars (logs, CI).
_ENABLED_ENV = "TRAINER_PROGRESS"


def progress_enabled() -> bool:
    return os.environ.get(_ENABLED_ENV, "1") != "0"


def _bar_options(description: str, unit: str) -> dict:
    return {
        "desc": description,
        "unit": unit,
        "file": sys.stderr,
        "dynamic_ncols": True,
        "mininterval": 0.5,
        "disable": not progress_enabled(),
    }


def bar(
    iterable: Iterable[T], description: str, total: int | None = None, unit: str = "photo"
) -> Iterator[T]:
    """Wrap an iterable in a progress bar showing count, rate and time left."""
    return iter(tqdm(iterable, total=total, **_bar_options(description, unit)))


def manual_bar(total: int, description: str, unit: str = "step", initial: int = 0) -> tqdm:
    """A progress bar updated by hand (training steps, where resuming starts part-way)."""
    return tqdm(total=total, initial=initial, **_bar_options(description, unit))
