"""The CPU engines side by side in one run: ONNX Runtime int8, OpenVINO (latency and throughput hints), eager fp32.

Sections, in the order printed:

* costs: installed size of onnxruntime and openvino (and the wheel's, with `--wheel`), the import
  time of each in a fresh process, OpenVINO's compile time with an empty and with a warm
  compiled-model cache (`CACHE_DIR` under the user cache) and what that cache holds, and each
  engine's first batch;
* inference only: images/s at batch 1, 8 and 32 on `--threads` threads, the engines timed in turns
  so that a slow minute on a shared machine costs each of them one pass; ratios against ONNX
  Runtime int8 measured in the same run;
* agreement: top-1 agreement of each OpenVINO hint with ONNX Runtime on every photo of `--photos`
  (`--limit` for a quick run), and the largest logit and embedding differences;
* batch independence: the largest difference between a photo's outputs run alone and in a batch of 8.

The verdict line applies the bar for making OpenVINO the CPU default in "auto": at least 1.3x ONNX
Runtime int8 at batch 8, top-1 agreement at least 99.5 %, batch independence within 1e-5.
The eager baseline is bench_engines.py's (the bundle's weights in transformers, fp32).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EagerEngine, dinov2_from_graph, interleaved_rates, load_average, pick_photos

from catbreed_desktop.core.bundle import EMBEDDING_NAME, LOGITS_NAME, ModelBundle, load_bundle
from catbreed_desktop.core.engines.base import Engine
from catbreed_desktop.core.engines.onnx_runtime import OnnxRuntimeEngine
from catbreed_desktop.core.engines.openvino_engine import OpenVinoEngine
from catbreed_desktop.core.photos import load_and_preprocess, stack_batch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "oxford-pet-cats"
ORT = "ONNX Runtime int8"
HINTS = ("latency", "throughput")
MIN_SPEEDUP, MIN_AGREEMENT, MAX_BATCH_DIFF = 1.3, 0.995, 1e-5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle", type=Path, default=ROOT / "models", help="model bundle (default: models/)"
    )
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help=f"(default: {DEFAULT_PHOTOS})")
    parser.add_argument("--limit", type=int, help="agreement on this many photos, spread over the folder")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per figure, best kept")
    parser.add_argument("--min-images", type=int, default=32, help="images per timed pass, at least")
    parser.add_argument("--skip-eager", action="store_true", help="no transformers fp32 baseline")
    parser.add_argument("--wheel", type=Path, help="the openvino wheel file, to report its size")
    return parser.parse_args(argv)


def installed_mb(distribution: str) -> float:
    try:
        files = importlib.metadata.distribution(distribution).files or ()
    except importlib.metadata.PackageNotFoundError:
        return float("nan")
    return (
        sum(Path(str(file.locate())).stat().st_size for file in files if Path(str(file.locate())).is_file())
        / 1e6
    )


def import_seconds(module: str) -> float:
    """Seconds `import module` takes in a fresh interpreter (best of 3, so the files are in the page cache)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
            ).stdout
        )
        for _ in range(3)
    ]
    return min(runs)


def folder_mb(folder: Path) -> tuple[int, float]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files) / 1e6


T = TypeVar("T")


def timed(make: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


def costs(args: argparse.Namespace, bundle: ModelBundle) -> None:
    print("## costs")
    import openvino  # type: ignore[import-untyped]

    print(f"openvino {openvino.__version__}; onnxruntime {importlib.metadata.version('onnxruntime')}")
    if args.wheel:
        print(f"openvino wheel: {args.wheel.stat().st_size / 1e6:.1f} MB ({args.wheel.name})")
    for distribution in ("onnxruntime", "openvino", "openvino-telemetry"):
        print(f"installed {distribution}: {installed_mb(distribution):.1f} MB")
    for module in ("onnxruntime", "openvino"):
        print(f"import {module} (fresh process): {import_seconds(module):.2f} s")
    sample = np.random.default_rng(0).normal(
        size=(8, 3, bundle.preprocessing.size, bundle.preprocessing.size)
    )
    sample = sample.astype(np.float32)
    ort, seconds = timed(lambda: OnnxRuntimeEngine(bundle, threads=args.threads))
    _, first = timed(lambda: ort.run(sample))
    print(f"{ORT}: session start {seconds:.2f} s, first batch of 8 {first:.2f} s")
    for hint in HINTS:
        with tempfile.TemporaryDirectory(prefix="catbreed-ov-cache-") as cache:
            os.environ["CATBREED_CACHE_DIR"] = cache

            def start(hint: str = hint) -> OpenVinoEngine:
                return OpenVinoEngine(bundle, threads=args.threads, hint=hint)

            openvino_engine, cold = timed(start)
            _, first = timed(partial(openvino_engine.run, sample))
            files, size = folder_mb(Path(cache) / "openvino")
            _, warm = timed(start)
            print(
                f"OpenVINO {hint}: compile {cold:.2f} s with an empty cache, {warm:.2f} s from CACHE_DIR "
                f"({files} file(s), {size:.1f} MB); first batch of 8 {first:.2f} s; {openvino_engine.requests} request(s)"
            )
        os.environ.pop("CATBREED_CACHE_DIR", None)
    print()


def speed(
    args: argparse.Namespace, bundle: ModelBundle, engines: dict[str, Engine], inputs: np.ndarray
) -> dict[int, dict[str, float]]:
    print(f"## inference only: images/s, {args.threads} threads, best of {args.repeat} (ratio to {ORT})")
    rates = {}
    for batch_size in args.batch_sizes:
        rates[batch_size] = interleaved_rates(engines, inputs, batch_size, args.min_images, args.repeat)
        cells = [
            f"{name} {rate:6.1f} ({rate / rates[batch_size][ORT]:.2f}x)"
            for name, rate in rates[batch_size].items()
        ]
        print(f"batch {batch_size:>2}: " + " | ".join(cells))
        print(f"          load average {load_average()}")
    print()
    return rates


def agreement(args: argparse.Namespace, bundle: ModelBundle, engines: dict[str, Engine]) -> dict[str, float]:
    photos = pick_photos(args.photos, args.limit)
    print(f"## agreement with {ORT} on {len(photos)} photos of {args.photos}")
    names = [name for name in engines if name != ORT]
    agree = dict.fromkeys(names, 0)
    logit_diff = dict.fromkeys(names, 0.0)
    embedding_diff = dict.fromkeys(names, 0.0)
    for start in range(0, len(photos), 8):
        batch = stack_batch(
            [load_and_preprocess(path, bundle.preprocessing) for path in photos[start : start + 8]]
        )
        reference = engines[ORT].run(batch)
        for name in names:
            outputs = engines[name].run(batch)
            agree[name] += int((outputs[LOGITS_NAME].argmax(1) == reference[LOGITS_NAME].argmax(1)).sum())
            logit_diff[name] = max(
                logit_diff[name], float(np.abs(outputs[LOGITS_NAME] - reference[LOGITS_NAME]).max())
            )
            if EMBEDDING_NAME in outputs:
                gap = float(np.abs(outputs[EMBEDDING_NAME] - reference[EMBEDDING_NAME]).max())
                embedding_diff[name] = max(embedding_diff[name], gap)
    shares = {name: agree[name] / len(photos) for name in names}
    for name in names:
        print(
            f"{name}: top-1 agreement {agree[name]}/{len(photos)} = {100 * shares[name]:.2f} %; "
            f"largest logit difference {logit_diff[name]:.4f}, embedding {embedding_diff[name]:.4f}"
        )
    print()
    return shares


def batch_independence(
    bundle: ModelBundle, engines: dict[str, Engine], photos: list[Path]
) -> dict[str, float]:
    """Largest |outputs of a photo alone - its outputs in a batch of 8|, over logits and embedding."""
    print(f"## batch independence: {len(photos)} photos, each alone and in a batch of 8")
    batch = stack_batch([load_and_preprocess(path, bundle.preprocessing) for path in photos])
    worst = {}
    for name, engine in engines.items():
        together = engine.run(batch)
        gaps = [0.0]
        for index in range(len(batch)):
            alone = engine.run(batch[index : index + 1])
            gaps += [float(np.abs(alone[key][0] - together[key][index]).max()) for key in engine.output_names]
        worst[name] = max(gaps)
        print(f"{name}: {worst[name]:.2e}")
    print()
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    bundle = load_bundle(args.bundle)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?"
    )
    print(
        f"# CPU engines: {bundle.path}, CPU {model}, {os.cpu_count()} cores, load average {load_average()}\n"
    )
    costs(args, bundle)
    engines: dict[str, Engine] = {ORT: OnnxRuntimeEngine(bundle, threads=args.threads)}
    for hint in HINTS:
        engines[f"OpenVINO {hint}"] = OpenVinoEngine(bundle, threads=args.threads, hint=hint)
    timed_engines = dict(engines)
    if not args.skip_eager:
        timed_engines["eager fp32"] = EagerEngine(bundle, dinov2_from_graph(bundle), args.threads)
    photos = pick_photos(args.photos, 8)
    inputs = stack_batch([load_and_preprocess(path, bundle.preprocessing) for path in photos])
    rates = speed(args, bundle, timed_engines, inputs)
    shares = agreement(args, bundle, engines)
    worst = batch_independence(bundle, engines, photos)
    print("## verdict (the bar for OpenVINO as the CPU default in auto)")
    for hint in HINTS:
        name = f"OpenVINO {hint}"
        ratio = rates[8][name] / rates[8][ORT] if 8 in rates else float("nan")
        passed = ratio >= MIN_SPEEDUP and shares[name] >= MIN_AGREEMENT and worst[name] <= MAX_BATCH_DIFF
        print(
            f"{name}: {ratio:.2f}x at batch 8 (>= {MIN_SPEEDUP}), agreement {100 * shares[name]:.2f} % "
            f"(>= {100 * MIN_AGREEMENT} %), batch independence {worst[name]:.1e} (<= {MAX_BATCH_DIFF:.0e}): "
            f"{'meets the bar' if passed else 'does not meet the bar'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
