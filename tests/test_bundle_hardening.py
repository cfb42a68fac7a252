"""Hostile or damaged bundles: each is refused quickly, with one clear line naming the file.

Covers label counts and lengths, manifests nested too deeply or too large, detector files whose
headers declare huge or mismatched shapes (or hold pickles), detector matrices that do not fit
the model's embedding, and external weights files outside the bundle or not covered by a checksum.
"""

from __future__ import annotations

import io
import json
import pickle
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from factories import COLOUR_LABELS, COLOURS, TINY_SPEC, make_colour_bundle, make_colour_model, make_photo

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.bundle import (
    BUNDLE_FILE,
    EXTERNAL_DATA,
    MODEL_FILE,
    OOD_ARRAYS_FILE,
    BundleError,
    ModelBundle,
    load_bundle,
    sha256_file,
    write_bundle,
)
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.engines.onnx_runtime import OnnxRuntimeEngine

WEIGHTS_FILE = "weights.bin"


def _edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = folder / BUNDLE_FILE
    data = json.loads(manifest.read_text(encoding="utf-8"))
    change(data)
    manifest.write_text(json.dumps(data), encoding="utf-8")


def _refusal(folder: Path) -> str:
    """The message `load_bundle` refuses `folder` with, checked to be one line naming the bundle."""
    with pytest.raises(BundleError) as caught:
        load_bundle(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder) in message
    return message


def _detector_bundle(folder: Path, width: int = 3) -> ModelBundle:
    """The colour bundle with a `width`-wide detector (3 fits the colour model's embedding)."""
    ood = {
        "method": "mahalanobis",
        "means": np.zeros((len(COLOUR_LABELS), width)),
        "precision": np.eye(width),
        "threshold": 1.0,
    }
    return make_colour_bundle(folder, ood=ood)


def _replace_detector_file(bundle: ModelBundle, content: bytes) -> None:
    path = bundle.path / OOD_ARRAYS_FILE
    path.write_bytes(content)
    _edit_manifest(bundle.path, lambda data: data["ood"].update(arrays_sha256=sha256_file(path)))


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def _npz_of_headers(members: dict[str, tuple[tuple[int, ...], int]]) -> bytes:
    """An .npz whose members declare `shape` but hold only `data_bytes` bytes of zeros."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, (shape, data_bytes) in members.items():
            archive.writestr(f"{key}.npy", _npy_header(shape) + bytes(data_bytes))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ labels


def test_fifty_thousand_labels_are_refused_at_once(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data.update(labels=[f"Breed {i}" for i in range(50_000)]))

    started = time.perf_counter()
    message = _refusal(bundle.path)
    elapsed = time.perf_counter() - started

    assert "'labels' has 50,000 names; at most 10,000 are allowed" in message
    assert elapsed < 2.0  # it took 38 s (121 s in the issue) when duplicates were counted pairwise


def test_duplicates_among_many_labels_are_listed_briefly(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    # 10,000 names, the most allowed, with eleven of them given twice.
    labels = [f"Breed {i:05d}" for i in range(9_988)] + [f"Breed {i:05d}" for i in range(10)]
    labels += ["Breed 09999", "Breed 09999"]
    _edit_manifest(bundle.path, lambda data: data.update(labels=labels))

    message = _refusal(bundle.path)

    shown = ", ".join(f"Breed {i:05d}" for i in range(10))
    assert f"'labels' has duplicates: {shown} and 1 more" in message


def test_label_too_long(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data["labels"].__setitem__(1, "C" * 201))

    assert "label 2 is 201 characters long; at most 200 are allowed" in _refusal(bundle.path)


def test_duplicate_labels_with_terminal_escapes_are_shown_escaped(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    _edit_manifest(bundle.path, lambda data: data.update(labels=["\x1b[2JCat", "\x1b[2JCat", "Blue Cat"]))

    message = _refusal(bundle.path)

    assert "duplicates: \\x1b[2JCat" in message
    assert "\x1b" not in message


# ---------------------------------------------------------------------------------------- manifest


def test_deeply_nested_manifest(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    text = (bundle.path / BUNDLE_FILE).read_text(encoding="utf-8")
    nested = text.rstrip().removesuffix("}") + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (bundle.path / BUNDLE_FILE).write_text(nested, encoding="utf-8")

    assert "is not valid JSON: it is nested too deeply" in _refusal(bundle.path)


def test_number_too_long_to_read(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    (bundle.path / BUNDLE_FILE).write_text('{"format_version": ' + "1" * 5000 + "}", encoding="utf-8")

    assert "is not valid JSON: Exceeds the limit" in _refusal(bundle.path)


def test_manifest_too_large_is_not_read(tmp_path: Path) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    with open(bundle.path / BUNDLE_FILE, "r+b") as manifest:
        manifest.truncate(65 * 1024 * 1024)  # sparse: nothing is really written

    message = _refusal(bundle.path)

    assert "is 68,157,440 bytes; a bundle.json is at most 67,108,864 bytes" in message


# ------------------------------------------------------------------------------- the detector file


def test_a_small_detector_file_declaring_9000x9000_is_refused_in_milliseconds(tmp_path: Path) -> None:
    bundle = _detector_bundle(tmp_path / "bundle")
    # The file: 630 kB of deflated zeros that np.load expands to 648 MB (3.9 GB as lists).
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, shape in (("means", (3, 9000)), ("precision", (9000, 9000))):
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                member.write(_npy_header(shape))
                zeros, left = bytes(1 << 24), 8 * shape[0] * shape[1]
                while left:
                    member.write(zeros[: min(left, len(zeros))])
                    left -= min(left, len(zeros))
    _replace_detector_file(bundle, buffer.getvalue())

    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = _refusal(bundle.path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert "'means' has shape (3, 9000), which must have an embedding size from 1 to 4096" in message
    assert elapsed < 1.0
    assert peak < 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            {"means": ((3, 3), 72), "precision": ((9000, 9000), 0)},
            "'precision' has shape (9000, 9000), which must be 3x3",
        ),
        ({"means": ((5, 3), 120), "precision": ((3, 3), 72)}, "must be a (3 labels, embedding size) matrix"),
        ({"means": ((3,), 24), "precision": ((3, 3), 72)}, "must be a (3 labels, embedding size) matrix"),
        (
            {"means": ((3, 3), 72), "precision": ((3, 3), 8)},
            "'precision' declares shape (3, 3) (72 bytes) but holds 8 bytes",
        ),
        (
            {"means": ((3, 3), 7_000_000), "precision": ((3, 3), 72)},
            "'means' declares shape (3, 3) (72 bytes) but holds 7,000,000 bytes",
        ),
        ({"precision": ((3, 3), 72)}, "it has no 'means' array"),
    ],
)
def test_detector_headers_are_checked_before_the_data_is_read(
    tmp_path: Path, members: dict[str, tuple[tuple[int, ...], int]], message: str
) -> None:
    bundle = _detector_bundle(tmp_path / "bundle")
    _replace_detector_file(bundle, _npz_of_headers(members))

    refusal = _refusal(bundle.path)

    assert message in refusal
    assert OOD_ARRAYS_FILE in refusal


def test_a_pickled_detector_file_is_refused(tmp_path: Path) -> None:
    bundle = _detector_bundle(tmp_path / "bundle")
    _replace_detector_file(bundle, pickle.dumps({"means": np.zeros((3, 3)), "precision": np.eye(3)}))

    assert "is not a readable detector file" in _refusal(bundle.path)


def test_a_detector_file_holding_object_arrays_is_refused(tmp_path: Path) -> None:
    bundle = _detector_bundle(tmp_path / "bundle")
    buffer = io.BytesIO()
    objects = np.array([[1.0, "x", None]] * 3, dtype=object)  # saved as a pickle inside the .npy
    np.savez(buffer, means=objects, precision=np.eye(3))
    _replace_detector_file(bundle, buffer.getvalue())

    assert "'means' must hold floating-point numbers, not object" in _refusal(bundle.path)


def test_detector_wider_than_the_embedding_is_refused_when_loading(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as caught:
        _detector_bundle(tmp_path / "bundle", width=5)

    assert (
        "the not-a-cat detector expects 5-wide embeddings but the model's 'embedding' output is 3 wide"
        in str(caught.value)
    )


def test_a_fitting_detector_still_loads(tmp_path: Path) -> None:
    bundle = _detector_bundle(tmp_path / "bundle")

    loaded = load_bundle(bundle.path)

    assert loaded.ood is not None
    assert loaded.ood["means"] == [[0.0] * 3] * 3 and loaded.ood["precision"] == np.eye(3).tolist()


# ------------------------------------------------------------------------------ external weights


def _save_with_external_weights(model_path: Path, location: str = WEIGHTS_FILE) -> Path:
    """Re-save an ONNX file so that its weights live in `location` (relative to the model's folder)."""
    model = onnx.load(str(model_path))
    onnx.save_model(
        model,
        str(model_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=WEIGHTS_FILE,
        size_threshold=0,
    )
    if location != WEIGHTS_FILE:
        written = onnx.load(str(model_path), load_external_data=False)
        for tensor in written.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(written, str(model_path))
        (model_path.parent / WEIGHTS_FILE).replace(model_path.parent / location)
    return model_path


def _hand_made_bundle_with_external_weights(folder: Path, location: str = WEIGHTS_FILE) -> Path:
    """A bundle whose model.onnx reads `location`, its bundle.json vouching only for model.onnx."""
    bundle = make_colour_bundle(folder)
    _save_with_external_weights(bundle.model_path, location)
    _edit_manifest(bundle.path, lambda data: data.update(model_sha256=sha256_file(bundle.model_path)))
    return bundle.path


def test_external_weights_are_copied_checksummed_and_verified(tmp_path: Path) -> None:
    source = _save_with_external_weights(make_colour_model(tmp_path / "source" / "colour.onnx"))

    bundle = write_bundle(
        tmp_path / "bundle", source, labels=COLOUR_LABELS, architecture="test", preprocessing=TINY_SPEC
    )

    weights = bundle.path / WEIGHTS_FILE
    manifest = json.loads((bundle.path / BUNDLE_FILE).read_text(encoding="utf-8"))
    assert manifest[EXTERNAL_DATA] == {WEIGHTS_FILE: sha256_file(weights)}
    assert load_bundle(bundle.path) == bundle
    red = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])
    with Classifier(bundle, engine="cpu") as classifier:
        result = next(iter(classifier.classify([red])))
    assert isinstance(result, Prediction) and result.label == "Red Cat"

    damaged = bytearray(weights.read_bytes())
    damaged[0] ^= 0xFF
    weights.write_bytes(bytes(damaged))

    message = _refusal(bundle.path)
    assert f"checksum mismatch for {weights}: the model's external weights were changed or damaged" in message


def test_external_weights_without_a_checksum_are_refused(tmp_path: Path) -> None:
    folder = _hand_made_bundle_with_external_weights(tmp_path / "bundle")

    message = _refusal(folder)

    assert f"reads weights from {WEIGHTS_FILE}, which bundle.json has no checksum for" in message


def test_external_weights_outside_the_bundle_are_refused(tmp_path: Path) -> None:
    folder = _hand_made_bundle_with_external_weights(tmp_path / "bundle", location=f"../{WEIGHTS_FILE}")
    assert (tmp_path / WEIGHTS_FILE).is_file()

    assert "reads weights from '../weights.bin', which is not a file of its own" in _refusal(folder)
    # Unverified, the runtime still refuses to read outside the bundle folder.
    with pytest.raises(BundleError, match="ONNX Runtime cannot load"):
        OnnxRuntimeEngine(load_bundle(folder, verify=False))


def test_write_bundle_refuses_external_weights_it_cannot_take_along(tmp_path: Path) -> None:
    source = _save_with_external_weights(
        make_colour_model(tmp_path / "models" / "inner" / "colour.onnx"), location=f"../{WEIGHTS_FILE}"
    )

    with pytest.raises(
        BundleError, match="reads weights from '../weights.bin', which is not a file of its own"
    ):
        write_bundle(
            tmp_path / "bundle", source, labels=COLOUR_LABELS, architecture="t", preprocessing=TINY_SPEC
        )
    assert not (tmp_path / "bundle" / MODEL_FILE).exists()


# ----------------------------------------------------------------- the command line: one clear line


def _deep_manifest(folder: Path) -> None:
    (folder / BUNDLE_FILE).write_text('{"format_version": 1, "x": ' + "[" * 100_000 + "}", encoding="utf-8")


def _many_labels(folder: Path) -> None:
    _edit_manifest(folder, lambda data: data.update(labels=[f"Breed {i}" for i in range(50_000)]))


def _declared_huge_detector(folder: Path) -> None:
    path = folder / OOD_ARRAYS_FILE
    path.write_bytes(_npz_of_headers({"means": ((3, 9000), 0), "precision": ((9000, 9000), 0)}))
    _edit_manifest(
        folder,
        lambda data: data.update(
            ood={
                "method": "mahalanobis",
                "threshold": 1.0,
                "arrays_file": OOD_ARRAYS_FILE,
                "arrays_sha256": sha256_file(path),
            }
        ),
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_deep_manifest, "nested too deeply"),
        (_many_labels, "at most 10,000 are allowed"),
        (_declared_huge_detector, "must have an embedding size from 1 to 4096"),
    ],
)
def test_classify_reports_a_broken_bundle_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    bundle = make_colour_bundle(tmp_path / "bundle")
    damage(bundle.path)
    photo = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])

    status = main(["classify", str(photo), "--model", str(bundle.path), "--engine", "cpu"])

    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"catbreed: cannot use the model: {bundle.path}")
    assert message in captured.err


def test_a_detector_on_a_span_of_the_embedding_is_held_to_the_whole_width(tmp_path: Path) -> None:
    span = {
        "method": "mahalanobis_energy",
        "means": np.zeros((len(COLOUR_LABELS), 2)),
        "precision": np.eye(2),
        "threshold": 1.0,
        "features": [1, 3],
        "distance_scale": 1.0,
        "energy_scale": 1.0,
    }
    fitting = make_colour_bundle(tmp_path / "fits", ood=span | {"embedding_size": 3})
    assert load_bundle(fitting.path).ood["features"] == [1, 3]

    with pytest.raises(
        BundleError, match="expects 4-wide embeddings but the model's 'embedding' output is 3"
    ):
        make_colour_bundle(tmp_path / "too-wide", ood=span | {"embedding_size": 4, "features": [2, 4]})


def test_a_detector_with_a_cat_or_not_term_keeps_its_weights_in_bundle_json(tmp_path: Path) -> None:
    detector = {
        "method": "mahalanobis_energy_non_cat",
        "means": np.zeros((len(COLOUR_LABELS), 2)),
        "precision": np.eye(2),
        "threshold": 1.0,
        "embedding_size": 3,
        "features": [1, 3],
        "distance_scale": 1.0,
        "energy_scale": 1.0,
        "non_cat_weights": np.array([0.25, -0.5]),
        "non_cat_bias": 0.125,
        "non_cat_scale": 2.0,
    }
    bundle = make_colour_bundle(tmp_path / "non-cat", ood=detector)

    loaded = load_bundle(bundle.path).ood
    assert loaded["non_cat_weights"] == [0.25, -0.5] and loaded["non_cat_bias"] == 0.125
    assert "non_cat_weights" not in np.load(bundle.path / "ood.npz")  # only the matrices go there
