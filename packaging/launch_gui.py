"""Frozen entry point of the CatBreed window (PyInstaller needs a script, not module:function)."""

import multiprocessing

from catbreed_desktop.gui.app import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # worker processes re-enter this script when frozen
    raise SystemExit(main())
