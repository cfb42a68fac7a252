"""A real `catbreed serve` for tests and benchmarks: its own environment, a subprocess, loopback ports.

pytriton needs numpy < 2 and the dev environment has numpy 2, so the server runs from a separate
virtual environment with `pip install -e <checkout>[cpu,serve]`. It is built once per machine and
kept in `~/.cache/catbreed-test-venvs/<key>` (or $CATBREED_SERVE_VENVS), the key being a hash of
the checkout's path, pyproject.toml and the Python version: an editable install follows code
changes by itself, a change to the dependencies makes a new one, and another checkout (a worktree,
CI's clone) never runs this one's code. Building takes about a minute with a warm pip cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 900
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30


def serve_unsupported_reason() -> str | None:
    """Why the pytriton wheel cannot run here (it is built for Linux x86-64, glibc 2.35+); None when it can."""
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return "nvidia-pytriton ships tritonserver for Linux x86-64 only"
    libc, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split() if hasattr(os, "confstr") else ("", "0")
    if libc != "glibc" or tuple(int(part) for part in version.split(".")[:2]) < (2, 35):
        return f"nvidia-pytriton needs glibc 2.35 or newer, this is {libc} {version}"
    return None


def venv_folder() -> Path:
    identity = (
        str(CHECKOUT.resolve()).encode() + (CHECKOUT / "pyproject.toml").read_bytes() + sys.version.encode()
    )
    key = hashlib.sha256(identity).hexdigest()[:16]
    root = Path(os.environ.get("CATBREED_SERVE_VENVS", Path.home() / ".cache" / "catbreed-test-venvs"))
    return root / f"serve-py{sys.version_info[0]}{sys.version_info[1]}-{key}"


def serve_python() -> Path:
    """The Python of the serving environment, built first if needed; raises RuntimeError when the build fails."""
    folder = venv_folder()
    python = folder / "bin" / "python"
    done = folder / ".complete"
    if done.is_file():
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same one
        if done.is_file():
            return python
        building = folder.with_name(folder.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        started = time.monotonic()
        steps = (
            [sys.executable, "-m", "venv", str(building)],
            [str(building / "bin" / "python"), "-m", "pip", "install", "-q", "-e", f"{CHECKOUT}[cpu,serve]"],
        )
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if result.returncode:
                raise RuntimeError(
                    f"building the serving environment failed: {' '.join(step)}\n{result.stderr[-3000:]}"
                )
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(
            folder
        )  # the venv's scripts name their own path: rename keeps python, not console scripts
        (folder / ".complete").write_text(f"{time.monotonic() - started:.1f} s\n")
    return python


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running `catbreed serve` subprocess (its own process group) and where it listens."""

    process: subprocess.Popen[bytes]
    http_url: str
    grpc_url: str
    log: Path
    started_in_s: float

    def kill(self) -> None:
        """SIGKILL the whole group (catbreed, tritonserver, the model's stub) at once: a crash, not a stop."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; SIGKILL for whatever is left after STOP_TIMEOUT_S."""
        if self.process.poll() is None:
            # To catbreed alone: it stops Triton, which unloads the model; a SIGTERM to the whole
            # group would also end the model's stub first, and Triton then waits 30 s for it.
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):  # tritonserver, should it outlive its parent
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_server(model: Path, log: Path, *extra: str) -> Iterator[Server]:
    """`catbreed serve --model MODEL` on free loopback ports, until the block ends."""
    python = serve_python()
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    command = [
        str(python), "-m", "catbreed_desktop.cli.main", "serve", "--model", str(model),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port), *extra,
    ]  # fmt: skip
    # The data folder (where Triton's log goes) beside the log, never the user's: a module's server
    # starts before the per-test folders are set.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CATBREED_DATA_DIR": str(log.parent / "data")}
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}", log, 0.0)
    try:
        deadline = started + READY_TIMEOUT_S
        while b"\nready: " not in b"\n" + log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"catbreed serve did not get ready:\n{log.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.2)
        server.started_in_s = time.monotonic() - started
        yield server
    finally:
        server.stop()
