"""The engine listing and `catbreed engines`: available or why not, graph, precision, providers.

On this (GPU-less) machine TensorRT and ONNX Runtime CUDA are unavailable for real; tests that need
them available fake the toolkit and the CUDA session as tests/test_engines.py does.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import onnxruntime
import pytest
from engine_fakes import FakeCudaOnnxRuntime, make_int8_colour_bundle

from catbreed_desktop.cli.main import main
from catbreed_desktop.core import paths
from catbreed_desktop.core.engines import onnx_runtime, tensorrt_rtx
from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
from catbreed_desktop.core.engines.float_graph import float_graph_path
from catbreed_desktop.core.engines.inventory import (
    ENGINE_NAMES,
    derived_graph,
    first_available,
    list_engines,
)
from catbreed_desktop.core.engines.tensorrt import TensorRTToolkit, load_toolkit
from catbreed_desktop.core.install_hints import install_extra_command

SHIPPED = Path(__file__).resolve().parents[1] / "models"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def no_module(name: str):
    raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def without_rtx_plugin(name: str):
    if name == tensorrt_rtx.PLUGIN_MODULE:
        no_module(name)
    return importlib.import_module(name)


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as it is, whatever it has: no tensorrt module, no TensorRT for RTX plugin, the CPU-only onnxruntime."""
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", lambda: load_toolkit(no_module))
    load_plugin = tensorrt_rtx.load_plugin
    monkeypatch.setattr(tensorrt_rtx, "load_plugin", lambda: load_plugin(without_rtx_plugin))
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)


@pytest.fixture
def int8_bundle(tmp_path):
    return make_int8_colour_bundle(tmp_path / "int8-bundle")


def test_without_a_gpu_only_the_cpu_engine_is_available_and_nothing_is_derived(int8_bundle, no_gpu):
    tensorrt, rtx, cuda, cpu, _ = list_engines(int8_bundle)

    assert [info.name for info in list_engines(int8_bundle)] == list(ENGINE_NAMES)
    assert not rtx.available and install_extra_command("tensorrt-rtx") in rtx.reason
    assert not tensorrt.available and install_extra_command("tensorrt") in tensorrt.reason
    assert not cuda.available and "install onnxruntime-gpu" in cuda.reason
    assert cpu.available and cpu.reason == ""
    assert (cpu.graph, cpu.precision, cpu.graph_ready) == (int8_bundle.model_path, "int8", True)
    assert cpu.started and cpu.providers == (CPU,)
    assert (tensorrt.precision, cuda.precision) == ("fp16", "fp16")  # fp16 unless fp32 is asked for
    assert not tensorrt.started and not cuda.started and cuda.providers == ()
    # The listing names the float graphs the GPU engines would run, and derives neither.
    for info in (tensorrt, cuda):
        assert not info.graph_ready and not info.graph.exists()
        assert info.graph.parent == paths.cache_dir() / "float-graphs"
    assert first_available([tensorrt, rtx, cuda, cpu]) is cpu


def test_the_listed_graph_is_the_file_float_graph_derives(int8_bundle, colour_bundle):
    for precision in ("fp16", "fp32"):
        listed, ready = derived_graph(int8_bundle, precision)
        assert not ready
        assert float_graph_path(int8_bundle, precision) == listed
        assert derived_graph(int8_bundle, precision) == (listed, True)
    # A float bundle is its own fp32 graph; only its fp16 graph is derived.
    assert derived_graph(colour_bundle, "fp32") == (colour_bundle.model_path, True)
    assert derived_graph(colour_bundle, "fp16")[0] == float_graph_path(colour_bundle, "fp16")


def test_tensorrt_and_cuda_listed_as_available_with_the_gpu_and_first_start_work(int8_bundle, monkeypatch):
    toolkit = TensorRTToolkit(
        trt=SimpleNamespace(__version__="10.8.0"), cudart=None, gpu_name="NVIDIA Test GPU"
    )
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", lambda: toolkit)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: True)

    tensorrt, _, cuda, _, _ = list_engines(int8_bundle, fp16=True)
    assert tensorrt.available and cuda.available
    assert tensorrt.gpu == cuda.gpu == "NVIDIA Test GPU"
    assert tensorrt.precision == "fp16" and "TensorRT 10.8.0" in tensorrt.notes
    assert "build the TensorRT engine" in tensorrt.first_start and "derive" in tensorrt.first_start
    assert cuda.first_start == "derive the float graph (seconds)"

    float_graph_path(int8_bundle, "fp16")  # derived once, by either engine
    tensorrt, _, cuda, _, _ = list_engines(int8_bundle, fp16=True)
    assert tensorrt.graph_ready and cuda.graph_ready and cuda.first_start == ""
    assert tensorrt.first_start.startswith("build the TensorRT engine (minutes): no cached engine")


def test_check_starts_the_engines_and_reports_what_really_ran(int8_bundle, monkeypatch):
    fake = FakeCudaOnnxRuntime(onnxruntime.InferenceSession)
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", lambda: load_toolkit(no_module))
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: True)
    monkeypatch.setattr(onnxruntime, "InferenceSession", fake)

    tensorrt, _, cuda, cpu, _ = list_engines(int8_bundle, check=("tensorrt", "cuda", "cpu"))

    assert tensorrt.checked == "not started: not available"
    assert cuda.started and cuda.providers == (CUDA, CPU)
    assert cuda.graph == float_graph_path(int8_bundle, "fp16") and cuda.graph_ready
    assert cuda.checked.startswith("finite outputs")
    (placement,) = [note for note in cuda.notes if note.startswith("placement:")]
    assert f"{CUDA}:" in placement and CPU not in placement
    assert cpu.checked.startswith("finite outputs") and cpu.providers == (CPU,)
    assert any("integer-quantized" in note for note in cpu.notes)


def test_check_reports_a_cuda_session_that_fell_back_to_the_cpu(int8_bundle, monkeypatch):
    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("this machine really has ONNX Runtime CUDA")
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: True)

    (cuda,) = [info for info in list_engines(int8_bundle, check=["cuda"]) if info.name == "cuda"]

    assert not cuda.available and "fell back to CPUExecutionProvider" in cuda.reason
    assert cuda.checked.startswith("failed to start")
    with pytest.raises(ValueError, match="unknown engine 'gpu'"):
        list_engines(int8_bundle, check=["gpu"])


@pytest.fixture
def shipped():
    if not (SHIPPED / "bundle.json").is_file():
        pytest.skip(f"no shipped bundle in {SHIPPED}")
    return SHIPPED


def test_catbreed_engines_prints_a_table(shipped, no_gpu, capsys):
    assert main(["engines", "--model", str(shipped), "--gpu-precision", "fp32"]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split() == ["ENGINE", "AVAILABLE", "PRECISION", "PROVIDERS", "GRAPH"]
    cpu_row = next(line for line in lines if line.startswith("ONNX Runtime CPU"))
    assert cpu_row.split()[3:7] == ["yes", "int8", CPU, str(shipped / "model.onnx")]
    tensorrt_row = next(line for line in lines if line.startswith("TensorRT"))
    assert tensorrt_row.split()[1:5] == ["no", "fp32", "not", "started"]
    assert tensorrt_row.endswith("-fp32-v1.onnx (not derived yet)")
    assert "why not: TensorRT is not installed" in out
    assert "why not: ONNX Runtime CUDA is not available" in out and "onnxruntime-gpu" in out
    assert lines[-1] == "auto tries first: ONNX Runtime CPU"


def test_catbreed_engines_json(shipped, no_gpu, capsys):
    assert main(["engines", "--model", str(shipped), "--json"]) == 0

    listing = json.loads(capsys.readouterr().out)
    assert listing["model"] == str(shipped) and listing["auto"] == "cpu"
    tensorrt, rtx, cuda, cpu, openvino = listing["engines"]
    assert (rtx["name"], rtx["available"], rtx["precision"]) == ("tensorrt-rtx", False, "fp16")
    assert "No module named 'onnxruntime_ep_nv_tensorrt_rtx'" in rtx["reason"]
    assert openvino["name"] == "openvino" and openvino["started"] is False
    assert (tensorrt["name"], tensorrt["available"], tensorrt["precision"]) == ("tensorrt", False, "fp16")
    assert "No module named 'tensorrt'" in tensorrt["reason"]
    assert (cuda["name"], cuda["available"], cuda["precision"]) == ("cuda", False, "fp16")
    assert "onnxruntime-gpu" in cuda["reason"] and cuda["providers"] == []
    assert tensorrt["graph"] == cuda["graph"] and not cuda["graph_ready"]  # both would run the fp16 graph
    assert not Path(cuda["graph"]).exists()
    assert cpu == {
        "name": "cpu",
        "title": "ONNX Runtime CPU",
        "available": True,
        "reason": None,
        "graph": str(shipped / "model.onnx"),
        "precision": "int8",
        "graph_ready": True,
        "started": True,
        "providers": [CPU],
        "gpu": None,
        "checked": None,
        "first_start": None,
        "notes": [],
    }


def test_catbreed_engines_check_on_the_cpu(int8_bundle, no_gpu, capsys):
    assert main(["engines", "--model", str(int8_bundle.path), "--check", "--engine", "cpu", "--json"]) == 0

    tensorrt, rtx, cuda, cpu, openvino = json.loads(capsys.readouterr().out)["engines"]
    # --engine cpu: only the CPU is started
    assert tensorrt["checked"] is None and rtx["checked"] is None and cuda["checked"] is None
    assert openvino["checked"] is None
    assert cpu["checked"].startswith("finite outputs") and cpu["providers"] == [CPU]


def test_catbreed_engines_without_a_model_says_so(tmp_path, capsys):
    assert main(["engines", "--model", str(tmp_path / "nowhere")]) == 2
    assert "cannot use the model" in capsys.readouterr().err
