"""The float graph of a bundle, derived once per precision and cached on disk.

`float_graph_path` derives the graph (`dequantize`, then `fp16` for fp16) and caches it under
`cache_dir()/float-graphs/` with a JSON sidecar recording the checksums of the source model and
of the derived file, as the TensorRT engine cache does; anything that does not match is rebuilt.

Deriving instead of shipping keeps `models/` small: the fp32 graph alone is about 90 MB.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import BundleError, ModelBundle
from catbreed_desktop.core.engines.float_graph.dequantize import (
    dequantize_model,
    has_quantized_ops,
)
from catbreed_desktop.core.engines.float_graph.fp16 import to_float16
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.files import atomic_write_bytes, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

# Bump whenever the derived graph for the same source model would change; cached files of other
# versions are then rebuilt (and the older file of the same model and precision removed).
DERIVATION_VERSION = 1
PRECISIONS = ("fp16", "fp32")
CACHE_FOLDER = "float-graphs"


def cache_files(bundle: ModelBundle, precision: str, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Where `float_graph_path` keeps the derived graph of `precision` and its JSON record (written last)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / CACHE_FOLDER
    stem = f"{bundle.model_sha256[:16]}-{precision}-v{DERIVATION_VERSION}"
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


class FloatGraphCacheError(CatBreedError, OSError):
    """The derived graph could be stored neither in the cache nor in a fresh temporary folder.

    An OSError too, so that `create_engine("auto")` passes over the GPU engine as one that failed
    to start; alone on a command line it is one line, not a traceback.
    """


def float_graph_path(bundle: ModelBundle, precision: str = "fp16", cache_dir: Path | None = None) -> Path:
    """The bundle's model as a float graph of `precision` ("fp16" or "fp32"), derived once and cached.

    The file lives in `cache_dir` (default `paths.cache_dir()/float-graphs`), named by the
    bundle's model checksum, the precision and `DERIVATION_VERSION`, beside a JSON sidecar holding
    the sha256 of the source model and of the derived file; both are checked on every call, and a
    file that does not match is rebuilt. A cache that cannot be written (read-only, a folder where
    the file should be, a full disk) gets the graph derived into a temporary folder of this process
    instead, removed at exit. A bundle whose model has no quantized ops is its own fp32 graph.
    Raises `BundleError` when the model file no longer matches the bundle's checksum,
    `UnsupportedQuantization` when its quantized ops cannot be turned back into float compute,
    `FloatGraphCacheError` when the graph can be stored nowhere.
    """
    graph_file, record_file = cache_files(bundle, precision, cache_dir)
    reasons = _stale_reasons(graph_file, record_file, bundle, precision)
    if not reasons:
        return graph_file
    if _fallback is not None:  # an earlier call of this process found the cache unwritable
        fallback_graph, fallback_record = cache_files(bundle, precision, _fallback)
        if not _stale_reasons(fallback_graph, fallback_record, bundle, precision):
            return fallback_graph

    try:
        source_bytes = bundle.model_path.read_bytes()
    except OSError as error:
        raise BundleError(f"cannot read {bundle.model_path}: {error.strerror or error}") from None
    if _sha256(source_bytes) != bundle.model_sha256:
        raise BundleError(
            f"{bundle.model_path} no longer matches the checksum in its bundle.json; reload the bundle"
        )
    source = onnx.load_from_string(source_bytes)
    if not has_quantized_ops(source) and precision == "fp32":
        return bundle.model_path
    if any(
        tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL
        for tensor in source.graph.initializer
    ):
        source = onnx.load(str(bundle.model_path))  # pull the external weights in beside it

    log.info("deriving the %s float graph of %s (%s)", precision, bundle.model_path, "; ".join(reasons))
    started = time.perf_counter()
    model = dequantize_model(source) if has_quantized_ops(source) else source
    if precision == "fp16":
        model = to_float16(model)
    helper.set_model_props(
        model,
        {
            **{entry.key: entry.value for entry in model.metadata_props},
            "catbreed.float_graph": f"{precision} v{DERIVATION_VERSION} from sha256 {bundle.model_sha256}",
        },
    )
    data = model.SerializeToString()
    record = {
        "derivation_version": DERIVATION_VERSION,
        "precision": precision,
        "source_sha256": bundle.model_sha256,
        "graph_sha256": _sha256(data),
        "graph_bytes": len(data),
        "onnx": onnx.__version__,
    }
    try:
        _store(graph_file, record_file, data, record)
    except OSError as error:
        cache_problem = error.strerror or str(error)
        try:
            fallback = _fallback_folder()
            graph_file, record_file = cache_files(bundle, precision, fallback)
            _store(graph_file, record_file, data, record)
        except OSError as second:
            raise FloatGraphCacheError(
                f"cannot store the derived {precision} graph: not in {graph_file.parent} ({cache_problem}), "
                f"nor in a temporary folder ({second.strerror or second})"
            ) from None
        log.warning(
            "cannot write the float graph cache in %s (%s); the %s graph is kept in %s for this run",
            cache_files(bundle, precision, cache_dir)[0].parent,
            cache_problem,
            precision,
            fallback,
        )
    with contextlib.suppress(OSError):  # tidying only: a cache that cannot be tidied still works
        _remove_other_versions(graph_file.parent, bundle.model_sha256[:16], precision, keep=graph_file.stem)
    log.info(
        "derived %s (%.1f MB) in %.1f s", graph_file.name, len(data) / 1e6, time.perf_counter() - started
    )
    return graph_file


def _store(graph_file: Path, record_file: Path, data: bytes, record: dict[str, Any]) -> None:
    graph_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(graph_file, data)
    # The record is written last, so an interrupted derivation never looks like a valid cache entry.
    atomic_write_text(record_file, json.dumps(record, indent=2) + "\n")


# This process's stand-in for a cache it could not write, made on first need and removed at exit.
_fallback: Path | None = None


def _fallback_folder() -> Path:
    global _fallback
    if _fallback is None:
        _fallback = Path(tempfile.mkdtemp(prefix="catbreed-float-graphs-"))
        atexit.register(shutil.rmtree, _fallback, ignore_errors=True)
    return _fallback


def _stale_reasons(graph_file: Path, record_file: Path, bundle: ModelBundle, precision: str) -> list[str]:
    """Why the cached graph cannot be used; empty when it can."""
    if not graph_file.is_file():
        return ["no cached graph"]
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # a folder, damage, nesting
        return ["the cached graph's record is missing or unreadable"]
    if not isinstance(record, dict):
        return ["the cached graph's record is not a JSON object"]
    expected = {
        "derivation_version": DERIVATION_VERSION,
        "precision": precision,
        "source_sha256": bundle.model_sha256,
    }
    reasons = [
        f"{key} changed ({record.get(key)!r} -> {value!r})"
        for key, value in expected.items()
        if record.get(key) != value
    ]
    if reasons:
        return reasons
    try:
        if sha256_file(graph_file) != record.get("graph_sha256"):
            return ["the cached graph does not match its recorded checksum"]
    except OSError:
        return ["the cached graph cannot be read"]
    return []


def _remove_other_versions(folder: Path, prefix: str, precision: str, keep: str) -> None:
    # Each derived graph is 45-90 MB; older derivation versions of the same model are dead weight.
    for path in folder.glob(f"{prefix}-{precision}-v*"):
        if path.stem != keep and path.suffix in (".onnx", ".json"):
            path.unlink(missing_ok=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
