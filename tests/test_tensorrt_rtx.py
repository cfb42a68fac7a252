"""TensorRT for RTX without a GPU: every refusal in words, the runtime cache's key, and where auto puts it.

Nothing here pretends to run a GPU. `FakeOrt` stands for onnxruntime with the plugin-EP API: it
records the library registered and the options a session was given, and lists the devices a test
says the plugin offers. Sessions "on the plugin" are real CPU sessions that report the plugin as
their first provider, which is what the engine checks; they prove the wiring, not the GPU.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnxruntime
import pytest

from catbreed_desktop.cli.main import main
from catbreed_desktop.core import paths
from catbreed_desktop.core.engines import EngineUnavailable, create_engine, onnx_runtime, tensorrt_rtx
from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
from catbreed_desktop.core.engines.inventory import list_engines
from catbreed_desktop.core.engines.names import ENGINE_NAMES, GPU_ENGINES
from catbreed_desktop.core.engines.tensorrt_rtx import NvidiaGpu, load_plugin
from catbreed_desktop.core.files import sha256_file
from catbreed_desktop.core.install_hints import install_extra_command

EP = "NvTensorRTRTXExecutionProvider"
GPU = "NVIDIA GeForce RTX 4090"


def device(ep_name: str = EP, name: str | None = GPU) -> Any:
    hardware = SimpleNamespace(
        type="OrtHardwareDeviceType.GPU",
        vendor="NVIDIA",
        vendor_id=0x10DE,
        device_id=0x2684,
        metadata={"Description": name} if name else {},
    )
    return SimpleNamespace(ep_name=ep_name, device=hardware)


class FakeSessionOptions:
    def __init__(self) -> None:
        self.devices: list[Any] = []
        self.provider_options: dict[str, str] = {}
        self.log_severity_level = 0

    def add_provider_for_devices(self, devices: list[Any], options: dict[str, str]) -> None:
        self.devices, self.provider_options = devices, options


class FakeOrt:
    """onnxruntime as the plugin-EP API shows it, with `devices` offered by the registered plugin."""

    def __init__(self, devices=(), version: str = "1.24.1", providers=(EP, "CPUExecutionProvider")):
        self.__version__ = version
        self.devices = list(devices)
        self.providers = list(providers)
        self.registered: list[tuple[str, str]] = []
        self.sessions: list[FakeSessionOptions] = []
        self.SessionOptions = FakeSessionOptions

    def register_execution_provider_library(self, name: str, path: str) -> None:
        self.registered.append((name, path))

    def get_ep_devices(self) -> list[Any]:
        cpu = SimpleNamespace(ep_name="CPUExecutionProvider", device=SimpleNamespace(metadata={}))
        return [cpu, *(self.devices if self.registered else ())]

    def InferenceSession(self, path: str, sess_options: FakeSessionOptions) -> Any:  # noqa: N802
        self.sessions.append(sess_options)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        session.get_providers = lambda: list(self.providers)
        return session


PLUGIN = SimpleNamespace(
    get_ep_name=lambda: EP, get_library_path=lambda: "/opt/plugin/libonnxruntime_providers_nv_tensorrt_rtx.so"
)


def importer(ort: Any, plugin: Any = PLUGIN):
    def import_module(name: str) -> Any:
        if name == "onnxruntime":
            return ort
        if name == tensorrt_rtx.PLUGIN_MODULE:
            if plugin is None:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return plugin
        raise AssertionError(f"unexpected import of {name}")

    return import_module


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test registers the plugin with its own fake onnxruntime."""
    monkeypatch.setattr(tensorrt_rtx, "_registered", set())


def no_gpus() -> list[NvidiaGpu] | None:
    return None


def test_plugin_not_installed_names_the_extra():
    with pytest.raises(EngineUnavailable) as refused:
        load_plugin(importer(FakeOrt(), plugin=None), find_gpus=no_gpus)
    assert "TensorRT for RTX is not installed" in str(refused.value)
    assert install_extra_command("tensorrt-rtx") in str(refused.value)


def test_onnxruntime_too_old_for_plugins_is_refused_before_importing_the_plugin():
    with pytest.raises(EngineUnavailable, match=r"onnxruntime 1\.22\.0 cannot load plugin .* 1\.24 or newer"):
        load_plugin(importer(FakeOrt(version="1.22.0"), plugin=None), find_gpus=no_gpus)


def test_no_gpu_is_told_apart_from_an_unsupported_gpu_and_an_old_driver():
    ort = FakeOrt(devices=[])
    with pytest.raises(EngineUnavailable, match="no NVIDIA GPU found"):
        load_plugin(importer(ort), find_gpus=no_gpus)
    assert ort.registered == [(EP, PLUGIN.get_library_path())]

    turing = [NvidiaGpu("NVIDIA GeForce RTX 2080", (7, 5))]
    with pytest.raises(EngineUnavailable) as refused:
        load_plugin(importer(FakeOrt()), find_gpus=lambda: turing)
    assert str(refused.value).startswith(
        "the GPU is not supported: NVIDIA GeForce RTX 2080 has compute capability 7.5"
    )
    assert "8.0 (Ampere" in str(refused.value)

    ada = [NvidiaGpu(GPU, (8, 9))]
    with pytest.raises(EngineUnavailable, match="driver is probably too old"):
        load_plugin(importer(FakeOrt()), find_gpus=lambda: ada)


def test_a_plugin_onnx_runtime_cannot_load_is_refused_in_words():
    ort = FakeOrt()

    def refuse(name: str, path: str) -> None:
        raise RuntimeError("libcudart.so.13: cannot open shared object file")

    ort.register_execution_provider_library = refuse  # type: ignore[method-assign]
    with pytest.raises(EngineUnavailable, match="could not load the TensorRT for RTX plugin .*libcudart"):
        load_plugin(importer(ort), find_gpus=no_gpus)


def test_nvidia_smi_output_is_read_and_its_absence_is_none(monkeypatch):
    def run(command, **kwargs):
        assert kwargs["timeout"] == tensorrt_rtx.SMI_TIMEOUT_S
        return subprocess.CompletedProcess(command, 0, "NVIDIA GeForce RTX 3060, 8.6\nTesla T4, 7.5\n", "")

    monkeypatch.setattr(tensorrt_rtx.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    gpus = tensorrt_rtx.nvidia_gpus(run)
    assert gpus == [NvidiaGpu("NVIDIA GeForce RTX 3060", (8, 6)), NvidiaGpu("Tesla T4", (7, 5))]
    assert [gpu.supported for gpu in gpus] == [True, False]
    monkeypatch.setattr(tensorrt_rtx.shutil, "which", lambda name: None)
    assert tensorrt_rtx.nvidia_gpus(run) is None


def rtx_engine(bundle, ort: FakeOrt, **kwargs):
    plugin = load_plugin(importer(ort), find_gpus=no_gpus)
    return tensorrt_rtx.TensorRtRtxEngine(bundle, plugin=plugin, **kwargs)


def test_the_session_gets_the_fp16_graph_and_a_runtime_cache_keyed_by_graph_and_gpu(colour_bundle):
    ort = FakeOrt(devices=[device()])

    engine = rtx_engine(colour_bundle, ort, batch_size=8)

    assert engine.provider == "TensorRT for RTX" and engine.gpu_name == GPU
    assert engine.graph_precision == "fp16" and engine.graph_path.name.endswith("-fp16-v1.onnx")
    (options,) = ort.sessions
    assert [d.ep_name for d in options.devices] == [EP]
    cache = Path(options.provider_options["nv_runtime_cache_path"])
    assert cache == engine.cache_dir and cache.is_dir()
    assert cache.parent == paths.cache_dir() / "tensorrt-rtx"
    assert cache.name == f"{sha256_file(engine.graph_path)[:16]}-NVIDIA-GeForce-RTX-4090"
    assert options.provider_options["nv_profile_opt_shapes"] == "pixel_values:8x3x32x32"
    assert options.provider_options["nv_profile_max_shapes"] == "pixel_values:32x3x32x32"
    # Another GPU model (in another process, so registered again) never reads this cache.
    tensorrt_rtx._registered.clear()
    other = rtx_engine(colour_bundle, FakeOrt(devices=[device(name="NVIDIA RTX A2000")]))
    assert other.cache_dir != engine.cache_dir and other.cache_dir.name.endswith("NVIDIA-RTX-A2000")


def test_a_session_onnx_runtime_moved_to_the_cpu_is_not_called_tensorrt_for_rtx(colour_bundle):
    ort = FakeOrt(devices=[device()], providers=["CPUExecutionProvider"])
    with pytest.raises(
        EngineUnavailable, match="did not start: ONNX Runtime ran the model on CPUExecutionProvider"
    ):
        rtx_engine(colour_bundle, ort)


def test_the_registration_happens_once_per_process(colour_bundle):
    ort = FakeOrt(devices=[device()])
    rtx_engine(colour_bundle, ort)
    rtx_engine(colour_bundle, ort)
    assert len(ort.registered) == 1


@pytest.fixture
def machine(monkeypatch):
    """TensorRT missing, ONNX Runtime CUDA not installed; TensorRT for RTX as each test says."""

    def missing_tensorrt(*args, **kwargs):
        raise EngineUnavailable("TensorRT is not installed (test)")

    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing_tensorrt)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)

    def with_plugin(ort: FakeOrt, find_gpus=no_gpus) -> None:
        original = load_plugin
        monkeypatch.setattr(tensorrt_rtx, "load_plugin", lambda: original(importer(ort), find_gpus=find_gpus))

    return with_plugin


def test_auto_tries_tensorrt_then_tensorrt_for_rtx_then_cuda_then_the_cpu(colour_bundle, machine):
    assert GPU_ENGINES == ("tensorrt", "tensorrt-rtx", "cuda") == ENGINE_NAMES[:3]
    machine(FakeOrt(devices=[device()]))

    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "TensorRT for RTX"
    assert engine.fallback_notes == ["TensorRT skipped: TensorRT is not installed (test)"]


def test_auto_passes_over_an_unsupported_gpu_and_says_why(colour_bundle, machine):
    machine(FakeOrt(), find_gpus=lambda: [NvidiaGpu("Tesla T4", (7, 5))])

    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "ONNX Runtime CPU"
    rtx_note = engine.fallback_notes[1]
    assert rtx_note.startswith("TensorRT for RTX skipped: the GPU is not supported: Tesla T4")
    with pytest.raises(EngineUnavailable, match="not supported: Tesla T4"):
        create_engine(colour_bundle, "tensorrt-rtx")


def test_catbreed_engines_says_why_tensorrt_for_rtx_cannot_run(colour_bundle, machine, capsys):
    machine(FakeOrt(), find_gpus=lambda: [NvidiaGpu("Tesla T4", (7, 5))])

    assert main(["engines", "--model", str(colour_bundle.path)]) == 0

    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("TensorRT for RTX"))
    assert row.split()[3:5] == ["no", "fp16"]
    assert "why not: the GPU is not supported: Tesla T4 has compute capability 7.5" in out


def test_the_listing_names_the_gpu_and_the_first_start_work(colour_bundle, machine):
    machine(FakeOrt(devices=[device()]))

    (rtx,) = [info for info in list_engines(colour_bundle) if info.name == "tensorrt-rtx"]

    assert rtx.available and rtx.gpu == GPU and not rtx.started
    assert rtx.first_start.startswith("derive the float graph") and "runtime cache" in rtx.first_start
    assert rtx.notes == (f"plugin {EP} on onnxruntime 1.24.1",)
