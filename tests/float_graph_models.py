"""Tiny ONNX models for the float-graph tests, and what the tests compare between graphs.

The model's weights are multiples of 2**-6 with 127 steps at most, which int8 holds exactly, so a
dequantized graph must reproduce the float original to rounding error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

SIZE = 8
LABELS = ("a", "b", "c", "d", "e")
STEP = 2.0**-6  # int8 holds k * STEP exactly for |k| <= 127 once a channel reaches 127 steps


def exact_weights(rng: np.random.Generator, shape: tuple[int, ...], channel_axis: int) -> np.ndarray:
    """Random multiples of STEP whose every output channel reaches +-127 steps (so scale == STEP)."""
    steps = rng.integers(-100, 101, size=shape)
    index = [0] * len(shape)
    for channel in range(shape[channel_axis]):
        index[channel_axis] = channel
        steps[tuple(index)] = 127 if channel % 2 else -127
    return (steps * STEP).astype(np.float32)


def tiny_model(seed: int = 0) -> onnx.ModelProto:
    """Patchify Conv -> tokens -> MatMul + Add -> LayerNorm -> self-attention-ish Softmax -> MatMul -> mean."""
    rng = np.random.default_rng(seed)
    weights = {
        "patch.weight": exact_weights(rng, (4, 3, 2, 2), 0),
        "patch.bias": rng.normal(size=4).astype(np.float32),
        "tokens.shape": np.array([0, 4, -1], np.int64),
        "dense.weight": exact_weights(rng, (4, 6), 1),
        "dense.bias": rng.normal(size=6).astype(np.float32),
        "norm.scale": (1 + 0.1 * rng.normal(size=6)).astype(np.float32),
        "norm.bias": (0.1 * rng.normal(size=6)).astype(np.float32),
        "head.weight": exact_weights(rng, (6, 5), 1),
        "head.bias": rng.normal(size=5).astype(np.float32),
        "token.axis": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node(
            "Conv",
            ["pixel_values", "patch.weight", "patch.bias"],
            ["patches"],
            kernel_shape=[2, 2],
            strides=[2, 2],
        ),
        helper.make_node("Reshape", ["patches", "tokens.shape"], ["channels_first"]),
        helper.make_node("Transpose", ["channels_first"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "dense.weight"], ["dense"]),
        helper.make_node("Add", ["dense", "dense.bias"], ["dense_biased"]),
        helper.make_node(
            "LayerNormalization", ["dense_biased", "norm.scale", "norm.bias"], ["normed"], axis=-1
        ),
        helper.make_node("Transpose", ["normed"], ["normed_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["normed", "normed_t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attention"], axis=-1),
        helper.make_node("MatMul", ["attention", "normed"], ["mixed"]),
        helper.make_node("ReduceMean", ["mixed", "token.axis"], ["embedding"], keepdims=0),
        helper.make_node("MatMul", ["embedding", "head.weight"], ["head"]),
        helper.make_node("Add", ["head", "head.bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 6]),
        ],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def quantized(
    model: onnx.ModelProto, folder: Path, per_channel: bool = True, weight_type=QuantType.QInt8
) -> onnx.ModelProto:
    source, target = folder / "float.onnx", folder / "int8.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(source))
    quantize_dynamic(source, target, per_channel=per_channel, weight_type=weight_type)
    return onnx.load(str(target))


def run(model: onnx.ModelProto | Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    content = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"pixel_values": batch}), strict=True))


def pixels(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, SIZE, SIZE)).astype(np.float32)


def op_types(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def signature(model: onnx.ModelProto) -> list[tuple]:
    """Names, element types and dims (numbers or symbolic names) of the graph inputs and outputs."""

    def describe(value: onnx.ValueInfoProto) -> tuple:
        tensor = value.type.tensor_type
        dims = tuple(dim.dim_param or dim.dim_value for dim in tensor.shape.dim)
        return value.name, tensor.elem_type, dims

    return [tuple(map(describe, model.graph.input)), tuple(map(describe, model.graph.output))]


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    types.update({tensor.name: tensor.data_type for tensor in model.graph.initializer})
    return types
