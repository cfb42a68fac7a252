"""Engines: CPU predictions, calibrated softmax, provider names, the fallback chain, graphs and placement.

CUDA is faked (`engine_fakes.FakeCudaOnnxRuntime`): sessions asked for CUDA run on the CPU but
report CUDA, so the graph choice and the placement check are tested without a GPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import engine_fakes
import numpy as np
import onnx
import onnxruntime
import pytest
from engine_fakes import FakeCudaOnnxRuntime, make_int8_colour_bundle
from factories import COLOUR_LABELS, COLOURS, make_photo

from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.engines import (
    EngineUnavailable,
    create_engine,
    onnx_runtime,
    softmax,
    tensorrt_rtx,
)
from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
from catbreed_desktop.core.engines.float_graph import float_graph_path, has_quantized_ops
from catbreed_desktop.core.engines.onnx_runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OnnxRuntimeEngine,
    placement_from_profile,
)
from catbreed_desktop.core.photos import load_and_preprocess, stack_batch

SHIPPED = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture
def colour_batch(tmp_path, colour_bundle):
    """One photo per colour label, in label order, as a preprocessed batch."""
    photos = [
        make_photo(tmp_path / f"{i}.png", COLOURS[label], seed=i) for i, label in enumerate(COLOUR_LABELS)
    ]
    return stack_batch([load_and_preprocess(p, colour_bundle.preprocessing) for p in photos])


def missing_tensorrt(*args, **kwargs):
    raise EngineUnavailable("TensorRT is not installed (test)")


def missing_rtx_plugin(*args, **kwargs):
    raise EngineUnavailable("TensorRT for RTX is not installed (test)")


@pytest.fixture
def no_gpu(monkeypatch):
    """Make TensorRT, TensorRT for RTX and ONNX Runtime CUDA unavailable whatever this machine has."""
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing_tensorrt)
    monkeypatch.setattr(tensorrt_rtx, "load_plugin", missing_rtx_plugin)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)


def test_cpu_engine_classifies_colours_and_probabilities_sum_to_one(colour_bundle, colour_batch):
    engine = create_engine(colour_bundle, "cpu")

    probabilities = engine.predict(colour_batch)

    assert engine.provider == "ONNX Runtime CPU"
    assert probabilities.shape == (3, 3)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [COLOUR_LABELS[i] for i in probabilities.argmax(axis=1)] == list(COLOUR_LABELS)


def test_run_returns_logits_and_embedding(colour_bundle, colour_batch):
    engine = create_engine(colour_bundle, "cpu")

    outputs = engine.run(colour_batch)

    assert engine.output_names == ("logits", "embedding")
    assert engine.has_embedding
    assert outputs["logits"].shape == (3, 3)
    # The colour model's embedding is the per-channel mean of the normalised photo.
    np.testing.assert_allclose(outputs["embedding"], colour_batch.mean(axis=(2, 3)), atol=1e-5)


def test_higher_temperature_lowers_confidence_but_not_the_ranking(colour_bundle, colour_batch):
    sharp = create_engine(colour_bundle, "cpu").predict(colour_batch)
    softened_bundle = dataclasses.replace(colour_bundle, temperature=8.0)
    soft = create_engine(softened_bundle, "cpu").predict(colour_batch)

    assert (soft.max(axis=1) < sharp.max(axis=1)).all()
    np.testing.assert_array_equal(soft.argmax(axis=1), sharp.argmax(axis=1))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)


def test_softmax_divides_logits_by_temperature():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]], dtype=np.float32)

    result = softmax(logits, temperature=2.0)

    expected_first = np.exp(1.0) / (np.exp(1.0) + 1.0)
    np.testing.assert_allclose(result[0], [expected_first, 1 - expected_first], rtol=1e-6)
    np.testing.assert_allclose(result[1], [0.5, 0.5])


def test_huge_logits_do_not_overflow():
    result = softmax(np.array([[1e4, 0.0, -1e4]]))
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result[0], [1.0, 0.0, 0.0])


def test_wrong_batch_shape_is_refused_in_words(colour_bundle):
    engine = create_engine(colour_bundle, "cpu")
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        engine.predict(np.zeros((1, 3, 16, 16), dtype=np.float32))


def test_auto_falls_back_to_cpu_and_says_why(colour_bundle, no_gpu):
    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "ONNX Runtime CPU"
    assert len(engine.fallback_notes) == 3
    tensorrt_note, rtx_note, cuda_note = engine.fallback_notes
    assert tensorrt_note.startswith("TensorRT skipped:") and "not installed" in tensorrt_note
    assert rtx_note.startswith("TensorRT for RTX skipped:") and "not installed" in rtx_note
    assert cuda_note.startswith("ONNX Runtime CUDA skipped:") and "onnxruntime-gpu" in cuda_note


def test_explicit_engines_never_fall_back(colour_bundle, no_gpu):
    with pytest.raises(EngineUnavailable, match="TensorRT is not installed"):
        create_engine(colour_bundle, "tensorrt")
    with pytest.raises(EngineUnavailable, match="onnxruntime-gpu"):
        create_engine(colour_bundle, "cuda")


def test_cuda_that_silently_runs_on_cpu_is_not_called_cuda(colour_bundle, monkeypatch):
    """ORT drops a CUDA provider it cannot start; the engine must notice via get_providers()."""
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        pytest.skip("this machine really has ONNX Runtime CUDA")
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing_tensorrt)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *available])

    with pytest.raises(EngineUnavailable, match="fell back to CPUExecutionProvider"):
        create_engine(colour_bundle, "cuda")
    engine = create_engine(colour_bundle, "auto")
    assert engine.provider == "ONNX Runtime CPU"
    assert "fell back" in engine.fallback_notes[-1]


def test_tensorrt_failing_mid_start_falls_back_in_auto(colour_bundle, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA call failed: cudaErrorMemoryAllocation")

    monkeypatch.setattr(tensorrt_engine, "load_toolkit", broken)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)

    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "ONNX Runtime CPU"
    assert "cudaErrorMemoryAllocation" in engine.fallback_notes[0]


def test_unknown_preference_is_refused(colour_bundle):
    with pytest.raises(ValueError, match="auto, tensorrt, tensorrt-rtx, cuda, cpu, openvino"):
        create_engine(colour_bundle, "gpu")


# --- which graph each engine runs, and where ONNX Runtime placed its nodes ------------------------


@pytest.fixture
def int8_colour_bundle(tmp_path):
    return make_int8_colour_bundle(tmp_path / "int8-bundle")


@pytest.fixture
def fake_cuda(monkeypatch):
    """ONNX Runtime that offers CUDA and 'runs' CUDA sessions (really on the CPU); TensorRT missing."""
    fake = FakeCudaOnnxRuntime(onnxruntime.InferenceSession)
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing_tensorrt)
    monkeypatch.setattr(tensorrt_rtx, "load_plugin", missing_rtx_plugin)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: True)
    monkeypatch.setattr(onnxruntime, "InferenceSession", fake)
    return fake


def test_cuda_engine_runs_the_derived_fp16_graph_and_the_cpu_engine_the_int8_one(
    int8_colour_bundle, colour_batch, fake_cuda
):
    cuda = create_engine(int8_colour_bundle, "cuda")
    cpu = create_engine(int8_colour_bundle, "cpu")

    fp16_graph = float_graph_path(int8_colour_bundle, "fp16")
    assert fake_cuda.opened[0] == (str(fp16_graph), [CUDA_PROVIDER, CPU_PROVIDER])
    assert fake_cuda.opened[1] == (str(int8_colour_bundle.model_path), [CPU_PROVIDER])
    assert (cuda.graph_path, cuda.graph_precision) == (fp16_graph, "fp16")
    assert (cpu.graph_path, cpu.graph_precision) == (int8_colour_bundle.model_path, "int8")
    assert not has_quantized_ops(onnx.load(str(cuda.graph_path)))
    assert cuda.provider == "ONNX Runtime CUDA" and cuda.active_providers[0] == CUDA_PROVIDER
    # Every node of the profiled batch ran on "CUDA": nothing computes on the CPU, nothing is quantized.
    assert cuda.placement.nodes_by_provider == {CUDA_PROVIDER: cuda.placement.profiled_nodes}
    assert cuda.placement.cpu_compute == () and cuda.placement.quantized == ()
    assert cpu.placement is None  # not profiled unless asked: the CPU engine is meant to run on the CPU
    assert cuda.fallback_notes == []
    assert cuda.predict(colour_batch).argmax(axis=1).tolist() == [0, 1, 2]
    np.testing.assert_allclose(cuda.predict(colour_batch), cpu.predict(colour_batch), atol=2e-2)


def test_compute_that_onnx_runtime_leaves_on_the_cpu_of_a_cuda_session_is_reported(
    int8_colour_bundle, fake_cuda
):
    fake_cuda.on_cpu = frozenset({"Gemm"})  # ORT fuses the graph's MatMul + Add into one Gemm

    engine = create_engine(int8_colour_bundle, "auto")

    assert engine.provider == "ONNX Runtime CUDA"
    assert [node.split(" ")[0] for node in engine.placement.cpu_compute] == ["Gemm"]
    assert engine.fallback_notes[0].startswith("TensorRT skipped:")
    assert engine.fallback_notes[1].startswith("TensorRT for RTX skipped:")
    assert "runs part of the model on the CPU" in engine.fallback_notes[2]
    assert "1 compute node(s) on the CPU: Gemm" in engine.fallback_notes[2]


def test_placement_tells_shape_arithmetic_from_compute_on_the_cpu():
    def node(name, op, provider, *outputs):
        args = {"op_name": op, "provider": provider, "output_type_shape": [{kind: [1]} for kind in outputs]}
        return {"cat": "Node", "name": f"{name}_kernel_time", "args": args}

    events = [
        {"cat": "Session", "name": "model_run", "args": {}},
        {"cat": "Node", "name": "shape_fence_before", "args": {"op_name": "Shape"}},
        node("shape", "Shape", CPU_PROVIDER, "int64"),
        node("gather", "Gather", CPU_PROVIDER, "int64"),
        node("dense", "MatMul", CUDA_PROVIDER, "float16"),
        node("head", "Gemm", CPU_PROVIDER, "float"),
        node("quantize", "DynamicQuantizeLinear", CPU_PROVIDER, "uint8", "float", "uint8"),
        node("integer", "MatMulInteger", CPU_PROVIDER, "int32"),
        node("integer", "MatMulInteger", CPU_PROVIDER, "int32"),  # a second run of the same node
    ]

    placement = placement_from_profile(events)

    assert placement.profiled_nodes == 6
    assert placement.nodes_by_provider == {CPU_PROVIDER: 5, CUDA_PROVIDER: 1}
    assert placement.cpu_compute == (
        "Gemm (head)",
        "DynamicQuantizeLinear (quantize)",
        "MatMulInteger (integer)",
    )
    assert placement.quantized == ("DynamicQuantizeLinear (quantize)", "MatMulInteger (integer)")
    assert "3 compute node(s) on the CPU: Gemm (head)" in placement.summary()
    # In a CPU session the CPU is meant to compute: only the quantized ops are worth a word.
    on_cpu = placement_from_profile(events, gpu_session=False)
    assert on_cpu.cpu_compute == () and "compute node" not in on_cpu.summary()


def test_cpu_engine_profiles_its_placement_when_asked(int8_colour_bundle, colour_batch):
    engine = OnnxRuntimeEngine(int8_colour_bundle, "cpu", verify_placement=True)

    assert set(engine.placement.nodes_by_provider) == {CPU_PROVIDER}
    # ORT fuses DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul into one DynamicQuantizeMatMul.
    assert [node.split(" ")[0] for node in engine.placement.quantized] == ["DynamicQuantizeMatMul"]
    # The profiled batch switched the profiler off: later batches run as usual.
    assert engine.predict(colour_batch).argmax(axis=1).tolist() == [0, 1, 2]


@pytest.mark.parametrize("graph", ["fp32", "fp16"])
def test_cpu_engine_runs_a_derived_float_graph_when_asked(int8_colour_bundle, colour_batch, graph):
    engine = create_engine(int8_colour_bundle, "cpu", graph=graph)
    int8 = create_engine(int8_colour_bundle, "cpu")

    assert engine.graph_path == float_graph_path(int8_colour_bundle, graph)
    assert engine.graph_precision == graph and engine.provider == "ONNX Runtime CPU"
    np.testing.assert_allclose(engine.predict(colour_batch), int8.predict(colour_batch), atol=2e-2)


def test_a_float_bundle_is_its_own_fp32_graph(colour_bundle):
    engine = create_engine(colour_bundle, "cpu", graph="fp32")
    assert (engine.graph_path, engine.graph_precision) == (colour_bundle.model_path, "fp32")
    assert create_engine(colour_bundle, "cpu").graph_precision == "fp32"
    with pytest.raises(ValueError, match="bundle, fp32, fp16"):
        create_engine(colour_bundle, "cpu", graph="int4")


@pytest.mark.slow
def test_float_graphs_on_the_cpu_name_the_breeds_the_int8_engine_names(shared_cats):
    """Parity of the graphs the GPU engines run, checked where a CPU can: one photo per breed."""
    if not (SHIPPED / "bundle.json").is_file():
        pytest.skip(f"no shipped bundle in {SHIPPED}")
    bundle = load_bundle(SHIPPED)
    photos = [
        sorted(folder.glob("*.jpg"))[0] for folder in sorted(p for p in shared_cats.iterdir() if p.is_dir())
    ]
    batch = stack_batch([load_and_preprocess(photo, bundle.preprocessing) for photo in photos])
    top1 = {}
    for graph in ("bundle", "fp32", "fp16"):
        with create_engine(bundle, "cpu", graph=graph, threads=2) as engine:
            top1[engine.graph_precision] = engine.predict(batch).argmax(axis=1)
            if graph != "bundle":
                assert not has_quantized_ops(onnx.load(str(engine.graph_path), load_external_data=False))

    # The shipped model knows more breeds than Oxford has: one photo for each of Oxford's 12.
    assert len(photos) == 12
    assert {photo.parent.name.replace("_", " ") for photo in photos} <= set(bundle.labels)
    for precision in ("fp32", "fp16"):
        agreement = np.mean(top1[precision] == top1["int8"])
        assert agreement >= 11 / 12, (
            f"{precision} agrees with int8 on {agreement:.0%} of {len(photos)} photos"
        )


def test_a_cuda_session_failing_its_first_batch_is_unavailable_and_auto_falls_back(
    int8_colour_bundle, fake_cuda, monkeypatch
):
    def out_of_memory(self, *args, **kwargs):
        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail("CUDA failure 2: out of memory")

    monkeypatch.setattr(engine_fakes._FakeCudaSession, "run", out_of_memory)

    with pytest.raises(EngineUnavailable, match="ONNX Runtime CUDA failed on a first batch: .*out of memory"):
        create_engine(int8_colour_bundle, "cuda")
    engine = create_engine(int8_colour_bundle, "auto")
    assert engine.provider == "ONNX Runtime CPU"
    assert "failed on a first batch" in engine.fallback_notes[-1]
