"""`report`: a Markdown model card from what prepare, baseline, train, evaluate and export wrote.

It also measures speed on this CPU: photos per second of the bundle under ONNX Runtime beside
the PyTorch checkpoint in eager mode, on the same preprocessed test photos and batch size.
Images (confusion matrix, reliability diagram) are copied next to the card. The data, recipe
and results sections beyond the headline live in `trainer.card_data` and `trainer.card_results`.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from catbreed_desktop.core.bundle import ModelBundle, load_bundle
from catbreed_desktop.core.sorting.folder_names import NOT_CAT_FOLDER, UNSURE_FOLDER
from trainer.card_data import data_section, find_data_root, recipe_section
from trainer.card_results import (
    comparisons_section,
    confusions_section,
    coverage_section,
    num,
    pct,
    precision_section,
    sources_section,
    table,
)
from trainer.dataset import SUMMARY_FILE, read_manifest, split_samples
from trainer.errors import TrainerError
from trainer.evaluate import EVAL_DIR
from trainer.export import EXPORT_DIR, load_pixels, torch_outputs
from trainer.machine import cpu_name
from trainer.modeling import LogitsAndEmbedding, load_checkpoint
from trainer.onnx_run import onnx_outputs, onnx_session
from trainer.portable import portable_path, portable_text

SPEED_BATCH = 8


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _shown_path(path: Path) -> str:
    """A path relative to the repository or the working folder where it lies below one, else
    its name: cards get committed, and the build machine's folders mean nothing to readers."""
    return portable_path(path, (Path.cwd(),))


def measure_speed(bundle_dir: Path, checkpoint: Path, paths: list[Path], repeats: int = 2) -> dict:
    """Photos/s of the bundle (ONNX Runtime CPU) and of the checkpoint (PyTorch eager), best of `repeats`."""
    import torch

    bundle = load_bundle(bundle_dir)
    model, spec, _ = load_checkpoint(checkpoint)
    pixels = load_pixels(paths, bundle.preprocessing, "loading speed photos")
    onnx_outputs(bundle.model_path, pixels[:SPEED_BATCH], "warm-up")  # first run pays for graph set-up

    def best_rate(run) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return len(pixels) / min(times)

    session = onnx_session(bundle.model_path)

    def run_onnx() -> None:
        for start in range(0, len(pixels), SPEED_BATCH):
            session.run(None, {"pixel_values": pixels[start : start + SPEED_BATCH]})

    wrapper = LogitsAndEmbedding(model, spec.size).eval()

    def run_torch() -> None:
        torch_outputs(wrapper, pixels)

    onnx_rate = best_rate(run_onnx)
    torch_rate = best_rate(run_torch)
    return {
        "photos": len(pixels),
        "batch_size": SPEED_BATCH,
        "bundle_photos_per_s": onnx_rate,
        "pytorch_photos_per_s": torch_rate,
        "speed_up": onnx_rate / torch_rate,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bundle_precision": bundle.provenance.get("precision", "fp32"),
    }


def build_card(
    workdir: Path,
    bundle: ModelBundle | None,
    speed: dict | None,
    images: dict[str, str],
    not_a_cat: dict | None = None,
    notes: str | None = None,
    comparisons: list[dict] | None = None,
    data_root: Path | None = None,
    report_command: str | None = None,
) -> str:
    """The model card text; `notes` (Markdown: sources, licences, intended use) ends it.

    `comparisons` are `compare` results, shown as cross-source tables; `data_root` is where the
    sources' README files are, for their licence words.
    """
    summary = _read_json(workdir / SUMMARY_FILE) or {}
    baseline = _read_json(workdir / "baseline" / "metrics.json")
    refit = bundle.metrics.get("head_refit") if bundle else None
    # A refitted head makes the checkpoint's evaluation another model's: the bundle's own figures,
    # measured on this work folder's test split, take its place.
    evaluation = (
        _evaluation_of_refitted(bundle)
        if bundle and refit
        else _read_json(workdir / EVAL_DIR / "metrics.json")
    )
    if evaluation is None:
        raise TrainerError(f"{workdir / EVAL_DIR / 'metrics.json'} not found; run `evaluate` first")
    # An int8 record's figures answer with a model's head; a refitted bundle's keeps only its body's.
    int8 = bundle.metrics.get("int8") if bundle and not refit else None
    test = evaluation["test"]
    lines = [
        "# CatBreed model card",
        "",
        f"Generated {datetime.date.today().isoformat()} by `python -m trainer report`.",
        "",
        "## Model",
        "",
        f"- Architecture: {evaluation.get('architecture')}; base model: {evaluation.get('base_model') or evaluation.get('preset')}",
        f"- Breeds: {len(evaluation['labels'])}",
    ]
    if bundle:
        lines += [
            f"- Bundle: `{_shown_path(bundle.path)}` ({bundle.provenance.get('precision', 'fp32')}, sha256 `{bundle.model_sha256[:16]}…`)",
            f"- Preprocessing: shorter side {bundle.preprocessing.resize} px, centre crop {bundle.preprocessing.size} px, "
            f"mean {list(bundle.preprocessing.mean)}, std {list(bundle.preprocessing.std)}",
            f"- Git commit: {bundle.provenance.get('git_commit') or 'unknown'}; exported {bundle.provenance.get('date')}",
            f"- Export command: `{bundle.provenance.get('command_line')}`",
        ]
    lines += ["", "## Data", ""]
    counts = summary.get("counts", {})
    if counts:
        totals = {s: sum(row[s] for row in counts.values()) for s in ("train", "val", "test")}
        dup = summary.get("duplicates", {})
        lines += [
            f"{summary.get('photos_kept')} photos of {len(counts)} breeds (train {totals['train']}, validation "
            f"{totals['val']}, test {totals['test']}; split seed {summary.get('seed')}), from "
            + ", ".join(
                f"`{s['name'] if isinstance(s, dict) else Path(str(s)).name}`"
                for s in summary.get("sources", [])
            )
            + "."
            + _left_out_sentence(summary, len(counts)),
            f"{len(summary.get('unreadable', {}))} unreadable files dropped; {dup.get('exact_duplicate_pairs', 0)} exact and "
            f"{dup.get('near_duplicate_pairs', 0)} near-duplicate pairs kept inside one split each (no test photo, "
            "nor a near copy of it, is in training).",
        ]
    lines += [""] + data_section(
        summary, evaluation["labels"], find_data_root(summary, workdir, data_root), notes is not None
    )
    training = (bundle.provenance.get("training") if bundle else None) or _read_json(
        Path(evaluation.get("checkpoint", workdir / "checkpoints" / "best")) / "training.json"
    )
    lines += [""] + recipe_section(
        summary,
        training,
        evaluation,
        bundle.provenance if bundle else {},
        comparisons or [],
        report_command,
    )
    # Per-source and sorting figures: the shipped model's where a bundle records them.
    shipped = bundle.metrics if bundle and "sources" in bundle.metrics else evaluation
    measured_with = shipped.get("measured_with", "the PyTorch checkpoint (fp32)")
    lines += ["", "## Results on the test split", ""]
    rows = []
    if baseline:
        rows.append(
            [
                "Baseline: logistic regression on frozen features",
                num(baseline["test"]["accuracy"]),
                num(baseline["test"]["macro_f1"]),
                "n/a",
            ]
        )
    headline = (
        f"Bundle {bundle.provenance.get('precision', 'fp32')}, head refitted (ONNX Runtime)"
        if bundle and refit
        else "Fine-tuned (PyTorch)"
    )
    rows.append([headline, num(test["accuracy"]), num(test["macro_f1"]), num(test["weighted_f1"])])
    if int8:
        rows.append(
            [
                "Bundle fp32 (ONNX Runtime)",
                num(int8["test_accuracy_fp32"]),
                num(int8.get("test_macro_f1_fp32")),
                "n/a",
            ]
        )
        rows.append(
            [
                "Bundle int8 (ONNX Runtime)",
                num(int8["test_accuracy_int8"]),
                num(int8.get("test_macro_f1_int8")),
                "n/a",
            ]
        )
    lines += table(["Model", "Accuracy", "Macro F1", "Weighted F1"], rows)
    lines.append(f"\n{test['count']} test photos, labels as given.")
    clean = evaluation.get("test_without_flagged")
    if clean and clean["flagged_left_out"]:
        lines.append(
            f"Secondary figure, leaving out the {clean['flagged_left_out']} test photos whose label the label "
            f"cleaning rejected: accuracy {num(clean['accuracy'])}, macro F1 {num(clean['macro_f1'])} "
            f"({'the bundle' if refit else 'fine-tuned, PyTorch'})."
        )
    if refit:
        lines += _refit_lines(refit)
    if bundle and "export_check" in bundle.metrics and not refit:
        check = bundle.metrics["export_check"]
        lines.append(
            f"ONNX fp32 vs PyTorch on {check['photos']} photos: top-1 agreement {pct(check['top1_agreement'])}, "
            f"max |logit diff| {check['max_abs_logit_diff']:.1e}."
        )
    if int8:
        lines.append(
            f"int8 ({int8['quantisation']}) vs fp32: top-1 agreement {pct(int8['top1_agreement_vs_fp32'])} on "
            f"{int8['test_photos']} test photos; model {int8['fp32_size_mb']:.1f} MB -> {int8['int8_size_mb']:.1f} MB."
        )
    lines += ["", "### Per breed", ""]
    lines += table(
        ["Breed", "Precision", "Recall", "F1", "Test photos"],
        [
            [breed, num(r["precision"], 3), num(r["recall"], 3), num(r["f1"], 3), str(r["support"])]
            for breed, r in evaluation["per_breed"].items()
        ],
    )
    lines += sources_section(shipped, measured_with)
    lines += confusions_section(evaluation.get("confused_pairs", []))
    if "confusion" in images:
        lines += ["", f"![Confusion matrix on the test split]({images['confusion']})"]
    cal = evaluation["calibration"]
    lines += [
        "",
        "## Calibration",
        "",
        f"Temperature {cal['temperature']:.3f}, fitted on the validation split (L-BFGS on the negative "
        f"log-likelihood). Expected calibration error on the test split ({cal['bins']} bins): "
        f"{num(cal['test_ece_before'])} before, {num(cal['test_ece_after'])} after.",
    ]
    if "reliability" in images:
        lines += ["", f"![Reliability diagram]({images['reliability']})"]
    if bundle:
        lines += precision_section(bundle.metrics)
    lines += coverage_section(shipped, measured_with)
    lines += comparisons_section(comparisons or [])
    # The shipped detector: an int8 bundle carries a threshold set on its own outputs.
    ood = (bundle.metrics.get("ood") if bundle else None) or evaluation.get("ood")
    if ood:
        lines += [
            "",
            "## Not-a-cat detector",
            "",
            f"{_detector_words(ood)} Threshold {ood['threshold']:.3f} ({ood['threshold_rule']}); it flags "
            f"{pct(ood['test_cats_flagged_not_cat'])} of test cat photos.",
        ]
    if not_a_cat:
        lines += _not_a_cat_section(not_a_cat)
    if speed:
        lines += [
            "",
            "## Speed on this CPU",
            "",
            f"{speed['cpu']}, {speed['cores']} cores ({speed['torch_threads']} PyTorch threads), batches of "
            f"{speed['batch_size']}, {speed['photos']} preprocessed test photos, best of 2 runs:",
            "",
        ]
        lines += table(
            ["Runtime", "Photos/s"],
            [
                [
                    f"Bundle, ONNX Runtime CPU ({speed['bundle_precision']})",
                    f"{speed['bundle_photos_per_s']:.1f}",
                ],
                ["PyTorch eager (fp32)", f"{speed['pytorch_photos_per_s']:.1f}"],
            ],
        )
        lines.append(f"\nThe bundle runs {speed['speed_up']:.2f}x the PyTorch speed.")
    if notes:
        lines += ["", notes.strip()]
    lines.append("")
    return "\n".join(lines)


def _left_out_sentence(summary: Mapping, breeds_prepared: int) -> str:
    """The breeds `clean` left out after `prepare` counted them: the prepared count is not the model's."""
    left_out = summary.get("left_out_breeds") or {}
    if not left_out:
        return ""
    return (
        f" `clean` then left out {len(left_out)} of these breeds (see Breeds left out), so the model "
        f"answers {breeds_prepared - len(left_out)}."
    )


def _evaluation_of_refitted(bundle: ModelBundle) -> dict:
    """What `evaluate` records, taken from a bundle whose head `refit-head` fitted again."""
    metrics = bundle.metrics
    return {
        "architecture": bundle.architecture,
        "base_model": bundle.provenance.get("base_model"),
        "preset": bundle.provenance.get("preset"),
        "labels": list(bundle.labels),
        "command_line": bundle.provenance.get("evaluate_command_line"),
        **{
            key: metrics[key]
            for key in ("test", "test_without_flagged", "per_breed", "calibration", "confused_pairs", "ood")
            if key in metrics
        },
    }


def _refit_lines(refit: Mapping) -> list[str]:
    """How `refit-head` chose the head, and the old head beside it on the same test photos."""
    chosen = refit["chosen"]
    old, new = refit["old_head"]["test"], refit["new_head"]["test"]
    sources = sorted(new["per_source_macro_f1"])
    lines = [
        "",
        f"The head (the last layer) was fitted again on the bundle's own embeddings of "
        f"{refit['training_photos']} training photos by `{portable_text(refit.get('command_line') or 'refit-head')}`: "
        f"{len(refit['tried'])} choices tried, chosen by the {refit['selected_by']}: source weights "
        f"{chosen['source_weights'] or 'all 1'}, class weighting {chosen.get('class_weighting', 'balanced')}, "
        f"regularisation C {chosen['regularisation']}. Test macro F1 per source, the same photos:",
        "",
    ]
    lines += table(
        ["Head", *sources, "Mean"],
        [
            [
                name,
                *(num(scores["per_source_macro_f1"][s]) for s in sources),
                num(scores["source_mean_macro_f1"]),
            ]
            for name, scores in (("As exported", old), ("Refitted", new))
        ],
    )
    return lines


def _detector_words(ood: dict) -> str:
    """How the not-a-cat detector scores a photo, in a sentence or two."""
    size = ood["embedding_size"]
    start, stop = ood.get("features") or (0, size)
    part = (
        f"the {size}-dimensional embedding"
        if (start, stop) == (0, size)
        else (f"dimensions {start}-{stop - 1} of the {size}-dimensional embedding (the mean patch token)")
    )
    distance = (
        f"Mahalanobis distance of {part} to the nearest breed mean (shared, shrunk covariance fitted on "
        "training photos)"
    )
    if ood.get("method") not in ("mahalanobis_energy", "mahalanobis_energy_non_cat"):
        return distance + "."
    energy = "the energy -logsumexp(logits), which is high when no breed's logit stands out"
    if ood.get("method") == "mahalanobis_energy_non_cat":
        energy += (
            ", and a linear cat-or-not direction on the same dimensions (a logistic regression of "
            "training cats against photos without a cat)"
        )
    return (
        f"{distance}, plus {energy}; each term is divided by its spread (95th percentile minus median) "
        "over validation cats."
    )


NOT_A_CAT_BREED_LIMIT = 0.05


def _not_a_cat_section(measure: dict) -> list[str]:
    """What sorting does with held-out non-cat photos and with the test cats, through the bundle."""
    threshold = measure["min_confidence"]
    rows = [
        [f"Non-cat: {group}", str(r["photos"]), pct(r["not_cat"]), pct(r["unsure"]), pct(r["breed"])]
        for group, r in measure["negatives"].items()
    ]
    cats = measure["cats"]
    rows.append(
        ["Test cats", str(cats["photos"]), pct(cats["not_cat"]), pct(cats["unsure"]), pct(cats["breed"])]
    )
    lines = [
        "",
        "### Held-out photos without a cat, through the shipped bundle",
        "",
        f"Each photo run through the app's classifier and sorted as `catbreed sort --min-confidence {threshold}` "
        f"would: into *{NOT_CAT_FOLDER}*, into *{UNSURE_FOLDER}*, or into a breed folder. None of the non-cat "
        "photos was used in training or for the threshold.",
        "",
    ]
    lines += table(["Photos", "Count", NOT_CAT_FOLDER, UNSURE_FOLDER, "Breed folder"], rows)
    if cats.get("accuracy_of_filed") is not None:
        lines.append(
            f"\nOf the test cats filed into a breed folder, {pct(cats['accuracy_of_filed'])} are in the right one."
        )
    by_breed = measure.get("cats_flagged_by_breed") or {}
    if by_breed:
        worst = sorted(by_breed.items(), key=lambda item: -item[1]["not_cat"])
        over = [breed for breed, row in worst if row["not_cat"] > NOT_A_CAT_BREED_LIMIT]
        lines += [
            "",
            f"Test cats sent to *{NOT_CAT_FOLDER}*, per breed (worst first; the aim is at most "
            f"{NOT_A_CAT_BREED_LIMIT:.0%} for every breed, "
            + (f"missed by {', '.join(over)})" if over else "met by every breed)")
            + ":",
            "",
        ]
        lines += table(
            ["Breed", "Test photos", NOT_CAT_FOLDER],
            [[breed, str(row["photos"]), pct(row["not_cat"])] for breed, row in worst],
        )
    return lines


def _read_comparison(path: Path) -> dict:
    data = _read_json(path)
    if not data or "checkpoints" not in data:
        raise TrainerError(f"--comparison {path}: not a result of `python -m trainer compare`")
    return data


def write_report(
    workdir: str | Path,
    out: str | Path,
    bundle_dir: str | Path | None = None,
    speed_photos: int = 32,
    negatives_dir: str | Path | None = None,
    notes_file: str | Path | None = None,
    comparisons: list[Path] | None = None,
    data_root: str | Path | None = None,
    command_line: str | None = None,
) -> Path:
    """Write the model card (and its images next to it); returns its path.

    With `negatives_dir` (see `python -m trainer negatives`) the card measures what the bundle does
    with photos that show no cat; `notes_file` is Markdown appended as the card's last sections.
    """
    workdir, out = Path(workdir), Path(out)
    if bundle_dir is None:
        record = _read_json(workdir / EXPORT_DIR / "metrics.json")
        bundle_dir = Path(record["bundle"]) if record else None
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(Path(bundle_dir), verify=False) if bundle_dir is not None else None
    images = {}
    # The evaluation's figures show the checkpoint's head, not a head refitted since.
    refitted = bundle is not None and "head_refit" in bundle.metrics
    for key, name in (("confusion", "confusion_matrix.png"), ("reliability", "reliability.png")):
        source = workdir / EVAL_DIR / name
        if source.is_file() and not refitted:
            target = out.parent / f"{out.stem}_{name}"
            shutil.copyfile(source, target)
            images[key] = target.name
    speed = None
    if bundle is not None:
        evaluation = _read_json(workdir / EVAL_DIR / "metrics.json") or {}
        checkpoint = Path(evaluation.get("checkpoint", workdir / "checkpoints" / "best"))
        photos = [s.path for s in split_samples(read_manifest(workdir), "test")][:speed_photos]
        if photos and checkpoint.is_dir():
            speed = measure_speed(bundle.path, checkpoint, photos)
    not_a_cat = None
    if bundle is not None and negatives_dir is not None:
        from trainer.ood_check import measure_not_a_cat

        test = split_samples(read_manifest(workdir), "test")
        # Sorted at the bundle's own default threshold, as the app would sort them.
        not_a_cat = measure_not_a_cat(
            bundle.path,
            Path(negatives_dir),
            [s.path for s in test],
            [s.label for s in test],
            bundle.default_min_confidence,
        )
        _write_evaluation_file(workdir, "not_a_cat.json", not_a_cat)
    notes = Path(notes_file).read_text(encoding="utf-8") if notes_file else None
    text = build_card(
        workdir,
        bundle,
        speed,
        images,
        not_a_cat,
        notes,
        comparisons=[_read_comparison(Path(c)) for c in comparisons or []],
        data_root=Path(data_root) if data_root else None,
        report_command=command_line,
    )
    out.write_text(text, encoding="utf-8")
    if speed:
        _write_evaluation_file(workdir, "speed.json", speed)
    return out


def _write_evaluation_file(workdir: Path, name: str, data: dict) -> None:
    # A refitted bundle's card needs no evaluation, so its folder may not exist yet.
    (workdir / EVAL_DIR).mkdir(exist_ok=True)
    (workdir / EVAL_DIR / name).write_text(json.dumps(data, indent=2) + "\n")
