"""How well a bundle keeps photos without a cat out of the breed folders, measured end to end.

Runs the shipped bundle through the app's own `Classifier` (same decoding, engine, temperature and
not-a-cat detector) on held-out non-cat photos (see `trainer.negatives`) and on the test cats, and
counts what sorting would do with each: flagged "not a cat", "unsure" (below the confidence
threshold), or filed into a breed folder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.engines.names import CPU, DEFAULT_BATCH_SIZE
from catbreed_desktop.core.photos import iter_photo_paths


def _outcomes(predictions: list[Prediction], min_confidence: float) -> Counter:
    outcomes: Counter = Counter()
    for prediction in predictions:
        if not prediction.is_cat:
            outcomes["not_cat"] += 1
        elif prediction.confidence < min_confidence:
            outcomes["unsure"] += 1
        else:
            outcomes["breed"] += 1
    return outcomes


def _rates(outcomes: Counter, count: int) -> dict:
    return {"photos": count} | {key: outcomes[key] / count for key in ("not_cat", "unsure", "breed")}


def measure_not_a_cat(
    bundle_dir: Path,
    negatives_dir: Path,
    cat_photos: list[Path],
    cat_labels: list[str],
    min_confidence: float = 0.5,
) -> dict:
    """Sorting outcomes for each negatives group and for the cats (with accuracy of those filed)."""
    bundle = load_bundle(bundle_dir)
    classifier = Classifier(bundle, engine=CPU, batch_size=DEFAULT_BATCH_SIZE)
    try:
        groups = {}
        for folder in sorted(p for p in negatives_dir.iterdir() if p.is_dir()):
            photos = iter_photo_paths([folder], recursive=True)
            predictions = [p for p in classifier.classify(photos) if isinstance(p, Prediction)]
            if predictions:
                groups[folder.name] = _rates(_outcomes(predictions, min_confidence), len(predictions))
        cats = [p for p in classifier.classify(cat_photos) if isinstance(p, Prediction)]
    finally:
        classifier.close()
    truth = dict(zip(cat_photos, cat_labels, strict=True))
    filed = [p for p in cats if p.is_cat and p.confidence >= min_confidence]
    correct = sum(truth[p.path] == p.label for p in filed)
    return {
        "min_confidence": min_confidence,
        "detector": (bundle.ood or {}).get("method"),
        "negatives": groups,
        "cats": _rates(_outcomes(cats, min_confidence), len(cats))
        | {"accuracy_of_filed": correct / len(filed) if filed else None},
        "cats_flagged_by_breed": flagged_by_breed(cats, truth),
    }


def flagged_by_breed(cats: list[Prediction], truth: dict[Path, str]) -> dict[str, dict]:
    """{breed: {photos, not_cat}}: how often real cats of each breed are sent to "Not a cat".

    A detector can be fine on average and still refuse one unusual-looking breed (hairless cats),
    which the total would hide."""
    photos: Counter = Counter()
    refused: Counter = Counter()
    for prediction in cats:
        breed = truth[prediction.path]
        photos[breed] += 1
        refused[breed] += not prediction.is_cat
    return {
        breed: {"photos": photos[breed], "not_cat": refused[breed] / photos[breed]}
        for breed in sorted(photos)
    }
