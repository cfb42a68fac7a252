"""What the settings dialog says about a model bundle: its headline figures and one row per breed.

The figures are picked from the trainer's `metrics` for the precision the bundle really ships:
an int8 bundle is quoted with the int8 model's test accuracy and macro F1, not the float model's,
and never with the baseline's (`baseline_test`), which a raw dump of the metrics shows first.
A bundle without some figure (an older trainer, a hand-made bundle) shows a dash for it.

A model trained on several photo collections is quoted per collection first (its `sources`), as
the README and the model card quote it: the pooled test figure mixes an easy collection with a
hard one and describes neither, so it comes after them, named for what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catbreed_desktop.core.bundle import ModelBundle
from catbreed_desktop.core.printable import printable

DASH = "—"


@dataclass(frozen=True)
class BreedRow:
    breed: str
    f1: str
    precision: str
    recall: str
    photos: str  # test photos of that breed


@dataclass(frozen=True)
class BundleFacts:
    """A bundle's description as lines of (name, value) and a table of breeds."""

    lines: list[tuple[str, str]]
    breeds: list[BreedRow] = field(default_factory=list)
    breed_note: str = ""  # where the per-breed figures come from, when it is not the shipped model


def bundle_facts(bundle: ModelBundle) -> BundleFacts:
    metrics = bundle.metrics if isinstance(bundle.metrics, dict) else {}
    provenance = bundle.provenance if isinstance(bundle.provenance, dict) else {}
    precision = str(provenance.get("precision") or "fp32")
    test = _dict(metrics.get("test"))
    shipped = _dict(metrics.get(precision)) if precision != "fp32" else {}
    accuracy = shipped.get(f"test_accuracy_{precision}", test.get("accuracy", metrics.get("accuracy")))
    macro_f1 = shipped.get(f"test_macro_f1_{precision}", test.get("macro_f1", metrics.get("macro_f1")))
    photos = test.get("count") or shipped.get("test_photos")
    measured = f" on {photos} test photos" if isinstance(photos, int) else ""
    lines = [
        ("Folder", printable(bundle.path)),
        ("Model", f"{printable(bundle.architecture)}, {precision}"),
        ("Breeds", str(bundle.num_labels)),
    ]
    per_source = _per_source(metrics, precision)
    if per_source:
        lines += per_source
        lines.append(("Test, all sources", _scores(macro_f1, accuracy, photos)))
    else:
        lines += [
            ("Accuracy", _percent(accuracy) + (measured if accuracy is not None else "")),
            ("Macro F1", _figure(macro_f1)),
        ]
    lines += [
        ("Calibration", _calibration(bundle, _dict(metrics.get("calibration")))),
        ("Trained on", _sources(provenance)),
    ]
    per_breed = _dict(metrics.get("per_breed"))
    rows = []
    for label in bundle.labels:
        scores = _dict(per_breed.get(label))
        rows.append(
            BreedRow(
                printable(label),
                _figure(scores.get("f1")),
                _figure(scores.get("precision")),
                _figure(scores.get("recall")),
                str(scores["support"]) if isinstance(scores.get("support"), int) else DASH,
            )
        )
    note = ""
    if per_breed and precision != "fp32":
        note = f"Per-breed figures were measured on the float model this {precision} bundle was made from."
    return BundleFacts(lines, rows, note)


def _per_source(metrics: dict[str, Any], precision: str) -> list[tuple[str, str]]:
    """One line per photo collection with test figures: ("Test, oxford-pet-cats", "macro F1 0.900, ...")."""
    # The trainer measures the shipped model itself and says so (`measured_with`); older quantised
    # bundles carry the float model's figures, and say nothing.
    caveat = "" if precision == "fp32" or "measured_with" in metrics else " (measured on the float model)"
    lines = []
    for name, figures in _dict(metrics.get("sources")).items():
        test = _dict(_dict(figures).get("test"))
        if test:
            scores = _scores(test.get("macro_f1"), test.get("accuracy"), test.get("count"))
            lines.append((f"Test, {printable(str(name))}", scores + caveat))
    return lines


def _scores(macro_f1: Any, accuracy: Any, photos: Any) -> str:
    text = f"macro F1 {_figure(macro_f1)}, accuracy {_percent(accuracy)}"
    return text + (f" on {photos} photos" if isinstance(photos, int) else "")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _percent(value: Any) -> str:
    number = _number(value)
    return f"{number:.1%}" if number is not None else DASH


def _figure(value: Any) -> str:
    number = _number(value)
    return f"{number:.3f}" if number is not None else DASH


def _calibration(bundle: ModelBundle, calibration: dict[str, Any]) -> str:
    text = f"temperature {bundle.temperature:.2f}"
    before, after = _number(calibration.get("test_ece_before")), _number(calibration.get("test_ece_after"))
    if before is not None and after is not None:
        text += f"; expected calibration error {before:.3f} before, {after:.3f} after"
    return text


def _sources(provenance: dict[str, Any]) -> str:
    sources = provenance.get("data_sources")
    # Bundles name each source with its photo count; older ones held plain folder paths.
    names = (
        [
            printable(
                f"{s.get('name')} ({s['photos']} photos)"
                if isinstance(s.get("photos"), int)
                else str(s.get("name"))
            )
            if isinstance(s, dict)
            else printable(str(s))
            for s in sources
        ]
        if isinstance(sources, list)
        else []
    )
    count = provenance.get("data_photos")
    text = ", ".join(names) if names else DASH
    if isinstance(count, int):
        text += f"; {count} photos in all"
    return text
