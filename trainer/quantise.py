"""Static int8 quantisation of an exported fp32 graph: calibration photos and the QDQ graph, checked.

Scales are constants fixed by MinMax calibration on training photos, so a photo's outputs do not
depend on the photos batched with it; only the linear layers' MatMuls are quantised.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catbreed_desktop.core.bundle import INPUT_NAME
from catbreed_desktop.core.photos import Preprocessing, load_and_preprocess
from trainer.dataset import DEFAULT_SEED, SUMMARY_FILE, Sample, split_samples
from trainer.errors import TrainerError
from trainer.onnx_run import batch_dependence, onnx_outputs
from trainer.progress import manual_bar

# int8 activation ranges: training photos drawn for calibration, and how many go through at once.
INT8_CALIBRATION_PHOTOS = 256
CALIBRATION_BATCH = 8


def int8_calibration_photos(workdir: Path, samples: list[Sample], count: int) -> tuple[list[Path], int]:
    """`count` training photos (all of them if fewer) drawn with the split's seed, and that seed.

    Training photos, so that no validation or test photo the int8 model is then measured on has
    shaped its activation ranges; drawn from the path-sorted split, so the draw depends only on
    the manifest's content and the seed that `prepare` recorded in summary.json.
    """
    summary_path = workdir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    seed = int(summary.get("seed", DEFAULT_SEED))
    train = sorted((s.path for s in split_samples(samples, "train")), key=str)
    if not train:
        raise TrainerError(f"{workdir} has no training photos to calibrate the int8 activations on")
    return random.Random(seed).sample(train, min(count, len(train))), seed


def quantise_int8(
    fp32_path: Path,
    out_dir: Path,
    check_pixels: np.ndarray,
    fp32_logits: np.ndarray,
    calibration: Sequence[Path],
    spec: Preprocessing,
    calibration_seed: int | None = None,
) -> tuple[Path, dict]:
    """Static QDQ int8: weights per channel, activations on scales calibrated on `calibration`.

    Dynamic quantisation took each activation's scale from the whole batch, so a photo's
    probabilities moved with its batch companions (0.398 in a batch of 8, 0.486 alone). Here every
    scale is a constant fixed by MinMax calibration on `calibration` photos (preprocessed as the
    app does), so a photo's outputs are the same alone or in any batch; the export measures that.

    Only MatMuls with a constant weight (the linear layers: attention projections and MLP) are
    quantised, with float outputs, so ONNX Runtime fuses each QuantizeLinear -> DequantizeLinear
    -> MatMul into one MatMulIntegerToFloat; LayerNorm, Softmax, GELU, the attention MatMuls
    (both operands activations), the patch Conv and a head the pre-processing fused into a Gemm
    stay float, where int8 would cost accuracy and win little time.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    source = out_dir / "model_fp32_prepared.onnx"
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        # Shape inference and graph clean-up first, as ONNX Runtime advises for quantisation.
        quant_pre_process(str(fp32_path), str(source), skip_symbolic_shape=False)
    except Exception as error:  # pre-processing is an optimisation; quantise the plain export instead
        print(f"note: quantisation pre-processing skipped ({error})", file=sys.stderr)
        source = fp32_path
    source, linear = _linear_matmuls(source, out_dir)

    class Photos(CalibrationDataReader):
        """Calibration batches, decoded one batch at a time as ONNX Runtime asks for them."""

        def __init__(self) -> None:
            self.batches = [
                calibration[i : i + CALIBRATION_BATCH] for i in range(0, len(calibration), CALIBRATION_BATCH)
            ]
            self.progress = manual_bar(len(calibration), "calibrating int8", unit="photo")
            self.set_range(0, len(self.batches))

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pending = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            paths = next(self.pending, None)
            if paths is None:
                return None
            self.progress.update(len(paths))
            return {INPUT_NAME: np.stack([load_and_preprocess(p, spec) for p in paths])}

    path = out_dir / "model_int8_static.onnx"
    reader = Photos()
    quantize_static(
        str(source),
        str(path),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=linear,
        per_channel=True,
        # uint8 activations with int8 weights (U8S8) is what ONNX Runtime's x86 int8 GEMMs run;
        # int8 activations left half the MatMuls unfused (float MatMul behind DequantizeLinear).
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        # MinMax agreed best with fp32 on 300 Oxford cats (top-1 99.7 %): Percentile (99.999)
        # clips the few huge activations ViTs rely on (99.0 %), Entropy was no better (99.3 %)
        # and took twice as long.
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            # A MatMul's output rounded to int8 would only add error before the float bias Add.
            "OpTypesToExcludeOutputQuantization": ["MatMul"],
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # weights are (in, out): a scale per output
            # Ranges are merged batch by batch; by default every batch's activations of every
            # layer are held at once (gigabytes for a few hundred photos).
            "CalibStridedMinMax": 1,
        },
    )
    reader.progress.close()

    logits, _ = onnx_outputs(path, check_pixels, "checking int8")
    return path, {
        "quantisation": (
            f"static QDQ: QInt8 per-channel weights, QUInt8 activations calibrated by MinMax on "
            f"{len(calibration)} photos, {len(linear)} MatMuls"
        ),
        "scheme": "static QDQ",
        "weights": "QInt8, symmetric, per output channel",
        "activations": "QUInt8, per tensor, constant scales",
        "quantised_nodes": {"MatMul": len(linear)},
        "calibration": {
            "method": "MinMax",
            "photos": len(calibration),
            "split": "train",
            "seed": calibration_seed,
        },
        "top1_agreement_vs_fp32_check_photos": float(np.mean(logits.argmax(1) == fp32_logits.argmax(1))),
        "max_abs_logit_diff_vs_fp32": float(np.abs(logits - fp32_logits).max()),
        "max_abs_logit_diff_alone_vs_batched": batch_dependence(path, check_pixels, logits),
    }


def _linear_matmuls(path: Path, out_dir: Path) -> tuple[Path, list[str]]:
    """The model to quantise and the names of its MatMuls whose second input is a constant: the
    linear layers.

    A MatMul reading a graph output is left out: quantize_static would make that output the
    rounded copy of its QuantizeLinear -> DequantizeLinear pair, and the embedding the OOD
    detector reads must stay float. quantize_static picks nodes by name, so when some node has
    none, a copy with every node named is written to `out_dir` and quantised instead.
    """
    import onnx

    model = onnx.load(str(path))
    constants = {tensor.name for tensor in model.graph.initializer}
    taken = {node.name for node in model.graph.node if node.name}
    renamed = False
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            renamed = True
    if renamed:
        path = out_dir / "model_fp32_named.onnx"
        onnx.save(model, str(path))
    outputs = {output.name for output in model.graph.output}
    return path, [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in constants and node.input[0] not in outputs
    ]
