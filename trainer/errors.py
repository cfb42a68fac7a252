"""The trainer's error types: a `TrainerError` is the user's to fix and is shown as one line
(exit 2); a `CheckFailed` is a quality check that refused a result (exit 1)."""

from __future__ import annotations


class TrainerError(Exception):
    """Bad input or state the user can fix, with the reason in words."""


class CheckFailed(Exception):
    """A quality check refused the result, e.g. an ONNX export that disagrees with PyTorch."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types printed as one line without a traceback."""
    from catbreed_desktop.core.bundle import BundleError
    from catbreed_desktop.core.engines.base import EngineUnavailable

    return (TrainerError, BundleError, EngineUnavailable)
