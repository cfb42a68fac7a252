"""Giving an exported bundle's not-a-cat detector its cat-or-not term, from the bundle's own outputs.

`evaluate --non-cat` fits the term with a new model; a bundle already shipped, whose checkpoint
is gone, gets it here: the shipped (int8) model runs on a sample of the training photos, on
extra cat photos and on photos without a cat, and `trainer.not_a_cat.fit_non_cat_direction`
fits the direction on those outputs. The breed means, precision and scales stay as they were;
the new term's spread and the threshold are set on the validation photos, as `evaluate` and
`export` set them, and the bundle's `metrics.ood` figures are measured again on the test photos.
A photo the detector flags is never filed, so a new detector moves the filed precision the
unsure threshold was chosen by: the threshold is chosen again on the validation photos by the
rule the bundle recorded, and the risk-coverage figures are measured again with it (the other
figures describe the unchanged model and stay as exported). The bundle's model file is untouched
(same sha256); bundle.json and ood.npz are rewritten together through `write_bundle`, which
proves the new bundle loads before it replaces the old one.

Extra cat photos (`cat_folders`) matter when the photos without a cat come from another
collection than the training photos: web thumbnails of junk against shelter photos of cats
would teach "web thumbnail or not" as much as "cat or not"; web thumbnails of cats on the
cat side cancel that.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catbreed_desktop.core.bundle import MODEL_FILE, load_bundle, write_bundle
from catbreed_desktop.core.ood import METHOD_WITH_NON_CAT
from catbreed_desktop.core.photos import iter_photo_paths
from trainer.dataset import DatasetError, read_manifest, split_samples
from trainer.evaluate import at_most_per_breed
from trainer.export import _runner
from trainer.figures import SplitOutputs
from trainer.not_a_cat import detector_figures, fit_non_cat_direction, rethreshold, spread
from trainer.shipped import bundle_decision, sorting_by_rule


def photos_of_folders(folders: Sequence[Path], per_folder: int | None, seed: int = 83) -> list[Path]:
    """Every photo of each folder, or a seeded draw of `per_folder` of them."""
    chosen: list[Path] = []
    for folder in folders:
        photos = sorted(iter_photo_paths([Path(folder)], recursive=True))
        if not photos:
            raise DatasetError(f"{folder}: no photos")
        if per_folder is not None and len(photos) > per_folder:
            photos = sorted(random.Random(seed).sample(photos, per_folder))
        chosen += photos
    return chosen


def refit_non_cat(
    workdir: Path,
    bundle_dir: Path,
    non_cat_folders: Sequence[Path],
    cat_folders: Sequence[Path] = (),
    photos_per_breed: int = 50,
    cat_photos_per_folder: int | None = 40,
    command_line: str = "",
) -> dict:
    """Add the cat-or-not term to the detector of the bundle in `bundle_dir`; return its new not-a-cat figures."""
    bundle = load_bundle(bundle_dir)
    if bundle.ood is None:
        raise DatasetError(f"{bundle_dir}: the bundle has no not-a-cat detector to extend")
    samples = read_manifest(workdir)
    if sorted({s.label for s in samples}) != sorted(bundle.labels):
        raise DatasetError(f"{workdir} holds other breeds than the bundle in {bundle_dir}")
    run = _runner(bundle_dir / MODEL_FILE, bundle.preprocessing)
    train = at_most_per_breed(split_samples(samples, "train"), photos_per_breed)
    cats = [run([s.path for s in train], "training cats")[1]]
    if cat_folders:
        cats.append(run(photos_of_folders(cat_folders, cat_photos_per_folder), "extra cats")[1])
    _, non_cats = run(photos_of_folders(non_cat_folders, None), "photos without a cat")
    val_samples, test_samples = split_samples(samples, "val"), split_samples(samples, "test")
    val_logits, val_embeddings = run([s.path for s in val_samples], "validation")
    test_logits, test_embeddings = run([s.path for s in test_samples], "test")

    start, stop = bundle.ood["features"]
    weights, bias = fit_non_cat_direction(np.vstack(cats)[:, start:stop], non_cats[:, start:stop])
    val_terms = val_embeddings[:, start:stop].astype(np.float64) @ weights + bias
    ood = dict(bundle.ood) | {
        "method": METHOD_WITH_NON_CAT,
        "non_cat_weights": weights,
        "non_cat_bias": bias,
        "non_cat_scale": spread(val_terms),
    }
    ood = rethreshold(ood, val_embeddings, val_logits)
    metrics = dict(bundle.metrics)
    metrics["ood"] = dict(metrics.get("ood") or {}) | detector_figures(ood, test_embeddings, test_logits)
    rule = metrics.get("decision")
    if rule:
        labels = list(bundle.labels)
        val = SplitOutputs.of(val_logits, val_embeddings, val_samples, labels)
        test = SplitOutputs.of(test_logits, test_embeddings, test_samples, labels)
        metrics |= sorting_by_rule(val, test, bundle.temperature, ood, rule)
    provenance = dict(bundle.provenance) | {
        "not_a_cat_term": {
            "made_by": "python -m trainer non-cat-term",
            "command_line": command_line,
            "photos_without_a_cat": [Path(f).name for f in non_cat_folders],
            "extra_cat_folders": [Path(f).name for f in cat_folders],
            "extra_cat_photos_per_folder": cat_photos_per_folder,
            "training_photos_per_breed": photos_per_breed,
        }
    }
    write_bundle(
        bundle_dir,
        bundle_dir / MODEL_FILE,
        labels=list(bundle.labels),
        architecture=bundle.architecture,
        preprocessing=bundle.preprocessing,
        temperature=bundle.temperature,
        metrics=metrics,
        provenance=provenance,
        ood=ood,
        decision=bundle_decision(metrics) if rule else bundle.decision,
    )
    return metrics["ood"]
