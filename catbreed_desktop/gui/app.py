"""Starting the window: `catbreed-desktop [PATH...] [--model DIR] [--screenshot FILE]`, and adding
it to (or removing it from) the Linux desktop's menu with `--install-desktop-entry`.

Only Qt is imported before the window shows; the model loads in a background thread, so the
window opens at once and says which engine runs once the model is ready.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from catbreed_desktop.core.engines.names import PREFERENCES
from catbreed_desktop.core.settings import read_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catbreed-desktop", description="Browse, classify, review and sort cat photos by breed."
    )
    parser.add_argument("paths", nargs="*", type=Path, help="photos or folders to open")
    parser.add_argument("--model", type=Path, help="model bundle folder (default: the one in Settings)")
    parser.add_argument("--engine", choices=PREFERENCES, help="engine to use (default: the one in Settings)")
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="FILE",
        help="save a PNG of the window once every photo given is classified, then exit",
    )
    entry = parser.add_mutually_exclusive_group()
    entry.add_argument(
        "--install-desktop-entry",
        action="store_true",
        help="add CatBreed to this user's desktop menu and to 'Open with' for photos (Linux), then exit",
    )
    entry.add_argument(
        "--uninstall-desktop-entry", action="store_true", help="remove what --install-desktop-entry added"
    )
    return parser


def _desktop_entry(install: bool) -> int:
    """Run --install-desktop-entry or --uninstall-desktop-entry; the exit status."""
    from catbreed_desktop.core import desktop_entry
    from catbreed_desktop.core.errors import CatBreedError, error_line
    from catbreed_desktop.core.printable import printable

    try:
        if install:
            written = desktop_entry.install_desktop_entry()
        else:
            removal = desktop_entry.uninstall_desktop_entry()
    except (CatBreedError, OSError, ValueError) as error:  # ValueError: a path a desktop file cannot hold
        reason = error_line(error) if isinstance(error, CatBreedError) else printable(str(error))
        print(
            f"catbreed-desktop: cannot {'write' if install else 'remove'} the desktop entry: {reason}",
            file=sys.stderr,
        )
        return 1
    if install:
        for path in written:
            print(f"wrote {path}")
        return 0
    for path in removal.removed:
        print(f"removed {path}")
    for path, why in removal.kept:
        print(printable(f"catbreed-desktop: left {path}: {why}"), file=sys.stderr)
    if not removal.removed and not removal.kept:
        print("no desktop entry was installed")
    return 1 if removal.kept else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.install_desktop_entry or args.uninstall_desktop_entry:
        if sys.platform in ("win32", "darwin"):
            parser.error("desktop entries are for Linux and other freedesktop.org desktops")
        return _desktop_entry(install=args.install_desktop_entry)
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from catbreed_desktop.core.desktop_entry import APP_ID
    from catbreed_desktop.core.paths import app_icon_path
    from catbreed_desktop.gui import APP_TITLE
    from catbreed_desktop.gui.main_window import MainWindow
    from catbreed_desktop.gui.platform_check import explain, missing_xcb_libraries, no_display_reason

    existing = QApplication.instance()
    if existing is None and (reason := no_display_reason()):
        print(f"catbreed-desktop: {reason}", file=sys.stderr)  # Qt would abort, blaming a library
        return 1
    if existing is None and (missing := missing_xcb_libraries()):
        print(explain(missing), file=sys.stderr)  # Qt would abort, naming the wrong library
        return 1
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setApplicationName(APP_TITLE)  # also the X11 window class the desktop entry names
    app.setOrganizationName(APP_TITLE)
    # The Wayland app id: how the desktop matches the window to its menu entry and icon.
    app.setDesktopFileName(APP_ID)
    if app_icon_path().is_file():
        app.setWindowIcon(QIcon(str(app_icon_path())))
    loaded = read_settings()
    settings = loaded.settings
    if args.engine:
        settings.engine = args.engine
    window = MainWindow(settings, model_path=args.model, settings_problem=loaded.problem)
    window.show()
    if args.paths:
        window.add_inputs(args.paths)  # folders opened this way are recent folders too
    if args.screenshot is not None:
        window.screenshot_saved.connect(lambda path: (print(f"saved {path}"), window.close(), app.quit()))
        window.screenshot_when_done(args.screenshot)
    app.aboutToQuit.connect(window.shutdown)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
