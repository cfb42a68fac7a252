"""Fitting the not-a-cat detector: its span, scales and threshold, and its ood.npz."""

from __future__ import annotations

import numpy as np
import pytest

from catbreed_desktop.core.ood import METHOD, METHOD_WITH_NON_CAT, OodDetector
from trainer.not_a_cat import (
    NON_CAT_PERCENTILE,
    OOD_PERCENTILE,
    fit_detector,
    fit_non_cat_direction,
    load_ood,
    rethreshold,
    save_ood,
)


def _cats(
    rng: np.random.Generator, count: int, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings [CLS-like | patch-like], logits, targets) of `count` photos around the class centres."""
    targets = rng.integers(0, len(centres), count)
    embeddings = centres[targets] + rng.normal(scale=0.3, size=(count, centres.shape[1]))
    logits = 4.0 * np.eye(len(centres))[targets] + rng.normal(scale=0.5, size=(count, len(centres)))
    return embeddings, logits, targets


def test_fitted_detector_flags_its_share_of_validation_cats_and_far_photos():
    rng = np.random.default_rng(7)
    centres = rng.normal(scale=3.0, size=(4, 6))
    train_embeddings, _, train_targets = _cats(rng, 800, centres)
    val_embeddings, val_logits, _ = _cats(rng, 400, centres)

    detector = fit_detector((train_embeddings, train_targets), (val_embeddings, val_logits), 4, span=(3, 6))

    assert detector["features"] == [3, 6] and detector["embedding_size"] == 6
    assert np.asarray(detector["means"]).shape == (4, 3)
    checked = OodDetector.from_config(detector, num_labels=4)
    assert np.mean(~checked.is_cat(val_embeddings, val_logits)) == pytest.approx(
        1 - OOD_PERCENTILE / 100, abs=0.005
    )
    # Far from every breed in the patch span, with flat logits: flagged whatever the CLS part says.
    far = np.hstack([centres[:1].repeat(20, 0)[:, :3], rng.normal(loc=20.0, size=(20, 3))])
    assert not checked.is_cat(far, np.zeros((20, 4))).any()
    # The scales make each term count: a photo near a breed but claimed by none is flagged too.
    near_unclaimed = centres[[0] * 20] + rng.normal(scale=0.3, size=(20, 6))
    assert np.mean(~checked.is_cat(near_unclaimed, np.zeros((20, 4)))) >= 0.9


def test_rethreshold_keeps_the_fit_and_moves_only_the_threshold():
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=3.0, size=(3, 4))
    embeddings, logits, targets = _cats(rng, 300, centres)
    detector = fit_detector((embeddings, targets), (embeddings, logits), 3)

    noisy = rethreshold(detector, embeddings + rng.normal(scale=0.2, size=embeddings.shape), logits)

    assert noisy["threshold"] != detector["threshold"]
    assert {k: v for k, v in noisy.items() if k != "threshold"}.keys() == detector.keys() - {"threshold"}
    assert noisy["distance_scale"] == detector["distance_scale"] and noisy["means"] is detector["means"]


def test_ood_npz_round_trips_and_an_old_one_reads_as_distance_only(tmp_path):
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=3.0, size=(3, 4))
    embeddings, logits, targets = _cats(rng, 200, centres)
    detector = fit_detector((embeddings, targets), (embeddings, logits), 3, span=(2, 4))

    save_ood(detector, tmp_path / "ood.npz")
    loaded = load_ood(tmp_path / "ood.npz")

    original = OodDetector.from_config(detector)
    again = OodDetector.from_config(loaded)
    np.testing.assert_allclose(again.scores(embeddings, logits), original.scores(embeddings, logits))
    assert (again.method, again.features, again.embedding_size) == (original.method, (2, 4), 4)

    np.savez(tmp_path / "old.npz", means=centres, precision=np.eye(4), threshold=2.0)
    old = load_ood(tmp_path / "old.npz")
    assert old["method"] == METHOD and "features" not in old
    assert OodDetector.from_config(old).scores(embeddings).shape == (200,)
    assert load_ood(tmp_path / "missing.npz") is None


def _non_cats(rng: np.random.Generator, count: int, width: int) -> np.ndarray:
    """Photos without a cat: shifted along one direction of the patch span, none near a breed."""
    shift = np.zeros(width)
    shift[-1] = 6.0
    return rng.normal(scale=1.0, size=(count, width)) + shift


def test_with_photos_without_a_cat_the_detector_learns_a_cat_or_not_term_and_flags_few_cats():
    rng = np.random.default_rng(11)
    centres = rng.normal(scale=3.0, size=(4, 6))
    train_embeddings, _, train_targets = _cats(rng, 800, centres)
    val_embeddings, val_logits, _ = _cats(rng, 1000, centres)
    non_cats = _non_cats(rng, 300, 6)

    detector = fit_detector(
        (train_embeddings, train_targets), (val_embeddings, val_logits), 4, span=(3, 6), non_cats=non_cats
    )

    assert detector["method"] == METHOD_WITH_NON_CAT
    assert np.asarray(detector["non_cat_weights"]).shape == (3,)
    checked = OodDetector.from_config(detector, num_labels=4)
    assert np.mean(~checked.is_cat(val_embeddings, val_logits)) == pytest.approx(
        1 - NON_CAT_PERCENTILE / 100, abs=0.002
    )
    # New photos like the ones it learned from, with a breed's confident logits: still flagged.
    unseen = _non_cats(rng, 100, 6)
    confident = 4.0 * np.eye(4)[np.zeros(100, dtype=int)]
    assert np.mean(~checked.is_cat(unseen, confident)) >= 0.9


def test_the_cat_or_not_direction_is_applied_to_raw_embeddings_and_needs_both_kinds():
    rng = np.random.default_rng(4)
    cats = rng.normal(loc=50.0, scale=[1.0, 10.0, 0.1], size=(200, 3))
    non_cats = cats[:100] + np.array([0.0, 0.0, 0.5])

    weights, bias = fit_non_cat_direction(cats, non_cats)

    # Standardised for the fit, folded back: it separates the raw values along the narrow axis.
    assert np.mean(non_cats @ weights + bias > 0) > 0.9 and np.mean(cats @ weights + bias < 0) > 0.9
    with pytest.raises(ValueError, match="photos of both kinds"):
        fit_non_cat_direction(cats, non_cats[:1])


def test_ood_npz_round_trips_the_cat_or_not_term(tmp_path):
    rng = np.random.default_rng(6)
    centres = rng.normal(scale=3.0, size=(3, 4))
    embeddings, logits, targets = _cats(rng, 300, centres)
    detector = fit_detector((embeddings, targets), (embeddings, logits), 3, non_cats=_non_cats(rng, 100, 4))

    save_ood(detector, tmp_path / "ood.npz")
    loaded = load_ood(tmp_path / "ood.npz")

    again = OodDetector.from_config(loaded)
    assert again.method == METHOD_WITH_NON_CAT
    np.testing.assert_allclose(
        again.scores(embeddings, logits), OodDetector.from_config(detector).scores(embeddings, logits)
    )
