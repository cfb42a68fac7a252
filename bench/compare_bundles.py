"""Two model bundles on the same test photos, per source, as a user would meet them.

    python bench/compare_bundles.py WORKDIR --bundle v3=DIR --bundle v4=models [--breeds-of SOURCE] [--out FILE.json]

For each source of WORKDIR's test split, every bundle classifies the same photos through
`catbreed classify --json` (the app's own pipeline and threshold) and the script prints, per
bundle: macro F1 over the source's breeds that the bundle knows and over all the source's breeds
(a breed the bundle lacks counts as a miss), accuracy, the share of answers naming a breed the
source does not have, and sorting at the bundle's own threshold: the share filed into a breed
folder and the share of those filed right. Labels are compared by name, so bundles with
different breed lists are comparable. It also prints each bundle's photos per second as
`catbreed classify` reported it, and the ratio to the first bundle: the bundles run one after the
other in the same run, so compare them only on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.dataset import read_manifest, split_samples  # noqa: E402
from trainer.metrics import subset_scores  # noqa: E402


def classify(bundle: Path, paths: list[Path]) -> tuple[dict[Path, dict], float]:
    """{path: the JSON record `catbreed classify --json` prints} for every photo, and the photos
    per second the command reported over all of them (decoding included)."""
    results: dict[Path, dict] = {}
    seconds = 0.0
    for start in range(0, len(paths), 500):
        chunk = [str(p) for p in paths[start : start + 500]]
        done = subprocess.run(
            [sys.executable, "-m", "catbreed_desktop.cli.main", "classify", "--model", str(bundle), "--json", *chunk],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        for line in done.stdout.splitlines():
            record = json.loads(line)
            results[Path(record["path"]).resolve()] = record
        timing = re.search(r"photos in ([0-9.]+) s", done.stderr)
        seconds += float(timing.group(1)) if timing else float("nan")
    return results, len(paths) / seconds


def figures(records: list[dict], truth: list[str], known: set[str]) -> dict:
    names = sorted(set(truth) | {r.get("label") or "" for r in records})
    index = {name: i for i, name in enumerate(names)}
    predicted = [(r.get("label") or "") if r.get("ok") else "" for r in records]
    y_true = [index[t] for t in truth]
    y_pred = [index[p] for p in predicted]
    source_breeds = sorted(set(truth))
    filed = [bool(r.get("ok") and r.get("is_cat") and not r.get("unsure")) for r in records]
    filed_right = sum(1 for f, p, t in zip(filed, predicted, truth, strict=True) if f and p == t)
    every_breed = subset_scores(y_true, y_pred, [index[b] for b in source_breeds])
    return {
        "photos": len(records),
        "macro_f1_known_breeds": subset_scores(
            y_true, y_pred, [index[b] for b in source_breeds if b in known]
        )["macro_f1"],
        "macro_f1_all_breeds": every_breed["macro_f1"],
        "accuracy": every_breed["accuracy"],
        "answers_outside_source": sum(1 for p in predicted if p not in set(source_breeds)) / len(records),
        "filed": sum(filed) / len(records),
        "filed_right": filed_right / max(1, sum(filed)),
        "known_breeds": len([b for b in source_breeds if b in known]),
        "source_breeds": len(source_breeds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--bundle", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--breeds-of", metavar="SOURCE",
        help="also score every other source's photos of this source's breeds alone (for example the web "
        "photos of the 12 Oxford breeds), each bundle still choosing among all its breeds",
    )  # fmt: skip
    args = parser.parse_args()
    bundles = dict(item.split("=", 1) for item in args.bundle)
    by_source: dict[str, list] = defaultdict(list)
    for sample in split_samples(read_manifest(args.workdir), args.split):
        by_source[sample.source].append(sample)
    if args.breeds_of:
        breeds = {s.label for s in by_source[args.breeds_of]}
        for source, samples in list(by_source.items()):
            if source != args.breeds_of:
                by_source[f"{source}, breeds of {args.breeds_of}"] = [s for s in samples if s.label in breeds]
    report: dict = {}
    for name, folder in bundles.items():
        known = set(json.loads((Path(folder) / "bundle.json").read_text())["labels"])
        everything = list(dict.fromkeys(s.path.resolve() for samples in by_source.values() for s in samples))
        results, rate = classify(Path(folder), everything)
        report.setdefault("photos_per_second", {})[name] = rate
        for source, samples in sorted(by_source.items()):
            records = [results.get(s.path.resolve(), {"ok": False}) for s in samples]
            report.setdefault(source, {})[name] = figures(records, [s.label for s in samples], known)
    rates = report.pop("photos_per_second")
    first = next(iter(rates.values()))
    print(", ".join(f"{name} {rate:.1f} photos/s ({rate / first:.2f}x)" for name, rate in rates.items()))
    for source, rows in report.items():
        print(f"\n{source} ({next(iter(rows.values()))['photos']} {args.split} photos)")
        print(
            f"{'bundle':<10} {'F1 known':>9} {'F1 all':>7} {'acc':>6} {'outside':>8} {'filed':>6} {'right':>6}"
        )
        for name, row in rows.items():
            print(
                f"{name:<10} {row['macro_f1_known_breeds']:9.4f} {row['macro_f1_all_breeds']:7.4f} "
                f"{row['accuracy']:6.3f} {row['answers_outside_source']:8.1%} {row['filed']:6.1%} {row['filed_right']:6.1%}"
            )
    if args.out:
        args.out.write_text(json.dumps(report | {"photos_per_second": rates}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
