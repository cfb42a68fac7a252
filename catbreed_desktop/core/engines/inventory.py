"""The engine listing behind `catbreed engines` and the settings dialog: what could run a bundle, and how.

`list_engines(bundle)` reports, for every engine in `ENGINE_NAMES` (TensorRT, TensorRT for RTX,
ONNX Runtime CUDA, ONNX Runtime CPU, OpenVINO CPU): whether the engine can run here (or the message it would raise), which graph file it would run and at which
precision, whether that graph is already derived, and the execution providers really active.
The plain listing is quick: it never derives a float graph (seconds) or builds a TensorRT engine
(minutes), and it starts only the ONNX Runtime CPU engine, whose session opens in a fraction of a
second, so only its providers are known; OpenVINO is imported but compiles nothing, and TensorRT
for RTX is registered with ONNX Runtime to learn which GPU it supports, without building. `check=` starts the engines named (deriving and
building what they need), runs one small batch through each and reports the providers really
active, where ONNX Runtime placed the nodes and whether the outputs were finite.

With `server=` the listing ends with a Triton Inference Server row: it reaches the server and
checks that it serves the bundle's model (a few small requests); `check` may name "triton" then.
`first_available` never picks it, as "auto" never does.

TensorRT, CUDA, ONNX Runtime, OpenVINO, the TensorRT for RTX plugin and tritonclient are imported only
inside the calls, as the engines do.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from catbreed_desktop.core.bundle import LOGITS_NAME, BundleError, ModelBundle
from catbreed_desktop.core.engines import onnx_runtime, openvino_engine, tensorrt, tensorrt_rtx
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable
from catbreed_desktop.core.engines.names import (
    CPU,
    CUDA,
    DEFAULT_BATCH_SIZE,
    ENGINE_NAMES,
    ENGINE_TITLES,
    OPENVINO,
    TENSORRT,
    TENSORRT_RTX,
    TRITON,
)
from catbreed_desktop.core.install_hints import install_extra_command


@dataclass(frozen=True)
class EngineInfo:
    """What one engine would do with a bundle on this machine."""

    name: str  # a name in `ENGINE_NAMES`, or "triton", as `create_engine` and the settings name it
    title: str
    available: bool
    reason: str  # why it cannot run, in the words the engine itself would raise; "" when it can
    graph: Path  # the ONNX file it runs (or would run)
    precision: str  # "int8", "fp16" or "fp32"
    graph_ready: bool  # False while the float graph is still to be derived at first start
    providers: tuple[str, ...] = ()  # really active; empty when the engine was not started
    started: bool = False
    gpu: str = ""  # the GPU's name, when something asked the driver
    checked: str = ""  # the `check` result: "" when not checked
    first_start: str = ""  # the slow work its first start does (deriving, building); "" when none
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "available": self.available,
            "reason": self.reason or None,
            "graph": str(self.graph),
            "precision": self.precision,
            "graph_ready": self.graph_ready,
            "started": self.started,
            "providers": list(self.providers),
            "gpu": self.gpu or None,
            "checked": self.checked or None,
            "first_start": self.first_start or None,
            "notes": list(self.notes),
        }


def derived_graph(bundle: ModelBundle, precision: str) -> tuple[Path, bool]:
    """The file `float_graph_path(bundle, precision)` returns, and whether it exists yet, without deriving.

    A bundle without quantized ops is its own fp32 graph; a derived graph is complete once its
    JSON record, written last, is there too.
    """
    from catbreed_desktop.core.engines import float_graph

    graph, record = float_graph.cache_files(bundle, precision)
    if precision == "fp32" and onnx_runtime.model_precision(bundle.model_path) != "int8":
        return bundle.model_path, True
    return graph, graph.is_file() and record.is_file()


def list_engines(
    bundle: ModelBundle,
    *,
    fp16: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    check: Collection[str] = (),
    server: str | None = None,
    server_timeout: float | None = None,
) -> list[EngineInfo]:
    """One `EngineInfo` per engine in `ENGINE_NAMES` order; `check` names the engines to start and try.

    `fp16` and `batch_size` are the settings TensorRT would be built with (they pick its graph and
    its cached engine). `server`, a Triton server's URL, adds its row at the end (each request to it
    under `server_timeout` seconds, by default the engine's own deadline). Never raises for
    an engine that cannot run: that is what `reason` is for.
    """
    known = (*ENGINE_NAMES, TRITON) if server else ENGINE_NAMES
    unknown = set(check) - set(known)
    if unknown:
        raise ValueError(f"unknown engine {sorted(unknown)[0]!r}; choose from {', '.join(known)}")
    try:
        precision = onnx_runtime.model_precision(bundle.model_path)  # cached for the calls below
    except Exception as error:  # onnx's protobuf errors share no base; the listing must not stop
        reason = f"cannot read {bundle.model_path}: {error}"
        return [
            EngineInfo(name, ENGINE_TITLES[name], False, reason, bundle.model_path, "?", True)
            for name in ENGINE_NAMES
        ]
    infos = [
        _tensorrt_info(bundle, fp16, batch_size),
        _tensorrt_rtx_info(bundle),
        _cuda_info(bundle),
        _cpu_info(bundle, precision),
        _openvino_info(bundle, precision),
    ]
    gpu = next((info.gpu for info in infos if info.gpu), "")
    # ONNX Runtime CUDA does not name the GPU; TensorRT or TensorRT for RTX asked, and it is the same device 0.
    infos = [replace(info, gpu=gpu) if info.name == CUDA and info.available else info for info in infos]
    infos = [_checked(info, bundle, fp16, batch_size) if info.name in check else info for info in infos]
    if server:
        infos.append(_triton_info(bundle, server, TRITON in check, server_timeout))
    return infos


def first_available(infos: list[EngineInfo]) -> EngineInfo | None:
    """The engine `create_engine(..., "auto")` tries first among those listed as available."""
    return next((info for info in infos if info.available and info.name in ENGINE_NAMES), None)


def _triton_info(bundle: ModelBundle, server: str, check: bool, timeout_s: float | None = None) -> EngineInfo:
    """The Triton row: the server reached and its model checked; with `check`, one batch run through it."""
    from catbreed_desktop.core.engines.triton.client import DEFAULT_TIMEOUT_S, TritonEngine

    info = EngineInfo(TRITON, ENGINE_TITLES[TRITON], False, "", bundle.model_path, "server's", True)
    started = time.perf_counter()
    try:
        engine = TritonEngine(bundle, server, timeout_s=timeout_s or DEFAULT_TIMEOUT_S)
    except EngineUnavailable as error:
        return replace(info, reason=str(error), checked="failed to start" if check else "")
    with engine:
        notes = (f"server batches up to {engine.server_max_batch} photos" if engine.server_max_batch else "",)
        info = replace(
            info,
            available=True,
            started=True,
            providers=(engine.provider,),
            notes=tuple(n for n in notes if n),
        )
        if not check:
            return info
        try:
            finite = _finite_on_one_batch(engine, bundle)
        except (RuntimeError, ValueError) as error:
            return replace(info, available=False, reason=str(error), checked=f"started, then failed: {error}")
        outputs = "finite" if finite else "NON-FINITE"
        return replace(info, checked=f"{outputs} outputs; answered in {time.perf_counter() - started:.1f} s")


def _tensorrt_info(bundle: ModelBundle, fp16: bool, batch_size: int) -> EngineInfo:
    precision = "fp16" if fp16 else "fp32"
    graph, ready = derived_graph(bundle, precision)
    info = EngineInfo(TENSORRT, ENGINE_TITLES[TENSORRT], False, "", graph, precision, ready)
    try:
        toolkit = tensorrt.load_toolkit()
    except (EngineUnavailable, RuntimeError, OSError) as error:  # a broken driver raises RuntimeError
        return replace(info, reason=str(error))
    notes: tuple[str, ...] = (f"TensorRT {toolkit.version}",)
    first_start = "derive the float graph (seconds), then build the TensorRT engine (minutes)"
    if ready:
        key = tensorrt.make_engine_key(
            toolkit, bundle, fp16, batch_size, tensorrt.DEFAULT_MAX_BATCH, graph=graph
        )
        stale = tensorrt.stale_reasons(key)
        first_start = f"build the TensorRT engine (minutes): {'; '.join(stale)}" if stale else ""
        if not stale:
            notes += (f"engine cached in {tensorrt.engine_paths(key)[0]}",)
    return replace(info, available=True, gpu=toolkit.gpu_name, first_start=first_start, notes=notes)


def _tensorrt_rtx_info(bundle: ModelBundle) -> EngineInfo:
    graph, ready = derived_graph(bundle, "fp16")
    info = EngineInfo(TENSORRT_RTX, ENGINE_TITLES[TENSORRT_RTX], False, "", graph, "fp16", ready)
    try:
        plugin = tensorrt_rtx.load_plugin()
    except (EngineUnavailable, RuntimeError, OSError) as error:
        return replace(info, reason=str(error))
    first_start = "derive the float graph (seconds), then " if not ready else ""
    first_start += "compile kernels for this GPU (seconds; kept in the runtime cache)"
    notes = (f"plugin {plugin.ep_name} on onnxruntime {plugin.version}",)
    return replace(info, available=True, gpu=plugin.gpu_name, first_start=first_start, notes=notes)


def _cuda_info(bundle: ModelBundle) -> EngineInfo:
    graph, ready = derived_graph(bundle, onnx_runtime.DEFAULT_GRAPHS[CUDA])
    info = EngineInfo(CUDA, ENGINE_TITLES[CUDA], False, "", graph, "fp16", ready)
    try:
        reason = onnx_runtime.cuda_unavailable_reason()
    except ImportError as error:
        reason = f"ONNX Runtime is not installed ({error}); {onnx_runtime.cuda_install_hint()}"
    if reason:
        return replace(info, reason=reason)
    # Whether a GPU answers is only known once a session starts (check).
    first_start = "" if ready else "derive the float graph (seconds)"
    return replace(info, available=True, first_start=first_start, notes=("CUDA provider installed",))


def _cpu_info(bundle: ModelBundle, precision: str) -> EngineInfo:
    info = EngineInfo(CPU, ENGINE_TITLES[CPU], False, "", bundle.model_path, precision, True)
    try:
        # One thread: only the providers are wanted, and a session opens in a fraction of a second.
        engine = onnx_runtime.OnnxRuntimeEngine(bundle, CPU, threads=1)
    except ImportError as error:
        return replace(
            info,
            reason=f"ONNX Runtime is not installed ({error}); {install_extra_command('cpu')} (or [gpu] for ONNX Runtime CUDA)",
        )
    except (BundleError, EngineUnavailable) as error:
        return replace(info, reason=str(error))
    with engine:
        return replace(info, available=True, started=True, providers=engine.active_providers)


def _openvino_info(bundle: ModelBundle, precision: str) -> EngineInfo:
    info = EngineInfo(OPENVINO, ENGINE_TITLES[OPENVINO], False, "", bundle.model_path, precision, True)
    try:
        openvino = openvino_engine.load_openvino()
    except EngineUnavailable as error:
        return replace(info, reason=str(error))
    folder = openvino_engine.compiled_model_cache_dir()
    notes = (
        f"OpenVINO {openvino_engine.openvino_version(openvino)}",
        f"compiled models cached in {folder}",
    )
    first_start = "compile the model (about a second; cached for later starts)"
    return replace(info, available=True, first_start=first_start, notes=notes)


def _finite_on_one_batch(engine: Engine, bundle: ModelBundle) -> bool:
    """Run one batch of seeded noise through `engine`; whether every logit came back finite."""
    size = bundle.preprocessing.size
    batch = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    return bool(np.isfinite(engine.run(batch)[LOGITS_NAME]).all())


def _start(name: str, bundle: ModelBundle, fp16: bool, batch_size: int) -> Engine:
    if name == TENSORRT:
        return tensorrt.TensorRTEngine(bundle, batch_size=batch_size, fp16=fp16)
    if name == TENSORRT_RTX:
        return tensorrt_rtx.TensorRtRtxEngine(bundle, batch_size=batch_size)
    if name == OPENVINO:
        return openvino_engine.OpenVinoEngine(bundle)
    return onnx_runtime.OnnxRuntimeEngine(bundle, name, verify_placement=True)


def _checked(info: EngineInfo, bundle: ModelBundle, fp16: bool, batch_size: int) -> EngineInfo:
    """`info` after starting the engine and running one batch of seeded noise through it."""
    if not info.available:
        return replace(info, checked="not started: not available")
    started = time.perf_counter()
    try:
        engine = _start(info.name, bundle, fp16, batch_size)
    except (EngineUnavailable, BundleError, RuntimeError, OSError, ValueError) as error:
        return replace(info, available=False, reason=str(error), checked=f"failed to start: {error}")
    with engine:
        seconds = time.perf_counter() - started
        try:
            finite = _finite_on_one_batch(engine, bundle)
        except (RuntimeError, ValueError) as error:
            return replace(info, available=False, reason=str(error), checked=f"started, then failed: {error}")
        providers = tuple(getattr(engine, "active_providers", ()) or (engine.provider,))
        notes = [note for note in info.notes if not note.startswith("engine cached")]
        placement = getattr(engine, "placement", None)
        if placement is not None:
            notes.append(f"placement: {placement.summary()}")
        notes.extend(engine.fallback_notes)
        return replace(
            info,
            started=True,
            providers=providers,
            graph=Path(getattr(engine, "graph_path", info.graph)),
            graph_ready=True,
            first_start="",
            checked=f"{'finite' if finite else 'NON-FINITE'} outputs; started in {seconds:.1f} s",
            notes=tuple(notes),
        )
