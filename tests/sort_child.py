"""A sorting process to be killed: the kill test and `bench/soak_sort.py` start it and SIGKILL it.

    python tests/sort_child.py CONFIG.json

The JSON config names the `action` (sort, resume or undo), `via` ("api" calls the core; "cli"
runs `catbreed ACTION`, resume and undo only), `delay` (seconds slept before and after each file
operation and journal write, so kills land mid-sort; 0 runs at full speed), `simulate_exdev`
(every rename between folders fails as across file systems, so moves copy, verify and delete),
and for a sort the `items` ([path, label] pairs) and the `target` folder. The child patches
what it slows, prints "ready" once only the action is left, then does it and prints one line
`result {json}` saying how it ended.
"""

from __future__ import annotations

import errno
import json
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

# Started by path, from a checkout: the package is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catbreed_desktop.core.sorting import (  # noqa: E402
    JournalError,
    NothingToUndo,
    SortItem,
    SortResult,
    execute_plan,
    fileops,
    journal,
    plan_sort,
    resume_interrupted_sort,
    undo_last_sort,
)

Function = TypeVar("Function", bound=Callable[..., Any])


def slowed(function: Function, delay: float) -> Function:
    """`function` with `delay` seconds of sleep before and after each call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)
        result = function(*args, **kwargs)
        time.sleep(delay)
        return result

    return wrapper  # type: ignore[return-value]


def simulate_cross_device_renames() -> None:
    """Renames between folders fail with EXDEV, as between two file systems."""
    same_device_rename = fileops.rename_no_replace

    def rename_no_replace(source: Path, destination: Path) -> None:
        if Path(source).parent != Path(destination).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        same_device_rename(source, destination)

    fileops.rename_no_replace = rename_no_replace  # type: ignore[assignment]


def report(**fields: object) -> None:
    print("result " + json.dumps(fields), flush=True)


def report_sort(result: SortResult) -> None:
    failed = [f"{operation.source}: {reason}" for operation, reason in result.failed]
    report(done=len(result.done), problems=failed, stopped=result.stopped)


def run_command_line(action: str) -> int:
    """`catbreed ACTION` as the command line runs it; its exit status is reported."""
    import catbreed_desktop.cli.classify_command
    import catbreed_desktop.cli.sort_command  # noqa: F401  (imported before "ready", as the rest)

    print("ready", flush=True)
    sys.argv = ["catbreed", action]
    try:
        runpy.run_module("catbreed_desktop.cli.main", run_name="__main__", alter_sys=True)
        code: object = 0
    except SystemExit as request:
        code = request.code
    report(exit=code)
    return 0


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    delay = float(config["delay"])
    if config["simulate_exdev"]:
        simulate_cross_device_renames()
    if delay:
        for name in ("_copy_bytes", "rename_no_replace", "move_file"):
            setattr(fileops, name, slowed(getattr(fileops, name), delay))
        journal.Journal.append = slowed(journal.Journal.append, delay)  # type: ignore[method-assign]

    action = config["action"]
    if config["via"] == "cli":
        return run_command_line(action)
    if action == "sort":
        items = [SortItem(Path(path), label, 0.9) for path, label in config["items"]]
        plan = plan_sort(items, Path(config["target"]), mode="move")
    print("ready", flush=True)
    try:
        if action == "sort":
            report_sort(execute_plan(plan))
        elif action == "resume":
            result = resume_interrupted_sort()
            if result is None:
                report(nothing=True)
            else:
                report_sort(result)
        else:
            try:
                restored = undo_last_sort()
            except NothingToUndo:
                report(nothing=True)
            else:
                report(restored=restored.restored, problems=restored.problems)
    except JournalError as error:
        report(error=f"JournalError: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
