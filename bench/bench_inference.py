"""End-to-end photos per second: the bundle on ONNX Runtime CPU against the same model in PyTorch eager.

"End to end" means file path to label: decode, preprocess and inference are all inside the timer.
Three ways of running the same photos are measured in one run, at each batch size:

* transformers eager: `AutoModelForImageClassification.from_pretrained(checkpoint)` under
  `torch.no_grad()`, photos decoded one after another with the app's own `load_and_preprocess`;
* bundle engine, sequential decode: the bundle's ONNX model on ONNX Runtime CPU, decoded the same way,
  which isolates the runtime's share of the difference;
* Classifier pipeline: what `catbreed classify` and the app run, decoding in a thread pool ahead of
  the engine.

It also checks that both runtimes pick the same top-1 breed and how far their logits are apart.
Run `python bench/bench_inference.py --help` for the options; bench/README.md says more.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _common import DEFAULT_PHOTOS, pick_photos

# Run from a checkout without installing it: the package is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.photos import load_and_preprocess, stack_batch


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle", type=Path, required=True, help="model bundle folder (model.onnx + bundle.json)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="the same model as a Hugging Face folder"
    )
    parser.add_argument(
        "--photos",
        type=Path,
        default=DEFAULT_PHOTOS,
        help=f"photo folder, searched recursively (default: {DEFAULT_PHOTOS})",
    )
    parser.add_argument("--count", type=int, default=64, help="photos per measurement (default: 64)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for each runtime (default: 2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="(default: 1 8)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed passes per row; the best is kept (default: 1)"
    )
    return parser.parse_args(argv)


def best_rate(run: Callable[[], object], photos: int, repeat: int) -> float:
    """Photos per second of the fastest of `repeat` timed calls of `run`."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return photos / best


def chunks(items: Sequence[Path], size: int) -> list[Sequence[Path]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import onnxruntime
    import torch
    import transformers
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    spec = bundle.preprocessing
    photos = pick_photos(args.photos, args.count)
    for photo in photos:  # every runtime reads from the page cache, none pays for a cold disk
        photo.read_bytes()

    model = AutoModelForImageClassification.from_pretrained(args.checkpoint).eval()
    hf_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(hf_labels) != sorted(bundle.labels):
        print(
            f"warning: checkpoint labels {hf_labels} differ from the bundle's; comparing by index",
            file=sys.stderr,
        )
        hf_labels = list(bundle.labels)

    def eager_logits(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(pixel_values=torch.from_numpy(batch)).logits.numpy()

    print(f"model      {bundle.architecture}, {bundle.num_labels} labels, {spec.size}x{spec.size} input")
    print(f"photos     {len(photos)} from {args.photos}")
    print(
        f"machine    {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads per "
        f"runtime; torch {torch.__version__}, transformers {transformers.__version__}, onnxruntime "
        f"{onnxruntime.__version__}"
    )
    print()
    header = f"{'batch':>5}  {'runtime':<50} {'photos/s':>9} {'vs eager':>9}"
    print(header)
    print("-" * len(header))

    eager_top1: list[str] = []
    pipeline_top1: list[str] = []
    largest_logit_gap = 0.0
    for batch_size in args.batch_sizes:
        engine = create_engine(bundle, "cpu", batch_size=batch_size, threads=args.threads)
        classifier = Classifier(bundle, engine=engine, batch_size=batch_size, decode_workers=args.threads)
        groups = chunks(photos, batch_size)

        def run_eager(groups: list[Sequence[Path]] = groups) -> list[str]:
            labels = []
            for group in groups:
                logits = eager_logits(stack_batch([load_and_preprocess(p, spec) for p in group]))
                labels += [hf_labels[i] for i in logits.argmax(axis=1)]
            return labels

        def run_engine(groups: list[Sequence[Path]] = groups, engine=engine) -> list[str]:
            labels = []
            for group in groups:
                probabilities = engine.predict(stack_batch([load_and_preprocess(p, spec) for p in group]))
                labels += [bundle.labels[i] for i in probabilities.argmax(axis=1)]
            return labels

        def run_pipeline(classifier: Classifier = classifier) -> list[str]:
            return [r.label if isinstance(r, Prediction) else "(failed)" for r in classifier.classify(photos)]

        warm_up = stack_batch([load_and_preprocess(p, spec) for p in groups[0]])
        eager_logits(warm_up)
        largest_logit_gap = max(
            largest_logit_gap, float(np.abs(eager_logits(warm_up) - engine.run(warm_up)["logits"]).max())
        )
        list(classifier.classify(groups[0]))

        eager_rate = best_rate(run_eager, len(photos), args.repeat)
        rows = [
            ("transformers eager (PyTorch), sequential decode", eager_rate),
            (
                f"bundle engine ({engine.provider}), sequential",
                best_rate(run_engine, len(photos), args.repeat),
            ),
            (
                f"Classifier pipeline, {args.threads} decode threads",
                best_rate(run_pipeline, len(photos), args.repeat),
            ),
        ]
        for name, rate in rows:
            print(f"{batch_size:>5}  {name:<50} {rate:>9.1f} {rate / eager_rate:>8.2f}x")
        if batch_size == args.batch_sizes[-1]:
            eager_top1, pipeline_top1 = run_eager(), run_pipeline()
        classifier.close()

    agree = sum(a == b for a, b in zip(eager_top1, pipeline_top1, strict=True))
    print()
    print(
        f"top-1 agreement, PyTorch eager vs bundle: {agree}/{len(eager_top1)} ({agree / len(eager_top1):.1%})"
    )
    print(f"largest |logit difference| on the warm-up batches: {largest_logit_gap:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
