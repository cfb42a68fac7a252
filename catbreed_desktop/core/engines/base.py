"""The interface every inference engine offers, and the calibrated softmax they share.

An engine runs a bundle's ONNX model on an NCHW float32 batch. `run` returns the raw named
outputs (`logits`, plus `embedding` when the model has one); `predict` returns calibrated
probabilities, softmax(logits / temperature). `provider` names what really runs, after any silent
fallback inside the runtime has been detected. `check_outputs` holds every batch's outputs to the
bundle: a graph may declare 3 classes and compute 5, and only the real arrays tell.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from catbreed_desktop.core.bundle import EMBEDDING_NAME, LOGITS_NAME, ModelBundle
from catbreed_desktop.core.errors import CatBreedError


# Both are RuntimeErrors too: `create_engine` and the engine listing treat any RuntimeError from
# a GPU runtime as "this engine cannot run", and these are the ones with words.
class EngineUnavailable(CatBreedError, RuntimeError):
    """The requested engine cannot run here; the message says why and what to install or change."""


class ModelOutputError(CatBreedError, RuntimeError):
    """The model's outputs for a batch do not fit its bundle; the message names the bundle and the shapes."""


def check_outputs(outputs: Mapping[str, np.ndarray], bundle: ModelBundle, rows: int) -> dict[str, np.ndarray]:
    """`outputs` as a dict once logits are (rows, labels) and any embedding is (rows, D); else ModelOutputError."""
    logits = outputs.get(LOGITS_NAME)
    if logits is None:
        raise ModelOutputError(f"the model in {bundle.path} gave no {LOGITS_NAME!r} output")
    expected = (rows, bundle.num_labels)
    if np.shape(logits) != expected:
        raise ModelOutputError(
            f"the model in {bundle.path} gave {LOGITS_NAME} of shape {np.shape(logits)} for {rows} "
            f"photos, but its bundle.json lists {bundle.num_labels} labels, so {expected} was expected"
        )
    embedding = outputs.get(EMBEDDING_NAME)
    if embedding is not None and (np.ndim(embedding) != 2 or np.shape(embedding)[0] != rows):
        raise ModelOutputError(
            f"the model in {bundle.path} gave an {EMBEDDING_NAME} of shape {np.shape(embedding)} for "
            f"{rows} photos; ({rows}, size) was expected"
        )
    return dict(outputs)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, computed stably in float64, returned as float32."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    probabilities: np.ndarray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


class Engine(ABC):
    """One loaded model on one runtime."""

    provider: str = "unknown"

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        # Why faster engines were passed over when this one was picked automatically.
        self.fallback_notes: list[str] = []

    @property
    @abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """Names of the model outputs `run` returns."""

    @property
    def has_embedding(self) -> bool:
        return "embedding" in self.output_names

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name for an (N, 3, H, W) float32 batch."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (N, labels) for an (N, 3, H, W) float32 batch."""
        return softmax(self.run(batch)[LOGITS_NAME], self.bundle.temperature)

    def close(self) -> None:  # noqa: B027 - engines without native resources need nothing here
        """Release native resources (GPU memory); the engine cannot be used afterwards."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider} {self.bundle.path}>"


def check_batch(batch: np.ndarray, bundle: ModelBundle) -> np.ndarray:
    """The batch as contiguous float32 NCHW of the bundle's size, or a ValueError saying what is off."""
    array = np.ascontiguousarray(batch, dtype=np.float32)
    size = bundle.preprocessing.size
    if array.ndim != 4 or array.shape[1:] != (3, size, size) or array.shape[0] == 0:
        raise ValueError(f"expected a batch of shape (N, 3, {size}, {size}) with N >= 1, got {array.shape}")
    return array
