"""The old dynamic int8 graph against the static QDQ one the trainer exports, both made here.

Both come from the same fp32 graph in the same run: speed beside eager and fp32, accuracy, macro
F1 and top-1 agreement with fp32, and how far a photo's probabilities move between being run
alone and in a batch.
Run `python bench/bench_quantisation.py --help` for the options; bench/README.md says more.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import (
    EAGER,
    EAGER_TOLERANCE,
    EagerEngine,
    add_common_options,
    add_timing_options,
    eager_model,
    interleaved_rates,
    load_average,
    logits_of,
    pick_photos,
    print_table,
    warm_cache,
)

from catbreed_desktop.core.bundle import LOGITS_NAME, ModelBundle, load_bundle
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.base import Engine
from catbreed_desktop.core.engines.names import DEFAULT_BATCH_SIZE
from catbreed_desktop.core.photos import iter_photo_paths, load_and_preprocess


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_common_options(parser)
    add_timing_options(parser)
    parser.add_argument(
        "--count", type=int, default=300, help="photos evaluated, spread over the folder (default: 300)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[DEFAULT_BATCH_SIZE],
        help=f"(default: {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"batch for accuracy and for alone-against-batched (default: {DEFAULT_BATCH_SIZE}, the app's)",
    )
    parser.add_argument(
        "--calibration-photos",
        type=int,
        default=256,
        help="photos (not among the --count ones) the static graph is calibrated on (default: 256)",
    )
    parser.add_argument("--seed", type=int, default=83, help="draws the calibration photos (default: 83)")
    parser.add_argument(
        "--quant-dir", type=Path, help="keep the quantised graphs here (default: a temporary folder)"
    )
    return parser.parse_args(argv)


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
    from trainer.metrics import subset_scores
    from trainer.quantise import quantise_int8

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
    return quantisation_check(args)


if __name__ == "__main__":
    sys.exit(main())
