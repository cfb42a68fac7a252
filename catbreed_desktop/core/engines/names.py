"""The engines' names and default batch size, defined once for the engine chooser, the listing, the command
line, the settings and the trainer.

`ENGINE_NAMES` are the engines on this machine, in the order `create_engine(bundle, "auto")` tries
them: the GPU engines (`GPU_ENGINES`, fastest first), then the CPU engines (`CPU_ENGINES`, the
default first); `REMOTE_ENGINES` run on a server (Triton) and are used only when asked for by
name, since they need its address and send the photos' pixels to it; `PREFERENCES` is what may be
asked for (`--engine`, the settings' engine); `ENGINE_TITLES` is what people read. `EngineName` and
`Preference` are their types; `as_preference` turns a string from outside (a file, a flag) into one.
Only `typing` is imported here, so any module can use the names cheaply.
"""

from __future__ import annotations

from typing import Final, Literal

EngineName = Literal["tensorrt", "tensorrt-rtx", "cuda", "cpu", "openvino", "triton"]
Preference = Literal["auto", "tensorrt", "tensorrt-rtx", "cuda", "cpu", "openvino", "triton"]

AUTO: Final = "auto"
TENSORRT: Final = "tensorrt"
TENSORRT_RTX: Final = "tensorrt-rtx"
CUDA: Final = "cuda"
CPU: Final = "cpu"
OPENVINO: Final = "openvino"
TRITON: Final = "triton"

GPU_ENGINES: tuple[EngineName, ...] = (TENSORRT, TENSORRT_RTX, CUDA)
# ONNX Runtime stays the CPU default: OpenVINO was no faster at batch 8 and agreed on 99.37 % of
# the Oxford photos' top-1, short of the bar for replacing it (bench/bench_cpu_engines.py, README).
CPU_ENGINES: tuple[EngineName, ...] = (CPU, OPENVINO)
ENGINE_NAMES: tuple[EngineName, ...] = (*GPU_ENGINES, *CPU_ENGINES)
REMOTE_ENGINES: tuple[EngineName, ...] = (TRITON,)
PREFERENCES: tuple[Preference, ...] = (AUTO, *ENGINE_NAMES, *REMOTE_ENGINES)
ENGINE_TITLES: dict[EngineName, str] = {
    TENSORRT: "TensorRT",
    TENSORRT_RTX: "TensorRT for RTX",
    CUDA: "ONNX Runtime CUDA",
    CPU: "ONNX Runtime CPU",
    OPENVINO: "OpenVINO CPU",
    TRITON: "Triton Inference Server",
}

# Photos per engine call unless a setting or --batch-size says otherwise.
DEFAULT_BATCH_SIZE = 8


def as_preference(name: str) -> Preference:
    """`name` as an engine preference; ValueError when it names none."""
    for known in PREFERENCES:
        if name == known:
            return known
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(PREFERENCES)}")
