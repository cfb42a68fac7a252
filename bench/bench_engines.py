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

The eager baseline is a transformers `Dinov2ForImageClassification` holding the weights of the
bundle's derived fp32 graph (the int8 weights dequantized: the model the CPU engine runs, without
rounding activations to 8 bits), checked against ONNX Runtime on that graph before anything is
timed; `--checkpoint` uses a Hugging Face checkpoint folder instead.

`--draft-check` measures instead how often JPEG draft decoding (`imaging.JPEG_DRAFT_GAP`) changes
the shipped model's top-1 on 12-megapixel copies of the photos, against decoding them in full.

`--quantisation` compares instead the old dynamic int8 graph with the static QDQ one the trainer
now exports, both made in the same run from the same fp32 graph: speed beside eager and fp32,
accuracy, macro F1 and top-1 agreement with fp32, and how far a photo's probabilities move
between being run alone and in a batch.
Run `python bench/bench_engines.py --help` for the options; bench/README.md says more.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Run from a checkout without installing it: the package is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catbreed_desktop.core import imaging
from catbreed_desktop.core.bundle import LOGITS_NAME, ModelBundle, load_bundle
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.decode_pool import ProcessDecodePool
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.base import Engine
from catbreed_desktop.core.engines.inventory import list_engines
from catbreed_desktop.core.imaging import iter_photo_paths, load_and_preprocess, stack_batch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "oxford-pet-cats"
LARGE_SIDE = 4000  # 4000 x 3000 for the 4:3 photos: 12 megapixels
LARGE_QUALITY = 95
EAGER = "transformers eager"
# The logits of eager and of ONNX Runtime on the same fp32 weights must agree this closely before
# eager counts as the same model (the export check of the trainer uses the same bound).
EAGER_TOLERANCE = 1e-3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle", type=Path, default=ROOT / "models", help="model bundle (default: models/)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="eager baseline from this Hugging Face folder instead"
    )
    parser.add_argument(
        "--photos",
        type=Path,
        default=DEFAULT_PHOTOS,
        help=f"photo folder, searched recursively (default: {DEFAULT_PHOTOS})",
    )
    parser.add_argument(
        "--count",
        type=int,
        help="photos, spread over the folder (default: 48; --draft-check: all of them; --quantisation: 300)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="(default: 1 8 32 64; --quantisation: 8)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="end-to-end batch size (default: 8, the app's)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per runtime (default: 2)")
    parser.add_argument(
        "--decode-workers", type=int, help="decoding threads or processes (default: as --threads)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed passes per figure; the best is kept (default: 3)"
    )
    parser.add_argument(
        "--min-images", type=int, default=64, help="images per inference-only pass, at least (default: 64)"
    )
    parser.add_argument(
        "--large-dir",
        type=Path,
        help="where the 12 MP copies go (default: a temporary folder, removed after)",
    )
    parser.add_argument("--skip-eager", action="store_true", help="no PyTorch baseline (no ratios)")
    parser.add_argument("--skip-e2e", action="store_true", help="no end-to-end section")
    parser.add_argument(
        "--draft-check", action="store_true", help="only measure draft decoding against full decoding (slow)"
    )
    parser.add_argument(
        "--quantisation",
        action="store_true",
        help="only compare the old dynamic int8 graph with the new static one, both made from the fp32 graph",
    )
    parser.add_argument(
        "--calibration-photos",
        type=int,
        default=256,
        help="--quantisation: photos (not among the --count ones) the static graph is calibrated on (default: 256)",
    )
    parser.add_argument(
        "--seed", type=int, default=83, help="--quantisation: draws the calibration photos (default: 83)"
    )
    parser.add_argument(
        "--quant-dir",
        type=Path,
        help="--quantisation: keep the quantised graphs here (default: a temporary folder)",
    )
    parser.add_argument(
        "--gaps",
        type=int,
        nargs="+",
        help="--draft-check: JPEG_DRAFT_GAP values to try (default: 3 2 1)",
    )
    parser.add_argument(
        "--child", type=Path, help=argparse.SUPPRESS
    )  # one end-to-end row, as a fresh process
    return parser.parse_args(argv)


# --- photos -------------------------------------------------------------------------------------------


def pick_photos(folder: Path, count: int | None) -> list[Path]:
    """`count` photos (all when None) spread evenly over every sub-folder, so every breed is represented."""
    found = iter_photo_paths([folder], recursive=True)
    if not found:
        raise SystemExit(f"no photos found in {folder}")
    if count is None or count >= len(found):
        return found
    by_folder: dict[Path, list[Path]] = {}
    for path in found:
        by_folder.setdefault(path.parent, []).append(path)
    groups = list(by_folder.values())
    picked: list[Path] = []
    for index, group in enumerate(groups):
        share = count // len(groups) + (index < count % len(groups))
        step = len(group) / max(1, share)
        picked += [group[int(i * step)] for i in range(min(share, len(group)))]
    return picked


def large_copies(photos: Sequence[Path], folder: Path) -> list[Path]:
    """Each photo upscaled (bicubic) to `LARGE_SIDE` px on its long side, saved as a quality-95 JPEG.

    Named after the photo's folder and name, and made only once: an existing copy is reused.
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for photo in photos:
        copy = folder / f"{photo.parent.name}__{photo.stem}.jpg"
        if not copy.is_file():
            with Image.open(photo) as image:
                rgb = image.convert("RGB")
            scale = LARGE_SIDE / max(rgb.size)
            size = (round(rgb.width * scale), round(rgb.height * scale))
            partial = copy.with_suffix(".part")
            rgb.resize(size, Image.Resampling.BICUBIC).save(partial, "JPEG", quality=LARGE_QUALITY)
            partial.replace(copy)
        copies.append(copy)
    return copies


def warm_cache(paths: Sequence[Path]) -> None:
    """Read every file once so that no measurement pays for a cold disk."""
    for path in paths:
        path.read_bytes()


# --- the eager baseline ---------------------------------------------------------------------------------


class EagerEngine(Engine):
    """A transformers image classifier run by PyTorch in eager mode, under `torch.no_grad()`."""

    provider = "PyTorch eager (transformers)"

    def __init__(self, bundle: ModelBundle, model: Any, threads: int) -> None:
        import torch

        super().__init__(bundle)
        torch.set_num_threads(threads)
        self.model = model.eval()

    @property
    def output_names(self) -> tuple[str, ...]:
        return (LOGITS_NAME,)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            logits = self.model(pixel_values=torch.from_numpy(np.ascontiguousarray(batch))).logits
        return {LOGITS_NAME: logits.numpy()}


def eager_model(bundle: ModelBundle, checkpoint: Path | None) -> Any:
    """The bundle's model in transformers: from `checkpoint`, else rebuilt from the derived fp32 graph."""
    if checkpoint is not None:
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(checkpoint)
    if bundle.architecture != "Dinov2ForImageClassification":
        raise SystemExit(
            f"cannot rebuild a {bundle.architecture} in transformers from its graph; give --checkpoint or --skip-eager"
        )
    return dinov2_from_graph(bundle)


def dinov2_from_graph(bundle: ModelBundle) -> Any:
    """A `Dinov2ForImageClassification` holding the weights of the bundle's derived fp32 graph.

    The export keeps module names for biases, norms and embeddings. Linear weights are stored
    transposed under anonymous names: each is the MatMul weight feeding the Add of a named bias.
    The position embeddings were folded into one anonymous (1, tokens, hidden) constant.
    """
    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import Dinov2ForImageClassification

    from catbreed_desktop.core.engines.float_graph import float_graph_path
    from trainer.backbone_import import dinov2_config

    graph = onnx.load(str(float_graph_path(bundle, "fp32"))).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    state: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name.startswith("body.dinov2."):
            state[name.removeprefix("body.")] = array
        elif name == "head.bias":
            state["classifier.bias"] = array
        elif name in ("head.weight", "head.weight_Transposed"):
            state["classifier.weight"] = array if name == "head.weight" else array.T
    for node in graph.node:
        bias = next((name for name in node.input if name.endswith(".bias") and name in arrays), None)
        if node.op_type != "Add" or bias is None or not bias.startswith("body.dinov2."):
            continue
        matmul = next((producer.get(name) for name in node.input if name != bias), None)
        if matmul is None or matmul.op_type != "MatMul":
            continue
        weight = next((arrays[name] for name in matmul.input if name in arrays), None)
        if weight is not None:
            state[bias.removeprefix("body.").removesuffix(".bias") + ".weight"] = weight.T

    hidden = state["dinov2.embeddings.cls_token"].shape[-1]
    patch = state["dinov2.embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = bundle.preprocessing.size // patch
    positions = [
        array
        for name, array in arrays.items()
        if not name.startswith(("body.", "head.")) and array.shape == (1, 1 + grid * grid, hidden)
    ]
    if len(positions) != 1:
        raise SystemExit(
            f"expected one position-embedding constant in the fp32 graph, found {len(positions)}"
        )
    state["dinov2.embeddings.position_embeddings"] = positions[0]
    state.setdefault("dinov2.embeddings.mask_token", np.zeros((1, hidden), dtype=np.float32))
    epsilon = next(
        (
            attr.f
            for node in graph.node
            if node.op_type == "LayerNormalization"
            for attr in node.attribute
            if attr.name == "epsilon"
        ),
        1e-6,
    )
    config = dinov2_config(
        state,
        grid,
        prefix="dinov2.",
        layer_norm_eps=epsilon,
        num_labels=bundle.num_labels,
        id2label=dict(enumerate(bundle.labels)),
        label2id={label: index for index, label in enumerate(bundle.labels)},
    )
    model = Dinov2ForImageClassification(config)
    missing, unexpected = model.load_state_dict(
        {name: torch.from_numpy(np.array(array, dtype=np.float32)) for name, array in state.items()},
        strict=False,
    )
    if missing or unexpected:
        raise SystemExit(
            f"the fp32 graph's weights do not fit Dinov2ForImageClassification: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()


# --- measuring ------------------------------------------------------------------------------------------


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def inference_rate(
    engine: Engine, inputs: np.ndarray, batch_size: int, min_images: int, repeat: int
) -> float:
    """Images/s of `engine.run` on batches of `batch_size`, best of `repeat` passes.

    A pass is `min_images` images or more, and half a second or more, so that a GPU's passes are
    long enough to time.
    """
    batch = np.ascontiguousarray(np.resize(inputs, (batch_size, *inputs.shape[1:])))
    engine.run(batch)  # warm-up: arenas, kernels, caches
    one_call = best_seconds(lambda: engine.run(batch), 1)
    calls = max(1, math.ceil(min_images / batch_size), math.ceil(0.5 / max(one_call, 1e-6)))

    def run() -> None:
        for _ in range(calls):
            engine.run(batch)

    return calls * batch_size / best_seconds(run, repeat)


def logits_of(engine: Engine, inputs: np.ndarray, batch_size: int = 8) -> np.ndarray:
    return np.concatenate(
        [engine.run(inputs[i : i + batch_size])[LOGITS_NAME] for i in range(0, len(inputs), batch_size)]
    )


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
        engine = EagerEngine(
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
    for info in list_engines(bundle, batch_size=8):
        if not info.available:
            skipped.append(f"{info.title}: skipped, {info.reason}")
            continue
        if info.name == "tensorrt":
            variants.append(
                (
                    "TensorRT fp16",
                    lambda: TensorRTEngine(bundle, batch_size=8, fp16=True, max_batch=max_batch),
                )
            )
        elif info.name == "cuda":
            for graph in ("fp16", "fp32"):
                variants.append((f"ORT CUDA {graph}", lambda g=graph: create_engine(bundle, "cuda", graph=g)))
        else:
            for graph, title in (
                ("bundle", info.precision),
                ("fp32", "fp32 derived"),
                ("fp16", "fp16 derived"),
            ):
                variants.append(
                    (
                        f"ORT CPU {title}",
                        lambda g=graph: create_engine(bundle, "cpu", threads=threads, graph=g),
                    )
                )
    return variants, skipped


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int]) -> None:
    """Rows under a header, the first column left-aligned and the others right-aligned."""

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:>{width}}" if index else f"{cell:<{width}}"
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))
    print()


def load_average() -> str:
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


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


# --- draft decoding against full decoding ------------------------------------------------------------------


def draft_check(args: argparse.Namespace) -> int:
    """Top-1 on 12 MP copies of the photos: decoded in full against draft decoding at each gap.

    Every photo is classified alone (batch 1): the int8 graph quantizes activations with one
    scale per batch, so in a batch a photo's scores also move with its neighbours' pixels. How
    much that alone changes is shown too ("full, batch 32"), as is the same check on the fp32
    graph, where nothing is rounded to 8 bits.
    """
    bundle = load_bundle(args.bundle)
    spec = bundle.preprocessing
    gaps = args.gaps or [3, 2, 1]
    photos = pick_photos(args.photos, args.count)
    large_dir = args.large_dir or Path(tempfile.mkdtemp(prefix="catbreed-12mp-"))
    engines = {
        "int8 (shipped)": create_engine(bundle, "cpu", threads=args.threads),
        "fp32 derived": create_engine(bundle, "cpu", threads=args.threads, graph="fp32"),
    }
    truth = np.asarray([bundle.labels.index(p.parent.name.replace("_", " ")) for p in photos])
    decodings = ["full", *(f"gap {g}" for g in gaps)]
    variants = [*decodings, "full, batch 32"]
    probabilities: dict[tuple[str, str], list[np.ndarray]] = {(e, v): [] for e in engines for v in variants}
    seconds = dict.fromkeys(decodings, 0.0)
    print(
        f"draft check: {len(photos)} photos from {args.photos}, 12 MP copies in {large_dir}, gaps {gaps}",
        flush=True,
    )
    original_gap = imaging.JPEG_DRAFT_GAP
    try:
        for start in range(0, len(photos), 32):
            chunk = large_copies(photos[start : start + 32], large_dir)
            warm_cache(chunk)
            arrays: dict[str, list[np.ndarray]] = {}
            for decoding in decodings:
                began = time.perf_counter()
                if decoding == "full":  # no draft, no box reduction: the whole image, then the resize
                    arrays[decoding] = [imaging.preprocess(imaging.load_photo(path), spec) for path in chunk]
                else:
                    imaging.JPEG_DRAFT_GAP = int(decoding.split()[1])
                    arrays[decoding] = [load_and_preprocess(path, spec) for path in chunk]
                    imaging.JPEG_DRAFT_GAP = original_gap
                seconds[decoding] += time.perf_counter() - began
            for name, engine in engines.items():
                for decoding in decodings:
                    probabilities[name, decoding] += [engine.predict(a[None]) for a in arrays[decoding]]
                probabilities[name, "full, batch 32"].append(engine.predict(stack_batch(arrays["full"])))
            if args.large_dir is None:
                for path in chunk:
                    path.unlink()
            done = min(start + 32, len(photos))
            if done % 320 == 0 or done == len(photos):
                full = np.concatenate(probabilities["int8 (shipped)", "full"]).argmax(axis=1)
                agree = ", ".join(
                    f"{v} {int((np.concatenate(probabilities['int8 (shipped)', v]).argmax(axis=1) == full).sum())}"
                    for v in variants[1:]
                )
                print(f"  {done} photos, int8, top-1 as in full decoding: {agree} of {done}", flush=True)
    finally:
        imaging.JPEG_DRAFT_GAP = original_gap
        for engine in engines.values():
            engine.close()
        if args.large_dir is None:
            shutil.rmtree(large_dir, ignore_errors=True)
    count = len(photos)
    print()
    print(
        "decoding ms/photo, one thread: "
        + ", ".join(f"{d} {seconds[d] / count * 1000:.1f}" for d in decodings)
    )
    print()
    for name in engines:
        full_probs = np.concatenate(probabilities[name, "full"])
        full = full_probs.argmax(axis=1)
        rows = []
        for variant in variants:
            probs = np.concatenate(probabilities[name, variant])
            mine = probs.argmax(axis=1)
            gap = np.abs(probs - full_probs)
            same = int((mine == full).sum())
            rows.append(
                [
                    variant,
                    f"{same}/{count} ({same / count:.2%})",
                    f"{gap.max():.3f} / {gap.mean():.4f}",
                    f"{(mine == truth).mean():.2%}",
                ]
            )
        print(f"{name} graph, each photo alone unless said")
        print_table(
            ["decoding", "top-1 = full decoding", "|prob diff| max/mean", "accuracy"], rows, [15, 24, 22, 9]
        )
        for variant in variants[1:]:
            changed = np.flatnonzero(np.concatenate(probabilities[name, variant]).argmax(axis=1) != full)
            if len(changed):
                names = ", ".join(photos[i].name for i in changed[:12])
                print(f"  {variant}: top-1 changed on {names}{' ...' if len(changed) > 12 else ''}")
        print()
    return 0


# --- static int8 against the old dynamic int8 ---------------------------------------------------------------


def interleaved_rates(
    engines: dict[str, Engine], inputs: np.ndarray, batch_size: int, min_images: int, repeat: int
) -> dict[str, float]:
    """Images/s of each engine on batches of `batch_size`, best of `repeat` passes taken in turns.

    Turns rather than one engine after another: on a shared machine the load drifts, and a slow
    minute should cost every engine one pass, not one engine all of its passes.
    """
    batch = np.ascontiguousarray(np.resize(inputs, (batch_size, *inputs.shape[1:])))
    calls = max(1, math.ceil(min_images / batch_size))
    for engine in engines.values():
        engine.run(batch)  # warm-up: arenas, kernels, caches
    best = dict.fromkeys(engines, math.inf)
    for _ in range(repeat):
        for name, engine in engines.items():
            start = time.perf_counter()
            for _ in range(calls):
                engine.run(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: calls * batch_size / seconds for name, seconds in best.items()}


def graph_bundle(bundle: ModelBundle, graph: Path) -> ModelBundle:
    """`bundle` with `graph` as its model: the app's CPU engine then runs that file."""
    from catbreed_desktop.core.files import sha256_file

    return dataclasses.replace(
        bundle, path=graph.parent, model_file=graph.name, model_sha256=sha256_file(graph)
    )


def quantisation_check(args: argparse.Namespace) -> int:
    """The old dynamic int8 graph against the new static one, both made here from the same fp32 graph.

    Speed (images/s of `engine.run` at each batch size, batch 8 by default) beside eager PyTorch (the
    baseline) and the fp32 graph; accuracy and macro F1 on the evaluation photos (folder = breed),
    top-1 agreement with fp32; and how far a photo's probabilities move between being run alone
    and in a batch of `--batch-size`. The static graph is made by the trainer's own
    `quantise_int8`, calibrated on `--calibration-photos` other photos of the folder.
    """
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from catbreed_desktop.core.engines.base import softmax
    from catbreed_desktop.core.engines.float_graph import float_graph_path
    from trainer.export import quantise_int8
    from trainer.metrics import subset_scores

    bundle = load_bundle(args.bundle)
    spec = bundle.preprocessing
    photos = pick_photos(args.photos, args.count or 300)
    others = sorted(set(iter_photo_paths([args.photos], recursive=True)) - set(photos))
    calibration = random.Random(args.seed).sample(others, min(args.calibration_photos, len(others)))
    truth = np.asarray([bundle.labels.index(p.parent.name.replace("_", " ")) for p in photos])
    folder = args.quant_dir or Path(tempfile.mkdtemp(prefix="catbreed-int8-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"model      {bundle.architecture}, {bundle.num_labels} labels, {spec.size}x{spec.size} input, {bundle.path}"
    )
    print(
        f"photos     {len(photos)} evaluated and {len(calibration)} others (seed {args.seed}) for calibration, "
        f"from {args.photos}"
    )
    print(
        f"machine    {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads per "
        f"runtime; onnxruntime {onnxruntime.__version__}; load average {load_average()}"
    )
    try:
        warm_cache(photos)
        inputs = np.stack([load_and_preprocess(p, spec) for p in photos])
        fp32_path = float_graph_path(bundle, "fp32")
        print(f"fp32 graph {fp32_path} (the bundle's int8 weights dequantized when the bundle is int8)")
        fp32_bundle = graph_bundle(bundle, fp32_path)
        with create_engine(fp32_bundle, "cpu", threads=args.threads) as fp32_engine:
            fp32_logits = logits_of(fp32_engine, inputs, args.batch_size)

        started = time.perf_counter()
        static_path, static_record = quantise_int8(
            fp32_path, folder, inputs[:64], fp32_logits[:64], calibration, spec, args.seed
        )
        print(f"static     {static_record['quantisation']}, in {time.perf_counter() - started:.0f} s")
        # The old export's recipe on the same pre-processed graph: dynamic QInt8 weights, per channel.
        prepared = folder / "model_fp32_prepared.onnx"
        dynamic_path = folder / "model_int8_dynamic.onnx"
        quantize_dynamic(
            str(prepared if prepared.is_file() else fp32_path),
            str(dynamic_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        graphs = {
            "fp32 graph (ORT)": fp32_path,
            "int8 dynamic (old)": dynamic_path,
            "int8 static QDQ (new)": static_path,
        }
        engines: dict[str, Engine] = {}
        if not args.skip_eager:
            eager = EagerEngine(bundle, eager_model(bundle, args.checkpoint), args.threads)
            gap = float(np.abs(logits_of(eager, inputs[:8]) - fp32_logits[:8]).max())
            print(f"baseline   {EAGER}, max |logit - fp32 graph's| on 8 photos: {gap:.1e}")
            if args.checkpoint is None and gap > EAGER_TOLERANCE:
                raise SystemExit(
                    f"the rebuilt eager model differs from the graph by {gap:.1e}: not the same model"
                )
            engines[EAGER] = eager
        for name, path in graphs.items():
            engines[name] = create_engine(graph_bundle(bundle, path), "cpu", threads=args.threads)
        baseline = next(iter(engines))
        print()

        rates = {
            size: interleaved_rates(engines, inputs, size, args.min_images, args.repeat)
            for size in args.batch_sizes
        }
        print(
            f"inference only, images/s (ratio to {baseline} | to int8 dynamic), best of {args.repeat} passes in turns"
        )
        rows = []
        for name in engines:
            cells = [name]
            for size in args.batch_sizes:
                rate = rates[size][name]
                old = rates[size]["int8 dynamic (old)"]
                cells.append(f"{rate:.1f} ({rate / rates[size][baseline]:.2f}x | {rate / old:.2f}x)")
            rows.append(cells)
        print_table(
            ["runtime", *(f"batch {b}" for b in args.batch_sizes)],
            rows,
            [22, *([24] * len(args.batch_sizes))],
        )

        # Averaged over the breeds the photos show: a bundle that knows more breeds than the folder
        # holds would otherwise be scored 0 on each breed it was never shown.
        shown = sorted(set(truth.tolist()))
        fp32_scores = subset_scores(truth, fp32_logits.argmax(axis=1), shown)
        probe = inputs[: args.batch_size * max(1, 32 // args.batch_size)]
        rows = []
        for name, engine in engines.items():
            logits = logits_of(engine, inputs, args.batch_size)
            scores = subset_scores(truth, logits.argmax(axis=1), shown)
            agree = int((logits.argmax(axis=1) == fp32_logits.argmax(axis=1)).sum())
            batched = softmax(logits[: len(probe)], bundle.temperature)
            alone = softmax(
                np.concatenate([engine.run(probe[i : i + 1])[LOGITS_NAME] for i in range(len(probe))]),
                bundle.temperature,
            )
            size = f"{graphs[name].stat().st_size / 1e6:.1f}" if name in graphs else "-"
            rows.append(
                [
                    name,
                    f"{scores['accuracy']:.4f}",
                    f"{scores['macro_f1']:.4f} ({100 * (scores['macro_f1'] - fp32_scores['macro_f1']):+.2f})",
                    f"{agree}/{len(logits)}",
                    f"{np.abs(logits - fp32_logits).max():.2g}",
                    f"{np.abs(batched - alone).max():.1e}",
                    f"{int((batched.argmax(axis=1) != alone.argmax(axis=1)).sum())}/{len(probe)}",
                    size,
                ]
            )
        print(
            f"accuracy on the {len(photos)} photos (batches of {args.batch_size}); macro F1 (points against fp32); "
            f"top-1 = fp32 graph; |prob diff| alone vs batch of {args.batch_size} on {len(probe)} photos"
        )
        print_table(
            [
                "runtime",
                "accuracy",
                "macro F1",
                "top-1 = fp32",
                "max |logit diff|",
                "alone vs batch",
                "top-1 moved",
                "MB",
            ],
            rows,
            [22, 8, 16, 12, 16, 14, 11, 6],
        )
        for engine in engines.values():
            engine.close()
    finally:
        if args.quant_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average at the end: {load_average()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.decode_workers = args.decode_workers or args.threads
    if args.child is not None:
        return run_child(args.child)
    if args.quantisation:
        args.batch_sizes = args.batch_sizes or [8]
        return quantisation_check(args)
    args.batch_sizes = args.batch_sizes or [1, 8, 32, 64]
    if args.draft_check:
        return draft_check(args)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
