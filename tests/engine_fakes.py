"""What the engine tests build or fake: an int8 colour bundle, and ONNX Runtime "on a CUDA GPU".

`make_int8_colour_bundle` quantizes the colour classifier with onnxruntime's own
`quantize_dynamic`, so its graph holds the DynamicQuantizeLinear -> MatMulInteger pattern of the
shipped model in miniature. `FakeCudaOnnxRuntime` replaces `onnxruntime.InferenceSession`: a
session asked for CUDA really runs on the CPU but reports CUDA as active and relabels its profile
as a GPU session's would read, with the op types in `on_cpu` left on the CPU provider.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from factories import COLOUR_LABELS, TINY_SPEC
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle, write_bundle

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def make_int8_colour_bundle(folder: Path) -> ModelBundle:
    """The colour classifier (mean colour -> MatMul + Add) dynamically quantized to int8, as a bundle."""
    size = TINY_SPEC.size
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], [EMBEDDING_NAME], axis=1),
            helper.make_node("MatMul", [EMBEDDING_NAME, "weights"], ["votes"]),
            helper.make_node("Add", ["votes", "bias"], [LOGITS_NAME]),
        ],
        "colour_classifier",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=[
            numpy_helper.from_array(np.eye(3, dtype=np.float32) * 4.0, "weights"),
            numpy_helper.from_array(np.zeros(3, dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source, quantized = (
        folder.parent / f"{folder.name}-float.onnx",
        folder.parent / f"{folder.name}-int8.onnx",
    )
    source.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(source))
    quantize_dynamic(source, quantized, per_channel=True, weight_type=QuantType.QInt8)
    return write_bundle(
        folder,
        quantized,
        labels=COLOUR_LABELS,
        architecture="test-colour-classifier-int8",
        preprocessing=TINY_SPEC,
        metrics={"accuracy": 1.0},
    )


class FakeCudaOnnxRuntime:
    """A stand-in for `onnxruntime.InferenceSession` on a machine with onnxruntime-gpu and a GPU.

    Records the model file and providers of every session it opens in `opened`.
    """

    def __init__(self, real_session_class: type, on_cpu: tuple[str, ...] = ()) -> None:
        self.real_session_class = real_session_class
        self.on_cpu = frozenset(on_cpu)
        self.opened: list[tuple[str, list[str]]] = []

    def __call__(self, path: str, sess_options: Any = None, providers: Any = None) -> Any:
        names = [p[0] if isinstance(p, tuple) else p for p in providers or [CPU]]
        self.opened.append((str(path), names))
        session = self.real_session_class(path, sess_options=sess_options, providers=[CPU])
        return _FakeCudaSession(session, self.on_cpu) if names[0] == CUDA else session


class _FakeCudaSession:
    def __init__(self, session: Any, on_cpu: frozenset[str]) -> None:
        self._session = session
        self._on_cpu = on_cpu

    def get_providers(self) -> list[str]:
        return [CUDA, CPU]

    def get_outputs(self) -> Any:
        return self._session.get_outputs()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.run(*args, **kwargs)

    def end_profiling(self) -> str:
        path = Path(self._session.end_profiling())
        events = json.loads(path.read_text(encoding="utf-8"))
        for event in events:
            args = event.get("args") or {}
            if "provider" in args and args.get("op_name") not in self._on_cpu:
                args["provider"] = CUDA
        path.write_text(json.dumps(events), encoding="utf-8")
        return str(path)
