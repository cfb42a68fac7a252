"""Classification scores shared by the baseline, training validation and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

Indices = Sequence[int] | np.ndarray  # class indices, one per photo


def classification_scores(y_true: Indices, y_pred: Indices, num_labels: int) -> dict[str, float]:
    """Accuracy, macro F1 and weighted F1 over all `num_labels` classes (absent ones score 0)."""
    labels = list(range(num_labels))
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "weighted_f1": float("nan"), "count": 0}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "count": len(y_true),
    }


def per_label_scores(y_true: Indices, y_pred: Indices, labels: Sequence[str]) -> dict[str, dict]:
    """{breed: {precision, recall, f1, support}} in label order."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(labels))), zero_division=0
    )
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }


def subset_scores(y_true: Indices, y_pred: Indices, labels: Sequence[int]) -> dict[str, float]:
    """Accuracy over these photos and macro F1 averaged over `labels` only.

    Predictions of breeds outside `labels` still count against recall: the model chose among all
    its breeds, the average is just taken over the breeds this subset is about.
    """
    if len(y_true) == 0 or not labels:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "count": len(y_true)}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(labels), average="macro", zero_division=0)),
        "count": len(y_true),
    }


def confused_pairs(matrix: Sequence[Sequence[int]], labels: Sequence[str], top: int = 10) -> list[dict]:
    """The breed pairs the model mixes up most on a confusion matrix (true rows, predicted columns),
    both directions added, most mistakes first; each with its share of the pair's photos."""
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1)
    pairs: list[dict[str, Any]] = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            mistakes = int(counts[i, j] + counts[j, i])
            if mistakes:
                photos = int(rows[i] + rows[j])
                pairs.append(
                    {
                        "breeds": [labels[i], labels[j]],  # a, b
                        "mistakes": mistakes,
                        "a_as_b": int(counts[i, j]),
                        "b_as_a": int(counts[j, i]),
                        "share_of_pair_photos": mistakes / photos if photos else 0.0,
                    }
                )
    pairs.sort(key=lambda p: (-p["mistakes"], -p["share_of_pair_photos"], p["breeds"]))
    return pairs[:top]


def source_mean_scores(
    targets: list[int],
    predictions: list[int],
    sources: list[str],
    labels: list[str],
    noisy: dict[str, set[str]],
) -> dict:
    """Each source's macro F1 over the breeds it has (its noisy-labelled breeds left out), and
    their mean: so neither the largest nor the noisiest source decides the choice alone."""
    per_source = {}
    for source in sorted(set(sources)):
        rows = [i for i, name in enumerate(sources) if name == source]
        kept = [i for i in rows if labels[targets[i]] not in noisy.get(source, set())]
        breeds = sorted({targets[i] for i in kept})
        if not breeds:
            continue
        per_source[source] = subset_scores(
            [targets[i] for i in kept], [predictions[i] for i in kept], breeds
        )["macro_f1"]
    mean = float(np.mean(list(per_source.values()))) if per_source else float("nan")
    return {"source_mean_macro_f1": mean, "per_source_macro_f1": per_source}
