"""The shipped bundle's outputs for the benchmark photos, computed once and kept in a .npz under /tmp.

`bench_personal.py` scores the personal layer many times over (sources x k x seeds x variants);
running the model once per photo and reusing its calibrated probabilities and embeddings keeps
that to seconds. The photos of each source are its test split as `python -m trainer prepare` made
it (the manifest, seed 83, the split the shipped model was measured on); the web photos, which the
model never saw, are a deterministic sample of up to `--web-per-breed` photos of each breed the
model knows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catbreed_desktop.core.bundle import ModelBundle
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.photos import iter_photo_paths


def test_split(manifest: Path, source: str, split: str = "test") -> list[tuple[Path, str, int]]:
    """(path, label, near-duplicate group) of one source's test (or `split`) photos in a `prepare` manifest."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [
            (Path(row["path"]), row["label"], int(row["group"]))
            for row in csv.DictReader(handle)
            if row["split"] == split and row["source"] == source
        ]


def web_sample(root: Path, labels: Sequence[str], per_breed: int) -> list[tuple[Path, str, int]]:
    """Up to `per_breed` photos of each folder named like one of the model's breeds, drawn with seed 0."""
    known = {label.replace(" ", "_").lower(): label for label in labels}
    photos: list[tuple[Path, str, int]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = known.get(folder.name.lower())
        if label is None:
            continue
        paths = sorted(iter_photo_paths([folder], recursive=True))
        random.Random(0).shuffle(paths)
        photos += [(path, label, -1) for path in paths[:per_breed]]
    return [(path, label, index) for index, (path, label, _) in enumerate(photos)]


def bundle_outputs(
    bundle: ModelBundle, photos: list[tuple[Path, str, int]], cache: Path, threads: int = 2
) -> dict[str, np.ndarray]:
    """probabilities (N, C), embeddings (N, D), labels (N,) as indices and groups (N,), from the cache when it fits."""
    # The whole bundle.json, not only the model's checksum: a refitted not-a-cat detector or
    # calibration changes `is_cat` and the probabilities of the same model file.
    settings = json.dumps(bundle.to_json(), sort_keys=True)
    key = hashlib.sha256(
        (settings + "\n" + "\n".join(f"{p}\t{label}" for p, label, _ in photos)).encode()
    ).hexdigest()[:16]
    if cache.is_file():
        stored = dict(np.load(cache, allow_pickle=False))
        if str(stored.get("key")) == key:
            return stored
    index = {label: i for i, label in enumerate(bundle.labels)}
    rows: list[tuple[Prediction, int, int]] = []
    with Classifier(bundle, "cpu", batch_size=8, threads=threads) as classifier:
        results = classifier.classify([p for p, _, _ in photos])
        for result, (_, label, group) in zip(results, photos, strict=True):
            if isinstance(result, Prediction) and result.embedding is not None:
                rows.append((result, index[label], group))
    outputs = {
        "key": np.array(key),
        "paths": np.array([str(r.path) for r, _, _ in rows]),
        "probabilities": np.stack([r.probabilities for r, _, _ in rows]).astype(np.float64),
        "embeddings": np.stack([r.embedding for r, _, _ in rows]).astype(np.float32),  # type: ignore[misc]
        "is_cat": np.array([r.is_cat for r, _, _ in rows]),
        "labels": np.array([label for _, label, _ in rows]),
        "groups": np.array([group for _, _, group in rows]),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **outputs)  # type: ignore[arg-type]
    return outputs
