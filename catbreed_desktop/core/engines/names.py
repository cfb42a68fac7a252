"""The engines' names, defined once for the engine chooser, the listing, the command line and the settings.

`ENGINE_NAMES` are the engines in the order `create_engine(bundle, "auto")` tries them;
`PREFERENCES` is what may be asked for (`--engine`, the settings' engine); `ENGINE_TITLES` is what
people read. Nothing is imported here, so any module can use the names cheaply.
"""

from __future__ import annotations

AUTO = "auto"
TENSORRT = "tensorrt"
CUDA = "cuda"
CPU = "cpu"

ENGINE_NAMES = (TENSORRT, CUDA, CPU)
PREFERENCES = (AUTO, *ENGINE_NAMES)
ENGINE_TITLES = {TENSORRT: "TensorRT", CUDA: "ONNX Runtime CUDA", CPU: "ONNX Runtime CPU"}
