"""bundle.json's `decision` section: the trainer's unsure threshold, read, checked and written back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import BREEDS_33, make_breeds_bundle

from catbreed_desktop.core.bundle import (
    BUNDLE_FILE,
    DEFAULT_MIN_CONFIDENCE,
    BundleError,
    load_bundle,
)

DECISION = {
    "min_confidence": 0.45,
    "chosen_on": "validation",
    "rule": "lowest threshold at which 95% of the filed validation photos are right",
}


def rewrite_decision(folder: Path, decision: object) -> None:
    manifest = folder / BUNDLE_FILE
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["decision"] = decision
    manifest.write_text(json.dumps(data), encoding="utf-8")


def test_a_bundle_of_33_breeds_keeps_its_decision_through_write_and_load(tmp_path: Path) -> None:
    written = make_breeds_bundle(tmp_path / "bundle", decision=DECISION)

    loaded = load_bundle(written.path)
    assert loaded.num_labels == 33 and set(loaded.labels) == set(BREEDS_33)
    assert loaded.decision == DECISION and loaded.min_confidence == 0.45
    assert loaded.default_min_confidence == 0.45
    source = loaded.min_confidence_source()
    assert "recommended by the model bundle" in source and "validation" in source and "95%" in source
    on_disk = json.loads((written.path / BUNDLE_FILE).read_text(encoding="utf-8"))
    assert on_disk["decision"] == DECISION


def test_an_older_bundle_has_no_decision_and_keeps_the_old_default(tmp_path: Path, colour_bundle) -> None:
    assert "decision" not in json.loads((colour_bundle.path / BUNDLE_FILE).read_text(encoding="utf-8"))
    loaded = load_bundle(colour_bundle.path)
    assert loaded.decision is None and loaded.min_confidence is None
    assert loaded.default_min_confidence == DEFAULT_MIN_CONFIDENCE == 0.5
    assert "recommends no threshold" in loaded.min_confidence_source()


def test_an_integer_like_threshold_and_extra_fields_are_accepted(tmp_path: Path) -> None:
    bundle = make_breeds_bundle(tmp_path / "bundle")
    rewrite_decision(bundle.path, {"min_confidence": 0.7, "chosen_on": "validation", "coverage": 0.8})
    loaded = load_bundle(bundle.path, verify=False)
    assert loaded.min_confidence == 0.7 and loaded.decision["coverage"] == 0.8  # kept for later readers


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        ({"min_confidence": "high"}, "min_confidence must be a number between 0 and 1, not 'high'"),
        ({"min_confidence": True}, "min_confidence must be a number between 0 and 1, not True"),
        ({"min_confidence": None}, "min_confidence must be a number between 0 and 1, not None"),
        ({"min_confidence": 1.5}, "min_confidence must be between 0 and 1 (both excluded), not 1.5"),
        ({"min_confidence": 0}, "min_confidence must be between 0 and 1 (both excluded), not 0"),
        ({"min_confidence": 1}, "min_confidence must be between 0 and 1 (both excluded), not 1"),
        ({"min_confidence": -0.2}, "min_confidence must be between 0 and 1 (both excluded), not -0.2"),
        ({"min_confidence": float("nan")}, "min_confidence must be between 0 and 1 (both excluded), not nan"),
        ({"chosen_on": "validation"}, "'decision' has no 'min_confidence'"),
        ({"min_confidence": 0.5, "rule": 7}, "'decision' rule must be text, not 7"),
        ({"min_confidence": 0.5, "chosen_on": "x" * 5000}, "chosen_on is 5,000 characters long"),
        ([0.5], "'decision' must be a JSON object"),
    ],
)
def test_a_bad_decision_is_refused_with_the_reason(tmp_path: Path, decision: object, expected: str) -> None:
    bundle = make_breeds_bundle(tmp_path / "bundle", decision=DECISION)
    rewrite_decision(bundle.path, decision)

    with pytest.raises(BundleError) as caught:
        load_bundle(bundle.path, verify=False)
    message = str(caught.value)
    assert expected in message
    assert str(bundle.path / BUNDLE_FILE) in message and "\n" not in message


def test_write_bundle_refuses_a_bad_decision_and_keeps_the_bundle_there(tmp_path: Path) -> None:
    good = make_breeds_bundle(tmp_path / "bundle", decision=DECISION)
    with pytest.raises(BundleError, match="min_confidence must be between 0 and 1"):
        make_breeds_bundle(tmp_path / "bundle", decision={"min_confidence": 2.0})
    assert load_bundle(good.path).min_confidence == 0.45  # the working bundle was not overwritten
