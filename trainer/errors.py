"""The trainer's error types, both `CatBreedError`s, so the command line shows each as one line.

A `TrainerError` is bad input or state the user can fix (exit 2); a `CheckFailed` is a quality
check that refused a result (exit 1). Bundle, photo and engine errors from the app's core reach
the command line the same way (see `catbreed_desktop.core.errors`).
"""

from __future__ import annotations

from catbreed_desktop.core.errors import SOME_FAILED, CatBreedError


class TrainerError(CatBreedError):
    """Bad input or state the user can fix, with the reason in words."""


class CheckFailed(CatBreedError):
    """A quality check refused the result, e.g. an ONNX export that disagrees with PyTorch."""

    exit_status = SOME_FAILED
    label = "check failed"
