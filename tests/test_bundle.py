"""The model bundle: round trip, and every way a bundle can be wrong, each with its own message."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from factories import COLOUR_LABELS, TINY_SPEC, make_colour_bundle, make_colour_model
from onnx import TensorProto, helper

from catbreed_desktop.core.bundle import (
    BUNDLE_FILE,
    FORMAT_VERSION,
    MODEL_FILE,
    BundleError,
    ModelBundle,
    load_bundle,
    sha256_file,
    write_bundle,
)
from catbreed_desktop.core.photos import Preprocessing


def _edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = folder / BUNDLE_FILE
    data = json.loads(manifest.read_text(encoding="utf-8"))
    change(data)
    manifest.write_text(json.dumps(data), encoding="utf-8")


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    model = make_colour_model(tmp_path / "source.onnx")
    ood = {"method": "mahalanobis", "threshold": 3.5}
    written = write_bundle(
        tmp_path / "bundle",
        model,
        labels=COLOUR_LABELS,
        architecture="test-colour-classifier",
        preprocessing=TINY_SPEC,
        temperature=1.7,
        metrics={"accuracy": np.float32(0.75), "per_class": np.array([0.5, 1.0])},
        provenance={"source": tmp_path},
        ood=ood,
    )

    loaded = load_bundle(tmp_path / "bundle")

    assert loaded == written
    assert loaded.path == (tmp_path / "bundle").resolve()
    assert loaded.labels == COLOUR_LABELS
    assert loaded.num_labels == 3
    assert loaded.preprocessing == TINY_SPEC
    assert loaded.temperature == pytest.approx(1.7)
    assert loaded.metrics == {"accuracy": pytest.approx(0.75), "per_class": [0.5, 1.0]}
    assert loaded.provenance == {"source": str(tmp_path)}
    assert loaded.ood == ood
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.model_sha256 == sha256_file(model)
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [BUNDLE_FILE, MODEL_FILE]


def test_write_bundle_over_itself_and_over_an_old_bundle(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")

    rewritten = write_bundle(
        bundle.path,
        bundle.model_path,
        labels=bundle.labels,
        architecture="renamed",
        preprocessing=bundle.preprocessing,
    )

    assert rewritten.architecture == "renamed"
    assert load_bundle(bundle.path).architecture == "renamed"


def test_a_failed_write_leaves_the_existing_bundle_working(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    before = (bundle.path / BUNDLE_FILE).read_bytes()

    with pytest.raises(BundleError, match="3 classes"):
        write_bundle(
            bundle.path,
            bundle.model_path,
            labels=["one", "two"],
            architecture="wrong",
            preprocessing=bundle.preprocessing,
        )

    assert (bundle.path / BUNDLE_FILE).read_bytes() == before
    assert load_bundle(bundle.path) == bundle
    assert sorted(p.name for p in bundle.path.iterdir()) == [BUNDLE_FILE, MODEL_FILE]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a folder"):
        load_bundle(tmp_path / "nowhere")


def test_missing_bundle_json(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    (bundle.path / BUNDLE_FILE).unlink()

    with pytest.raises(BundleError, match=f"has no {BUNDLE_FILE}"):
        load_bundle(bundle.path)


def test_invalid_json(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    (bundle.path / BUNDLE_FILE).write_text('{"format_version": 1,', encoding="utf-8")

    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle.path)


def test_missing_model_file(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    bundle.model_path.unlink()

    with pytest.raises(BundleError, match=f"no model file {MODEL_FILE}"):
        load_bundle(bundle.path)


def test_checksum_mismatch_after_one_flipped_byte(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    data = bytearray(bundle.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.model_path.write_bytes(bytes(data))

    with pytest.raises(BundleError, match="checksum mismatch") as caught:
        load_bundle(bundle.path)

    assert str(bundle.model_path) in str(caught.value)
    assert load_bundle(bundle.path, verify=False).model_sha256 == bundle.model_sha256


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_unknown_format_version(tmp_path: Path, version: Any) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data.update(format_version=version))

    with pytest.raises(BundleError, match=f"format version {version!r}"):
        load_bundle(bundle.path)


def test_missing_format_version(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data.pop("format_version"))

    with pytest.raises(BundleError, match="no 'format_version'"):
        load_bundle(bundle.path)


def test_label_count_differs_from_model_outputs(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data["labels"].append("Purple Cat"))

    with pytest.raises(BundleError, match="lists 4 labels but the model outputs 3 classes"):
        load_bundle(bundle.path)


def test_duplicate_labels(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data.update(labels=["Red Cat", "Blue Cat", "Red Cat"]))

    with pytest.raises(BundleError, match="duplicates: Red Cat"):
        load_bundle(bundle.path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(labels=[]), "non-empty list"),
        (lambda d: d.update(labels=["Red Cat", "", "Blue Cat"]), "non-empty list"),
        (lambda d: d.pop("architecture"), "missing the field 'architecture'"),
        (lambda d: d.update(model_sha256="abc"), "64 lowercase hex"),
        (lambda d: d.update(calibration={"temperature": 0}), "temperature must be positive"),
        (lambda d: d.update(calibration={"temperature": "warm"}), "temperature must be a number"),
        (lambda d: d.update(calibration=[1.0]), "'calibration' must be a JSON object"),
        (lambda d: d.update(metrics=[0.9]), "'metrics' must be a JSON object"),
        (lambda d: d.update(ood="yes"), "'ood' must be a JSON object"),
        (lambda d: d.update(model_file="../elsewhere/model.onnx"), "plain file name"),
        (lambda d: [d.pop(key) for key in list(d) if key != "format_version"], "missing the field"),
    ],
)
def test_other_manifest_mistakes(tmp_path: Path, change: Callable[[dict], Any], message: str) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, change)

    with pytest.raises(BundleError, match=message):
        load_bundle(bundle.path)


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        ({"size": 32, "resize": 36, "mean": [0.5, 0.5, 0.5]}, "missing 'std'"),
        ({"size": 32, "resize": 16, "mean": [0.5] * 3, "std": [0.5] * 3}, "at least the crop size"),
        ({"size": 32, "resize": 36, "mean": [0.5] * 2, "std": [0.5] * 3}, "three finite numbers"),
        ({"size": 32, "resize": 36, "mean": [0.5] * 3, "std": [0.5] * 3, "resample": "fancy"}, "resample"),
        ({"size": 32, "resize": 36, "mean": [0.5] * 3, "std": [0.5] * 3, "crop": "random"}, "crop rule"),
        ({"size": "big", "resize": 36, "mean": [0.5] * 3, "std": [0.5] * 3}, "invalid literal"),
        ([32, 36], "must be a JSON object"),
    ],
)
def test_bad_preprocessing(tmp_path: Path, preprocessing: Any, message: str) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data.update(preprocessing=preprocessing))

    with pytest.raises(BundleError, match=f"bad 'preprocessing'.*{message}"):
        load_bundle(bundle.path)


def _write_with_model(folder: Path, model: onnx.ModelProto, spec: Preprocessing = TINY_SPEC) -> ModelBundle:
    source = folder.parent / f"{folder.name}-source.onnx"
    onnx.save(model, str(source))
    return write_bundle(folder, source, labels=COLOUR_LABELS, architecture="test", preprocessing=spec)


def _renamed_input_model(source: Path, new_name: str) -> onnx.ModelProto:
    model = onnx.load(str(source))
    old_name = model.graph.input[0].name
    model.graph.input[0].name = new_name
    for node in model.graph.node:
        node.input[:] = [new_name if name == old_name else name for name in node.input]
    return model


def test_wrong_input_name(tmp_path: Path) -> None:
    model = _renamed_input_model(make_colour_model(tmp_path / "colour.onnx"), "input")

    with pytest.raises(BundleError, match="one input named 'pixel_values', not \\['input'\\]"):
        _write_with_model(tmp_path / "bundle", model)


def test_wrong_first_output(tmp_path: Path) -> None:
    model = onnx.load(str(make_colour_model(tmp_path / "colour.onnx")))
    model.graph.output.reverse()  # embedding first, logits second

    with pytest.raises(BundleError, match="first output must be 'logits'"):
        _write_with_model(tmp_path / "bundle", model)


def test_input_size_mismatch(tmp_path: Path) -> None:
    model = onnx.load(str(make_colour_model(tmp_path / "colour.onnx", size=48)))

    with pytest.raises(BundleError, match="expects \\[48, 48\\] pixels but bundle.json says 32x32"):
        _write_with_model(tmp_path / "bundle", model)


def test_dynamic_spatial_size_is_accepted(tmp_path: Path) -> None:
    model = onnx.load(str(make_colour_model(tmp_path / "colour.onnx")))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"

    bundle = _write_with_model(tmp_path / "bundle", model)

    assert bundle.preprocessing.size == TINY_SPEC.size


def test_logits_without_a_fixed_class_count(tmp_path: Path) -> None:
    model = onnx.load(str(make_colour_model(tmp_path / "colour.onnx")))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"

    with pytest.raises(BundleError, match="no fixed class dimension"):
        _write_with_model(tmp_path / "bundle", model)


def test_input_that_is_not_an_image_batch(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixel_values"], ["logits"])],
        "flat",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(BundleError, match="must be \\(batch, 3, height, width\\)"):
        _write_with_model(tmp_path / "bundle", model)


def test_model_file_that_is_not_onnx(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    bundle.model_path.write_bytes(b"definitely not protobuf \xff\xfe")
    _edit_manifest(bundle.path, lambda data: data.update(model_sha256=sha256_file(bundle.model_path)))

    with pytest.raises(BundleError, match="not a readable ONNX model"):
        load_bundle(bundle.path)


def test_verify_false_skips_the_checksum(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data.update(model_sha256="0" * 64))

    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(bundle.path)
    assert load_bundle(bundle.path, verify=False).model_sha256 == "0" * 64


def test_write_bundle_needs_an_existing_model(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        write_bundle(
            tmp_path / "bundle",
            tmp_path / "missing.onnx",
            labels=COLOUR_LABELS,
            architecture="test",
            preprocessing=TINY_SPEC,
        )
    assert not (tmp_path / "bundle").exists()


def test_detector_matrices_live_in_a_checksummed_side_file(tmp_path: Path) -> None:
    ood = {
        "method": "mahalanobis",
        "means": np.arange(9.0).reshape(3, 3),  # as wide as the colour model's embedding
        "precision": np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        "threshold": 4.0,
    }
    bundle = make_colour_bundle(tmp_path / "bundle", ood=ood)

    manifest = json.loads((tmp_path / "bundle" / BUNDLE_FILE).read_text())
    assert "precision" not in manifest["ood"]
    assert manifest["ood"]["arrays_file"] == "ood.npz"
    assert bundle.ood == {
        "method": "mahalanobis",
        "means": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
        "precision": [[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "threshold": 4.0,
    }
    assert load_bundle(tmp_path / "bundle") == bundle

    (tmp_path / "bundle" / "ood.npz").write_bytes(b"not the detector")
    with pytest.raises(BundleError, match="checksum mismatch .*ood.npz"):
        load_bundle(tmp_path / "bundle")

    make_colour_bundle(tmp_path / "bundle")  # a new bundle without a detector drops the old file
    assert not (tmp_path / "bundle" / "ood.npz").exists()
