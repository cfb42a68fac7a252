"""Does the float graph the GPU engines run name the same breed as the int8 CPU engine?

Derives the fp32 and fp16 float graphs of a bundle (`catbreed_desktop.core.engines.float_graph`)
into a fresh cache folder, timing each derivation and a cached second call, then runs every photo
under `--photos` through three ONNX Runtime CPU sessions: the bundle's int8 model (what the CPU
engine runs), the derived fp32 graph and the derived fp16 graph. It prints the top-1 agreement of
each float graph with int8 (it should be at least 99 %), the logit differences, the accuracy
of each against the breed folders, the op counts before and after, and the file sizes.

    .venv/bin/python bench/check_float_graph.py [--bundle models] [--photos ../shared/data/oxford-pet-cats]
        [--limit N] [--batch 16] [--threads 2] [--json results.json]

fp16 on a CPU is slow (ONNX Runtime casts much of it back to float32); this checks numerics,
not speed. On a shared 2-core machine the 2,371 Oxford cats take about 17 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Run from a checkout without installing it: the package is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from catbreed_desktop.core.bundle import INPUT_NAME, load_bundle  # noqa: E402
from catbreed_desktop.core.engines.float_graph import QUANTIZED_OP_TYPES, float_graph_path  # noqa: E402
from catbreed_desktop.core.photos import PhotoError, iter_photo_paths, load_and_preprocess  # noqa: E402

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oxford-pet-cats"
TARGET_AGREEMENT = 0.99


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="searched recursively")
    parser.add_argument("--limit", type=int, default=0, help="take this many photos evenly (0: all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads per session")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def op_counts(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = load_bundle(args.bundle)
    photos = iter_photo_paths([args.photos], recursive=True)
    if args.limit and args.limit < len(photos):
        photos = [photos[int(i)] for i in np.linspace(0, len(photos) - 1, args.limit)]
    print(f"bundle {bundle.path} ({bundle.model_path.stat().st_size / 1e6:.1f} MB), {len(photos)} photos")

    results: dict = {"photos": len(photos), "graphs": {}}
    graphs = {"int8": bundle.model_path}
    with tempfile.TemporaryDirectory(prefix="float-graphs-") as cache:
        for precision in ("fp32", "fp16"):
            started = time.perf_counter()
            path = float_graph_path(bundle, precision, cache_dir=Path(cache))
            derive_s = time.perf_counter() - started
            started = time.perf_counter()
            assert float_graph_path(bundle, precision, cache_dir=Path(cache)) == path
            cached_s = time.perf_counter() - started
            counts = op_counts(path)
            left = sorted(set(counts) & QUANTIZED_OP_TYPES)
            results["graphs"][precision] = {
                "derive_s": round(derive_s, 2),
                "cached_call_s": round(cached_s, 3),
                "size_mb": round(path.stat().st_size / 1e6, 1),
                "quantized_ops_left": left,
                "op_counts": dict(counts),
            }
            print(
                f"{precision}: derived in {derive_s:.1f} s, cached call {cached_s * 1000:.0f} ms, "
                f"{path.stat().st_size / 1e6:.1f} MB, quantized ops left: {left or 'none'}"
            )
            graphs[precision] = path
        before = op_counts(bundle.model_path)
        results["graphs"]["int8"] = {"op_counts": dict(before)}
        print("int8 ops:", dict(sorted(before.items())))
        print("fp32 ops:", dict(sorted(results["graphs"]["fp32"]["op_counts"].items())))
        print("fp16 ops:", dict(sorted(results["graphs"]["fp16"]["op_counts"].items())))

        sessions = {name: session(path, args.threads) for name, path in graphs.items()}
        logits: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
        seconds = dict.fromkeys(sessions, 0.0)
        truth: list[str] = []
        unreadable = 0
        started = time.perf_counter()
        for first in range(0, len(photos), args.batch):
            arrays, labels = [], []
            for photo in photos[first : first + args.batch]:
                try:
                    arrays.append(load_and_preprocess(photo, bundle.preprocessing))
                except PhotoError:
                    unreadable += 1
                    continue
                labels.append(photo.parent.name.replace("_", " "))
            if not arrays:
                continue
            batch = np.stack(arrays).astype(np.float32)
            for name, runner in sessions.items():
                tick = time.perf_counter()
                logits[name].append(runner.run(["logits"], {INPUT_NAME: batch})[0])
                seconds[name] += time.perf_counter() - tick
            truth.extend(labels)
            done = first + len(arrays)
            if (first // args.batch) % 10 == 0:
                elapsed = time.perf_counter() - started
                print(f"  {done}/{len(photos)} photos, {elapsed:.0f} s", flush=True)

    stacked = {name: np.concatenate(parts) for name, parts in logits.items()}
    top1 = {name: values.argmax(axis=1) for name, values in stacked.items()}
    truth_indices = np.array(
        [bundle.labels.index(label) if label in bundle.labels else -1 for label in truth]
    )
    count = len(truth_indices)
    print(f"\n{count} photos classified ({unreadable} unreadable)")
    passed = True
    for name, reference in (("fp32", "int8"), ("fp16", "int8"), ("fp16", "fp32")):
        agree = float(np.mean(top1[name] == top1[reference]))
        difference = np.abs(stacked[name] - stacked[reference])
        results[f"{name}_vs_{reference}"] = {
            "top1_agreement": agree,
            "disagreements": int(np.sum(top1[name] != top1[reference])),
            "max_abs_logit_diff": float(difference.max()),
            "mean_abs_logit_diff": float(difference.mean()),
        }
        verdict = ""
        if reference == "int8":
            verdict = "ok" if agree >= TARGET_AGREEMENT else f"BELOW the {TARGET_AGREEMENT:.0%} target"
            passed &= agree >= TARGET_AGREEMENT
        print(
            f"top-1 agreement {name} vs {reference}: {agree:.2%} "
            f"({results[f'{name}_vs_{reference}']['disagreements']} differ), logits max |diff| "
            f"{difference.max():.3f}, mean {difference.mean():.4f} {verdict}"
        )
    for name in stacked:
        accuracy = float(np.mean(top1[name] == truth_indices))
        results[name] = {"accuracy_vs_folders": accuracy, "cpu_photos_per_s": count / seconds[name]}
        print(
            f"{name}: accuracy against the breed folders {accuracy:.2%}, ORT CPU {count / seconds[name]:.1f} photos/s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
