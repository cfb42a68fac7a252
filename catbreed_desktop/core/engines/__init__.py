"""Inference engines and the one place that picks which of them runs a bundle.

`create_engine(bundle, "auto")` tries TensorRT, then ONNX Runtime on CUDA, then ONNX Runtime on
CPU, and records in `engine.fallback_notes` why each faster one was passed over. Asking for
"tensorrt" or "cuda" explicitly never falls back: it raises `EngineUnavailable` instead.

The GPU engines run a float graph derived from the bundle's model (`float_graph`): fp16 on ONNX
Runtime CUDA, fp16 or fp32 (`fp16=`) on TensorRT. The CPU engine runs the bundle's own model
(int8 for the shipped one) unless `graph=` asks for a derived one. "triton" runs the model on a
Triton Inference Server (`server=` its URL); "auto" never picks it. `inventory.list_engines` says,
without starting anything slow, which engine could run and on which graph.
"""

from __future__ import annotations

from catbreed_desktop.core.bundle import ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, softmax
from catbreed_desktop.core.engines.names import (
    AUTO,
    CPU,
    CUDA,
    ENGINE_NAMES,
    ENGINE_TITLES,
    PREFERENCES,
    TENSORRT,
    TRITON,
)
from catbreed_desktop.core.engines.onnx_runtime import GRAPHS, OnnxRuntimeEngine
from catbreed_desktop.core.engines.tensorrt import TensorRTEngine, build_tensorrt_engine

__all__ = [
    "ENGINE_NAMES",
    "ENGINE_TITLES",
    "GRAPHS",
    "PREFERENCES",
    "Engine",
    "EngineUnavailable",
    "OnnxRuntimeEngine",
    "TensorRTEngine",
    "build_tensorrt_engine",
    "create_engine",
    "softmax",
]


def create_engine(
    bundle: ModelBundle,
    preference: str = AUTO,
    batch_size: int = 8,
    fp16: bool = True,
    *,
    threads: int | None = None,
    graph: str | None = None,
    server: str | None = None,
    server_timeout: float | None = None,
) -> Engine:
    """The engine for `bundle` that `preference` (auto|tensorrt|cuda|cpu|triton) asks for.

    `threads` caps ONNX Runtime's CPU threads (None lets it use every core). `graph` ("bundle",
    "fp32" or "fp16") overrides which graph the ONNX Runtime engines run (default: fp16 on CUDA,
    the bundle's own model on CPU); TensorRT's graph follows `fp16`. `server` is the Triton server's
    URL, needed by "triton" and ignored by the others; `server_timeout` the deadline in seconds of
    each of its requests (default `triton_client.DEFAULT_TIMEOUT_S`).
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
        from catbreed_desktop.core.engines.triton_client import TritonEngine

        if server_timeout is None:
            return TritonEngine(bundle, server)
        return TritonEngine(bundle, server, timeout_s=server_timeout)
    if preference == TENSORRT:
        return TensorRTEngine(bundle, batch_size=batch_size, fp16=fp16)
    if preference in (CUDA, CPU):
        return OnnxRuntimeEngine(bundle, device=preference, threads=threads, graph=graph)

    notes: list[str] = []
    attempts = (
        (TENSORRT, lambda: TensorRTEngine(bundle, batch_size=batch_size, fp16=fp16)),
        (CUDA, lambda: OnnxRuntimeEngine(bundle, device=CUDA, threads=threads, graph=graph)),
    )
    for name, start in attempts:
        try:
            engine = start()
        except EngineUnavailable as reason:
            notes.append(f"{ENGINE_TITLES[name]} skipped: {reason}")
            continue
        except (RuntimeError, OSError) as failure:  # a GPU that fails mid-start must not stop the app
            notes.append(f"{ENGINE_TITLES[name]} failed to start: {failure}")
            continue
        # The engine's own notes (compute it found on the CPU, say) follow the skipped ones.
        engine.fallback_notes = notes + engine.fallback_notes
        return engine
    engine = OnnxRuntimeEngine(bundle, device=CPU, threads=threads, graph=graph)
    engine.fallback_notes = notes + engine.fallback_notes
    return engine
