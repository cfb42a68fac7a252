"""Two data sources through train (tiny preset), evaluate, export (fp32 and int8), compare and
report: per-source figures, the default threshold in bundle.json, honest int8 headline metrics,
no absolute path in a bundle, and a model card with the new sections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_data import run_trainer as _run
from trainer_sources import LEFT_OUT, OXFORD, PETFINDER, make_two_source_workdir, one_source_workdir

from trainer.dataset import read_manifest, split_samples
from trainer.evaluate import format_summary
from trainer.modeling import load_checkpoint, run_on_photos
from trainer.portable import is_absolute_text

TRAIN_ARGS = ["--preset", "tiny", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3", "--save-every", "50"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sources")
    workdir, data = make_two_source_workdir(root)
    oxford_only = one_source_workdir(workdir, OXFORD, root / "oxford-only")
    _run("train", str(workdir), *TRAIN_ARGS)
    _run("train", str(oxford_only), *TRAIN_ARGS)
    _run("evaluate", str(workdir), "--device", "cpu", "--target-precision", "0.9")
    _run("export", str(workdir), "--out", str(root / "bundle"))
    _run("export", str(workdir), "--out", str(root / "bundle_int8"), "--int8")
    _run(
        "compare", str(workdir), "--checkpoint", f"all-breeds={workdir / 'checkpoints' / 'best'}",
        "--checkpoint", f"oxford-only={oxford_only / 'checkpoints' / 'best'}", "--source", PETFINDER,
        "--breeds-of", str(oxford_only / "checkpoints" / "best"), "--title", "Oxford-only on Petfinder",
        "--out", str(root / "compare.json"), "--device", "cpu",
    )  # fmt: skip
    return {"root": root, "workdir": workdir, "data": data, "oxford_only": oxford_only}


def _test_outputs(workdir: Path, checkpoint: Path) -> tuple[list, np.ndarray]:
    test = split_samples(read_manifest(workdir), "test")
    model, spec, _ = load_checkpoint(checkpoint)
    logits, _ = run_on_photos(model, [s.path for s in test], spec)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return test, np.array([labels[i] for i in logits.argmax(1)])


def test_evaluation_reports_each_source_and_the_flagged_out_figure(chain):
    workdir = chain["workdir"]
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    test, predicted = _test_outputs(workdir, workdir / "checkpoints" / "best")
    truth = np.array([s.label for s in test])
    sources = np.array([s.source for s in test])

    assert set(metrics["sources"]) == {OXFORD, PETFINDER}
    for name in (OXFORD, PETFINDER):
        members = sources == name
        figures = metrics["sources"][name]
        assert figures["test"]["count"] == members.sum()
        assert figures["test"]["accuracy"] == pytest.approx(np.mean(truth[members] == predicted[members]))
    assert metrics["sources"][OXFORD]["breeds"] == ["Bengal", "Birman", "Siamese"]
    assert metrics["sources"][PETFINDER]["noisy_breeds"] == ["Birman"]
    assert metrics["sources"][PETFINDER]["clean_breeds"] == 3
    assert "clean_breeds_macro_f1" not in metrics["sources"][OXFORD]

    flagged = np.array([s.flagged for s in test])
    assert flagged.sum() == 1 and metrics["test_without_flagged"]["flagged_left_out"] == 1
    assert metrics["test_without_flagged"]["accuracy"] == pytest.approx(
        np.mean(truth[~flagged] == predicted[~flagged])
    )
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean(truth == predicted))  # headline: as given
    assert metrics["confused_pairs"][0]["breeds"] == ["Birman", "Havana"]  # same colour, by design

    printed = format_summary(metrics)
    assert "secondary, without the 1 test photos label cleaning flagged" in printed
    assert f"{PETFINDER}: 12 photos of 4 breeds" in printed
    assert "macro F1 over its 3 breeds not marked noisy" in printed
    assert "(default)" in printed


def test_default_threshold_is_chosen_on_oxford_validation_photos(chain):
    metrics = json.loads((chain["workdir"] / "eval" / "metrics.json").read_text())
    decision = metrics["decision"]
    assert decision["chosen_on"] == "validation" and decision["source"] == OXFORD
    assert not decision["fell_back_to_all_sources"]
    assert decision["validation"]["photos"] == 6  # 3 breeds x 2 validation photos of Oxford
    assert 0.0 < decision["min_confidence"] < 1.0
    if decision["met"]:
        assert decision["validation"]["precision"] >= 0.9
    rows = metrics["risk_coverage"]
    assert [r["threshold"] for r in rows if r["is_default"]] == [decision["min_confidence"]]
    assert {0.5, 0.7, 0.9} <= {r["threshold"] for r in rows}
    for row in rows:
        assert set(row["per_source"]) == {OXFORD, PETFINDER}
        assert row["overall"]["photos"] == metrics["test"]["count"]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.parametrize("bundle_name", ["bundle", "bundle_int8"])
def test_bundle_json_names_no_absolute_path(chain, bundle_name):
    text = (chain["root"] / bundle_name / "bundle.json").read_text()
    absolute = [s for s in _strings(json.loads(text)) if is_absolute_text(s)]
    assert absolute == []
    assert str(chain["root"]) not in text and str(Path.home()) not in text
    provenance = json.loads(text)["provenance"]
    assert provenance["workdir"] == "work" and provenance["checkpoint"] == "work/checkpoints/best"
    assert [s["path"] for s in provenance["data_sources"]] == [OXFORD, PETFINDER]
    assert provenance["left_out_breeds"] == LEFT_OUT


def test_bundle_records_the_decision_and_the_shipped_precisions_metrics(chain):
    from catbreed_desktop.core.bundle import load_bundle
    from catbreed_desktop.core.classify import Classifier, Prediction

    evaluation = json.loads((chain["workdir"] / "eval" / "metrics.json").read_text())
    fp32 = load_bundle(chain["root"] / "bundle")
    assert fp32.metrics["precision"] == "fp32"
    assert fp32.metrics["test"] == evaluation["test"]
    assert fp32.decision == {k: evaluation["decision"][k] for k in ("min_confidence", "chosen_on", "rule")}

    int8 = load_bundle(chain["root"] / "bundle_int8")
    assert int8.metrics["precision"] == "int8"
    assert int8.metrics["fp32_pytorch"]["test"] == evaluation["test"]
    assert int8.decision["min_confidence"] == int8.metrics["decision"]["min_confidence"]
    # The headline is what the shipped int8 model itself does on the test photos, through the app.
    test = split_samples(read_manifest(chain["workdir"]), "test")
    classifier = Classifier(int8, engine="cpu", batch_size=8)
    try:
        predictions = [p for p in classifier.classify([s.path for s in test]) if isinstance(p, Prediction)]
    finally:
        classifier.close()
    truth = {s.path: s.label for s in test}
    accuracy = np.mean([truth[p.path] == p.label for p in predictions])
    assert len(predictions) == len(test)
    assert int8.metrics["test"]["accuracy"] == pytest.approx(accuracy)
    flagged_not_cat = np.mean([not p.is_cat for p in predictions])
    assert int8.metrics["ood"]["test_cats_flagged_not_cat"] == pytest.approx(flagged_not_cat)


def test_compare_scores_each_checkpoint_on_the_same_photos(chain):
    result = json.loads((chain["root"] / "compare.json").read_text())
    workdir = chain["workdir"]
    assert result["breeds"] == ["Bengal", "Birman", "Siamese"] and result["sources"] == [PETFINDER]
    assert result["photos"] == 9  # 3 Oxford breeds x 3 Petfinder test photos
    assert result["left_out_seen_in_training"] == {"all-breeds": 0, "oxford-only": 0}
    assert result["checkpoints"]["all-breeds"]["labels"] == 4
    assert result["checkpoints"]["oxford-only"]["labels"] == 3
    for name, folder in (("all-breeds", workdir), ("oxford-only", chain["oxford_only"])):
        test, predicted = _test_outputs(workdir, folder / "checkpoints" / "best")
        chosen = np.array([s.source == PETFINDER and s.label in result["breeds"] for s in test])
        truth = np.array([s.label for s in test])[chosen]
        assert result["checkpoints"][name]["overall"]["accuracy"] == pytest.approx(
            np.mean(truth == predicted[chosen])
        )
    assert not any(is_absolute_text(s) for s in _strings(result))


def test_compare_scores_a_bundle_as_the_app_runs_it(chain, tmp_path):
    from catbreed_desktop.core.bundle import load_bundle
    from catbreed_desktop.core.classify import Classifier

    root, workdir = chain["root"], chain["workdir"]
    out = tmp_path / "bundle_compare.json"
    _run(
        "compare", str(workdir), "--checkpoint", f"shipped={root / 'bundle_int8'}", "--source", PETFINDER,
        "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    result = json.loads(out.read_text())
    photos = [
        s
        for s in split_samples(read_manifest(workdir), "test")
        if s.source == PETFINDER and s.label in result["breeds"]
    ]
    classifier = Classifier(load_bundle(root / "bundle_int8"), engine="cpu", batch_size=8)
    try:
        predictions = list(classifier.classify([s.path for s in photos]))
    finally:
        classifier.close()
    truth = {s.path: s.label for s in photos}
    assert result["photos"] == len(photos) == len(predictions)
    assert result["checkpoints"]["shipped"]["overall"]["accuracy"] == pytest.approx(
        np.mean([truth[p.path] == p.label for p in predictions])
    )


def test_model_card_has_sources_licences_recipe_coverage_and_comparisons(chain):
    root, workdir = chain["root"], chain["workdir"]
    card = root / "card" / "MODEL_CARD.md"
    _run(
        "report", str(workdir), "--out", str(card), "--bundle", str(root / "bundle_int8"),
        "--speed-photos", "4", "--comparison", str(root / "compare.json"),
    )  # fmt: skip
    text = card.read_text()
    evaluation = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert "Licence, in its README's words: Licence: Creative Commons Attribution-ShareAlike 4.0." in text
    assert "--checkpoint oxford-only=oxford-only/checkpoints/best" in text  # not just "best"
    assert "No licence is stated: use these photos to train and evaluate, do not redistribute them." in text
    assert "Korat: fewer than 60 photos left after label cleaning" in text
    prepared = len(json.loads((workdir / "summary.json").read_text())["counts"])
    assert f"photos of {prepared} breeds" in text
    assert (
        f"`clean` then left out 1 of these breeds (see Breeds left out), so the model answers {prepared - 1}."
        in text
    )
    assert "Bengal, Birman, Havana, Siamese." in text
    assert "- evaluate: `python -m trainer evaluate work --device cpu --target-precision 0.9`" in text
    assert "- export: `python -m trainer export work --out bundle_int8 --int8`" in text
    assert "- train: `python -m trainer train work --preset tiny --epochs 3" in text
    for heading in (
        "### Per data source",
        f"#### {PETFINDER}",
        "Birman (noisy labels)",
        "## Sorting: the unsure threshold and coverage",
        "## Cross-source comparisons",
        "### Oxford-only on Petfinder",
        "### int8 against fp32",
        "### Known confusions",
        "| Birman / Havana |",
    ):
        assert heading in text, heading
    threshold = json.loads((root / "bundle_int8" / "bundle.json").read_text())["decision"]["min_confidence"]
    assert f"Default unsure threshold: **{threshold:.2f}**" in text
    assert evaluation["confused_pairs"][0]["mistakes"] > 0
    assert str(root) not in text
