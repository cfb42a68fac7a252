"""What `catbreed serve` leaves behind when it is killed: its processes and Triton's model folders.

Triton's Python backend runs the model's stub in processes of its own, which wait for `serve`
(pytriton answers their requests) and outlive a `kill -9` of it by minutes. `start_watchdog` starts
a small process that holds one end of a pipe from `serve`: every half second it notes every
process descended from `serve`, and when the pipe ends (serve exited or was killed: the kernel
closes its end either way) it kills those that are still the same processes (same start time).
It ignores Ctrl+C, which reaches the whole terminal group; `serve` stops Triton itself then.

`remove_stale_model_folders` clears the model folders Triton copies into the temporary folder
(`folderXXXXXX`, made by mkdtemp) that a killed server left, recognising only its own: a real
folder, not a link, owned by this user, with a `config.pbtxt` carrying catbreed's metadata, that
no running process names on its command line.

Linux only (it reads /proc); elsewhere both do nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_S = 0.5
PROC = Path("/proc")
TRITON_FOLDER = re.compile(r"folder[A-Za-z0-9]{6}")
CATBREED_MARKER = b"catbreed_model_sha256"
# A folder younger than this may belong to a server that is starting right now.
STALE_AFTER_S = 60.0


def _start_time(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live, non-zombie process; None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live process below `root`, by pid, with its start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (info := _start_time(int(entry.name))) is not None:
            children.setdefault(info[0], []).append((int(entry.name), info[1]))
    found: dict[int, int] = {}
    queue = [root]
    while queue:
        for pid, started in children.get(queue.pop(), []):
            if pid not in found:
                found[pid] = started
                queue.append(pid)
    return found


def watch(parent: int, pipe: int, acknowledge: int | None = None) -> None:
    """Note `parent`'s descendants until `pipe` ends, then kill the ones still alive.

    A byte on `pipe` asks for a fresh look at once, acknowledged by a byte on `acknowledge`.
    """
    known: dict[int, int] = {}
    asked = 0
    while True:
        known = {pid: t for pid, t in known.items() if (i := _start_time(pid)) is not None and i[1] == t}
        known.update(descendants(parent))
        if asked and acknowledge is not None:
            with contextlib.suppress(OSError):  # serve gone: the pipe's end comes next
                os.write(acknowledge, b"." * asked)
        asked = 0
        ready, _, _ = select.select([pipe], [], [], POLL_S)
        if ready:
            asked = len(os.read(pipe, 4096))
            if not asked:
                break
        elif _start_time(parent) is None:
            break
    known.pop(os.getpid(), None)
    for pid, started in known.items():
        info = _start_time(pid)
        if info is not None and info[1] == started:  # not a pid reused since
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class Watchdog:
    """The watchdog process of this one; `close()` (or this process ending) lets it do its work."""

    def __init__(self, process: subprocess.Popen[bytes] | None) -> None:
        self.process = process

    def refresh(self, timeout_s: float = 10.0) -> bool:
        """Have the watchdog note the processes below this one now (Triton's, once it has started
        them), not only at its next look; returns whether it said it has."""
        if self.process is None or self.process.stdin is None or self.process.stdout is None:
            return False
        try:
            self.process.stdin.write(b"?")
            self.process.stdin.flush()
        except OSError:
            return False
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        return bool(ready) and os.read(self.process.stdout.fileno(), 1) == b"."

    def close(self, wait_s: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=wait_s)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_watchdog() -> Watchdog:
    """Start the watchdog of this process's descendants (Linux; elsewhere a Watchdog that does nothing)."""
    if not PROC.joinpath("self", "stat").exists() or getattr(sys, "frozen", False):
        return Watchdog(None)
    process = subprocess.Popen(
        [sys.executable, "-m", "catbreed_desktop.core.engines.triton.watchdog", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        close_fds=True,
    )
    return Watchdog(process)


def remove_stale_model_folders(folder: Path | None = None, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the Triton model folders of catbreed servers that are gone from `folder` (the temporary
    folder by default); returns those removed."""
    root = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    if not PROC.is_dir():
        return []
    try:
        candidates = [entry for entry in root.iterdir() if TRITON_FOLDER.fullmatch(entry.name)]
    except OSError:
        return []
    removed = []
    in_use: str | None = None
    for candidate in candidates:
        try:
            info = candidate.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if time.time() - info.st_mtime < older_than_s or not _holds_catbreed_model(candidate):
            continue
        if in_use is None:
            in_use = _all_command_lines()
        if str(candidate) in in_use:
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def _holds_catbreed_model(folder: Path, depth: int = 3) -> bool:
    """Whether a config.pbtxt with catbreed's metadata lies within `depth` levels, through no link."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.name == "config.pbtxt" and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError), open(entry.path, "rb") as handle:
                if CATBREED_MARKER in handle.read(1 << 20):
                    return True
        elif (
            depth > 1
            and entry.is_dir(follow_symlinks=False)
            and _holds_catbreed_model(Path(entry.path), depth - 1)
        ):
            return True
    return False


def _all_command_lines() -> str:
    lines = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
    return "\n".join(lines)


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group; serve stops Triton
    watch(int(sys.argv[1]), sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == "__main__":
    _main()
