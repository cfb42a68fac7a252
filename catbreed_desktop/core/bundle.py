"""The model bundle: the one format the trainer writes and the app reads.

A bundle is a folder holding `model.onnx` and `bundle.json`. The JSON records the format
version, the architecture, the labels in output order, the preprocessing rule, the sha256 of
the model file, the calibration temperature and the metrics the trainer measured. Loading checks
all of it and says exactly what is wrong.

An optional `decision` section carries the trainer's "unsure" rule: `min_confidence`, the
calibrated top-1 probability below which a photo goes to Unsure, with where it was chosen
(`chosen_on`, e.g. "validation") and the `rule` in words. The app uses it as the default
threshold wherever the person has not chosen one; bundles written before it existed have none,
and `DEFAULT_MIN_CONFIDENCE` stands in.

The ONNX graph takes `pixel_values` (N, 3, size, size) float32 and returns `logits` (N, labels)
as its first output; a second output `embedding` (N, D), when present, feeds the bundle's
optional out-of-distribution ("not a cat") detector described under `ood`. The detector's
matrices are too large for readable JSON (a 768 x 768 precision matrix is 12 MB of text), so
they live beside it in `ood.npz`, named and checksummed in the `ood` section; a loaded bundle
holds them in `ood` as plain lists again, so readers see one shape whichever way it was stored.

A model may keep its weights in external data files beside `model.onnx` (plain file names in the
bundle folder, never paths); `external_data` then maps each to its sha256, so the checksums cover
every byte the runtime reads. Anything a bundle can declare is bounded (label count and length,
manifest size, detector matrix sizes), so a hostile or damaged bundle is refused in milliseconds
with a one-line reason instead of exhausting memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.files import sha256_file
from catbreed_desktop.core.photos import Preprocessing
from catbreed_desktop.core.printable import printable

if TYPE_CHECKING:
    import onnx

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
INPUT_NAME = "pixel_values"
LOGITS_NAME = "logits"
EMBEDDING_NAME = "embedding"
OOD_ARRAYS_FILE = "ood.npz"
OOD_ARRAYS = ("means", "precision")
EXTERNAL_DATA = "external_data"
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")

# Bounds on what a bundle may declare. Real bundles are far inside them (a few dozen labels, a
# few kB of bundle.json, a 768-wide embedding); beyond them lie only damaged or hostile files.
MAX_LABELS = 10_000
MAX_LABEL_LENGTH = 200
MAX_DECISION_TEXT = 1_000  # `chosen_on` and `rule` are a few words; they are shown in the window
DECISION = "decision"
# The "unsure" threshold for a bundle without a `decision` section: what the app used before
# bundles carried one, so such a bundle sorts exactly as it did.
DEFAULT_MIN_CONFIDENCE = 0.5
# Old bundles keep the detector matrices inline, about 12 MB of JSON for a 768-wide embedding.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_EMBEDDING_SIZE = 4096
MAX_OOD_VALUES = 32 * 1024 * 1024  # both detector matrices together: 256 MiB as float64
_NPY_HEADER_LIMIT = 10_000  # numpy's own default for a trusted header


class BundleError(CatBreedError):
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
    # File name -> sha256 of each external weights file the model reads; empty for one-file models.
    external_data: dict[str, str] = field(default_factory=dict)
    # The trainer's "unsure" rule (checked: `min_confidence` a number in (0, 1)); None in older bundles.
    decision: dict[str, Any] | None = None

    @property
    def model_path(self) -> Path:
        return self.path / self.model_file

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def min_confidence(self) -> float | None:
        """The calibrated top-1 probability below which the trainer says a photo is unsure, if it says."""
        return float(self.decision["min_confidence"]) if self.decision is not None else None

    @property
    def default_min_confidence(self) -> float:
        """The "unsure" threshold to use when the person names none: the bundle's, else the old default."""
        recommended = self.min_confidence
        return recommended if recommended is not None else DEFAULT_MIN_CONFIDENCE

    def min_confidence_source(self) -> str:
        """Where `default_min_confidence` comes from, in words, for help texts and tooltips."""
        if self.decision is None:
            return "the default: this model bundle recommends no threshold"
        chosen_on = self.decision.get("chosen_on")
        rule = self.decision.get("rule")
        text = "recommended by the model bundle"
        if chosen_on:
            text += f", chosen on {printable(chosen_on)} photos"
        if rule:
            text += f" — {printable(rule)}"
        return text

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
        if self.external_data:
            data[EXTERNAL_DATA] = dict(self.external_data)
        if self.decision is not None:
            data[DECISION] = dict(self.decision)
        return data


def load_bundle(path: str | Path, verify: bool = True) -> ModelBundle:
    """Read and check a bundle folder; raise `BundleError` naming the first problem found.

    With `verify`, the checksums of the model file and its external weights, and the model's
    input, logits and embedding shapes are checked against the JSON.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"model bundle {folder} is not a folder")
    manifest = folder / BUNDLE_FILE
    if not manifest.is_file():
        raise BundleError(f"model bundle {folder} has no {BUNDLE_FILE}")
    data = _read_manifest(manifest)

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
    external_data = _check_external_data_field(data, manifest)
    decision = _check_decision(data, manifest)
    ood = _optional_object(data, "ood", manifest)
    if ood is not None and "arrays_file" in ood:
        ood = _read_ood_arrays(ood, folder, manifest, len(labels))
    model_file = data.get("model_file", MODEL_FILE)
    if not _is_plain_name(model_file):
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
        external_data=external_data,
        decision=decision,
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
        model = _read_onnx(bundle.model_path)
        _check_external_data(bundle, model)
        _check_model_signature(bundle, model)
        _check_embedding_size(bundle, model)
    return bundle


def _read_manifest(manifest: Path) -> dict[str, Any]:
    try:
        size = manifest.stat().st_size
    except OSError as error:
        raise BundleError(f"{manifest} cannot be read: {error}") from None
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{manifest} is {size:,} bytes; a bundle.json is at most {MAX_MANIFEST_BYTES:,} bytes"
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except RecursionError:
        raise BundleError(f"{manifest} is not valid JSON: it is nested too deeply") from None
    # ValueError covers JSONDecodeError and numbers too long to convert.
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BundleError(f"{manifest} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{manifest} must hold a JSON object")
    return data


def _check_labels(labels: Any, manifest: Path) -> tuple[str, ...]:
    if not isinstance(labels, list) or not labels:
        raise BundleError(f"{manifest}: 'labels' must be a non-empty list of names")
    if len(labels) > MAX_LABELS:
        raise BundleError(
            f"{manifest}: 'labels' has {len(labels):,} names; at most {MAX_LABELS:,} are allowed"
        )
    for number, label in enumerate(labels, start=1):
        if not isinstance(label, str) or not label.strip():
            raise BundleError(
                f"{manifest}: 'labels' must be a non-empty list of names (label {number} is not)"
            )
        if len(label) > MAX_LABEL_LENGTH:
            raise BundleError(
                f"{manifest}: label {number} is {len(label):,} characters long; "
                f"at most {MAX_LABEL_LENGTH} are allowed"
            )
    # A Counter, not labels.count(): that made 50,000 labels take minutes to check.
    duplicates = sorted(label for label, count in Counter(labels).items() if count > 1)
    if duplicates:
        shown = ", ".join(printable(label) for label in duplicates[:10])
        more = f" and {len(duplicates) - 10:,} more" if len(duplicates) > 10 else ""
        raise BundleError(f"{manifest}: 'labels' has duplicates: {shown}{more}")
    return tuple(labels)


def _check_external_data_field(data: dict[str, Any], manifest: Path) -> dict[str, str]:
    recorded = _optional_object(data, EXTERNAL_DATA, manifest) or {}
    for name, digest in recorded.items():
        if not _is_plain_name(name):
            raise BundleError(f"{manifest}: {EXTERNAL_DATA!r} names {name!r}, which is not a plain file name")
        if not isinstance(digest, str) or not _SHA256_PATTERN.fullmatch(digest):
            raise BundleError(
                f"{manifest}: {EXTERNAL_DATA!r} checksum of {name!r} must be 64 lowercase hex digits"
            )
    return recorded


def _is_plain_name(name: Any) -> bool:
    """A file name with no folder part: what a bundle may name, so it never reaches outside itself."""
    return isinstance(name, str) and bool(name) and Path(name).name == name and "\\" not in name


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


def _check_decision(data: dict[str, Any], manifest: Path) -> dict[str, Any] | None:
    """The `decision` section, its threshold checked; None when the bundle has none (older trainers)."""
    decision = _optional_object(data, DECISION, manifest)
    if decision is None:
        return None
    if "min_confidence" not in decision:
        raise BundleError(f"{manifest}: {DECISION!r} has no 'min_confidence' (the unsure threshold)")
    raw = decision["min_confidence"]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise BundleError(
            f"{manifest}: {DECISION!r} min_confidence must be a number between 0 and 1, not {printable(repr(raw))}"
        )
    # Exclusive bounds: at 0 nothing and at 1 everything would be unsure, which no trainer means.
    if not (math.isfinite(raw) and 0.0 < raw < 1.0):
        raise BundleError(
            f"{manifest}: {DECISION!r} min_confidence must be between 0 and 1 (both excluded), not {raw}"
        )
    for key in ("chosen_on", "rule"):
        text = decision.get(key)
        if text is not None and not isinstance(text, str):
            raise BundleError(f"{manifest}: {DECISION!r} {key} must be text, not {printable(repr(text))}")
        if isinstance(text, str) and len(text) > MAX_DECISION_TEXT:
            raise BundleError(
                f"{manifest}: {DECISION!r} {key} is {len(text):,} characters long; "
                f"at most {MAX_DECISION_TEXT:,} are allowed"
            )
    return decision | {"min_confidence": float(raw)}


def _optional_object(data: dict[str, Any], key: str, manifest: Path) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BundleError(f"{manifest}: {key!r} must be a JSON object")
    return dict(value)


def _read_ood_arrays(ood: dict[str, Any], folder: Path, manifest: Path, num_labels: int) -> dict[str, Any]:
    """The `ood` section with its matrices read back from the checksummed side file."""
    name, expected = ood.pop("arrays_file"), ood.pop("arrays_sha256", None)
    if not _is_plain_name(name):
        raise BundleError(f"{manifest}: 'ood' arrays_file must be a plain file name, not {name!r}")
    path = folder / name
    if not path.is_file():
        raise BundleError(f"model bundle {folder} has no {name}, which its 'ood' section names")
    if sha256_file(path) != expected:
        raise BundleError(f"checksum mismatch for {path}: the not-a-cat detector file was changed or damaged")
    try:
        with zipfile.ZipFile(path) as archive:
            means = _read_npy_member(archive, "means", path, lambda shape: _means_problem(shape, num_labels))
            size = means.shape[1]
            precision = _read_npy_member(
                archive,
                "precision",
                path,
                lambda shape: None if shape == (size, size) else f"must be {size}x{size}",
            )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise BundleError(f"{path} is not a readable detector file: {error}") from None
    return ood | {"means": means.tolist(), "precision": precision.tolist()}


def _means_problem(shape: tuple[int, ...], num_labels: int) -> str | None:
    if len(shape) != 2 or shape[0] != num_labels:
        return f"must be a ({num_labels} labels, embedding size) matrix"
    if not 1 <= shape[1] <= MAX_EMBEDDING_SIZE:
        return f"must have an embedding size from 1 to {MAX_EMBEDDING_SIZE}"
    if num_labels * shape[1] + shape[1] ** 2 > MAX_OOD_VALUES:
        return f"makes the detector larger than {MAX_OOD_VALUES:,} values"
    return None


def _read_npy_member(
    archive: zipfile.ZipFile, key: str, path: Path, shape_problem: Callable[[tuple[int, ...]], str | None]
) -> np.ndarray:
    """One float array of an .npz, its header checked before a byte of data is read.

    `np.load` trusts the header: a few hundred kB of compressed zeros can declare gigabytes, and
    an object array is a pickle. Here the shape must pass `shape_problem` (which returns what is
    wrong, or None) and agree with the member's real size first.
    """
    try:
        info = archive.getinfo(f"{key}.npy")
    except KeyError:
        raise BundleError(f"{path} is not a readable detector file: it has no {key!r} array") from None
    with archive.open(info) as stream:
        shape, fortran_order, dtype = _npy_header(stream)
        if dtype.hasobject or dtype.kind != "f" or dtype.itemsize > 8:
            raise BundleError(f"{path}: {key!r} must hold floating-point numbers, not {dtype}")
        problem = shape_problem(shape)
        if problem is not None:
            raise BundleError(f"{path}: {key!r} has shape {shape}, which {problem}")
        expected = math.prod(shape) * dtype.itemsize
        actual = info.file_size - stream.tell()
        if actual != expected:
            raise BundleError(
                f"{path}: {key!r} declares shape {shape} ({expected:,} bytes) but holds {actual:,} bytes"
            )
        values = np.frombuffer(stream.read(expected), dtype=dtype)
    return values.reshape(shape, order="F" if fortran_order else "C").astype(np.float64)


def _npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream, max_header_size=_NPY_HEADER_LIMIT)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream, max_header_size=_NPY_HEADER_LIMIT)
    raise ValueError(f"unsupported .npy format version {version}")


def _write_ood_arrays(ood: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The `ood` section as bundle.json stores it, its matrices saved to `folder`/ood.npz."""
    if not all(key in ood for key in OOD_ARRAYS):
        return ood
    arrays = {key: np.asarray(ood[key], dtype=np.float64) for key in OOD_ARRAYS}
    path = folder / OOD_ARRAYS_FILE
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    rest = {key: value for key, value in ood.items() if key not in OOD_ARRAYS}
    return rest | {"arrays_file": OOD_ARRAYS_FILE, "arrays_sha256": sha256_file(path)}


def _read_onnx(path: Path) -> onnx.ModelProto:
    """The ONNX graph without its external weights (those are checked by checksum, not parsed)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises several unrelated types for bad files
        raise BundleError(f"{path} is not a readable ONNX model: {error}") from None


def external_data_files(model: onnx.ModelProto) -> set[str]:
    """The locations of every external weights file the model's tensors point to, as written."""
    import onnx

    locations = set()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {entry.key: entry.value for entry in tensor.external_data}
            locations.add(entries.get("location", ""))
    return locations


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and attribute tensors of the graph, its subgraphs and its functions."""
    pending: list[Any] = [model.graph, *model.functions]
    while pending:
        graph = pending.pop()
        yield from getattr(graph, "initializer", ())
        for sparse in getattr(graph, "sparse_initializer", ()):
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                for sparse in (
                    *([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []),
                    *attribute.sparse_tensors,
                ):
                    yield from (sparse.values, sparse.indices)
                if attribute.HasField("g"):
                    pending.append(attribute.g)
                pending.extend(attribute.graphs)


def _check_external_data(bundle: ModelBundle, model: onnx.ModelProto) -> None:
    """Every external weights file must sit in the bundle folder with a checksum that matches."""
    reserved = {BUNDLE_FILE, bundle.model_file}
    for name in sorted(external_data_files(model)):
        if not _is_plain_name(name) or name in reserved:
            raise BundleError(
                f"{bundle.model_path} reads weights from {name!r}, which is not a file of its own in the "
                "bundle folder; a bundle may not reach outside itself"
            )
        recorded = bundle.external_data.get(name)
        if recorded is None:
            raise BundleError(
                f"{bundle.model_path} reads weights from {name}, which bundle.json has no checksum for "
                f"(in {EXTERNAL_DATA!r}); write the bundle with write_bundle so that it records one"
            )
        path = bundle.path / name
        if not path.is_file():
            raise BundleError(
                f"model bundle {bundle.path} has no {name}, which {bundle.model_file} reads weights from"
            )
        if sha256_file(path) != recorded:
            raise BundleError(
                f"checksum mismatch for {path}: the model's external weights were changed or damaged"
            )


def _check_model_signature(bundle: ModelBundle, model: onnx.ModelProto) -> None:
    """The ONNX graph's input and logits shapes must agree with bundle.json."""
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


def _check_embedding_size(bundle: ModelBundle, model: onnx.ModelProto) -> None:
    """The detector's matrices must fit the model's embedding, or every batch would fail to score."""
    means = (bundle.ood or {}).get("means")
    if not (isinstance(means, list) and means and isinstance(means[0], list)):
        return  # no detector matrices; a malformed section is reported by the detector itself
    outputs = {output.name: output for output in model.graph.output}
    if EMBEDDING_NAME not in outputs:
        raise BundleError(
            f"{bundle.path}: bundle.json has an 'ood' section but the model has no "
            f"{EMBEDDING_NAME!r} output to score"
        )
    dims = outputs[EMBEDDING_NAME].type.tensor_type.shape.dim
    size = dims[-1].dim_value if dims else 0
    # A detector that measures one span of the embedding names the whole width it expects.
    expected = (bundle.ood or {}).get("embedding_size", len(means[0]))
    if size and size != expected:
        raise BundleError(
            f"{bundle.path}: the not-a-cat detector expects {expected}-wide embeddings but the "
            f"model's {EMBEDDING_NAME!r} output is {size} wide"
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
    decision: dict[str, Any] | None = None,
) -> ModelBundle:
    """Copy an ONNX file into `out_dir` with its bundle.json, then load it back to prove it.

    `decision` is the trainer's unsure rule, `{"min_confidence": p, "chosen_on": ..., "rule": ...}`
    (see the module's docstring); loading the bundle back checks it.

    External weights files the model reads (plain file names beside `model_file`) are copied too,
    and their checksums recorded in `external_data`. The new bundle is assembled and verified in a hidden staging folder first, so a bad
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
        external_data = _stage_external_data(source, staging)
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
            external_data=external_data,
            decision=dict(decision) if decision is not None else None,
        )
        manifest = bundle.to_json()
        if ood is not None:
            manifest["ood"] = _write_ood_arrays(ood, staging)
        text = json.dumps(manifest, indent=2, default=_json_default) + "\n"
        (staging / BUNDLE_FILE).write_text(text, encoding="utf-8")
        staged = load_bundle(staging)
        # Data files first, manifest last: a reader in between sees a checksum mismatch, never
        # a manifest that vouches for the wrong model.
        for name in external_data:
            os.replace(staging / name, folder / name)
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


def _stage_external_data(source: Path, staging: Path) -> dict[str, str]:
    """Copy the external weights files `source` reads into `staging`; their names and sha256."""
    reserved = {BUNDLE_FILE, MODEL_FILE, OOD_ARRAYS_FILE, staging.name}
    recorded = {}
    for name in sorted(external_data_files(_read_onnx(source))):
        data_file = source.parent / name
        if not _is_plain_name(name) or name in reserved or not data_file.is_file():
            raise BundleError(
                f"cannot write a bundle: {source} reads weights from {name!r}, which is not a file "
                "of its own beside it"
            )
        shutil.copyfile(data_file, staging / name)
        recorded[name] = sha256_file(staging / name)
    return recorded


def _json_default(value: Any) -> Any:
    """Numpy scalars and arrays, and paths, as plain JSON values (trainers hand these in)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
