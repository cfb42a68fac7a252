"""Find the default model's recipe with evidence: short runs of each choice, then one full run.

    python trainer/recipes/recipe_study.py WORKDIR BACKBONE OUT [--study-epochs 3] [--full-epochs 8]
        [--deadline-s SECONDS] [--device cuda] [--workers 15]

WORKDIR is a prepared and cleaned work folder (manifest, labels, summary, features.npz). Every
variant trains from the same photos, splits, seed and backbone, for --study-epochs epochs (the
proxy), in a copy of WORKDIR under OUT/runs/; its score is the validation figure that chooses
the shipped model: the mean of each source's macro F1 over its breeds not marked noisy. The
proxy ranks choices fairly because every variant gets the same steps, the same learning-rate
schedule shape and the same validation photos; what it cannot show (more epochs) the full run's
per-epoch validation curve shows. The choices compared:

  petfinder-gano-cats' weight in the loss: 1, 0.25, 0;
  then, on the 0.25 base: random crops down to 35 % of the area (against 60 %), colour jitter 0.2,
  and no class weighting.

The full run takes the best source weight plus each change that beat its base by more than
0.005, for --full-epochs epochs, in WORKDIR itself (so `evaluate` and `export` find it). Then, when
time is left, the same recipe on the 33 breeds petfinder-gano-cats has (WORKDIR-33), so the card
can show what the extra breeds cost. OUT/study.json holds every run's settings, per-epoch
validation figures and wall time; a run not started for lack of time says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.tracking import read_metrics  # noqa: E402

BASE_TRAIN = [
    "--probe-head", "--freeze-layers", "0", "--keep-patches", "0.5", "--batch-size", "32",
    "--lr", "4e-5", "--head-lr", "3e-4", "--label-smoothing", "0.1", "--select-by", "source-mean",
    "--seed", "83", "--save-every", "1000000",
]  # fmt: skip
PETFINDER = "petfinder-gano-cats"
SOURCE_WEIGHTS = {"pf1": "1", "pf0.25": "0.25", "pf0": "0"}
CHANGES = {
    "crop0.35": ["--crop-min-area", "0.35"],
    "jitter0.2": ["--color-jitter", "0.2"],
    "thumbnails0.5": ["--thumbnail-share", "0.5"],
    "no-class-weights": ["--class-weighting", "none"],
}
CHANGE_BASE = "pf0.25"
MIN_GAIN = 0.005
WORKDIR_FILES = ("manifest.csv", "labels.json", "summary.json", "features.npz")


def copy_workdir(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKDIR_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    return target


def epoch_scores(workdir: Path) -> list[dict]:
    """Per-epoch validation figures from the run's metrics log."""
    return [
        row
        for log in sorted((workdir / "runs").glob("*/metrics.jsonl"))
        for row in read_metrics(log)
        if "val_source_mean_macro_f1" in row
    ]


def train(workdir: Path, args: argparse.Namespace, epochs: int, extra: list[str], log: Path) -> dict:
    command = [sys.executable, "-m", "trainer", "train", str(workdir), "--base-model", str(args.backbone),
               "--epochs", str(epochs), "--device", args.device, "--workers", str(args.workers),
               *BASE_TRAIN, *extra]  # fmt: skip
    started = time.monotonic()
    with open(log, "w") as handle:
        status = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    best = workdir / "checkpoints" / "best" / "validation.json"
    validation = json.loads(best.read_text()) if best.is_file() else {}
    return {
        "flags": extra,
        "epochs": epochs,
        "exit_status": status,
        "seconds": round(seconds, 1),
        "best": validation,
        "score": validation.get("source_mean_macro_f1"),
        "epochs_log": epoch_scores(workdir),
        "log": log.name,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", type=Path)
    parser.add_argument("backbone", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--study-epochs", type=int, default=3)
    parser.add_argument("--full-epochs", type=int, default=8)
    parser.add_argument(
        "--deadline-s", type=float, default=1e9, help="start no run that would end after this"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=15)
    args = parser.parse_args()
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    study: dict = {"runs": {}, "not_run": {}}

    def save() -> None:
        (args.out / "study.json").write_text(json.dumps(study, indent=2) + "\n")

    def time_left() -> float:
        return args.deadline_s - (time.monotonic() - start)

    proxy_seconds = None
    plan = [(name, ["--source-weight", f"{PETFINDER}={weight}"]) for name, weight in SOURCE_WEIGHTS.items()]
    plan += [(name, ["--source-weight", f"{PETFINDER}=0.25", *flags]) for name, flags in CHANGES.items()]
    for name, flags in plan:
        if proxy_seconds is not None:
            # The full run takes about full/study times a proxy; keep that in hand.
            full_reserve = proxy_seconds * args.full_epochs / args.study_epochs
            if time_left() < proxy_seconds * 1.1 + full_reserve:
                study["not_run"][name] = "left out for lack of device time"
                continue
        run_dir = copy_workdir(args.workdir, args.out / "runs" / name)
        study["runs"][name] = train(run_dir, args, args.study_epochs, flags, args.out / f"{name}.log")
        proxy_seconds = max(proxy_seconds or 0.0, study["runs"][name]["seconds"])
        save()
        print(f"{name}: {study['runs'][name]['score']} in {study['runs'][name]['seconds']} s", flush=True)

    scored = {name: run["score"] for name, run in study["runs"].items() if run["score"] is not None}
    weights = {name: scored[name] for name in SOURCE_WEIGHTS if name in scored}
    best_weight = max(weights, key=weights.__getitem__)
    chosen = ["--source-weight", f"{PETFINDER}={SOURCE_WEIGHTS[best_weight]}"]
    adopted = []
    for change, flags in CHANGES.items():
        if change in scored and CHANGE_BASE in scored and scored[change] > scored[CHANGE_BASE] + MIN_GAIN:
            chosen += flags
            adopted.append(change)
    study["choice"] = {"source_weight": best_weight, "adopted_changes": adopted, "flags": chosen}
    save()
    print(f"chosen: {chosen}", flush=True)

    study["full"] = train(args.workdir, args, args.full_epochs, chosen, args.out / "full.log")
    save()
    print(f"full: {study['full']['score']} in {study['full']['seconds']} s", flush=True)

    if time_left() > study["full"]["seconds"] * 1.1 + 30:
        subset = Path(f"{args.workdir}-33")
        subprocess.run(
            [sys.executable, "-m", "trainer", "subset", str(args.workdir), "--out", str(subset),
             "--breeds-of", PETFINDER], check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        study["breeds33"] = train(subset, args, args.full_epochs, chosen, args.out / "breeds33.log")
    else:
        study["not_run"]["breeds33"] = "left out for lack of device time"
    save()
    print(f"done in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
