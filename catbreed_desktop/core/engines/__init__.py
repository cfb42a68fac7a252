"""Inference engines and the one place that picks which of them runs a bundle.

`create_engine(bundle, "auto")` tries TensorRT, then ONNX Runtime on CUDA, then ONNX Runtime on
CPU, and records in `engine.fallback_notes` why each faster one was passed over. Asking for
"tensorrt" or "cuda" explicitly never falls back: it raises `EngineUnavailable` instead.
"""

from __future__ import annotations

from catbreed_desktop.core.bundle import ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, softmax
from catbreed_desktop.core.engines.onnx_runtime import OnnxRuntimeEngine
from catbreed_desktop.core.engines.tensorrt import TensorRTEngine, build_tensorrt_engine

PREFERENCES = ("auto", "tensorrt", "cuda", "cpu")

__all__ = [
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
    preference: str = "auto",
    batch_size: int = 8,
    fp16: bool = False,
    *,
    threads: int | None = None,
) -> Engine:
    """The engine for `bundle` that `preference` (auto|tensorrt|cuda|cpu) asks for.

    `threads` caps ONNX Runtime's CPU threads (None lets it use every core).
    """
    if preference not in PREFERENCES:
        raise ValueError(f"unknown engine {preference!r}; choose one of {', '.join(PREFERENCES)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    if preference == "tensorrt":
        return TensorRTEngine(bundle, batch_size=batch_size, fp16=fp16)
    if preference == "cuda":
        return OnnxRuntimeEngine(bundle, device="cuda", threads=threads)
    if preference == "cpu":
        return OnnxRuntimeEngine(bundle, device="cpu", threads=threads)

    notes: list[str] = []
    attempts = (
        ("TensorRT", lambda: TensorRTEngine(bundle, batch_size=batch_size, fp16=fp16)),
        ("ONNX Runtime CUDA", lambda: OnnxRuntimeEngine(bundle, device="cuda", threads=threads)),
    )
    for name, start in attempts:
        try:
            engine = start()
        except EngineUnavailable as reason:
            notes.append(f"{name} skipped: {reason}")
            continue
        except (RuntimeError, OSError) as failure:  # a GPU that fails mid-start must not stop the app
            notes.append(f"{name} failed to start: {failure}")
            continue
        engine.fallback_notes = notes
        return engine
    engine = OnnxRuntimeEngine(bundle, device="cpu", threads=threads)
    engine.fallback_notes = notes
    return engine
