"""Frozen entry point of the `catbreed` command (PyInstaller needs a script, not module:function)."""

import multiprocessing

from catbreed_desktop.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # worker processes re-enter this script when frozen
    raise SystemExit(main())
