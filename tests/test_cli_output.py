"""What `classify` prints stays safe and exact: odd file names, odd labels, and models that misbehave.

A file name that is not valid UTF-8 must not crash a strict UTF-8 stdout; a label with a terminal
escape must not reach the terminal raw; a model that gives NaN, infinite or wrongly shaped
outputs costs the affected photos a clear error each, never a traceback or a NaN confidence.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from factories import COLOUR_LABELS, COLOURS, TINY_SPEC, make_photo
from onnx import TensorProto, helper, numpy_helper

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.bundle import (
    BUNDLE_FILE,
    EMBEDDING_NAME,
    INPUT_NAME,
    LOGITS_NAME,
    ModelBundle,
    write_bundle,
)
from catbreed_desktop.core.classify import Classifier, Failure, Prediction
from catbreed_desktop.core.engines.base import ModelOutputError
from catbreed_desktop.core.engines.onnx_runtime import OnnxRuntimeEngine

WHITE = (250, 250, 250)  # every channel above the normalisation mean: the test models stay finite
NO_VALID_SCORES = "the model gave no valid scores for this photo"


def _strict_json(line: str) -> Any:
    """json.loads that refuses NaN and Infinity, as strict JSON readers do."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


class StrictStdout:
    """sys.stdout as a terminal with a strict UTF-8 locale has it (PYTHONIOENCODING=utf-8:strict)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.raw = io.BytesIO()
        self.stream = io.TextIOWrapper(self.raw, encoding="utf-8", errors="strict", newline="\n")
        monkeypatch.setattr(sys, "stdout", self.stream)

    def text(self) -> str:
        self.stream.flush()
        return self.raw.getvalue().decode("utf-8", errors="strict")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `catbreed classify args` (stdout is empty under StrictStdout)."""
    status = main(["classify", *args, "--engine", "cpu"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _model(
    path: Path,
    weights: np.ndarray,
    after: Sequence[str] = (),
    logits_shape: Sequence[int | str] = ("batch", 3),
    embedding_shape: Sequence[int | str] = ("batch", 3),
) -> Path:
    """The colour model with `weights` (3, classes), unary ops `after` on its logits, and given declared shapes."""
    nodes = [
        helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], [EMBEDDING_NAME], axis=1),
        helper.make_node("MatMul", [EMBEDDING_NAME, "weights"], ["raw"]),
    ]
    name = "raw"
    for step, op in enumerate(after):
        nodes.append(helper.make_node(op, [name], [f"step{step}"]))
        name = f"step{step}"
    nodes.append(helper.make_node("Identity", [name], [LOGITS_NAME]))
    size = TINY_SPEC.size
    graph = helper.make_graph(
        nodes,
        "misbehaving",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, list(logits_shape)),
            helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, list(embedding_shape)),
        ],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _bundle(
    folder: Path, model: Path, ood: dict[str, Any] | None = None, labels=COLOUR_LABELS
) -> ModelBundle:
    return write_bundle(folder, model, labels=labels, architecture="test", preprocessing=TINY_SPEC, ood=ood)


# ------------------------------------------------------------------------- file names and labels


@pytest.fixture
def odd_names(tmp_path: Path) -> dict[str, Path]:
    """A red photo named b'caf\\xe9.png' (Latin-1, as old cameras write), a broken one named
    b'br\\xffoken.jpg', and a plain blue.png."""
    folder = tmp_path / "photos"
    return {
        "cafe": make_photo(folder / os.fsdecode(b"caf\xe9.png"), COLOURS["Red Cat"]),
        "blue": make_photo(folder / "blue.png", COLOURS["Blue Cat"]),
        "broken": folder / os.fsdecode(b"br\xffoken.jpg"),
    }


def test_table_escapes_undecodable_file_names_on_a_strict_stdout(
    capsys, monkeypatch, colour_bundle, odd_names
):
    odd_names["broken"].write_text("not a photo")
    stdout = StrictStdout(monkeypatch)

    status, _, err = _run(capsys, str(odd_names["cafe"].parent), "--model", str(colour_bundle.path))

    out = stdout.text()
    assert status == 1
    lines = {line.split()[0].rsplit("/", 1)[-1]: line for line in out.splitlines()}
    assert set(lines) == {"blue.png", "caf\\xe9.png"}
    assert "Red Cat" in lines["caf\\xe9.png"]
    assert "br\\xffoken.jpg: not an image" in err


def test_json_is_strict_utf8_and_gives_undecodable_names_exactly(
    capsys, monkeypatch, colour_bundle, odd_names
):
    odd_names["broken"].write_text("not a photo")
    stdout = StrictStdout(monkeypatch)

    status, _, _ = _run(capsys, str(odd_names["cafe"].parent), "--model", str(colour_bundle.path), "--json")

    records = {Path(record["path"]).name: record for record in map(_strict_json, stdout.text().splitlines())}
    assert status == 1
    assert set(records) == {"blue.png", "br\\xffoken.jpg", "caf\\xe9.png"}
    cafe, broken, blue = records["caf\\xe9.png"], records["br\\xffoken.jpg"], records["blue.png"]
    assert cafe["ok"] and cafe["label"] == "Red Cat"
    assert base64.b64decode(cafe["path_bytes_b64"]) == os.fsencode(odd_names["cafe"])
    assert os.path.isfile(base64.b64decode(cafe["path_bytes_b64"]))
    assert not broken["ok"] and base64.b64decode(broken["path_bytes_b64"]) == os.fsencode(odd_names["broken"])
    assert blue["path"] == str(odd_names["blue"]) and "path_bytes_b64" not in blue


def test_csv_escapes_undecodable_file_names_on_a_strict_stdout(capsys, monkeypatch, colour_bundle, odd_names):
    stdout = StrictStdout(monkeypatch)

    status, _, _ = _run(capsys, str(odd_names["cafe"].parent), "--model", str(colour_bundle.path), "--csv")

    rows = {Path(row["path"]).name: row for row in csv.DictReader(io.StringIO(stdout.text()))}
    assert status == 0
    assert rows["caf\\xe9.png"]["label_1"] == "Red Cat" and rows["blue.png"]["label_1"] == "Blue Cat"


def test_labels_with_terminal_escapes_are_printed_escaped(capsys, monkeypatch, tmp_path):
    labels = ("\x1b[31mRed Cat", "Green\x07 Cat", "Blue Cat")
    bundle = _bundle(tmp_path / "bundle", _model(tmp_path / "colour.onnx", np.eye(3) * 4), labels=labels)
    manifest = bundle.path / BUNDLE_FILE
    # A label JSON can carry but UTF-8 cannot: a lone surrogate, written as the escape \ud800.
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("Blue Cat", "Blue \\ud800 Cat"))
    red = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])
    blue = make_photo(tmp_path / "blue.png", COLOURS["Blue Cat"])
    outputs = {}
    for form in ("table", "--json", "--csv"):
        stdout = StrictStdout(monkeypatch)
        extra = () if form == "table" else (form,)
        status, _, err = _run(
            capsys, str(red), str(blue), "--model", str(bundle.path), "--top-k", "3", *extra
        )
        assert status == 0, err
        outputs[form] = stdout.text()

    for form, out in outputs.items():
        assert "\x1b" not in out and "\x07" not in out, form
    assert "\\x1b[31mRed Cat" in outputs["table"] and "Green\\x07 Cat" in outputs["table"]
    assert "Blue \\ud800 Cat" in outputs["table"]
    rows = list(csv.DictReader(io.StringIO(outputs["--csv"])))
    assert {Path(row["path"]).name: row["label_1"] for row in rows} == {
        "red.png": "\\x1b[31mRed Cat",
        "blue.png": "Blue \\ud800 Cat",
    }
    records = {Path(r["path"]).name: r for r in map(_strict_json, outputs["--json"].splitlines())}
    assert records["red.png"]["label"] == "\x1b[31mRed Cat"  # exact: JSON escapes control characters
    assert records["blue.png"]["label"] == "Blue \\ud800 Cat"


# ---------------------------------------------------------------------- models that misbehave


@pytest.mark.parametrize(("after", "kind"), [(("Sqrt",), "NaN"), (("Relu", "Reciprocal"), "infinite")])
def test_non_finite_logits_fail_that_photo_and_the_batch_goes_on(tmp_path, after, kind):
    # Red photos have negative normalised green and blue means: Sqrt makes them NaN, 1/Relu infinite.
    bundle = _bundle(tmp_path / "bundle", _model(tmp_path / "odd.onnx", np.eye(3) * 4, after=after))
    white = make_photo(tmp_path / "white.png", WHITE)
    red = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])
    other_white = make_photo(tmp_path / "white2.png", WHITE, seed=1)

    with Classifier(bundle, engine="cpu", batch_size=4) as classifier:
        results = list(classifier.classify([white, red, other_white]))

    assert [type(r) for r in results] == [Prediction, Failure, Prediction], kind
    assert results[1].reason.startswith(NO_VALID_SCORES)
    assert all(np.isfinite(r.confidence) and 0 < r.confidence <= 1 for r in (results[0], results[2]))


def test_non_finite_logits_never_reach_json_or_a_sort(capsys, tmp_path):
    bundle = _bundle(tmp_path / "bundle", _model(tmp_path / "odd.onnx", np.eye(3) * 4, after=("Sqrt",)))
    red = make_photo(tmp_path / "photos" / "red.png", COLOURS["Red Cat"])
    make_photo(tmp_path / "photos" / "white.png", WHITE)

    status, out, _ = _run(capsys, str(red.parent), "--model", str(bundle.path), "--json")
    records = {Path(r["path"]).name: r for r in map(_strict_json, out.splitlines())}

    assert status == 1  # and every line parsed as strict JSON: no bare NaN
    assert records["red.png"] == {
        "path": str(red),
        "ok": False,
        "error": f"{NO_VALID_SCORES} (NaN or infinite)",
    }
    assert records["white.png"]["ok"]

    status = main(
        ["sort", str(red.parent), "--into", str(tmp_path / "sorted"), "--dry-run", "--min-confidence", "0.6"]
        + ["--model", str(bundle.path), "--engine", "cpu"]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert f"{red}: {NO_VALID_SCORES}" in captured.err
    assert str(red) not in captured.out  # not planned for any folder, Unsure included


def test_logits_wider_than_the_labels_fail_each_photo_clearly(capsys, tmp_path):
    # The graph declares 3 classes but computes 5: bundle.json and the declared shape agree.
    weights = np.zeros((3, 5))
    weights[:, 4] = 10.0  # |logit 4| is the largest for every photo, so it ranks first
    wide = _model(tmp_path / "wide.onnx", weights, after=("Abs",))
    bundle = _bundle(tmp_path / "bundle", wide)
    photos = [
        make_photo(tmp_path / "photos" / f"{name}.png", COLOURS[label])
        for name, label in (("red", "Red Cat"), ("blue", "Blue Cat"))
    ]

    with Classifier(bundle, engine="cpu", batch_size=1) as classifier:
        results = list(classifier.classify(photos))
    with OnnxRuntimeEngine(bundle) as engine, pytest.raises(ModelOutputError, match="shape \\(1, 5\\)"):
        engine.run(np.zeros((1, 3, TINY_SPEC.size, TINY_SPEC.size), dtype=np.float32))
    status, _, err = _run(capsys, *map(str, photos), "--model", str(bundle.path))

    assert [type(r) for r in results] == [Failure, Failure]
    expected = (
        f"the model in {bundle.path} gave logits of shape (1, 5) for 1 photos, but its bundle.json lists "
        "3 labels, so (1, 3) was expected"
    )
    assert [r.reason for r in results] == [expected, expected]
    assert status == 1 and "Traceback" not in err
    assert f"error: {photos[0]}: the model in {bundle.path} gave logits of shape" in err


def test_detector_that_does_not_fit_a_dynamic_embedding_fails_each_photo_clearly(tmp_path):
    # The embedding width is not declared, so only the first batch can show the mismatch.
    model = _model(tmp_path / "dynamic.onnx", np.eye(3) * 4, embedding_shape=("batch", "width"))
    ood = {"method": "mahalanobis", "means": np.zeros((3, 5)), "precision": np.eye(5), "threshold": 1.0}
    bundle = _bundle(tmp_path / "bundle", model, ood=ood)
    red = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])
    blue = make_photo(tmp_path / "blue.png", COLOURS["Blue Cat"])

    with Classifier(bundle, engine="cpu") as classifier:
        results = list(classifier.classify([red, blue]))

    assert [type(r) for r in results] == [Failure, Failure]
    assert results[0].reason == (
        f"the model in {bundle.path} gave an embedding of shape (2, 3), but the not-a-cat detector in "
        "its bundle.json expects 5-wide embeddings"
    )
