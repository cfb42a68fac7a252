"""How much the personal layer (learning from corrections) helps, how it stays calibrated, what it costs.

For each source's test split (as the `python -m trainer prepare --seed 83` manifest the model was
measured on splits them; for a model that never saw the web photos, which its manifest then lacks,
up to 40 photos of each web folder named like one of its breeds), a simulated person corrects k =
0, 1, 3, 5, 10 photos per breed, chosen at random or the model's wrong ones first, and the other
photos are scored: macro F1 (over the source's breeds), accuracy, filed share and filed precision
at the bundle's threshold, ECE (15 bins) with and without the layer; averaged over 5 seeds. Two
layers are printed side by side with their differences from the bundle on the same photos: the
earlier wide reach (breed shift, kNN from similarity 0.3) and the default (kNN and near-duplicates,
only the same cat). k = 0 is checked to equal the bundle exactly. The bundle's probabilities and
embeddings are computed once per photo with the shipped bundle on ONNX Runtime CPU (2 threads) and
cached under /tmp (`personal_cache.py`).

Same-cat check: the near-duplicate groups `prepare` found in the test split, and series made
from one test photo (two crops, a mirror image, brighter, darker): how often correcting the
original fixes the model's wrong answer on the rest of its series, and how often it breaks a right
one. Cost: classify time of a folder with 10,000 corrections kept, against no layer, in one run,
and the time to build the layer from 1,000 and 20,000 corrections.

    python bench/bench_personal.py --manifest /tmp/personal20/prep/manifest.csv
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from personal_cache import bundle_outputs, test_split, web_sample  # noqa: E402

from catbreed_desktop.cli.common import adapted_in_batches  # noqa: E402
from catbreed_desktop.core.bundle import ModelBundle, load_bundle  # noqa: E402
from catbreed_desktop.core.classify import Classifier, Prediction  # noqa: E402
from catbreed_desktop.core.personal.combine import (  # noqa: E402
    WHITENED,
    WIDE_REACH,
    LayerSettings,
    Metric,
    PersonalLayer,
    layer_setup,
)
from trainer.machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
KS = (0, 1, 3, 5, 10)
SEEDS = 5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models")
    parser.add_argument(
        "--manifest", type=Path, required=True, help="manifest.csv of `trainer prepare --seed 83`"
    )
    parser.add_argument("--web", type=Path, default=Path.home() / "data" / "web-cat-breeds")
    parser.add_argument("--web-per-breed", type=int, default=40)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/personal20"))
    parser.add_argument("--series", type=int, default=30, help="photos per source made into series")
    parser.add_argument("--cost-photos", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-only", action="store_true", help="measure only the cost (on a quiet machine)")
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed passes of each kind in the cost, the best kept"
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------- scoring


def macro_f1(truth: np.ndarray, predicted: np.ndarray, breeds: np.ndarray) -> float:
    scores = []
    for c in breeds:
        tp = np.sum((predicted == c) & (truth == c))
        fp = np.sum((predicted == c) & (truth != c))
        fn = np.sum((predicted != c) & (truth == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def ece(probabilities: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def scores(
    probs: np.ndarray, truth: np.ndarray, is_cat: np.ndarray, threshold: float, breeds: np.ndarray
) -> dict:
    predicted = probs.argmax(axis=1)
    filed = is_cat & (probs.max(axis=1) >= threshold)
    return {
        "f1": macro_f1(truth, predicted, breeds),
        "acc": float(np.mean(predicted == truth)),
        "filed": float(filed.mean()),
        "precision": float(np.mean(predicted[filed] == truth[filed])) if filed.any() else float("nan"),
        "ece": ece(probs, truth),
    }


def choose(truth: np.ndarray, predicted: np.ndarray, k: int, seed: int, wrong_first: bool) -> np.ndarray:
    """k photos of each breed the person corrects: at random, or the model's wrong ones first."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in np.unique(truth):
        rows = np.flatnonzero(truth == c)
        rng.shuffle(rows)
        if wrong_first:
            rows = np.concatenate([rows[predicted[rows] != c], rows[predicted[rows] == c]])
        chosen += list(rows[:k])
    return np.array(chosen, dtype=np.int64)


def simulate(
    data: dict,
    labels: Sequence[str],
    setup: tuple[Metric, LayerSettings],
    k: int,
    wrong_first: bool,
    threshold: float,
    seeds: Sequence[int] = range(SEEDS),
) -> dict:
    """Scores of the photos left after correcting k per breed, with ("f1", ...) and without the
    layer ("base_f1", ...), averaged over the correction seeds."""
    probs, emb, truth, is_cat = data["probabilities"], data["embeddings"], data["labels"], data["is_cat"]
    breeds = np.unique(truth)
    base_predicted = probs.argmax(axis=1)
    runs = []
    for seed in seeds:
        corrected = choose(truth, base_predicted, k, seed, wrong_first)
        rest = np.setdiff1d(np.arange(len(truth)), corrected)
        layer = PersonalLayer(
            labels, emb[corrected], [labels[i] for i in truth[corrected]], metric=setup[0], settings=setup[1]
        )
        adapted = layer.combine(probs[rest], emb[rest]).probabilities
        if k == 0:
            assert np.array_equal(adapted, probs[rest]), (
                "with no corrections the layer must give the bundle's output"
            )
        base = scores(probs[rest], truth[rest], is_cat[rest], threshold, breeds)
        new = scores(adapted, truth[rest], is_cat[rest], threshold, breeds)
        runs.append({f"base_{key}": v for key, v in base.items()} | new)
    return {key: float(np.nanmean([r[key] for r in runs])) for key in runs[0]}


# ------------------------------------------------------------------------------------ same cat


def variants(image: Image.Image) -> list[Image.Image]:
    """Another shot of the same cat, roughly: two crops, a mirror image, brighter, darker."""
    w, h = image.size
    return [
        image.crop((0, 0, int(w * 0.8), int(h * 0.8))),
        image.crop((int(w * 0.15), int(h * 0.1), w, h)),
        ImageOps.mirror(image),
        ImageEnhance.Brightness(image).enhance(1.4),
        ImageEnhance.Brightness(image).enhance(0.6),
    ]


def series_outputs(classifier: Classifier, paths: Sequence[Path], cache: Path) -> dict[str, np.ndarray]:
    if cache.is_file():
        stored = dict(np.load(cache, allow_pickle=False))
        if list(stored["paths"]) == [str(p) for p in paths]:
            return stored
    probabilities, embeddings = [], []
    for path in paths:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        results = classifier.classify_images(variants(image))
        predictions = [r for r in results if isinstance(r, Prediction) and r.embedding is not None]
        assert len(predictions) == len(results)
        probabilities.append(np.stack([r.probabilities for r in predictions]))
        embeddings.append(np.stack([r.embedding for r in predictions if r.embedding is not None]))
    outputs = {
        "paths": np.array([str(p) for p in paths]),
        "probabilities": np.stack(probabilities),
        "embeddings": np.stack(embeddings),
    }
    np.savez(cache, **outputs)  # type: ignore[arg-type]
    return outputs


def same_cat(
    data: dict, series: dict, rows: np.ndarray, labels: Sequence[str], setup: tuple[Metric, LayerSettings]
) -> dict:
    """Correct each original photo alone; count the wrong answers on its series fixed, right ones broken."""
    wrong = fixed = right = broken = 0
    for i, row in enumerate(rows):
        truth = int(data["labels"][row])
        layer = PersonalLayer(
            labels, data["embeddings"][row : row + 1], [labels[truth]], metric=setup[0], settings=setup[1]
        )
        base = series["probabilities"][i].argmax(axis=1)
        adapted = layer.combine(series["probabilities"][i], series["embeddings"][i]).probabilities.argmax(
            axis=1
        )
        wrong += int(np.sum(base != truth))
        fixed += int(np.sum((base != truth) & (adapted == truth)))
        right += int(np.sum(base == truth))
        broken += int(np.sum((base == truth) & (adapted != truth)))
    return {"wrong": wrong, "fixed": fixed, "right": right, "broken": broken}


def duplicate_groups(data: dict, labels: Sequence[str], setup: tuple[Metric, LayerSettings]) -> dict:
    groups = data["groups"]
    wrong = fixed = 0
    for group in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == group)
        for corrected in members if len(members) > 1 else ():
            truth = int(data["labels"][corrected])
            layer = PersonalLayer(
                labels,
                data["embeddings"][corrected : corrected + 1],
                [labels[truth]],
                metric=setup[0],
                settings=setup[1],
            )
            others = members[members != corrected]
            base = data["probabilities"][others].argmax(axis=1)
            adapted = layer.combine(
                data["probabilities"][others], data["embeddings"][others]
            ).probabilities.argmax(axis=1)
            wrong += int(np.sum(base != data["labels"][others]))
            fixed += int(np.sum((base != data["labels"][others]) & (adapted == data["labels"][others])))
    multi = sum(1 for g in np.unique(groups[groups >= 0]) if np.sum(groups == g) > 1)
    return {"groups": multi, "wrong": wrong, "fixed": fixed}


# ----------------------------------------------------------------------------------------- cost


def fit_seconds(bundle: ModelBundle, pool: np.ndarray, entries: int, repeat: int = 3) -> float:
    """Seconds to build the layer (breed shift included) from `entries` corrections, the best of `repeat`."""
    rng = np.random.default_rng(1)
    stored = pool[rng.integers(0, len(pool), entries)]
    labels = [bundle.labels[i] for i in rng.integers(0, bundle.num_labels, entries)]
    metric, settings = layer_setup(bundle)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        PersonalLayer(bundle.labels, stored, labels, metric=metric, settings=settings)
        times.append(time.perf_counter() - started)
    return min(times)


def cost(bundle: ModelBundle, photos: Sequence[Path], pool: np.ndarray, threads: int, repeat: int) -> dict:
    """Seconds to classify `photos` without and with a layer of 10,000 corrections, alternating runs."""
    rng = np.random.default_rng(0)
    stored = pool[rng.integers(0, len(pool), 10_000)] + rng.normal(0, 0.05, (10_000, pool.shape[1])).astype(
        np.float32
    )
    labels = [bundle.labels[i] for i in rng.integers(0, bundle.num_labels, 10_000)]
    tracemalloc.start()
    metric, settings = layer_setup(bundle)
    layer = PersonalLayer(bundle.labels, stored, labels, metric=metric, settings=settings)
    layer_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    times: dict[str, list[float]] = {"without": [], "with": []}
    with Classifier(bundle, "cpu", batch_size=8, threads=threads) as classifier:
        list(classifier.classify(photos[:8]))  # warm-up
        for _ in range(repeat):
            for name in ("without", "with"):
                started = time.perf_counter()
                results = classifier.classify(photos)
                for _ in results if name == "without" else adapted_in_batches(layer, results, 8):
                    pass
                times[name].append(time.perf_counter() - started)
    without, with_layer = min(times["without"]), min(times["with"])
    # The layer's own time, measured alone: the classify ratio above is within the run-to-run noise.
    with Classifier(bundle, "cpu", batch_size=8, threads=threads) as classifier:
        predictions = list(classifier.classify(photos[:8]))
    started = time.perf_counter()
    for _ in range(20):
        layer.adapt(predictions)  # type: ignore[arg-type]
    per_photo = (time.perf_counter() - started) / (20 * len(predictions))
    return {
        "without": without,
        "with": with_layer,
        "ratio": with_layer / without,
        "layer_ms_per_photo": per_photo * 1000,
        "classify_ms_per_photo": without / len(photos) * 1000,
        "layer_mb": layer_bytes / 2**20,
    }


# ----------------------------------------------------------------------------------------- main


def cats_only(data: dict) -> dict:
    """The photos the bundle's not-a-cat detector takes for cats. A web folder's photos that are
    not cats (gin bottles in "Bombay") are labelled with its breed; correcting a few of them
    teaches the layer that folder's junk, which would count as learning the breed."""
    keep = np.asarray(data["is_cat"], dtype=bool)
    return {key: value[keep] if getattr(value, "ndim", 0) else value for key, value in data.items()}


def residual_fit(
    log_p: np.ndarray, z: np.ndarray, truth: np.ndarray, strength: float, bias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """log p' = log p + z W + b by softmax cross-entropy with L2 on W: the bundle when W, b = 0.

    Without `bias`, b stays 0: the fit cannot simply move the breeds' prior towards how often
    each breed occurs among the photos it is fit on."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    n, width = z.shape
    classes = log_p.shape[1]
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), truth] = 1

    biases = classes if bias else 0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = theta[: width * classes].reshape(width, classes)
        offset = theta[width * classes :] if bias else 0.0
        log_q = log_softmax(log_p + z @ weights + offset, axis=1)
        grad = (np.exp(log_q) - onehot) / n
        value = -np.sum(onehot * log_q) / n + strength * np.sum(weights * weights)
        gradients = [(z.T @ grad + 2 * strength * weights).ravel()] + ([grad.sum(axis=0)] if bias else [])
        return value, np.concatenate(gradients)

    theta = minimize(loss, np.zeros(width * classes + biases), jac=True, method="L-BFGS-B").x
    offsets = theta[width * classes :] if bias else np.zeros(classes)
    return theta[: width * classes].reshape(width, classes), offsets


def ceiling(outputs: dict, setup: tuple[Metric, LayerSettings]) -> None:
    """How much any linear layer on these embeddings could add with far more corrections than a
    person makes: a residual softmax over the bundle fit on 4/5 of a source's photos (5 folds, about
    30 photos per breed), scored on the fifth. Its strength is the best of three on the scored photos
    themselves, so the figure is an upper bound, not an estimate."""
    print("\n## Ceiling: residual softmax fit on 4/5 of the photos, scored on the rest (5 folds); macro F1")
    metric = setup[0]
    for name, data in outputs.items():
        probs, truth = data["probabilities"], data["labels"]
        rows = np.flatnonzero(np.bincount(truth)[truth] >= 5)
        breeds = np.unique(truth[rows])
        z, log_p = metric.vectors(data["embeddings"]), np.log(np.clip(probs, 1e-9, 1.0))
        base = macro_f1(truth[rows], probs[rows].argmax(axis=1), breeds)
        folds = np.empty(len(rows), dtype=np.int64)
        folds[np.random.default_rng(0).permutation(len(rows))] = np.arange(len(rows)) % 5
        cells = []
        for with_bias in (True, False):
            for strength in (1e-4, 1e-3, 1e-2):
                predicted = probs.argmax(axis=1)
                for fold in range(5):
                    fit_rows, scored = rows[folds != fold], rows[folds == fold]
                    weights, bias = residual_fit(
                        log_p[fit_rows], z[fit_rows], truth[fit_rows], strength, with_bias
                    )
                    predicted[scored] = (log_p[scored] + z[scored] @ weights + bias).argmax(axis=1)
                f1 = macro_f1(truth[rows], predicted[rows], breeds)
                cells.append(f"{'with' if with_bias else 'no'} bias, L2 {strength:g}: {f1:.3f}")
        print(f"{name} ({len(rows)} photos): bundle {base:.3f}; " + "; ".join(cells))


def compared_layers(setup: tuple[Metric, LayerSettings]) -> dict[str, tuple[Metric, LayerSettings]]:
    """The layers compared: the earlier wide reach (breed shift, kNN from similarity 0.3) and the default."""
    metric, settings = setup
    wide = WIDE_REACH if settings == WHITENED else replace(settings, shift_scale=WIDE_REACH.shift_scale)
    return {"wide reach": (metric, wide), "default": setup}


def accuracy(
    outputs: dict, labels: Sequence[str], setup: tuple[Metric, LayerSettings], threshold: float
) -> None:
    compared = compared_layers(setup)
    metric, settings = setup
    print("\n## Method, k = 5 at random (macro F1; bundle -> with layer)")
    for name, data in outputs.items():
        cells = []
        for method in ("knn", "ncm"):
            for title, (_, variant) in compared.items():
                with_method = (metric, replace(variant, method=method))
                result = simulate(data, labels, with_method, 5, False, threshold)
                cells.append(f"{method} {title} {result['base_f1']:.3f} -> {result['f1']:.3f}")
        print(f"{name}: " + "; ".join(cells))

    old_name, new_name = compared
    for wrong_first in (False, True):
        print(
            f"\n## Corrections per breed {'(wrong ones first)' if wrong_first else '(at random)'}; mean of {SEEDS} seeds, "
            f"rest of the photos scored; bundle = the same photos without the layer (k = 0); old = {old_name}, new = {new_name}"
        )
        print(
            "source | k | macro F1 bundle | old | new | Δ old | Δ new | new / bundle | accuracy bundle | old | new | "
            "filed % new | filed precision bundle | old | new | ECE bundle | old | new"
        )
        for name, data in outputs.items():
            for k in KS:
                # Both runs correct the same photos: their "base_" scores are the bundle's on the rest.
                b = o = simulate(data, labels, compared[old_name], k, wrong_first, threshold)
                n = simulate(data, labels, compared[new_name], k, wrong_first, threshold)
                print(
                    f"{name} | {k} | {b['base_f1']:.3f} | {o['f1']:.3f} | {n['f1']:.3f} | "
                    f"{o['f1'] - b['base_f1']:+.3f} | {n['f1'] - b['base_f1']:+.3f} | {n['f1'] / b['base_f1']:.3f} | "
                    f"{b['base_acc']:.3f} | {o['acc']:.3f} | {n['acc']:.3f} | {100 * n['filed']:.0f} | "
                    f"{b['base_precision']:.3f} | {o['precision']:.3f} | {n['precision']:.3f} | "
                    f"{b['base_ece']:.3f} | {o['ece']:.3f} | {n['ece']:.3f}"
                )


def same_cat_checks(
    args: argparse.Namespace, bundle: ModelBundle, outputs: dict, setup: tuple[Metric, LayerSettings]
) -> None:
    labels = bundle.labels
    print("\n## Same cat")
    with Classifier(bundle, "cpu", batch_size=8, threads=args.threads) as classifier:
        for name, data in outputs.items():
            rows = np.random.default_rng(0).permutation(len(data["labels"]))[: args.series]
            series = series_outputs(
                classifier, [Path(data["paths"][r]) for r in rows], args.cache / f"{name}-series.npz"
            )
            for title, variant in compared_layers(setup).items():
                s = same_cat(data, series, rows, labels, variant)
                d = duplicate_groups(data, labels, variant)
                print(
                    f"{name} ({title}): series of {len(rows)} photos x 5: {s['fixed']} of {s['wrong']} wrong answers "
                    f"fixed by correcting the original, {s['broken']} of {s['right']} right ones broken; "
                    f"near-duplicate groups: {d['groups']}, {d['fixed']} of {d['wrong']} wrong answers fixed"
                )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = load_bundle(args.model)
    threshold = bundle.default_min_confidence
    labels = bundle.labels
    setup = layer_setup(bundle)
    metric, settings = setup
    sources: list[tuple[str, list]] = [
        ("oxford-pet-cats", test_split(args.manifest, "oxford-pet-cats")),
        ("petfinder-gano-cats", test_split(args.manifest, "petfinder-gano-cats")),
    ]
    # A model trained on the web photos is scored on their test split; one that never saw them,
    # on a sample of every folder named like one of its breeds.
    web_test = test_split(args.manifest, "web-cat-breeds")
    if web_test:
        sources.append(("web-cat-breeds", web_test))
    elif args.web.is_dir():
        sources.append(("web-cat-breeds", web_sample(args.web, labels, args.web_per_breed)))
    else:
        print(f"web photos not found at {args.web}: skipped")
    print(
        f"CPU: {cpu_name()}; bundle {bundle.path} ({bundle.num_labels} breeds), "
        f"threshold {threshold}; layer {settings}, span {metric.features}, whitened {metric.whiten is not None}"
    )
    outputs = {
        name: bundle_outputs(bundle, photos, args.cache / f"{name}.npz", args.threads)
        for name, photos in sources
    }

    if not args.cost_only:
        scored = dict(outputs)
        if "web-cat-breeds" in outputs:
            scored["web-cat-breeds, cats only"] = cats_only(outputs["web-cat-breeds"])
        accuracy(scored, labels, setup, threshold)
        ceiling(scored, setup)
        same_cat_checks(args, bundle, outputs, setup)
    print("\n## Cost at 10,000 corrections")
    first = outputs[sources[0][0]]
    photos = [Path(p) for p in first["paths"][: args.cost_photos]]
    c = cost(bundle, photos, first["embeddings"], args.threads, args.repeat)
    print(
        f"classify {len(photos)} photos: {c['without']:.2f} s without the layer, {c['with']:.2f} s with it "
        f"(ratio {c['ratio']:.3f}); the layer alone: {c['layer_ms_per_photo']:.2f} ms per photo against "
        f"{c['classify_ms_per_photo']:.0f} ms to classify one ({100 * c['layer_ms_per_photo'] / c['classify_ms_per_photo']:.1f} %); "
        f"layer memory {c['layer_mb']:.1f} MB"
    )
    fits = {entries: fit_seconds(bundle, first["embeddings"], entries) for entries in (1_000, 20_000)}
    print(
        "building the layer: "
        + ", ".join(f"{seconds:.3f} s at {n:,} corrections" for n, seconds in fits.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
