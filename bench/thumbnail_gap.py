"""How much a bundle's answers depend on a photo's size: one source's test photos as they are and
shrunk to web-thumbnail sizes, through the same bundle in the same run.

    python bench/thumbnail_gap.py WORKDIR --bundle v4=models [--bundle other=DIR] \\
        [--source oxford-pet-cats] [--breeds-of SOURCE] [--sides 150 112] [--split test]

Each photo is shrunk as `trainer.augment.as_thumbnail` does (short side SIDE px, a JPEG at
quality 80, read back) and preprocessed as the app does. For every bundle and size it prints the
macro F1 over the source's breeds, choosing among all the bundle's breeds and choosing among the
source's breeds alone, the share of answers naming a breed the source does not have, and each
figure's change from the photos as they are. `--breeds-of oxford-pet-cats` with
`--source web-cat-breeds` keeps only the web photos of the breeds Oxford has. A loss choosing among
all breeds that mostly vanishes among the source's breeds alone means the small photos' answers
moved to breeds outside the source (look-alikes, or breeds seen mostly small), not that the
model stopped seeing the breed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catbreed_desktop.core.bundle import load_bundle  # noqa: E402
from catbreed_desktop.core.photos import preprocess  # noqa: E402
from trainer.augment import as_thumbnail  # noqa: E402
from trainer.dataset import read_manifest, split_samples  # noqa: E402
from trainer.metrics import subset_scores  # noqa: E402
from trainer.onnx_run import onnx_outputs  # noqa: E402

JPEG_QUALITY = 80


def bundle_logits(model_path: Path, paths: list[Path], side: int | None, spec) -> np.ndarray:
    pixels = []
    for path in paths:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        pixels.append(preprocess(as_thumbnail(image, side, JPEG_QUALITY) if side else image, spec))
    logits, _ = onnx_outputs(model_path, np.stack(pixels), f"{side or 'as they are'} px")
    return logits


def gap_figures(logits: np.ndarray, labels: tuple[str, ...], truth: list[str]) -> dict:
    """Macro F1 over the source's breeds choosing among all breeds and among the source's alone,
    and the share of answers outside the source's breeds."""
    breeds = sorted(set(truth))
    index = {label: i for i, label in enumerate(labels)}
    columns = [index[breed] for breed in breeds]
    y_true = [index[t] for t in truth]
    answers = logits.argmax(axis=1)
    within = np.array(columns)[logits[:, columns].argmax(axis=1)]
    return {
        "macro_f1": subset_scores(y_true, answers.tolist(), columns)["macro_f1"],
        "macro_f1_source_breeds_only": subset_scores(y_true, within.tolist(), columns)["macro_f1"],
        "answers_outside": float(np.mean([labels[a] not in breeds for a in answers])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--bundle", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--source", default="oxford-pet-cats")
    parser.add_argument(
        "--breeds-of", metavar="SOURCE", help="keep only the photos of breeds that this source also has"
    )
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--sides", type=int, nargs="+", default=[150, 112])
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    every = read_manifest(args.workdir)
    samples = [s for s in split_samples(every, args.split) if s.source == args.source]
    if args.breeds_of:
        kept = {s.label for s in every if s.source == args.breeds_of}
        samples = [s for s in samples if s.label in kept]
    if not samples:
        parser.error(f"{args.workdir} has no {args.split} photos from {args.source} of the breeds asked")
    truth = [s.label for s in samples]
    results: dict[str, dict] = {}
    for named in args.bundle:
        name, _, folder = named.rpartition("=")
        bundle = load_bundle(folder)
        rows = {}
        for side in [None, *args.sides]:
            logits = bundle_logits(bundle.model_path, [s.path for s in samples], side, bundle.preprocessing)
            rows[str(side or "as they are")] = gap_figures(logits, bundle.labels, truth)
        results[name or folder] = rows
        base = rows["as they are"]
        print(
            f"\n{name or folder}: {len(samples)} {args.split} photos of {args.source}, {len(set(truth))} breeds"
        )
        print(f"{'size':>12} {'macro F1':>16} {'its breeds only':>18} {'answers outside':>18}")
        for size, row in rows.items():
            print(
                f"{size:>12} {row['macro_f1']:7.3f} ({row['macro_f1'] - base['macro_f1']:+.3f})"
                f" {row['macro_f1_source_breeds_only']:8.3f} "
                f"({row['macro_f1_source_breeds_only'] - base['macro_f1_source_breeds_only']:+.3f})"
                f" {row['answers_outside']:8.1%} ({row['answers_outside'] - base['answers_outside']:+.1%})"
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
