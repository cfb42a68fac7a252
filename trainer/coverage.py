"""Risk-coverage of sorting and the default "unsure" threshold.

A photo is filed into a breed folder exactly when the app would file it
(`catbreed_desktop.core.sorting.plan.folder_for`): the not-a-cat detector accepts it and its
calibrated top-1 probability is at least the threshold; otherwise it goes to "Not a cat" or
"Unsure". Coverage is the share of photos filed; precision the share of filed photos in the
right folder. The default threshold is chosen on validation photos only, so the test figures
at that threshold are an honest estimate of what a user sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REPORTED_THRESHOLDS = (0.5, 0.7, 0.9)
# Thresholds a user can read and type (the app's setting is a percentage), strictly between 0
# and 1 as bundle.json's `decision` must be.
THRESHOLD_GRID = tuple(round(step / 100, 2) for step in range(1, 100))
DEFAULT_DECISION_SOURCE = "oxford-pet-cats"
DEFAULT_TARGET_PRECISION = 0.95


def filed_mask(probabilities: np.ndarray, is_cat: np.ndarray, threshold: float) -> np.ndarray:
    """True where sorting files the photo into a breed folder (the app's `folder_for` rule)."""
    confidence = np.asarray(probabilities, dtype=np.float64).max(axis=1)
    return np.asarray(is_cat, dtype=bool) & (confidence >= threshold)


def coverage_figures(
    probabilities: np.ndarray, targets: np.ndarray, is_cat: np.ndarray, threshold: float
) -> dict:
    """Photos, the share filed (coverage), the share of those filed right (precision), and where
    the rest went; precision is None when nothing is filed."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets)
    is_cat = np.asarray(is_cat, dtype=bool)
    photos = len(targets)
    filed = filed_mask(probabilities, is_cat, threshold) if photos else np.zeros(0, dtype=bool)
    right = int(np.sum(filed & (probabilities.argmax(axis=1) == targets))) if photos else 0
    count = int(filed.sum())
    return {
        "threshold": float(threshold),
        "photos": photos,
        "filed": count,
        "filed_right": right,
        "coverage": count / photos if photos else None,
        "precision": right / count if count else None,
        "not_cat": float(np.mean(~is_cat)) if photos else None,
        "unsure": float(np.mean(is_cat & ~filed)) if photos else None,
    }


def risk_coverage(
    probabilities: np.ndarray,
    targets: np.ndarray,
    is_cat: np.ndarray,
    sources: Sequence[str],
    default: float | None = None,
    thresholds: Sequence[float] = REPORTED_THRESHOLDS,
) -> list[dict]:
    """One row per threshold (the reported ones and the default, in increasing order) with the
    figures over all photos and per source."""
    names = np.asarray(sources)
    chosen = sorted({float(t) for t in thresholds} | ({float(default)} if default is not None else set()))
    rows = []
    for threshold in chosen:
        per_source = {
            str(name): coverage_figures(
                probabilities[names == name], targets[names == name], is_cat[names == name], threshold
            )
            for name in sorted(set(names.tolist()))
        }
        rows.append(
            {
                "threshold": threshold,
                "is_default": default is not None and threshold == float(default),
                "overall": coverage_figures(probabilities, targets, is_cat, threshold),
                "per_source": per_source,
            }
        )
    return rows


def lowest_threshold(
    probabilities: np.ndarray,
    targets: np.ndarray,
    is_cat: np.ndarray,
    target_precision: float,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[float, bool]:
    """(the lowest grid threshold whose filed precision reaches the target, True); when none
    does, (the threshold with the best precision, lowest first, False).

    Precision need not rise with the threshold, so every grid point is tried rather than a
    bisection; a threshold that files nothing has no precision and never qualifies.
    """
    best: tuple[float, float] | None = None
    for threshold in sorted(grid):
        precision = coverage_figures(probabilities, targets, is_cat, threshold)["precision"]
        if precision is None:
            continue
        if precision >= target_precision:
            return float(threshold), True
        if best is None or precision > best[1]:
            best = (float(threshold), precision)
    return (best[0] if best else float(max(grid))), False


def choose_decision(
    probabilities: np.ndarray,
    targets: np.ndarray,
    is_cat: np.ndarray,
    sources: Sequence[str],
    source: str | Sequence[str] = DEFAULT_DECISION_SOURCE,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> dict:
    """The default "unsure" threshold from validation outputs, with the rule in words.

    The chosen sources' photos set it because their labels are the ones to trust. With several,
    each source's lowest qualifying threshold is found and the largest wins, so the precision
    target holds on every one of them (a pooled figure would let the largest source decide);
    sources without validation photos are passed over, and with none left every photo counts.
    """
    wanted = [source] if isinstance(source, str) else list(source)
    source_array = np.asarray(sources)
    rows_of = {name: source_array == name for name in wanted if (source_array == name).any()}
    fell_back = not rows_of
    per_source: dict[str, dict] = {}
    if fell_back:
        members = np.ones(len(sources), dtype=bool)
        threshold, met = lowest_threshold(probabilities, targets, is_cat, target_precision)
        photos_named = "all validation photos"
    else:
        members = np.logical_or.reduce(list(rows_of.values()))
        found = {
            name: lowest_threshold(probabilities[rows], targets[rows], is_cat[rows], target_precision)
            for name, rows in rows_of.items()
        }
        threshold = max(value for value, _ in found.values())
        met = all(ok for _, ok in found.values())
        for name, rows in rows_of.items():
            per_source[name] = {
                "lowest_qualifying": found[name][0],
                "met": found[name][1],
            } | coverage_figures(probabilities[rows], targets[rows], is_cat[rows], threshold)
        photos_named = " and ".join(f"the {name} validation photos" for name in rows_of)
        if len(rows_of) > 1:
            photos_named += " (each; the larger threshold)"
    if met:
        rule = (
            f"lowest threshold (steps of 0.01) at which at least {target_precision:.0%} of {photos_named} "
            "filed into a breed folder are in the right one"
        )
    else:
        rule = (
            f"no threshold reached {target_precision:.0%} precision on {photos_named}; "
            "the threshold with the highest precision"
        )
    # One name as before, or the list of sources that each held the threshold.
    named = list(rows_of) or wanted[:1]
    return {
        "min_confidence": threshold,
        "chosen_on": "validation",
        "rule": rule,
        "source": named[0] if len(named) == 1 else named,
        "fell_back_to_all_sources": fell_back,
        "target_precision": target_precision,
        "met": met,
        "validation": coverage_figures(probabilities[members], targets[members], is_cat[members], threshold),
        "validation_per_source": per_source,
    }
