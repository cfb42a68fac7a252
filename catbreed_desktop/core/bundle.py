"""The model bundle: the one format the trainer writes and the app reads.

A bundle is a folder holding `model.onnx` and `bundle.json`. The JSON records the format
version, the architecture, the labels in output order, the preprocessing rule, the sha256 of
the model file, the calibration temperature and the metrics the trainer measured. Loading checks
all of it and says exactly what is wrong.

The ONNX graph takes `pixel_values` (N, 3, size, size) float32 and returns `logits` (N, labels)
as its first output; a second output `embedding` (N, D), when present, feeds the bundle's
optional out-of-distribution ("not a cat") detector described under `ood`. The detector's
matrices are too large for readable JSON (a 768 x 768 precision matrix is 12 MB of text), so
they live beside it in `ood.npz`, named and checksummed in the `ood` section; a loaded bundle
holds them in `ood` as plain lists again, so readers see one shape whichever way it was stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catbreed_desktop.core.imaging import Preprocessing

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
INPUT_NAME = "pixel_values"
LOGITS_NAME = "logits"
EMBEDDING_NAME = "embedding"
OOD_ARRAYS_FILE = "ood.npz"
OOD_ARRAYS = ("means", "precision")
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class BundleError(Exception):
    """A model bundle that cannot be used, with the reason in words."""


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, verified model bundle."""

    path: Path
    labels: tuple[str, ...]
    architecture: str
    preprocessing: Preprocessing
    model_sha256: str
    temperature: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] | None = None
    model_file: str = MODEL_FILE
    format_version: int = FORMAT_VERSION

    @property
    def model_path(self) -> Path:
        return self.path / self.model_file

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": self.format_version,
            "architecture": self.architecture,
            "labels": list(self.labels),
            "model_file": self.model_file,
            "model_sha256": self.model_sha256,
            "preprocessing": self.preprocessing.to_dict(),
            "calibration": {"temperature": self.temperature},
            "metrics": self.metrics,
            "provenance": self.provenance,
        }
        if self.ood is not None:
            data["ood"] = self.ood
        return data


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundle(path: str | Path, verify: bool = True) -> ModelBundle:
    """Read and check a bundle folder; raise `BundleError` naming the first problem found.

    With `verify`, the model file's checksum and its output size are checked against the JSON.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"model bundle {folder} is not a folder")
    manifest = folder / BUNDLE_FILE
    if not manifest.is_file():
        raise BundleError(f"model bundle {folder} has no {BUNDLE_FILE}")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{manifest} must hold a JSON object")

    version = data.get("format_version")
    if "format_version" not in data:
        raise BundleError(f"{manifest} has no 'format_version'; it is not a CatBreed model bundle")
    if type(version) is not int or version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest} has format version {version!r}; this version of CatBreed reads version "
            f"{FORMAT_VERSION} only"
        )
    for key in ("architecture", "labels", "model_sha256", "preprocessing"):
        if key not in data:
            raise BundleError(f"{manifest} is missing the field {key!r}")
    labels = _check_labels(data["labels"], manifest)
    if not isinstance(data["architecture"], str) or not data["architecture"]:
        raise BundleError(f"{manifest}: 'architecture' must be a non-empty string")
    model_sha256 = data["model_sha256"]
    if not isinstance(model_sha256, str) or not _SHA256_PATTERN.fullmatch(model_sha256):
        raise BundleError(f"{manifest}: 'model_sha256' must be 64 lowercase hex digits, not {model_sha256!r}")
    if not isinstance(data["preprocessing"], dict):
        raise BundleError(f"{manifest}: bad 'preprocessing' (must be a JSON object)")
    try:
        preprocessing = Preprocessing.from_dict(data["preprocessing"])
    except KeyError as error:
        raise BundleError(f"{manifest}: bad 'preprocessing' (missing {error})") from None
    except (TypeError, ValueError) as error:
        raise BundleError(f"{manifest}: bad 'preprocessing' ({error})") from None
    temperature = _check_temperature(data.get("calibration", {}), manifest)
    metrics = _optional_object(data, "metrics", manifest) or {}
    provenance = _optional_object(data, "provenance", manifest) or {}
    ood = _optional_object(data, "ood", manifest)
    if ood is not None and "arrays_file" in ood:
        ood = _read_ood_arrays(ood, folder, manifest)
    model_file = data.get("model_file", MODEL_FILE)
    if not isinstance(model_file, str) or not model_file or Path(model_file).name != model_file:
        # A path would let a bundle point at files outside its own folder.
        raise BundleError(f"{manifest}: 'model_file' must be a plain file name, not {model_file!r}")

    bundle = ModelBundle(
        path=folder.resolve(),
        labels=labels,
        architecture=data["architecture"],
        preprocessing=preprocessing,
        model_sha256=model_sha256,
        temperature=temperature,
        metrics=metrics,
        provenance=provenance,
        ood=ood,
        model_file=model_file,
    )
    if not bundle.model_path.is_file():
        raise BundleError(f"model bundle {folder} has no model file {bundle.model_file}")
    if verify:
        actual = sha256_file(bundle.model_path)
        if actual != bundle.model_sha256:
            raise BundleError(
                f"checksum mismatch for {bundle.model_path}: bundle.json says {bundle.model_sha256}, "
                f"the file is {actual}; the model file was changed or damaged"
            )
        _check_model_signature(bundle)
    return bundle


def _check_labels(labels: Any, manifest: Path) -> tuple[str, ...]:
    names_ok = isinstance(labels, list) and all(isinstance(x, str) and x.strip() for x in labels)
    if not names_ok or not labels:
        raise BundleError(f"{manifest}: 'labels' must be a non-empty list of names")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise BundleError(f"{manifest}: 'labels' has duplicates: {', '.join(duplicates)}")
    return tuple(labels)


def _check_temperature(calibration: Any, manifest: Path) -> float:
    if not isinstance(calibration, dict):
        raise BundleError(f"{manifest}: 'calibration' must be a JSON object")
    raw = calibration.get("temperature", 1.0)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise BundleError(f"{manifest}: calibration temperature must be a number, not {raw!r}")
    temperature = float(raw)
    if not (math.isfinite(temperature) and temperature > 0):
        raise BundleError(f"{manifest}: calibration temperature must be positive, not {temperature}")
    return temperature


def _optional_object(data: dict[str, Any], key: str, manifest: Path) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BundleError(f"{manifest}: {key!r} must be a JSON object")
    return dict(value)


def _read_ood_arrays(ood: dict[str, Any], folder: Path, manifest: Path) -> dict[str, Any]:
    """The `ood` section with its matrices read back from the checksummed side file."""
    name, expected = ood.pop("arrays_file"), ood.pop("arrays_sha256", None)
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise BundleError(f"{manifest}: 'ood' arrays_file must be a plain file name, not {name!r}")
    path = folder / name
    if not path.is_file():
        raise BundleError(f"model bundle {folder} has no {name}, which its 'ood' section names")
    if sha256_file(path) != expected:
        raise BundleError(f"checksum mismatch for {path}: the not-a-cat detector file was changed or damaged")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return ood | {key: arrays[key].tolist() for key in OOD_ARRAYS}
    except (OSError, ValueError, KeyError) as error:
        raise BundleError(f"{path} is not a readable detector file: {error}") from None


def _write_ood_arrays(ood: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The `ood` section as bundle.json stores it, its matrices saved to `folder`/ood.npz."""
    if not all(key in ood for key in OOD_ARRAYS):
        return ood
    arrays = {key: np.asarray(ood[key], dtype=np.float64) for key in OOD_ARRAYS}
    path = folder / OOD_ARRAYS_FILE
    np.savez_compressed(path, **arrays)
    rest = {key: value for key, value in ood.items() if key not in OOD_ARRAYS}
    return rest | {"arrays_file": OOD_ARRAYS_FILE, "arrays_sha256": sha256_file(path)}


def _check_model_signature(bundle: ModelBundle) -> None:
    """The ONNX graph's input and logits shapes must agree with bundle.json."""
    import onnx

    try:
        model = onnx.load(str(bundle.model_path), load_external_data=False)
    except Exception as error:  # onnx raises several unrelated types for bad files
        raise BundleError(f"{bundle.model_path} is not a readable ONNX model: {error}") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [i.name for i in inputs]
        raise BundleError(f"{bundle.model_path} must take one input named {INPUT_NAME!r}, not {names}")
    if not graph.output or graph.output[0].name != LOGITS_NAME:
        names = [o.name for o in graph.output]
        raise BundleError(f"{bundle.model_path}: first output must be {LOGITS_NAME!r}, not {names}")
    dims = graph.output[0].type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims else 0
    if classes and classes != bundle.num_labels:
        raise BundleError(
            f"{bundle.path}: bundle.json lists {bundle.num_labels} labels but the model outputs "
            f"{classes} classes"
        )
    if not classes:
        raise BundleError(f"{bundle.model_path}: the logits output has no fixed class dimension")
    input_dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if input_dims and (len(input_dims) != 4 or input_dims[1] not in (0, 3)):
        raise BundleError(
            f"{bundle.model_path}: input {INPUT_NAME!r} must be (batch, 3, height, width), not {input_dims}"
        )
    size = bundle.preprocessing.size
    fixed_spatial = [d for d in input_dims[2:] if d]  # 0 means a dynamic dimension
    if any(d != size for d in fixed_spatial):
        raise BundleError(
            f"{bundle.model_path} expects {input_dims[2:]} pixels but bundle.json says {size}x{size}"
        )


def write_bundle(
    out_dir: str | Path,
    model_file: str | Path,
    *,
    labels: list[str] | tuple[str, ...],
    architecture: str,
    preprocessing: Preprocessing,
    temperature: float = 1.0,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    ood: dict[str, Any] | None = None,
) -> ModelBundle:
    """Copy an ONNX file into `out_dir` with its bundle.json, then load it back to prove it.

    The new bundle is assembled and verified in a hidden staging folder first, so a bad
    argument or a damaged model never overwrites a working bundle already in `out_dir`.
    """
    folder = Path(out_dir)
    source = Path(model_file)
    if not source.is_file():
        raise BundleError(f"cannot write a bundle: model file {source} does not exist")
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        staged_model = staging / MODEL_FILE
        shutil.copyfile(source, staged_model)
        bundle = ModelBundle(
            path=staging.resolve(),
            labels=tuple(labels),
            architecture=architecture,
            preprocessing=preprocessing,
            model_sha256=sha256_file(staged_model),
            temperature=float(temperature),
            metrics=dict(metrics or {}),
            provenance=dict(provenance or {}),
            ood=ood,
        )
        manifest = bundle.to_json()
        if ood is not None:
            manifest["ood"] = _write_ood_arrays(ood, staging)
        text = json.dumps(manifest, indent=2, default=_json_default) + "\n"
        (staging / BUNDLE_FILE).write_text(text, encoding="utf-8")
        staged = load_bundle(staging)
        # Data files first, manifest last: a reader in between sees a checksum mismatch, never
        # a manifest that vouches for the wrong model.
        os.replace(staged_model, folder / MODEL_FILE)
        if (staging / OOD_ARRAYS_FILE).is_file():
            os.replace(staging / OOD_ARRAYS_FILE, folder / OOD_ARRAYS_FILE)
        os.replace(staging / BUNDLE_FILE, folder / BUNDLE_FILE)
        if "arrays_file" not in manifest.get("ood", {}):
            (folder / OOD_ARRAYS_FILE).unlink(missing_ok=True)  # an older bundle's detector
    except (TypeError, ValueError) as error:
        raise BundleError(f"cannot write a bundle to {folder}: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(staged, path=folder.resolve())


def _json_default(value: Any) -> Any:
    """Numpy scalars and arrays, and paths, as plain JSON values (trainers hand these in)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
