"""`evaluate`: score a checkpoint on the test split, calibrate it, and fit its "not a cat" detector.

Writes WORKDIR/eval/: metrics.json (accuracy, macro/weighted F1, per-breed precision/recall/F1,
confusion matrix, calibration, OOD figures), ood.npz (class means, precision, threshold),
confusion_matrix.png and reliability.png. The temperature is fitted on validation photos and
judged on test photos; the OOD detector is fitted on training embeddings and its threshold is
the 95th percentile of validation scores, so about 5% of real cat photos are flagged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.calibration import calibration_report, plot_reliability
from trainer.dataset import DatasetError, read_labels, read_manifest, split_samples
from trainer.errors import TrainerError
from trainer.metrics import classification_scores, per_label_scores
from trainer.modeling import checkpoint_labels, load_checkpoint, run_on_photos

OOD_PERCENTILE = 95.0
EVAL_DIR = "eval"
OOD_FILE = "ood.npz"


def default_checkpoint(workdir: Path) -> Path:
    return Path(workdir) / "checkpoints" / "best"


def fit_ood(embeddings: np.ndarray, targets: np.ndarray, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(class means (C, D), shared precision (D, D)) with Ledoit-Wolf shrinkage of the covariance.

    Shrinkage keeps the precision well-conditioned when photos are few compared with the
    embedding size (e.g. 1,500 photos of 768-dimensional DINOv2 features).
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(embeddings, dtype=np.float64)
    targets = np.asarray(targets)
    overall = x.mean(axis=0)
    means = np.stack(
        [x[targets == c].mean(axis=0) if np.any(targets == c) else overall for c in range(num_labels)]
    )
    centred = x - means[targets]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    return means, precision


def ood_figures(
    train: tuple[np.ndarray, np.ndarray],
    val_embeddings: np.ndarray,
    test_embeddings: np.ndarray,
    num_labels: int,
) -> tuple[dict, dict]:
    """(detector arrays, figures): fit on train, threshold on validation, flag rate on test."""
    from catbreed_desktop.core.ood import mahalanobis_scores

    means, precision = fit_ood(train[0], train[1], num_labels)
    val_scores = mahalanobis_scores(val_embeddings, means, precision)
    threshold = float(np.percentile(val_scores, OOD_PERCENTILE))
    test_scores = mahalanobis_scores(test_embeddings, means, precision)
    detector = {"means": means, "precision": precision, "threshold": threshold}
    figures = {
        "method": "mahalanobis",
        "embedding_size": int(means.shape[1]),
        "threshold": threshold,
        "threshold_rule": f"{OOD_PERCENTILE:g}th percentile of validation scores",
        "test_cats_flagged_not_cat": float(np.mean(test_scores > threshold)),
        "test_score_median": float(np.median(test_scores)),
    }
    return detector, figures


def save_ood(detector: dict, path: Path) -> None:
    np.savez(path, means=detector["means"], precision=detector["precision"], threshold=detector["threshold"])


def load_ood(path: Path) -> dict | None:
    """The bundle's `ood` section from an ood.npz, or None when evaluate has not written one."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {
            "method": "mahalanobis",
            "means": data["means"].tolist(),
            "precision": data["precision"].tolist(),
            "threshold": float(data["threshold"]),
        }


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix with counts, true breeds down, predictions across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(labels) + 2.0)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.set_xlabel("predicted breed")
    axis.set_ylabel("true breed")
    if len(labels) <= 25:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    axis.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true breed")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluate(workdir: str | Path, checkpoint: str | Path | None = None, batch_size: int = 16) -> dict:
    """Evaluate, calibrate and fit the OOD detector; write and return WORKDIR/eval/metrics.json's content."""
    from sklearn.metrics import confusion_matrix

    workdir = Path(workdir)
    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint(workdir)
    model, spec, origin = load_checkpoint(checkpoint)
    labels = checkpoint_labels(model)
    if labels != read_labels(workdir):
        raise TrainerError(f"{checkpoint} was trained on other breeds than {workdir / 'labels.json'} lists")
    index = {label: i for i, label in enumerate(labels)}
    samples = read_manifest(workdir)
    outputs = {}
    for split in ("train", "val", "test"):
        chosen = split_samples(samples, split)
        if not chosen:
            raise DatasetError(f"the {split} split is empty; evaluation needs all three splits")
        logits, embeddings = run_on_photos(
            model, [s.path for s in chosen], spec, batch_size, f"evaluating {split}"
        )
        outputs[split] = (logits, embeddings, np.array([index[s.label] for s in chosen]))

    test_logits, test_embeddings, test_targets = outputs["test"]
    predictions = test_logits.argmax(axis=1)
    matrix = confusion_matrix(test_targets, predictions, labels=list(range(len(labels))))
    calibration = calibration_report(outputs["val"][0], outputs["val"][2], test_logits, test_targets)
    detector, ood = ood_figures(
        (outputs["train"][1], outputs["train"][2]), outputs["val"][1], test_embeddings, len(labels)
    )
    metrics = {
        "checkpoint": str(checkpoint.resolve()),
        "base_model": origin.get("base_model"),
        "preset": origin.get("preset"),
        "architecture": origin.get("architecture", type(model).__name__),
        "labels": labels,
        "test": classification_scores(test_targets, predictions, len(labels)),
        "validation": classification_scores(outputs["val"][2], outputs["val"][0].argmax(axis=1), len(labels)),
        "per_breed": per_label_scores(test_targets, predictions, labels),
        "confusion_matrix": matrix.tolist(),
        "calibration": calibration,
        "ood": ood,
    }
    out = workdir / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(matrix, labels, out / "confusion_matrix.png")
    plot_reliability(calibration, out / "reliability.png")
    save_ood(detector, out / OOD_FILE)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def format_summary(metrics: dict) -> str:
    """The headline numbers and the per-breed table, as printed after `evaluate`."""
    test, cal, ood = metrics["test"], metrics["calibration"], metrics["ood"]
    width = max(len("breed"), *(len(b) for b in metrics["per_breed"]))
    lines = [
        f"test photos {test['count']}: accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}, "
        f"weighted F1 {test['weighted_f1']:.4f}",
        f"calibration: temperature {cal['temperature']:.3f} (fitted on validation); test ECE "
        f"{cal['test_ece_before']:.4f} -> {cal['test_ece_after']:.4f}",
        f"not-a-cat detector: threshold {ood['threshold']:.3f}; flags {ood['test_cats_flagged_not_cat']:.1%} "
        "of test cat photos",
        "",
        f"{'breed':<{width}}  precision  recall      f1  support",
    ]
    for breed, row in metrics["per_breed"].items():
        lines.append(
            f"{breed:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:6.3f}  {row['support']:7d}"
        )
    return "\n".join(lines)
