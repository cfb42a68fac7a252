"""When Qt's xcb plugin cannot load, the app names the missing libraries and packages.

Qt itself only says "xcb-cursor0 or libxcb-cursor0 is needed" (even when it is installed) and
aborts. The last test reproduces a machine without libxcb-icccm4 and libxcb-keysyms1 for real:
in a private mount namespace, an overlay hides the two libraries from this one process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catbreed_desktop.gui.platform_check import (
    debian_package,
    explain,
    missing_libraries,
    missing_xcb_libraries,
    no_display_reason,
    uses_xcb,
    xcb_plugin,
)

ROOT = Path(__file__).resolve().parents[1]
LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f1)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f2)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
"""


def test_the_missing_libraries_are_named_with_their_debian_packages() -> None:
    missing = missing_libraries(LDD_OUTPUT)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    assert [debian_package(name) for name in missing] == ["libxcb-icccm4", "libxcb-keysyms1"]
    assert debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert debian_package("libxcb-render-util.so.0") == "libxcb-render-util0"
    message = explain(missing)
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in message
    assert "cursor" not in message.split("(Fedora")[0]  # not the library Qt blames


def test_the_check_runs_only_where_qt_will_use_xcb() -> None:
    ldd_calls: list[Path] = []

    def ldd(library: Path) -> str:
        ldd_calls.append(library)
        return LDD_OUTPUT

    plugin = Path("/venv/libqxcb.so")
    if sys.platform.startswith("linux"):
        assert missing_xcb_libraries({}, ldd, plugin) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
        assert uses_xcb({"QT_QPA_PLATFORM": "xcb"})
    assert missing_xcb_libraries({"QT_QPA_PLATFORM": "offscreen"}, ldd, plugin) == []
    assert missing_xcb_libraries({"QT_QPA_PLATFORM": "wayland;xcb"}, ldd, plugin) == []
    assert not uses_xcb({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"})
    assert ldd_calls == ([plugin] if sys.platform.startswith("linux") else [])


LINUX_ONLY = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="displays are a Linux matter here"
)


@LINUX_ONLY
def test_no_display_is_found_unless_a_display_or_a_platform_without_one_is_there() -> None:
    for nothing in ({}, {"QT_QPA_PLATFORM": "xcb"}, {"QT_QPA_PLATFORM": "wayland;xcb"}, {"DISPLAY": ""}):
        assert (no_display_reason(nothing) or "").startswith("no display: "), nothing
    for shown in (
        {"DISPLAY": ":0"},
        {"WAYLAND_DISPLAY": "wayland-0"},
        {"QT_QPA_PLATFORM": "offscreen"},
        {"QT_QPA_PLATFORM": "vnc:size=800x600"},
    ):
        assert no_display_reason(shown) is None, shown


@LINUX_ONLY
def test_the_app_without_a_display_says_so_in_one_line_instead_of_aborting(tmp_path: Path) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    completed = subprocess.run(
        [sys.executable, "-m", "catbreed_desktop", str(tmp_path)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1, completed.stderr  # Qt's abort is -6 (134 from a shell)
    assert completed.stderr.startswith("catbreed-desktop: no display: ")
    assert completed.stderr.count("\n") == 1 and completed.stdout == ""


def _can_hide_libraries() -> bool:
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and shutil.which("unshare") is not None
        and shutil.which("ldd") is not None
        and xcb_plugin() is not None
        and Path("/usr/lib/x86_64-linux-gnu/libxcb-icccm.so.4").exists()
    )


@pytest.mark.skipif(not _can_hide_libraries(), reason="needs root, unshare, ldd and the libraries to hide")
def test_the_app_names_the_really_missing_libraries_on_a_machine_without_them(tmp_path: Path) -> None:
    libraries = Path("/usr/lib/x86_64-linux-gnu")
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    for name in ("libxcb-icccm.so.4", "libxcb-keysyms.so.1"):
        for hidden in {name, os.path.realpath(libraries / name).rsplit("/", 1)[1]}:
            os.mknod(upper / hidden, 0o600 | 0o020000, os.makedev(0, 0))  # an overlay "whiteout"
    mount = f"mount -t overlay overlay -o lowerdir={libraries},upperdir={upper},workdir={work} {libraries}"
    app = f"{sys.executable} -m catbreed_desktop --screenshot {tmp_path / 'never.png'}"
    try:
        completed = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mount} && exec {app}"],
            cwd=ROOT,
            env={**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": ":99"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError as error:
        pytest.skip(f"cannot make a mount namespace here: {error}")
    if "mount:" in completed.stderr or "unshare:" in completed.stderr:
        pytest.skip(f"cannot hide libraries here: {completed.stderr.strip()}")
    assert completed.returncode == 1, completed.stderr  # not Qt's abort (-6)
    assert "missing: libxcb-icccm.so.4, libxcb-keysyms.so.1" in completed.stderr
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in completed.stderr
