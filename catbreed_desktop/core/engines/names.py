"""The engines' names, defined once for the engine chooser, the listing, the command line and the settings.

`ENGINE_NAMES` are the engines on this machine, in the order `create_engine(bundle, "auto")` tries
them: the GPU engines (`GPU_ENGINES`, fastest first), then the CPU engines (`CPU_ENGINES`, the
default first); `REMOTE_ENGINES` run on a server (Triton) and are used only when asked for by
name, since they need its address and send the photos' pixels to it; `PREFERENCES` is what may be
asked for (`--engine`, the settings' engine); `ENGINE_TITLES` is what people read. Nothing is
imported here, so any module can use the names cheaply.
"""

from __future__ import annotations

AUTO = "auto"
TENSORRT = "tensorrt"
TENSORRT_RTX = "tensorrt-rtx"
CUDA = "cuda"
CPU = "cpu"
OPENVINO = "openvino"
TRITON = "triton"

GPU_ENGINES = (TENSORRT, TENSORRT_RTX, CUDA)
# ONNX Runtime stays the CPU default: OpenVINO was no faster at batch 8 and agreed on 99.37 % of
# the Oxford photos' top-1, short of the bar for replacing it (bench/bench_cpu_engines.py, README).
CPU_ENGINES = (CPU, OPENVINO)
ENGINE_NAMES = (*GPU_ENGINES, *CPU_ENGINES)
REMOTE_ENGINES = (TRITON,)
PREFERENCES = (AUTO, *ENGINE_NAMES, *REMOTE_ENGINES)
ENGINE_TITLES = {
    TENSORRT: "TensorRT",
    TENSORRT_RTX: "TensorRT for RTX",
    CUDA: "ONNX Runtime CUDA",
    CPU: "ONNX Runtime CPU",
    OPENVINO: "OpenVINO CPU",
    TRITON: "Triton Inference Server",
}
