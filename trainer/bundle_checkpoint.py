"""`checkpoint-from-bundle`: an exported int8 bundle back as a checkpoint to train on.

A bundle keeps no training checkpoint (a GPU run's stays on the machine it ran on), yet its
graph holds every weight: the body's linear layers as int8 per output channel with their scales,
the rest and the head in float. This module reads them back into a transformers
`Dinov2ForImageClassification` with the bundle's breeds, so `train --base-model` can go on from a
shipped model, head included, instead of from the pretrained backbone.

The int8 weights come back as their dequantised values, and the position embeddings as the
graph's, already resized to the bundle's input size. The check runs the checkpoint and the
bundle on the same photos: the bundle also rounds its activations to int8, so the two agree
closely, not exactly: their embeddings must point the same way and their top breed must match
for nearly every photo.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle, load_bundle
from catbreed_desktop.core.photos import load_and_preprocess
from trainer.backbone_import import (
    add_check_photo_arguments,
    chosen_check_photos,
    dinov2_config,
    match_attention_names,
)
from trainer.errors import TrainerError

if TYPE_CHECKING:
    from onnx import ModelProto

BODY_PREFIX = "body.dinov2."
# The linear layers' biases, by module name in transformers 5 and in 4.x.
_LINEAR_BIAS = re.compile(
    r"^encoder\.layer\.\d+\.(attention\.(q_proj|k_proj|v_proj|o_proj|attention\.(query|key|value)|output\.dense)"
    r"|mlp\.fc1|mlp\.fc2)\.bias$"
)
REPORT_FILE = "from_bundle.json"
# The checkpoint's embeddings against the int8 graph's (which also rounds activations): cosine at least.
MIN_COSINE = 0.98
# Share of check photos whose top breed (the bundle's own head on both) must agree.
MIN_AGREEMENT = 0.9


class BundleCheckpointError(TrainerError):
    """A bundle whose weights cannot be read back, or a conversion that does not reproduce it."""


@dataclass(frozen=True)
class CheckpointReport:
    """What the conversion wrote and how closely the checkpoint follows the bundle."""

    bundle: str
    bundle_model_sha256: str
    out_dir: str
    photos_checked: int
    min_cosine: float
    top1_agreement: float


def body_state(model: ModelProto) -> tuple[dict[str, np.ndarray], int]:
    """`(Dinov2Model state dict as arrays, patch grid side)` from a bundle graph's initializers."""
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    state = {
        name.removeprefix(BODY_PREFIX): array
        for name, array in arrays.items()
        if name.startswith(BODY_PREFIX)
    }
    produced_by = {output: node for node in model.graph.node for output in node.output}
    for node in model.graph.node:
        # Every linear layer is MatMul(x, W) + bias, and only the bias keeps the module's name.
        names = [name.removeprefix(BODY_PREFIX) for name in node.input if name.startswith(BODY_PREFIX)]
        bias = next((name for name in names if _LINEAR_BIAS.match(name)), None)
        if node.op_type != "Add" or bias is None:
            continue
        matmul = next((produced_by.get(name) for name in node.input if name != BODY_PREFIX + bias), None)
        if matmul is None or matmul.op_type != "MatMul":
            continue
        # MatMul holds (in, out); nn.Linear (out, in).
        weight = _weight(matmul.input[1], arrays, produced_by).T
        if weight.shape[0] != state[bias].shape[0]:
            raise BundleCheckpointError(
                f"the weight before {bias} has {weight.shape[0]} outputs, its bias {state[bias].shape[0]}"
            )
        state[bias.removesuffix("bias") + "weight"] = weight
    hidden = state["embeddings.cls_token"].shape[-1]
    # Exported at another size than the backbone's, the position embeddings were resized once
    # and folded into an anonymous constant; at the same size they keep their name.
    resized = [
        a
        for name, a in arrays.items()
        if not name.startswith(BODY_PREFIX) and a.ndim == 3 and a.shape[0] == 1 and a.shape[2] == hidden
        and a.shape[1] > 1 and round((a.shape[1] - 1) ** 0.5) ** 2 == a.shape[1] - 1
    ]  # fmt: skip
    if len(resized) > 1 or (not resized and "embeddings.position_embeddings" not in state):
        raise BundleCheckpointError(f"expected one position embedding in the graph, found {len(resized)}")
    if resized:
        state["embeddings.position_embeddings"] = resized[0]
    positions = state["embeddings.position_embeddings"].shape[1]
    state.setdefault("embeddings.mask_token", np.zeros((1, hidden), dtype=np.float32))
    return state, round((positions - 1) ** 0.5)


def _weight(name: str, arrays: dict[str, np.ndarray], produced_by: dict[str, Any]) -> np.ndarray:
    """A MatMul's weight: a float initializer, or the dequantised int8 one behind a DequantizeLinear."""
    if name in arrays:
        return np.asarray(arrays[name], dtype=np.float32)
    node = produced_by.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        raise BundleCheckpointError(f"the weight {name} is neither stored nor dequantised from stored int8")
    quantised, scale = arrays[node.input[0]].astype(np.float32), arrays[node.input[1]].astype(np.float32)
    zero = arrays[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0.0
    axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 1)
    shape = [1] * quantised.ndim
    shape[axis] = -1
    result: np.ndarray = (quantised - np.reshape(zero, shape)) * np.reshape(scale, shape)
    return result


def checkpoint_from_bundle(bundle_dir: Path, out_dir: Path, check_photos: Sequence[Path]) -> CheckpointReport:
    """Write the bundle as a checkpoint `train --base-model` loads to `out_dir`; check it first."""
    import onnx
    import torch
    from transformers import Dinov2ForImageClassification

    from trainer.head_refit import read_head
    from trainer.modeling import PREPROCESSING_FILE

    if not check_photos:
        raise BundleCheckpointError("the check needs at least one real photo")
    bundle = load_bundle(bundle_dir)
    if bundle.architecture != "Dinov2ForImageClassification":
        raise BundleCheckpointError(
            f"{bundle_dir} holds a {bundle.architecture}; only DINOv2 classifiers can be read back"
        )
    arrays, grid = body_state(onnx.load(str(bundle.model_path)))
    labels = dict(enumerate(bundle.labels))
    config = dinov2_config(
        arrays, grid, id2label=labels, label2id={label: index for index, label in labels.items()}
    )
    model = Dinov2ForImageClassification(config)
    head = read_head(bundle.model_path)
    state = {f"dinov2.{name}": torch.from_numpy(np.array(a, dtype=np.float32)) for name, a in arrays.items()}
    state["classifier.weight"] = torch.from_numpy(head.weights.astype(np.float32))
    state["classifier.bias"] = torch.from_numpy(head.bias.astype(np.float32))
    state = match_attention_names(state, set(model.state_dict()))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleCheckpointError(
            f"weights do not fit Dinov2ForImageClassification: missing {missing}, unexpected {unexpected}"
        )
    model.eval()
    report = _check(bundle, model, check_photos, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    (out_dir / PREPROCESSING_FILE).write_text(json.dumps(bundle.preprocessing.to_dict(), indent=2) + "\n")
    (out_dir / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _check(bundle: ModelBundle, model: Any, photos: Sequence[Path], out_dir: Path) -> CheckpointReport:
    import torch

    from trainer.onnx_run import onnx_session

    pixels = np.stack([load_and_preprocess(p, bundle.preprocessing) for p in photos]).astype(np.float32)
    logits, expected = onnx_session(bundle.model_path).run(
        [LOGITS_NAME, EMBEDDING_NAME], {INPUT_NAME: pixels}
    )
    with torch.no_grad():
        hidden = model.dinov2(pixel_values=torch.from_numpy(pixels)).last_hidden_state
        # The classifier's input, which the bundle names `embedding`: class token, mean patch token.
        embedding = torch.cat([hidden[:, 0], hidden[:, 1:].mean(dim=1)], dim=1)
        actual_logits = model.classifier(embedding).numpy()
    actual = embedding.numpy()
    cosine = np.sum(actual * expected, axis=1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    )
    agreement = float(np.mean(actual_logits.argmax(1) == logits.argmax(1)))
    report = CheckpointReport(
        bundle=str(bundle.path),
        bundle_model_sha256=bundle.model_sha256,
        out_dir=str(out_dir),
        photos_checked=len(photos),
        min_cosine=float(cosine.min()),
        top1_agreement=agreement,
    )
    if report.min_cosine < MIN_COSINE or agreement < MIN_AGREEMENT:
        raise BundleCheckpointError(
            f"the converted body does not follow the bundle: cosine down to {report.min_cosine:.3f} "
            f"(at least {MIN_COSINE}), top breed agreement {agreement:.0%} (at least {MIN_AGREEMENT:.0%}); "
            "nothing was written"
        )
    return report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "checkpoint-from-bundle",
        help="an exported bundle back as a checkpoint for `train --base-model` to go on from",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", type=Path, required=True, help="the exported bundle folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the Hugging Face checkpoint")
    add_check_photo_arguments(parser, "check", default_count=16)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    photos = chosen_check_photos(args, "check", BundleCheckpointError)
    report = checkpoint_from_bundle(args.bundle, args.out, photos)
    print(
        f"wrote {args.bundle} as a checkpoint to {args.out}\n"
        f"on {report.photos_checked} real photos: embedding cosine at least {report.min_cosine:.4f}, "
        f"same top breed {report.top1_agreement:.0%}"
    )
    return 0
