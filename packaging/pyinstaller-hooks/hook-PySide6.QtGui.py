"""PyInstaller hook for PySide6.QtGui: PyInstaller's own hook, less the Qt plugins the app never loads.

It replaces the stock hook (packaging/catbreed.spec puts this folder on `hookspath`, which wins)
so that a dropped plugin's own libraries (GTK, EGL device, network stacks) are not collected
either: PyInstaller follows the dependencies of every plugin a hook returns, and filtering the
result in the spec afterwards would leave those libraries behind.
"""

from pathlib import Path

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

# Plugin types the window needs none of: embedded-display input (evdev, tuio) and EGL devices.
DROPPED_TYPES = {"generic", "egldeviceintegrations"}
# Within these types, only the named plugins are kept; types not listed here are kept whole.
KEPT = {
    # xcb and Wayland for desktops, offscreen for `--screenshot` without one, and the native ones
    # where the spec builds for Windows or macOS.
    "platforms": {"qxcb", "qwayland", "qoffscreen", "qwindows", "qcocoa"},
    # Not qgtk3: it needs GTK 3 at run time (PyInstaller warned about libgtk-3.so.0) and pulled
    # in cairo and pango; the portal theme gives native file dialogs on GNOME and KDE alike.
    "platformthemes": {"qxdgdesktopportal"},
    # Photos are decoded by Pillow, not Qt; SVG stays for the desktop's icon themes.
    "imageformats": {"qsvg"},
    "wayland-shell-integration": {"xdg-shell"},
    "wayland-graphics-integration-client": {"qt-plugin-wayland-egl"},
}


def _plugin_name(path: str) -> str:
    name = Path(path).name.split(".")[0]
    return name[3:] if name.startswith("lib") else name


def _wanted(source: str, destination: str) -> bool:
    plugin_type = Path(destination).name
    if plugin_type in DROPPED_TYPES:
        return False
    return plugin_type not in KEPT or _plugin_name(source) in KEPT[plugin_type]


hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries = [(source, destination) for source, destination in binaries if _wanted(source, destination)]
