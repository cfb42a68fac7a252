"""`clean`: flag photos whose given label the rest of the data rejects; leave out thin breeds.

Shelter listings label many ordinary domestic cats with a breed. Training on them teaches the
model that a plain tabby is a Siberian, so before training every photo's label is checked
against the other photos: a logistic regression on frozen backbone features (the baseline's
probe) predicts each photo without having seen it, and a photo is flagged when that prediction
rejects its given label with confidence: the given breed gets less than `--max-given` (5%) and
another breed at least `--min-other` (60%). Looser rules were tried on the two cat collections:
flagging wherever the given breed falls below its breed's mean (confident learning) flagged 14%
of the carefully labelled Oxford photos, mostly look-alikes that a fine-tuned model separates;
this rule flags 3.5% of them and 13-16% of the shelter-labelled photos.

Training and validation photos are judged out of fold (k folds, whole duplicate groups at a
time). Test photos are judged by a model fitted on training and validation photos only, so no
test label shapes what training sees. Flagged photos stay in the manifest (column `flagged`) and
are left out of training; the test figures stay on the labels as given.

A breed with fewer than `--min-clean-photos` unflagged photos cannot be trained and tested well;
it is left out (rows removed, labels.json rewritten) and summary.json says why.

Writes WORKDIR/label_review.csv (every flagged photo, its given and suggested breed), one contact
sheet per breed under WORKDIR/label_review/, and caches the features in WORKDIR/features.npz.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.contact_sheets import SheetEntry, contact_sheet, file_stem
from trainer.dataset import (
    LABELS_FILE,
    SUMMARY_FILE,
    DatasetError,
    Sample,
    read_labels,
    read_manifest,
    write_manifest,
)
from trainer.probe import PROBE_C, fit_probe

FEATURES_FILE = "features.npz"
REVIEW_FILE = "label_review.csv"
REVIEW_FOLDER = "label_review"


@dataclass(frozen=True)
class CleaningSettings:
    """The label-cleaning rule and what it leaves out."""

    base_model: str | None = None
    preset: str | None = None
    image_size: int = 224
    folds: int = 5
    max_given: float = 0.05
    min_other: float = 0.6
    min_clean_photos: int = 60
    # Sources whose labels judge the others (all when empty): shelter guesses must not decide
    # which web or studio photos are "wrong".
    trust: tuple[str, ...] = ()
    seed: int = 83
    batch_size: int = 32
    device: str = "cpu"


@dataclass(frozen=True)
class Verdict:
    """What the other photos say about one photo's label."""

    given_probability: float
    suggested: str
    suggested_probability: float
    flagged: bool


# ------------------------------------------------------------------------------------- features


def features_identity(base_model: str | None, preset: str | None, image_size: int) -> str:
    return json.dumps([base_model, preset, image_size])


def cached_features(workdir: Path, paths: Sequence[Path], identity: str) -> np.ndarray | None:
    """The cached frozen features of these photos, if `clean` computed them with this backbone.

    Training's probe head needs exactly these features for its training photos; reusing them
    saves a pass over thousands of photos on a CPU.
    """
    cache = workdir / FEATURES_FILE
    if not cache.is_file():
        return None
    with np.load(cache, allow_pickle=False) as saved:
        if str(saved["identity"]) != identity:
            return None
        row_of = {path: row for row, path in enumerate(saved["paths"].tolist())}
        rows = [row_of.get(str(path)) for path in paths]
        if any(row is None for row in rows):
            return None
        return saved["features"][rows]


def frozen_features(workdir: Path, samples: Sequence[Sample], settings: CleaningSettings) -> np.ndarray:
    """The untrained backbone's embedding of every photo, cached by photo list and base model."""
    from trainer.modeling import build_model, preprocessing_for, run_on_photos

    paths = [s.path for s in samples]
    identity = features_identity(settings.base_model, settings.preset, settings.image_size)
    cached = cached_features(workdir, paths, identity)
    if cached is not None:
        return cached
    spec = preprocessing_for(settings.base_model, settings.preset, settings.image_size)
    labels = sorted({s.label for s in samples})
    model = build_model(labels, settings.base_model, settings.preset, seed=settings.seed).eval()
    _, features = run_on_photos(
        model, paths, spec, settings.batch_size, "frozen features", device=settings.device
    )
    np.savez(
        workdir / FEATURES_FILE,
        features=features,
        paths=np.array([str(p) for p in paths]),
        identity=np.array(identity),
    )
    return features


# -------------------------------------------------------------------------------------- verdicts


def held_out_probabilities(
    features: np.ndarray, targets: np.ndarray, splits: Sequence[str], groups: Sequence[int], classes: int,
    folds: int, seed: int, trusted: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Each photo's breed probabilities from a probe that never saw it (nor its near copies).

    Training and validation photos of the trusted sources (all, by default): out of fold. Test
    photos and the other sources' photos: a probe fitted on all trusted training and validation
    photos, so neither test labels nor untrusted labels shape the flags training uses.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    probabilities = np.zeros((len(targets), classes))
    trusted = np.ones(len(targets), dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)
    fit_rows = np.array([split != "test" for split in splits]) & trusted
    fit_index = np.flatnonzero(fit_rows)
    folding = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    group_array = np.asarray(groups)
    for train_part, held_part in folding.split(fit_index, targets[fit_index], group_array[fit_index]):
        rows_fit, rows_held = fit_index[train_part], fit_index[held_part]
        probe = fit_probe(features[rows_fit], targets[rows_fit], classes, seed=seed)
        probabilities[rows_held] = probe.probabilities(features[rows_held])
    other_index = np.flatnonzero(~fit_rows)
    if len(other_index):
        probe = fit_probe(features[fit_index], targets[fit_index], classes, seed=seed)
        probabilities[other_index] = probe.probabilities(features[other_index])
    return probabilities


def confident_verdicts(
    probabilities: np.ndarray, targets: np.ndarray, labels: Sequence[str], max_given: float, min_other: float
) -> list[Verdict]:
    """Flag photos whose given breed gets under `max_given` and another breed at least `min_other`."""
    verdicts = []
    for row, target in zip(probabilities, targets, strict=True):
        others = row.copy()
        others[target] = -1.0
        best = int(others.argmax())
        flagged = bool(row[target] < max_given and row[best] >= min_other)
        verdicts.append(Verdict(float(row[target]), labels[best], float(row[best]), flagged))
    return verdicts


# ---------------------------------------------------------------------------------------- clean


def clean(workdir: str | Path, settings: CleaningSettings, command_line: str | None = None) -> dict:
    """Flag, leave out thin breeds, rewrite the manifest; returns the cleaning summary (which
    records `command_line`, for the model card's recipe)."""
    workdir = Path(workdir)
    samples = read_manifest(workdir)
    labels = read_labels(workdir)
    if settings.folds < 2:
        raise DatasetError(f"--folds must be at least 2, not {settings.folds}")
    index = {label: i for i, label in enumerate(labels)}
    targets = np.array([index[s.label] for s in samples])
    trusted = np.array([not settings.trust or s.source in settings.trust for s in samples])
    if not trusted.any():
        raise DatasetError(f"no photos from the trusted sources {', '.join(settings.trust)}")
    too_few = [
        b
        for b, n in Counter(
            s.label for s, t in zip(samples, trusted, strict=True) if s.split != "test" and t
        ).items()
        if n < settings.folds
    ]
    if too_few:
        raise DatasetError(f"too few photos to cross-validate for: {', '.join(sorted(too_few))}")
    features = frozen_features(workdir, samples, settings)
    probabilities = held_out_probabilities(
        features,
        targets,
        [s.split for s in samples],
        [s.group for s in samples],
        len(labels),
        settings.folds,
        settings.seed,
        trusted,
    )
    verdicts = confident_verdicts(probabilities, targets, labels, settings.max_given, settings.min_other)
    # A breed no trusted source shows cannot be judged: its photos are never flagged.
    judged = {s.label for s, t in zip(samples, trusted, strict=True) if t}
    verdicts = [
        v if s.label in judged else dataclasses.replace(v, flagged=False)
        for s, v in zip(samples, verdicts, strict=True)
    ]
    flagged = [dataclasses.replace(s, flagged=v.flagged) for s, v in zip(samples, verdicts, strict=True)]

    clean_counts = Counter(s.label for s in flagged if not s.flagged)
    left_out = {
        breed: f"{clean_counts[breed]} clean photos (fewer than {settings.min_clean_photos})"
        for breed in labels
        if clean_counts[breed] < settings.min_clean_photos
    }
    kept_labels = [b for b in labels if b not in left_out]
    if len(kept_labels) < 2:
        raise DatasetError("fewer than two breeds have enough clean photos; lower --min-clean-photos")

    write_review(workdir, samples, verdicts)
    write_contact_sheets(workdir, samples, verdicts)
    write_manifest(workdir, [s for s in flagged if s.label not in left_out])
    (workdir / LABELS_FILE).write_text(json.dumps(kept_labels, indent=2) + "\n", encoding="utf-8")
    report = cleaning_report(flagged, settings, left_out) | {"command_line": command_line}
    summary_path = workdir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    summary["cleaning"] = report
    summary["left_out_breeds"] = left_out
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return report


def cleaning_report(samples: Sequence[Sample], settings: CleaningSettings, left_out: dict[str, str]) -> dict:
    """Counts per breed and source: photos and flagged photos, with the rule in words."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for sample in samples:
        cell = table.setdefault(sample.label, {}).setdefault(sample.source, {"photos": 0, "flagged": 0})
        cell["photos"] += 1
        cell["flagged"] += int(sample.flagged)
    trusted = f" fitted on {', '.join(settings.trust)} only" if settings.trust else ""
    return {
        "rule": (
            f"{settings.folds}-fold out-of-fold logistic regression (C={PROBE_C}) on frozen "
            f"{settings.base_model or settings.preset} features{trusted}; flagged when the given breed gets "
            f"under {settings.max_given:g} and another breed at least {settings.min_other:g}"
        ),
        "settings": dataclasses.asdict(settings),
        "flagged": sum(int(s.flagged) for s in samples),
        "photos": len(samples),
        "per_breed_and_source": {breed: table[breed] for breed in sorted(table)},
        "left_out_breeds": left_out,
    }


def write_review(workdir: Path, samples: Sequence[Sample], verdicts: Sequence[Verdict]) -> Path:
    """label_review.csv: every flagged photo with its given and suggested breed."""
    path = workdir / REVIEW_FILE
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["path", "source", "split", "given", "given_probability", "suggested", "suggested_probability"]
        )
        for sample, verdict in zip(samples, verdicts, strict=True):
            if verdict.flagged:
                writer.writerow(
                    [
                        str(sample.path),
                        sample.source,
                        sample.split,
                        sample.label,
                        f"{verdict.given_probability:.3f}",
                        verdict.suggested,
                        f"{verdict.suggested_probability:.3f}",
                    ]
                )
    return path


def write_contact_sheets(workdir: Path, samples: Sequence[Sample], verdicts: Sequence[Verdict]) -> list[Path]:
    """One PNG per breed with flagged photos: each thumbnail captioned with the suggested breed."""
    folder = workdir / REVIEW_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    by_breed: dict[str, list[tuple[Sample, Verdict]]] = {}
    for sample, verdict in zip(samples, verdicts, strict=True):
        if verdict.flagged:
            by_breed.setdefault(sample.label, []).append((sample, verdict))
    written = []
    for breed, entries in sorted(by_breed.items()):
        entries.sort(key=lambda entry: -entry[1].suggested_probability)
        written.append(_contact_sheet(folder / f"{file_stem(breed)}.png", breed, entries))
    return written


def _contact_sheet(path: Path, breed: str, entries: list[tuple[Sample, Verdict]]) -> Path:
    return contact_sheet(
        path,
        f"{breed}: {len(entries)} flagged",
        [
            SheetEntry(
                sample.path, verdict.suggested, f"{verdict.suggested_probability:.2f} [{sample.source[:9]}]"
            )
            for sample, verdict in entries
        ],
    )
