"""Fitting the "not a cat" detector a bundle carries, and its ood.npz in WORKDIR/eval.

The detector itself (how a photo is scored) is `catbreed_desktop.core.ood.OodDetector`; this
module chooses its numbers from a model's outputs:

- class means and a shared, Ledoit-Wolf-shrunk precision of the training embeddings (on the
  model's mean patch token where it has one, see `trainer.modeling.mean_patch_span`);
- the spread (95th percentile minus median) of the distance and of the energy over validation
  cats, so that each term counts about as much as the other;
- the threshold: the 96th percentile of validation cats' scores, so about 4 % of real cat
  photos are flagged;
- given photos without a cat (`non_cats`: the web collection's junk folders), a third term: a
  logistic regression of training cats against them, on the same span. That detector is sharp
  enough to move its threshold to the 99.5th percentile: at 0.5 % overall, a breed of 25 test
  photos (the smallest) is flagged twice, 8 %, by chance about once in 140 breeds, where at 4 %
  one breed in four would be (binomial); flags are not spread evenly either (unusual poses, a
  cat held by a person), so the margin is needed.

The held-out negatives of `trainer.negatives` never take part: they only measure it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from catbreed_desktop.core.ood import (
    METHOD,
    METHOD_WITH_ENERGY,
    METHOD_WITH_NON_CAT,
    OodDetector,
    energy_scores,
    mahalanobis_scores,
)

# 96th, not 95th: the share of flagged cats varies by about a point from split to split (5.0 % of
# validation cats at the 95th percentile flagged 5.7 % of test cats), and the aim is at most 5 %.
OOD_PERCENTILE = 96.0
NON_CAT_PERCENTILE = 99.5
# Strong regularisation: a few hundred photos of each kind, 384 dimensions; the direction must
# generalise to photos unlike the junk folders (faces, drawings), not separate those folders.
_NON_CAT_C = 0.01
OOD_FILE = "ood.npz"
_SPREAD_PERCENTILE = 95.0


def fit_class_gaussians(
    embeddings: np.ndarray, targets: np.ndarray, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """(class means (C, D), shared precision (D, D)) with Ledoit-Wolf shrinkage of the covariance.

    Shrinkage keeps the precision well-conditioned when photos are few compared with the
    embedding size (e.g. 1,500 photos of 768-dimensional DINOv2 features).
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(embeddings, dtype=np.float64)
    targets = np.asarray(targets)
    overall = x.mean(axis=0)
    means = np.stack(
        [x[targets == c].mean(axis=0) if np.any(targets == c) else overall for c in range(num_labels)]
    )
    centred = x - means[targets]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    return means, precision


def spread(values: np.ndarray) -> float:
    """95th percentile minus median: the unit each term of the score is measured in."""
    width = float(np.percentile(values, _SPREAD_PERCENTILE) - np.median(values))
    return width if width > 1e-9 else 1.0  # all validation cats alike: any unit will do


def fit_non_cat_direction(cats: np.ndarray, non_cats: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights, bias) of a logistic regression, positive for photos without a cat.

    The features are standardised with the cats' mean and spread for the fit, then folded back
    into the weights, so the app applies one dot product to the raw embedding span. The classes
    are weighted equally whatever their counts.
    """
    from sklearn.linear_model import LogisticRegression

    x_cats = np.asarray(cats, dtype=np.float64)
    x_non_cats = np.asarray(non_cats, dtype=np.float64)
    if len(x_cats) < 2 or len(x_non_cats) < 2:
        raise ValueError(
            f"a cat-or-not direction needs photos of both kinds, not {len(x_cats)} cats and "
            f"{len(x_non_cats)} photos without a cat"
        )
    centre = x_cats.mean(axis=0)
    scale = x_cats.std(axis=0) + 1e-6
    features = (np.vstack([x_cats, x_non_cats]) - centre) / scale
    targets = np.r_[np.zeros(len(x_cats)), np.ones(len(x_non_cats))]
    model = LogisticRegression(C=_NON_CAT_C, max_iter=3000, class_weight="balanced").fit(features, targets)
    weights = model.coef_[0] / scale
    return weights, float(model.intercept_[0] - weights @ centre)


def fit_detector(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    num_labels: int,
    span: tuple[int, int] | None = None,
    non_cats: np.ndarray | None = None,
) -> dict[str, Any]:
    """The `ood` section (arrays as numpy) fitted on train (embeddings, targets) and set on
    validation (embeddings, logits); `span` is the part of the embedding the distance uses.
    With `non_cats` (embeddings of photos without a cat) it adds the cat-or-not term."""
    train_embeddings, targets = train
    val_embeddings, val_logits = val
    size = int(np.shape(train_embeddings)[1])
    start, stop = span or (0, size)
    means, precision = fit_class_gaussians(np.asarray(train_embeddings)[:, start:stop], targets, num_labels)
    distances = mahalanobis_scores(np.asarray(val_embeddings)[:, start:stop], means, precision)
    detector = {
        "method": METHOD_WITH_ENERGY,
        "means": means,
        "precision": precision,
        "threshold": 0.0,
        "embedding_size": size,
        "features": [int(start), int(stop)],
        "distance_scale": spread(distances),
        "energy_scale": spread(energy_scores(val_logits)),
    }
    if non_cats is not None:
        weights, bias = fit_non_cat_direction(
            np.asarray(train_embeddings)[:, start:stop], np.asarray(non_cats)[:, start:stop]
        )
        val_terms = np.asarray(val_embeddings, dtype=np.float64)[:, start:stop] @ weights + bias
        detector |= {
            "method": METHOD_WITH_NON_CAT,
            "non_cat_weights": weights,
            "non_cat_bias": bias,
            "non_cat_scale": spread(val_terms),
        }
    return rethreshold(detector, val_embeddings, val_logits)


def threshold_percentile(method: str) -> float:
    """Which percentile of validation cats' scores a detector of `method` flags above."""
    return NON_CAT_PERCENTILE if method == METHOD_WITH_NON_CAT else OOD_PERCENTILE


def rethreshold(detector: Mapping[str, Any], embeddings: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """The detector with its threshold set on these validation cats' scores, the rest kept:
    how the shipped int8 model gets a threshold of its own for the fp32-fitted detector."""
    checked = OodDetector.from_config(detector)
    scores = checked.scores(embeddings, logits)
    return dict(detector) | {"threshold": float(np.percentile(scores, threshold_percentile(checked.method)))}


def detector_figures(
    detector: Mapping[str, Any], test_embeddings: np.ndarray, test_logits: np.ndarray
) -> dict:
    """What evaluate reports of a detector: how it scores, and the share of test cats it flags."""
    checked = OodDetector.from_config(detector)
    scores = checked.scores(test_embeddings, test_logits)
    return {
        "method": checked.method,
        "embedding_size": checked.embedding_size,
        "features": list(checked.features),
        "threshold": checked.threshold,
        "threshold_rule": f"{threshold_percentile(checked.method):g}th percentile of validation scores",
        "test_cats_flagged_not_cat": float(np.mean(scores > checked.threshold)),
        "test_score_median": float(np.median(scores)),
    }


_SCALARS = ("threshold", "embedding_size", "distance_scale", "energy_scale", "non_cat_bias", "non_cat_scale")


def save_ood(detector: Mapping[str, Any], path: Path) -> None:
    extra = {key: detector[key] for key in _SCALARS if key in detector}
    if "features" in detector:
        extra["features"] = np.asarray(detector["features"], dtype=np.int64)
    if "non_cat_weights" in detector:
        extra["non_cat_weights"] = np.asarray(detector["non_cat_weights"], dtype=np.float64)
    np.savez(
        path,
        method=np.asarray(detector.get("method", METHOD)),
        means=detector["means"],
        precision=detector["precision"],
        **extra,
    )


def load_ood(path: Path) -> dict | None:
    """The bundle's `ood` section from an ood.npz, or None when evaluate has not written one.
    An ood.npz from before the energy term reads back as the distance-only detector it was."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        ood: dict[str, Any] = {
            "method": str(data["method"]) if "method" in data else METHOD,
            "means": data["means"].tolist(),
            "precision": data["precision"].tolist(),
            "threshold": float(data["threshold"]),
        }
        if "features" in data:
            ood["features"] = [int(v) for v in data["features"]]
            ood["embedding_size"] = int(data["embedding_size"])
        for key in ("distance_scale", "energy_scale", "non_cat_bias", "non_cat_scale"):
            if key in data:
                ood[key] = float(data[key])
        if "non_cat_weights" in data:
            ood["non_cat_weights"] = data["non_cat_weights"].tolist()
    return ood
