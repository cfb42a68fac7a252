"""ONNX Runtime engine on CUDA or CPU: which graph each runs, and a check of what really runs where.

The CPU engine runs the bundle's own model (the shipped one is int8, which ONNX Runtime's CPU
kernels run fastest). The CUDA engine runs the fp16 float graph `float_graph.float_graph_path`
derives from it: the int8 model's DynamicQuantizeLinear/MatMulInteger/ConvInteger have no CUDA
kernels, so ONNX Runtime would run them on the CPU between memory copies (117 photos/s
against 4,219 for fp16, `bench/bench_engines.py`). `graph=` picks another graph for either device (parity tests, benchmarks).

ONNX Runtime quietly drops a requested provider it cannot start (no GPU, missing CUDA or cuDNN
libraries, or the CPU-only package) and runs on CPU. After the session starts we read
`session.get_providers()` and refuse to call a CPU session "CUDA". ONNX Runtime also assigns single
nodes to the CPU provider inside a CUDA session when CUDA has no kernel for them; `get_providers`
does not show that. With `verify_placement` (the default on CUDA) the engine therefore profiles one
batch of zeros and reads which provider ran each node (`Placement`): nodes on the CPU that produce
floating-point tensors or are integer-quantized ops are compute on the CPU, and are reported;
ONNX Runtime's deliberate CPU placement of shape arithmetic (int64 and bool outputs) is not.
What ORT offers otherwise falls short: `session.disable_cpu_ep_fallback` refuses any session with
a node on the CPU provider, shape arithmetic included, and refuses CPU in the provider list;
`get_provider_graph_assignment_info` (ORT 1.2x+, with `session.record_ep_graph_assignment_info`)
names op types but not tensor types, and older onnxruntime-gpu lacks it; node placement in ORT's
verbose log goes to stderr, out of Python's reach. The profile is in every version and says both.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from catbreed_desktop import TELEMETRY_VARIABLE
from catbreed_desktop.core.bundle import INPUT_NAME, BundleError, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, check_batch, check_outputs
from catbreed_desktop.core.engines.names import CPU, CUDA, ENGINE_TITLES
from catbreed_desktop.core.install_hints import replace_package_command

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
PROVIDER_NAMES = {device: ENGINE_TITLES[device] for device in (CUDA, CPU)}
# "bundle" is the bundle's model file as shipped; "fp32" and "fp16" are graphs derived from it.
GRAPHS = ("bundle", "fp32", "fp16")
DEFAULT_GRAPHS = {CUDA: "fp16", CPU: "bundle"}
# ORT's own log level 3 = errors only: its warnings about a missing provider are what we report.
_ORT_ERRORS_ONLY = 3
# Element types (as ORT's profiler names them) whose tensors are the model's arithmetic, not its
# shape bookkeeping.
_FLOAT_TYPES = frozenset({"float", "float16", "double", "bfloat16"})


def cuda_install_hint() -> str:
    """How to get ONNX Runtime with CUDA here: onnxruntime and onnxruntime-gpu install the same module."""
    return f"install onnxruntime-gpu instead of onnxruntime: {replace_package_command('onnxruntime', 'gpu')}"


def import_onnxruntime() -> Any:
    """The onnxruntime module, with its telemetry events off (see `catbreed_desktop.TELEMETRY_VARIABLE`)."""
    import onnxruntime

    if os.environ.get(TELEMETRY_VARIABLE) != "0":
        onnxruntime.disable_telemetry_events()
    return onnxruntime


def cuda_provider_installed() -> bool:
    """True when the installed onnxruntime build offers CUDA (the onnxruntime-gpu package)."""
    onnxruntime = import_onnxruntime()
    return CUDA_PROVIDER in onnxruntime.get_available_providers()


def cuda_unavailable_reason() -> str | None:
    """Why ONNX Runtime CUDA cannot even be tried here, in the engine's words; None when it can."""
    if cuda_provider_installed():
        return None
    return f"ONNX Runtime CUDA is not available: the installed onnxruntime has no CUDA provider ({cuda_install_hint()})"


@lru_cache(maxsize=16)
def _model_precision(path: str, size: int, mtime_ns: int) -> str:
    import onnx

    from catbreed_desktop.core.engines.float_graph import has_quantized_ops

    model = onnx.load(path, load_external_data=False)
    if has_quantized_ops(model):
        return "int8"
    kinds = Counter(tensor.data_type for tensor in model.graph.initializer)
    return "fp16" if kinds[onnx.TensorProto.FLOAT16] > kinds[onnx.TensorProto.FLOAT] else "fp32"


def model_precision(path: Path) -> str:
    """The model's precision: int8 when it has integer-quantized ops, else fp16 or fp32 by its weights."""
    stat = Path(path).stat()
    # Keyed by size and mtime as well, so a replaced file is read again.
    return _model_precision(str(path), stat.st_size, stat.st_mtime_ns)


def graph_for(bundle: ModelBundle, graph: str) -> Path:
    """The ONNX file `graph` ("bundle", "fp32", "fp16") names for `bundle`, deriving a float graph if needed.

    Deriving takes seconds the first time (the result is cached); `UnsupportedQuantization` (a
    ValueError) says when the bundle's quantized ops cannot be turned back into float.
    """
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; use one of {', '.join(GRAPHS)}")
    if graph == "bundle":
        return bundle.model_path
    from catbreed_desktop.core.engines.float_graph import float_graph_path

    return float_graph_path(bundle, graph)


@dataclass(frozen=True)
class Placement:
    """Which execution provider ran each node of one profiled batch, from ORT's session profile."""

    nodes_by_provider: Mapping[str, int]
    # In a GPU session, "OpType (node name)" of the nodes the CPU provider ran that compute on
    # float tensors or are integer-quantized ops: the work a GPU session should not leave on the
    # CPU. Always empty for a CPU session, where the CPU is meant to do everything.
    cpu_compute: tuple[str, ...] = ()
    # "OpType (node name)" of integer-quantized ops on any provider.
    quantized: tuple[str, ...] = ()
    profiled_nodes: int = 0

    def summary(self) -> str:
        """One line: nodes per provider, then the compute nodes found on the CPU, if any."""
        counts = ", ".join(
            f"{provider}: {count}" for provider, count in sorted(self.nodes_by_provider.items())
        )
        text = f"{self.profiled_nodes} nodes ran ({counts or 'none'})"
        if self.cpu_compute:
            shown = ", ".join(self.cpu_compute[:5]) + (" ..." if len(self.cpu_compute) > 5 else "")
            text += f"; {len(self.cpu_compute)} compute node(s) on the CPU: {shown}"
        if self.quantized:
            text += f"; {len(self.quantized)} integer-quantized node(s)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes_by_provider": dict(self.nodes_by_provider),
            "cpu_compute": list(self.cpu_compute),
            "quantized": list(self.quantized),
        }


def placement_from_profile(events: Iterable[Mapping[str, Any]], gpu_session: bool = True) -> Placement:
    """The `Placement` recorded in ORT profiling events (the JSON list `end_profiling` writes).

    `gpu_session` says whether the session was meant to compute on a GPU (CUDA first in its
    providers); only then are CPU nodes computing on floats or integers `cpu_compute`.
    """
    from catbreed_desktop.core.engines.float_graph import QUANTIZED_OP_TYPES

    seen: dict[str, tuple[str, str, bool]] = {}  # node name -> (op, provider, writes floats)
    for event in events:
        args = event.get("args") or {}
        name = str(event.get("name", ""))
        # Each node has fence and kernel events; the kernel event carries the provider and types.
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or "provider" not in args:
            continue
        node = name.removesuffix("_kernel_time")
        outputs = {kind for value in args.get("output_type_shape") or () for kind in value}
        seen[node] = (str(args.get("op_name", "?")), str(args["provider"]), bool(outputs & _FLOAT_TYPES))
    by_provider = Counter(provider for _, provider, _ in seen.values())
    quantized = tuple(f"{op} ({node})" for node, (op, _, _) in seen.items() if op in QUANTIZED_OP_TYPES)
    cpu_compute = tuple(
        f"{op} ({node})"
        for node, (op, provider, floats) in seen.items()
        if gpu_session and provider == CPU_PROVIDER and (floats or op in QUANTIZED_OP_TYPES)
    )
    return Placement(dict(by_provider), cpu_compute, quantized, profiled_nodes=len(seen))


class OnnxRuntimeEngine(Engine):
    """A bundle's model in an ONNX Runtime session on `device` ("cuda" or "cpu").

    `graph` picks the ONNX file (`GRAPHS`; default fp16 on CUDA, the bundle's own model on CPU).
    `verify_placement` (default: on CUDA only) profiles one batch at start to fill `placement`.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str = CPU,
        threads: int | None = None,
        *,
        graph: str | None = None,
        verify_placement: bool | None = None,
    ) -> None:
        super().__init__(bundle)
        if device not in PROVIDER_NAMES:
            raise ValueError(f"unknown ONNX Runtime device {device!r}; use 'cuda' or 'cpu'")
        graph = graph or DEFAULT_GRAPHS[device]
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; use one of {', '.join(GRAPHS)}")
        verify_placement = device == CUDA if verify_placement is None else verify_placement
        onnxruntime = import_onnxruntime()

        if device == CUDA and (reason := cuda_unavailable_reason()):
            raise EngineUnavailable(reason)
        try:
            self.graph_path = graph_for(bundle, graph)
        except ValueError as error:  # quantized ops in a pattern float_graph cannot turn back
            raise EngineUnavailable(f"{PROVIDER_NAMES[device]} needs a float graph: {error}") from None
        self.graph = graph
        options = onnxruntime.SessionOptions()
        options.log_severity_level = _ORT_ERRORS_ONLY
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # Idle ORT threads otherwise spin on the cores that the photo-decoding threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        profile_folder = None
        if verify_placement:
            profile_folder = Path(tempfile.mkdtemp(prefix="catbreed-placement-"))
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_folder / "placement")
        providers: list[Any] = [CPU_PROVIDER]
        if device == CUDA:
            providers = [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
        try:
            session = self._start_session(onnxruntime, options, providers, device)
            active = session.get_providers()
            if device == CUDA and (not active or active[0] != CUDA_PROVIDER):
                raise EngineUnavailable(
                    "ONNX Runtime CUDA did not start: no CUDA GPU answered or the CUDA/cuDNN libraries are "
                    f"missing, so ONNX Runtime fell back to {', '.join(active) or 'nothing'}"
                )
            self.session = session
            self.active_providers: tuple[str, ...] = tuple(active)
            self.provider = PROVIDER_NAMES[device]
            self._output_names = tuple(output.name for output in session.get_outputs())
            self.placement: Placement | None = None
            if verify_placement:
                self.placement = self._profile_placement(gpu_session=device == CUDA)
        finally:
            if profile_folder is not None:
                shutil.rmtree(profile_folder, ignore_errors=True)
        if device == CUDA and self.placement is not None and self.placement.cpu_compute:
            # Still far faster than the CPU engine, so it runs; but it is not what it should be.
            note = f"ONNX Runtime CUDA runs part of the model on the CPU: {self.placement.summary()}"
            log.warning("%s", note)
            self.fallback_notes.append(note)

    def _start_session(self, onnxruntime: Any, options: Any, providers: list[Any], device: str) -> Any:
        try:
            with warnings.catch_warnings():
                # A provider ORT cannot start is reported by the caller, in our words, not as its warning.
                warnings.simplefilter("ignore", UserWarning)
                if device == CUDA:
                    onnxruntime.set_default_logger_severity(_ORT_ERRORS_ONLY)
                return onnxruntime.InferenceSession(
                    str(self.graph_path), sess_options=options, providers=providers
                )
        except Exception as error:  # ORT raises its own exception types without a common base
            if device == CUDA:
                raise EngineUnavailable(f"ONNX Runtime CUDA could not start: {error}") from None
            raise BundleError(f"ONNX Runtime cannot load {self.graph_path}: {error}") from None

    def _profile_placement(self, gpu_session: bool) -> Placement:
        """Run one batch of zeros under ORT's profiler (which then stops) and read where each node ran."""
        size = self.bundle.preprocessing.size
        try:
            self.session.run(None, {INPUT_NAME: np.zeros((1, 3, size, size), dtype=np.float32)})
            profile = Path(self.session.end_profiling())
        except Exception as error:  # ORT's exceptions share no base; a GPU failing its first batch
            raise EngineUnavailable(f"{self.provider} failed on a first batch: {error}") from None
        try:
            events = json.loads(profile.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise EngineUnavailable(f"cannot read ONNX Runtime's profile {profile}: {error}") from None
        return placement_from_profile(events if isinstance(events, list) else [], gpu_session)

    @property
    def graph_precision(self) -> str:
        """The precision of the graph this session runs: int8, fp16 or fp32."""
        return self.graph if self.graph != "bundle" else model_precision(self.graph_path)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        array = check_batch(batch, self.bundle)
        outputs = self.session.run(None, {INPUT_NAME: array})
        # ORT returns what the graph computes even where that contradicts its declared shapes.
        return check_outputs(dict(zip(self._output_names, outputs, strict=True)), self.bundle, len(array))
