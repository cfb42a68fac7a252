"""Float graphs for the GPU engines, derived from a bundle's int8 model and cached on disk.

Two int8 forms exist. Bundles exported now are statically quantized in QDQ form
(onnxruntime's `quantize_static`): int8 weights behind DequantizeLinear, and activations rounded
by QuantizeLinear -> DequantizeLinear pairs with calibrated, constant scales. Older bundles are
dynamically quantized (`quantize_dynamic`): every linear layer is DynamicQuantizeLinear ->
MatMulInteger/ConvInteger -> Cast -> Mul(scale). Neither suits a GPU: the integer ops have no
CUDA kernels, so ONNX Runtime CUDA runs them on the CPU with a memcpy around each, and TensorRT
cannot parse them at all (it would take QDQ, but as its own int8 engine, not the fp16 one the app
builds). This module owns the float graph the GPU engines run instead:

* `dequantize_model` folds each weight DequantizeLinear into a float initializer and removes the
  activation pairs (QDQ), and rewrites each dynamic pattern back to MatMul/Conv on the
  dequantized weights, W = (Wq - Wzp) * Wscale, keeping every other node, the opsets and the
  graph inputs and outputs. The weights stay exactly the ones the CPU engine uses; only the
  activations are no longer rounded to 8 bits.
* `to_float16` turns a float graph into fp16 weights and compute, with float32 inputs and outputs
  and the numerically sensitive ops (LayerNormalization, Softmax, reductions) left in float32
  behind casts.
* `float_graph_path` derives the graph once per bundle and precision and caches it under
  `cache_dir()/float-graphs/` with a JSON sidecar recording the checksums of the source model and
  of the derived file, as the TensorRT engine cache does; anything that does not match is rebuilt.

Deriving instead of shipping keeps `models/` small: the fp32 graph alone is about 90 MB.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import BundleError, ModelBundle
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.files import atomic_write_bytes, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

# Bump whenever the derived graph for the same source model would change; cached files of other
# versions are then rebuilt (and the older file of the same model and precision removed).
DERIVATION_VERSION = 1
PRECISIONS = ("fp16", "fp32")
CACHE_FOLDER = "float-graphs"

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


class UnsupportedQuantization(CatBreedError, ValueError):
    """A quantized node this module cannot turn back into float compute; the message names it.

    A ValueError too, which the engines catch to say that the GPU graph cannot be derived.
    """


def has_quantized_ops(model: onnx.ModelProto) -> bool:
    """True when any node of the model (subgraphs included) is an integer/quantization op."""
    return any(node.op_type in QUANTIZED_OP_TYPES for node in _all_nodes(model.graph))


# ---------------------------------------------------------------------------------------------
# int8 -> float


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
        inner = [n for sub in _subgraphs(node) for n in _all_nodes(sub) if n.op_type in QUANTIZED_OP_TYPES]
        if inner:
            raise UnsupportedQuantization(
                f"node {inner[0].name!r} ({inner[0].op_type}) sits in a subgraph of {node.name!r}; only "
                "top-level quantized MatMul/Conv can be turned back into float"
            )

    _fold_qdq(graph)
    _rewrite_integer_patterns(graph)

    leftover = [node for node in _all_nodes(graph) if node.op_type in QUANTIZED_OP_TYPES]
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
    taken = _all_names(graph)

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
                folded[key] = _unique_name(source.removesuffix("_quantized") or source, taken)
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
                "Identity", [target], [output], name=_unique_name(f"{output}_float", taken)
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

    for reader in _all_nodes(graph):
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
    taken = _all_names(graph)

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
            weights[key] = _unique_name(pattern.weight.removesuffix("_quantized") or pattern.weight, taken)
            graph.initializer.append(
                numpy_helper.from_array(_dequantized_weight(pattern, initializers), weights[key])
            )
        float_node = helper.make_node(
            "MatMul" if node.op_type == "MatMulInteger" else "Conv",
            [pattern.activation, weights[key]],
            [pattern.output_mul.output[0]],
            name=_unique_name((node.name or node.output[0]).removesuffix("_quant") + "_float", taken),
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
    _remove_where(graph.initializer, lambda tensor: tensor.name in orphaned)
    _remove_where(graph.input, lambda value: value.name in orphaned)  # old models list weights as inputs
    _replace(graph.node, nodes)
    live = {name for node in nodes for name in node.output} | read
    _remove_where(graph.value_info, lambda value: value.name not in live)


def _nested(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    return [inner for sub in _subgraphs(node) for inner in _all_nodes(sub)]


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


# ---------------------------------------------------------------------------------------------
# float32 -> float16


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
        if _subgraphs(node):
            raise ValueError(
                f"node {node.name!r} ({node.op_type}) has a subgraph; to_float16 handles flat graphs only"
            )
    keep = frozenset(keep_fp32_ops)
    types = _element_types(result)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    graph_outputs = {value.name for value in graph.output}
    taken = _all_names(graph)
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
            twin.name = twins[name] = _unique_name(f"{name}_fp16", taken)
            _to_fp16_tensor(twin)
            graph.initializer.append(twin)
            current[twin.name] = TensorProto.FLOAT16

    nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    renamed: dict[str, str] = {}  # fp16 graph outputs: the producer writes the new name, a Cast the old

    def cast(name: str, target: int) -> str:
        if (name, target) not in casts:
            output = _unique_name(f"{name}_{'fp16' if target == TensorProto.FLOAT16 else 'fp32'}", taken)
            nodes.append(
                helper.make_node(
                    "Cast", [name], [output], name=_unique_name(f"{output}_cast", taken), to=target
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
                inner = renamed[name] = node.output[index] = _unique_name(f"{name}_fp16", taken)
                current[inner] = TensorProto.FLOAT16
                after.append(
                    helper.make_node(
                        "Cast",
                        [inner],
                        [name],
                        name=_unique_name(f"{name}_cast", taken),
                        to=TensorProto.FLOAT,
                    )
                )
            else:
                current[name] = TensorProto.FLOAT16
        nodes.append(node)
        nodes.extend(after)

    _replace(graph.node, nodes)
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


# ---------------------------------------------------------------------------------------------
# The cache


def cache_files(bundle: ModelBundle, precision: str, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Where `float_graph_path` keeps the derived graph of `precision` and its JSON record (written last)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / CACHE_FOLDER
    stem = f"{bundle.model_sha256[:16]}-{precision}-v{DERIVATION_VERSION}"
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


class FloatGraphCacheError(CatBreedError, OSError):
    """The derived graph could be stored neither in the cache nor in a fresh temporary folder.

    An OSError too, so that `create_engine("auto")` passes over the GPU engine as one that failed
    to start; alone on a command line it is one line, not a traceback.
    """


def float_graph_path(bundle: ModelBundle, precision: str = "fp16", cache_dir: Path | None = None) -> Path:
    """The bundle's model as a float graph of `precision` ("fp16" or "fp32"), derived once and cached.

    The file lives in `cache_dir` (default `paths.cache_dir()/float-graphs`), named by the
    bundle's model checksum, the precision and `DERIVATION_VERSION`, beside a JSON sidecar holding
    the sha256 of the source model and of the derived file; both are checked on every call, and a
    file that does not match is rebuilt. A cache that cannot be written (read-only, a folder where
    the file should be, a full disk) gets the graph derived into a temporary folder of this process
    instead, removed at exit. A bundle whose model has no quantized ops is its own fp32 graph.
    Raises `BundleError` when the model file no longer matches the bundle's checksum,
    `UnsupportedQuantization` when its quantized ops cannot be turned back into float compute,
    `FloatGraphCacheError` when the graph can be stored nowhere.
    """
    graph_file, record_file = cache_files(bundle, precision, cache_dir)
    reasons = _stale_reasons(graph_file, record_file, bundle, precision)
    if not reasons:
        return graph_file
    if _fallback is not None:  # an earlier call of this process found the cache unwritable
        fallback_graph, fallback_record = cache_files(bundle, precision, _fallback)
        if not _stale_reasons(fallback_graph, fallback_record, bundle, precision):
            return fallback_graph

    try:
        source_bytes = bundle.model_path.read_bytes()
    except OSError as error:
        raise BundleError(f"cannot read {bundle.model_path}: {error.strerror or error}") from None
    if _sha256(source_bytes) != bundle.model_sha256:
        raise BundleError(
            f"{bundle.model_path} no longer matches the checksum in its bundle.json; reload the bundle"
        )
    source = onnx.load_from_string(source_bytes)
    if not has_quantized_ops(source) and precision == "fp32":
        return bundle.model_path
    if any(
        tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL
        for tensor in source.graph.initializer
    ):
        source = onnx.load(str(bundle.model_path))  # pull the external weights in beside it

    log.info("deriving the %s float graph of %s (%s)", precision, bundle.model_path, "; ".join(reasons))
    started = time.perf_counter()
    model = dequantize_model(source) if has_quantized_ops(source) else source
    if precision == "fp16":
        model = to_float16(model)
    helper.set_model_props(
        model,
        {
            **{entry.key: entry.value for entry in model.metadata_props},
            "catbreed.float_graph": f"{precision} v{DERIVATION_VERSION} from sha256 {bundle.model_sha256}",
        },
    )
    data = model.SerializeToString()
    record = {
        "derivation_version": DERIVATION_VERSION,
        "precision": precision,
        "source_sha256": bundle.model_sha256,
        "graph_sha256": _sha256(data),
        "graph_bytes": len(data),
        "onnx": onnx.__version__,
    }
    try:
        _store(graph_file, record_file, data, record)
    except OSError as error:
        cache_problem = error.strerror or str(error)
        try:
            fallback = _fallback_folder()
            graph_file, record_file = cache_files(bundle, precision, fallback)
            _store(graph_file, record_file, data, record)
        except OSError as second:
            raise FloatGraphCacheError(
                f"cannot store the derived {precision} graph: not in {graph_file.parent} ({cache_problem}), "
                f"nor in a temporary folder ({second.strerror or second})"
            ) from None
        log.warning(
            "cannot write the float graph cache in %s (%s); the %s graph is kept in %s for this run",
            cache_files(bundle, precision, cache_dir)[0].parent,
            cache_problem,
            precision,
            fallback,
        )
    with contextlib.suppress(OSError):  # tidying only: a cache that cannot be tidied still works
        _remove_other_versions(graph_file.parent, bundle.model_sha256[:16], precision, keep=graph_file.stem)
    log.info(
        "derived %s (%.1f MB) in %.1f s", graph_file.name, len(data) / 1e6, time.perf_counter() - started
    )
    return graph_file


def _store(graph_file: Path, record_file: Path, data: bytes, record: dict[str, Any]) -> None:
    graph_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(graph_file, data)
    # The record is written last, so an interrupted derivation never looks like a valid cache entry.
    atomic_write_text(record_file, json.dumps(record, indent=2) + "\n")


# This process's stand-in for a cache it could not write, made on first need and removed at exit.
_fallback: Path | None = None


def _fallback_folder() -> Path:
    global _fallback
    if _fallback is None:
        _fallback = Path(tempfile.mkdtemp(prefix="catbreed-float-graphs-"))
        atexit.register(shutil.rmtree, _fallback, ignore_errors=True)
    return _fallback


def _stale_reasons(graph_file: Path, record_file: Path, bundle: ModelBundle, precision: str) -> list[str]:
    """Why the cached graph cannot be used; empty when it can."""
    if not graph_file.is_file():
        return ["no cached graph"]
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # a folder, damage, nesting
        return ["the cached graph's record is missing or unreadable"]
    if not isinstance(record, dict):
        return ["the cached graph's record is not a JSON object"]
    expected = {
        "derivation_version": DERIVATION_VERSION,
        "precision": precision,
        "source_sha256": bundle.model_sha256,
    }
    reasons = [
        f"{key} changed ({record.get(key)!r} -> {value!r})"
        for key, value in expected.items()
        if record.get(key) != value
    ]
    if reasons:
        return reasons
    try:
        if sha256_file(graph_file) != record.get("graph_sha256"):
            return ["the cached graph does not match its recorded checksum"]
    except OSError:
        return ["the cached graph cannot be read"]
    return []


def _remove_other_versions(folder: Path, prefix: str, precision: str, keep: str) -> None:
    # Each derived graph is 45-90 MB; older derivation versions of the same model are dead weight.
    for path in folder.glob(f"{prefix}-{precision}-v*"):
        if path.stem != keep and path.suffix in (".onnx", ".json"):
            path.unlink(missing_ok=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Graph helpers


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            found.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            found.extend(attribute.graphs)
    return found


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for sub in _subgraphs(node):
            nodes.extend(_all_nodes(sub))
    return nodes


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {tensor.name for tensor in graph.initializer}
    names |= {value.name for value in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        if node.name:
            names.add(node.name)
    names.discard("")
    return names


def _unique_name(base: str, taken: set[str]) -> str:
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    taken.add(name)
    return name


def _replace(field: Any, items: Iterable[Any]) -> None:
    """Replace the contents of a repeated protobuf field (with copies: protobuf owns its elements)."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del field[:]
    field.extend(copies)


def _remove_where(field: Any, condition: Any) -> None:
    """Delete in place the elements of a repeated protobuf field that `condition` picks."""
    for index in reversed(range(len(field))):
        if condition(field[index]):
            del field[index]
