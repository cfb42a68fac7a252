"""`export`: a checkpoint as an ONNX model bundle the app loads as is, proven against PyTorch first.

The graph (opset 17+, real LayerNormalization ops) takes `pixel_values` with a dynamic batch
axis and returns `logits` and `embedding`. Before anything is written, ONNX Runtime's outputs on
real validation photos are compared with PyTorch's: any top-1 disagreement or a logit difference
over 1e-3 refuses the export. With `--int8` the model is quantised statically in QDQ form by
`trainer/quantise.py` (int8 weights per channel, activation scales calibrated on training photos, so a photo's
answer does not depend on the rest of its batch), its agreement and test accuracy are
measured, and the bundle ships the int8 model. The bundle records labels, architecture,
preprocessing, calibration temperature, OOD detector, evaluation metrics and provenance.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle, write_bundle
from catbreed_desktop.core.engines.names import DEFAULT_BATCH_SIZE
from catbreed_desktop.core.photos import Preprocessing, load_and_preprocess
from trainer.dataset import (
    SUMMARY_FILE,
    read_labels,
    read_manifest,
    split_samples,
)
from trainer.errors import CheckFailed, TrainerError
from trainer.evaluate import EVAL_DIR, default_checkpoint
from trainer.metrics import classification_scores
from trainer.modeling import TRAINING_FILE, LogitsAndEmbedding, checkpoint_labels, load_checkpoint
from trainer.not_a_cat import OOD_FILE, load_ood, rethreshold
from trainer.onnx_run import CHECK_BATCH, onnx_outputs, onnx_session
from trainer.portable import portable, portable_path
from trainer.progress import bar
from trainer.quantise import INT8_CALIBRATION_PHOTOS, int8_calibration_photos, quantise_int8
from trainer.shipped import Outputs, bundle_decision, bundle_metrics, measure_shipped

MIN_OPSET = 17
FP32_TOLERANCE = 1e-3
EXPORT_DIR = "export"


@dataclass(frozen=True)
class ExportSettings:
    checkpoint: Path | None = None
    int8: bool = False
    opset: int = 18
    check_photos: int = 64
    command_line: str = ""
    int8_min_agreement: float = 0.9
    int8_calibration_photos: int = INT8_CALIBRATION_PHOTOS


@dataclass
class ExportResult:
    bundle: ModelBundle
    fp32_check: dict
    int8_check: dict | None = None
    graph: dict = field(default_factory=dict)

    def describe(self) -> str:
        c = self.fp32_check
        lines = [
            f"ONNX opset {self.graph['opset']}, {self.graph['layer_norm_ops']} LayerNormalization ops; "
            f"checked on {c['photos']} real photos: max |logit diff| {c['max_abs_logit_diff']:.2e}, "
            f"top-1 agreement {c['top1_agreement']:.2%}"
        ]
        if self.int8_check:
            q = self.int8_check
            lines.append(
                f"int8 ({q['quantisation']}): top-1 agreement with fp32 {q['top1_agreement_vs_fp32']:.2%}; "
                f"test accuracy {q['test_accuracy_fp32']:.4f} fp32 -> {q['test_accuracy_int8']:.4f} int8; "
                f"{q['fp32_size_mb']:.1f} MB -> {q['int8_size_mb']:.1f} MB"
            )
            if "max_abs_logit_diff_alone_vs_batched" in q:
                lines.append(
                    f"int8 batch independence: max |logit diff| alone vs batched "
                    f"{q['max_abs_logit_diff_alone_vs_batched']:.1e} on {c['photos']} photos"
                )
        lines.append(f"bundle written to {self.bundle.path} ({self.bundle.model_file})")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ export


def export_onnx(model: torch.nn.Module, image_size: int, path: Path, opset: int = 18) -> Path:
    """Export (logits, embedding) of `model` to one self-contained ONNX file."""
    if opset < MIN_OPSET:
        raise TrainerError(f"--opset {opset} is too old: LayerNormalization needs opset {MIN_OPSET} or later")
    wrapper = LogitsAndEmbedding(model, image_size).eval()
    example = torch.zeros(2, 3, image_size, image_size)  # batch 2: a batch of 1 would be specialised
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[LOGITS_NAME, EMBEDDING_NAME],
            opset_version=opset,
            dynamo=True,
            verbose=False,
            dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1, max=1024)}},
        )
    if program is None:  # only the legacy TorchScript exporter returns nothing; dynamo=True never does
        raise TrainerError("torch.onnx.export returned no ONNX program")
    program.save(str(path), external_data=False)  # the bundle holds one file
    return path


def inspect_graph(path: Path, opset: int) -> dict:
    """Check the exported graph's interface and that layer norms are real LayerNormalization ops."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    # Functions hold ops too when the exporter keeps modules as local functions.
    ops += [node.op_type for function in model.functions for node in function.node]
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    problems = []
    if inputs != [INPUT_NAME]:
        problems.append(f"inputs are {inputs}, not [{INPUT_NAME!r}]")
    if outputs[:2] != [LOGITS_NAME, EMBEDDING_NAME]:
        problems.append(f"outputs are {outputs}, not [{LOGITS_NAME!r}, {EMBEDDING_NAME!r}]")
    if default_opset < MIN_OPSET:
        problems.append(f"opset {default_opset} is below {MIN_OPSET}")
    if "LayerNormalization" not in ops:
        problems.append("no LayerNormalization op (layer norms were decomposed)")
    if batch_dim.dim_value:
        problems.append(f"the batch axis is fixed at {batch_dim.dim_value}, not dynamic")
    if problems:
        raise CheckFailed(f"exported graph {path}: " + "; ".join(problems))
    return {
        "opset": default_opset,
        "layer_norm_ops": ops.count("LayerNormalization"),
        "nodes": len(ops),
        "batch_axis": batch_dim.dim_param,
    }


# ---------------------------------------------------------------------------------------- checking


@torch.no_grad()
def torch_outputs(wrapper: LogitsAndEmbedding, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, embeddings = [], []
    for start in range(0, len(pixels), CHECK_BATCH):
        out = wrapper(torch.from_numpy(pixels[start : start + CHECK_BATCH]))
        logits.append(out[0].numpy())
        embeddings.append(out[1].numpy())
    return np.concatenate(logits), np.concatenate(embeddings)


def load_pixels(paths: list[Path], spec: Preprocessing, description: str) -> np.ndarray:
    return np.stack([load_and_preprocess(p, spec) for p in bar(paths, description, total=len(paths))])


def compare_fp32(reference: tuple[np.ndarray, np.ndarray], exported: tuple[np.ndarray, np.ndarray]) -> dict:
    return {
        "photos": len(reference[0]),
        "max_abs_logit_diff": float(np.abs(reference[0] - exported[0]).max()),
        "max_abs_embedding_diff": float(np.abs(reference[1] - exported[1]).max()),
        "top1_agreement": float(np.mean(reference[0].argmax(1) == exported[0].argmax(1))),
        "tolerance": FP32_TOLERANCE,
    }


# ------------------------------------------------------------------------------------- provenance


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def provenance(workdir: Path, checkpoint: Path, origin: dict, command_line: str) -> dict:
    """Where the bundle came from, naming no absolute path of the build machine: data sources
    relative to their data root (as summary.json names them), the work folder and checkpoint
    relative to the repository or by name, command lines with their paths made so too."""
    import onnxruntime
    import transformers

    summary = _summary_of(workdir)
    training_path = checkpoint / TRAINING_FILE
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    record = {
        "command_line": command_line or " ".join(sys.argv),
        "prepare_command_line": summary.get("command_line"),
        "data_sources": [_source_entry(s) for s in summary.get("sources") or []],
        "left_out_breeds": summary.get("left_out_breeds"),
        "data_photos": summary.get("photos_kept"),
        "split_seed": summary.get("seed"),
        "workdir": portable_path(workdir),
        "checkpoint": portable_path(checkpoint, (workdir.resolve().parent,)),
        "base_model": origin.get("base_model"),
        "preset": origin.get("preset"),
        "training": training,
        "evaluate_command_line": _evaluation_command(workdir),
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "software": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    return portable(record)


def _summary_of(workdir: Path) -> dict:
    path = workdir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _source_entry(source: object) -> object:
    """A summary's source as the bundle names it; older summaries listed bare (absolute) paths."""
    if isinstance(source, dict):
        return {k: v for k, v in source.items() if k in ("name", "path", "photos", "noisy_breeds")}
    return portable_path(str(source))


def _evaluation_command(workdir: Path) -> str | None:
    path = workdir / EVAL_DIR / "metrics.json"
    return json.loads(path.read_text()).get("command_line") if path.is_file() else None


def _runner(model_path: Path, spec: Preprocessing, chunk: int = 256) -> Outputs:
    """(paths, description) -> (logits, embeddings) of an ONNX model as the app runs it.

    Batches are the app's default size, so an older dynamically quantised graph, whose answers
    depend a little on batch companions, is measured as the app would run it. Photos are decoded
    `chunk` at a time so thousands of test photos never sit in memory as pixels at once. Each
    photo list is run once: the int8 check, the not-a-cat threshold and the shipped figures all
    read the same validation and test outputs.
    """
    batch = DEFAULT_BATCH_SIZE
    session = onnx_session(model_path)
    done: dict[tuple[Path, ...], tuple[np.ndarray, np.ndarray]] = {}

    def run(paths: list[Path], description: str) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(paths)
        if key not in done:
            done[key] = _run_chunked(paths, description)
        return done[key]

    def _run_chunked(paths: list[Path], description: str) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = [], []
        for start in range(0, len(paths), chunk):
            pixels = load_pixels(paths[start : start + chunk], spec, description)
            for first in range(0, len(pixels), batch):
                out = session.run([LOGITS_NAME, EMBEDDING_NAME], {INPUT_NAME: pixels[first : first + batch]})
                logits.append(out[0])
                embeddings.append(out[1])
        return np.concatenate(logits), np.concatenate(embeddings)

    return run


# ------------------------------------------------------------------------------------------- main


def export(workdir: str | Path, out_dir: str | Path, settings: ExportSettings) -> ExportResult:
    """Export, check, optionally quantise, and write the bundle; raises `CheckFailed` on disagreement."""
    workdir = Path(workdir)
    checkpoint = Path(settings.checkpoint) if settings.checkpoint else default_checkpoint(workdir)
    model, spec, origin = load_checkpoint(checkpoint)
    labels = checkpoint_labels(model)
    eval_metrics = _evaluation_of(workdir, checkpoint)
    if labels != read_labels(workdir):
        raise TrainerError(f"{checkpoint} was trained on other breeds than {workdir / 'labels.json'} lists")
    samples = read_manifest(workdir)
    check_samples = (split_samples(samples, "val") + split_samples(samples, "test"))[: settings.check_photos]
    test_samples = split_samples(samples, "test")

    scratch = workdir / EXPORT_DIR
    scratch.mkdir(parents=True, exist_ok=True)
    fp32_path = export_onnx(model, spec.size, scratch / "model_fp32.onnx", settings.opset)
    graph = inspect_graph(fp32_path, settings.opset)

    check_pixels = load_pixels([s.path for s in check_samples], spec, "loading check photos")
    reference = torch_outputs(LogitsAndEmbedding(model, spec.size).eval(), check_pixels)
    exported = onnx_outputs(fp32_path, check_pixels, "checking ONNX fp32")
    fp32_check = compare_fp32(reference, exported)
    if fp32_check["top1_agreement"] < 1.0 or fp32_check["max_abs_logit_diff"] > FP32_TOLERANCE:
        raise CheckFailed(
            f"the ONNX export disagrees with PyTorch on {fp32_check['photos']} validation photos: top-1 "
            f"agreement {fp32_check['top1_agreement']:.2%}, max |logit diff| {fp32_check['max_abs_logit_diff']:.2e} "
            f"(tolerance {FP32_TOLERANCE:.0e}); no bundle was written"
        )

    ood = load_ood(workdir / EVAL_DIR / OOD_FILE)
    shipped = fp32_path
    int8_check = None
    shipped_figures = None
    if settings.int8:
        photos, seed = int8_calibration_photos(workdir, samples, settings.int8_calibration_photos)
        shipped, int8_check = quantise_int8(fp32_path, scratch, check_pixels, exported[0], photos, spec, seed)
        index = {label: i for i, label in enumerate(labels)}
        targets = np.array([index[s.label] for s in test_samples])
        test_paths = [s.path for s in test_samples]
        run_shipped = _runner(shipped, spec)
        fp32_test = _runner(fp32_path, spec)(test_paths, "test fp32")[0].argmax(1)
        int8_test = run_shipped(test_paths, "test int8")[0].argmax(1)
        fp32_scores = classification_scores(targets, fp32_test, len(labels))
        int8_scores = classification_scores(targets, int8_test, len(labels))
        int8_check |= {
            "top1_agreement_vs_fp32": float(np.mean(fp32_test == int8_test)),
            "test_photos": len(targets),
            "test_accuracy_fp32": fp32_scores["accuracy"],
            "test_accuracy_int8": int8_scores["accuracy"],
            "test_macro_f1_fp32": fp32_scores["macro_f1"],
            "test_macro_f1_int8": int8_scores["macro_f1"],
            "fp32_size_mb": fp32_path.stat().st_size / 1e6,
            "int8_size_mb": shipped.stat().st_size / 1e6,
        }
        if int8_check["top1_agreement_vs_fp32"] < settings.int8_min_agreement:
            raise CheckFailed(
                f"the int8 model agrees with fp32 on only {int8_check['top1_agreement_vs_fp32']:.2%} of test "
                f"photos (minimum {settings.int8_min_agreement:.0%}); export without --int8"
            )
        if ood is not None:
            val_logits, val_embeddings = run_shipped(
                [s.path for s in split_samples(samples, "val")], "validation int8"
            )
            # Its own threshold, so quantisation noise does not shift the share of flagged cats.
            ood = rethreshold(ood, val_embeddings, val_logits)
            int8_check["ood_threshold_int8"] = ood["threshold"]
        # The headline figures are the shipped model's own, read from the same int8 outputs.
        shipped_figures = measure_shipped(
            run_shipped,
            split_samples(samples, "val"),
            test_samples,
            labels,
            eval_metrics,
            ood,
            _summary_of(workdir),
        )

    precision = "int8" if settings.int8 else "fp32"
    metrics = bundle_metrics(eval_metrics, precision, shipped_figures) | {"export_check": fp32_check}
    baseline_path = workdir / "baseline" / "metrics.json"
    if baseline_path.is_file():
        metrics["baseline_test"] = json.loads(baseline_path.read_text())["test"]
    if int8_check:
        metrics["int8"] = int8_check
    bundle = write_bundle(
        out_dir,
        shipped,
        labels=labels,
        architecture=origin.get("architecture", type(model).__name__),
        preprocessing=spec,
        temperature=eval_metrics["calibration"]["temperature"],
        metrics=portable(metrics),
        provenance=provenance(workdir, checkpoint, origin, settings.command_line) | {"precision": precision},
        ood=ood,
        decision=bundle_decision(metrics),
    )
    record = {"bundle": str(bundle.path), "graph": graph, "fp32_check": fp32_check, "int8": int8_check}
    (scratch / "metrics.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return ExportResult(bundle=bundle, fp32_check=fp32_check, int8_check=int8_check, graph=graph)


def _evaluation_of(workdir: Path, checkpoint: Path) -> dict:
    path = workdir / EVAL_DIR / "metrics.json"
    if not path.is_file():
        raise TrainerError(f"{path} not found; run `python -m trainer evaluate {workdir}` before exporting")
    metrics = json.loads(path.read_text())
    if Path(metrics["checkpoint"]) != checkpoint.resolve():
        raise TrainerError(
            f"{path} evaluates {metrics['checkpoint']}, not {checkpoint}; run evaluate with --checkpoint {checkpoint}"
        )
    if "decision" not in metrics:
        # An evaluation from before the unsure threshold was chosen: the bundle would carry none.
        print(
            f"note: {path} records no unsure threshold; rerun evaluate so the bundle carries one",
            file=sys.stderr,
        )
    return metrics
