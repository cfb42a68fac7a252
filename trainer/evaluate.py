"""`evaluate`: score a checkpoint on the test split, calibrate it, and fit its "not a cat" detector.

Writes WORKDIR/eval/: metrics.json (accuracy, macro/weighted F1, per-breed precision/recall/F1,
confusion matrix, calibration, OOD figures), ood.npz (the not-a-cat detector, see
`trainer.not_a_cat`), confusion_matrix.png and reliability.png. The temperature is fitted on
validation photos and judged on test photos; the not-a-cat detector is fitted on training
embeddings and its threshold is the 96th percentile of validation scores, so about 4% of real
cat photos are flagged.

Beside the headline (labels as given) it reports each data source on its own, the figures with
the photos label cleaning flagged left out, risk-coverage of sorting at several "unsure"
thresholds, and the default threshold chosen on validation photos (see `trainer.coverage`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catbreed_desktop.core.photos import iter_photo_paths
from trainer.breakdown import noisy_breeds_by_source
from trainer.calibration import calibration_report, plot_reliability
from trainer.coverage import DEFAULT_DECISION_SOURCE, DEFAULT_TARGET_PRECISION
from trainer.dataset import DatasetError, Sample, read_labels, read_manifest, read_summary, split_samples
from trainer.errors import TrainerError
from trainer.figures import SplitOutputs, classification_figures, sorting_figures
from trainer.modeling import checkpoint_labels, load_checkpoint, mean_patch_span, run_on_photos
from trainer.not_a_cat import OOD_FILE, detector_figures, fit_detector, save_ood

EVAL_DIR = "eval"


def default_checkpoint(workdir: Path) -> Path:
    return Path(workdir) / "checkpoints" / "best"


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix with counts, true breeds down, predictions across.

    Cells stay about 0.4 inch wide however many breeds there are, and the fonts shrink a little
    with many breeds, so 33 breeds' names and counts remain legible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(labels)
    size = max(4.0, 0.42 * count + 2.5)
    tick_font = 8 if count <= 20 else 7
    cell_font = 7 if count <= 20 else 5.5
    figure, axis = plt.subplots(figsize=(size + 1.2, size))
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(count), labels, rotation=90, fontsize=tick_font)
    axis.set_yticks(range(count), labels, fontsize=tick_font)
    axis.set_xlabel("predicted breed")
    axis.set_ylabel("true breed")
    if count <= 40:
        for i in range(count):
            for j in range(count):
                if matrix[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    axis.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=cell_font, color=colour
                    )
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true breed")
    figure.tight_layout()
    figure.savefig(path, dpi=110 if count <= 20 else 130)
    plt.close(figure)
    return path


def evaluate(
    workdir: str | Path,
    checkpoint: str | Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    decision_source: str | Sequence[str] = DEFAULT_DECISION_SOURCE,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    command_line: str | None = None,
    detector_photos_per_breed: int | None = None,
    non_cat_folders: Sequence[Path] = (),
) -> dict:
    """Evaluate, calibrate, fit the OOD detector and choose the default "unsure" threshold; write
    and return WORKDIR/eval/metrics.json's content.

    The detector is fitted on the training photos' embeddings; `detector_photos_per_breed` caps
    them (a seeded draw per breed), since a breed mean and a shared covariance settle long
    before ten thousand photos, and that pass is the slowest of the three on a CPU. Photos in
    `non_cat_folders` (none holds a cat) give the detector its cat-or-not term."""
    workdir = Path(workdir)
    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint(workdir)
    model, spec, origin = load_checkpoint(checkpoint)
    labels = checkpoint_labels(model)
    if labels != read_labels(workdir):
        raise TrainerError(f"{checkpoint} was trained on other breeds than {workdir / 'labels.json'} lists")
    samples = read_manifest(workdir)
    outputs = {}
    for split in ("train", "val", "test"):
        chosen = split_samples(samples, split)
        if split == "train" and detector_photos_per_breed:
            chosen = at_most_per_breed(chosen, detector_photos_per_breed)
        if not chosen:
            raise DatasetError(f"the {split} split is empty; evaluation needs all three splits")
        logits, embeddings = run_on_photos(
            model, [s.path for s in chosen], spec, batch_size, f"evaluating {split}", device=device
        )
        outputs[split] = SplitOutputs.of(logits, embeddings, chosen, labels)

    non_cats = None
    if non_cat_folders:
        non_cat_paths = sorted(iter_photo_paths([Path(f) for f in non_cat_folders], recursive=True))
        if not non_cat_paths:
            raise DatasetError(f"no photos in {', '.join(map(str, non_cat_folders))} (--non-cat)")
        _, non_cats = run_on_photos(
            model, non_cat_paths, spec, batch_size, "photos without a cat", device=device
        )
    train, val, test = outputs["train"], outputs["val"], outputs["test"]
    calibration = calibration_report(val.logits, val.targets, test.logits, test.targets)
    detector = fit_detector(
        (train.embeddings, train.targets),
        (val.embeddings, val.logits),
        len(labels),
        mean_patch_span(model),
        non_cats,
    )
    ood = detector_figures(detector, test.embeddings, test.logits)
    noisy = noisy_breeds_by_source(read_summary(workdir))
    metrics = {
        "checkpoint": str(checkpoint.resolve()),
        "command_line": command_line,
        "base_model": origin.get("base_model"),
        "preset": origin.get("preset"),
        "architecture": origin.get("architecture", type(model).__name__),
        "device": device,
        "labels": labels,
        **classification_figures(val, test, labels, noisy),
        "calibration": calibration,
        "ood": ood,
        **sorting_figures(val, test, calibration["temperature"], detector, decision_source, target_precision),
    }
    out = workdir / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(np.asarray(metrics["confusion_matrix"]), labels, out / "confusion_matrix.png")
    plot_reliability(calibration, out / "reliability.png")
    save_ood(detector, out / OOD_FILE)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def at_most_per_breed(samples: list[Sample], limit: int, seed: int = 83) -> list[Sample]:
    """Up to `limit` samples of each breed, drawn with a fixed seed, in manifest order."""
    rng = np.random.default_rng(seed)
    by_breed: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        by_breed.setdefault(sample.label, []).append(index)
    kept: set[int] = set()
    for indices in by_breed.values():
        kept.update(rng.permutation(indices)[:limit].tolist() if len(indices) > limit else indices)
    return [sample for index, sample in enumerate(samples) if index in kept]


def _figure(value: float | None, style: str = ".4f") -> str:
    return "n/a" if value is None or value != value else format(value, style)


def format_summary(metrics: dict) -> str:
    """The headline numbers, per-source figures, risk-coverage and the per-breed table, as
    printed after `evaluate`."""
    test, cal, ood = metrics["test"], metrics["calibration"], metrics["ood"]
    width = max(len("breed"), *(len(b) for b in metrics["per_breed"]))
    lines = [
        f"test photos {test['count']}: accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}, "
        f"weighted F1 {test['weighted_f1']:.4f}",
    ]
    clean = metrics.get("test_without_flagged")
    if clean and clean["flagged_left_out"]:
        lines.append(
            f"  secondary, without the {clean['flagged_left_out']} test photos label cleaning flagged: "
            f"accuracy {_figure(clean['accuracy'])}, macro F1 {_figure(clean['macro_f1'])}"
        )
    for name, source in metrics.get("sources", {}).items():
        line = (
            f"  {name}: {source['test']['count']} photos of {len(source['breeds'])} breeds, accuracy "
            f"{_figure(source['test']['accuracy'])}, macro F1 {_figure(source['test']['macro_f1'])}"
        )
        if "clean_breeds_macro_f1" in source:
            line += (
                f"; macro F1 over its {source['clean_breeds']} breeds not marked noisy "
                f"{_figure(source['clean_breeds_macro_f1'])}"
            )
        lines.append(line)
    lines += [
        f"calibration: temperature {cal['temperature']:.3f} (fitted on validation); test ECE "
        f"{cal['test_ece_before']:.4f} -> {cal['test_ece_after']:.4f}",
        f"not-a-cat detector: threshold {ood['threshold']:.3f}; flags {ood['test_cats_flagged_not_cat']:.1%} "
        "of test cat photos",
    ]
    decision = metrics.get("decision")
    if decision:
        lines.append(f"default unsure threshold {decision['min_confidence']:.2f}: {decision['rule']}")
        for row in metrics["risk_coverage"]:
            parts = [
                f"{name} {_figure(r['coverage'], '.1%')} filed, {_figure(r['precision'], '.1%')} right"
                for name, r in [("all", row["overall"]), *row["per_source"].items()]
            ]
            marker = " (default)" if row["is_default"] else ""
            lines.append(f"  threshold {row['threshold']:.2f}{marker}: " + "; ".join(parts))
    lines += ["", f"{'breed':<{width}}  precision  recall      f1  support"]
    for breed, row in metrics["per_breed"].items():
        lines.append(
            f"{breed:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:6.3f}  {row['support']:7d}"
        )
    return "\n".join(lines)
