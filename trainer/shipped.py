"""The metrics bundle.json carries: those of the model it ships.

`evaluate` measures the PyTorch checkpoint in fp32; an int8 bundle answers differently on some
photos, so its headline figures (accuracy, per breed, per source, calibration error, not-a-cat
rate, risk-coverage and the "unsure" threshold) are measured again on the int8 model itself.
The fp32 figures stay beside them under `fp32_pytorch`, named for what measured them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from catbreed_desktop.core.engines.base import softmax
from trainer.breakdown import noisy_breeds_by_source
from trainer.calibration import ECE_BINS, expected_calibration_error
from trainer.coverage import DEFAULT_DECISION_SOURCE, DEFAULT_TARGET_PRECISION
from trainer.dataset import Sample
from trainer.figures import SplitOutputs, classification_figures, sorting_figures
from trainer.not_a_cat import detector_figures

# Figures that describe one model's answers; they are what `fp32_pytorch` keeps.
MODEL_FIGURES = (
    "test",
    "test_without_flagged",
    "validation",
    "per_breed",
    "sources",
    "confused_pairs",
    "calibration",
    "ood",
    "decision",
    "risk_coverage",
)
CALIBRATION_KEYS = ("temperature", "fitted_on", "bins", "test_ece_before", "test_ece_after")
FP32_KEY = "fp32_pytorch"

Outputs = Callable[[list[Path], str], tuple[np.ndarray, np.ndarray]]


def _figures_of(evaluation: Mapping) -> dict:
    figures = {key: evaluation[key] for key in MODEL_FIGURES if key in evaluation}
    if "calibration" in figures:
        figures["calibration"] = {k: figures["calibration"][k] for k in CALIBRATION_KEYS}
    return figures


def measure_shipped(
    run: Outputs,
    val_samples: Sequence[Sample],
    test_samples: Sequence[Sample],
    labels: Sequence[str],
    evaluation: Mapping,
    detector: Mapping | None,
    summary: Mapping,
) -> dict:
    """The figures of the shipped model, run by `run(paths, description)` -> (logits, embeddings).

    It keeps the evaluated temperature (the bundle has one) and uses the shipped `detector`, and
    chooses its "unsure" threshold by the rule `evaluate` recorded.
    """
    val = SplitOutputs.of(
        *run([s.path for s in val_samples], "shipped model, validation"), val_samples, labels
    )
    test = SplitOutputs.of(*run([s.path for s in test_samples], "shipped model, test"), test_samples, labels)
    temperature = float(evaluation["calibration"]["temperature"])
    rule = evaluation.get("decision") or {}
    figures = classification_figures(val, test, labels, noisy_breeds_by_source(summary))
    figures.pop("confusion_matrix")
    ood = dict(evaluation.get("ood") or {})
    if detector is not None:
        ood |= detector_figures(detector, test.embeddings, test.logits)
    calibration = {
        "temperature": temperature,
        "fitted_on": evaluation["calibration"].get("fitted_on", "val"),
        "bins": ECE_BINS,
        "test_ece_before": expected_calibration_error(softmax(test.logits), test.targets),
        "test_ece_after": expected_calibration_error(softmax(test.logits, temperature), test.targets),
    }
    sorting = sorting_by_rule(val, test, temperature, detector, rule)
    return figures | {"calibration": calibration, "ood": ood} | sorting


def sorting_by_rule(
    val: SplitOutputs, test: SplitOutputs, temperature: float, detector: Mapping | None, rule: Mapping
) -> dict:
    """`decision` and `risk_coverage` as `sorting_figures` measures them, the threshold chosen
    again by the rule a bundle recorded in `metrics.decision` (its sources and target precision)."""
    return sorting_figures(
        val,
        test,
        temperature,
        detector,
        rule.get("source", DEFAULT_DECISION_SOURCE),
        rule.get("target_precision", DEFAULT_TARGET_PRECISION),
    )


def bundle_metrics(evaluation: Mapping, precision: str, shipped: Mapping | None = None) -> dict:
    """bundle.json's `metrics`: the shipped model's figures as the headline (the evaluation's when
    it ships fp32, whose ONNX export was checked to agree with PyTorch), fp32 beside them."""
    fp32 = _figures_of(evaluation)
    if shipped is None:
        return fp32 | {
            "precision": precision,
            "measured_with": "PyTorch fp32 checkpoint; the ONNX fp32 export was checked to agree with it",
        }
    return _figures_of(shipped) | {
        "precision": precision,
        "measured_with": f"the shipped {precision} ONNX model under ONNX Runtime",
        FP32_KEY: fp32,
    }


def bundle_decision(metrics: Mapping) -> dict | None:
    """bundle.json's `decision` section (what the app reads) from the headline figures."""
    decision = metrics.get("decision")
    if not decision:
        return None
    return {key: decision[key] for key in ("min_confidence", "chosen_on", "rule")}
