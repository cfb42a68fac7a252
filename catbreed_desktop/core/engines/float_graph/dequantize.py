"""int8 -> float: a bundle's quantized model as the float graph its weights describe.

Two int8 forms exist. Bundles exported now are statically quantized in QDQ form
(onnxruntime's `quantize_static`): int8 weights behind DequantizeLinear, and activations rounded
by QuantizeLinear -> DequantizeLinear pairs with calibrated, constant scales. Older bundles are
dynamically quantized (`quantize_dynamic`): every linear layer is DynamicQuantizeLinear ->
MatMulInteger/ConvInteger -> Cast -> Mul(scale). Neither suits a GPU: the integer ops have no
CUDA kernels, so ONNX Runtime CUDA runs them on the CPU with a memcpy around each, and TensorRT
cannot parse them at all (it would take QDQ, but as its own int8 engine, not the fp16 one the app
builds).

`dequantize_model` folds each weight DequantizeLinear into a float initializer and removes the
activation pairs (QDQ), and rewrites each dynamic pattern back to MatMul/Conv on the dequantized
weights, W = (Wq - Wzp) * Wscale, keeping every other node, the opsets and the graph inputs and
outputs. The weights stay exactly the ones the CPU engine uses; only the activations are no
longer rounded to 8 bits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from catbreed_desktop.core.engines.float_graph.onnx_edit import (
    all_names,
    all_nodes,
    remove_where,
    replace,
    subgraphs,
    unique_name,
)
from catbreed_desktop.core.errors import CatBreedError

# Op types that compute on integers or (de)quantize; none of them may survive `dequantize_model`.
QUANTIZED_OP_TYPES = frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearMatMul",
        "QLinearConv",
        # onnxruntime contrib ops (com.microsoft) that quantize_dynamic or ORT's optimizer emit.
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeLSTM",
        "QAttention",
        "QGemm",
        "QOrderedMatMul",
    }
)


class UnsupportedQuantization(CatBreedError, ValueError):
    """A quantized node this module cannot turn back into float compute; the message names it.

    A ValueError too, which the engines catch to say that the GPU graph cannot be derived.
    """


def has_quantized_ops(model: onnx.ModelProto) -> bool:
    """True when any node of the model (subgraphs included) is an integer/quantization op."""
    return any(node.op_type in QUANTIZED_OP_TYPES for node in all_nodes(model.graph))


@dataclass(frozen=True)
class _IntegerPattern:
    """One MatMulInteger/ConvInteger with the nodes and constants quantize_dynamic put around it."""

    integer: onnx.NodeProto
    quantize: onnx.NodeProto  # DynamicQuantizeLinear(X) -> Xq, Xscale, Xzp
    cast: onnx.NodeProto  # int32 -> float
    scale_mul: onnx.NodeProto  # Xscale * Wscale
    output_mul: onnx.NodeProto  # float(int32) * (Xscale * Wscale): its output is the layer's
    weight: str
    weight_zero_point: str  # "" when absent (zero)
    weight_scale: str

    @property
    def activation(self) -> str:
        return str(self.quantize.input[0])


def dequantize_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing in float on the weights its int8 graph uses.

    Two quantized forms are turned back, in this order:

    * static QDQ (onnxruntime's `quantize_static`, `QuantFormat.QDQ`): every DequantizeLinear of a
      constant (int8 weights, int32 biases) is folded into a float initializer,
      W = (Wq - Wzp) * Wscale, per tensor, per axis or per block; every QuantizeLinear ->
      DequantizeLinear pair on an activation is removed, its readers reading the float tensor.
    * dynamic (`quantize_dynamic`): DynamicQuantizeLinear(X) -> MatMulInteger|ConvInteger(Xq, Wq,
      Xzp, Wzp) -> Cast -> Mul(., Xscale * Wscale) becomes MatMul|Conv(X, (Wq - Wzp) * Wscale)
      writing the Mul's output, so the bias Add and everything downstream are untouched.

    Quantize nodes, scale products and integer constants left unused go; every other node, the
    opsets and the graph inputs and outputs stay. Raises `UnsupportedQuantization` naming the node
    when a quantized op is in any other pattern, or inside a subgraph.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    for node in graph.node:
        inner = [n for sub in subgraphs(node) for n in all_nodes(sub) if n.op_type in QUANTIZED_OP_TYPES]
        if inner:
            raise UnsupportedQuantization(
                f"node {inner[0].name!r} ({inner[0].op_type}) sits in a subgraph of {node.name!r}; only "
                "top-level quantized MatMul/Conv can be turned back into float"
            )

    _fold_qdq(graph)
    _rewrite_integer_patterns(graph)

    leftover = [node for node in all_nodes(graph) if node.op_type in QUANTIZED_OP_TYPES]
    if leftover:
        raise UnsupportedQuantization(
            f"node {leftover[0].name!r} ({leftover[0].op_type}) is in a quantized pattern that cannot be "
            f"turned back into float compute ({len(leftover)} such node(s) in all)"
        )
    onnx.checker.check_model(result)
    return result


def _fold_qdq(graph: onnx.GraphProto) -> None:
    """Static QDQ back to float, in place: DequantizeLinear of constants folded, Q -> DQ pairs removed.

    A DequantizeLinear that fits neither form (one reading a QLinear op's output, or a pair whose
    two nodes disagree on scale, zero point or axis) is left for the leftover check to name.
    """
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output if output}
    graph_outputs = {output.name for output in graph.output}
    taken = all_names(graph)

    renamed: dict[str, str] = {}  # a DequantizeLinear's output -> the float tensor its readers now read
    replacements: dict[int, onnx.NodeProto] = {}  # id(DQ) -> an Identity, where the DQ wrote a graph output
    removed: set[int] = set()
    maybe_dead: set[int] = set()  # QuantizeLinear nodes: dropped once no DequantizeLinear reads them
    folded: dict[tuple[str, ...], str] = {}  # (input, scale, zero point, axis, block) -> float initializer
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        quantize = producers.get(source)
        if source in initializers:
            key = (source, *node.input[1:3], str(_axis(node)), str(_block_size(node)))
            if key not in folded:
                folded[key] = unique_name(source.removesuffix("_quantized") or source, taken)
                array = _dequantized_constant(node, initializers)
                graph.initializer.append(numpy_helper.from_array(array, folded[key]))
            target = folded[key]
        elif (
            quantize is not None
            and quantize.op_type == "QuantizeLinear"
            and _same_quantization(quantize, node, initializers)
        ):
            # The pair only rounds the activation to the int8 grid; without it the readers get the
            # float tensor the QuantizeLinear read, which is what a float graph computes.
            target = str(quantize.input[0])
            maybe_dead.add(id(quantize))
        else:
            continue
        output = str(node.output[0])
        if output in graph_outputs:
            replacements[id(node)] = helper.make_node(
                "Identity", [target], [output], name=unique_name(f"{output}_float", taken)
            )
        else:
            renamed[output] = target
            removed.add(id(node))
    if not renamed and not replacements:
        return

    def resolve(name: str) -> str:
        # A pair can quantize another pair's output again (requantization): follow to the float end.
        while name in renamed:
            name = renamed[name]
        return name

    for reader in all_nodes(graph):
        for index, name in enumerate(reader.input):
            if name in renamed:
                reader.input[index] = resolve(name)
    for identity in replacements.values():
        identity.input[0] = resolve(identity.input[0])
    nodes = [replacements.get(id(node), node) for node in graph.node if id(node) not in removed]
    _commit(graph, nodes, maybe_dead, initializers)


def _same_quantization(
    quantize: onnx.NodeProto, dequantize: onnx.NodeProto, initializers: dict[str, TensorProto]
) -> bool:
    """True when the DequantizeLinear undoes the QuantizeLinear's scale, zero point and axis exactly."""
    for index in (1, 2):
        a = quantize.input[index] if len(quantize.input) > index else ""
        b = dequantize.input[index] if len(dequantize.input) > index else ""
        if a == b:
            continue
        if not a or not b:
            # An omitted zero point is 0: the same as an explicit constant zero.
            present = a or b
            if index == 1 or present not in initializers:
                return False
            if np.any(numpy_helper.to_array(initializers[present]) != 0):
                return False
            continue
        if a not in initializers or b not in initializers:
            return False
        left, right = numpy_helper.to_array(initializers[a]), numpy_helper.to_array(initializers[b])
        if left.dtype != right.dtype or left.shape != right.shape or np.any(left != right):
            return False
    scale = quantize.input[1]
    per_tensor = scale in initializers and int(np.prod(initializers[scale].dims)) == 1
    return per_tensor or (
        _axis(quantize) == _axis(dequantize) and _block_size(quantize) == _block_size(dequantize)
    )


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _block_size(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "block_size"), 0)


def _dequantized_constant(node: onnx.NodeProto, initializers: dict[str, TensorProto]) -> np.ndarray:
    """DequantizeLinear of constants, as ONNX defines it: (x - zero point) * scale, in the scale's type."""

    def fail(reason: str) -> UnsupportedQuantization:
        return UnsupportedQuantization(f"DequantizeLinear node {node.name!r}: {reason}")

    quantized = numpy_helper.to_array(initializers[node.input[0]])
    if quantized.dtype.kind not in "iu":
        raise fail(f"its constant {node.input[0]!r} is {quantized.dtype}, not an integer type")
    scale_name = node.input[1]
    if scale_name not in initializers:
        raise fail(f"the scale {scale_name!r} of the constant {node.input[0]!r} is not a constant")
    scale = numpy_helper.to_array(initializers[scale_name])
    zero_point = np.zeros((), np.int64)
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in initializers:
            raise fail(f"the zero point {node.input[2]!r} is not a constant")
        zero_point = numpy_helper.to_array(initializers[node.input[2]]).astype(np.int64)
    axis, block = _axis(node), _block_size(node)

    def spread(values: np.ndarray) -> np.ndarray:
        """A per-tensor, per-axis or per-block constant shaped to broadcast against `quantized`."""
        if values.size == 1:
            return values.reshape(())
        if quantized.ndim == 0 or not -quantized.ndim <= axis < quantized.ndim:
            raise fail(f"axis {axis} does not fit a constant of shape {quantized.shape}")
        if block:
            return np.repeat(values, block, axis=axis).take(range(quantized.shape[axis]), axis=axis)
        if values.ndim != 1 or values.size != quantized.shape[axis]:
            raise fail(f"a scale or zero point of shape {values.shape} fits no axis of {quantized.shape}")
        shape = [1] * quantized.ndim
        shape[axis] = -1
        return values.reshape(shape)

    centred = quantized.astype(np.int64) - spread(zero_point)
    # float32 arithmetic as ONNX Runtime's kernel does it, then the scale's type (fp16 scales give fp16).
    dequantized: np.ndarray = (centred.astype(np.float32) * spread(scale).astype(np.float32)).astype(
        scale.dtype
    )
    return dequantized


def _rewrite_integer_patterns(graph: onnx.GraphProto) -> None:
    """quantize_dynamic's MatMulInteger/ConvInteger patterns back to MatMul/Conv, in place."""
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output if output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {output.name for output in graph.output}
    taken = all_names(graph)

    replacements: dict[int, onnx.NodeProto] = {}  # id(output Mul) -> the float node in its place
    removed: set[int] = set()
    maybe_dead: set[int] = set()  # quantize nodes and scale products: dropped once nothing reads them
    weights: dict[tuple[str, str, str, str], str] = {}  # (op, Wq, Wzp, Wscale) -> float weight
    for node in graph.node:
        if node.op_type not in ("MatMulInteger", "ConvInteger"):
            continue
        pattern = _match_integer_pattern(node, producers, consumers, initializers, graph_outputs)
        key = (node.op_type, pattern.weight, pattern.weight_zero_point, pattern.weight_scale)
        if key not in weights:
            weights[key] = unique_name(pattern.weight.removesuffix("_quantized") or pattern.weight, taken)
            graph.initializer.append(
                numpy_helper.from_array(_dequantized_weight(pattern, initializers), weights[key])
            )
        float_node = helper.make_node(
            "MatMul" if node.op_type == "MatMulInteger" else "Conv",
            [pattern.activation, weights[key]],
            [pattern.output_mul.output[0]],
            name=unique_name((node.name or node.output[0]).removesuffix("_quant") + "_float", taken),
        )
        if node.op_type == "ConvInteger":
            # ConvInteger's attributes (auto_pad, dilations, group, kernel_shape, pads, strides) are Conv's.
            float_node.attribute.extend(node.attribute)
        replacements[id(pattern.output_mul)] = float_node
        removed.update((id(node), id(pattern.cast)))
        maybe_dead.update((id(pattern.quantize), id(pattern.scale_mul)))
    if not replacements:
        return
    nodes = [replacements.get(id(node), node) for node in graph.node if id(node) not in removed]
    _commit(graph, nodes, maybe_dead, initializers)


def _commit(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    maybe_dead: set[int],
    initializers: dict[str, TensorProto],
) -> None:
    """Make `nodes` the graph's nodes, less `maybe_dead` ones nothing reads, and drop what they left unused.

    Only constants that fed the nodes taken out go; any other unused initializer is left alone.
    """
    graph_outputs = {output.name for output in graph.output}
    nodes = _drop_dead(nodes, maybe_dead, graph_outputs)
    kept_ids = {id(node) for node in nodes}
    # Subgraphs may read outer-scope tensors by name: those reads keep their tensors alive too.
    read = {
        name for node in nodes for inner in (node, *_nested(node)) for name in inner.input
    } | graph_outputs
    orphaned = {name for node in graph.node if id(node) not in kept_ids for name in node.input} - read
    orphaned &= set(initializers)
    remove_where(graph.initializer, lambda tensor: tensor.name in orphaned)
    remove_where(graph.input, lambda value: value.name in orphaned)  # old models list weights as inputs
    replace(graph.node, nodes)
    live = {name for node in nodes for name in node.output} | read
    remove_where(graph.value_info, lambda value: value.name not in live)


def _nested(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    return [inner for sub in subgraphs(node) for inner in all_nodes(sub)]


def _match_integer_pattern(
    node: onnx.NodeProto,
    producers: dict[str, onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    initializers: dict[str, TensorProto],
    graph_outputs: set[str],
) -> _IntegerPattern:
    """The nodes and constants around one MatMulInteger/ConvInteger, as quantize_dynamic writes them."""

    def fail(reason: str) -> UnsupportedQuantization:
        return UnsupportedQuantization(
            f"{node.op_type} node {node.name!r} is not in the DynamicQuantizeLinear -> {node.op_type} -> "
            f"Cast -> Mul pattern of onnxruntime's quantize_dynamic: {reason}"
        )

    activation_q, weight, activation_zp, weight_zp = [*node.input, "", "", ""][:4]
    quantize = producers.get(activation_q)
    if quantize is None or quantize.op_type != "DynamicQuantizeLinear" or quantize.output[0] != activation_q:
        raise fail(f"input {activation_q!r} does not come from DynamicQuantizeLinear")
    if activation_zp != quantize.output[2]:
        raise fail(f"the input zero point {activation_zp!r} is not the DynamicQuantizeLinear's")
    if weight not in initializers:
        raise fail(f"the weight {weight!r} is not a constant")
    if weight_zp and weight_zp not in initializers:
        raise fail(f"the weight zero point {weight_zp!r} is not a constant")

    cast = _sole_reader(node.output[0], consumers, graph_outputs)
    if cast is None or cast.op_type != "Cast":
        raise fail(f"its output {node.output[0]!r} does not go to one Cast alone")
    float_type = next(a.i for a in cast.attribute if a.name == "to")
    if float_type != TensorProto.FLOAT:
        # DynamicQuantizeLinear reads float32 only, so a float32 MatMul/Conv is the only faithful rewrite.
        raise fail(f"the Cast after it gives {TensorProto.DataType.Name(float_type)}, not float32")
    output_mul = _sole_reader(cast.output[0], consumers, graph_outputs)
    if output_mul is None or output_mul.op_type != "Mul":
        raise fail(f"the Cast's output {cast.output[0]!r} does not go to one Mul alone")
    scale_product = next(name for name in output_mul.input if name != cast.output[0])
    scale_mul = producers.get(scale_product)
    if scale_mul is None or scale_mul.op_type != "Mul" or quantize.output[1] not in scale_mul.input:
        raise fail(f"the output scale {scale_product!r} is not Mul(input scale, weight scale)")
    weight_scale = next(name for name in scale_mul.input if name != quantize.output[1])
    if weight_scale not in initializers:
        raise fail(f"the weight scale {weight_scale!r} is not a constant")
    return _IntegerPattern(
        integer=node,
        quantize=quantize,
        cast=cast,
        scale_mul=scale_mul,
        output_mul=output_mul,
        weight=weight,
        weight_zero_point=weight_zp,
        weight_scale=weight_scale,
    )


def _dequantized_weight(pattern: _IntegerPattern, initializers: dict[str, TensorProto]) -> np.ndarray:
    """(Wq - Wzp) * Wscale as float32, shaped like Wq."""
    node = pattern.integer
    quantized = numpy_helper.to_array(initializers[pattern.weight])
    if quantized.dtype not in (np.int8, np.uint8):
        raise UnsupportedQuantization(
            f"{node.op_type} node {node.name!r}: weight {pattern.weight!r} is {quantized.dtype}, not int8/uint8"
        )
    zero_point = np.zeros((), np.int32)
    if pattern.weight_zero_point:
        zero_point = numpy_helper.to_array(initializers[pattern.weight_zero_point]).astype(np.int32)
    scale = numpy_helper.to_array(initializers[pattern.weight_scale]).astype(np.float32)
    if node.op_type == "MatMulInteger":
        # B is (..., K, N); per-column zero points are (N,), and the scale multiplies the (..., M, N)
        # output, so a per-column scale is (N,) or (1, N).
        channels = quantized.shape[-1]
        shape: tuple[int, ...] = (channels,)
        zero_point = _channels(zero_point, channels, lambda s: s[-1:] == (channels,), node, "zero point")
        scale = _channels(scale, channels, lambda s: s[-1:] == (channels,), node, "scale")
    else:
        # W is (M, C/group, kH, kW); zero points are per output channel (M,), and the scale
        # multiplies the NCHW output, so a per-channel scale is (M, 1, 1) or (1, M, 1, 1).
        channels = quantized.shape[0]
        shape = (channels,) + (1,) * (quantized.ndim - 1)
        zero_point = _channels(zero_point, channels, lambda s: s == (channels,), node, "zero point")
        spatial = quantized.ndim - 2
        scale = _channels(
            scale, channels, lambda s: s[-spatial - 1 :] == (channels,) + (1,) * spatial, node, "scale"
        )
    centred = quantized.astype(np.int32) - zero_point.reshape(shape if zero_point.ndim else ())
    dequantized = centred.astype(np.float32) * scale.reshape(shape if scale.ndim else ())
    return dequantized


def _channels(
    values: np.ndarray,
    channels: int,
    per_channel_shape: Callable[[tuple[int, ...]], bool],
    node: onnx.NodeProto,
    what: str,
) -> np.ndarray:
    """A scalar for a per-tensor constant, a (channels,) vector for a per-channel one."""
    if values.size == 1:
        return values.reshape(())
    if values.size == channels and per_channel_shape(values.shape):
        return values.reshape(-1)
    raise UnsupportedQuantization(
        f"{node.op_type} node {node.name!r}: a weight {what} of shape {values.shape} is neither per "
        f"tensor nor per output channel ({channels} channels)"
    )


def _sole_reader(
    name: str, consumers: dict[str, list[onnx.NodeProto]], graph_outputs: set[str]
) -> onnx.NodeProto | None:
    readers = consumers.get(name, [])
    return readers[0] if len(readers) == 1 and name not in graph_outputs else None


def _drop_dead(
    nodes: list[onnx.NodeProto], candidates: set[int], graph_outputs: set[str]
) -> list[onnx.NodeProto]:
    """`nodes` without those `candidates` whose outputs nothing reads any more (to a fixpoint)."""
    while True:
        read = {name for node in nodes for inner in (node, *_nested(node)) for name in inner.input}
        read |= graph_outputs
        dead = {id(node) for node in nodes if id(node) in candidates and not read.intersection(node.output)}
        if not dead:
            return nodes
        nodes = [node for node in nodes if id(node) not in dead]
