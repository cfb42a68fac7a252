"""The int8 export is static: a photo's probabilities do not depend on the photos batched with it.

Dynamic int8 quantisation (what older bundles shipped) scaled every activation by the range of
the whole batch, so a real photo scored 0.398 in a batch of 8 and 0.486 alone. The export now
calibrates constant activation scales on training photos (QDQ). A tiny model is trained and
exported with `--int8` on the synthetic colour photos, then one photo is run alone and in
batches of 2, 8 and 32 with other neighbours through the app's ONNX Runtime CPU engine. The same
check run on a dynamically quantised copy of the same fp32 graph must fail, or it proves nothing.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from trainer_data import make_breed_folders
from trainer_data import run_trainer as _run

from catbreed_desktop.core.bundle import LOGITS_NAME, ModelBundle, load_bundle, sha256_file
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.base import softmax
from catbreed_desktop.core.engines.float_graph import QUANTIZED_OP_TYPES, float_graph_path
from catbreed_desktop.core.photos import load_and_preprocess
from trainer.dataset import read_manifest, split_samples

CALIBRATION_PHOTOS = 16
BATCH_SIZES = (2, 8, 32)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("int8")
    make_breed_folders(root / "data", per_class=12, planted=1)
    workdir = root / "work"
    _run("prepare", "--data", str(root / "data"), "--out", str(workdir))
    _run("train", str(workdir), "--preset", "tiny", "--epochs", "1", "--batch-size", "8", "--lr", "3e-3")
    _run("evaluate", str(workdir))
    _run(
        "export", str(workdir), "--out", str(root / "bundle"), "--int8",
        "--int8-calibration-photos", str(CALIBRATION_PHOTOS),
    )  # fmt: skip
    return {"root": root, "workdir": workdir, "bundle": root / "bundle"}


@pytest.fixture(scope="module")
def pixels(exported: dict[str, Path]) -> np.ndarray:
    """Every photo of the work folder, preprocessed as the app does: three colours, many neighbours."""
    spec = load_bundle(exported["bundle"]).preprocessing
    photos = sorted({s.path for s in read_manifest(exported["workdir"])}, key=str)
    assert len(photos) > max(BATCH_SIZES)
    return np.stack([load_and_preprocess(photo, spec) for photo in photos])


def batch_dependence(bundle: ModelBundle, pixels: np.ndarray) -> tuple[float, float]:
    """Largest |difference| of (probabilities, logits) of one photo alone against the same photo in
    batches of `BATCH_SIZES`, each with other neighbours drawn from the rest and the photo at
    another place, through the app's ONNX Runtime CPU engine.

    The photo is the one the model is least sure of: the tiny model is confident on most photos,
    and a probability near 1 hides whatever moves its logits.
    """
    rng = np.random.default_rng(9)
    with create_engine(bundle, "cpu", threads=1) as engine:
        alone_logits = np.concatenate(
            [engine.run(pixels[i : i + 1])[LOGITS_NAME] for i in range(len(pixels))]
        )
        target = int(softmax(alone_logits, bundle.temperature).max(axis=1).argmin())
        rest = np.delete(np.arange(len(pixels)), target)
        alone = alone_logits[target]
        probabilities = logits = 0.0
        for size in BATCH_SIZES:
            place = int(rng.integers(size))
            order = np.insert(rng.choice(rest, size=size - 1, replace=False), place, target)
            batched = engine.run(np.ascontiguousarray(pixels[order]))[LOGITS_NAME][place]
            logits = max(logits, float(np.abs(batched - alone).max()))
            change = softmax(batched[None], bundle.temperature) - softmax(alone[None], bundle.temperature)
            probabilities = max(probabilities, float(np.abs(change).max()))
    return probabilities, logits


def _ops(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_the_bundle_records_a_static_calibrated_int8_model(exported: dict[str, Path]) -> None:
    bundle = load_bundle(exported["bundle"])
    int8 = bundle.metrics["int8"]
    assert int8["scheme"] == "static QDQ" and "QInt8" in int8["quantisation"]
    assert int8["calibration"] == {
        "method": "MinMax",
        "photos": CALIBRATION_PHOTOS,
        "split": "train",
        "seed": int8["calibration"]["seed"],
    }
    assert int8["quantised_nodes"]["MatMul"] > 0
    assert int8["max_abs_logit_diff_alone_vs_batched"] <= TOLERANCE
    assert bundle.provenance["precision"] == "int8"
    ops = _ops(bundle.model_path)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert not {"DynamicQuantizeLinear", "MatMulInteger"} & set(ops)
    # Only linear layers: LayerNorm, Softmax and the attention MatMuls read float tensors.
    assert ops["MatMul"] == int8["quantised_nodes"]["MatMul"] + _attention_matmuls(bundle.model_path)


def _attention_matmuls(path: Path) -> int:
    graph = onnx.load(str(path)).graph
    constants = {tensor.name for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    return sum(
        1
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[1] not in constants
        and producers.get(node.input[1], onnx.NodeProto()).op_type != "DequantizeLinear"
    )


def test_the_calibration_photos_are_training_photos_drawn_with_the_split_seed(
    exported: dict[str, Path],
) -> None:
    from trainer.quantise import int8_calibration_photos

    samples = read_manifest(exported["workdir"])
    photos, seed = int8_calibration_photos(exported["workdir"], samples, CALIBRATION_PHOTOS)
    again, _ = int8_calibration_photos(exported["workdir"], list(reversed(samples)), CALIBRATION_PHOTOS)
    assert photos == again  # the manifest's order does not matter, only its content and the seed
    assert len(set(photos)) == CALIBRATION_PHOTOS
    assert set(photos) <= {s.path for s in split_samples(samples, "train")}
    assert seed == load_bundle(exported["bundle"]).metrics["int8"]["calibration"]["seed"]
    everything, _ = int8_calibration_photos(exported["workdir"], samples, 10_000)
    assert len(everything) == len(split_samples(samples, "train"))


def test_a_photo_scores_the_same_alone_and_in_any_batch(
    exported: dict[str, Path], pixels: np.ndarray
) -> None:
    probabilities, logits = batch_dependence(load_bundle(exported["bundle"]), pixels)
    assert probabilities <= TOLERANCE and logits <= TOLERANCE


def test_the_same_check_fails_on_a_dynamically_quantised_copy(
    exported: dict[str, Path], pixels: np.ndarray, tmp_path: Path
) -> None:
    """The check discriminates: quantize_dynamic of the same fp32 graph moves with the batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = load_bundle(exported["bundle"])
    folder = tmp_path / "dynamic"
    folder.mkdir()
    source = exported["workdir"] / "export" / "model_fp32_prepared.onnx"
    quantize_dynamic(
        str(source), str(folder / bundle.model_file), weight_type=QuantType.QInt8, per_channel=True
    )
    dynamic = dataclasses.replace(bundle, path=folder, model_sha256=sha256_file(folder / bundle.model_file))
    assert _ops(dynamic.model_path)["DynamicQuantizeLinear"] > 0

    probabilities, logits = batch_dependence(dynamic, pixels)
    assert probabilities > TOLERANCE  # the very check the static model passes
    assert logits > 10 * TOLERANCE  # and not by a hair: its logits move by about 1e-3


def test_the_gpu_float_graph_of_the_static_bundle_is_plain_float(
    exported: dict[str, Path], pixels: np.ndarray, tmp_path: Path
) -> None:
    bundle = load_bundle(exported["bundle"])
    graph = float_graph_path(bundle, "fp32", cache_dir=tmp_path / "cache")
    assert not set(_ops(graph)) & QUANTIZED_OP_TYPES
    fp32 = dataclasses.replace(
        bundle, path=graph.parent, model_file=graph.name, model_sha256=sha256_file(graph)
    )
    reference = dataclasses.replace(
        bundle,
        path=exported["workdir"] / "export",
        model_file="model_fp32.onnx",
        model_sha256=sha256_file(exported["workdir"] / "export" / "model_fp32.onnx"),
    )
    with create_engine(fp32, "cpu", threads=1) as derived_engine:
        derived = derived_engine.run(pixels)[LOGITS_NAME]
    with create_engine(reference, "cpu", threads=1) as reference_engine:
        original = reference_engine.run(pixels)[LOGITS_NAME]
    # The derived graph computes in float on the int8 weights: close to the export, not equal.
    assert np.abs(derived - original).max() < 0.05 * np.abs(original).max()
    assert np.mean(derived.argmax(1) == original.argmax(1)) >= 0.95
