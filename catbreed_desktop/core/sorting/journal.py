"""The sort journal: one append-only JSON-lines file per sort run, synced to disk after every record.

Each file operation is written as an "intent" before it happens and "done" after, so a sort killed
at any point can be reconciled with the file system, then resumed or undone. Undo appends its own
records to the same file, so a journal also says whether its sort was undone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from catbreed_desktop.core import paths
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.files import fsync_dir
from catbreed_desktop.core.sorting.fileops import Fingerprint
from catbreed_desktop.core.sorting.plan import ACTIONS, MODES, PlannedOperation, SortMode, SortPlan

FORMAT_VERSION = 1
JOURNAL_GLOB = "sort-*.jsonl"
_PARTIAL_SUFFIX = ".new"  # a start record being written, before the journal gets its name
# A journal holds one sort's plan; a file far past any real sort is not one of ours.
MAX_JOURNAL_BYTES = 512 * 1024 * 1024


class JournalError(CatBreedError):
    """A journal that cannot be read or is already in use by another sort or undo."""


class EmptyJournal(JournalError):
    """A journal with no complete record: its sort stopped before it began, so nothing was done.

    Earlier versions could leave one behind on a full disk; readers skip it.
    """


class JournalWriteError(JournalError):
    """The journal could not be written (disk full, folder read-only): the sort or undo stops here.

    Nothing is half-recorded: a record is either whole in the file or not there at all, so the
    journal stays readable and `resume` or `undo` can go on once the cause is removed.
    """


def journals_dir() -> Path:
    try:
        folder = paths.data_dir() / "journals"
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JournalError(
            f"cannot use the folder for sort journals ({error.filename or paths.data_dir()}): "
            f"{error.strerror or error}; sorting needs it to be able to undo"
        ) from None
    return folder


def list_journals() -> list[Path]:
    """Every sort journal, oldest first (names start with the UTC time of the sort)."""
    return sorted(journals_dir().glob(JOURNAL_GLOB))


def read_journals_newest_first() -> Iterator[JournalState]:
    """Every journal's state, newest first, skipping those whose sort never began."""
    for path in reversed(list_journals()):
        try:
            yield read_journal(path)
        except EmptyJournal:
            continue


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
    lock_path = journals_dir() / ".lock"
    try:
        handle = open(lock_path, "a")  # noqa: SIM115 - released in finally
    except OSError as error:
        raise JournalError(f"cannot open the journal lock {lock_path}: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise JournalError("another sort or undo is running; wait for it to finish") from error
        yield
    finally:
        handle.close()


def encode_record(record: dict[str, Any]) -> bytes:
    """One journal line. ASCII with escapes, so a file name that is not valid UTF-8 (kept by
    Python as surrogate escapes) is stored losslessly and reads back as the very same name."""
    return (json.dumps(record, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


class Journal:
    """An open journal that appends whole records and syncs each one before returning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except OSError as error:
            raise JournalError(f"cannot open the sort journal {path}: {error.strerror or error}") from None
        try:
            self._drop_torn_tail()
        except OSError as error:
            self.close()
            raise JournalWriteError(
                f"cannot repair the sort journal {path}: {error.strerror or error}"
            ) from None

    @classmethod
    def create(cls, plan: SortPlan) -> Journal:
        """Start the journal of a new sort, with its whole plan as the first record (call under exclusive_lock).

        The start record is written and synced under a hidden name first, so a journal is only
        ever seen complete: a full disk leaves no empty journal behind to block later undos.
        """
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        micros = f"{time.time_ns() // 1000 % 1_000_000:06d}"
        folder = journals_dir()
        path = folder / f"sort-{stamp}-{micros}-{os.getpid()}.jsonl"
        start = encode_record(
            {
                "type": "start",
                "version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "target": str(plan.target),
                "mode": plan.mode,
                "min_confidence": plan.min_confidence,
                "operations": [_planned_record(op) for op in plan.operations],
            }
        )
        partial = folder / f".{path.name}{_PARTIAL_SUFFIX}"
        # Callers hold exclusive_lock, so any other half-written start is a killed sort's: it did nothing.
        for stale in folder.glob(f".sort-*{_PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                os.remove(stale)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, start)
                os.fsync(fd)
            finally:
                os.close(fd)
            if os.path.lexists(path):  # the name holds this process id and the microsecond
                raise FileExistsError(errno.EEXIST, "a journal of this name already exists")
            os.replace(partial, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise JournalWriteError(
                f"cannot write the sort journal in {folder}: {error.strerror or error}; nothing was sorted"
            ) from None
        fsync_dir(folder)
        return cls(path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one record, whole or not at all; raises JournalWriteError when it cannot be written."""
        line = encode_record(record)
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            _write_all(self._fd, line)
            os.fsync(self._fd)
        except OSError as error:
            # Take back a partly written line, so the next record does not run into it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
                os.fsync(self._fd)
            raise JournalWriteError(
                f"cannot write the sort journal {self.path}: {error.strerror or error}"
            ) from None

    def _drop_torn_tail(self) -> None:
        """Cut off a last record that a kill or a full disk left without its end of line.

        Readers already ignore it (it never happened); appending after it would make it a damaged
        line in the middle, and the journal could never be read again.
        """
        size = os.lseek(self._fd, 0, os.SEEK_END)
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        keep, position = 0, size
        while position > 0 and keep == 0:
            block_start = max(0, position - 65536)
            block = os.pread(self._fd, position - block_start, block_start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = block_start + newline + 1
            position = block_start
        if _parse_record(os.pread(self._fd, size - keep, keep)) is not None:
            _write_all(self._fd, b"\n")  # only the end of line is missing: readers take it as whole
        else:
            os.ftruncate(self._fd, keep)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _planned_record(operation: PlannedOperation) -> dict[str, Any]:
    """One operation of the start record, with the photo's size as the sort begins where it has one.

    The size lets a resume or undo that finds a journal cut short (a disk fault, a truncated file)
    know a photo the sort had already put at its planned destination: it names no digest there.
    """
    record: dict[str, Any] = {
        "source": str(operation.source),
        "destination": str(operation.destination),
        "action": operation.action,
        "folder": operation.folder,
    }
    try:
        status = operation.source.lstat()
    except OSError:
        return record
    if stat.S_ISREG(status.st_mode):
        record["size"] = status.st_size
    return record


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a full disk, a signal): go on until all is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


@dataclass(frozen=True)
class Intent:
    """What an operation was about to do: the exact destination and the bytes it carries."""

    action: SortMode
    source: Path
    destination: Path
    temp: Path
    content: Fingerprint

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Intent:
        size, digest = record["size"], record["sha256"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise TypeError("'size' is not a file size")
        if not isinstance(digest, str) or len(digest) != 64:
            raise TypeError("'sha256' is not a SHA-256")
        return cls(
            action=_choice(record, "action", MODES),
            source=_path(record, "source"),
            destination=_path(record, "destination"),
            temp=_path(record, "temp"),
            content=Fingerprint(size, digest),
        )

    def to_record(self, index: int) -> dict[str, Any]:
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
    # Failed with the photo gone from its place and no record of where: undo cannot put it back.
    unaccounted: bool = False
    planned_size: int | None = None  # the photo's size as the sort began (journals from before it: None)
    undo_temps: list[Path] = field(default_factory=list)
    undone: bool = False

    @property
    def last_intent(self) -> Intent | None:
        return self.intents[-1] if self.intents else None

    @property
    def done_intent(self) -> Intent:
        """The intent that an operation recorded as done carried out (read_journal refuses a done without one)."""
        if self.last_intent is None:
            raise JournalError(f"operation {self.index} is recorded as done but has no intent")
        return self.last_intent


@dataclass
class JournalState:
    """A journal read back: the plan, each operation's state, and whether it ended or was undone."""

    path: Path
    plan: SortPlan
    operations: list[OperationState]
    created: str = ""  # UTC time the sort started, as written in the journal
    created_dirs: list[Path] = field(default_factory=list)
    ended: bool = False
    stopped: bool = False
    undo_started: bool = False
    undo_ended: bool = False
    undo_unaccounted: int = 0  # photos the undo found gone with no record of where they went

    @property
    def pending(self) -> list[OperationState]:
        """Operations with no outcome yet: not started, or cut off in the middle."""
        return [op for op in self.operations if op.outcome is None]

    @property
    def is_undone(self) -> bool:
        return self.undo_ended


def _parse_record(line: bytes) -> dict[str, Any] | None:
    """A JSON object, or None for a line that is not one (cut short, or not JSON at all)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _parse_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every record; a last line cut short by a kill never happened."""
    try:
        if path.stat().st_size > MAX_JOURNAL_BYTES:
            raise JournalError(f"{path} is too large to be a sort journal")
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise JournalError(f"cannot read the journal {path}: {error.strerror or error}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse_record(line)
        if record is None:
            if number == len(lines):
                break
            raise JournalError(f"the journal {path} is damaged at line {number}")
        records.append((number, record))
    return records


def read_journal(path: Path) -> JournalState:
    """Read a journal back into its plan and per-operation state.

    Raises JournalError naming the file and line for anything that is not what this version
    writes, so a damaged journal is reported, never half-understood.
    """
    records = _parse_lines(path)
    if not records:
        raise EmptyJournal(f"{path} holds no complete record")
    if records[0][1].get("type") != "start":
        raise JournalError(f"{path} is not a sort journal")
    number, start = records[0]
    if start.get("version") != FORMAT_VERSION:
        raise JournalError(f"{path} was written by another version (format {start.get('version')})")
    try:
        state = _start_state(path, start)
    except _MALFORMED as error:
        raise _damaged(path, number, error) from None
    for number, record in records[1:]:
        try:
            _apply(state, record)
        except _MALFORMED as error:
            raise _damaged(path, number, error) from None
    return state


# What reading a record with missing or mistyped fields raises.
_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError)
Choice = TypeVar("Choice", bound=str)


def _damaged(path: Path, number: int, error: Exception) -> JournalError:
    what = f"no {error.args[0]!r}" if isinstance(error, KeyError) else str(error) or type(error).__name__
    return JournalError(f"the journal {path} is damaged at line {number} ({what})")


def _text(record: dict[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{key!r} is not a name")
    return value


def _path(record: dict[str, Any], key: str) -> Path:
    return Path(_text(record, key))


def _choice(record: dict[str, Any], key: str, allowed: tuple[Choice, ...]) -> Choice:
    value = record[key]
    for choice in allowed:
        if value == choice:
            return choice
    raise ValueError(f"{key!r} is {value!r}")


def _size(record: dict[str, Any]) -> int | None:
    """A planned operation's recorded size: a hint, so anything but a size reads as none."""
    size = record.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def within_by_name(path: Path, folder: Path) -> bool:
    """`path` is `folder` or below it, by name alone (the journal is read without the disk)."""
    return path.is_absolute() and ".." not in path.parts and path.is_relative_to(folder)


def _start_state(path: Path, start: dict[str, Any]) -> JournalState:
    operations = start["operations"]
    if not isinstance(operations, list):
        raise TypeError("'operations' is not a list")
    planned = [
        PlannedOperation(
            _path(op, "source"), _path(op, "destination"), _choice(op, "action", ACTIONS), str(op["folder"])
        )
        for op in operations
    ]
    min_confidence = start["min_confidence"]
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)):
        raise TypeError("'min_confidence' is not a number")
    plan = SortPlan(_path(start, "target"), _choice(start, "mode", MODES), float(min_confidence), planned)
    if not plan.target.is_absolute() or not all(op.source.is_absolute() for op in planned):
        raise ValueError("the plan holds a relative path")
    state = JournalState(
        path,
        plan,
        [
            OperationState(i, op, planned_size=_size(record))
            for i, (op, record) in enumerate(zip(planned, operations, strict=True))
        ],
    )
    state.created = str(start.get("created", ""))
    return state


def _operation(state: JournalState, record: dict[str, Any]) -> OperationState:
    index = record["id"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(state.operations):
        raise IndexError(f"operation {index!r} is not in the plan")
    return state.operations[index]


def _apply(state: JournalState, record: dict[str, Any]) -> None:
    """Fold one record after the start into the state."""
    kind = record.get("type")
    if kind == "intent":
        op = _operation(state, record)
        intent = Intent.from_record(record)
        # Undo and resume move files by these names: they must be the plan's, inside its target.
        if intent.source != op.planned.source:
            raise ValueError("the intent's source is not the planned one")
        if (
            not within_by_name(intent.destination, state.plan.target)
            or intent.temp.parent != intent.destination.parent
        ):
            raise ValueError("the intent's destination is not inside the target")
        op.intents.append(intent)
    elif kind in ("done", "duplicate", "failed"):
        op = _operation(state, record)
        op.outcome = kind
        op.reason = str(record.get("reason", ""))
        op.unaccounted = kind == "failed" and record.get("unaccounted") is True
        if kind == "done" and op.last_intent is None:
            raise ValueError("an operation is done with no intent before it")
        if kind == "duplicate":
            op.planned = PlannedOperation(
                op.planned.source, _path(record, "existing"), "duplicate", op.planned.folder
            )
    elif kind == "abandoned":
        _operation(state, record)  # the name was taken at the last moment; a new intent follows
    elif kind == "mkdir":
        folder = _path(record, "path")
        if not (within_by_name(folder, state.plan.target) or within_by_name(state.plan.target, folder)):
            raise ValueError("a created folder is not on the way to the target")
        state.created_dirs.append(folder)
    elif kind == "end":
        state.ended, state.stopped = True, bool(record.get("stopped"))
    elif kind == "undo-start":
        state.undo_started = True
    elif kind == "undo-intent":
        op = _operation(state, record)
        temp = _path(record, "temp")
        if temp.parent != op.planned.source.parent:
            raise ValueError("an undo's temporary file is not next to the original")
        op.undo_temps.append(temp)
    elif kind == "undo-done":
        _operation(state, record).undone = True
    elif kind == "undo-end":
        state.undo_ended = True
        unaccounted = record.get("unaccounted", 0)
        state.undo_unaccounted = (
            unaccounted if isinstance(unaccounted, int) and not isinstance(unaccounted, bool) else 0
        )
    else:
        raise ValueError(f"unknown record type {kind!r}")
