"""How much each training photo counts: its source's weight, and its breed's when breeds are balanced.

`train` weighs the loss this way and `refit-head` weighs its fit the same way, so both read it
from here.
"""

from __future__ import annotations

import numpy as np

# `--class-weighting`: every breed weighs the same in the loss, or every photo does.
CLASS_WEIGHTINGS = ("balanced", "none")


def balanced_breed_weights(
    targets: list[int] | np.ndarray, num_labels: int, sample_weights: list[float] | np.ndarray | None = None
) -> np.ndarray:
    """Inverse-frequency weights n / (C * n_c), so every breed weighs the same in the loss.

    With sample weights (a source counted at a fraction), n and n_c are weighted counts."""
    weights_in = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float64)
    counts = np.bincount(np.asarray(targets, dtype=np.int64), weights=weights_in, minlength=num_labels)
    total = counts.sum()
    weights: np.ndarray = np.where(counts > 0, total / (num_labels * np.maximum(counts, 1e-12)), 1.0)
    return weights
