"""The engines' names and default batch size, defined once for the engine chooser, the listing, the command
line, the settings and the trainer.

`ENGINE_NAMES` are the engines on this machine, in the order `create_engine(bundle, "auto")` tries
them; `REMOTE_ENGINES` run on a server (Triton) and are used only when asked for by name, since
they need its address and send the photos' pixels to it; `PREFERENCES` is what may be asked for
(`--engine`, the settings' engine); `ENGINE_TITLES` is what people read. `EngineName` and
`Preference` are their types; `as_preference` turns a string from outside (a file, a flag) into one.
Only `typing` is imported here, so any module can use the names cheaply.
"""

from __future__ import annotations

from typing import Final, Literal

EngineName = Literal["tensorrt", "cuda", "cpu", "triton"]
Preference = Literal["auto", "tensorrt", "cuda", "cpu", "triton"]

AUTO: Final = "auto"
TENSORRT: Final = "tensorrt"
CUDA: Final = "cuda"
CPU: Final = "cpu"
TRITON: Final = "triton"

ENGINE_NAMES: tuple[EngineName, ...] = (TENSORRT, CUDA, CPU)
REMOTE_ENGINES: tuple[EngineName, ...] = (TRITON,)
PREFERENCES: tuple[Preference, ...] = (AUTO, *ENGINE_NAMES, *REMOTE_ENGINES)
ENGINE_TITLES: dict[EngineName, str] = {
    TENSORRT: "TensorRT",
    CUDA: "ONNX Runtime CUDA",
    CPU: "ONNX Runtime CPU",
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
