"""The one place that picks which engine runs a bundle: `create_engine`.

`create_engine(bundle, "auto")` tries TensorRT, then TensorRT for RTX, then ONNX Runtime on CUDA,
then the CPU engines in `CPU_ENGINES` order (ONNX Runtime, then OpenVINO when ONNX Runtime is not
installed), and records in `engine.fallback_notes` why each faster one was passed over. Asking for
an engine by name never falls back: it raises `EngineUnavailable` instead.

The GPU engines run a float graph derived from the bundle's model (`float_graph`): fp16 on ONNX
Runtime CUDA and TensorRT for RTX, fp16 or fp32 (`fp16=`) on TensorRT. The CPU engines run the
bundle's own model (int8 for the shipped one) unless `graph=` asks for a derived one. "triton" runs the model on a
Triton Inference Server (`server=` its URL); "auto" never picks it. `inventory.list_engines` says,
without starting anything slow, which engine could run and on which graph.
"""

from __future__ import annotations

from catbreed_desktop.core.bundle import ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable
from catbreed_desktop.core.engines.names import (
    AUTO,
    CPU_ENGINES,
    DEFAULT_BATCH_SIZE,
    ENGINE_TITLES,
    GPU_ENGINES,
    OPENVINO,
    PREFERENCES,
    TENSORRT,
    TENSORRT_RTX,
    TRITON,
    EngineName,
    Preference,
)
from catbreed_desktop.core.engines.onnx_runtime import GRAPHS, OnnxRuntimeEngine, graph_for
from catbreed_desktop.core.engines.tensorrt import TensorRTEngine


def create_engine(
    bundle: ModelBundle,
    preference: Preference = AUTO,
    batch_size: int = DEFAULT_BATCH_SIZE,
    fp16: bool = True,
    *,
    threads: int | None = None,
    graph: str | None = None,
    server: str | None = None,
    server_timeout: float | None = None,
) -> Engine:
    """The engine for `bundle` that `preference` (auto, a name in `ENGINE_NAMES`, or triton) asks for.

    `threads` caps the CPU engines' threads (None lets them use every core). `graph` ("bundle",
    "fp32" or "fp16") overrides which graph the ONNX Runtime and OpenVINO engines run (default: fp16
    on CUDA, the bundle's own model on CPU); TensorRT's graph follows `fp16`. `server` is the Triton
    server's URL, needed by "triton" and ignored by the others; `server_timeout` the deadline in
    seconds of each of its requests (default `triton.client.DEFAULT_TIMEOUT_S`).
    """
    if preference not in PREFERENCES:
        raise ValueError(f"unknown engine {preference!r}; choose one of {', '.join(PREFERENCES)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    if graph is not None and graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    if preference == TRITON:
        if not server:
            raise EngineUnavailable("the Triton engine needs the server's URL (--server http://HOST:PORT)")
        from catbreed_desktop.core.engines.triton.client import TritonEngine

        if server_timeout is None:
            return TritonEngine(bundle, server)
        return TritonEngine(bundle, server, timeout_s=server_timeout)

    def start(name: EngineName) -> Engine:
        if name == TENSORRT:
            return TensorRTEngine(bundle, batch_size=batch_size, fp16=fp16)
        if name == TENSORRT_RTX:
            from catbreed_desktop.core.engines.tensorrt_rtx import TensorRtRtxEngine

            return TensorRtRtxEngine(bundle, batch_size=batch_size)
        if name == OPENVINO:
            from catbreed_desktop.core.engines.openvino_engine import OpenVinoEngine

            return OpenVinoEngine(bundle, threads=threads, graph_path=graph_for(bundle, graph or "bundle"))
        return OnnxRuntimeEngine(bundle, device=name, threads=threads, graph=graph)

    if preference != AUTO:
        return start(preference)
    notes: list[str] = []
    for name in GPU_ENGINES:
        try:
            engine = start(name)
        except (EngineUnavailable, ImportError) as reason:  # ImportError: onnxruntime itself is missing
            notes.append(f"{ENGINE_TITLES[name]} skipped: {reason}")
            continue
        except (RuntimeError, OSError) as failure:  # a GPU that fails mid-start must not stop the app
            notes.append(f"{ENGINE_TITLES[name]} failed to start: {failure}")
            continue
        return _with_notes(engine, notes)
    # A CPU engine is passed over only when its runtime is missing: a model it cannot load is the
    # model's fault, and the next engine would only hide that error behind its own.
    missing: list[Exception] = []
    for name in CPU_ENGINES:
        try:
            engine = start(name)
        except (EngineUnavailable, ImportError) as reason:
            missing.append(reason)
            notes.append(f"{ENGINE_TITLES[name]} skipped: {reason}")
            continue
        return _with_notes(engine, notes)
    raise missing[0]


def _with_notes(engine: Engine, notes: list[str]) -> Engine:
    # The engine's own notes (compute it found on the CPU, say) follow the skipped ones.
    engine.fallback_notes = notes + engine.fallback_notes
    return engine
