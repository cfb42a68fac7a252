"""Decoders and set-ups that tests/test_decode_processes.py hands to decoding worker processes.

Kept apart from the tests so that a worker imports only this and what the decoders need (the
fork server has NumPy and Pillow loaded already), not pytest and the test helpers: every worker
a test kills is replaced, and each replacement imports the module its task names.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from catbreed_desktop.core.photos import Preprocessing, decode, load_and_preprocess

# Long enough never to be reached by a working stop, short enough not to hang a broken one.
STUCK_SECONDS = 30.0


def wait_for(condition: Callable[[], object], seconds: float = STUCK_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def crash_on_marked(path: Path, spec: Preprocessing) -> np.ndarray:
    """Decode normally, except that a file named *crash* kills its process, as a segfaulting decoder would."""
    if "crash" in Path(path).name:
        if multiprocessing.parent_process() is None:  # decoding fell back to threads: spare pytest
            raise RuntimeError("the crashing decoder ran in the test process, not in a worker")
        os._exit(70)
    return load_and_preprocess(path, spec)


def stall_on_marked(path: Path, spec: Preprocessing) -> np.ndarray:
    """Decode normally, except that a file named *stuck* blocks until `<name>.release` appears.

    `<name>.started` holds the id of the process decoding it.
    """
    path = Path(path)
    if "stuck" in path.name:
        path.with_suffix(".started").write_text(str(os.getpid()))
        wait_for(path.with_suffix(".release").exists)
        path.with_suffix(".finished").touch()
    return load_and_preprocess(path, spec)


def failing_start(*args: object) -> None:
    """A worker set-up that fails, as when a script without a __main__ guard re-runs itself."""
    raise RuntimeError("this worker cannot start")


def stall_until_released(path: Path, spec: Preprocessing) -> np.ndarray:
    """Decode once a file named `release` appears beside the photo: a run that can only end early."""
    release = Path(path).parent / "release"
    wait_for(release.exists)
    return load_and_preprocess(path, spec)


def budget_kind() -> str:
    return type(decode.DECODE_BUDGET).__name__


def hold_budget(name: Path, amount: int) -> None:
    """Reserve `amount` of the decoding budget until `<name>.release` appears; `<name>.held` holds our id."""
    with decode.DECODE_BUDGET.hold(amount):
        name.with_suffix(".held").write_text(str(os.getpid()))
        wait_for(name.with_suffix(".release").exists)
