"""`python -m trainer`: argument parsing and dispatch to the subcommand modules.

Exit status: 0 success, 1 a check failed (e.g. an export that disagrees with PyTorch), 2 usage or
input errors, 130 interrupted. Expected errors are printed as one line, no traceback, by
`catbreed_desktop.core.program.run_program`, which the `catbreed` command shares.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from catbreed_desktop.core.engines.names import DEFAULT_BATCH_SIZE
from catbreed_desktop.core.program import positive_int, run_program
from trainer import backbone_import, bundle_checkpoint, negatives, triton
from trainer.extras import check_installed, report_missing_modules
from trainer.quiet import quiet_libraries
from trainer.weighting import CLASS_WEIGHTINGS

PROGRAM = "python -m trainer"


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-model",
        metavar="ID_OR_DIR",
        help="Hugging Face model id (e.g. google/vit-base-patch16-224-in21k) or local checkpoint folder",
    )
    parser.add_argument("--preset", choices=("tiny",), help="a tiny ViT from scratch instead (for tests)")
    parser.add_argument(
        "--image-size", type=positive_int, default=224, help="input size in pixels (default 224)"
    )
    parser.add_argument("--seed", type=int, default=83)


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where the model runs: auto (CUDA when PyTorch sees a GPU, else the CPU), cpu or cuda",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Train, evaluate and export CatBreed models.")
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="also show what the libraries print (transformers' load reports, PyTorch's export warnings)",
    )  # fmt: skip
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    prepare = commands.add_parser("prepare", help="merge, clean, deduplicate and split datasets")
    prepare.add_argument(
        "--data", action="append", required=True, type=Path, metavar="DIR_OR_CSV",
        help="folder with one sub-folder per breed, or a CSV with path,label (repeatable)",
    )  # fmt: skip
    prepare.add_argument("--out", required=True, type=Path, metavar="WORKDIR")
    prepare.add_argument("--top-breeds", type=positive_int, default=50, help="keep the N most common breeds")
    prepare.add_argument("--seed", type=int, default=83)
    prepare.add_argument(
        "--aliases", type=Path, metavar="FILE", help="JSON alias table (default: trainer/aliases.json)"
    )
    prepare.add_argument("--workers", type=positive_int, default=2, help="decoding threads (default 2)")
    prepare.add_argument(
        "--skip-folders", type=Path, metavar="FILE.json",
        help='leave out whole breed folders: {"SOURCE/FOLDER": "reason"} (e.g. trainer/recipes/skipped_folders.json)',
    )  # fmt: skip
    prepare.add_argument(
        "--not-cats", action="append", type=Path, default=[], metavar="SCREEN.jsonl",
        help="leave out the photos a `catbreed classify --json` run judged not to be cats (repeatable)",
    )  # fmt: skip
    prepare.set_defaults(handler=_prepare)

    part = commands.add_parser(
        "subset", help="a work folder with part of another's photos (same splits), for comparison models"
    )
    part.add_argument("workdir", type=Path, metavar="WORKDIR")
    part.add_argument("--out", required=True, type=Path, metavar="NEW_WORKDIR")
    part.add_argument(
        "--source", action="append", metavar="NAME", help="keep only this source's photos (repeatable)"
    )
    part.add_argument("--breeds-of", metavar="SOURCE", help="keep only the breeds this source has")
    part.set_defaults(handler=_subset)

    cleaning = commands.add_parser(
        "clean",
        help="flag photos whose label the other photos reject; leave out breeds with too few clean photos",
    )
    cleaning.add_argument("workdir", type=Path, metavar="WORKDIR")
    _add_model_source(cleaning)
    _add_device(cleaning)
    cleaning.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds (default 5)")
    cleaning.add_argument(
        "--trust", action="append", default=[], metavar="SOURCE",
        help="judge labels only by these sources' photos (repeatable; default: every source)",
    )  # fmt: skip
    cleaning.add_argument(
        "--max-given", type=float, default=0.05, metavar="P",
        help="flag when the given breed gets less than this probability from the other folds (default 0.05)",
    )  # fmt: skip
    cleaning.add_argument(
        "--min-other", type=float, default=0.6, metavar="P",
        help="... and another breed at least this probability (default 0.6)",
    )  # fmt: skip
    cleaning.add_argument(
        "--min-clean-photos", type=int, default=60, metavar="N",
        help="leave out breeds with fewer unflagged photos than this (default 60)",
    )  # fmt: skip
    cleaning.add_argument("--batch-size", type=positive_int, default=32)
    cleaning.set_defaults(handler=_clean)

    baseline = commands.add_parser("baseline", help="logistic regression on frozen backbone features")
    baseline.add_argument("workdir", type=Path, metavar="WORKDIR")
    _add_model_source(baseline)
    baseline.add_argument("--batch-size", type=positive_int, default=16)
    baseline.set_defaults(handler=_baseline)

    train = commands.add_parser("train", help="fine-tune a classifier (resumes an interrupted run)")
    train.add_argument("workdir", type=Path, metavar="WORKDIR")
    _add_model_source(train)
    train.add_argument("--epochs", type=positive_int, default=3)
    train.add_argument("--batch-size", type=positive_int, default=8)
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument(
        "--head-lr", type=float, default=None, help="learning rate of the new classifier head (default: --lr)"
    )
    train.add_argument("--weight-decay", type=float, default=1e-3)
    train.add_argument(
        "--freeze-layers", type=int, default=0, metavar="K", help="freeze embeddings + first K layers"
    )
    train.add_argument(
        "--probe-head",
        action="store_true",
        help="start the head from a logistic regression on frozen features (LP-FT)",
    )
    train.add_argument("--max-steps", type=positive_int, help="stop (resumably) after this many steps in all")
    train.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    train.add_argument(
        "--save-every", type=positive_int, default=50, help="save the resume state every N steps"
    )
    train.add_argument("--mlflow-uri", metavar="URI", help="also log to this MLflow tracking server/folder")
    train.add_argument("--restart", action="store_true", help="ignore a saved state and start over")
    train.add_argument(
        "--label-smoothing", type=_share_from_zero, default=0.0, metavar="EPS",
        help="share of each target spread over the other breeds (default 0; noisy labels: about 0.1)",
    )  # fmt: skip
    train.add_argument(
        "--keep-patches", type=_share, default=1.0, metavar="SHARE",
        help="train on a random share of each photo's patch tokens (PatchDropout; default 1: all); "
        "0.5 trains ViT-S about 2.5x faster on the CPU",
    )  # fmt: skip
    train.add_argument(
        "--source-weight", action="append", type=_source_weight, default=[], metavar="SOURCE=W",
        help="count a source's photos W times in the loss (0 leaves them out; default 1; repeatable)",
    )  # fmt: skip
    train.add_argument(
        "--class-weighting", choices=CLASS_WEIGHTINGS, default="balanced",
        help="balanced: every breed weighs the same in the loss (default); none: every photo does",
    )  # fmt: skip
    train.add_argument(
        "--crop-min-area", type=_share, default=0.6, metavar="SHARE",
        help="smallest random crop, as a share of the photo's area (default 0.6)",
    )  # fmt: skip
    train.add_argument(
        "--color-jitter", type=float, default=0.0, metavar="S",
        help="scale brightness, contrast and saturation by a random 1 +- S (default 0: off)",
    )  # fmt: skip
    train.add_argument(
        "--thumbnail-share", type=_share_from_zero, default=0.0, metavar="SHARE",
        help="shrink this share of the training views to a 96-160 px JPEG thumbnail first, so each "
        "breed is also learned at the size web photos have (default 0: none)",
    )  # fmt: skip
    train.add_argument(
        "--select-by", choices=("pooled", "source-mean"), default="pooled",
        help="which validation figure picks the best epoch: macro F1 over all photos (default), or the "
        "mean of each source's macro F1 over its breeds not marked noisy",
    )  # fmt: skip
    train.add_argument(
        "--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
        help="auto: bf16 (else fp16) on a GPU, fp32 on the CPU; bf16 on a CPU with AMX or AVX-512 BF16 "
        "trains about 3x faster than fp32; only fp32 runs are tested to repeat bit for bit",
    )  # fmt: skip
    _add_device(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="test metrics, calibration, confusion matrix, OOD detector"
    )
    evaluate.add_argument("workdir", type=Path, metavar="WORKDIR")
    evaluate.add_argument("--checkpoint", type=Path, metavar="DIR", help="default: WORKDIR/checkpoints/best")
    evaluate.add_argument("--batch-size", type=positive_int, default=16)
    _add_device(evaluate)
    evaluate.add_argument(
        "--decision-source", action="append", metavar="SOURCE",
        help="a source whose validation photos set the default unsure threshold, repeatable: the "
        "threshold must reach the target precision on each (default oxford-pet-cats; all validation "
        "photos when the manifest has none of them)",
    )  # fmt: skip
    evaluate.add_argument(
        "--target-precision", type=_share, default=0.95, metavar="SHARE",
        help="the lowest threshold filing at least this share of those photos right (default 0.95)",
    )  # fmt: skip
    evaluate.add_argument(
        "--detector-photos-per-breed", type=positive_int, metavar="N",
        help="fit the not-a-cat detector on at most N training photos per breed (default: all)",
    )  # fmt: skip
    evaluate.add_argument(
        "--non-cat", action="append", type=Path, metavar="DIR",
        help="a folder of photos without a cat (say the web photos' Cyprus, Safari, Savannah, "
        "Serengeti, Somali and Thai folders), repeatable: the not-a-cat detector learns a "
        "cat-or-not term from them and flags only the 0.5 %% least cat-like validation cats",
    )  # fmt: skip
    evaluate.set_defaults(handler=_evaluate)

    refit = commands.add_parser(
        "non-cat-term",
        help="give an exported bundle's not-a-cat detector a cat-or-not term, from the bundle's own outputs",
    )
    refit.add_argument("workdir", type=Path, metavar="WORKDIR", help="the manifest the bundle was trained on")
    refit.add_argument("--bundle", type=Path, required=True, metavar="DIR", help="rewritten in place")
    refit.add_argument(
        "--non-cat", action="append", type=Path, required=True, metavar="DIR",
        help="a folder of photos without a cat, repeatable (all its photos are used)",
    )  # fmt: skip
    refit.add_argument(
        "--cat", action="append", type=Path, default=[], metavar="DIR",
        help="a folder of extra cat photos, repeatable: from the collection the photos without a cat "
        "come from, so that the term does not learn the collection instead of the cat",
    )  # fmt: skip
    refit.add_argument("--photos-per-breed", type=positive_int, default=50, metavar="N",
                       help="training photos per breed on the cat side (default 50)")  # fmt: skip
    refit.add_argument("--cat-photos-per-folder", type=positive_int, default=40, metavar="N",
                       help="photos drawn from each --cat folder (default 40)")  # fmt: skip
    refit.set_defaults(handler=_non_cat_term)

    head = commands.add_parser(
        "refit-head",
        help="fit an exported bundle's last layer again on its own embeddings, choosing source weights "
        "and regularisation by the validation mean of each source's macro F1",
    )
    head.add_argument("workdir", type=Path, metavar="WORKDIR", help="the manifest the bundle was trained on")
    head.add_argument("--bundle", type=Path, required=True, metavar="DIR", help="the bundle (left as it is)")
    head.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the new bundle goes")
    head.add_argument(
        "--source-weight", action="append", type=_source_weights_to_try, default=[], metavar="SOURCE=W[,W...]",
        help="weights to try for a source's training photos (default 1; repeatable; every combination is tried)",
    )  # fmt: skip
    head.add_argument(
        "--regularisation", type=_positive_floats, default=None, metavar="C[,C...]",
        help="inverse L2 strengths to try (default 0.03,0.1,0.3)",
    )  # fmt: skip
    head.add_argument(
        "--class-weighting", type=_class_weightings, default=("balanced",), metavar="NAME[,NAME...]",
        help="class weightings to try, as `train --class-weighting` names them: balanced (default), none",
    )  # fmt: skip
    head.set_defaults(handler=_refit_head)

    compare = commands.add_parser(
        "compare", help="score several checkpoints on the same photos (cross-source figures)"
    )
    compare.add_argument("workdir", type=Path, metavar="WORKDIR", help="whose manifest gives the photos")
    compare.add_argument(
        "--checkpoint", action="append", required=True, metavar="NAME=DIR",
        help="a checkpoint folder to score, named for the tables (repeatable)",
    )  # fmt: skip
    compare.add_argument("--split", choices=("train", "val", "test"), default="test")
    compare.add_argument(
        "--source", action="append", default=[], metavar="NAME", help="only this source's photos (repeatable)"
    )
    compare.add_argument(
        "--breeds-of", metavar="DIR_OR_LIST",
        help="only photos of these breeds: a checkpoint, work or bundle folder, a JSON list, or A,B,C "
        "(default: the breeds every checkpoint knows)",
    )  # fmt: skip
    compare.add_argument("--title", help="the comparison's title in the model card")
    compare.add_argument("--out", required=True, type=Path, metavar="FILE.json")
    compare.add_argument("--batch-size", type=positive_int, default=16)
    _add_device(compare)
    compare.set_defaults(handler=_compare)

    export = commands.add_parser("export", help="ONNX export, checked against PyTorch, as a model bundle")
    export.add_argument("workdir", type=Path, metavar="WORKDIR")
    export.add_argument("--out", required=True, type=Path, metavar="BUNDLE_DIR")
    export.add_argument("--checkpoint", type=Path, metavar="DIR", help="default: WORKDIR/checkpoints/best")
    export.add_argument(
        "--int8", action="store_true",
        help="ship a statically quantised int8 model (QDQ: a photo's answer does not depend on its batch)",
    )  # fmt: skip
    export.add_argument(
        "--int8-calibration-photos", type=positive_int, metavar="N",
        help="training photos the int8 activation ranges are calibrated on, drawn with the split's seed "
        "(default 256)",
    )  # fmt: skip
    export.add_argument(
        "--int8-min-agreement", type=float, default=0.9, metavar="SHARE",
        help="refuse an int8 model agreeing with fp32 on fewer test photos than this (default 0.9)",
    )  # fmt: skip
    export.add_argument("--opset", type=int, default=18, help="ONNX opset, at least 17 (default 18)")
    export.add_argument(
        "--check-photos", type=positive_int, default=64, help="validation photos to compare on"
    )
    export.set_defaults(handler=_export)

    engine = commands.add_parser("build-engine", help="build the TensorRT engine of a bundle (needs a GPU)")
    engine.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    engine.add_argument("--fp16", action="store_true")
    # The app looks its cached engine up by batch size among the rest: build for the one it uses.
    engine.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE)
    engine.set_defaults(handler=_build_engine)

    report = commands.add_parser("report", help="write a Markdown model card")
    report.add_argument("workdir", type=Path, metavar="WORKDIR")
    report.add_argument("--out", required=True, type=Path, metavar="MODEL_CARD.md")
    report.add_argument(
        "--bundle", type=Path, metavar="DIR", help="default: the bundle the last export wrote"
    )
    report.add_argument(
        "--speed-photos", type=positive_int, default=32, help="photos timed for the speed table"
    )
    report.add_argument(
        "--negatives",
        type=Path,
        metavar="DIR",
        help="held-out non-cat photos (`negatives`) to measure not-a-cat on",
    )
    report.add_argument(
        "--notes", type=Path, metavar="FILE", help="Markdown appended to the card (data, licences, use)"
    )
    report.add_argument(
        "--comparison", action="append", default=[], type=Path, metavar="FILE.json",
        help="a `compare` result to show as a cross-source table (repeatable)",
    )  # fmt: skip
    report.add_argument(
        "--data-root", type=Path, metavar="DIR",
        help="the folder holding the data sources, to quote their README's licence (default: the "
        "summary's data_root, looked for from the current folder, the work folder and the repository)",
    )  # fmt: skip
    report.set_defaults(handler=_report)

    for module in (backbone_import, bundle_checkpoint, negatives, triton):
        module.register(commands)
    return parser


def command_line(argv: list[str] | None) -> str:
    return f"{PROGRAM} {shlex.join(sys.argv[1:] if argv is None else argv)}"


def main(argv: list[str] | None = None) -> int:
    def prepare(args: argparse.Namespace) -> None:
        args.command_line = command_line(argv)
        quiet_libraries(args.verbose)
        check_installed(args.command)
        args.handler = report_missing_modules(args.command, args.handler)

    return run_program(build_parser(), argv, prepare)


# ------------------------------------------------------------------------------------- handlers


def _prepare(args: argparse.Namespace) -> int:
    from trainer.dataset import format_count_table, prepare

    summary = prepare(
        args.data, args.out, args.top_breeds, args.seed, args.aliases, args.workers, args.command_line,
        skipped_folders=args.skip_folders, not_cats=args.not_cats,
    )  # fmt: skip
    print(format_count_table(summary["counts"]))
    dup = summary["duplicates"]
    print(
        f"\n{summary['photos_kept']} photos kept of {summary['photos_found']} found; "
        f"{len(summary['unreadable'])} unreadable, {len(summary['dropped_breeds'])} breeds outside the top "
        f"{summary['top_breeds']}; {dup['exact_duplicate_pairs']} exact and {dup['near_duplicate_pairs']} near "
        f"duplicate pairs kept inside one split"
    )
    for source, reasons in summary["excluded"].items():
        for reason, count in reasons.items():
            print(f"  left out {count} {source} photos: {reason}", file=sys.stderr)
    for path, reason in summary["unreadable"].items():
        print(f"  unreadable: {path}: {reason}", file=sys.stderr)
    for old, new in summary["renamed_breeds"].items():
        print(f"  breed name {old!r} read as {new!r}", file=sys.stderr)
    print(f"wrote {args.out / 'manifest.csv'}, labels.json and summary.json")
    return 0


def _subset(args: argparse.Namespace) -> int:
    from trainer.dataset import format_count_table, subset

    summary = subset(args.workdir, args.out, args.source, args.breeds_of)
    print(format_count_table(summary["counts"]))
    print(f"wrote {args.out / 'manifest.csv'}, labels.json and summary.json")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from trainer.cleaning import CleaningSettings, clean

    report = clean(
        args.workdir,
        CleaningSettings(
            base_model=args.base_model,
            preset=args.preset,
            image_size=args.image_size,
            folds=args.folds,
            max_given=args.max_given,
            min_other=args.min_other,
            min_clean_photos=args.min_clean_photos,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            trust=tuple(args.trust),
        ),
        command_line=args.command_line,
    )
    for breed, sources in report["per_breed_and_source"].items():
        cells = ", ".join(f"{source}: {c['flagged']}/{c['photos']}" for source, c in sources.items())
        print(f"{breed}: flagged {cells}")
    print(f"\n{report['flagged']} of {report['photos']} photos flagged; rule: {report['rule']}")
    for breed, reason in report["left_out_breeds"].items():
        print(f"left out {breed}: {reason}")
    print(f"wrote {args.workdir / 'label_review.csv'} and contact sheets in {args.workdir / 'label_review'}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from trainer.baseline import run_baseline

    metrics = run_baseline(
        args.workdir, args.base_model, args.preset, args.image_size, args.seed, args.batch_size
    )
    test = metrics["test"]
    print(
        f"baseline (C={metrics['C']}): test accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f} "
        f"on {test['count']} photos -> {args.workdir / 'baseline' / 'metrics.json'}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from trainer.train import TrainSettings, train

    settings = TrainSettings(
        base_model=args.base_model,
        preset=args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        weight_decay=args.weight_decay,
        image_size=args.image_size,
        freeze_layers=args.freeze_layers,
        probe_head=args.probe_head,
        seed=args.seed,
        max_steps=args.max_steps,
        workers=args.workers,
        save_every=args.save_every,
        mlflow_uri=args.mlflow_uri,
        restart=args.restart,
        label_smoothing=args.label_smoothing,
        keep_patches=args.keep_patches,
        source_weights=tuple(args.source_weight),
        class_weighting=args.class_weighting,
        crop_min_area=args.crop_min_area,
        color_jitter=args.color_jitter,
        thumbnail_share=args.thumbnail_share,
        select_by=args.select_by,
        device=args.device,
        precision=args.precision,
    )
    position = train(args.workdir, settings, args.command_line)
    if position.get("finished"):
        print(
            f"trained {settings.epochs} epochs ({position['global_step']} steps); best validation macro F1 "
            f"{position['best_macro_f1']:.4f} at epoch {position['best_epoch']} -> "
            f"{args.workdir / 'checkpoints' / 'best'}"
        )
    return 0


def _source_weight(text: str) -> tuple[str, float]:
    name, weights = _source_weights_to_try(text)
    if len(weights) != 1:
        raise argparse.ArgumentTypeError(f"expected SOURCE=WEIGHT with one weight, not {text!r}")
    return name, weights[0]


def _source_weights_to_try(text: str) -> tuple[str, tuple[float, ...]]:
    name, sep, weights = text.rpartition("=")
    try:
        values = tuple(float(w) for w in weights.split(","))
    except ValueError:
        values = (-1.0,)
    if not sep or not name or not all(v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected SOURCE=W[,W...] with weights of at least 0, not {text!r}")
    return name, values


def _positive_floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = (0.0,)
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers above 0 separated by commas, not {text!r}")
    return values


def _class_weightings(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    if not all(name in CLASS_WEIGHTINGS for name in names):
        raise argparse.ArgumentTypeError(
            f"expected {' or '.join(CLASS_WEIGHTINGS)}, separated by commas, not {text!r}"
        )
    return names


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share above 0 and at most 1, not {text}")
    return value


def _share_from_zero(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1, not {text}")
    return value


def _evaluate(args: argparse.Namespace) -> int:
    from trainer.coverage import DEFAULT_DECISION_SOURCE
    from trainer.evaluate import evaluate, format_summary

    metrics = evaluate(
        args.workdir,
        args.checkpoint,
        args.batch_size,
        device=args.device,
        decision_source=args.decision_source or DEFAULT_DECISION_SOURCE,
        target_precision=args.target_precision,
        command_line=args.command_line,
        detector_photos_per_breed=args.detector_photos_per_breed,
        non_cat_folders=args.non_cat or (),
    )
    print(format_summary(metrics))
    return 0


def _non_cat_term(args: argparse.Namespace) -> int:
    from catbreed_desktop.core.bundle import load_bundle
    from trainer.non_cat_refit import refit_non_cat

    ood = refit_non_cat(
        args.workdir,
        args.bundle,
        args.non_cat,
        args.cat,
        args.photos_per_breed,
        args.cat_photos_per_folder,
        command_line=args.command_line,
    )
    print(
        f"{args.bundle}: not-a-cat threshold {ood['threshold']:.3f} ({ood['threshold_rule']}), "
        f"{ood['test_cats_flagged_not_cat']:.1%} of test cats flagged"
    )
    decision = load_bundle(args.bundle).decision
    if decision:
        print(
            f"{args.bundle}: unsure below {decision['min_confidence']:.0%}, chosen again: {decision['rule']}"
        )
    return 0


def _refit_head(args: argparse.Namespace) -> int:
    from trainer.head_refit import DEFAULT_REGULARISATION, refit_head

    record = refit_head(
        args.workdir,
        args.bundle,
        args.out,
        source_weights=dict(args.source_weight),
        regularisation=args.regularisation or DEFAULT_REGULARISATION,
        command_line=args.command_line,
        class_weightings=args.class_weighting,
    )
    for name, head in (("old head", record["old_head"]), ("new head", record["new_head"])):
        for split in ("validation", "test"):
            scores = head[split]
            per_source = ", ".join(
                f"{source} {f1:.3f}" for source, f1 in scores["per_source_macro_f1"].items()
            )
            print(f"{name}, {split}: mean macro F1 {scores['source_mean_macro_f1']:.3f} ({per_source})")
    print(f"chose {record['chosen']}; wrote {args.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from trainer.compare import breed_set, compare, format_comparison, parse_checkpoint

    result = compare(
        args.workdir,
        [parse_checkpoint(text) for text in args.checkpoint],
        split=args.split,
        sources=args.source,
        breeds=breed_set(args.breeds_of) if args.breeds_of else None,
        batch_size=args.batch_size,
        device=args.device,
        title=args.title,
        command_line=args.command_line,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_comparison(result))
    print(f"wrote {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from trainer.export import ExportSettings, export
    from trainer.quantise import INT8_CALIBRATION_PHOTOS

    result = export(
        args.workdir,
        args.out,
        ExportSettings(
            checkpoint=args.checkpoint,
            int8=args.int8,
            opset=args.opset,
            check_photos=args.check_photos,
            command_line=args.command_line,
            int8_min_agreement=args.int8_min_agreement,
            int8_calibration_photos=args.int8_calibration_photos or INT8_CALIBRATION_PHOTOS,
        ),
    )
    print(result.describe())
    return 0


def _build_engine(args: argparse.Namespace) -> int:
    from catbreed_desktop.core.bundle import load_bundle
    from catbreed_desktop.core.engines import build_tensorrt_engine

    bundle = load_bundle(args.bundle)
    path = build_tensorrt_engine(bundle, fp16=args.fp16, batch_size=args.batch_size)
    print(f"TensorRT engine ready: {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from trainer.report import write_report

    path = write_report(
        args.workdir,
        args.out,
        args.bundle,
        args.speed_photos,
        args.negatives,
        args.notes,
        comparisons=args.comparison,
        data_root=args.data_root,
        command_line=args.command_line,
    )
    print(f"wrote model card {path}")
    return 0
