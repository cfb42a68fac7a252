"""Frozen entry point of both programs: `catbreed` (command line) and `catbreed-desktop` (window).

PyInstaller needs a script, not module:function. This one serves both, chosen by the name it was
started as: packaging/catbreed.spec builds it as two executables on Windows and macOS, where only
the window may go without a console, and on Linux as one executable with `catbreed` a link to it,
which saves a second 6 MB copy of every Python module.
"""

import multiprocessing
import os
import sys


def main() -> int:
    if os.path.basename(sys.argv[0]).lower() in ("catbreed", "catbreed.exe"):
        from catbreed_desktop.cli.main import main as cli_main

        return cli_main()
    from catbreed_desktop.gui.app import main as gui_main

    return gui_main()


if __name__ == "__main__":
    multiprocessing.freeze_support()  # worker processes re-enter this script when frozen
    raise SystemExit(main())
