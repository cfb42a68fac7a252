"""Every engine side by side, against the same model in PyTorch eager, measured in one run.

Sections, in the order printed:

* engines: which of TensorRT, ONNX Runtime CUDA and ONNX Runtime CPU can run here, and why not;
* inference only: images/s per batch size for every available engine and graph (the bundle's
  int8 model and the fp32 and fp16 graphs derived from it on the CPU; fp16 and fp32 on CUDA; fp16
  on TensorRT), and for the PyTorch eager baseline, with the ratio to it;
* top-1 agreement of every engine with eager and with the shipped CPU engine;
* decoding only: photos/s of `load_and_preprocess` in threads and in processes, and what moving
  one preprocessed photo between processes costs;
* end to end: photos/s and peak memory of the `Classifier` pipeline, from file to label, for
  Oxford-size photos and for the same photos upscaled to 12 megapixels (4000 px on the long side,
  JPEG quality 95), each row in a fresh process so that its peak RSS is its own.

The eager baseline is described in `_common.py`. `bench_draft_decoding.py` and
`bench_quantisation.py` measure draft decoding and the int8 graphs.
Run `python bench/bench_engines.py --help` for the options; bench/README.md says more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    EAGER,
    EAGER_TOLERANCE,
    EagerEngine,
    add_common_options,
    add_large_dir_option,
    add_timing_options,
    best_seconds,
    eager_model,
    inference_rate,
    large_copies,
    load_average,
    logits_of,
    pick_photos,
    print_table,
    warm_cache,
)

from catbreed_desktop.core.bundle import LOGITS_NAME, ModelBundle, load_bundle
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.base import Engine
from catbreed_desktop.core.engines.inventory import list_engines
from catbreed_desktop.core.engines.names import DEFAULT_BATCH_SIZE
from catbreed_desktop.core.photos import load_and_preprocess, stack_batch
from catbreed_desktop.core.photos.decode_pool import ProcessDecodePool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_common_options(parser)
    add_timing_options(parser)
    add_large_dir_option(parser)
    parser.add_argument("--count", type=int, default=48, help="photos, spread over the folder (default: 48)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64], help="(default: 1 8 32 64)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"end-to-end batch size (default: {DEFAULT_BATCH_SIZE}, the app's)",
    )
    parser.add_argument(
        "--decode-workers", type=int, help="decoding threads or processes (default: as --threads)"
    )
    parser.add_argument("--skip-e2e", action="store_true", help="no end-to-end section")
    parser.add_argument(
        "--child", type=Path, help=argparse.SUPPRESS
    )  # one end-to-end row, as a fresh process
    return parser.parse_args(argv)


# --- measuring ------------------------------------------------------------------------------------------


def _blank_input(size: int) -> np.ndarray:
    """What a decoding process sends back for one photo, without decoding anything."""
    return np.zeros((3, size, size), dtype=np.float32)


def _nothing(size: int) -> None:
    return None


def decode_rate(
    paths: Sequence[Path], bundle: ModelBundle, workers: int, processes: bool, repeat: int
) -> float:
    """Photos/s of `load_and_preprocess` over `paths` in `workers` threads or processes."""
    spec = bundle.preprocessing
    pool: Any = ProcessDecodePool(workers) if processes else ThreadPoolExecutor(workers)
    try:
        # Start every worker (and import the decoder in it) before the clock runs.
        for future in [pool.submit(load_and_preprocess, path, spec) for path in list(paths)[: 2 * workers]]:
            future.result()
        return len(paths) / best_seconds(
            lambda: [
                future.result() for future in [pool.submit(load_and_preprocess, p, spec) for p in paths]
            ],
            repeat,
        )
    finally:
        if processes:
            pool.close()
        else:
            pool.shutdown()


def round_trip_ms(size: int, workers: int, items: int = 400) -> tuple[float, float]:
    """Wall milliseconds per task through a decoding pool doing no work: returning nothing, and
    returning one preprocessed photo (a pickled float32 array)."""
    pool = ProcessDecodePool(workers)
    try:
        for future in [pool.submit(_nothing, size) for _ in range(2 * workers)]:
            future.result()

        def per_task(function: Callable[[int], object]) -> float:
            def tasks() -> None:
                for future in [pool.submit(function, size) for _ in range(items)]:
                    future.result()

            return best_seconds(tasks, 3) / items * 1000

        return per_task(_nothing), per_task(_blank_input)
    finally:
        pool.close()


# --- end to end, one row per fresh process ---------------------------------------------------------------


@dataclass(frozen=True)
class EndToEnd:
    """What one end-to-end row measured."""

    rate: float
    rss_mb: float
    workers_mb: float  # decoding processes together, sampled; 0 when decoding in threads
    labels: tuple[str, ...]


def end_to_end(job: dict[str, Any], python: str = sys.executable) -> EndToEnd:
    """Run one end-to-end row in a fresh Python, so that its peak RSS is its own."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(job, file)
    try:
        done = subprocess.run(
            [python, str(Path(__file__).resolve()), "--child", file.name], capture_output=True, text=True
        )
    finally:
        os.unlink(file.name)
    if done.returncode != 0:
        raise SystemExit(f"end-to-end row {job['name']!r} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return EndToEnd(result["rate"], result["rss_mb"], result["workers_mb"], tuple(result["labels"]))


def descendants() -> list[int]:
    """The processes below this one (the fork server and the decoding workers), Linux only."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of `pids` together (those still running)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program.

    Linux keeps `ru_maxrss` across exec, so a child forked from a large parent would report the
    parent's size; the high-water mark in /proc/self/status starts afresh with the program.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else kilobytes


def run_child(job_file: Path) -> int:
    """One end-to-end row: prints {"rate", "rss_mb", "workers_mb", "labels"} as JSON."""
    job = json.loads(job_file.read_text())
    bundle = load_bundle(job["bundle"])
    paths = [Path(p) for p in job["paths"]]
    warm_cache(paths)
    batch_size, threads = job["batch_size"], job["threads"]
    if job["kind"] == "eager":
        engine: Engine = EagerEngine(
            bundle, eager_model(bundle, job.get("checkpoint") and Path(job["checkpoint"])), threads
        )
        spec = bundle.preprocessing

        def run() -> list[str]:  # as bench_inference.py: decode one photo after another, then the model
            labels = []
            for start in range(0, len(paths), batch_size):
                batch = stack_batch([load_and_preprocess(p, spec) for p in paths[start : start + batch_size]])
                labels += [bundle.labels[i] for i in engine.run(batch)[LOGITS_NAME].argmax(axis=1)]
            return labels

    else:
        engine = create_engine(
            bundle, job["engine"], batch_size=batch_size, threads=threads, graph=job.get("graph")
        )
        classifier = Classifier(
            bundle,
            engine=engine,
            batch_size=batch_size,
            decode_workers=job["decode_workers"],
            decode_in_processes=job["processes"],
        )

        def run() -> list[str]:
            return [r.label if isinstance(r, Prediction) else "(failed)" for r in classifier.classify(paths)]

    labels = run()  # warm-up; starts the decoding processes too
    # The decoding processes' memory, sampled: their peaks are their own, out of this one's reach.
    workers = descendants() if job.get("processes") and Path("/proc/self/statm").exists() else []
    peak_workers = [rss_mb(workers)]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            peak_workers[0] = max(peak_workers[0], rss_mb(workers))

    sampler = threading.Thread(target=sample, daemon=True)
    if workers:
        sampler.start()
    seconds = best_seconds(run, job["repeat"])
    sampling.set()
    result = {
        "rate": len(paths) / seconds,
        "rss_mb": peak_rss_mb(),
        "workers_mb": peak_workers[0],
        "labels": labels,
    }
    print(json.dumps(result))
    return 0


# --- the report -----------------------------------------------------------------------------------------


def engine_variants(
    bundle: ModelBundle, threads: int, max_batch: int
) -> tuple[list[tuple[str, Callable[[], Engine]]], list[str]]:
    """(name, start) of every engine and graph to measure, and one line per engine that cannot run."""
    from catbreed_desktop.core.engines import TensorRTEngine

    variants: list[tuple[str, Callable[[], Engine]]] = []
    skipped = []
    for info in list_engines(bundle, batch_size=DEFAULT_BATCH_SIZE):
        if not info.available:
            skipped.append(f"{info.title}: skipped, {info.reason}")
            continue
        if info.name == "tensorrt":
            variants.append(
                (
                    "TensorRT fp16",
                    lambda: TensorRTEngine(
                        bundle, batch_size=DEFAULT_BATCH_SIZE, fp16=True, max_batch=max_batch
                    ),
                )
            )
        elif info.name == "cuda":
            for graph in ("fp16", "fp32"):
                variants.append((f"ORT CUDA {graph}", partial(create_engine, bundle, "cuda", graph=graph)))
        else:
            for graph, title in (
                ("bundle", info.precision),
                ("fp32", "fp32 derived"),
                ("fp16", "fp16 derived"),
            ):
                variants.append(
                    (
                        f"ORT CPU {title}",
                        partial(create_engine, bundle, "cpu", threads=threads, graph=graph),
                    )
                )
    return variants, skipped


def report(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import onnxruntime

    bundle = load_bundle(args.bundle)
    spec = bundle.preprocessing
    photos = pick_photos(args.photos, args.count or 48)
    warm_cache(photos)
    inputs = np.stack([load_and_preprocess(p, spec) for p in photos])
    print(
        f"model      {bundle.architecture}, {bundle.num_labels} labels, {spec.size}x{spec.size} input, {bundle.path}"
    )
    print(f"photos     {len(photos)} from {args.photos}, spread over its folders")
    print(
        f"machine    {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads per "
        f"runtime and {args.decode_workers} decode workers; onnxruntime {onnxruntime.__version__}; load average {load_average()}"
    )
    print()

    variants, skipped = engine_variants(bundle, args.threads, max(args.batch_sizes))
    engines: dict[str, Engine] = {}
    if not args.skip_eager:
        import torch
        import transformers

        print(
            f"baseline   {EAGER}: torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads"
        )
        eager = EagerEngine(bundle, eager_model(bundle, args.checkpoint), args.threads)
        if args.checkpoint is None:
            with create_engine(bundle, "cpu", threads=args.threads, graph="fp32") as fp32:
                gap = float(np.abs(logits_of(eager, inputs[:8]) - logits_of(fp32, inputs[:8])).max())
            print(
                f"           rebuilt from the bundle's fp32 graph; max |logit - ONNX Runtime's| on 8 photos: {gap:.1e}"
            )
            if gap > EAGER_TOLERANCE:
                raise SystemExit(
                    f"the rebuilt eager model differs from the graph by {gap:.1e}: not the same model"
                )
        engines[EAGER] = eager
    for line in skipped:
        print(f"engine     {line}")
    for name, start in variants:
        engines[name] = start()
        print(f"engine     {name}: {engines[name].provider}")
    print()

    # Inference only.
    rates: dict[tuple[str, int], float] = {}
    for name, engine in engines.items():
        for batch_size in args.batch_sizes:
            rates[name, batch_size] = inference_rate(engine, inputs, batch_size, args.min_images, args.repeat)
    print("inference only, images/s (ratio to eager at the same batch size)")
    rows = []
    for name in engines:
        cells = [name]
        for batch_size in args.batch_sizes:
            base = rates.get((EAGER, batch_size))
            ratio = f" ({rates[name, batch_size] / base:.2f}x)" if base else ""
            cells.append(f"{rates[name, batch_size]:.1f}{ratio}")
        rows.append(cells)
    print_table(
        ["engine", *(f"batch {b}" for b in args.batch_sizes)], rows, [22, *([16] * len(args.batch_sizes))]
    )

    # Agreement.
    logits = {name: logits_of(engine, inputs) for name, engine in engines.items()}
    shipped = next(name for name in engines if name.startswith("ORT CPU"))
    references = [name for name in (EAGER, shipped) if name in logits]
    rows = []
    for name, values in logits.items():
        cells = [name]
        for reference in references:
            agree = int((values.argmax(axis=1) == logits[reference].argmax(axis=1)).sum())
            gap = float(np.abs(values - logits[reference]).max())
            cells.append(f"{agree}/{len(values)}, {gap:.2g}")
        rows.append(cells)
    print("top-1 agreement and largest |logit difference|, on the photos above")
    print_table(["engine", *(f"vs {r}" for r in references)], rows, [22, *([24] * len(references))])
    for engine in engines.values():
        engine.close()

    large_dir = args.large_dir or Path(tempfile.mkdtemp(prefix="catbreed-12mp-"))
    try:
        large = large_copies(photos, large_dir)
        warm_cache(large)
        sets = {"Oxford size": photos, "12 MP": large}

        # Decoding only.
        print(f"decoding only (load_and_preprocess), photos/s, {args.decode_workers} workers")
        rows = []
        for label, paths in sets.items():
            threads = decode_rate(paths, bundle, args.decode_workers, False, args.repeat)
            processes = decode_rate(paths, bundle, args.decode_workers, True, args.repeat)
            rows.append([label, f"{threads:.1f}", f"{processes:.1f}", f"{processes / threads:.2f}"])
        print_table(["photos", "threads", "processes", "processes/threads"], rows, [12, 10, 10, 18])
        empty, array = round_trip_ms(spec.size, args.decode_workers)
        print(
            f"process pool round trip per task, no decoding: {empty:.2f} ms returning nothing, {array:.2f} ms "
            f"returning one preprocessed photo ({3 * spec.size * spec.size * 4 // 1024} KB of float32)\n"
        )

        if not args.skip_e2e:
            end_to_end_section(args, bundle, sets)
    finally:
        if args.large_dir is None:
            shutil.rmtree(large_dir, ignore_errors=True)
    print(f"load average at the end: {load_average()}")
    return 0


def end_to_end_section(args: argparse.Namespace, bundle: ModelBundle, sets: dict[str, list[Path]]) -> None:
    jobs: list[dict[str, Any]] = []
    base = {
        "bundle": str(bundle.path),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "decode_workers": args.decode_workers,
        "repeat": args.repeat,
    }
    if not args.skip_eager:
        jobs.append(
            {
                "name": f"{EAGER}, sequential decode",
                "kind": "eager",
                "checkpoint": args.checkpoint and str(args.checkpoint),
            }
        )
    for info in list_engines(bundle):
        for processes in (False, True) if info.available else ():
            jobs.append(
                {
                    "name": f"Classifier, {info.title}, decode {'processes' if processes else 'threads'}",
                    "kind": "classifier",
                    "engine": info.name,
                    "processes": processes,
                }
            )
    results: dict[tuple[str, str], EndToEnd] = {}
    for job in jobs:
        for label, paths in sets.items():
            results[job["name"], label] = end_to_end({**base, **job, "paths": [str(p) for p in paths]})
    print(
        f"end to end, file to label, batch {args.batch_size}: photos/s (ratio to eager), peak RSS MB of the process"
    )
    rows = []
    labels = list(sets)
    for job in jobs:
        cells = [job["name"]]
        for label in labels:
            result = results[job["name"], label]
            eager = results.get((jobs[0]["name"], label)) if not args.skip_eager else None
            ratio = f" ({result.rate / eager.rate:.2f}x)" if eager else ""
            workers = f" + {result.workers_mb:.0f}" if result.workers_mb else ""
            cells += [f"{result.rate:.1f}{ratio}", f"{result.rss_mb:.0f}{workers}"]
        oxford, large = results[job["name"], labels[0]], results[job["name"], labels[1]]
        cells += [f"{large.rate / oxford.rate:.2f}", f"{large.rss_mb / oxford.rss_mb:.2f}"]
        rows.append(cells)
    header = ["pipeline"]
    for label in labels:
        header += [f"{label} photos/s", "RSS MB"]
    print_table([*header, "12MP/Oxford rate", "RSS"], rows, [46, 18, 10, 18, 10, 16, 6])
    print(
        "(+ N: the decoding processes' RSS together, sampled; targets: 12 MP rate >= 0.85 of Oxford's, RSS <= 1.10)"
    )
    for job in jobs:
        oxford, large = results[job["name"], labels[0]], results[job["name"], labels[1]]
        agree = sum(a == b for a, b in zip(oxford.labels, large.labels, strict=True))
        print(f"top-1, Oxford size vs 12 MP copy, {job['name']}: {agree}/{len(oxford.labels)}")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.decode_workers = args.decode_workers or args.threads
    if args.child is not None:
        return run_child(args.child)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
