"""How the personal layer's default settings (`WHITENED`) were chosen: a grid on validation photos.

The bench (`bench_personal.py`) scores the test photos; choosing on them would make its figures
flattering. This script scores the same kinds of cases on each source's validation split of the
`--manifest` instead: a simulated person corrects k = 5 and 10 photos per breed, at random and the
model's wrong ones first (correction seeds 100-104, not the bench's 0-4), and the other validation
photos are scored (macro F1 against the bundle on the same photos); and series made from
`--series` validation photos per source (crops, a mirror image, exposure) count the same-cat
fixes. Rule: the most same-cat fixes among the settings that lose at most `--worst` macro F1 in
every case.

    python bench/tune_personal.py --manifest cats4/manifest.csv
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_personal import same_cat, series_outputs, simulate  # noqa: E402
from personal_cache import bundle_outputs, test_split  # noqa: E402

from catbreed_desktop.core.bundle import load_bundle  # noqa: E402
from catbreed_desktop.core.classify import Classifier  # noqa: E402
from catbreed_desktop.core.personal.combine import LayerSettings, layer_setup  # noqa: E402
from trainer.machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("oxford-pet-cats", "petfinder-gano-cats", "web-cat-breeds")
SEEDS = range(100, 105)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest.csv the model was trained on")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/personal20-tune"))
    parser.add_argument(
        "--series", type=int, default=40, help="validation photos per source made into series"
    )
    parser.add_argument("--worst", type=float, default=0.005, help="the most macro F1 any case may lose")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def grid(base: LayerSettings) -> list[LayerSettings]:
    """Breed shift on or off, kNN weight, gate floor and width, near-duplicate similarity."""
    return [
        replace(base, shift_scale=shift, weight=weight, low=low, high=low + width, duplicate=duplicate)
        for shift, weight, low, width, duplicate in itertools.product(
            (0.0, 0.3), (0.5, 0.9), (0.3, 0.4, 0.45, 0.5, 0.55), (0.15, 0.25), (0.6, 0.7)
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = load_bundle(args.model)
    metric, default = layer_setup(bundle)
    labels = bundle.labels
    outputs = {
        source: bundle_outputs(
            bundle, test_split(args.manifest, source, "val"), args.cache / f"{source}-val.npz", args.threads
        )
        for source in SOURCES
    }
    series = {}
    with Classifier(bundle, "cpu", batch_size=8, threads=args.threads) as classifier:
        for source, data in outputs.items():
            picked = np.random.default_rng(7).permutation(len(data["labels"]))[: args.series]
            paths = [Path(data["paths"][r]) for r in picked]
            series[source] = (
                picked,
                series_outputs(classifier, paths, args.cache / f"{source}-val-series.npz"),
            )
    cases = [(source, k, wrong) for source in SOURCES for wrong in (False, True) for k in (5, 10)]
    print(
        f"CPU: {cpu_name()}; bundle {bundle.path}; validation photos {[len(d['labels']) for d in outputs.values()]}"
    )
    print(
        "cases: "
        + ", ".join(f"{s.split('-')[0]} k={k} {'wrong first' if w else 'random'}" for s, k, w in cases)
    )
    rows: list[tuple[LayerSettings, list[float], int]] = []
    for settings in [default, *grid(default)]:
        runs = [
            simulate(outputs[s], labels, (metric, settings), k, w, bundle.default_min_confidence, SEEDS)
            for s, k, w in cases
        ]
        gains = [run["f1"] - run["base_f1"] for run in runs]
        checks = [
            same_cat(outputs[s], series[s][1], series[s][0], labels, (metric, settings)) for s in SOURCES
        ]
        fixed, wrong = sum(c["fixed"] for c in checks), sum(c["wrong"] for c in checks)
        broken, right = sum(c["broken"] for c in checks), sum(c["right"] for c in checks)
        rows.append((settings, gains, fixed))
        print(
            f"shift {settings.shift_scale} weight {settings.weight} gate {settings.low:.2f}-{settings.high:.2f} "
            f"duplicate {settings.duplicate}: mean {np.mean(gains):+.4f}, worst {min(gains):+.4f}; same cat "
            f"{fixed}/{wrong} fixed, {broken}/{right} broken | " + " ".join(f"{g:+.3f}" for g in gains),
            flush=True,
        )
    allowed = [row for row in rows if min(row[1]) >= -args.worst]
    if not allowed:
        print(f"no setting loses less than {args.worst} in every case")
        return 1
    best = max(allowed, key=lambda row: (row[2], np.mean(row[1])))
    print(f"\nchosen (most same-cat fixes, no case below -{args.worst}): {best[0]}")
    print(f"the default now: {default}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
