"""Why the window cannot open on Linux, said before Qt aborts with a misleading message.

Without a display at all (over ssh, DISPLAY and WAYLAND_DISPLAY unset) Qt still tries its X11
plugin and aborts with the same misleading message as below: `no_display_reason` says so first.

On a stock Debian or Ubuntu the xcb plugin of the PySide6 wheels needs system libraries that are
often missing (libxcb-icccm4, libxcb-keysyms1, libxcb-cursor0, ...). Qt then prints only that
"xcb-cursor0 or libxcb-cursor0 is needed", even when that one is installed, and aborts. Before
the window is created, `missing_xcb_libraries` asks the dynamic loader (`ldd`) which libraries
the plugin lacks, and `explain` names them with the packages that provide them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# Packages of the libraries the Qt 6 xcb plugin loads, where the name does not follow the usual
# rule (libfoo-bar.so.N is in libfoo-barN, libfoo.so.N in libfooN); Debian and Ubuntu alike.
DEBIAN_PACKAGES = {
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$", re.MULTILINE)

LddRunner = Callable[[Path], str]


def xcb_plugin() -> Path | None:
    """The xcb platform plugin of the installed PySide6, or None where there is none (not Linux)."""
    try:
        import PySide6
    except ImportError:
        return None
    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def uses_xcb(environment: Mapping[str, str]) -> bool:
    """Whether Qt will pick the xcb plugin: on Linux, unless another platform is asked for or Wayland runs."""
    if not sys.platform.startswith("linux"):
        return False
    platform = environment.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":")[0] == "xcb"  # "wayland;xcb" and the like have a fallback
    return not (environment.get("WAYLAND_DISPLAY") and environment.get("XDG_SESSION_TYPE") == "wayland")


# Platforms that show windows on a display server; the others (offscreen, vnc, eglfs...) need none.
DISPLAY_PLATFORMS = frozenset({"xcb", "wayland", "wayland-egl"})


def no_display_reason(environment: Mapping[str, str] = os.environ) -> str | None:
    """Why there is no display for the window here, as one line; None when there may be one."""
    if not sys.platform.startswith("linux"):
        return None
    if environment.get("DISPLAY") or environment.get("WAYLAND_DISPLAY"):
        return None
    # QT_QPA_PLATFORM: "offscreen", "xcb:option", or a fallback list such as "wayland;xcb".
    asked = {part.split(":")[0].strip() for part in environment.get("QT_QPA_PLATFORM", "").split(";")} - {""}
    if asked - DISPLAY_PLATFORMS:
        return None
    return (
        "no display: neither DISPLAY nor WAYLAND_DISPLAY is set, so the window has nowhere to show "
        "(over ssh, connect with `ssh -X`; the `catbreed` command needs no display)"
    )


def run_ldd(library: Path) -> str:
    """`ldd library`'s output; empty where there is no ldd or it fails."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return ""
    try:
        completed = subprocess.run(
            [ldd, str(library)], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return completed.stdout


def missing_libraries(ldd_output: str) -> list[str]:
    """The libraries `ldd` reports as "not found", each once, in its order."""
    return list(dict.fromkeys(_NOT_FOUND.findall(ldd_output)))


def debian_package(library: str) -> str:
    """The Debian/Ubuntu package that ships `library` (libxcb-icccm.so.4: libxcb-icccm4)."""
    if library in DEBIAN_PACKAGES:
        return DEBIAN_PACKAGES[library]
    match = re.fullmatch(r"(lib[\w.+-]+?)\.so\.(\d+)", library)
    if match is None:
        return library
    name, version = match.group(1).lower(), match.group(2)
    return f"{name}-{version}" if name[-1].isdigit() else f"{name}{version}"


def missing_xcb_libraries(
    environment: Mapping[str, str] = os.environ, ldd: LddRunner = run_ldd, plugin: Path | None = None
) -> list[str]:
    """The system libraries the xcb plugin lacks when Qt is about to use it; empty when it can load."""
    if not uses_xcb(environment):
        return []
    plugin = plugin if plugin is not None else xcb_plugin()
    return missing_libraries(ldd(plugin)) if plugin is not None else []


def explain(missing: list[str]) -> str:
    """The message for the terminal: what is missing, and the command that installs it."""
    packages = " ".join(dict.fromkeys(debian_package(library) for library in missing))
    return (
        "catbreed-desktop: Qt's X11 platform plugin (xcb) cannot load: these system libraries are "
        f"missing: {', '.join(missing)}.\n"
        f"On Debian or Ubuntu install them with: sudo apt-get install {packages}\n"
        "(Fedora: sudo dnf install xcb-util-wm xcb-util-keysyms xcb-util-cursor xcb-util-image "
        "xcb-util-renderutil libxkbcommon-x11; see README.md, 'On a fresh machine'.)"
    )
