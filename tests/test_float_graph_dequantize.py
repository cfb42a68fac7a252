"""int8 graphs turned back into float (`float_graph.dequantize`), for both int8 forms.

A tiny model (`float_graph_models`) is quantized with onnxruntime's own `quantize_dynamic` (older
bundles) and `quantize_static` in QDQ form (bundles exported now), so the patterns are the real
ones; its weights are exact in int8, so the dequantized graph must reproduce the float original to
rounding error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from float_graph_models import op_types, pixels, quantized, run, signature, tiny_model
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from catbreed_desktop.core.engines.float_graph import (
    QUANTIZED_OP_TYPES,
    UnsupportedQuantization,
    dequantize_model,
    to_float16,
)

# ---------------------------------------------------------------------------------------------
# dequantize_model


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_dequantized_graph_computes_in_float_with_the_int8_weights(tmp_path: Path, per_channel: bool) -> None:
    original = tiny_model()
    int8 = quantized(original, tmp_path, per_channel=per_channel)
    assert {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"} <= set(op_types(int8))

    derived = dequantize_model(int8)

    counts = op_types(derived)
    assert not set(counts) & QUANTIZED_OP_TYPES
    assert counts["MatMul"] == op_types(original)["MatMul"] and counts["Conv"] == 1
    assert "Cast" not in counts and counts["Mul"] == 0  # the scale Muls went with their patterns
    assert not any(t.data_type in (TensorProto.INT8, TensorProto.UINT8) for t in derived.graph.initializer)
    assert [o.domain for o in derived.opset_import] == [o.domain for o in int8.opset_import]
    assert signature(derived) == signature(original)
    for count in (1, 3):
        batch = pixels(count)
        want, got, rounded = run(original, batch), run(derived, batch), run(int8, batch)
        for name in ("logits", "embedding"):
            # The weights are exact in int8, so only float rounding separates derived from original,
            # while the int8 graph also rounds the activations to 8 bits.
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        assert (
            np.abs(rounded["logits"] - want["logits"]).max()
            > 10 * np.abs(got["logits"] - want["logits"]).max()
        )


def test_asymmetric_uint8_weights_are_dequantized_with_their_zero_points(tmp_path: Path) -> None:
    original = tiny_model(seed=3)
    int8 = quantized(original, tmp_path, per_channel=True, weight_type=QuantType.QUInt8)
    zero_points = [numpy_helper.to_array(t) for t in int8.graph.initializer if t.name.endswith("_zero_point")]
    assert any(np.any(z != 0) for z in zero_points), "the test needs weights with non-zero zero points"

    derived = dequantize_model(int8)

    assert not set(op_types(derived)) & QUANTIZED_OP_TYPES
    batch = pixels(4)
    want, got = run(original, batch)["logits"], run(derived, batch)["logits"]
    # uint8 weights are within half a step of the float ones: close, though not exact.
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_a_quantized_op_in_an_unknown_pattern_is_refused_by_name() -> None:
    weight = numpy_helper.from_array(np.ones((4, 2), np.int8), "w_q")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"], name="static_quant"),
            helper.make_node("MatMulInteger", ["x_q", "w_q", "zero"], ["y_int"], name="mm_static"),
            helper.make_node("Cast", ["y_int"], ["y"], to=TensorProto.FLOAT),
        ],
        "static",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            weight,
            numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    with pytest.raises(UnsupportedQuantization, match="mm_static.*DynamicQuantizeLinear"):
        dequantize_model(model)


# ---------------------------------------------------------------------------------------------
# dequantize_model on static QDQ graphs (quantize_static), what the export ships now


class Batches(CalibrationDataReader):
    def __init__(self, count: int = 16, size: int = 4) -> None:
        data = pixels(count, seed=2)
        self.batches = iter([data[i : i + size] for i in range(0, count, size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"pixel_values": batch}


def static_quantized(
    model: onnx.ModelProto, folder: Path, everything: bool = False, **options
) -> onnx.ModelProto:
    """quantize_static in QDQ form: as trainer/quantise.py does it, or (`everything`) every op it can."""
    source, target = folder / "float.onnx", folder / "qdq.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(source))
    constants = {tensor.name for tensor in model.graph.initializer}
    linear = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    arguments = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        "extra_options": {"QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}},
    }
    if not everything:
        arguments["op_types_to_quantize"] = ["MatMul"]
        arguments["nodes_to_quantize"] = linear
        arguments["extra_options"]["OpTypesToExcludeOutputQuantization"] = ["MatMul"]
    for name, value in options.items():
        if name == "extra_options":
            arguments["extra_options"].update(value)
        else:
            arguments[name] = value
    quantize_static(source, target, Batches(), **arguments)
    return onnx.load(str(target))


def named(model: onnx.ModelProto) -> onnx.ModelProto:
    """The tiny model with every node named, as torch's exporter names them (quantize_static picks by name)."""
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    return model


def dequantized_outputs(model: onnx.ModelProto) -> int:
    """Graph outputs that a DequantizeLinear writes (quantize_static reroutes quantized outputs so)."""
    outputs = {output.name for output in model.graph.output}
    return sum(
        1 for node in model.graph.node if node.op_type == "DequantizeLinear" and node.output[0] in outputs
    )


def test_static_qdq_linear_layers_fold_back_to_the_float_graph(tmp_path: Path) -> None:
    original = named(tiny_model())
    qdq = static_quantized(original, tmp_path)
    counts = op_types(qdq)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > counts["QuantizeLinear"]

    derived = dequantize_model(qdq)

    assert not set(op_types(derived)) & QUANTIZED_OP_TYPES
    # quantize_static made the pair's DequantizeLinear write the graph output `embedding` (the head
    # reads it): an Identity now writes that name from the float tensor.
    assert dequantized_outputs(qdq) == 1
    assert op_types(derived) == op_types(original) + Counter({"Identity": 1})
    assert not any(t.data_type in (TensorProto.INT8, TensorProto.UINT8) for t in derived.graph.initializer)
    assert signature(derived) == signature(original)
    for count in (1, 3):
        batch = pixels(count)
        want, got, rounded = run(original, batch), run(derived, batch), run(qdq, batch)
        for name in ("logits", "embedding"):
            # Weights that int8 holds exactly: only float rounding separates derived from original.
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        assert (
            np.abs(rounded["logits"] - want["logits"]).max()
            > 10 * np.abs(got["logits"] - want["logits"]).max()
        )
    half = to_float16(derived)  # the CUDA graph: fp16 from the folded one
    np.testing.assert_allclose(
        run(half, pixels(3))["logits"], run(original, pixels(3))["logits"], rtol=2e-2, atol=2e-2
    )


def test_a_fully_quantized_qdq_graph_leaves_no_quantize_op(tmp_path: Path) -> None:
    """Every op quantize_static takes: Conv with its int32 bias, attention MatMuls, Add, LayerNorm, outputs."""
    original = named(tiny_model(seed=4))
    qdq = static_quantized(original, tmp_path, everything=True)
    assert (
        op_types(qdq)["DequantizeLinear"]
        > op_types(static_quantized(original, tmp_path / "linear"))["DequantizeLinear"]
    )
    assert any(t.data_type == TensorProto.INT32 for t in qdq.graph.initializer)  # the Conv bias

    derived = dequantize_model(qdq)

    assert not set(op_types(derived)) & QUANTIZED_OP_TYPES
    assert op_types(derived) == op_types(original) + Counter({"Identity": dequantized_outputs(qdq)})
    batch = pixels(4)
    want, got, rounded = (
        run(original, batch)["logits"],
        run(derived, batch)["logits"],
        run(qdq, batch)["logits"],
    )
    # Here the Add biases and LayerNorm scale are int8 constants too, and the derived graph keeps
    # the int8 graph's weights: close to the original, though not exact, and far closer than the
    # int8 graph, whose activations are rounded as well.
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max()
    assert np.abs(rounded - want).max() > 4 * np.abs(got - want).max()


def test_asymmetric_uint8_qdq_weights_are_folded_with_their_zero_points(tmp_path: Path) -> None:
    original = named(tiny_model(seed=3))
    qdq = static_quantized(
        original, tmp_path, weight_type=QuantType.QUInt8, extra_options={"WeightSymmetric": False}
    )
    zero_points = [
        numpy_helper.to_array(t) for t in qdq.graph.initializer if t.data_type == TensorProto.UINT8 and t.dims
    ]
    assert any(np.any(z != 0) for z in zero_points), "the test needs weights with non-zero zero points"

    derived = dequantize_model(qdq)

    assert not set(op_types(derived)) & QUANTIZED_OP_TYPES
    batch = pixels(4)
    want, got = run(original, batch)["logits"], run(derived, batch)["logits"]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def qdq_graph(dequantize_scale: str, output: str = "y") -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> MatMul(DequantizeLinear(int8 weight)) -> y."""
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"], name="quant"),
            helper.make_node("DequantizeLinear", ["x_q", dequantize_scale, "zero"], ["x_dq"], name="dequant"),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="weight_dequant", axis=1),
            helper.make_node("MatMul", ["x_dq", "w"], [output], name="mm"),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 2])]
        + ([helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2])] if output == "w_out" else []),
        initializer=[
            numpy_helper.from_array(np.arange(-4, 4, dtype=np.int8).reshape(4, 2), "w_q"),
            numpy_helper.from_array(np.array([0.5, 0.25], np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
            numpy_helper.from_array(np.array(0.2, np.float32), "other_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_hand_made_qdq_weights_fold_per_axis_and_a_weight_output_survives() -> None:
    model = qdq_graph("scale", output="w_out")
    model.graph.node[3].output[0] = "w_out"  # the MatMul writes w_out; the folded weight is output "w" too

    derived = dequantize_model(model)

    assert not set(op_types(derived)) & QUANTIZED_OP_TYPES
    x = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    weight = np.arange(-4, 4, dtype=np.float32).reshape(4, 2) * np.array([0.5, 0.25], np.float32)
    session = onnxruntime.InferenceSession(derived.SerializeToString(), providers=["CPUExecutionProvider"])
    y, w = session.run(["w_out", "w"], {"x": x})
    np.testing.assert_allclose(w, weight)
    np.testing.assert_allclose(y, x @ weight, rtol=1e-6)


def test_a_quantize_dequantize_pair_with_other_scales_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedQuantization, match=r"'quant' \(QuantizeLinear\)"):
        dequantize_model(qdq_graph("other_scale"))


def test_a_float_model_passes_through_unchanged() -> None:
    original = tiny_model()
    derived = dequantize_model(original)
    assert [n.op_type for n in derived.graph.node] == [n.op_type for n in original.graph.node]
    assert len(derived.graph.initializer) == len(original.graph.initializer)
