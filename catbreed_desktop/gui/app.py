"""Starting the window: `catbreed-desktop [PATH...] [--model DIR] [--screenshot FILE]`.

Only Qt is imported before the window shows; the model loads in a background thread, so the
window opens at once and says which engine runs once the model is ready.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from catbreed_desktop.core.settings import ENGINE_CHOICES, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catbreed-desktop", description="Browse, classify, review and sort cat photos by breed."
    )
    parser.add_argument("paths", nargs="*", type=Path, help="photos or folders to open")
    parser.add_argument("--model", type=Path, help="model bundle folder (default: the one in Settings)")
    parser.add_argument(
        "--engine", choices=ENGINE_CHOICES, help="engine to use (default: the one in Settings)"
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="FILE",
        help="save a PNG of the window once every photo given is classified, then exit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from PySide6.QtWidgets import QApplication

    from catbreed_desktop.gui import APP_TITLE
    from catbreed_desktop.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_TITLE)
    app.setOrganizationName(APP_TITLE)
    settings = load_settings()
    if args.engine:
        settings.engine = args.engine
    window = MainWindow(settings, model_path=args.model)
    window.show()
    if args.paths:
        window.add_inputs(args.paths, remember=False)
    if args.screenshot is not None:
        window.screenshot_saved.connect(lambda path: (print(f"saved {path}"), window.close(), app.quit()))
        window.screenshot_when_done(args.screenshot)
    app.aboutToQuit.connect(window.shutdown)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
