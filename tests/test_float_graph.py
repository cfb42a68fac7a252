"""The float graphs GPU engines run: int8 graphs turned back into float, fp16, the cache.

A tiny model built here is quantized with onnxruntime's own `quantize_dynamic` (older bundles)
and `quantize_static` in QDQ form (bundles exported now), so the patterns are the real ones; its
weights are multiples of 2**-6 with 127 steps at most, which int8 holds exactly, so the
dequantized graph must reproduce the float original to rounding error. The shipped bundle is checked against the int8 CPU engine on 48 Oxford cats.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import BundleError, ModelBundle, load_bundle, sha256_file
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.float_graph import (
    QUANTIZED_OP_TYPES,
    UnsupportedQuantization,
    dequantize_model,
    float_graph_path,
    to_float16,
)
from catbreed_desktop.core.engines.float_graph import cache as fg
from catbreed_desktop.core.photos import Preprocessing, load_and_preprocess

SIZE = 8
LABELS = ("a", "b", "c", "d", "e")
STEP = 2.0**-6  # int8 holds k * STEP exactly for |k| <= 127 once a channel reaches 127 steps
SHIPPED = Path(__file__).resolve().parents[1] / "models"
PHOTOS_PER_BREED = 4


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


# ---------------------------------------------------------------------------------------------
# to_float16


def test_fp16_graph_keeps_float32_io_and_sensitive_ops_and_runs_on_cpu(tmp_path: Path) -> None:
    float32 = dequantize_model(quantized(tiny_model(), tmp_path))

    half = to_float16(float32)

    assert signature(half) == signature(float32)
    types = float_types(half)
    weights = {t.name: t.data_type for t in half.graph.initializer}
    assert weights["dense.weight"] == weights["head.weight"] == TensorProto.FLOAT16
    assert weights["norm.scale"] == weights["norm.bias"] == TensorProto.FLOAT  # read by LayerNorm only
    for node in half.graph.node:
        floats = [
            types[name]
            for name in (*node.input, *node.output)
            if types.get(name) in (TensorProto.FLOAT, TensorProto.FLOAT16)
        ]
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceMean"):
            assert set(floats) == {TensorProto.FLOAT}, node.name
        elif node.op_type in ("MatMul", "Conv", "Add"):
            assert set(floats) == {TensorProto.FLOAT16}, node.name
    batch = pixels(3)
    want, got = run(float32, batch), run(half, batch)
    for name in ("logits", "embedding"):
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------------
# float_graph_path: the cache


def tiny_bundle(folder: Path, model: onnx.ModelProto) -> ModelBundle:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return ModelBundle(
        path=folder,
        labels=LABELS,
        architecture="tiny",
        preprocessing=Preprocessing(size=SIZE, resize=SIZE),
        model_sha256=sha256_file(folder / "model.onnx"),
    )


@pytest.fixture
def int8_bundle(tmp_path: Path) -> ModelBundle:
    return tiny_bundle(tmp_path / "bundle", quantized(tiny_model(), tmp_path / "quantize"))


def test_graphs_are_cached_in_the_user_cache_with_a_checksum_record(int8_bundle: ModelBundle) -> None:
    first = float_graph_path(int8_bundle, "fp16")
    stamp = first.stat().st_mtime_ns

    again = float_graph_path(int8_bundle, "fp16")

    assert again == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert first.parent == paths.cache_dir() / "float-graphs"
    assert first.name.startswith(int8_bundle.model_sha256[:16]) and "fp16" in first.name
    record = json.loads(first.with_suffix(".json").read_text(encoding="utf-8"))
    assert record["source_sha256"] == int8_bundle.model_sha256
    assert record["graph_sha256"] == sha256_file(first)
    assert not [p for p in first.parent.iterdir() if p.suffix == ".tmp"]
    fp32 = float_graph_path(int8_bundle, "fp32")
    assert fp32 != first and fp32.is_file()
    batch = pixels(2)
    np.testing.assert_allclose(run(first, batch)["logits"], run(fp32, batch)["logits"], rtol=2e-2, atol=2e-2)


def test_a_damaged_cached_graph_or_record_is_rebuilt(int8_bundle: ModelBundle, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    graph = float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    good = graph.read_bytes()

    graph.write_bytes(good[:-10] + b"0123456789")  # same size, other bytes
    assert float_graph_path(int8_bundle, "fp32", cache_dir=cache) == graph
    assert graph.read_bytes() == good

    graph.with_suffix(".json").write_text("{not json", encoding="utf-8")
    float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    assert json.loads(graph.with_suffix(".json").read_text(encoding="utf-8"))["graph_sha256"] == sha256_file(
        graph
    )

    graph.unlink()
    assert float_graph_path(int8_bundle, "fp32", cache_dir=cache).read_bytes() == good


@pytest.fixture
def fresh_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's stand-in folder for an unwritable cache starts unmade, under this test's folder."""
    import tempfile

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(fg, "_fallback", None, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    return temporary


def test_a_nested_or_huge_numbered_record_is_rebuilt_not_raised(
    int8_bundle: ModelBundle, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    graph = float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    record = graph.with_suffix(".json")
    for damage in ("[" * 100_000 + "]" * 100_000, '{"graph_bytes": ' + "9" * 5000 + "}", "\udcff"):
        record.write_bytes(damage.encode("utf-8", "surrogatepass"))
        assert float_graph_path(int8_bundle, "fp32", cache_dir=cache) == graph
        assert json.loads(record.read_text(encoding="utf-8"))["graph_sha256"] == sha256_file(graph)


def test_a_folder_where_the_graph_belongs_gets_the_graph_built_elsewhere(
    int8_bundle: ModelBundle, tmp_path: Path, fresh_fallback: Path
) -> None:
    cache = tmp_path / "cache"
    in_the_way = fg.cache_files(int8_bundle, "fp16", cache)[0]
    (in_the_way / "someone's").mkdir(parents=True)

    graph = float_graph_path(int8_bundle, "fp16", cache_dir=cache)

    assert graph.parent.parent == fresh_fallback and graph.is_file()
    assert (in_the_way / "someone's").is_dir()  # what was in the way is left alone
    record = json.loads(graph.with_suffix(".json").read_text(encoding="utf-8"))
    assert record["source_sha256"] == int8_bundle.model_sha256 and record["graph_sha256"] == sha256_file(
        graph
    )
    stamp = graph.stat().st_mtime_ns
    assert float_graph_path(int8_bundle, "fp16", cache_dir=cache) == graph  # reused within the run
    assert graph.stat().st_mtime_ns == stamp
    graph.write_bytes(b"damaged")  # checked on every load, in the stand-in folder too
    assert float_graph_path(int8_bundle, "fp16", cache_dir=cache) == graph
    assert sha256_file(graph) == record["graph_sha256"]


def test_a_read_only_cache_gets_the_graph_built_elsewhere_or_one_line(
    int8_bundle: ModelBundle, tmp_path: Path, fresh_fallback: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from catbreed_desktop.core.engines import OnnxRuntimeEngine
    from catbreed_desktop.core.errors import CatBreedError

    cache = tmp_path / "cache"
    real_write = fg.atomic_write_bytes

    def read_only_under(folder: Path):  # type: ignore[no-untyped-def]
        def write(path, data):  # type: ignore[no-untyped-def]
            if Path(path).is_relative_to(folder):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            real_write(path, data)

        return write

    monkeypatch.setattr(fg, "atomic_write_bytes", read_only_under(cache))
    graph = float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    assert graph.is_relative_to(fresh_fallback) and graph.is_file()

    monkeypatch.setattr(fg, "_fallback", None, raising=False)
    monkeypatch.setattr(fg, "atomic_write_bytes", read_only_under(Path("/")))
    monkeypatch.setattr(paths, "cache_dir", lambda: cache)
    with pytest.raises(
        CatBreedError, match="cannot store the derived fp16 graph.*Read-only file system"
    ) as refused:
        OnnxRuntimeEngine(int8_bundle, device="cpu", graph="fp16")
    assert isinstance(refused.value, OSError)  # so that engine "auto" passes over a GPU engine that hits it
    assert "\n" not in str(refused.value)


def test_each_bundle_and_derivation_version_gets_its_own_file(
    int8_bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tiny_bundle(tmp_path / "other", quantized(tiny_model(seed=7), tmp_path / "quantize-other"))
    cache = tmp_path / "cache"
    mine = float_graph_path(int8_bundle, "fp16", cache_dir=cache)
    theirs = float_graph_path(other, "fp16", cache_dir=cache)
    assert mine != theirs and mine.read_bytes() != theirs.read_bytes()

    monkeypatch.setattr(fg, "DERIVATION_VERSION", fg.DERIVATION_VERSION + 1)
    newer = float_graph_path(int8_bundle, "fp16", cache_dir=cache)

    assert newer != mine and newer.is_file()
    assert not mine.exists() and theirs.exists()  # the outdated derivation of the same model is gone


def test_a_float_bundle_is_its_own_fp32_graph_and_only_fp16_is_derived(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "float-bundle", tiny_model())
    cache = tmp_path / "cache"
    assert float_graph_path(bundle, "fp32", cache_dir=cache) == bundle.model_path
    half = float_graph_path(bundle, "fp16", cache_dir=cache)
    assert half.parent == cache
    assert {t.data_type for t in onnx.load(str(half)).graph.initializer} >= {TensorProto.FLOAT16}


def test_a_model_changed_since_its_bundle_was_loaded_is_refused(
    int8_bundle: ModelBundle, tmp_path: Path
) -> None:
    onnx.save(tiny_model(seed=5), str(int8_bundle.model_path))
    with pytest.raises(BundleError, match="checksum"):
        float_graph_path(int8_bundle, "fp16", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="precision"):
        float_graph_path(int8_bundle, "int4", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# The shipped bundle


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory):
    if not (SHIPPED / "bundle.json").is_file():
        pytest.skip(f"no shipped bundle in {SHIPPED}")
    bundle = load_bundle(SHIPPED)
    cache = tmp_path_factory.mktemp("float-graphs")
    return bundle, {
        precision: float_graph_path(bundle, precision, cache_dir=cache) for precision in ("fp32", "fp16")
    }


def test_the_shipped_float_graphs_have_no_integer_compute_and_the_same_signature(shipped) -> None:
    bundle, graphs = shipped
    original = onnx.load(str(bundle.model_path))
    # Older bundles are dynamic (MatMulInteger), the shipped one static QDQ (DequantizeLinear).
    assert op_types(original)["MatMulInteger"] + op_types(original)["DequantizeLinear"] > 0
    for precision, path in graphs.items():
        derived = onnx.load(str(path))
        assert not set(op_types(derived)) & QUANTIZED_OP_TYPES, precision
        assert signature(derived) == signature(original), precision
        assert all(t[1] == TensorProto.FLOAT for part in signature(derived) for t in part)
        assert (
            op_types(derived)["MatMul"] == op_types(original)["MatMul"] + op_types(original)["MatMulInteger"]
        )


@pytest.mark.slow  # about 15 s on two shared cores: 48 photos through int8 and fp16 on the CPU
def test_the_shipped_float_graphs_name_the_breeds_the_int8_cpu_engine_names(
    shipped, shared_cats: Path
) -> None:
    bundle, graphs = shipped
    photos = [
        photo
        for folder in sorted(p for p in shared_cats.iterdir() if p.is_dir())
        for photo in sorted(folder.glob("*.jpg"))[:PHOTOS_PER_BREED]
    ]
    batch = np.stack([load_and_preprocess(photo, bundle.preprocessing) for photo in photos])
    with create_engine(bundle, "cpu") as engine:
        int8 = engine.run(batch)["logits"].argmax(axis=1)

    half = run(graphs["fp16"], batch)["logits"].argmax(axis=1)
    # fp32 on a quarter of them: it is checked in full by bench/check_float_graph.py.
    full = run(graphs["fp32"], batch[::PHOTOS_PER_BREED])["logits"].argmax(axis=1)

    assert len(photos) == 12 * PHOTOS_PER_BREED
    # The full check (2,371 photos) asks for 99 %; 48 photos allow at most one difference.
    assert np.sum(half != int8) <= 1, f"fp16 differs from int8 on {np.sum(half != int8)} of {len(photos)}"
    assert np.sum(full != int8[::PHOTOS_PER_BREED]) == 0
