"""`baseline`: logistic regression on frozen backbone features, the score fine-tuning must beat.

Features are the embedding the classification head would see (no fine-tuning), standardised;
C is chosen by validation macro F1, then the model is refitted on train + validation and
scored on the test split. Writes WORKDIR/baseline/metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.cleaning import cached_features, features_identity
from trainer.dataset import DatasetError, read_labels, read_manifest, split_samples
from trainer.metrics import classification_scores
from trainer.modeling import build_model, preprocessing_for, run_on_photos
from trainer.probe import fit_probe

C_GRID = (0.01, 0.1, 1.0, 10.0)


def run_baseline(
    workdir: str | Path,
    base_model: str | None = None,
    preset: str | None = None,
    image_size: int = 224,
    seed: int = 83,
    batch_size: int = 16,
) -> dict:
    """Fit and score the baseline; returns and writes its metrics."""
    workdir = Path(workdir)
    labels = read_labels(workdir)
    samples = read_manifest(workdir)
    index = {label: i for i, label in enumerate(labels)}
    spec = preprocessing_for(base_model, preset, image_size)
    model = build_model(labels, base_model, preset, seed=seed).eval()

    features, targets = {}, {}
    for split in ("train", "val", "test"):
        chosen = split_samples(samples, split)
        if not chosen:
            raise DatasetError(f"the {split} split is empty; the baseline needs all three splits")
        paths = [s.path for s in chosen]
        # `clean` caches exactly these frozen features; a CPU pass over thousands of photos is saved.
        cached = cached_features(workdir, paths, features_identity(base_model, preset, image_size))
        if cached is None:
            _, cached = run_on_photos(model, paths, spec, batch_size, f"features ({split})")
        features[split] = cached
        targets[split] = np.array([index[s.label] for s in chosen])
    if len(set(targets["train"].tolist())) < 2:
        raise DatasetError("the training split has fewer than two breeds; nothing to classify")

    search = {}
    for c in C_GRID:
        fitted = fit_probe(features["train"], targets["train"], len(labels), c, seed)
        search[c] = classification_scores(targets["val"], fitted.predict(features["val"]), len(labels))[
            "macro_f1"
        ]
    best_c = max(C_GRID, key=lambda c: (search[c], -c))  # ties go to the stronger regularisation
    final = fit_probe(
        np.concatenate([features["train"], features["val"]]),
        np.concatenate([targets["train"], targets["val"]]),
        len(labels),
        best_c,
        seed,
    )
    test_scores = classification_scores(targets["test"], final.predict(features["test"]), len(labels))
    metrics = {
        "method": "logistic regression on frozen backbone embeddings",
        "base_model": base_model,
        "preset": preset,
        "embedding_size": int(features["train"].shape[1]),
        "C": best_c,
        "validation_macro_f1_by_C": {str(c): f for c, f in search.items()},
        "test": test_scores,
    }
    out = workdir / "baseline"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
