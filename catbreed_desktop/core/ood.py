"""The "not a cat" detector: Mahalanobis distance of a photo's embedding to the nearest breed.

The trainer fits one mean embedding per breed and a shared precision matrix (inverse covariance)
on the training photos, picks a threshold on held-out data, and stores them in the bundle's `ood`
section:

    {"method": "mahalanobis", "means": [[...] per label], "precision": [[...] D x D], "threshold": t}

A photo whose smallest distance to any breed is above the threshold is reported as "not a cat".
Both the trainer and the app score with `mahalanobis_scores`, so the threshold means the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from catbreed_desktop.core.errors import CatBreedError

METHOD = "mahalanobis"


class OodConfigError(CatBreedError, ValueError):
    """A bundle `ood` section that cannot be used, with the reason in words (a ValueError too, as before)."""


def mahalanobis_scores(embeddings: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """For each embedding (N, D), the smallest Mahalanobis distance to any class mean (C, D).

    `precision` is the (D, D) inverse covariance shared by all classes. Returns (N,) float64.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if x.ndim != 2 or mu.ndim != 2 or prec.shape != (mu.shape[1], mu.shape[1]) or x.shape[1] != mu.shape[1]:
        raise ValueError(
            f"shapes do not fit: embeddings {x.shape}, means {mu.shape}, precision {prec.shape}; "
            "expected (N, D), (C, D) and (D, D)"
        )
    # (x - mu)^T P (x - mu) = x^T P x - 2 x^T P mu + mu^T P mu, without an (N, C, D) temporary.
    x_p = x @ prec
    squared = (
        np.einsum("nd,nd->n", x_p, x)[:, None]
        - 2.0 * (x_p @ mu.T)
        + np.einsum("cd,de,ce->c", mu, prec, mu)[None, :]
    )
    # Rounding can make a distance of zero slightly negative.
    distances: np.ndarray = np.sqrt(np.maximum(squared, 0.0)).min(axis=1)
    return distances


@dataclass(frozen=True)
class OodDetector:
    """A checked `ood` section of a bundle, ready to score embeddings."""

    means: np.ndarray
    precision: np.ndarray
    threshold: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any], num_labels: int | None = None) -> OodDetector:
        """Validate a bundle's `ood` section; raise `OodConfigError` naming what is wrong."""
        if not isinstance(config, Mapping):
            raise OodConfigError(f"'ood' must be a JSON object, not {type(config).__name__}")
        method = config.get("method")
        if method != METHOD:
            raise OodConfigError(f"'ood' method {method!r} is not supported; only {METHOD!r} is")
        missing = [key for key in ("means", "precision", "threshold") if key not in config]
        if missing:
            raise OodConfigError(f"'ood' is missing {', '.join(repr(k) for k in missing)}")
        try:
            means = np.asarray(config["means"], dtype=np.float64)
            precision = np.asarray(config["precision"], dtype=np.float64)
            threshold = float(config["threshold"])
        except (TypeError, ValueError) as error:
            raise OodConfigError(f"'ood' holds non-numeric values ({error})") from None
        if means.ndim != 2 or means.shape[0] == 0:
            raise OodConfigError(f"'ood' means must be a (labels, D) matrix, not shape {means.shape}")
        if num_labels is not None and means.shape[0] != num_labels:
            raise OodConfigError(
                f"'ood' has {means.shape[0]} class means but the bundle has {num_labels} labels"
            )
        dim = means.shape[1]
        if precision.shape != (dim, dim):
            raise OodConfigError(f"'ood' precision must be {dim}x{dim}, not shape {precision.shape}")
        if not (np.isfinite(means).all() and np.isfinite(precision).all() and np.isfinite(threshold)):
            raise OodConfigError("'ood' holds NaN or infinite values")
        return cls(means=means, precision=precision, threshold=threshold)

    @property
    def embedding_size(self) -> int:
        return int(self.means.shape[1])

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Smallest distance to any breed for each embedding; larger means less cat-like."""
        return mahalanobis_scores(embeddings, self.means, self.precision)
