"""File operations that never overwrite and never lose a file: no-replace renames, verified copies.

Every function here either completes or raises with the source untouched; a destination that
already exists is never replaced, even if it appears a moment before the operation (a race).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catbreed_desktop.core.errors import SOME_FAILED, CatBreedError
from catbreed_desktop.core.files import file_digest, fsync_dir
from catbreed_desktop.core.open_files import open_for_writing
from catbreed_desktop.core.sorting.folder_names import truncate_to_bytes

CHUNK = 1024 * 1024
TEMP_SUFFIX = ".catbreed-part"

_RENAME_NOREPLACE = 1  # linux/fs.h
_RENAME_EXCL = 0x4  # macOS sys/stdio.h, for renamex_np
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EPERM, getattr(errno, "ENOTSUP", errno.EINVAL)}


class VerificationError(CatBreedError, OSError):
    """A copy does not have the bytes of its source; the source is kept and the copy removed.

    An OSError too: sorting reports it with the other file errors as one photo that failed.
    """

    exit_status = SOME_FAILED


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a file's content: its size and SHA-256."""

    size: int
    sha256: str


def fingerprint(path: Path) -> Fingerprint:
    """Size and SHA-256 of a file's bytes."""
    return Fingerprint(*file_digest(path, CHUNK))


def has_content(path: Path, expected: Fingerprint) -> bool:
    """Whether `path` is a regular file with exactly the expected bytes (False when missing)."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size != expected.size:
            return False
        return fingerprint(path) == expected
    except OSError:
        return False


def _load_native_rename() -> Callable[[bytes, bytes], int] | None:
    """The C function that renames without replacing on this platform, or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux"):
        function = getattr(libc, "renameat2", None)
        if function is None:
            return None
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        return lambda src, dst: function(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE)
    if sys.platform == "darwin":
        function = getattr(libc, "renamex_np", None)
        if function is None:
            return None
        function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        return lambda src, dst: function(src, dst, _RENAME_EXCL)
    return None


_native_rename = None if os.name == "nt" else _load_native_rename()


def _native_rename_no_replace(source: Path, destination: Path) -> bool:
    """Try the atomic kernel rename; False when this file system does not offer it."""
    if _native_rename is None:
        return False
    result = _native_rename(os.fsencode(source), os.fsencode(destination))
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(destination))


def rename_no_replace(source: Path, destination: Path) -> None:
    """Rename `source` to `destination`, raising FileExistsError rather than replacing anything.

    Raises OSError(EXDEV) when the two are on different file systems. Prefers the atomic kernel
    call (renameat2 / renamex_np; plain rename already refuses to replace on Windows), then a hard
    link + unlink (the link fails if the name is taken), then, on file systems without hard links,
    reserving the name with an exclusive create so the rename can only replace our own placeholder.
    """
    if os.name == "nt":
        os.rename(source, destination)
        return
    if _native_rename_no_replace(source, destination):
        return
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.EXDEV):
            raise
        _reserve_then_rename(source, destination)
        return
    os.unlink(source)


def _reserve_then_rename(source: Path, destination: Path) -> None:
    """Last resort without atomic no-replace primitives: claim the name first, then rename onto it."""
    handle = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(handle)
    try:
        os.replace(source, destination)
    except OSError:
        os.unlink(destination)
        raise


def temp_name_for(destination: Path, tag: str) -> Path:
    """A hidden name next to `destination` for a copy in progress, unique for this operation."""
    # Cut by bytes, not characters: 100 characters of a non-Latin name can exceed 255 bytes.
    return destination.with_name(f".{truncate_to_bytes(destination.name, 100)}.{tag}{TEMP_SUFFIX}")


def _copy_bytes(source: Path, temp: Path) -> None:
    """Copy the bytes of `source` into the new file `temp` and force them to disk."""
    with open(source, "rb") as reader, open(temp, "xb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK)
        writer.flush()
        os.fsync(writer.fileno())
    shutil.copystat(source, temp)


def verified_copy(source: Path, destination: Path, temp: Path, expected: Fingerprint) -> None:
    """Copy `source` to `destination` through `temp`, checking the bytes before the copy gets its name.

    The temporary file is written, synced and compared (size and SHA-256) with `expected`, then put
    in place with a no-replace rename; on any failure the temporary file is removed and the error
    raised, with `destination` and `source` untouched.
    """
    try:
        _copy_bytes(source, temp)
        if not has_content(temp, expected):
            raise VerificationError(
                errno.EIO, "the copy does not match the original (size or SHA-256 differ)", str(temp)
            )
        rename_no_replace(temp, destination)
    except BaseException:
        # BaseException too: a stop request or Ctrl+C must not leave a half copy behind.
        remove_if_exists(temp)
        raise
    fsync_dir(destination.parent)


class SourceChangedError(CatBreedError, OSError):
    """The source was written while it was being moved; it is kept and the copy removed.

    An OSError too, so that sorting reports it as one photo that failed, like any file error.
    """

    exit_status = SOME_FAILED


# Only a source written this recently (seconds) is looked for in other programs' open files: the
# look costs a pass over /proc, and a bulk sort of older photos should not pay it once per photo.
RECENT_WRITE_S = 3600.0


def move_file(source: Path, destination: Path, temp: Path, expected: Fingerprint) -> None:
    """Move `source` to `destination` without replacing anything; across file systems, copy and verify.

    On the same file system this is one atomic rename. Across file systems (EXDEV) the file is copied
    through `temp`, verified against `expected` and put in place; the source is removed only if it
    is still the file that was copied (same inode, size and time stamp) and no other program has it
    open for writing. Otherwise the copy is removed again and SourceChangedError raised, the source
    left as it is: the copy was checked against bytes the source no longer has, or soon will not.
    """
    try:
        rename_no_replace(source, destination)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    else:
        fsync_dir(destination.parent)
        fsync_dir(source.parent)
        return
    before = os.stat(source)
    verified_copy(source, destination, temp, expected)
    try:
        problem = _why_source_must_stay(source, before)
    except FileNotFoundError:
        return  # someone else removed it meanwhile; the verified copy is the photo now
    if problem is not None:
        remove_if_exists(destination)
        fsync_dir(destination.parent)
        raise SourceChangedError(errno.EBUSY, problem, str(source))
    os.unlink(source)
    fsync_dir(source.parent)


def _why_source_must_stay(source: Path, before: os.stat_result) -> str | None:
    """Why removing `source` now could lose bytes the copy lacks, or None when it is safe."""
    now = os.stat(source)
    identity = (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns)
    if identity != (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns):
        return "the photo changed while it was being moved; it was left where it is"
    # A writer pausing between two parts (a motion photo's video, say) changes nothing until it
    # goes on, by which time the source would be gone: only its open file tells.
    if time.time() - now.st_mtime < RECENT_WRITE_S and source in (open_for_writing([source]) or ()):
        return "the photo is still open for writing in another program; it was left where it is"
    return None


def same_entry(first: Path, second: Path) -> bool:
    """Whether two paths name one and the same directory entry, links in their folders followed.

    `os.path.samefile` would also say yes for a symbolic link to the file and for a hard link,
    where removing one name keeps the photo; here only "the very same entry" counts, where removing
    one name removes the photo. A name that cannot be examined counts as the same entry, because
    that is the answer that never leads to a removal.
    """
    try:
        first_info, second_info = os.lstat(first), os.lstat(second)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if not os.path.samestat(first_info, second_info):
        return False
    try:
        same_folder = os.path.samefile(first.parent, second.parent)
    except OSError:
        return True
    # Two names of one inode in one folder are hard links, unless the names differ only in the way
    # a case-insensitive file system ignores; then they may be one entry, and keeping both is safe.
    return same_folder and first.name.casefold() == second.name.casefold()


def is_regular_file(path: Path) -> bool:
    """A regular file at `path` itself: a symbolic link there is not one, whatever it points to."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def holds_its_own_copy(original: Path, other: Path, expected: Fingerprint) -> bool:
    """Whether `original` is a regular file of its own (not a link, not `other` itself) with the expected bytes.

    Only then may `other` be removed without losing the photo.
    """
    return is_regular_file(original) and not same_entry(original, other) and has_content(original, expected)


def remove_if_exists(path: Path) -> bool:
    """Remove a file if it is there; True when something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
