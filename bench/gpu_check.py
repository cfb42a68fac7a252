"""One prepared run that proves every GPU engine on a real GPU: usable or why not, speed, agreement, end to end.

Made to be carried to a lent GPU machine (no network: the wheels and photos come by hand) and run
once; nothing is installed. Sections, in the order run:

* engines: `catbreed engines --check --json --engine NAME` for each GPU engine and the CPU
  engine, each in a child process of this interpreter and recorded whole; for each GPU engine
  (TensorRT, TensorRT for RTX, ONNX Runtime CUDA) whether it is usable or the engine's own
  refusal, and whether its compute stayed on the GPU, from what the check reports (ONNX
  Runtime CUDA's profiled node placement; TensorRT builds the whole network or refuses;
  TensorRT for RTX's placement is not profiled, so it is reported unknown);
* engine only: images/s of `engine.run` at batch 1, 8, 64 and 128 on preprocessed real photos
  (a warm-up, then the best of `--repeat` timed passes) for ONNX Runtime CUDA fp16 and fp32,
  TensorRT for RTX, TensorRT fp16, and the ONNX Runtime CPU engine as the reference;
* agreement: top-1 agreement of each GPU engine with the CPU engine on `--limit` photos (240)
  spread over the breed folders of `--photos`;
* end to end: photos/s of the real `catbreed classify` (a child process, decoding in processes)
  on every photo of `--photos` (2,371 Oxford cats) and on their 12 MP copies, which this script
  makes with every core (4000 px on the long side, JPEG quality 95).

It prints a summary and writes every figure, beside its target and the machine, to one JSON file
(`--out`), rewritten after each section so that a run cut short keeps what it measured. On a
machine without a GPU every GPU engine is reported refused with the reason the code gives, no
GPU figure is made up, and the exit status is still 0; it is 1 when something that should have
run failed (an engine the check found usable that would not start, a `catbreed` child that
failed). `--quick` makes a run of seconds on a CPU for the tests.

The child processes run `catbreed` through this file (`--run-catbreed ARGS`), which calls
`onnxruntime.preload_dlls()` first where onnxruntime has it: onnxruntime-gpu installed with
`pip install --no-deps --target` beside the nvidia-* wheels finds its CUDA and cuDNN libraries
that way, and every process that opens a CUDA session needs them. bench/README.md says how to
carry everything in.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_PHOTOS,
    LARGE_SIDE,
    ROOT,
    inference_rate,
    large_copies,
    load_average,
    logits_of,
    pick_photos,
    print_table,
    warm_cache,
)

from catbreed_desktop.cli.common import PROGRAM, gpu_present
from catbreed_desktop.core.bundle import ModelBundle, load_bundle
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable
from catbreed_desktop.core.engines.names import (
    CPU,
    CUDA,
    ENGINE_TITLES,
    GPU_ENGINES,
    TENSORRT,
    TENSORRT_RTX,
    EngineName,
)
from catbreed_desktop.core.engines.onnx_runtime import import_onnxruntime
from catbreed_desktop.core.engines.tensorrt_rtx import PLUGIN_MODULE, nvidia_gpus
from catbreed_desktop.core.files import atomic_write_text
from catbreed_desktop.core.photos import load_and_preprocess
from catbreed_desktop.core.photos.decode_pool import (
    PROCESS_DECODE_VARIABLE,
    default_process_workers,
)
from trainer.machine import cpu_name

CLI_FLAG = "--run-catbreed"
# The targets the figures are held to; the end-to-end ones assume a machine of 16 cores.
ENGINE_ONLY_TARGET = 4000.0  # images/s, ONNX Runtime CUDA fp16
OXFORD_TARGET = 800.0  # photos/s, catbreed classify with a GPU engine, Oxford-size photos
LARGE_TARGET = 400.0  # photos/s, the same on their 12 MP copies
TARGET_CORES = 16
# The CLI's closing line on stderr (`ProgressReporter.finish`).
SUMMARY_LINE = re.compile(r"^catbreed: (\d+) photos in ([\d.]+) s \(([\d.]+) photos/s\)$", re.MULTILINE)
USING_LINE = re.compile(r"^catbreed: using (.+?) with ", re.MULTILINE)
PLACEMENT_NOTE = "placement: "
CPU_COMPUTE_WORDS = "compute node(s) on the CPU"

FULL = {
    "limit": 240,
    "photos_limit": None,
    "batch_sizes": [1, 8, 64, 128],
    "batch_size": 128,
    "repeat": 3,
    "min_images": 64,
    "min_seconds": 0.5,
    "large_side": LARGE_SIDE,
}
QUICK = {
    "limit": 12,
    "photos_limit": 24,
    "batch_sizes": [1, 8],
    "batch_size": 8,
    "repeat": 1,
    "min_images": 8,
    "min_seconds": 0.01,
    "large_side": 640,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--bundle", type=Path, default=ROOT / "models", help="model bundle (default: models/)"
    )
    parser.add_argument(
        "--photos",
        type=Path,
        default=DEFAULT_PHOTOS,
        help=f"photo folder, one sub-folder per breed (default: {DEFAULT_PHOTOS})",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_check.json"), help="the JSON file of every figure"
    )
    parser.add_argument("--limit", type=int, help="photos for the agreement, spread over the breeds (240)")
    parser.add_argument("--photos-limit", type=int, help="photos end to end (default: all)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="engine-only batch sizes (1 8 64 128)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="catbreed's --batch-size end to end and in the check; TensorRT is built for it (128)",
    )
    parser.add_argument("--repeat", type=int, help="timed engine-only passes, the best kept (3)")
    parser.add_argument("--min-images", type=int, help="images per engine-only pass, at least (64)")
    parser.add_argument("--min-seconds", type=float, help="seconds per engine-only pass, at least (0.5)")
    parser.add_argument(
        "--large-side", type=int, help=f"long side of the large copies, px ({LARGE_SIDE}: 12 MP)"
    )
    parser.add_argument(
        "--large-dir", type=Path, help="where the large copies go and stay (default: a temporary folder)"
    )
    parser.add_argument("--skip-12mp", action="store_true", help="no large copies, Oxford size only")
    parser.add_argument("--skip-e2e", action="store_true", help="no end-to-end section")
    parser.add_argument(
        "--timeout", type=float, default=540.0, help="seconds each catbreed child may take (540)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a run of seconds (few photos, small copies, short passes): for tests on a CPU",
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# --- the catbreed child processes -----------------------------------------------------------------


def preload_cuda_libraries() -> dict[str, Any]:
    """Call `onnxruntime.preload_dlls()` where onnxruntime has it; what happened, and what it printed."""
    try:
        onnxruntime = import_onnxruntime()
    except ImportError as error:
        return {"status": f"onnxruntime is not installed ({error})", "output": ""}
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return {"status": f"onnxruntime {onnxruntime.__version__} has no preload_dlls", "output": ""}
    # It prints the libraries it could not load: kept off stdout, which carries the CLI's JSON.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as error:  # a failed preload is a finding; the engines then say what is missing
        return {"status": f"onnxruntime.preload_dlls() failed: {error}", "output": printed.getvalue()}
    return {"status": "onnxruntime.preload_dlls() called", "output": printed.getvalue()}


def run_catbreed_here(argv: list[str]) -> int:
    """`catbreed ARGV` in this process, after `preload_cuda_libraries`: what the children run."""
    output = preload_cuda_libraries()["output"]
    if output:
        sys.stderr.write(output)
    from catbreed_desktop.cli.main import main

    return main(argv)


@dataclass(frozen=True)
class ChildRun:
    """One `catbreed` child: its exit status (None when killed at the timeout), wall time and output."""

    status: int | None
    seconds: float
    stdout: str
    stderr: str


def run_catbreed(argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> ChildRun:
    """Run `catbreed ARGV` as a child of this interpreter, in a process group of its own.

    The group is killed at the timeout, so that no decoding process outlives its command.
    """
    command = [sys.executable, str(Path(__file__).resolve()), CLI_FLAG, *argv]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        status: int | None = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        status = None
    seconds = time.perf_counter() - started
    return ChildRun(status, seconds, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))


def failure_text(run: ChildRun, timeout_s: float) -> str:
    if run.status is None:
        return f"killed after {timeout_s:.0f} s; stderr ends: {run.stderr[-1500:]}"
    return f"exit status {run.status}; stderr ends: {run.stderr[-1500:]}"


# --- the machine ----------------------------------------------------------------------------------


def describe_machine(preload: Mapping[str, Any]) -> dict[str, Any]:
    """CPU, cores, GPUs nvidia-smi lists, and the runtimes this interpreter finds."""
    gpus = nvidia_gpus()
    runtimes: dict[str, Any] = {"preload": dict(preload)}
    try:
        onnxruntime = import_onnxruntime()
        runtimes["onnxruntime"] = {
            "version": onnxruntime.__version__,
            "file": onnxruntime.__file__,
            "providers": list(onnxruntime.get_available_providers()),
        }
    except ImportError as error:
        runtimes["onnxruntime"] = {"error": str(error)}
    try:
        import tensorrt  # the check says why TensorRT cannot run; this only names the version found

        runtimes["tensorrt"] = str(tensorrt.__version__)
    except (ImportError, OSError) as error:
        runtimes["tensorrt"] = f"not importable ({error})"
    import importlib.util

    runtimes["tensorrt_rtx_plugin"] = importlib.util.find_spec(PLUGIN_MODULE) is not None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": None,  # filled from the check, else nvidia-smi
        "nvidia_smi": None if gpus is None else [gpu.name for gpu in gpus],
        "nvidia_driver_files": gpu_present(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
        "runtimes": runtimes,
    }


# --- the engines ----------------------------------------------------------------------------------


def check_engines(args: argparse.Namespace) -> dict[str, Any]:
    """`catbreed engines --check --json --engine NAME` for each GPU engine and the CPU engine.

    One child per engine, each recorded whole, so that an engine whose check hangs or crashes (a
    driver, a runtime's thread pool) costs its own row and its own timeout, not every row; the
    engines no figure here is about (OpenVINO) are not started at all.
    """
    record: dict[str, Any] = {"runs": {}, "engines": {}}
    for name in (*GPU_ENGINES, CPU):
        run_record, entry = check_one_engine(name, args)
        record["runs"][name] = run_record
        if entry is None:
            reason = f"its check failed: {run_record['error']}"
            record["engines"][name] = {"title": ENGINE_TITLES[name], "usable": False, "reason": reason}
            continue
        on_gpu, basis = checked_placement(name, entry)
        record["engines"][name] = {
            "title": entry.get("title", ENGINE_TITLES[name]),
            "usable": bool(entry.get("available")),
            "reason": entry.get("reason") or None,
            "providers": entry.get("providers", []),
            "checked": entry.get("checked"),
            "gpu": entry.get("gpu"),
            "compute_on_gpu": on_gpu if name in GPU_ENGINES else None,
            "compute_on_gpu_basis": basis if name in GPU_ENGINES else "the CPU engine",
        }
    return record


def check_one_engine(
    name: EngineName, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One engine's check: the child's record (with its whole listing), and the engine's entry in it."""
    argv = ["engines", "--check", "--json", "--engine", name]
    argv += ["--model", str(args.bundle), "--batch-size", str(args.batch_size)]
    run = run_catbreed(argv, args.timeout)
    record: dict[str, Any] = {
        "command": f"{PROGRAM} {' '.join(argv)}",
        "exit_status": run.status,
        "seconds": round(run.seconds, 2),
        "stderr": run.stderr[-4000:],
        "listing": None,
    }
    if run.status != 0:
        record["error"] = failure_text(run, args.timeout)
        return record, None
    try:
        listing = json.loads(run.stdout)
    except json.JSONDecodeError as error:
        record["error"] = f"its output is not JSON ({error}): {run.stdout[:1000]}"
        return record, None
    record["listing"] = listing
    entry = next((entry for entry in listing.get("engines", []) if entry.get("name") == name), None)
    if entry is None:
        record["error"] = f"{name} is not in its listing"
    return record, entry


def checked_placement(name: str, entry: Mapping[str, Any]) -> tuple[bool | None, str]:
    """Whether the check found the engine's compute on the GPU (None: not known), and on what basis."""
    if not entry.get("available") or not entry.get("started"):
        return None, "not started"
    if name == TENSORRT:
        return True, "TensorRT builds the whole network for the GPU or refuses: it has no CPU fallback"
    if name == TENSORRT_RTX:
        providers = entry.get("providers") or []
        first = providers[0] if providers else "nothing"
        return None, f"first provider {first}; the check does not profile TensorRT for RTX's node placement"
    placement = next((note for note in entry.get("notes", []) if note.startswith(PLACEMENT_NOTE)), None)
    if placement is None:
        return None, "the check reported no node placement"
    return CPU_COMPUTE_WORDS not in placement, placement


@dataclass(frozen=True)
class Variant:
    """One engine and graph to measure, and how `catbreed classify` runs it (None: it cannot)."""

    key: str
    engine: EngineName
    title: str
    start: Callable[[], Engine]
    cli: tuple[str, ...] | None
    cli_gap: str = ""


def variants(bundle: ModelBundle, args: argparse.Namespace) -> list[Variant]:
    """The GPU engines and graphs to prove, then the CPU engine every figure is compared with."""
    from catbreed_desktop.core.engines.tensorrt import TensorRTEngine
    from catbreed_desktop.core.engines.tensorrt_rtx import TensorRtRtxEngine

    # Built for the end-to-end batch as the check and catbreed classify build it, and for the
    # largest engine-only batch: the same TensorRT engine serves all three, built once.
    largest = max(*args.batch_sizes, args.batch_size)
    return [
        Variant(
            "tensorrt-fp16",
            TENSORRT,
            "TensorRT fp16",
            lambda: TensorRTEngine(bundle, batch_size=args.batch_size, fp16=True, max_batch=largest),
            ("--engine", TENSORRT, "--gpu-precision", "fp16"),
        ),
        Variant(
            "tensorrt-rtx",
            TENSORRT_RTX,
            "TensorRT for RTX fp16",
            lambda: TensorRtRtxEngine(bundle, batch_size=args.batch_size, max_batch=largest),
            ("--engine", TENSORRT_RTX),
        ),
        Variant(
            "cuda-fp16",
            CUDA,
            "ONNX Runtime CUDA fp16",
            lambda: create_engine(bundle, CUDA, graph="fp16"),
            ("--engine", CUDA),
        ),
        Variant(
            "cuda-fp32",
            CUDA,
            "ONNX Runtime CUDA fp32",
            lambda: create_engine(bundle, CUDA, graph="fp32"),
            None,
            "catbreed classify runs ONNX Runtime CUDA on the fp16 graph only",
        ),
        Variant(
            "cpu",
            CPU,
            "ONNX Runtime CPU (reference)",
            lambda: create_engine(bundle, CPU),
            ("--engine", CPU),
        ),
    ]


def variant_placement(variant: Variant, engine: Engine) -> tuple[dict[str, Any] | None, bool | None, str]:
    """Where the started engine's nodes ran, when it knows, and whether its compute stayed on the GPU."""
    if variant.engine == CPU:
        return None, None, "the CPU engine"
    if variant.engine == TENSORRT:
        return None, True, "TensorRT builds the whole network for the GPU or refuses"
    placement = getattr(engine, "placement", None)
    if placement is None:
        return None, None, "node placement not profiled by this engine"
    return placement.to_json(), not placement.cpu_compute, placement.summary()


def preprocess(paths: Sequence[Path], bundle: ModelBundle) -> tuple[list[Path], np.ndarray, list[str]]:
    """The photos that decode, their preprocessed inputs, and one line per photo that did not."""
    spec = bundle.preprocessing

    def load(path: Path) -> np.ndarray | str:
        try:
            return load_and_preprocess(path, spec)
        except Exception as error:  # one unreadable photo must not end a run on a lent machine
            return f"{path}: {error}"

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(load, paths))
    kept = [
        (path, result) for path, result in zip(paths, results, strict=True) if not isinstance(result, str)
    ]
    failed = [result for result in results if isinstance(result, str)]
    if not kept:
        raise SystemExit(f"none of the {len(paths)} photos could be read: {failed[:3]}")
    return [path for path, _ in kept], np.stack([array for _, array in kept]), failed


def measure_variant(
    variant: Variant,
    args: argparse.Namespace,
    inputs: np.ndarray,
    reference: np.ndarray | None,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Start one engine, time it at each batch size and score its top-1 against `reference`."""
    record: dict[str, Any] = {"key": variant.key, "engine": variant.engine, "title": variant.title}
    started = time.perf_counter()
    try:
        engine = variant.start()
    except (EngineUnavailable, ImportError, RuntimeError, OSError, ValueError) as error:
        record |= {"usable": False, "reason": f"failed to start: {error}"}
        return record, None
    try:
        placement, on_gpu, basis = variant_placement(variant, engine)
        record |= {
            "usable": True,
            "reason": None,
            "start_seconds": round(time.perf_counter() - started, 2),
            "provider": engine.provider,
            "active_providers": list(getattr(engine, "active_providers", ()) or (engine.provider,)),
            "graph": str(getattr(engine, "graph_path", "")) or None,
            "placement": placement,
            "compute_on_gpu": on_gpu,
            "compute_on_gpu_basis": basis,
            "notes": list(engine.fallback_notes),
        }
        target = ENGINE_ONLY_TARGET if variant.key == "cuda-fp16" else None
        rates: dict[str, float | None] = {}
        errors: list[str] = []
        for batch_size in args.batch_sizes:
            try:
                rate = inference_rate(
                    engine, inputs, batch_size, args.min_images, args.repeat, min_seconds=args.min_seconds
                )
                rates[str(batch_size)] = round(rate, 1)
            except Exception as error:  # out of GPU memory at one batch size must not end the run
                rates[str(batch_size)] = None
                errors.append(f"batch {batch_size}: {error}")
        measured = [rate for rate in rates.values() if rate is not None]
        best = max(measured) if measured else None
        record["engine_only"] = {
            "images_per_s": rates,
            "best_images_per_s": best,
            "target_images_per_s": target,
            "meets_target": None if target is None or best is None else best >= target,
        }
        try:
            logits: np.ndarray | None = logits_of(engine, inputs)
        except Exception as error:  # as above: the other engines still get measured
            logits = None
            errors.append(f"agreement photos: {error}")
        record["errors"] = errors
    finally:
        engine.close()
    if logits is None:
        record["agreement"] = {"skipped": "the engine failed on the agreement photos"}
    elif reference is not None:
        same = int((logits.argmax(axis=1) == reference.argmax(axis=1)).sum())
        record["agreement"] = {
            "photos": len(logits),
            "same_top1": same,
            "share": round(same / len(logits), 5),
            "max_abs_logit_diff": round(float(np.abs(logits - reference).max()), 5),
        }
    return record, logits


def refused(variant: Variant, reason: str) -> dict[str, Any]:
    return {
        "key": variant.key,
        "engine": variant.engine,
        "title": variant.title,
        "usable": False,
        "reason": reason,
        "engine_only": {"skipped": "engine not usable"},
        "agreement": {"skipped": "engine not usable"},
    }


# --- end to end -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoSet:
    """Photos `catbreed classify` is given end to end, and the arguments that name them."""

    key: str
    label: str
    paths: list[Path]
    argv: list[str]
    target: float


def make_large_copies(photos: Sequence[Path], folder: Path, side: int) -> list[Path]:
    """`large_copies` of every photo, in as many processes as there are cores, in the photos' order."""
    workers = max(1, os.cpu_count() or 1)
    chunk = max(1, min(16, len(photos) // (4 * workers) or 1))
    pieces = [list(photos[start : start + chunk]) for start in range(0, len(photos), chunk)]
    # Spawned, not forked: this process may hold GPU sessions and runtime threads by now.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        done = pool.map(large_copies, pieces, [folder] * len(pieces), [side] * len(pieces))
        return [copy for copies in done for copy in copies]


def classify_end_to_end(
    variant: Variant, photo_set: PhotoSet, args: argparse.Namespace, gpu: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """One `catbreed classify` run: photos/s as the CLI reports it, wall time, and its labels by path."""
    assert variant.cli is not None
    argv = [
        "classify",
        *photo_set.argv,
        "--model",
        str(args.bundle),
        *variant.cli,
        "--batch-size",
        str(args.batch_size),
        "--json",
        "--no-personal",
    ]
    # Processes whatever the core count, as a 16-core machine would choose by itself.
    run = run_catbreed(argv, args.timeout, env={PROCESS_DECODE_VARIABLE: "1"})
    target = photo_set.target if gpu else None
    record: dict[str, Any] = {
        "photos": len(photo_set.paths),
        "exit_status": run.status,
        "wall_seconds": round(run.seconds, 2),
        "target_photos_per_s": target,
    }
    labels: dict[str, str] = {}
    for line in run.stdout.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            result = json.loads(line)
            if result.get("ok"):
                labels[result["path"]] = result["label"]
    summary = SUMMARY_LINE.search(run.stderr)
    using = USING_LINE.search(run.stderr)
    record |= {
        "classified": len(labels),
        "failed": len(photo_set.paths) - len(labels),
        "cli_provider": using.group(1) if using else None,
        "cli_seconds": float(summary.group(2)) if summary else None,
        "photos_per_s": float(summary.group(3)) if summary else None,
    }
    if run.status not in (0, 1) or summary is None:  # 1: some photos failed, which the counts say
        record["error"] = failure_text(run, args.timeout)
    rate = record["photos_per_s"]
    record["meets_target"] = None if target is None or rate is None else rate >= target
    return record, labels


def end_to_end(
    args: argparse.Namespace,
    measured: Sequence[tuple[Variant, dict[str, Any]]],
    photos: list[Path],
    save: Callable[[], None],
    results: dict[str, Any],
) -> None:
    """The end-to-end section, into `results`: photo sets, then one row per usable engine and set."""
    photo_argv = [str(args.photos), "--recursive"] if args.photos_limit is None else [str(p) for p in photos]
    sets = [PhotoSet("oxford", "Oxford size", photos, photo_argv, OXFORD_TARGET)]
    results["sets"] = {"oxford": {"label": "Oxford size", "photos": len(photos)}}
    large_dir = args.large_dir or Path(tempfile.mkdtemp(prefix="catbreed-gpu-check-"))
    try:
        if args.skip_12mp:
            results["sets"]["large"] = {"skipped": "--skip-12mp"}
        else:
            started = time.perf_counter()
            megapixels = "12 MP" if args.large_side == LARGE_SIDE else f"{args.large_side} px long side"
            try:
                copies = make_large_copies(photos, large_dir, args.large_side)
            except Exception as error:  # a full disk, say: the Oxford-size figures still count
                results["sets"]["large"] = {"error": f"the large copies could not be made: {error}"}
            else:
                results["sets"]["large"] = {
                    "label": megapixels,
                    "photos": len(copies),
                    "long_side_px": args.large_side,
                    "folder": str(large_dir),
                    "seconds_to_make": round(time.perf_counter() - started, 1),
                    "megabytes": round(sum(copy.stat().st_size for copy in copies) / 1e6, 1),
                }
                sets.append(PhotoSet("large", megapixels, copies, [str(large_dir)], LARGE_TARGET))
        save()
        for photo_set in sets:
            warm_cache(photo_set.paths)
        labels: dict[tuple[str, str], dict[str, str]] = {}
        for variant, record in measured:
            if not record.get("usable"):
                record["end_to_end"] = {"skipped": "engine not usable"}
                continue
            if variant.cli is None:
                record["end_to_end"] = {"skipped": variant.cli_gap}
                continue
            record["end_to_end"] = {}
            for photo_set in sets:
                row, labels[variant.key, photo_set.key] = classify_end_to_end(
                    variant, photo_set, args, gpu=variant.engine != CPU
                )
                record["end_to_end"][photo_set.key] = row
                save()
        add_label_agreement(measured, sets, labels)
    finally:
        if args.large_dir is None:
            shutil.rmtree(large_dir, ignore_errors=True)


def add_label_agreement(
    measured: Sequence[tuple[Variant, dict[str, Any]]],
    sets: Sequence[PhotoSet],
    labels: Mapping[tuple[str, str], dict[str, str]],
) -> None:
    """Top-1 of each GPU engine's CLI run against the CPU engine's on the same photos, per set."""
    for variant, record in measured:
        if variant.engine == CPU:
            continue
        for photo_set in sets:
            row = record.get("end_to_end", {}).get(photo_set.key)
            reference = labels.get(("cpu", photo_set.key))
            mine = labels.get((variant.key, photo_set.key))
            if row is None or not reference or not mine:
                continue
            common = reference.keys() & mine.keys()
            row["same_top1_as_cpu_cli"] = sum(reference[path] == mine[path] for path in common)
            row["compared_with_cpu_cli"] = len(common)


# --- the report -----------------------------------------------------------------------------------


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Which GPU engines ran, which were refused and why, and each target against the best GPU figure."""
    rows = results["engines"]
    gpu_rows = [row for row in rows if row["engine"] != CPU]
    usable = [row["key"] for row in gpu_rows if row.get("usable")]
    targets = []
    cuda: dict[str, Any] = next((row for row in rows if row["key"] == "cuda-fp16"), {})
    best = cuda.get("engine_only", {}).get("best_images_per_s")
    targets.append(_target("engine only, ONNX Runtime CUDA fp16, images/s", best, ENGINE_ONLY_TARGET))
    for key, label, target in (
        ("oxford", "end to end, Oxford size, photos/s", OXFORD_TARGET),
        ("large", "end to end, 12 MP, photos/s", LARGE_TARGET),
    ):
        figures = [
            (row["end_to_end"][key]["photos_per_s"], row["title"])
            for row in gpu_rows
            if isinstance(row.get("end_to_end"), dict)
            and isinstance(row["end_to_end"].get(key), dict)
            and row["end_to_end"][key].get("photos_per_s") is not None
        ]
        value, title = max(figures) if figures else (None, None)
        targets.append(_target(label, value, target, title))
    cores = os.cpu_count() or 0
    return {
        "gpu_engines_usable": usable,
        "gpu_engines_refused": {row["key"]: row["reason"] for row in gpu_rows if not row.get("usable")},
        "targets": targets,
        "cores_note": None
        if cores >= TARGET_CORES
        else f"the end-to-end targets assume {TARGET_CORES} cores; this machine has {cores}",
    }


def _target(figure: str, value: float | None, target: float, engine: str | None = None) -> dict[str, Any]:
    return {
        "figure": figure,
        "engine": engine,
        "value": value,
        "target": target,
        "met": None if value is None else value >= target,
    }


def _met(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "MISSED"


def print_summary(results: dict[str, Any], args: argparse.Namespace) -> None:
    machine = results["machine"]
    bundle = results["bundle"]
    print(f"\n# GPU check: {bundle['path']} ({bundle['architecture']}, {bundle['labels']} breeds)")
    print(
        f"machine   GPU {machine['gpu'] or 'none found'}; CPU {machine['cpu']}, {machine['cores']} cores; "
        f"load average {load_average()}"
    )
    ort = machine["runtimes"]["onnxruntime"]
    print(f"runtimes  onnxruntime {ort.get('version', '-')} {ort.get('providers', ort.get('error'))}")
    print(f"          {machine['runtimes']['preload']['status']}; tensorrt {machine['runtimes']['tensorrt']}")
    check = results["check"]
    print(f"\n## engines: {PROGRAM} engines --check --json --engine NAME, one child per engine")
    for name in GPU_ENGINES:
        entry = check["engines"].get(name, {})
        run = check["runs"].get(name, {})
        took = f" [check: exit {run['exit_status']}, {run['seconds']} s]" if "seconds" in run else ""
        if entry.get("usable"):
            on_gpu = {True: "yes", False: "NO", None: "unknown"}[entry.get("compute_on_gpu")]
            print(
                f"   {ENGINE_TITLES[name]}: usable; compute on the GPU: {on_gpu} "
                f"({entry['compute_on_gpu_basis']}){took}"
            )
        else:
            print(f"   {ENGINE_TITLES[name]}: refused: {entry.get('reason')}{took}")

    rows = results["engines"]
    print(f"\n## engine only, images/s: warm-up, then the best of {args.repeat} passes")
    header = ["engine", *(f"batch {b}" for b in args.batch_sizes), "target"]
    table = []
    for row in rows:
        figures = row.get("engine_only", {})
        if "images_per_s" not in figures:
            table.append(
                [
                    row["title"],
                    *(["-"] * len(args.batch_sizes)),
                    f"skipped: {figures.get('skipped', row.get('reason'))}"[:60],
                ]
            )
            continue
        target = figures["target_images_per_s"]
        target_text = f">= {target:,.0f} (best): {_met(figures['meets_target'])}" if target else "-"
        rates = [figures["images_per_s"].get(str(b)) for b in args.batch_sizes]
        table.append([row["title"], *("ERROR" if r is None else f"{r:,.1f}" for r in rates), target_text])
    print_table(header, table, [30, *([10] * len(args.batch_sizes)), 28])

    reference: dict[str, Any] = next((row for row in rows if row["engine"] == CPU), {})
    photos = results.get("agreement_photos", {}).get("photos", 0)
    print(f"## agreement with {reference.get('title', 'the CPU engine')} on {photos} photos, top-1")
    for row in rows:
        agreement = row.get("agreement", {})
        if row["engine"] == CPU:
            continue
        if "share" in agreement:
            print(
                f"   {row['title']}: {agreement['same_top1']}/{agreement['photos']} "
                f"({100 * agreement['share']:.2f} %), largest logit difference {agreement['max_abs_logit_diff']}"
            )
        else:
            print(f"   {row['title']}: skipped ({agreement.get('skipped')})")

    if "end_to_end" in results:
        e2e = results["end_to_end"]
        sets = [key for key in ("oxford", "large") if "label" in e2e["sets"].get(key, {})]
        if "error" in e2e["sets"].get("large", {}):
            print(f"   ERROR {e2e['sets']['large']['error']}")
        print(
            f"\n## end to end: catbreed classify --batch-size {args.batch_size}, decoding in "
            f"{default_process_workers()} processes, photos/s as the CLI reports it"
        )
        for key in sets:
            info = e2e["sets"][key]
            made = f", made in {info['seconds_to_make']} s" if "seconds_to_make" in info else ""
            print(f"   {info['label']}: {info['photos']} photos{made}")
        header = ["engine", *(e2e["sets"][key]["label"] for key in sets)]
        table = []
        for row in rows:
            cells = [row["title"]]
            for key in sets:
                figure = row.get("end_to_end", {}).get(key)
                if not isinstance(figure, dict):
                    cells.append(f"skipped: {row.get('end_to_end', {}).get('skipped', '-')}"[:44])
                elif figure.get("photos_per_s") is None:
                    cells.append("FAILED (see the JSON)")
                else:
                    target = figure["target_photos_per_s"]
                    text = f"{figure['photos_per_s']:,.1f}"
                    text += (
                        f" (>= {target:,.0f}: {_met(figure['meets_target'])})" if target else " (reference)"
                    )
                    cells.append(text)
            table.append(cells)
        print_table(header, table, [30, *([44] * len(sets))])

    print("## verdict")
    judged = results["verdict"]
    if not judged["gpu_engines_usable"]:
        print("   no GPU engine could run here: every GPU figure is skipped")
    for target in judged["targets"]:
        value = "-" if target["value"] is None else f"{target['value']:,.1f}"
        engine = f" ({target['engine']})" if target["engine"] else ""
        print(
            f"   {target['figure']}: {value}{engine}, target >= {target['target']:,.0f}: {_met(target['met'])}"
        )
    if judged["cores_note"]:
        print(f"   {judged['cores_note']}")
    for error in results["errors"]:
        print(f"   ERROR {error}")
    print(f"\nfigures written to {args.out}")


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def report(args: argparse.Namespace) -> int:
    if not args.photos.is_dir():
        raise SystemExit(f"no photo folder at {args.photos} (--photos DIR)")
    preload = preload_cuda_libraries()
    bundle = load_bundle(args.bundle)
    results: dict[str, Any] = {
        "status": "running",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "options": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "targets": {
            "engine_only_cuda_fp16_images_per_s": ENGINE_ONLY_TARGET,
            "end_to_end_oxford_photos_per_s": OXFORD_TARGET,
            "end_to_end_12mp_photos_per_s": LARGE_TARGET,
            "end_to_end_cores": TARGET_CORES,
        },
        "machine": describe_machine(preload),
        "bundle": {
            "path": str(bundle.path),
            "architecture": bundle.architecture,
            "labels": bundle.num_labels,
            "input_size": bundle.preprocessing.size,
        },
        "errors": [],
    }

    def save() -> None:
        write_json(args.out, results)

    save()
    print(f"{time.strftime('%H:%M:%S')} checking the engines ...", flush=True)
    results["check"] = check = check_engines(args)
    for run in check["runs"].values():
        if run.get("error"):
            results["errors"].append(f"{run['command']} failed: {run['error']}")
    gpus = [entry.get("gpu") for entry in check["engines"].values() if entry.get("gpu")]
    smi = results["machine"]["nvidia_smi"]
    results["machine"]["gpu"] = gpus[0] if gpus else smi[0] if smi else None
    save()

    picked = pick_photos(args.photos, args.limit)
    paths, inputs, unreadable = preprocess(picked, bundle)
    results["agreement_photos"] = {"photos": len(paths), "unreadable": unreadable}
    all_variants = variants(bundle, args)
    reference_variant = all_variants[-1]
    print(f"{time.strftime('%H:%M:%S')} {reference_variant.title} on {len(paths)} photos ...", flush=True)
    reference_row, reference = measure_variant(reference_variant, args, inputs, None)
    if reference is not None:
        labels = [bundle.labels[index] for index in reference.argmax(axis=1)]
        reference_row["agreement"] = {
            "photos": len(paths),
            "role": "the reference the GPU engines are compared with",
            "top1": {str(path): label for path, label in zip(paths, labels, strict=True)},
        }
    else:
        results["errors"].append(
            f"the CPU reference failed: {reference_row.get('reason') or reference_row['errors']}"
        )
    measured: list[tuple[Variant, dict[str, Any]]] = []
    for variant in all_variants[:-1]:
        checked = check["engines"].get(variant.engine, {})
        if not checked.get("usable"):
            row = refused(variant, checked.get("reason") or "the check did not run")
        else:
            print(f"{time.strftime('%H:%M:%S')} {variant.title} ...", flush=True)
            row, _ = measure_variant(variant, args, inputs, reference)
            if not row["usable"]:
                results["errors"].append(
                    f"{variant.title}: the check found it usable, yet it {row['reason']}"
                )
            results["errors"] += [f"{variant.title}: {error}" for error in row.get("errors", ())]
        measured.append((variant, row))
        results["engines"] = [row for _, row in measured]
        save()
    measured.append((reference_variant, reference_row))
    results["engines"] = [row for _, row in measured]
    save()

    if args.skip_e2e:
        results["end_to_end"] = {"skipped": "--skip-e2e", "sets": {}}
    else:
        print(f"{time.strftime('%H:%M:%S')} end to end ...", flush=True)
        photos = pick_photos(args.photos, args.photos_limit)
        results["end_to_end"] = section = {"decode_processes": default_process_workers()}
        end_to_end(args, measured, photos, save, section)
        for variant, row in measured:
            for key, figure in row.get("end_to_end", {}).items():
                if isinstance(figure, dict) and figure.get("error"):
                    results["errors"].append(f"{variant.title}, end to end ({key}): {figure['error']}")
    results["verdict"] = verdict(results)
    results["status"] = "complete"
    save()
    print_summary(results, args)
    return 1 if results["errors"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [CLI_FLAG]:
        return run_catbreed_here(arguments[1:])
    return report(parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
