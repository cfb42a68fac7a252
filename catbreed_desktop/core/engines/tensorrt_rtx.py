"""TensorRT for RTX engine: NVIDIA's PyPI plugin for ONNX Runtime, registered through ORT's plugin-EP API.

Full TensorRT's libraries come from NVIDIA's own package index; TensorRT for RTX is a PyPI wheel
(`onnxruntime-ep-nv-tensorrt-rtx`, with `-cu12`/`-cu13` variants) holding the plugin and its
runtime, for Ampere and newer GPUs. It needs onnxruntime 1.24+ (the CPU package: onnxruntime-gpu
ships a different `onnxruntime` module). The plugin library is registered with ONNX Runtime once
per process; the plugin then lists the devices it supports (`onnxruntime.get_ep_devices()`), and
a session is given those devices. No device of its own means no NVIDIA GPU, a GPU older than
Ampere, or a driver too old for the plugin; `nvidia-smi` (installed with the driver) tells these
apart, naming the GPU and its compute capability.

It builds from the fp16 float graph `float_graph.float_graph_path` derives (TensorRT cannot run the
int8 model's integer ops), JIT-compiling kernels for the GPU at first start. Those kernels are
kept in TensorRT for RTX's runtime cache (`nv_runtime_cache_path`), a folder under
`cache_dir()/tensorrt-rtx/` named after the graph's sha256 and the GPU, so another graph or
another GPU never reads a cache made for a different one. The session is an ONNX Runtime session,
run and checked like the ONNX Runtime engines'; ONNX Runtime would quietly run on the CPU the
nodes the plugin declines, so the session is refused unless the plugin is the first provider.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import INPUT_NAME, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable
from catbreed_desktop.core.engines.names import ENGINE_TITLES, TENSORRT_RTX
from catbreed_desktop.core.engines.onnx_runtime import OnnxRuntimeEngine
from catbreed_desktop.core.files import sha256_file
from catbreed_desktop.core.install_hints import install_extra_command

PLUGIN_MODULE = "onnxruntime_ep_nv_tensorrt_rtx"


def install_hint() -> str:
    return f"{install_extra_command('tensorrt-rtx')} (onnxruntime 1.24+ and an NVIDIA RTX-class GPU, Ampere or newer)"


MIN_ONNXRUNTIME = (1, 24)
DEFAULT_MAX_BATCH = 32
MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere
SMI_TIMEOUT_S = 10

ImportModule = Callable[[str], ModuleType]
RunCommand = Callable[..., "subprocess.CompletedProcess[str]"]

_registered: set[str] = set()
_register_lock = threading.Lock()


@dataclass(frozen=True)
class RtxPlugin:
    """ONNX Runtime with the TensorRT for RTX plugin registered, and the devices it offers."""

    ort: Any
    ep_name: str
    devices: tuple[Any, ...]
    gpu_name: str
    version: str


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


@dataclass(frozen=True)
class NvidiaGpu:
    name: str
    compute_capability: tuple[int, ...]

    @property
    def supported(self) -> bool:
        return self.compute_capability >= MIN_COMPUTE_CAPABILITY


def nvidia_gpus(run: RunCommand = subprocess.run) -> list[NvidiaGpu] | None:
    """The NVIDIA GPUs `nvidia-smi` lists, or None when it is not there (no driver) or does not answer."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        result = run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    gpus = []
    for line in result.stdout.splitlines():
        name, _, capability = line.rpartition(",")
        if name.strip():
            gpus.append(NvidiaGpu(name.strip(), _version_tuple(capability)))
    return gpus


def _no_device_reason(gpus: list[NvidiaGpu] | None) -> str:
    """Why the plugin offered no device, from what nvidia-smi says."""
    if not gpus:
        return "no NVIDIA GPU found (nvidia-smi is missing or lists none); TensorRT for RTX needs an NVIDIA GPU and driver"
    gpu = gpus[0]
    capability = ".".join(map(str, gpu.compute_capability)) or "unknown"
    if not gpu.supported:
        return (
            f"the GPU is not supported: {gpu.name} has compute capability {capability}, TensorRT for RTX "
            f"needs {'.'.join(map(str, MIN_COMPUTE_CAPABILITY))} (Ampere, GeForce RTX 30xx) or newer"
        )
    return (
        f"TensorRT for RTX offered no device for {gpu.name} (compute capability {capability}): the NVIDIA "
        "driver is probably too old for the plugin's CUDA version; update the driver or install the -cu12 variant"
    )


def device_gpu_name(device: Any) -> str | None:
    """The GPU's name as ONNX Runtime's device discovery knows it, if it does."""
    metadata = dict(device.device.metadata)
    name = metadata.get("Description") or metadata.get("DeviceName") or metadata.get("Name")
    return str(name).strip() if name else None


def load_plugin(
    import_module: ImportModule = importlib.import_module,
    find_gpus: Callable[[], list[NvidiaGpu] | None] = lambda: nvidia_gpus(),
) -> RtxPlugin:
    """Register the plugin with ONNX Runtime and find a supported GPU, or `EngineUnavailable` saying why not."""
    try:
        ort = import_module("onnxruntime")
    except ImportError as error:
        raise EngineUnavailable(f"ONNX Runtime is not installed ({error}); {install_hint()}") from None
    version = str(getattr(ort, "__version__", "0"))
    if _version_tuple(version) < MIN_ONNXRUNTIME or not hasattr(ort, "register_execution_provider_library"):
        raise EngineUnavailable(
            f"onnxruntime {version} cannot load plugin execution providers; TensorRT for RTX needs "
            f"onnxruntime {'.'.join(map(str, MIN_ONNXRUNTIME))} or newer"
        )
    try:
        plugin = import_module(PLUGIN_MODULE)
    except (ImportError, OSError) as error:
        raise EngineUnavailable(
            f"TensorRT for RTX is not installed or cannot load ({error}); {install_hint()}"
        ) from None
    ep_name = str(plugin.get_ep_name())
    with _register_lock:
        if ep_name not in _registered:
            try:
                ort.register_execution_provider_library(ep_name, str(plugin.get_library_path()))
            except Exception as error:  # ORT's own exception types; a missing CUDA library ends here
                raise EngineUnavailable(
                    f"ONNX Runtime could not load the TensorRT for RTX plugin ({error}); the NVIDIA driver may be missing or too old"
                ) from None
            _registered.add(ep_name)
    every_device = tuple(ort.get_ep_devices())
    devices = tuple(device for device in every_device if device.ep_name == ep_name)
    if not devices:
        raise EngineUnavailable(_no_device_reason(find_gpus()))
    name = device_gpu_name(devices[0])
    if name is None:
        gpus = find_gpus()
        hardware = devices[0].device
        name = gpus[0].name if gpus else f"NVIDIA GPU {hardware.vendor_id:#06x}:{hardware.device_id:#06x}"
    return RtxPlugin(ort=ort, ep_name=ep_name, devices=devices[:1], gpu_name=name, version=version)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60] or "gpu"


def runtime_cache_dir(graph_sha256: str, gpu: str) -> Path:
    """The runtime-cache folder for one graph on one GPU model, under the user cache."""
    folder = paths.cache_dir() / "tensorrt-rtx" / f"{graph_sha256[:16]}-{_slug(gpu)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def provider_options(cache: Path, size: int, batch_size: int, max_batch: int) -> dict[str, str]:
    """The plugin's options: the runtime cache, and the batch sizes its engine is built for."""
    shape = f"{INPUT_NAME}:{{}}x3x{size}x{size}"
    return {
        "nv_runtime_cache_path": str(cache),
        "nv_profile_min_shapes": shape.format(1),
        "nv_profile_opt_shapes": shape.format(batch_size),
        "nv_profile_max_shapes": shape.format(max(batch_size, max_batch)),
    }


def rtx_graph(bundle: ModelBundle) -> Path:
    from catbreed_desktop.core.engines.float_graph import float_graph_path

    try:
        return float_graph_path(bundle, "fp16")
    except ValueError as error:  # quantized ops in a pattern float_graph cannot turn back
        raise EngineUnavailable(f"TensorRT for RTX needs a float graph: {error}") from None


class TensorRtRtxEngine(OnnxRuntimeEngine):
    """The fp16 graph in an ONNX Runtime session on the TensorRT for RTX plugin; runs like the ORT engines."""

    def __init__(
        self,
        bundle: ModelBundle,
        batch_size: int = 8,
        max_batch: int = DEFAULT_MAX_BATCH,
        plugin: RtxPlugin | None = None,
    ) -> None:
        # Not OnnxRuntimeEngine.__init__: the session is made from plugin devices, not provider names.
        Engine.__init__(self, bundle)
        plugin = plugin or load_plugin()
        ort = plugin.ort
        self.graph_path = rtx_graph(bundle)
        self.graph = "fp16"
        self.gpu_name = plugin.gpu_name
        self.cache_dir = runtime_cache_dir(sha256_file(self.graph_path), plugin.gpu_name)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_provider_for_devices(
            list(plugin.devices),
            provider_options(self.cache_dir, bundle.preprocessing.size, batch_size, max_batch),
        )
        try:
            session = ort.InferenceSession(str(self.graph_path), sess_options=options)
        except Exception as error:  # ORT's exceptions share no base
            raise EngineUnavailable(
                f"TensorRT for RTX could not start on {plugin.gpu_name}: {error}"
            ) from None
        active = tuple(session.get_providers())
        if not active or active[0] != plugin.ep_name:
            raise EngineUnavailable(
                f"TensorRT for RTX did not start: ONNX Runtime ran the model on {', '.join(active) or 'nothing'}"
            )
        self.session = session
        self.active_providers = active
        self.provider = ENGINE_TITLES[TENSORRT_RTX]
        self._output_names = tuple(output.name for output in session.get_outputs())
        self.placement = None
