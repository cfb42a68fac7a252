"""The figures of one model's outputs on the validation and test photos.

Shared by `evaluate` (the PyTorch checkpoint) and `export` (the shipped int8 model), so the
bundle's headline figures are computed the same way whichever precision it ships.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from catbreed_desktop.core.engines.base import softmax
from catbreed_desktop.core.ood import OodDetector
from trainer.breakdown import source_figures, without_flagged
from trainer.coverage import DEFAULT_DECISION_SOURCE, DEFAULT_TARGET_PRECISION, choose_decision, risk_coverage
from trainer.dataset import Sample
from trainer.metrics import classification_scores, confused_pairs, per_label_scores


@dataclass(frozen=True)
class SplitOutputs:
    """A model's outputs on one split's photos, with what the manifest says about each photo."""

    logits: np.ndarray
    embeddings: np.ndarray
    targets: np.ndarray
    sources: list[str]
    flagged: np.ndarray

    @classmethod
    def of(
        cls, logits: np.ndarray, embeddings: np.ndarray, samples: Sequence[Sample], labels: Sequence[str]
    ) -> SplitOutputs:
        index = {label: i for i, label in enumerate(labels)}
        return cls(
            logits=logits,
            embeddings=embeddings,
            targets=np.array([index[s.label] for s in samples], dtype=np.int64),
            sources=[s.source for s in samples],
            flagged=np.array([s.flagged for s in samples], dtype=bool),
        )


def is_cat(outputs: SplitOutputs, detector: Mapping | None) -> np.ndarray:
    """The app's not-a-cat verdict per photo: a score at or under the threshold is a cat."""
    if detector is None:
        return np.ones(len(outputs.embeddings), dtype=bool)
    return OodDetector.from_config(detector).is_cat(outputs.embeddings, outputs.logits)


def classification_figures(
    val: SplitOutputs, test: SplitOutputs, labels: Sequence[str], noisy: Mapping[str, Sequence[str]]
) -> dict:
    """Headline, flagged-out, validation, per-breed and per-source figures and the confusions."""
    from sklearn.metrics import confusion_matrix

    predictions = test.logits.argmax(axis=1)
    everything = list(range(len(labels)))
    matrix = confusion_matrix(test.targets, predictions, labels=everything)
    return {
        "test": classification_scores(test.targets, predictions, len(labels)),
        "test_without_flagged": without_flagged(test.targets, predictions, test.flagged, everything),
        "validation": classification_scores(val.targets, val.logits.argmax(axis=1), len(labels)),
        "per_breed": per_label_scores(test.targets, predictions, list(labels)),
        "sources": source_figures(test.targets, predictions, test.sources, test.flagged, list(labels), noisy),
        "confusion_matrix": matrix.tolist(),
        "confused_pairs": confused_pairs(matrix, list(labels)),
    }


def sorting_figures(
    val: SplitOutputs,
    test: SplitOutputs,
    temperature: float,
    detector: Mapping | None,
    decision_source: str | Sequence[str] = DEFAULT_DECISION_SOURCE,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> dict:
    """`decision` (the default "unsure" threshold, chosen on validation) and `risk_coverage`
    (test), sorting as the app would: the bundle's temperature, its not-a-cat detector, then
    the threshold."""
    val_probabilities = softmax(val.logits, temperature)
    decision = choose_decision(
        val_probabilities,
        val.targets,
        is_cat(val, detector),
        val.sources,
        decision_source,
        target_precision,
    )
    rows = risk_coverage(
        softmax(test.logits, temperature),
        test.targets,
        is_cat(test, detector),
        test.sources,
        decision["min_confidence"],
    )
    return {"decision": decision, "risk_coverage": rows}
