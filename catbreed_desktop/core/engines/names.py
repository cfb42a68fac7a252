"""The engines' names and default batch size, defined once for the engine chooser, the listing, the command
line, the settings and the trainer.

`ENGINE_NAMES` are the engines on this machine, in the order `create_engine(bundle, "auto")` tries
them; `REMOTE_ENGINES` run on a server (Triton) and are used only when asked for by name, since
they need its address and send the photos' pixels to it; `PREFERENCES` is what may be asked for
(`--engine`, the settings' engine); `ENGINE_TITLES` is what people read. Nothing is imported here, so any module can use the names cheaply.
"""

from __future__ import annotations

AUTO = "auto"
TENSORRT = "tensorrt"
CUDA = "cuda"
CPU = "cpu"
TRITON = "triton"

ENGINE_NAMES = (TENSORRT, CUDA, CPU)
REMOTE_ENGINES = (TRITON,)
PREFERENCES = (AUTO, *ENGINE_NAMES, *REMOTE_ENGINES)
ENGINE_TITLES = {
    TENSORRT: "TensorRT",
    CUDA: "ONNX Runtime CUDA",
    CPU: "ONNX Runtime CPU",
    TRITON: "Triton Inference Server",
}

# Photos per engine call unless a setting or --batch-size says otherwise.
DEFAULT_BATCH_SIZE = 8
