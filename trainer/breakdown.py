"""Test figures per data source, and without the photos label cleaning flagged.

Every figure comes from the same predictions: the model chooses among all its breeds, and a
source's figures only restrict which photos are counted and which breeds the macro F1 averages
over (the breeds that source has test photos of). Headline figures stay on the labels as given;
the flagged-out figures are a secondary estimate of how much the label noise costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainer.metrics import per_label_scores, subset_scores

UNNAMED_SOURCE = "unnamed source"  # manifests written before sources were recorded


def breed_key(name: str) -> str:
    """Folder names and label names of one breed compare equal ("Maine_Coon" ~ "Maine Coon")."""
    return " ".join(name.replace("_", " ").split()).casefold()


def noisy_breeds_by_source(summary: Mapping) -> dict[str, list[str]]:
    """{source name: breeds its MANIFEST.csv marks noisy} from summary.json's `sources`."""
    found = {}
    for source in summary.get("sources") or []:
        if isinstance(source, Mapping) and source.get("name"):
            found[str(source["name"])] = list(source.get("noisy_breeds") or [])
    return found


def without_flagged(
    targets: np.ndarray, predictions: np.ndarray, flagged: np.ndarray, labels: Sequence[int]
) -> dict:
    """Accuracy and macro F1 with the flagged photos left out, and how many were left out."""
    kept = ~np.asarray(flagged, dtype=bool)
    present = [c for c in labels if np.any(targets[kept] == c)]
    return subset_scores(targets[kept], predictions[kept], present) | {"flagged_left_out": int((~kept).sum())}


def source_figures(
    targets: np.ndarray,
    predictions: np.ndarray,
    sources: Sequence[str],
    flagged: np.ndarray,
    labels: Sequence[str],
    noisy: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict]:
    """{source: figures} for every source with test photos.

    Figures: `test` (accuracy, macro F1 over the source's breeds, count), `per_breed` (its breeds
    only; precision counts mistakes among this source's photos), `without_flagged`, and for a
    source that marks breeds noisy, `noisy_breeds` and `clean_breeds_macro_f1`: the macro F1 over
    its other breeds, still on all its photos.
    """
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    flagged = np.asarray(flagged, dtype=bool)
    names = np.asarray([s or UNNAMED_SOURCE for s in sources])
    noisy = noisy or {}
    figures: dict[str, dict] = {}
    for name in sorted(set(names.tolist())):
        members = names == name
        y_true, y_pred = targets[members], predictions[members]
        present = sorted(set(y_true.tolist()))
        rows = per_label_scores(y_true, y_pred, labels)
        entry: dict[str, Any] = {
            "test": subset_scores(y_true, y_pred, present),
            "breeds": [labels[c] for c in present],
            "per_breed": {labels[c]: rows[labels[c]] for c in present},
            "without_flagged": without_flagged(y_true, y_pred, flagged[members], present),
        }
        marked = {breed_key(b) for b in noisy.get(name, [])}
        if marked:
            noisy_present = [c for c in present if breed_key(labels[c]) in marked]
            clean = [c for c in present if c not in noisy_present]
            entry["noisy_breeds"] = [labels[c] for c in noisy_present]
            entry["clean_breeds"] = len(clean)
            entry["clean_breeds_macro_f1"] = subset_scores(y_true, y_pred, clean)["macro_f1"]
        figures[name] = entry
    return figures
