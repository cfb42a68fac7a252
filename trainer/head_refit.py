"""`refit-head`: a bundle's last layer fitted again on its own embeddings, without its checkpoint.

A fine-tuned model ends in one float linear layer (an ONNX Gemm) from its `embedding` output to
its logits, and static int8 quantisation leaves that layer in float. So the head of an exported
bundle can be refitted exactly, on a CPU, in minutes: the shipped model runs once over the
training, validation and test photos, and a multinomial logistic regression is fitted on the
training embeddings for every choice of source weights, class weighting (breeds balanced, as
`train` balances them by default, or every photo weighing the same) and regularisation tried,
photos `clean` flagged left out as `train` leaves them out. The choice with the best
mean of each source's validation macro F1 (the rule `train --select-by source-mean` follows,
Petfinder-Gano's noisy breeds left out) wins, so neither the largest nor the noisiest source
decides.

Everything that reads the logits is then set again on the validation photos, as `evaluate` and
`export` set it: the temperature, the not-a-cat detector's energy scale and threshold, and the
"unsure" threshold by the rule the bundle recorded. The headline figures are measured again on
the test photos. The new bundle's model is the old graph with the two head tensors replaced,
checked to give the logits the fit predicts and the same answer for a photo alone as in a batch,
and is written through `write_bundle`, which proves the bundle loads. The old head's figures from
the same run are kept beside the new ones; the source bundle's export and int8 checks, which its
old head answered, are kept in the record, not as the new bundle's figures.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catbreed_desktop.core.bundle import (
    EMBEDDING_NAME,
    LOGITS_NAME,
    MODEL_FILE,
    ModelBundle,
    load_bundle,
    write_bundle,
)
from catbreed_desktop.core.files import atomic_write
from catbreed_desktop.core.ood import energy_scores
from trainer.breakdown import noisy_breeds_by_source
from trainer.calibration import fit_temperature
from trainer.dataset import DatasetError, Sample, read_labels, read_manifest, read_summary, split_samples
from trainer.errors import TrainerError
from trainer.export import _runner, load_pixels
from trainer.metrics import source_mean_scores
from trainer.not_a_cat import rethreshold, spread
from trainer.onnx_run import batch_dependence, onnx_outputs
from trainer.shipped import FP32_KEY, MODEL_FIGURES, bundle_decision, measure_shipped
from trainer.weighting import CLASS_WEIGHTINGS, balanced_breed_weights

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

REFIT_DIR = "head_refit"
DEFAULT_REGULARISATION = (0.03, 0.1, 0.3)
# The patched graph must give the fitted head's logits; int8 bodies differ between runs by less.
LOGIT_TOLERANCE = 1e-3
CHECK_PHOTOS = 32
# A source bundle's records whose figures its old head gave.
HEAD_DEPENDENT = ("int8", "export_check")
# What an int8 record says about the quantised body, which a new head leaves as it was.
INT8_BODY_KEYS = (
    "quantisation",
    "scheme",
    "weights",
    "activations",
    "quantised_nodes",
    "calibration",
    "fp32_size_mb",
    "int8_size_mb",
)


class HeadRefitError(TrainerError):
    """A bundle whose head cannot be refitted, or photos that do not fit it, said in words."""


@dataclass(frozen=True)
class Head:
    """logits = embeddings @ weights.T + bias; weights (breeds, embedding size)."""

    weights: np.ndarray
    bias: np.ndarray

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        result: np.ndarray = (np.asarray(embeddings, dtype=np.float64) @ self.weights.T + self.bias).astype(
            np.float32
        )
        return result


@dataclass(frozen=True)
class Outputs:
    """The shipped model's embeddings of one split's photos, in manifest order."""

    samples: list[Sample]
    embeddings: np.ndarray
    targets: np.ndarray

    @property
    def sources(self) -> list[str]:
        return [s.source for s in self.samples]


# ----------------------------------------------------------------------------------- the graph


def _head_node(model: ModelProto) -> tuple[NodeProto, dict[str, TensorProto], bool]:
    """(the Gemm node making the logits, the graph's initializers by name, whether it stores the
    weights transposed), or `HeadRefitError` when the logits are not a float linear layer on the
    embedding."""
    from onnx import TensorProto, helper

    graph = model.graph
    producers = [node for node in graph.node if LOGITS_NAME in node.output]
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    node = producers[0] if producers else None
    if (
        node is None
        or node.op_type != "Gemm"
        or len(node.input) != 3
        or node.input[0] != EMBEDDING_NAME
        or any(initializers.get(name) is None for name in node.input[1:])
        or any(initializers[name].data_type != TensorProto.FLOAT for name in node.input[1:])
    ):
        raise HeadRefitError(
            f"the model's {LOGITS_NAME!r} output is not a float Gemm on its {EMBEDDING_NAME!r} output "
            "with stored weights, so its head cannot be refitted"
        )
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if (
        attributes.get("alpha", 1.0) != 1.0
        or attributes.get("beta", 1.0) != 1.0
        or attributes.get("transA", 0)
    ):
        raise HeadRefitError(
            "the model's head scales or transposes its input (alpha, beta, transA); not refitted"
        )
    return node, initializers, bool(attributes.get("transB", 0))


def read_head(model_path: Path) -> Head:
    """The bundle model's head as it is."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    node, initializers, transposed = _head_node(model)
    weights = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
    return Head(weights if transposed else weights.T, bias)


def write_head(model_path: Path, head: Head, out_path: Path) -> Path:
    """A copy of the model at `model_path` with `head` in place of its own, at `out_path`; the
    new head may answer fewer breeds, never read another embedding."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    node, initializers, transposed = _head_node(model)
    weight_name, bias_name = node.input[1], node.input[2]
    old = numpy_helper.to_array(initializers[weight_name])
    embedding_size = old.shape[1] if transposed else old.shape[0]
    if head.weights.shape[1] != embedding_size or head.bias.shape != head.weights.shape[:1]:
        raise HeadRefitError(
            f"the new head maps {head.weights.shape[1]} numbers to {head.bias.shape[0]} breeds; "
            f"the model's embedding has {embedding_size}"
        )
    weights = head.weights if transposed else head.weights.T
    for name, values in ((weight_name, weights), (bias_name, head.bias)):
        initializers[name].CopyFrom(
            numpy_helper.from_array(np.ascontiguousarray(values, dtype=np.float32), name)
        )
    breeds = model.graph.output[0].type.tensor_type.shape.dim[1]
    if breeds.HasField("dim_value"):
        breeds.dim_value = len(head.bias)
    onnx.save(model, str(out_path))
    return out_path


# --------------------------------------------------------------------------------- the outputs


def split_outputs(
    workdir: Path, bundle: ModelBundle, samples: list[Sample], description: str, labels: Sequence[str]
) -> Outputs:
    """The bundle's embeddings of these photos. Every photo this model ever ran over for the work
    folder is kept in WORKDIR/head_refit (the model over all photos is an hour on two cores), so
    only photos not run before are run, and cleaning again or a second refit costs nothing."""
    index = {label: i for i, label in enumerate(labels)}
    cache = workdir / REFIT_DIR / f"{bundle.model_sha256[:16]}.npz"
    paths: list[str] = []
    embeddings = np.zeros((0, 0), dtype=np.float32)
    if cache.is_file():
        with np.load(cache) as stored:
            paths, embeddings = stored["paths"].tolist(), stored["embeddings"]
    known = set(paths)
    missing = [s.path for s in samples if str(s.path) not in known]
    if missing:
        _, new = _runner(bundle.model_path, bundle.preprocessing)(missing, description)
        embeddings = np.concatenate([embeddings, new]) if paths else new
        paths = paths + [str(path) for path in missing]
        cache.parent.mkdir(parents=True, exist_ok=True)
        kept_paths, kept = np.array(paths), embeddings
        atomic_write(cache, lambda stream: np.savez(stream, paths=kept_paths, embeddings=kept))
    row_of = {path: row for row, path in enumerate(paths)}
    return Outputs(
        samples=samples,
        embeddings=np.asarray(embeddings[[row_of[str(s.path)] for s in samples]], dtype=np.float32),
        targets=np.array([index[s.label] for s in samples], dtype=np.int64),
    )


# ------------------------------------------------------------------------------------- the fit


def photo_weights(
    targets: np.ndarray,
    sources: Sequence[str],
    source_weights: Mapping[str, float],
    breeds: int,
    class_weighting: str = "balanced",
) -> np.ndarray:
    """Each training photo's weight: its source's weight (1 unless named), times, when breeds are
    balanced, the breed weight `train`'s balanced class weighting gives it, so every breed has the
    same total."""
    if class_weighting not in CLASS_WEIGHTINGS:
        raise HeadRefitError(
            f"class weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, not {class_weighting!r}"
        )
    weights = np.array([source_weights.get(source, 1.0) for source in sources], dtype=np.float64)
    if class_weighting == "none":
        return weights
    result: np.ndarray = weights * balanced_breed_weights(targets, breeds, weights)[targets]
    return result


def fit_head(
    train: Outputs,
    breeds: int,
    source_weights: Mapping[str, float],
    regularisation: float,
    class_weighting: str = "balanced",
) -> Head:
    """A multinomial logistic regression from the training embeddings to the breeds."""
    from sklearn.linear_model import LogisticRegression

    weights = photo_weights(train.targets, train.sources, source_weights, breeds, class_weighting)
    kept = weights > 0
    missing = sorted(set(range(breeds)) - set(train.targets[kept].tolist()))
    if missing:
        raise HeadRefitError(
            f"{len(missing)} breeds have no training photo to fit (breed indices {missing[:5]})"
        )
    model = LogisticRegression(C=regularisation, max_iter=2000)
    model.fit(train.embeddings[kept], train.targets[kept], sample_weight=weights[kept])
    weights, bias = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    if breeds == 2:
        # scikit-learn keeps one row for two classes (the second's log-odds); half of it each way
        # gives the same probabilities under a softmax.
        weights, bias = np.vstack([-weights / 2, weights / 2]), np.concatenate([-bias / 2, bias / 2])
    return Head(weights, bias)


def score(head: Head, outputs: Outputs, labels: list[str], noisy: Mapping[str, set[str]]) -> dict:
    """Each source's macro F1 (its noisy breeds left out) and their mean."""
    predictions = head.logits(outputs.embeddings).argmax(axis=1)
    return source_mean_scores(
        outputs.targets.tolist(), predictions.tolist(), outputs.sources, labels, dict(noisy)
    )


def choices(
    source_weights: Mapping[str, Sequence[float]],
    regularisation: Sequence[float],
    class_weightings: Sequence[str] = ("balanced",),
) -> list[dict]:
    """Every combination to try: {"source_weights": {...}, "class_weighting": name, "regularisation": C}."""
    names = sorted(source_weights)
    weights = itertools.product(*(source_weights[name] for name in names))
    return [
        {
            "source_weights": dict(zip(names, values, strict=True)),
            "class_weighting": weighting,
            "regularisation": float(strength),
        }
        for values, weighting, strength in itertools.product(weights, class_weightings, regularisation)
    ]


# ------------------------------------------------------------------------------------- the run


def refit_head(
    workdir: Path,
    bundle_dir: Path,
    out_dir: Path,
    source_weights: Mapping[str, Sequence[float]] | None = None,
    regularisation: Sequence[float] = DEFAULT_REGULARISATION,
    command_line: str = "",
    class_weightings: Sequence[str] = ("balanced",),
) -> dict:
    """Write the bundle with a refitted head to `out_dir`; return the record of what was tried."""
    bundle = load_bundle(bundle_dir)
    # The work folder's breeds, in its order: the bundle's, or some of them for a variant that
    # answers fewer breeds (the old head is then scored choosing among those breeds alone).
    labels = read_labels(workdir)
    unknown = [label for label in labels if label not in bundle.labels]
    if unknown:
        raise DatasetError(
            f"{workdir} holds breeds the bundle in {bundle_dir} does not know: {', '.join(unknown[:5])}"
        )
    rows = [list(bundle.labels).index(label) for label in labels]
    bundle_head = read_head(bundle.model_path)
    old_head = Head(bundle_head.weights[rows], bundle_head.bias[rows])
    samples = read_manifest(workdir)
    if out_dir.resolve() == bundle.path.resolve():
        raise HeadRefitError(
            "write the refitted bundle to another folder; the bundle it comes from stays as it is"
        )
    summary = read_summary(workdir)
    noisy = {name: set(breeds) for name, breeds in noisy_breeds_by_source(summary).items()}
    train = split_outputs(
        workdir, bundle, [s for s in split_samples(samples, "train") if not s.flagged], "train", labels
    )
    val = split_outputs(workdir, bundle, split_samples(samples, "val"), "val", labels)
    test = split_outputs(workdir, bundle, split_samples(samples, "test"), "test", labels)

    tried = []
    best: tuple[float, Head, dict] | None = None
    for choice in choices(source_weights or {}, regularisation, class_weightings):
        head = fit_head(
            train, len(labels), choice["source_weights"], choice["regularisation"], choice["class_weighting"]
        )
        row = choice | {"validation": score(head, val, labels, noisy)}
        tried.append(row)
        print(
            f"  {choice}: validation mean macro F1 {row['validation']['source_mean_macro_f1']:.4f}",
            flush=True,
        )
        if best is None or row["validation"]["source_mean_macro_f1"] > best[0]:
            best = (row["validation"]["source_mean_macro_f1"], head, row)
    if best is None:
        raise HeadRefitError("no choice of source weights, class weighting and regularisation to try")
    _, head, chosen = best

    with tempfile.TemporaryDirectory() as scratch:
        model_path = write_head(bundle.model_path, head, Path(scratch) / MODEL_FILE)
        agreement = _check_patched_model(model_path, bundle, head, val)
        val_logits, test_logits = head.logits(val.embeddings), head.logits(test.embeddings)
        temperature = fit_temperature(val_logits, val.targets)
        ood = _detector_for(bundle.ood, rows, val.embeddings, val_logits)
        rule = dict(bundle.metrics.get("decision") or {})
        evaluation = {"calibration": {"temperature": temperature, "fitted_on": "val"}, "decision": rule}
        outputs = {
            tuple(s.path for s in val.samples): (val_logits, val.embeddings),
            tuple(s.path for s in test.samples): (test_logits, test.embeddings),
        }

        def run(paths: list[Path], _description: str) -> tuple[np.ndarray, np.ndarray]:
            return outputs[tuple(paths)]

        figures = measure_shipped(run, val.samples, test.samples, labels, evaluation, ood, summary)
        record = {
            "made_by": "python -m trainer refit-head",
            "command_line": command_line,
            "from_bundle_model_sha256": bundle.model_sha256,
            "training_photos": len(train.samples),
            "flagged_photos_left_out": len(split_samples(samples, "train")) - len(train.samples),
            "selected_by": "mean of each source's validation macro F1 (noisy breeds left out)",
            "tried": tried,
            "chosen": {k: chosen[k] for k in ("source_weights", "class_weighting", "regularisation")},
            "old_head": {
                "validation": score(old_head, val, labels, noisy),
                "test": score(old_head, test, labels, noisy),
            },
            "new_head": {"validation": chosen["validation"], "test": score(head, test, labels, noisy)},
            "patched_model_check": agreement,
            # Measured with the old head: kept for the record, not as this bundle's figures.
            "from_bundle_metrics": {k: bundle.metrics[k] for k in HEAD_DEPENDENT if k in bundle.metrics},
        }
        metrics = (
            _head_free_metrics(bundle.metrics, agreement)
            | figures
            | {
                "measured_with": "the shipped ONNX model under ONNX Runtime, its head refitted on its own embeddings",
                "head_refit": record,
            }
        )
        write_bundle(
            out_dir,
            model_path,
            labels=labels,
            architecture=bundle.architecture,
            preprocessing=bundle.preprocessing,
            temperature=temperature,
            metrics=metrics,
            provenance=dict(bundle.provenance)
            | {
                "head_refit": {
                    k: record[k] for k in ("made_by", "command_line", "from_bundle_model_sha256", "chosen")
                }
            },
            ood=ood,
            decision=bundle_decision(metrics),
        )
    return record


def _check_patched_model(model_path: Path, bundle: ModelBundle, head: Head, val: Outputs) -> dict:
    """Run the patched graph on a few validation photos: its logits must be the fitted head's,
    and each photo's answer the same alone as in a batch."""
    photos = val.samples[:CHECK_PHOTOS]
    if not photos:
        return {"photos": 0, "max_abs_logit_diff": 0.0, "max_abs_logit_diff_alone_vs_batched": 0.0}
    pixels = load_pixels([s.path for s in photos], bundle.preprocessing, "checking the new head")
    logits, embeddings = onnx_outputs(model_path, pixels, "checking the new head")
    difference = float(np.abs(logits - head.logits(embeddings)).max())
    if difference > LOGIT_TOLERANCE:
        raise HeadRefitError(
            f"the model with the new head gives logits {difference:.2e} away from the fitted head's "
            f"(tolerance {LOGIT_TOLERANCE:.0e}); no bundle was written"
        )
    return {
        "photos": len(photos),
        "max_abs_logit_diff": difference,
        "max_abs_logit_diff_alone_vs_batched": batch_dependence(model_path, pixels, logits),
    }


def _head_free_metrics(metrics: Mapping, check: Mapping) -> dict:
    """The source bundle's metrics that still describe the refitted one: not the figures its old
    head gave (`MODEL_FIGURES`, the export and int8 checks' answers), only how the body was made,
    with the batch independence measured again on the patched graph."""
    kept = {k: v for k, v in metrics.items() if k not in (*MODEL_FIGURES, FP32_KEY, *HEAD_DEPENDENT)}
    if "int8" in metrics:
        kept["int8"] = {k: v for k, v in metrics["int8"].items() if k in INT8_BODY_KEYS} | {
            "max_abs_logit_diff_alone_vs_batched": check["max_abs_logit_diff_alone_vs_batched"],
            "batch_check_photos": check["photos"],
        }
    return kept


def _detector_for(
    detector: Mapping | None, rows: Sequence[int], val_embeddings: np.ndarray, val_logits: np.ndarray
) -> dict | None:
    """The not-a-cat detector of the breeds at `rows`, with every part that reads the logits set
    again on validation."""
    if detector is None:
        return None
    updated = dict(detector) | {"means": np.asarray(detector["means"])[list(rows)]}
    if "energy_scale" in updated:
        updated["energy_scale"] = spread(energy_scores(val_logits))
    return rethreshold(updated, val_embeddings, val_logits)
