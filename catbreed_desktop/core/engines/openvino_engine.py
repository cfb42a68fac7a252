"""OpenVINO engine: the bundle's own ONNX graph (int8 for the shipped one) compiled by OpenVINO for the CPU.

OpenVINO reads the ONNX file directly and runs the static int8 QDQ graph on its own int8 kernels.
Its outputs are held to the ONNX Runtime CPU engine's: the same named outputs (`logits`, and the
`embedding` the not-a-cat check reads), the same checks on their shapes, the same calibrated
softmax. Two settings keep it there: `INFERENCE_PRECISION_HINT` is f32, since on CPUs with bf16
support OpenVINO otherwise runs the float parts of the graph in bf16 (measured on an AMD EPYC:
logits 0.3 apart from ONNX Runtime's, against 0.2 in f32, on noise inputs).

Compiling takes about a second and a half for the shipped model on 2 cores; OpenVINO caches the
compiled model in `cache_dir()/openvino` (its `CACHE_DIR`, keyed by OpenVINO itself on the model,
the device and the settings), so later starts take a fraction of that. `hint` is OpenVINO's
`PERFORMANCE_HINT`: "latency" runs a batch as one request on every thread; "throughput" splits
it across the parallel requests (streams) OpenVINO chooses. openvino is imported only here, and
its absence is an `EngineUnavailable` naming the extra that installs it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import INPUT_NAME, LOGITS_NAME, BundleError, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, check_batch, check_outputs
from catbreed_desktop.core.engines.names import ENGINE_TITLES, OPENVINO
from catbreed_desktop.core.install_hints import install_extra_command

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
DEFAULT_HINT = "latency"
DEVICE = "CPU"

ImportModule = Callable[[str], ModuleType]


def load_openvino(import_module: ImportModule = importlib.import_module) -> Any:
    """The `openvino` module, or `EngineUnavailable` saying it is missing and how to install it."""
    try:
        return import_module("openvino")
    except (ImportError, OSError) as error:
        raise EngineUnavailable(
            f"OpenVINO is not installed or cannot load ({error}); {install_extra_command('openvino')}"
        ) from None


def openvino_version(openvino: Any) -> str:
    return str(getattr(openvino, "__version__", "?")).split("-", 1)[0]


def compiled_model_cache_dir() -> Path:
    folder = paths.cache_dir() / "openvino"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compile_config(threads: int | None, hint: str) -> dict[str, Any]:
    """The properties `compile_model` gets: the hint, f32 arithmetic, and a thread cap when given."""
    if hint not in HINTS:
        raise ValueError(f"unknown OpenVINO hint {hint!r}; use one of {', '.join(HINTS)}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[hint], "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoEngine(Engine):
    """A bundle's ONNX model compiled by OpenVINO for the CPU; `graph_path` overrides the file it runs."""

    def __init__(
        self,
        bundle: ModelBundle,
        threads: int | None = None,
        *,
        hint: str = DEFAULT_HINT,
        graph_path: Path | None = None,
        cache: bool = True,
        import_module: ImportModule = importlib.import_module,
    ) -> None:
        super().__init__(bundle)
        config = compile_config(threads, hint)
        openvino = load_openvino(import_module)
        self.graph_path = Path(graph_path or bundle.model_path)
        self.hint = hint
        self.version = openvino_version(openvino)
        core = openvino.Core()
        if DEVICE not in core.available_devices:
            raise EngineUnavailable(f"OpenVINO {self.version} found no CPU device it can run on")
        self.cache_dir = compiled_model_cache_dir() if cache else None
        if self.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        try:
            self._compiled = core.compile_model(str(self.graph_path), DEVICE, config)
        except Exception as error:  # OpenVINO raises RuntimeError and its own types alike
            raise BundleError(f"OpenVINO cannot compile {self.graph_path}: {error}") from None
        names = [output.get_any_name() for output in self._compiled.outputs]
        # Logits first, as ONNX Runtime lists the shipped model's outputs.
        self._output_names = tuple(sorted(names, key=lambda name: name != LOGITS_NAME))
        self.requests = max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # Plain requests, waited on from the calling thread, and never a Python callback (an
        # `AsyncInferQueue.set_callback`): OpenVINO runs a callback on its compiled model's
        # callback thread, and that thread may still hold the last reference to it after `wait`
        # has returned. Freeing a Python callable takes the GIL, and destroying the compiled model
        # (`close`, or dropping the engine) joins that thread while holding the GIL: a deadlock
        # that hung `catbreed engines --check` for good, now and then. Without Python objects in
        # OpenVINO's threads they never need the GIL; `wait` releases it meanwhile.
        self._requests: list[Any] = [self._compiled.create_infer_request() for _ in range(self.requests)]
        # An infer request is not thread-safe; one batch at a time goes through the requests.
        self._lock = threading.Lock()
        self.provider = f"{ENGINE_TITLES[OPENVINO]} ({hint})"
        self.active_providers: tuple[str, ...] = (f"OpenVINO {self.version} {DEVICE}",)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        array = check_batch(batch, self.bundle)
        chunks = np.array_split(array, min(self.requests, len(array)))
        with self._lock:
            started: list[Any] = []
            try:
                for request, chunk in zip(self._requests, chunks, strict=False):
                    request.start_async({INPUT_NAME: np.ascontiguousarray(chunk)})
                    started.append(request)
            finally:
                _wait_all(started)  # every started request, even when a later start failed
            # The requests' buffers are reused by their next job: copy the outputs out.
            parts = [
                {name: np.array(request.get_tensor(name).data, copy=True) for name in self._output_names}
                for request in started
            ]
        outputs = {name: np.concatenate([part[name] for part in parts]) for name in self._output_names}
        return check_outputs(outputs, self.bundle, len(array))

    def close(self) -> None:
        """Drop the compiled model and its requests, so their memory goes back before the engine does."""
        with self._lock:
            self._requests = []
            self._compiled = None


def _wait_all(requests: list[Any]) -> None:
    """Wait for every request (each `wait` releases the GIL), then raise the first failure, as `AsyncInferQueue.wait_all` does."""
    failures: list[Exception] = []
    for request in requests:
        try:
            request.wait()
        except Exception as error:  # OpenVINO raises RuntimeError and its own types alike
            failures.append(error)
    if failures:
        raise failures[0]
