"""Calibration: temperature scaling fitted on validation logits, expected calibration error and
the reliability diagram. The bundle stores the temperature; the app divides logits by it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# The app's own softmax: the calibration measured is the one people see.
from catbreed_desktop.core.engines.base import softmax

ECE_BINS = 15


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T).

    Optimised over log T with L-BFGS, so T stays positive without constraints.
    """
    if len(targets) == 0:
        return 1.0
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.exp().item())
    # Perfectly separated validation data drives T towards 0 (ever sharper); keep it sane.
    return float(np.clip(temperature, 0.05, 20.0))


def reliability_bins(probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: its range, photo count, mean confidence and accuracy."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(targets)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (lower, upper]; the first also takes a confidence of exactly 0.
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    result = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        result.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else 0.0,
                "accuracy": float(correct[members].mean()) if count else 0.0,
            }
        )
    return result


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (bin share of photos) x |accuracy - mean confidence|."""
    total = len(targets)
    if total == 0:
        return float("nan")
    return float(
        sum(
            b["count"] / total * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(probabilities, targets, bins)
        )
    )


def calibration_report(
    val_logits: np.ndarray, val_targets: np.ndarray, test_logits: np.ndarray, test_targets: np.ndarray
) -> dict:
    """Temperature from validation, ECE and reliability bins on test before and after."""
    temperature = fit_temperature(val_logits, val_targets)
    before = softmax(test_logits)
    after = softmax(test_logits, temperature)
    return {
        "temperature": temperature,
        "fitted_on": "val",
        "bins": ECE_BINS,
        "test_ece_before": expected_calibration_error(before, test_targets),
        "test_ece_after": expected_calibration_error(after, test_targets),
        "test_nll_before": _nll(before, test_targets),
        "test_nll_after": _nll(after, test_targets),
        "reliability_before": reliability_bins(before, test_targets),
        "reliability_after": reliability_bins(after, test_targets),
    }


def _nll(probabilities: np.ndarray, targets: np.ndarray) -> float:
    if len(targets) == 0:
        return float("nan")
    picked = probabilities[np.arange(len(targets)), np.asarray(targets)]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def plot_reliability(report: dict, path: Path) -> Path:
    """Reliability diagram: accuracy per confidence bin before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for axis, key, title in (
        (axes[0], "reliability_before", f"before (ECE {report['test_ece_before']:.3f})"),
        (
            axes[1],
            "reliability_after",
            f"T = {report['temperature']:.2f} (ECE {report['test_ece_after']:.3f})",
        ),
    ):
        bins = report[key]
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = 1.0 / len(bins)
        axis.bar(centres, [b["accuracy"] for b in bins], width=width, edgecolor="black", label="accuracy")
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        axis.set_title(title)
        axis.set_xlabel("confidence")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy on test photos")
    axes[0].legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
