"""Giving a shipped bundle's not-a-cat detector its cat-or-not term from the bundle's own outputs."""

from __future__ import annotations

import pytest
from factories import (
    colour_energy_detector,
    make_colour_bundle,
    make_colour_manifest,
    make_photo,
)

from catbreed_desktop.core.bundle import load_bundle, sha256_file, write_bundle
from trainer.cli import main
from trainer.dataset import DatasetError
from trainer.non_cat_refit import photos_of_folders


def test_the_bundle_gets_the_term_its_model_file_stays_and_photos_without_a_cat_are_flagged(tmp_path):
    ood = colour_energy_detector()
    bundle = make_colour_bundle(tmp_path / "bundle", ood=ood)
    model_sha = sha256_file(bundle.path / "model.onnx")
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    grey = tmp_path / "grey"
    for n in range(8):
        make_photo(grey / f"grey-{n}.png", (100 + 8 * n,) * 3)

    status = main(
        ["non-cat-term", str(tmp_path / "work"), "--bundle", str(bundle.path), "--non-cat", str(grey)]
    )

    assert status == 0
    refitted = load_bundle(bundle.path)
    assert refitted.model_sha256 == model_sha == sha256_file(bundle.path / "model.onnx")
    assert refitted.ood["method"] == "mahalanobis_energy_non_cat"
    assert refitted.ood["threshold"] < 100.0  # set on the validation photos again
    assert refitted.metrics["ood"]["threshold_rule"] == "99.5th percentile of validation scores"
    assert refitted.labels == bundle.labels and refitted.decision == bundle.decision
    term = refitted.provenance["not_a_cat_term"]
    assert term["photos_without_a_cat"] == ["grey"]
    assert term["command_line"].startswith("python -m trainer non-cat-term ")
    assert term["command_line"].endswith(f"--non-cat {grey}")


def test_the_unsure_threshold_is_chosen_again_with_the_new_detector(tmp_path):
    # A bundle whose recorded threshold (0.99) was chosen with another detector: photos the new
    # detector flags are never filed, so the filed precision the threshold rests on has changed.
    stale = {"min_confidence": 0.99, "chosen_on": "validation", "rule": "chosen with the old detector"}
    colour = make_colour_bundle(tmp_path / "colour", ood=colour_energy_detector())
    bundle = write_bundle(
        tmp_path / "bundle",
        colour.model_path,
        labels=list(colour.labels),
        architecture=colour.architecture,
        preprocessing=colour.preprocessing,
        metrics={"decision": stale | {"source": ["colours"], "target_precision": 0.9}},
        ood=colour.ood,
        decision=stale,
    )
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    grey = tmp_path / "grey"
    for n in range(8):
        make_photo(grey / f"grey-{n}.png", (100 + 8 * n,) * 3)

    assert (
        main(["non-cat-term", str(tmp_path / "work"), "--bundle", str(bundle.path), "--non-cat", str(grey)])
        == 0
    )

    refitted = load_bundle(bundle.path)
    chosen = refitted.metrics["decision"]
    assert chosen["source"] == "colours" and chosen["target_precision"] == 0.9
    assert chosen["min_confidence"] < 0.99  # every colour photo is right, so a lower threshold qualifies
    assert chosen["validation"]["precision"] >= 0.9
    assert refitted.decision == {key: chosen[key] for key in ("min_confidence", "chosen_on", "rule")}
    assert refitted.metrics["risk_coverage"], "the risk-coverage rows are measured again"


def test_a_folder_without_photos_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no photos"):
        photos_of_folders([tmp_path / "empty"], None)
