"""The whole trainer chain on a small synthetic dataset: prepare, baseline, train (tiny preset),
evaluate, export, report; the bundle must give the PyTorch checkpoint's top-1 in `catbreed classify`."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_data import BREEDS, make_breed_folders
from trainer_data import run_trainer as _run

from catbreed_desktop.core.bundle import load_bundle
from trainer.cli import main as trainer_main
from trainer.dataset import read_manifest, split_samples
from trainer.modeling import load_checkpoint, run_on_photos
from trainer.tracking import read_metrics

TRAIN_ARGS = ["--preset", "tiny", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3", "--save-every", "2"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("chain")
    make_breed_folders(root / "data", per_class=15, planted=3)
    workdir = root / "work"
    _run("prepare", "--data", str(root / "data"), "--out", str(workdir))
    prepared = root / "prepared"
    shutil.copytree(workdir, prepared)  # a clean copy for the resume test
    _run("baseline", str(workdir), "--preset", "tiny")
    _run("train", str(workdir), *TRAIN_ARGS)
    _run("evaluate", str(workdir))
    _run("export", str(workdir), "--out", str(root / "bundle"))
    return {"root": root, "workdir": workdir, "prepared": prepared, "bundle": root / "bundle"}


def test_bundle_gives_the_checkpoints_top1_through_catbreed_classify(chain, capsys):
    from catbreed_desktop.cli.main import main as catbreed_main

    workdir = chain["workdir"]
    test_photos = [s.path for s in split_samples(read_manifest(workdir), "test")]
    model, spec, _ = load_checkpoint(workdir / "checkpoints" / "best")
    logits, _ = run_on_photos(model, test_photos, spec)
    expected = {
        str(p): model.config.id2label[int(i)] for p, i in zip(test_photos, logits.argmax(1), strict=True)
    }

    capsys.readouterr()
    status = catbreed_main(
        ["classify", *map(str, test_photos), "--model", str(chain["bundle"]), "--json", "--engine", "cpu"]
    )
    assert status == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {r["path"]: r["label"] for r in records} == expected
    labels = [s.label for s in split_samples(read_manifest(workdir), "test")]
    accuracy = np.mean([expected[str(p)] == label for p, label in zip(test_photos, labels, strict=True)])
    assert accuracy >= 0.9  # the colours are easy: the tiny model must have learnt them


def test_bundle_records_preprocessing_calibration_ood_metrics_and_provenance(chain):
    bundle = load_bundle(chain["bundle"])
    _, spec, _ = load_checkpoint(chain["workdir"] / "checkpoints" / "best")
    assert bundle.labels == tuple(sorted(BREEDS.values()))
    assert bundle.preprocessing == spec
    evaluation = json.loads((chain["workdir"] / "eval" / "metrics.json").read_text())
    assert bundle.temperature == pytest.approx(evaluation["calibration"]["temperature"])
    assert bundle.ood["method"] == "mahalanobis_energy" and bundle.ood["features"] == [0, 32]
    assert np.asarray(bundle.ood["means"]).shape == (3, 32)
    assert np.asarray(bundle.ood["precision"]).shape == (32, 32)
    assert bundle.metrics["export_check"]["top1_agreement"] == 1.0
    assert bundle.metrics["export_check"]["max_abs_logit_diff"] <= 1e-3
    assert bundle.metrics["test"]["macro_f1"] == evaluation["test"]["macro_f1"]
    assert {"command_line", "git_commit", "date", "data_sources", "base_model"} <= set(bundle.provenance)
    training = bundle.provenance["training"]
    assert training["settings"]["preset"] == "tiny" and training["settings"]["lr"] == pytest.approx(3e-3)
    assert 1 <= training["epoch"] <= 3

    import onnx

    graph = onnx.load(str(bundle.model_path))
    assert "LayerNormalization" in {node.op_type for node in graph.graph.node}
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis


def test_evaluation_and_baseline_outputs(chain):
    workdir = chain["workdir"]
    evaluation = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert set(evaluation["per_breed"]) == set(BREEDS.values())
    assert np.asarray(evaluation["confusion_matrix"]).sum() == evaluation["test"]["count"]
    calibration = evaluation["calibration"]
    assert calibration["fitted_on"] == "val" and calibration["temperature"] > 0
    assert sum(b["count"] for b in calibration["reliability_after"]) == evaluation["test"]["count"]
    for image in ("confusion_matrix.png", "reliability.png"):
        assert (workdir / "eval" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baseline = json.loads((workdir / "baseline" / "metrics.json").read_text())
    assert 0.0 <= baseline["test"]["accuracy"] <= 1.0 and baseline["embedding_size"] == 32
    runs = list((workdir / "runs").iterdir())
    records = read_metrics(runs[0] / "metrics.jsonl")
    assert records[0]["kind"] == "params" and records[0]["preset"] == "tiny"
    assert any("val_macro_f1" in r for r in records)


def test_no_duplicate_crosses_splits(chain):
    splits = defaultdict(set)
    for sample in read_manifest(chain["workdir"]):
        splits[sample.group].add(sample.split)
    assert all(len(s) == 1 for s in splits.values())


def test_int8_export_and_model_card(chain):
    workdir, root = chain["workdir"], chain["root"]
    _run("export", str(workdir), "--out", str(root / "bundle_int8"), "--int8")
    bundle = load_bundle(root / "bundle_int8")
    int8 = bundle.metrics["int8"]
    assert bundle.provenance["precision"] == "int8"
    assert 0.9 <= int8["top1_agreement_vs_fp32"] <= 1.0
    assert "QInt8" in int8["quantisation"]

    card = root / "card" / "MODEL_CARD.md"
    notes = root / "notes.md"
    notes.write_text("## Sources and licences\n\nSynthetic shapes made by the test.\n")
    _run("negatives", "--out", str(root / "negatives"), "--faces", "4", "--synthetic", "4")
    _run(
        "report", str(workdir), "--out", str(card), "--speed-photos", "8",
        "--negatives", str(root / "negatives"), "--notes", str(notes),
    )  # fmt: skip
    text = card.read_text()
    for heading in ("Per breed", "Calibration", "Not-a-cat detector", "Speed on this CPU", "Baseline"):
        assert heading in text
    assert "Bundle int8" in text
    assert "| Non-cat: faces | 4 |" in text and "| Non-cat: synthetic | 4 |" in text
    assert text.rstrip().endswith("Synthetic shapes made by the test.")
    assert (card.parent / "MODEL_CARD_confusion_matrix.png").is_file()


@pytest.mark.parametrize("keep_patches", ["1", "0.5"])
def test_interrupted_training_resumes_where_it_stopped(chain, tmp_path, capsys, keep_patches):
    """Stopping after 3 steps and rerunning gives the same weights as one uninterrupted run, also
    when each step sees a random half of the patches."""
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    shutil.copytree(chain["prepared"], resumed)
    shutil.copytree(chain["prepared"], straight)
    args = ["--preset", "tiny", "--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--save-every", "100"]
    args += ["--keep-patches", keep_patches]

    _run("train", str(resumed), *args, "--max-steps", "3")
    state = torch.load(resumed / "checkpoints" / "last" / "state.pt", weights_only=False)
    assert state["position"]["global_step"] == 3 and state["position"]["epoch"] == 0
    assert not (resumed / "checkpoints" / "best").exists()  # stopped mid-epoch, before validation
    capsys.readouterr()
    _run("train", str(resumed), *args)
    assert "resuming run" in capsys.readouterr().err
    _run("train", str(straight), *args)

    final_resumed = torch.load(resumed / "checkpoints" / "last" / "state.pt", weights_only=False)
    final_straight = torch.load(straight / "checkpoints" / "last" / "state.pt", weights_only=False)
    assert final_resumed["position"]["global_step"] == final_straight["position"]["global_step"] == 12
    for name, tensor in final_straight["model"].items():
        assert torch.allclose(final_resumed["model"][name], tensor, atol=1e-6), name
    # One run, continued: the resumed run logs into the same metrics file, without repeating steps.
    runs = list((resumed / "runs").iterdir())
    assert len(runs) == 1
    steps = [r["step"] for r in read_metrics(runs[0] / "metrics.jsonl") if "train_loss" in r]
    assert steps == sorted(set(steps))

    capsys.readouterr()
    assert trainer_main(["train", str(resumed), *args, "--lr", "1e-2"]) == 2
    assert "--restart" in capsys.readouterr().err


def test_build_engine_without_tensorrt_is_a_clear_error(colour_bundle, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; the error path cannot be shown")
    except ImportError:
        pass
    assert trainer_main(["build-engine", str(colour_bundle.path)]) == 2
    err = capsys.readouterr().err
    assert "TensorRT" in err and "Traceback" not in err


def test_mlflow_uri_without_mlflow_is_a_clear_error(chain, tmp_path, capsys):
    try:
        import mlflow  # noqa: F401

        pytest.skip("MLflow is installed here")
    except ImportError:
        pass
    workdir = tmp_path / "w"
    shutil.copytree(chain["prepared"], workdir)
    status = trainer_main(["train", str(workdir), *TRAIN_ARGS, "--mlflow-uri", str(tmp_path / "mlruns")])
    assert status == 2
    assert "pip install" in capsys.readouterr().err


def test_an_onnx_export_that_returns_no_program_is_a_trainer_error(tmp_path, monkeypatch):
    # torch.onnx.export is typed to return None (its legacy exporter does): say so, not AttributeError.
    from trainer.errors import TrainerError
    from trainer.export import export_onnx
    from trainer.modeling import TINY_IMAGE_SIZE, build_model

    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: None)
    with pytest.raises(TrainerError, match="returned no ONNX program"):
        export_onnx(build_model(["Red", "Blue"], preset="tiny"), TINY_IMAGE_SIZE, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_export_that_disagrees_with_pytorch_writes_no_bundle(chain, tmp_path, monkeypatch, capsys):
    import trainer.export as export_module

    real_outputs = export_module.onnx_outputs

    def drifted(path, pixels, description):
        logits, embeddings = real_outputs(path, pixels, description)
        return logits + np.linspace(0.0, 0.01, logits.shape[1], dtype=np.float32), embeddings

    monkeypatch.setattr(export_module, "onnx_outputs", drifted)
    status = trainer_main(["export", str(chain["workdir"]), "--out", str(tmp_path / "refused")])
    assert status == 1
    assert "disagrees with PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "bundle.json").exists()


def test_frozen_layers_get_no_gradient_and_record_no_graph():
    from trainer.modeling import build_model, encoder_parts, freeze_layers

    model = build_model(["a", "b"], preset="tiny")
    total = sum(p.numel() for p in model.parameters())
    trainable = freeze_layers(model, 1)
    embeddings, layers = encoder_parts(model)
    frozen = sum(p.numel() for m in (embeddings, layers[0]) for p in m.parameters())
    assert trainable == total - frozen
    seen = {}
    layers[0].register_forward_hook(lambda module, args, output: seen.setdefault("layer0", output))
    logits = model(pixel_values=torch.randn(2, 3, 32, 32)).logits
    logits.sum().backward()
    layer0_output = seen["layer0"][0] if isinstance(seen["layer0"], tuple) else seen["layer0"]
    assert layer0_output.grad_fn is None  # nothing was recorded for backward: as cheap as no_grad
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None for p in layers[1].parameters())


def test_patch_dropout_thins_the_tokens_only_while_training():
    from trainer.modeling import PatchDropout, build_model, encoder_parts

    model = build_model(["a", "b"], preset="tiny")  # 32 px, patch 8: CLS + 16 patch tokens
    embeddings, layers = encoder_parts(model)
    pixels = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
        full = embeddings(pixels)
    dropout = PatchDropout(model, 0.5, seed=83)
    seen = []
    layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))

    model.train()
    with torch.no_grad():
        for step in (0, 1, 0):
            dropout.seed_step(step)
            model(pixel_values=pixels)
    tokens = seen[-1]
    assert torch.equal(tokens, seen[-3]) and not torch.equal(tokens, seen[-2])  # drawn by (seed, step)
    assert tokens.shape == (3, 1 + 8, full.shape[-1])
    assert torch.equal(tokens[:, 0], full[:, 0])  # the CLS token always passes
    for photo in range(3):  # the rest are 8 distinct patch tokens of the same photo
        kept = {tuple(row.tolist()) for row in tokens[photo, 1:]}
        assert len(kept) == 8 and kept <= {tuple(row.tolist()) for row in full[photo, 1:]}

    model.eval()
    with torch.no_grad():
        after = model(pixel_values=pixels).logits
    assert seen[-1].shape[1] == 17 and torch.equal(after, before)  # evaluation sees every patch


def test_probe_head_starts_training_from_the_logistic_regression(chain):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from trainer.dataset import read_labels
    from trainer.modeling import build_model, preprocessing_for
    from trainer.probe import PROBE_C
    from trainer.train import fit_head_by_probe

    workdir = chain["prepared"]
    labels = read_labels(workdir)
    index = {label: i for i, label in enumerate(labels)}
    train = split_samples(read_manifest(workdir), "train")
    spec = preprocessing_for(None, "tiny", 224)
    model = build_model(labels, preset="tiny").eval()
    _, features = run_on_photos(model, [s.path for s in train], spec)
    targets = np.array([index[s.label] for s in train])

    fit_head_by_probe(model, train, index, spec, seed=83)

    logits, _ = run_on_photos(model, [s.path for s in train], spec)
    scaler = StandardScaler().fit(features)
    probe = LogisticRegression(C=PROBE_C, max_iter=2000, random_state=83).fit(
        scaler.transform(features), targets
    )
    # scikit-learn's solver, the same objective: the same probabilities (logits may differ by a
    # per-photo constant, since the unpenalised biases are free up to one).
    expected = probe.predict_proba(scaler.transform(features))
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), dim=1).numpy(), expected, atol=2e-3)
