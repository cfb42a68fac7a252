"""How often JPEG draft decoding (`decode.JPEG_DRAFT_GAP`) changes the shipped model's top-1.

12-megapixel copies of the photos are decoded in full and with draft decoding at each gap, and
classified alone on the bundle's int8 graph and on the fp32 graph derived from it.
Run `python bench/bench_draft_decoding.py --help` for the options; bench/README.md says more.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import (
    add_common_options,
    add_large_dir_option,
    large_copies,
    pick_photos,
    print_table,
    warm_cache,
)

from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.photos import decode, load_and_preprocess, preprocess, stack_batch


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_common_options(parser)
    add_large_dir_option(parser)
    parser.add_argument("--count", type=int, help="photos, spread over the folder (default: all of them)")
    parser.add_argument("--gaps", type=int, nargs="+", help="JPEG_DRAFT_GAP values to try (default: 3 2 1)")
    return parser.parse_args(argv)


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
    original_gap = decode.JPEG_DRAFT_GAP
    try:
        for start in range(0, len(photos), 32):
            chunk = large_copies(photos[start : start + 32], large_dir)
            warm_cache(chunk)
            arrays: dict[str, list[np.ndarray]] = {}
            for decoding in decodings:
                began = time.perf_counter()
                if decoding == "full":  # no draft, no box reduction: the whole image, then the resize
                    arrays[decoding] = [preprocess(decode.load_photo(path), spec) for path in chunk]
                else:
                    decode.JPEG_DRAFT_GAP = int(decoding.split()[1])
                    arrays[decoding] = [load_and_preprocess(path, spec) for path in chunk]
                    decode.JPEG_DRAFT_GAP = original_gap
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
        decode.JPEG_DRAFT_GAP = original_gap
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return draft_check(args)


if __name__ == "__main__":
    sys.exit(main())
