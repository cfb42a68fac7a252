"""Running an exported ONNX graph on the CPU for the trainer's checks: one session, outputs in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME
from trainer.progress import bar

# Photos per run when checking a graph against PyTorch or another graph.
CHECK_BATCH = 16


def onnx_session(path: Path):
    from catbreed_desktop.core.engines.onnx_runtime import import_onnxruntime

    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(path: Path, pixels: np.ndarray, description: str) -> tuple[np.ndarray, np.ndarray]:
    session = onnx_session(path)
    logits, embeddings = [], []
    starts = range(0, len(pixels), CHECK_BATCH)
    for start in bar(starts, description, total=len(starts), unit="batch"):
        out = session.run([LOGITS_NAME, EMBEDDING_NAME], {INPUT_NAME: pixels[start : start + CHECK_BATCH]})
        logits.append(out[0])
        embeddings.append(out[1])
    return np.concatenate(logits), np.concatenate(embeddings)


def batch_dependence(path: Path, pixels: np.ndarray, batched_logits: np.ndarray) -> float:
    """Largest |logit difference| between each photo run alone and run in batches (`batched_logits`)."""
    session = onnx_session(path)
    alone = np.concatenate(
        [session.run([LOGITS_NAME], {INPUT_NAME: pixels[i : i + 1]})[0] for i in range(len(pixels))]
    )
    return float(np.abs(alone - batched_logits).max())
