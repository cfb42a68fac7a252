"""Inference engines and the one place that picks which of them runs a bundle (`choose`).

`names` holds the engines' names and defaults, `base` the `Engine` interface, `choose` picks one
(`create_engine`), and `inventory` lists them without starting any. One module per runtime:
`onnx_runtime`, `openvino_engine`, `tensorrt`, `tensorrt_rtx`; `triton/` runs the model on a
Triton Inference Server. The GPU engines run a float graph derived from the bundle (`float_graph/`).

The names below are re-exported lazily, so importing `engines.names` (which runs this file
first) stays cheap: no bundle, numpy or ONNX Runtime code until one of them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from catbreed_desktop.core.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, softmax
    from catbreed_desktop.core.engines.choose import create_engine
    from catbreed_desktop.core.engines.names import (
        CPU_ENGINES,
        ENGINE_NAMES,
        ENGINE_TITLES,
        GPU_ENGINES,
        PREFERENCES,
    )
    from catbreed_desktop.core.engines.onnx_runtime import GRAPHS, OnnxRuntimeEngine
    from catbreed_desktop.core.engines.tensorrt import TensorRTEngine, build_tensorrt_engine

__all__ = [
    "CPU_ENGINES",
    "ENGINE_NAMES",
    "ENGINE_TITLES",
    "GPU_ENGINES",
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
__getattr__ = lazy_exports(__name__, __all__, ("names", "base", "choose", "onnx_runtime", "tensorrt"))
