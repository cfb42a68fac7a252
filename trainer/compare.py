"""`compare`: score several checkpoints or bundles on the same photos, for cross-source figures.

A model is a trainer checkpoint folder or a model bundle folder (bundle.json: run through ONNX
Runtime as the app runs it), so a new model can be set beside the one it replaces.

Photos come from one work folder's manifest (a split, optionally some sources, and only breeds
in a given set). Each checkpoint chooses among its own breeds; a prediction outside the set
counts as a mistake. Photos that any checkpoint's own work folder used for training or
validation are left out for all, so every model is scored on the same unseen photos. The result
JSON names no absolute path: it is meant to travel into the model card.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from catbreed_desktop.core.bundle import ModelBundle, load_bundle
from catbreed_desktop.core.photos import Preprocessing
from trainer.breakdown import UNNAMED_SOURCE
from trainer.dataset import LABELS_FILE, MANIFEST_FILE, Sample, read_labels, read_manifest, split_samples
from trainer.errors import TrainerError
from trainer.modeling import TRAINER_FILE, checkpoint_labels, load_checkpoint, run_on_photos
from trainer.portable import portable_path, portable_text

SEEN_SPLITS = ("train", "val")


def parse_checkpoint(text: str) -> tuple[str, Path]:
    """ "NAME=DIR" -> (NAME, DIR); a bare DIR is named after its folder (its parent's for "best")."""
    name, sep, folder = text.partition("=")
    if not sep:
        path = Path(text)
        return (path.parent.parent.name if path.name in ("best", "last") else path.name) or text, path
    if not name or not folder:
        raise TrainerError(f"--checkpoint {text!r}: give NAME=DIR")
    return name, Path(folder)


def breed_set(spec: str) -> list[str]:
    """Breeds from a checkpoint folder, a work folder, a bundle folder, a JSON list, or "A,B,C"."""
    path = Path(spec)
    if path.is_dir():
        for name, key in ((TRAINER_FILE, "labels"), ("bundle.json", "labels"), (LABELS_FILE, None)):
            if (path / name).is_file():
                data = json.loads((path / name).read_text(encoding="utf-8"))
                return list(data[key] if key else data)
        raise TrainerError(f"--breeds-of {spec}: no {TRAINER_FILE}, bundle.json or {LABELS_FILE} in it")
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise TrainerError(f"--breeds-of {spec}: no such file")
        data = json.loads(path.read_text(encoding="utf-8"))
        return list(data["labels"] if isinstance(data, dict) else data)
    breeds = [b.strip() for b in spec.split(",") if b.strip()]
    if not breeds:
        raise TrainerError("--breeds-of names no breeds")
    return breeds


def seen_photos(checkpoint: Path) -> set[Path] | None:
    """Photos of the checkpoint's own work folder's train and validation splits, when the
    checkpoint lies in WORKDIR/checkpoints/NAME; None when its work folder is not there."""
    workdir = checkpoint.resolve().parent.parent
    if not (workdir / MANIFEST_FILE).is_file():
        return None
    return {s.path for s in read_manifest(workdir) if s.split in SEEN_SPLITS}


def _scores(truth: list[str], predicted: list[str], breeds: list[str]) -> dict:
    if not truth:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "count": 0}
    present = [b for b in breeds if b in set(truth)]
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        "count": len(truth),
    }


def _figures(samples: list[Sample], predicted: list[str], breeds: list[str], labels: list[str]) -> dict:
    truth = [s.label for s in samples]
    kept = [i for i, s in enumerate(samples) if not s.flagged]
    by_source: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        by_source.setdefault(sample.source or UNNAMED_SOURCE, []).append(i)
    per_breed = {}
    for breed in breeds:
        rows = [i for i, t in enumerate(truth) if t == breed]
        if rows:
            per_breed[breed] = {
                "recall": float(np.mean([predicted[i] == breed for i in rows])),
                "f1": float(f1_score(truth, predicted, labels=[breed], average="macro", zero_division=0)),
                "support": len(rows),
            }
    return {
        "labels": len(labels),
        "overall": _scores(truth, predicted, breeds),
        "without_flagged": _scores([truth[i] for i in kept], [predicted[i] for i in kept], breeds)
        | {"flagged_left_out": len(samples) - len(kept)},
        "predicted_outside_set": float(np.mean([p not in set(breeds) for p in predicted]))
        if predicted
        else 0.0,
        "per_source": {
            name: _scores([truth[i] for i in rows], [predicted[i] for i in rows], breeds)
            for name, rows in sorted(by_source.items())
        },
        "per_breed": per_breed,
    }


def compare(
    workdir: str | Path,
    checkpoints: Sequence[tuple[str, Path]],
    split: str = "test",
    sources: Sequence[str] = (),
    breeds: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    title: str | None = None,
    command_line: str | None = None,
) -> dict:
    """Score each (name, checkpoint folder) on the same photos; returns the comparison record.

    Without `breeds` the breeds every checkpoint knows are used. A breed of the set that some
    checkpoint cannot predict is refused: that model would be scored on photos it cannot get right.
    """
    workdir = Path(workdir)
    if not checkpoints:
        raise TrainerError("give at least one --checkpoint NAME=DIR")
    loaded: list[tuple[str, Path, torch.nn.Module | ModelBundle, Preprocessing, list[str]]] = []
    for name, folder in checkpoints:
        if (Path(folder) / "bundle.json").is_file():
            bundle = load_bundle(folder)
            loaded.append((name, folder, bundle, bundle.preprocessing, list(bundle.labels)))
            continue
        model, spec, _ = load_checkpoint(folder)
        loaded.append((name, folder, model, spec, checkpoint_labels(model)))
    if breeds is None:
        common = set.intersection(*(set(entry[4]) for entry in loaded))
        breeds = [b for b in read_labels(workdir) if b in common] or sorted(common)
    breeds = list(breeds)
    for name, _, _, _, labels in loaded:
        unknown = sorted(set(breeds) - set(labels))
        if unknown:
            raise TrainerError(
                f"checkpoint {name} cannot predict {', '.join(unknown)}; leave them out of the set"
            )
    photos = [
        s
        for s in split_samples(read_manifest(workdir), split)
        if s.label in set(breeds) and (not sources or s.source in set(sources))
    ]
    left_out = {}
    for name, folder, *_ in loaded:
        seen = seen_photos(folder)
        if seen:
            left_out[name] = sum(s.path in seen for s in photos)
            photos = [s for s in photos if s.path not in seen]
    if not photos:
        raise TrainerError(f"no {split} photos of those breeds and sources in {workdir} to score")
    results = {}
    for name, folder, scorer, spec, labels in loaded:
        paths = [s.path for s in photos]
        if isinstance(scorer, torch.nn.Module):
            logits, _ = run_on_photos(scorer, paths, spec, batch_size, f"scoring {name}", device=device)
        else:
            logits = bundle_logits(scorer, paths)
        predicted = [labels[i] for i in logits.argmax(axis=1)]
        results[name] = {"checkpoint": portable_path(folder)} | _figures(photos, predicted, breeds, labels)
    chosen_sources = sorted({s.source or UNNAMED_SOURCE for s in photos})
    return {
        "title": title or f"{', '.join(results)} on {split} photos of {', '.join(chosen_sources)}",
        "workdir": portable_path(workdir),
        "split": split,
        "sources": chosen_sources,
        "breeds": breeds,
        "photos": len(photos),
        "left_out_seen_in_training": left_out,
        "checkpoints": results,
        "command_line": portable_text(command_line) if command_line else None,
    }


def bundle_logits(bundle, paths: Sequence[Path]) -> np.ndarray:
    """A bundle's logits for these photos, through ONNX Runtime on the CPU as the app runs it."""
    from catbreed_desktop.core.photos import load_and_preprocess
    from trainer.onnx_run import onnx_outputs

    pixels = np.stack([load_and_preprocess(path, bundle.preprocessing) for path in paths])
    logits, _ = onnx_outputs(bundle.path / bundle.model_file, pixels, f"scoring {bundle.path.name}")
    return logits


def format_comparison(result: dict) -> str:
    """The comparison as printed after `compare`."""
    lines = [
        f"{result['title']}: {result['photos']} photos of {len(result['breeds'])} breeds",
    ]
    for name, r in result["checkpoints"].items():
        lines.append(
            f"  {name} (chooses among {r['labels']} breeds): accuracy {r['overall']['accuracy']:.4f}, "
            f"macro F1 {r['overall']['macro_f1']:.4f}"
        )
    for name, count in result["left_out_seen_in_training"].items():
        if count:
            lines.append(f"  left out {count} photos that {name} saw in training or validation")
    return "\n".join(lines)
