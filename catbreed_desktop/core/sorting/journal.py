"""The sort journal: one append-only JSON-lines file per sort run, synced to disk after every record.

Each file operation is written as an "intent" before it happens and "done" after, so a sort killed
at any point can be reconciled with the file system, then resumed or undone. Undo appends its own
records to the same file, so a journal also says whether its sort was undone.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from catbreed_desktop.core import paths
from catbreed_desktop.core.sorting.fileops import Fingerprint, fsync_dir
from catbreed_desktop.core.sorting.plan import PlannedOperation, SortPlan

FORMAT_VERSION = 1
JOURNAL_GLOB = "sort-*.jsonl"


class JournalError(Exception):
    """A journal that cannot be read or is already in use by another sort or undo."""


def journals_dir() -> Path:
    folder = paths.data_dir() / "journals"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def list_journals() -> list[Path]:
    """Every sort journal, oldest first (names start with the UTC time of the sort)."""
    return sorted(journals_dir().glob(JOURNAL_GLOB))


def last_journal() -> Path | None:
    """The journal of the most recent sort, undone or not, or None when there was none."""
    journals = list_journals()
    return journals[-1] if journals else None


@contextlib.contextmanager
def exclusive_lock() -> Iterator[None]:
    """Keep two sorts or undos (say the window and the command line) from running at once.

    An OS file lock, so a killed process never leaves a stale lock behind. Where fcntl is
    missing (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    handle = open(journals_dir() / ".lock", "a")  # noqa: SIM115 - released in finally
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise JournalError("another sort or undo is running; wait for it to finish") from error
        yield
    finally:
        handle.close()


class Journal:
    """An open journal that appends records and syncs each one before returning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    @classmethod
    def create(cls, plan: SortPlan) -> Journal:
        """Start the journal of a new sort, with its whole plan as the first record."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        micros = f"{time.time_ns() // 1000 % 1_000_000:06d}"
        path = journals_dir() / f"sort-{stamp}-{micros}-{os.getpid()}.jsonl"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        journal = cls(path)
        journal.append(
            {
                "type": "start",
                "version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "target": str(plan.target),
                "mode": plan.mode,
                "min_confidence": plan.min_confidence,
                "operations": [
                    {
                        "source": str(op.source),
                        "destination": str(op.destination),
                        "action": op.action,
                        "folder": op.folder,
                    }
                    for op in plan.operations
                ],
            }
        )
        fsync_dir(path.parent)
        return journal

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        os.write(self._fd, line)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class Intent:
    """What an operation was about to do: the exact destination and the bytes it carries."""

    action: str
    source: Path
    destination: Path
    temp: Path
    content: Fingerprint

    @classmethod
    def from_record(cls, record: dict) -> Intent:
        return cls(
            action=record["action"],
            source=Path(record["source"]),
            destination=Path(record["destination"]),
            temp=Path(record["temp"]),
            content=Fingerprint(record["size"], record["sha256"]),
        )

    def to_record(self, index: int) -> dict:
        return {
            "type": "intent",
            "id": index,
            "action": self.action,
            "source": str(self.source),
            "destination": str(self.destination),
            "temp": str(self.temp),
            "size": self.content.size,
            "sha256": self.content.sha256,
        }


@dataclass
class OperationState:
    """One planned operation and everything the journal says happened to it."""

    index: int
    planned: PlannedOperation
    intents: list[Intent] = field(default_factory=list)
    outcome: str | None = None  # "done", "duplicate", "failed"
    reason: str = ""
    undo_temps: list[Path] = field(default_factory=list)
    undone: bool = False

    @property
    def last_intent(self) -> Intent | None:
        return self.intents[-1] if self.intents else None


@dataclass
class JournalState:
    """A journal read back: the plan, each operation's state, and whether it ended or was undone."""

    path: Path
    plan: SortPlan
    operations: list[OperationState]
    created_dirs: list[Path] = field(default_factory=list)
    ended: bool = False
    stopped: bool = False
    undo_started: bool = False
    undo_ended: bool = False

    @property
    def pending(self) -> list[OperationState]:
        """Operations with no outcome yet: not started, or cut off in the middle."""
        return [op for op in self.operations if op.outcome is None]

    @property
    def is_undone(self) -> bool:
        return self.undo_ended


def _parse_lines(path: Path) -> list[dict]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise JournalError(f"cannot read the journal {path}: {error}") from error
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as error:
            if number == len(lines):
                break  # a record cut short by a kill: it never happened
            raise JournalError(f"the journal {path} is damaged at line {number}") from error
    return records


def read_journal(path: Path) -> JournalState:
    """Read a journal back into its plan and per-operation state."""
    records = _parse_lines(path)
    if not records or records[0].get("type") != "start":
        raise JournalError(f"{path} is not a sort journal")
    start = records[0]
    if start.get("version") != FORMAT_VERSION:
        raise JournalError(f"{path} was written by another version (format {start.get('version')})")
    planned = [
        PlannedOperation(Path(op["source"]), Path(op["destination"]), op["action"], op["folder"])
        for op in start["operations"]
    ]
    plan = SortPlan(Path(start["target"]), start["mode"], start["min_confidence"], planned)
    state = JournalState(path, plan, [OperationState(i, op) for i, op in enumerate(planned)])
    for record in records[1:]:
        kind = record.get("type")
        op = state.operations[record["id"]] if "id" in record else None
        if kind == "intent":
            op.intents.append(Intent.from_record(record))
        elif kind in ("done", "duplicate", "failed"):
            op.outcome = kind
            op.reason = record.get("reason", "")
            if kind == "duplicate":
                op.planned = PlannedOperation(
                    op.planned.source, Path(record["existing"]), "duplicate", op.planned.folder
                )
        elif kind == "abandoned":
            pass  # the name was taken at the last moment; a new intent follows
        elif kind == "mkdir":
            state.created_dirs.append(Path(record["path"]))
        elif kind == "end":
            state.ended, state.stopped = True, bool(record.get("stopped"))
        elif kind == "undo-start":
            state.undo_started = True
        elif kind == "undo-intent":
            op.undo_temps.append(Path(record["temp"]))
        elif kind == "undo-done":
            op.undone = True
        elif kind == "undo-end":
            state.undo_ended = True
        else:
            raise JournalError(f"{path} has an unknown record type {kind!r}")
    return state
