"""TensorRT engine: build from the bundle's float graph once, cache it, run it with cuda-python buffers.

TensorRT cannot run the int8 model's DynamicQuantizeLinear/MatMulInteger/ConvInteger, so it
builds from the float graph `float_graph.float_graph_path` derives from the bundle: the fp16 graph
when `fp16` is asked for, else the fp32 one. The network is strongly typed: TensorRT keeps each
tensor's type from the graph instead of choosing per layer, so the LayerNorm, Softmax and
reductions the fp16 graph keeps in float32 stay in float32 (TensorRT's own FP16 flag would be free
to run them in fp16, where DINOv2's residual channels overflow), and TensorRT computes with the
same types as ONNX Runtime CUDA, whose numerics the CPU parity tests check.

Building a TensorRT engine takes minutes and the result only fits one GPU model, one TensorRT
version and one graph, so the serialized engine is cached in `cache_dir()/tensorrt/` next to a
small JSON file recording exactly what it was built for (`EngineKey`, the graph's checksum
included). When anything differs the engine is rebuilt in place; a cache that cannot be written
costs a build per run, with a warning, not the engine. TensorRT and cuda-python are
imported only when asked for, and their absence (or a machine without an NVIDIA GPU) is reported
as `EngineUnavailable` in words.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import INPUT_NAME, LOGITS_NAME, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, check_batch
from catbreed_desktop.core.engines.names import DEFAULT_BATCH_SIZE, ENGINE_TITLES, TENSORRT
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.files import atomic_write_bytes, atomic_write_text, sha256_file
from catbreed_desktop.core.install_hints import install_extra_command

log = logging.getLogger(__name__)

MIN_TENSORRT_MAJOR = 10
DEFAULT_MAX_BATCH = 32
WORKSPACE_BYTES = 2 << 30

ImportModule = Callable[[str], ModuleType]


@dataclass(frozen=True)
class TensorRTToolkit:
    """The imported `tensorrt` and cuda-python runtime modules, with a GPU known to answer."""

    trt: Any
    cudart: Any
    gpu_name: str

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def logger(self) -> Any:
        return self.trt.Logger(self.trt.Logger.WARNING)


def install_hint() -> str:
    return f"{install_extra_command('tensorrt')} (TensorRT 10+ and cuda-python; NVIDIA GPU and driver)"


def load_toolkit(import_module: ImportModule = importlib.import_module) -> TensorRTToolkit:
    """Import TensorRT and cuda-python and find a GPU, or raise `EngineUnavailable` saying what is missing."""
    try:
        trt = import_module("tensorrt")
    except (ImportError, OSError) as error:
        raise EngineUnavailable(
            f"TensorRT is not installed or cannot load ({error}); {install_hint()}"
        ) from None
    version = str(getattr(trt, "__version__", "0"))
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < MIN_TENSORRT_MAJOR:
        raise EngineUnavailable(
            f"TensorRT {version} is too old; CatBreed needs TensorRT {MIN_TENSORRT_MAJOR} or newer"
        )
    cudart = _import_cudart(import_module)
    try:
        status, count = cudart.cudaGetDeviceCount()
    except Exception as failure:  # a broken driver raises from inside cuda-python
        raise EngineUnavailable(f"no CUDA GPU answered ({failure})") from None
    if _failed(cudart, status) or count < 1:
        reason = _error_name(cudart, status) if _failed(cudart, status) else "no CUDA device found"
        raise EngineUnavailable(f"no CUDA GPU answered ({reason}); TensorRT needs an NVIDIA GPU and driver")
    return TensorRTToolkit(trt=trt, cudart=cudart, gpu_name=_gpu_name(cudart))


def _import_cudart(import_module: ImportModule) -> Any:
    # cuda-python 12.6+ names it cuda.bindings.runtime; older releases cuda.cudart.
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return import_module(name)
        except (ImportError, OSError):
            continue
    raise EngineUnavailable(f"cuda-python is not installed, TensorRT cannot get GPU memory; {install_hint()}")


def _failed(cudart: Any, error: Any) -> bool:
    return bool(error != cudart.cudaError_t.cudaSuccess)


def _error_name(cudart: Any, error: Any) -> str:
    return getattr(error, "name", str(error))


def _check(cudart: Any, result: tuple[Any, ...]) -> Any:
    """Unpack a cuda-python `(error, value...)` tuple, raising on a CUDA error."""
    error, *values = result
    if _failed(cudart, error):
        raise RuntimeError(f"CUDA call failed: {_error_name(cudart, error)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _gpu_name(cudart: Any, device: int = 0) -> str:
    properties = _check(cudart, cudart.cudaGetDeviceProperties(device))
    name = properties.name
    if isinstance(name, bytes | bytearray):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip()


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on; any change means a rebuild."""

    gpu_name: str
    tensorrt_version: str
    model_sha256: str
    graph_sha256: str  # the float graph TensorRT parses, derived from the model
    fp16: bool
    opt_batch: int
    max_batch: int

    @property
    def file_stem(self) -> str:
        # One file per model and precision: a new GPU or TensorRT replaces it instead of piling up.
        return f"{self.model_sha256[:16]}-{'fp16' if self.fp16 else 'fp32'}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """What changed since `recorded` (an earlier `to_json`), in words; empty when it still fits."""
        labels = {
            "gpu_name": "GPU",
            "tensorrt_version": "TensorRT version",
            "model_sha256": "model",
            "graph_sha256": "float graph",
            "fp16": "FP16 setting",
            "opt_batch": "batch size",
            "max_batch": "largest batch",
        }
        return [
            f"{label} changed ({recorded.get(field)!r} -> {value!r})"
            for field, label in labels.items()
            if recorded.get(field) != (value := getattr(self, field))
        ]


def tensorrt_graph(bundle: ModelBundle, fp16: bool) -> Path:
    """The float graph TensorRT builds from (fp16 or fp32), derived and cached on first use."""
    from catbreed_desktop.core.engines.float_graph import float_graph_path

    try:
        return float_graph_path(bundle, "fp16" if fp16 else "fp32")
    except ValueError as error:  # quantized ops in a pattern float_graph cannot turn back
        raise EngineUnavailable(f"TensorRT needs a float graph: {error}") from None


def make_engine_key(
    toolkit: TensorRTToolkit,
    bundle: ModelBundle,
    fp16: bool,
    batch_size: int,
    max_batch: int,
    *,
    graph: Path,
) -> EngineKey:
    """The key of the engine built from `graph` (see `tensorrt_graph`) for these settings."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    return EngineKey(
        gpu_name=toolkit.gpu_name,
        tensorrt_version=toolkit.version,
        model_sha256=bundle.model_sha256,
        graph_sha256=sha256_file(graph),
        fp16=bool(fp16),
        opt_batch=int(batch_size),
        max_batch=max(int(max_batch), int(batch_size)),
    )


def engine_cache_dir() -> Path:
    return paths.cache_dir() / "tensorrt"


class EngineCacheError(CatBreedError, OSError):
    """A built engine could not be stored in the cache that `trainer build-tensorrt` fills.

    An OSError too, as the storage error it wraps; alone on a command line it is one line.
    """


def engine_paths(key: EngineKey, folder: Path | None = None) -> tuple[Path, Path]:
    """The serialized engine file and the JSON recording its key."""
    folder = folder or engine_cache_dir()
    return folder / f"{key.file_stem}.engine", folder / f"{key.file_stem}.json"


def stale_reasons(key: EngineKey, folder: Path | None = None) -> list[str]:
    """Why the cached engine for `key` cannot be used; empty when it can."""
    engine_file, key_file = engine_paths(key, folder)
    try:
        if not engine_file.is_file() or engine_file.stat().st_size == 0:
            return ["no cached engine"]
    except OSError:  # a cache folder that cannot be searched
        return ["no cached engine"]
    try:
        recorded = json.loads(key_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return ["the cached engine's key file is missing or unreadable"]
    if not isinstance(recorded, dict):
        return ["the cached engine's key file is not a JSON object"]
    return key.differences(recorded)


def _build(build: Callable[[], bytes], reasons: list[str]) -> bytes:
    log.info("building a TensorRT engine (%s); this takes a few minutes once", "; ".join(reasons))
    serialized = build()
    if not serialized:
        raise EngineUnavailable("TensorRT produced an empty engine")
    return bytes(serialized)


def _store(key: EngineKey, serialized: bytes, folder: Path | None) -> Path:
    engine_file, key_file = engine_paths(key, folder)
    engine_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_file, serialized)
    # The key is written last, so an interrupted build never looks like a valid cache entry.
    atomic_write_text(key_file, json.dumps(key.to_json(), indent=2) + "\n")
    return engine_file


def ensure_engine_file(
    key: EngineKey, build: Callable[[], bytes], folder: Path | None = None, force: bool = False
) -> Path:
    """The cached engine for `key`, calling `build` (which returns the serialized engine) when stale.

    Raises `EngineCacheError` when the cache cannot be written: this is the call that fills it.
    """
    reasons = ["rebuild requested"] if force else stale_reasons(key, folder)
    if not reasons:
        return engine_paths(key, folder)[0]
    serialized = _build(build, reasons)
    try:
        return _store(key, serialized, folder)
    except OSError as error:
        raise EngineCacheError(
            f"cannot store the TensorRT engine in {engine_paths(key, folder)[0].parent}: "
            f"{error.strerror or error}"
        ) from None


def engine_bytes(
    key: EngineKey, build: Callable[[], bytes], folder: Path | None = None, force: bool = False
) -> bytes:
    """The serialized engine for `key`: the cached one when it is fresh, else built and cached.

    A cache that cannot be read or written costs a build per run, with a warning, never the engine:
    the photos are classified all the same.
    """
    reasons = ["rebuild requested"] if force else stale_reasons(key, folder)
    if not reasons:
        try:
            return engine_paths(key, folder)[0].read_bytes()
        except OSError as error:
            reasons = [f"the cached engine cannot be read ({error.strerror or error})"]
    serialized = _build(build, reasons)
    try:
        _store(key, serialized, folder)
    except OSError as error:
        log.warning(
            "cannot write the TensorRT engine cache in %s (%s); the engine is built again on each run until it can be",
            engine_paths(key, folder)[0].parent,
            error.strerror or error,
        )
    return serialized


def build_serialized_engine(
    toolkit: TensorRTToolkit, bundle: ModelBundle, key: EngineKey, graph: Path
) -> bytes:
    """Parse the float `graph` into a strongly typed network; build it with a batch profile (1, opt, max)."""
    trt = toolkit.trt
    logger = toolkit.logger()
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is None:
        raise EngineUnavailable(f"TensorRT {toolkit.version} cannot build strongly typed networks")
    # Precision comes from the graph's types (see the module docstring): no FP16 builder flag,
    # which TensorRT refuses for strongly typed networks anyway. Networks are explicit-batch.
    network = builder.create_network(1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineUnavailable(f"TensorRT cannot parse {graph}: {errors or 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    size = bundle.preprocessing.size
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME, (1, 3, size, size), (key.opt_batch, 3, size, size), (key.max_batch, 3, size, size)
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineUnavailable(f"TensorRT could not build an engine for {graph} (see its log)")
    return bytes(serialized)


def build_tensorrt_engine(
    bundle: ModelBundle,
    fp16: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    force: bool = False,
    toolkit: TensorRTToolkit | None = None,
) -> Path:
    """Build (or reuse) the cached TensorRT engine for a bundle and return its file."""
    toolkit = toolkit or load_toolkit()
    graph = tensorrt_graph(bundle, fp16)
    key = make_engine_key(toolkit, bundle, fp16, batch_size, max_batch, graph=graph)
    return ensure_engine_file(key, lambda: build_serialized_engine(toolkit, bundle, key, graph), force=force)


class TensorRTEngine(Engine):
    """A cached TensorRT engine with device buffers sized for the largest batch."""

    def __init__(
        self,
        bundle: ModelBundle,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fp16: bool = False,
        max_batch: int = DEFAULT_MAX_BATCH,
        toolkit: TensorRTToolkit | None = None,
    ) -> None:
        super().__init__(bundle)
        self._toolkit = toolkit or load_toolkit()
        self._buffers: dict[str, int] = {}
        self._stream: Any = None
        trt, cudart = self._toolkit.trt, self._toolkit.cudart
        self.graph_path = tensorrt_graph(bundle, fp16)
        self.graph_precision = "fp16" if fp16 else "fp32"
        key = make_engine_key(self._toolkit, bundle, fp16, batch_size, max_batch, graph=self.graph_path)
        self.max_batch = key.max_batch
        self.provider = ENGINE_TITLES[TENSORRT] + (" FP16" if fp16 else "")

        def build() -> bytes:
            return build_serialized_engine(self._toolkit, bundle, key, self.graph_path)

        self._runtime = trt.Runtime(self._toolkit.logger())
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes(key, build))
        if self._engine is None:  # a damaged or foreign cache file: build once more
            self._engine = self._runtime.deserialize_cuda_engine(engine_bytes(key, build, force=True))
        if self._engine is None:
            raise EngineUnavailable(f"TensorRT cannot load the engine it built for {self.graph_path}")
        self._context = self._engine.create_execution_context()

        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._output_names = tuple(sorted(outputs, key=lambda n: n != LOGITS_NAME))
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        try:
            self._stream = _check(cudart, cudart.cudaStreamCreate())
            size = bundle.preprocessing.size
            per_photo = {INPUT_NAME: 3 * size * size}
            for name in self._output_names:
                per_photo[name] = int(np.prod(tuple(self._engine.get_tensor_shape(name))[1:]))
            for name, count in per_photo.items():
                nbytes = count * self.max_batch * self._dtypes[name].itemsize
                self._buffers[name] = _check(cudart, cudart.cudaMalloc(nbytes))
                self._context.set_tensor_address(name, int(self._buffers[name]))
        except Exception:
            self.close()
            raise

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        array = check_batch(batch, self.bundle)
        parts = [self._run_chunk(array[i : i + self.max_batch]) for i in range(0, len(array), self.max_batch)]
        return {name: np.concatenate([part[name] for part in parts]) for name in self._output_names}

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        cudart = self._toolkit.cudart
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        chunk = np.ascontiguousarray(chunk, dtype=self._dtypes[INPUT_NAME])
        if not self._context.set_input_shape(INPUT_NAME, tuple(chunk.shape)):
            raise RuntimeError(f"TensorRT refused input shape {chunk.shape}")
        _check(
            cudart,
            cudart.cudaMemcpyAsync(
                self._buffers[INPUT_NAME], chunk.ctypes.data, chunk.nbytes, to_device, self._stream
            ),
        )
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT inference failed (see its log)")
        results = {}
        for name in self._output_names:
            host = np.empty(tuple(self._context.get_tensor_shape(name)), dtype=self._dtypes[name])
            _check(
                cudart,
                cudart.cudaMemcpyAsync(
                    host.ctypes.data, self._buffers[name], host.nbytes, to_host, self._stream
                ),
            )
            results[name] = host
        _check(cudart, cudart.cudaStreamSynchronize(self._stream))
        return results

    def close(self) -> None:
        cudart = self._toolkit.cudart
        for pointer in self._buffers.values():
            cudart.cudaFree(pointer)
        self._buffers.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
