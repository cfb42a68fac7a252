"""The window's log file: full tracebacks of failed background work, for a bug report.

The window shows a failure as one line (`one_line`); the whole story goes to
`data_dir()/catbreed-desktop.log`, which rotates at `MAX_BYTES` so it never grows without bound.
A log file that cannot be written costs only the log: the window still shows the one line.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

from catbreed_desktop.core.paths import data_dir

LOG_FILE = "catbreed-desktop.log"
LOGGER_NAME = "catbreed_desktop.gui"
MAX_BYTES = 1_000_000
BACKUPS = 2


def log_path() -> Path:
    return data_dir() / LOG_FILE


def logger() -> logging.Logger:
    """The window's logger, writing to `log_path()`; the handler follows the data folder if it moves."""
    log = logging.getLogger(LOGGER_NAME)
    path = log_path()
    handlers = [h for h in log.handlers if isinstance(h, RotatingFileHandler)]
    if handlers and Path(handlers[0].baseFilename) == path.absolute():
        return log
    for handler in handlers:  # the data folder changed (tests redirect it): start a new file
        log.removeHandler(handler)
        handler.close()
    try:
        handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError:
        return log  # no file: the one-line reason in the window is all there is
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log


def one_line(error: BaseException) -> str:
    """The error in one line for the status bar: its message's first line, or its type's name."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def log_failure(kind: str, error: BaseException, details: str) -> str:
    """Write `details` (a formatted traceback) to the log; returns the line to show in the window."""
    logger().error("%s failed: %s\n%s", kind, one_line(error), details.rstrip())
    return one_line(error)
