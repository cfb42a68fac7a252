"""The engine listing behind `catbreed engines` and the settings dialog: what could run a bundle, and how.

`list_engines(bundle)` reports, for TensorRT, ONNX Runtime CUDA and ONNX Runtime CPU: whether the
engine can run here (or the message it would raise), which graph file it would run and at which
precision, whether that graph is already derived, and the execution providers really active.
The plain listing is quick: it never derives a float graph (seconds) or builds a TensorRT engine
(minutes), and it starts only the CPU engine, whose session opens in a fraction of a second, so
only the CPU engine's providers are known. `check=` starts the engines named (deriving and
building what they need), runs one small batch through each and reports the providers really
active, where ONNX Runtime placed the nodes and whether the outputs were finite.

With `server=` the listing ends with a Triton Inference Server row: it reaches the server and
checks that it serves the bundle's model (a few small requests); `check` may name "triton" then.
`first_available` never picks it, as "auto" never does.

TensorRT, CUDA, ONNX Runtime and tritonclient are imported only inside the calls, as the engines do.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from catbreed_desktop.core.bundle import LOGITS_NAME, BundleError, ModelBundle
from catbreed_desktop.core.engines import onnx_runtime, tensorrt
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable
from catbreed_desktop.core.engines.names import CPU, CUDA, ENGINE_NAMES, ENGINE_TITLES, TENSORRT, TRITON
from catbreed_desktop.core.install_hints import install_extra_command


@dataclass(frozen=True)
class EngineInfo:
    """What one engine would do with a bundle on this machine."""

    name: str  # "tensorrt", "cuda", "cpu" or "triton", as `create_engine` and the settings name it
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
    batch_size: int = 8,
    check: Collection[str] = (),
    server: str | None = None,
) -> list[EngineInfo]:
    """One `EngineInfo` per engine in `ENGINE_NAMES` order; `check` names the engines to start and try.

    `fp16` and `batch_size` are the settings TensorRT would be built with (they pick its graph and
    its cached engine). `server`, a Triton server's URL, adds its row at the end. Never raises for
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
    infos = [_tensorrt_info(bundle, fp16, batch_size), _cuda_info(bundle), _cpu_info(bundle, precision)]
    gpu = next((info.gpu for info in infos if info.gpu), "")
    # ONNX Runtime does not name the GPU; TensorRT's toolkit asked the driver, and it is the same device 0.
    infos = [replace(info, gpu=gpu) if info.name == CUDA and info.available else info for info in infos]
    infos = [_checked(info, bundle, fp16, batch_size) if info.name in check else info for info in infos]
    if server:
        infos.append(_triton_info(bundle, server, TRITON in check))
    return infos


def first_available(infos: list[EngineInfo]) -> EngineInfo | None:
    """The engine `create_engine(..., "auto")` tries first among those listed as available."""
    return next((info for info in infos if info.available and info.name in ENGINE_NAMES), None)


def _triton_info(bundle: ModelBundle, server: str, check: bool) -> EngineInfo:
    """The Triton row: the server reached and its model checked; with `check`, one batch run through it."""
    from catbreed_desktop.core.engines.triton_client import TritonEngine

    info = EngineInfo(TRITON, ENGINE_TITLES[TRITON], False, "", bundle.model_path, "server's", True)
    started = time.perf_counter()
    try:
        engine = TritonEngine(bundle, server)
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


def _finite_on_one_batch(engine: Engine, bundle: ModelBundle) -> bool:
    """Run one batch of seeded noise through `engine`; whether every logit came back finite."""
    size = bundle.preprocessing.size
    batch = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    return bool(np.isfinite(engine.run(batch)[LOGITS_NAME]).all())


def _start(name: str, bundle: ModelBundle, fp16: bool, batch_size: int) -> Engine:
    if name == TENSORRT:
        return tensorrt.TensorRTEngine(bundle, batch_size=batch_size, fp16=fp16)
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
