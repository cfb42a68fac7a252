"""Whole-file writes that a crash cannot leave half done, and the SHA-256 of a file's bytes.

`atomic_write` writes a file beside its target under a unique hidden name, syncs it to disk, then
renames it over the target and syncs the folder: readers see the old file or the new one, never a
mix, and a failure leaves no temporary file behind. It replaces an existing file, so it is for the
app's own files (caches, settings, exports, checkpoints); moving people's photos never replaces
anything and lives in `sorting.fileops`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024
TEMP_SUFFIX = ".tmp"
# A target name longer than this many bytes is shortened in the temporary name, so that the marker
# and suffix still fit the 255 bytes every common file system allows a name.
_TEMP_NAME_BYTES = 200


def file_digest(path: str | os.PathLike[str], chunk_size: int = CHUNK) -> tuple[int, str]:
    """The size and hex SHA-256 of the bytes read from a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = CHUNK) -> str:
    """Hex SHA-256 of a file's bytes."""
    return file_digest(path, chunk_size)[1]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    if os.name == "nt":
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems (network shares) cannot sync a folder; the data itself is synced
    finally:
        os.close(handle)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, durable: bool = True
) -> None:
    """Replace the file at `path` with what `write` writes to the binary stream it is given.

    The stream is a new file beside `path` under a unique hidden name; once `write` returns it is
    synced, renamed over `path` and the folder synced. If anything fails, the temporary file is
    removed and the old file at `path`, if any, is untouched. `durable=False` skips both syncs, for
    caches that can be rebuilt: readers still never see half a file, but a power cut may lose it.
    """
    target = Path(path)
    temporary, fd = _create_temporary(target)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at `path` with `data`, whole or not at all (see `atomic_write`)."""
    atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Replace the file at `path` with `text` in `encoding`, whole or not at all (see `atomic_write`)."""
    atomic_write_bytes(path, text.encode(encoding))


def _create_temporary(target: Path) -> tuple[Path, int]:
    """A new, empty file beside `target` with a name no one else uses, and its descriptor."""
    stem = target.name
    if len(os.fsencode(stem)) > _TEMP_NAME_BYTES:
        stem = stem[: _TEMP_NAME_BYTES // 4]  # a character takes at most 4 bytes
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = target.with_name(f".{stem}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
        try:
            # 0o666 under the umask, as open() would give: mkstemp's 0o600 would make an exported
            # file unreadable to others once it takes the target's place.
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue
