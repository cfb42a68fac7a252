"""checkpoint-from-bundle: an int8 DINOv2 bundle read back into a checkpoint `train` goes on from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from factories import make_photo  # noqa: E402

from catbreed_desktop.core.bundle import write_bundle  # noqa: E402
from catbreed_desktop.core.photos import Preprocessing, load_and_preprocess  # noqa: E402
from trainer.bundle_checkpoint import BundleCheckpointError, checkpoint_from_bundle  # noqa: E402
from trainer.cli import main  # noqa: E402
from trainer.export import export_onnx  # noqa: E402
from trainer.modeling import ModelError, build_model  # noqa: E402
from trainer.onnx_run import onnx_outputs  # noqa: E402
from trainer.quantise import quantise_int8  # noqa: E402

LABELS = ["Abyssinian", "Bengal", "Birman"]
# Exported at 28 px from a backbone made for 56: the position embeddings are resized and folded
# into an anonymous constant, as in the shipped bundle (224 px from DINOv2's 518).
SPEC = Preprocessing(size=28, resize=32)


def _tiny_dinov2() -> torch.nn.Module:
    from transformers import Dinov2Config, Dinov2ForImageClassification

    torch.manual_seed(3)
    config = Dinov2Config(
        hidden_size=128,  # DINOv2 heads are 64 wide, as the conversion assumes
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=56,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model = Dinov2ForImageClassification(config).eval()
    # Trained weights, all different: the exporter merges equal constants (a fresh model's zero
    # biases) and drops a head's bias of zeros, which no trained model has.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def _int8_bundle(tmp_path: Path) -> tuple[Path, list[Path]]:
    photos = [
        make_photo(tmp_path / "photos" / f"{i}.png", colour=(40 * i % 256, 90, 200 - 30 * i), size=(40, 36))
        for i in range(6)
    ]
    fp32 = export_onnx(_tiny_dinov2(), SPEC.size, tmp_path / "fp32.onnx")
    pixels = np.stack([load_and_preprocess(p, SPEC) for p in photos])
    logits, _ = onnx_outputs(fp32, pixels, "fp32")
    (tmp_path / "int8").mkdir()
    int8, _ = quantise_int8(fp32, tmp_path / "int8", pixels, logits, photos, SPEC)
    write_bundle(
        tmp_path / "bundle",
        int8,
        labels=LABELS,
        architecture="Dinov2ForImageClassification",
        preprocessing=SPEC,
    )
    return tmp_path / "bundle", photos


def test_an_int8_bundle_comes_back_as_a_checkpoint_with_its_head(tmp_path):
    bundle, photos = _int8_bundle(tmp_path)

    report = checkpoint_from_bundle(bundle, tmp_path / "checkpoint", photos)

    assert report.min_cosine >= 0.98
    assert report.top1_agreement == 1.0
    config = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert (config["image_size"], config["num_hidden_layers"]) == (28, 2)
    # `train` keeps the head of a checkpoint for the same breeds, in the same order.
    model = build_model(LABELS, str(tmp_path / "checkpoint")).eval()
    pixels = torch.from_numpy(np.stack([load_and_preprocess(p, SPEC) for p in photos]))
    with torch.no_grad():
        trained_on = model(pixel_values=pixels).logits.numpy()
    bundle_logits, _ = onnx_outputs(bundle / "model.onnx", pixels.numpy(), "bundle")
    assert np.array_equal(trained_on.argmax(1), bundle_logits.argmax(1))
    assert np.abs(trained_on - bundle_logits).max() < 0.05 * np.abs(bundle_logits).max()


def test_a_checkpoint_for_other_breeds_or_another_order_is_refused_by_train(tmp_path):
    bundle, photos = _int8_bundle(tmp_path)
    checkpoint_from_bundle(bundle, tmp_path / "checkpoint", photos)

    with pytest.raises(ModelError, match="not this work folder's breeds in its order"):
        build_model(list(reversed(LABELS)), str(tmp_path / "checkpoint"))
    # Another number of breeds gets a new head, as from the pretrained backbone.
    assert build_model([*LABELS, "Bombay"], str(tmp_path / "checkpoint")).classifier.out_features == 4


def test_the_command_writes_nothing_without_check_photos_or_from_a_bundle_of_another_kind(
    tmp_path, colour_bundle, capsys
):
    with pytest.raises(BundleCheckpointError, match="only DINOv2 classifiers"):
        checkpoint_from_bundle(colour_bundle.path, tmp_path / "out", [tmp_path / "any.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    arguments = [
        "checkpoint-from-bundle",
        "--bundle",
        str(colour_bundle.path),
        "--out",
        str(tmp_path / "out"),
    ]
    assert main([*arguments, "--check-photos", str(empty)]) == 2
    assert "no photos for the check" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
