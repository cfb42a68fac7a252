"""The "not a cat" detector: how far a photo's embedding lies from every breed, and how little
the classifier's logits say "some breed".

The trainer fits one mean embedding per breed and a shared precision matrix (inverse covariance)
on the training photos, picks a threshold on held-out data, and stores them in the bundle's `ood`
section. Two methods exist:

    {"method": "mahalanobis", "means": [[...] per label], "precision": [[...] D x D], "threshold": t}

scores a photo by its smallest Mahalanobis distance to any breed. The newer

    {"method": "mahalanobis_energy", "means": ..., "precision": ..., "threshold": t,
     "embedding_size": E, "features": [start, stop], "distance_scale": s_d, "energy_scale": s_e}

measures the distance on one span of the E-wide embedding (DINOv2: its mean patch token, which
keeps more of what the pretrained backbone saw than the CLS token fine-tuned for breeds) and adds
the energy -logsumexp(logits), each divided by its spread over validation cats. Distance alone
misses small grey face photos that land near the grey breeds; they also raise no breed's logit,
which the energy term sees.

    {"method": "mahalanobis_energy_non_cat", ... as above ..., "non_cat_weights": [...],
     "non_cat_bias": b, "non_cat_scale": s_n}

adds a third term, w . x + b on the same span divided by its spread over validation cats: a
linear cat-or-not direction fitted on cat photos against photos that hold no cat (the web
collection's folders of gin bottles, cities and motorcycles). Distance and energy only know what
cats look like; this term has seen what the rest of the world looks like, so the threshold can
sit far out in the cats' tail (a few cats in a thousand) and still catch photos without a cat.

A photo whose score is above the threshold is reported as "not a cat". Both the trainer and the
app score with `OodDetector.scores`, so the threshold means the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catbreed_desktop.core.errors import CatBreedError

METHOD = "mahalanobis"
METHOD_WITH_ENERGY = "mahalanobis_energy"
METHOD_WITH_NON_CAT = "mahalanobis_energy_non_cat"
METHODS = (METHOD, METHOD_WITH_ENERGY, METHOD_WITH_NON_CAT)


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


def energy_scores(logits: np.ndarray) -> np.ndarray:
    """-logsumexp of each row of logits (N, C): higher when no breed's logit stands out. (N,) float64."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    result: np.ndarray = -(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))
    return result


@dataclass(frozen=True)
class OodDetector:
    """A checked `ood` section of a bundle, ready to score embeddings (and logits)."""

    means: np.ndarray
    precision: np.ndarray
    threshold: float
    method: str = METHOD
    embedding_size: int = 0  # the model's whole embedding; the distance may use a span of it
    features: tuple[int, int] = (0, 0)
    distance_scale: float = 1.0
    energy_scale: float = 1.0
    # The cat-or-not direction over the span (empty: no such term), its bias and its spread.
    non_cat_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    non_cat_bias: float = 0.0
    non_cat_scale: float = 1.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], num_labels: int | None = None) -> OodDetector:
        """Validate a bundle's `ood` section; raise `OodConfigError` naming what is wrong."""
        if not isinstance(config, Mapping):
            raise OodConfigError(f"'ood' must be a JSON object, not {type(config).__name__}")
        method = config.get("method")
        if method not in METHODS:
            raise OodConfigError(
                f"'ood' method {method!r} is not supported; use one of {', '.join(map(repr, METHODS))}"
            )
        required: tuple[str, ...] = ("means", "precision", "threshold")
        if method in (METHOD_WITH_ENERGY, METHOD_WITH_NON_CAT):
            required += ("embedding_size", "features", "distance_scale", "energy_scale")
        if method == METHOD_WITH_NON_CAT:
            required += ("non_cat_weights", "non_cat_bias", "non_cat_scale")
        missing = [key for key in required if key not in config]
        if missing:
            raise OodConfigError(f"'ood' is missing {', '.join(repr(k) for k in missing)}")
        try:
            means = np.asarray(config["means"], dtype=np.float64)
            precision = np.asarray(config["precision"], dtype=np.float64)
            threshold = float(config["threshold"])
            scales = [
                float(config.get(key, 1.0)) for key in ("distance_scale", "energy_scale", "non_cat_scale")
            ]
            weights = np.asarray(config.get("non_cat_weights", []), dtype=np.float64)
            bias = float(config.get("non_cat_bias", 0.0))
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
        if method == METHOD_WITH_NON_CAT and weights.shape != (dim,):
            raise OodConfigError(
                f"'ood' non_cat_weights must be {dim} numbers like the means, not shape {weights.shape}"
            )
        finite = (means, precision, weights, np.asarray([threshold, bias]))
        if not all(np.isfinite(values).all() for values in finite):
            raise OodConfigError("'ood' holds NaN or infinite values")
        if not all(np.isfinite(scale) and scale > 0 for scale in scales):
            raise OodConfigError(f"'ood' scales must be positive numbers, not {scales}")
        size, features = _span(config, dim)
        return cls(
            means,
            precision,
            threshold,
            method,
            size,
            features,
            distance_scale=scales[0],
            energy_scale=scales[1],
            non_cat_weights=weights,
            non_cat_bias=bias,
            non_cat_scale=scales[2],
        )

    @property
    def uses_logits(self) -> bool:
        return self.method in (METHOD_WITH_ENERGY, METHOD_WITH_NON_CAT)

    def scores(self, embeddings: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """One score per photo; larger means less cat-like, above `threshold` means not a cat."""
        start, stop = self.features
        span = np.asarray(embeddings, dtype=np.float64)[:, start:stop]
        distances = mahalanobis_scores(span, self.means, self.precision)
        if not self.uses_logits:
            return distances
        if logits is None:
            raise ValueError(f"the {self.method!r} detector scores the logits too; none were given")
        result: np.ndarray = distances / self.distance_scale + energy_scores(logits) / self.energy_scale
        if self.method == METHOD_WITH_NON_CAT:
            result += (span @ self.non_cat_weights + self.non_cat_bias) / self.non_cat_scale
        return result

    def is_cat(self, embeddings: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """True where a photo scores at or under the threshold."""
        return np.asarray(self.scores(embeddings, logits) <= self.threshold)


def _span(config: Mapping[str, Any], dim: int) -> tuple[int, tuple[int, int]]:
    """(embedding size, [start, stop) of the span the distance uses), checked against the means."""
    if "features" not in config:
        return dim, (0, dim)
    try:
        size = int(config["embedding_size"])
        start, stop = (int(v) for v in config["features"])
    except (KeyError, TypeError, ValueError):
        raise OodConfigError(
            "'ood' features must be [start, stop] next to an integer embedding_size"
        ) from None
    if not 0 <= start < stop <= size or stop - start != dim:
        raise OodConfigError(
            f"'ood' features [{start}, {stop}) must lie within the {size}-wide embedding and be "
            f"{dim} wide like the means"
        )
    return size, (start, stop)
