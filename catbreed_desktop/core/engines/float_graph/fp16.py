"""float32 -> float16: a float graph as fp16 weights and compute for the GPU engines.

`to_float16` keeps float32 inputs and outputs, and leaves the numerically sensitive ops
(LayerNormalization, Softmax, reductions) in float32 behind casts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from catbreed_desktop.core.engines.float_graph.onnx_edit import all_names, replace, subgraphs, unique_name

log = logging.getLogger(__name__)

# Kept in float32 by `to_float16`: mean/variance reductions and exponentials overflow or lose
# too much in fp16 (DINOv2's residual stream has channels in the hundreds, whose squares exceed
# fp16's 65504). Erf is not here on purpose: it is bounded by 1, so fp16 loses nothing that
# matters, and casts around it would stop ONNX Runtime fusing Div-Erf-Add-Mul-Mul into one Gelu.
DEFAULT_KEEP_FP32_OPS = (
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "GroupNormalization",
    "InstanceNormalization",
    "BatchNormalization",
)

# Inputs that the ONNX spec types as float32 whatever the data type is (Resize's `scales`).
_FLOAT32_ONLY_INPUTS = {"Resize": (2,)}

# Ops that read only the shape of their input, whatever its type: no Cast is needed in front.
_ANY_TYPE_READERS = frozenset({"Shape", "Size"})

_FP16_MAX = float(np.finfo(np.float16).max)


def to_float16(
    model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS
) -> onnx.ModelProto:
    """A copy of the float32 `model` computing in fp16, with float32 graph inputs and outputs.

    Every float32 tensor becomes fp16 except those read or written by `keep_fp32_ops` nodes and by
    nodes outside the default ONNX domain, which stay float32 behind Cast nodes (one Cast per
    tensor and direction, shared by every reader, placed so the graph stays topologically
    sorted). Weights read only by kept nodes stay float32. Finite weights beyond fp16's range are
    clamped to +-65504 rather than becoming infinite.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    for node in graph.node:
        if subgraphs(node):
            raise ValueError(
                f"node {node.name!r} ({node.op_type}) has a subgraph; to_float16 handles flat graphs only"
            )
    keep = frozenset(keep_fp32_ops)
    types = _element_types(result)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    graph_outputs = {value.name for value in graph.output}
    taken = all_names(graph)
    floats = {name for name, element in types.items() if element == TensorProto.FLOAT}

    def in_fp16(node: onnx.NodeProto) -> bool:
        return node.domain in ("", "ai.onnx") and node.op_type not in keep

    def wanted(node: onnx.NodeProto, index: int) -> int:
        if in_fp16(node) and index not in _FLOAT32_ONLY_INPUTS.get(node.op_type, ()):
            return TensorProto.FLOAT16
        return TensorProto.FLOAT

    # The type each float tensor has in the new graph; graph inputs stay float32.
    current: dict[str, int] = {name: TensorProto.FLOAT for name in floats}
    # A float32 weight read only as fp16 becomes fp16; read both ways, it gets an fp16 twin.
    readers: dict[str, set[int]] = defaultdict(set)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in initializers and name in floats:
                readers[name].add(wanted(node, index))
    twins: dict[str, str] = {}
    for name, wants in readers.items():
        if wants == {TensorProto.FLOAT16} and name not in graph_outputs:
            _to_fp16_tensor(initializers[name])
            current[name] = TensorProto.FLOAT16
        elif TensorProto.FLOAT16 in wants:
            twin = TensorProto()
            twin.CopyFrom(initializers[name])
            twin.name = twins[name] = unique_name(f"{name}_fp16", taken)
            _to_fp16_tensor(twin)
            graph.initializer.append(twin)
            current[twin.name] = TensorProto.FLOAT16

    nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    renamed: dict[str, str] = {}  # fp16 graph outputs: the producer writes the new name, a Cast the old

    def cast(name: str, target: int) -> str:
        if (name, target) not in casts:
            output = unique_name(f"{name}_{'fp16' if target == TensorProto.FLOAT16 else 'fp32'}", taken)
            nodes.append(
                helper.make_node(
                    "Cast", [name], [output], name=unique_name(f"{output}_cast", taken), to=target
                )
            )
            casts[(name, target)] = output
        return casts[(name, target)]

    for node in graph.node:
        for index, name in enumerate(node.input):
            name = renamed.get(name, name)
            node.input[index] = name
            if name not in current or node.op_type in _ANY_TYPE_READERS:
                continue  # not a float tensor, an omitted optional input, or only its shape is read
            target = wanted(node, index)
            if target == TensorProto.FLOAT16 and name in twins:
                name = twins[name]
            node.input[index] = name if current[name] == target else cast(name, target)
        fp16 = in_fp16(node)
        if fp16:
            _retype_attributes(node)
        after: list[onnx.NodeProto] = []
        for index, name in enumerate(node.output):
            if name not in floats or not fp16:
                continue
            if name in graph_outputs:
                inner = renamed[name] = node.output[index] = unique_name(f"{name}_fp16", taken)
                current[inner] = TensorProto.FLOAT16
                after.append(
                    helper.make_node(
                        "Cast",
                        [inner],
                        [name],
                        name=unique_name(f"{name}_cast", taken),
                        to=TensorProto.FLOAT,
                    )
                )
            else:
                current[name] = TensorProto.FLOAT16
        nodes.append(node)
        nodes.extend(after)

    replace(graph.node, nodes)
    for value in graph.value_info:
        if value.name in current and value.type.HasField("tensor_type"):
            value.type.tensor_type.elem_type = current[value.name]
    onnx.checker.check_model(result)
    # Strict inference with type checks names any node whose input types no longer agree.
    onnx.shape_inference.infer_shapes(result, check_type=True, strict_mode=True)
    return result


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor in the graph, by ONNX type inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        value.name: value.type.tensor_type.elem_type
        for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type
    }
    types.update({tensor.name: tensor.data_type for tensor in model.graph.initializer})
    unknown = [name for node in model.graph.node for name in node.output if name and name not in types]
    if unknown:
        raise ValueError(
            f"ONNX type inference cannot tell the type of {unknown[0]!r}; to_float16 needs every type"
        )
    return types


def _to_fp16_tensor(tensor: TensorProto) -> None:
    array = numpy_helper.to_array(tensor)
    finite = np.isfinite(array)
    if np.any(np.abs(array[finite]) > _FP16_MAX):
        log.info("clamping %s to the fp16 range", tensor.name)
    array = np.where(finite, np.clip(array, -_FP16_MAX, _FP16_MAX), array)
    tensor.CopyFrom(numpy_helper.from_array(array.astype(np.float16), tensor.name))


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Make an fp16 node produce fp16 where an attribute, not an input, sets its output type."""
    if node.op_type == "Cast":
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
    elif node.op_type in ("Constant", "ConstantOfShape"):
        for attribute in list(node.attribute):
            if attribute.name == "value" and attribute.t.data_type == TensorProto.FLOAT:
                _to_fp16_tensor(attribute.t)
            elif attribute.name in ("value_float", "value_floats"):
                values = np.asarray(helper.get_attribute_value(attribute), dtype=np.float16)
                node.attribute.remove(attribute)
                node.attribute.append(
                    helper.make_attribute("value", numpy_helper.from_array(values, "value"))
                )
    elif node.op_type in (
        "EyeLike",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
    ):
        raise ValueError(
            f"node {node.name!r} ({node.op_type}) sets its own float type; to_float16 does not handle it"
        )
