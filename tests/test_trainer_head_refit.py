"""Refitting an exported bundle's last layer on its own embeddings (`python -m trainer refit-head`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from factories import (
    COLOUR_LABELS,
    TINY_SPEC,
    colour_energy_detector,
    make_colour_manifest,
    make_colour_model,
)
from onnx import TensorProto, helper, numpy_helper

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, load_bundle, write_bundle
from trainer import head_refit
from trainer.cli import main
from trainer.dataset import DatasetError, read_manifest, write_manifest
from trainer.head_refit import Head, HeadRefitError, photo_weights, read_head, write_head

# Each colour's photos called the next colour's breed: a head that is wrong on every photo.
ROTATED = [1, 2, 0]


def _wrong_head_bundle(tmp_path: Path) -> Path:
    """The colour bundle with its head's rows rotated, a not-a-cat detector and an unsure rule."""
    source = make_colour_model(tmp_path / "colour.onnx")
    right = read_head(source)
    rotated = write_head(source, Head(right.weights[ROTATED], right.bias[ROTATED]), tmp_path / "rotated.onnx")
    write_bundle(
        tmp_path / "bundle",
        rotated,
        labels=COLOUR_LABELS,
        architecture="test-colour-classifier",
        preprocessing=TINY_SPEC,
        metrics={
            "precision": "fp32",
            "int8": {"int8_size_mb": 1.0, "test_macro_f1_int8": 0.0},
            "export_check": {"photos": 2, "top1_agreement": 1.0},
        },
        ood=colour_energy_detector(),
        decision={"min_confidence": 0.5, "chosen_on": "validation", "rule": "test"},
    )
    return tmp_path / "bundle"


def test_a_wrong_head_is_refitted_and_everything_reading_the_logits_is_set_again(tmp_path):
    bundle_dir = _wrong_head_bundle(tmp_path)
    make_colour_manifest(tmp_path / "work", tmp_path / "photos", flagged_per_breed=1)
    old = load_bundle(bundle_dir)

    status = main(
        [
            "refit-head", str(tmp_path / "work"), "--bundle", str(bundle_dir), "--out", str(tmp_path / "new"),
            "--source-weight", "colours=1,0.5", "--regularisation", "0.1,10", "--class-weighting", "balanced,none",
        ]
    )  # fmt: skip

    assert status == 0
    new = load_bundle(tmp_path / "new")
    record = new.metrics["head_refit"]
    assert len(record["tried"]) == 8 and record["chosen"]["source_weights"] in (
        {"colours": 1.0},
        {"colours": 0.5},
    )
    assert {row["class_weighting"] for row in record["tried"]} == {"balanced", "none"}
    assert record["chosen"]["class_weighting"] in ("balanced", "none")
    assert record["old_head"]["test"]["source_mean_macro_f1"] == 0.0
    assert record["new_head"]["test"]["source_mean_macro_f1"] == 1.0
    assert record["flagged_photos_left_out"] == 3 and record["training_photos"] == 15
    check = record["patched_model_check"]
    assert check["max_abs_logit_diff"] < 1e-3 and check["max_abs_logit_diff_alone_vs_batched"] < 1e-4
    assert new.metrics["test"]["accuracy"] == 1.0
    # The source's int8 record keeps what describes the body; what its old head answered moves
    # into the refit's record, so no figure of the old head reads as the new bundle's.
    assert new.metrics["int8"] == {
        "int8_size_mb": 1.0,
        "max_abs_logit_diff_alone_vs_batched": check["max_abs_logit_diff_alone_vs_batched"],
        "batch_check_photos": check["photos"],
    }
    assert record["from_bundle_metrics"]["int8"]["test_macro_f1_int8"] == 0.0
    assert "export_check" not in new.metrics
    assert new.model_sha256 != old.model_sha256 and load_bundle(bundle_dir).model_sha256 == old.model_sha256
    assert new.labels == old.labels and new.temperature > 0 and new.temperature != old.temperature
    # The detector's energy term reads the logits: its scale and threshold come from the new head.
    assert new.ood["energy_scale"] != 1.0 and new.ood["threshold"] < 100.0
    assert new.ood["means"] == old.ood["means"]
    assert new.provenance["head_refit"]["from_bundle_model_sha256"] == old.model_sha256
    assert new.decision is not None and 0 < new.decision["min_confidence"] < 1


def test_the_model_card_of_a_refitted_bundle_gives_its_own_figures_and_how_its_head_was_chosen(tmp_path):
    bundle_dir = _wrong_head_bundle(tmp_path)
    work = tmp_path / "work"
    make_colour_manifest(work, tmp_path / "photos")
    refit_command = "python -m trainer refit-head work --bundle bundle --out new"
    head_refit.refit_head(work, bundle_dir, tmp_path / "new", command_line=refit_command)
    card = tmp_path / "card.md"

    # No `evaluate` ran in this work folder: the refitted bundle's own figures make the card.
    status = main(["report", str(work), "--out", str(card), "--bundle", str(tmp_path / "new")])

    text = card.read_text()
    assert status == 0 and not (work / "eval").exists()
    # A confusion matrix an evaluation left shows the old head: it stays out of the card.
    (work / "eval").mkdir()
    (work / "eval" / "confusion_matrix.png").write_bytes(b"old head")
    assert main(["report", str(work), "--out", str(card), "--bundle", str(tmp_path / "new")]) == 0
    assert (
        "confusion_matrix" not in card.read_text() and not (tmp_path / "card_confusion_matrix.png").exists()
    )
    assert "| Bundle fp32, head refitted (ONNX Runtime) | 1.0000 | 1.0000 | 1.0000 |" in text
    assert "Fine-tuned (PyTorch)" not in text and "Bundle int8 (ONNX Runtime)" not in text
    assert f"- refit-head: `{refit_command}`" in text
    assert "| As exported | 0.0000 | 0.0000 |" in text and "| Refitted | 1.0000 | 1.0000 |" in text


def test_a_second_run_reads_the_kept_embeddings_instead_of_running_the_model(tmp_path, monkeypatch):
    bundle_dir = _wrong_head_bundle(tmp_path)
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    head_refit.refit_head(tmp_path / "work", bundle_dir, tmp_path / "first")
    runs: list[str] = []
    real_runner = head_refit._runner

    def counting_runner(model_path, spec):
        run = real_runner(model_path, spec)

        def counted(paths, description):
            runs.append(description)
            return run(paths, description)

        return counted

    monkeypatch.setattr(head_refit, "_runner", counting_runner)
    head_refit.refit_head(tmp_path / "work", bundle_dir, tmp_path / "second")

    assert runs == []
    assert len(list((tmp_path / "work" / head_refit.REFIT_DIR).glob("*.npz"))) == 1


def test_photo_weights_balance_the_breeds_and_weigh_the_sources():
    targets = np.array([0, 0, 0, 1, 1, 2])
    sources = ["a", "a", "b", "b", "a", "b"]

    weights = photo_weights(targets, sources, {"b": 0.5}, breeds=3)

    totals = np.bincount(targets, weights=weights)
    assert np.allclose(totals, totals[0])
    assert weights[2] == pytest.approx(weights[0] / 2)
    assert not photo_weights(targets, sources, {"b": 0.0}, breeds=3)[[2, 3, 5]].any()


def test_without_class_weighting_every_photo_weighs_its_sources_weight():
    targets = np.array([0, 0, 0, 1, 1, 2])
    sources = ["a", "a", "b", "b", "a", "b"]

    weights = photo_weights(targets, sources, {"b": 0.5}, breeds=3, class_weighting="none")

    assert weights.tolist() == [1.0, 1.0, 0.5, 0.5, 1.0, 0.5]
    with pytest.raises(HeadRefitError, match="class weighting"):
        photo_weights(targets, sources, {}, breeds=3, class_weighting="equal")


def test_a_source_weighted_out_of_a_breeds_only_photos_is_a_clear_error(tmp_path):
    bundle_dir = _wrong_head_bundle(tmp_path)
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    with pytest.raises(HeadRefitError, match="no training photo"):
        head_refit.refit_head(
            tmp_path / "work", bundle_dir, tmp_path / "new", source_weights={"colours": [0.0]}
        )


def test_logits_that_are_not_a_linear_layer_on_the_embedding_are_refused(tmp_path):
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], [EMBEDDING_NAME], axis=1),
            helper.make_node("MatMul", [EMBEDDING_NAME, "weights"], [LOGITS_NAME]),
        ],
        "matmul_head",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [
            helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=[numpy_helper.from_array(np.eye(3, dtype=np.float32), "weights")],
    )
    path = tmp_path / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    with pytest.raises(HeadRefitError, match="not a float Gemm"):
        read_head(path)


def test_the_bundle_it_comes_from_is_never_the_output(tmp_path):
    bundle_dir = _wrong_head_bundle(tmp_path)
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    with pytest.raises(HeadRefitError, match="another folder"):
        head_refit.refit_head(tmp_path / "work", bundle_dir, bundle_dir)


@pytest.mark.parametrize(
    "argument",
    [["--source-weight", "colours"], ["--regularisation", "0.1,-1"], ["--class-weighting", "balanced,equal"]],
)
def test_malformed_choices_are_refused_by_the_command_line(tmp_path, argument, capsys):
    arguments = ["refit-head", str(tmp_path), "--bundle", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*arguments, *argument]) == 2
    assert "expected" in capsys.readouterr().err


def test_a_work_folder_of_fewer_breeds_gives_a_bundle_answering_only_those(tmp_path):
    bundle_dir = _wrong_head_bundle(tmp_path)
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    kept = [label for label in COLOUR_LABELS if label != "Blue Cat"]
    write_manifest(tmp_path / "work", [s for s in read_manifest(tmp_path / "work") if s.label in kept])
    (tmp_path / "work" / "labels.json").write_text(json.dumps(kept))

    record = head_refit.refit_head(tmp_path / "work", bundle_dir, tmp_path / "new")

    new = load_bundle(tmp_path / "new")
    assert list(new.labels) == kept and len(new.ood["means"]) == 2
    assert onnx.load(str(new.model_path)).graph.output[0].type.tensor_type.shape.dim[1].dim_value == 2
    assert (
        record["new_head"]["test"]["source_mean_macro_f1"] == 1.0 and new.metrics["test"]["accuracy"] == 1.0
    )


def test_a_work_folder_with_a_breed_the_bundle_lacks_is_refused(tmp_path):
    bundle_dir = _wrong_head_bundle(tmp_path)
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    (tmp_path / "work" / "labels.json").write_text(json.dumps([*COLOUR_LABELS, "Purple Cat"]))
    with pytest.raises(DatasetError, match="does not know: Purple Cat"):
        head_refit.refit_head(tmp_path / "work", bundle_dir, tmp_path / "new")
