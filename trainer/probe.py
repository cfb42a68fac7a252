"""The linear probe on frozen features, shared by the baseline, label cleaning and `--probe-head`.

A standardised multinomial logistic regression with scikit-learn's objective
(C * summed cross-entropy + ||W||^2 / 2, the bias unpenalised), fitted with full-batch L-BFGS in
PyTorch: about four times faster than scikit-learn's solver on two cores, which matters for the
six fits label cleaning makes. The standardisation is folded into the weights, so a probe is one
linear map of the raw features, ready to become a classifier head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catbreed_desktop.core.engines.base import softmax

PROBE_C = 0.1  # what cleaning and --probe-head use; the baseline searches its own C on validation
PROBE_ITERATIONS = 300
ABSENT_LOGIT = -20.0  # a breed with no photo to fit on stays improbable


@dataclass(frozen=True)
class LinearProbe:
    """logits = features @ weight + bias, in the units of the raw features."""

    weight: np.ndarray  # (D, C)
    bias: np.ndarray  # (C,)

    def logits(self, features: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.asarray(features, dtype=np.float64) @ self.weight + self.bias
        return result

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.logits(features).argmax(axis=1))


def fit_probe(
    features: np.ndarray, targets: np.ndarray, classes: int, c: float = PROBE_C, seed: int = 83
) -> LinearProbe:
    """Fit the probe on (N, D) features and (N,) class indices in [0, classes)."""
    import torch
    from torch.nn import functional

    torch.manual_seed(seed)
    features = np.asarray(features, dtype=np.float64)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    inputs = torch.from_numpy(((features - mean) / scale).astype(np.float32))
    target_tensor = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    weight = torch.zeros(inputs.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=PROBE_ITERATIONS, history_size=20, line_search_fn="strong_wolfe"
    )
    present = torch.zeros(classes, dtype=torch.bool)
    present[target_tensor.unique()] = True

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (inputs @ weight + bias).masked_fill(~present, -1e4)
        loss = c * functional.cross_entropy(logits, target_tensor, reduction="sum") + 0.5 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    standard_weight = weight.detach().double().numpy()
    raw_weight = standard_weight / scale[:, None]
    raw_bias = bias.detach().double().numpy() - (mean / scale) @ standard_weight
    absent = ~present.numpy()
    raw_weight[:, absent] = 0.0
    raw_bias[absent] = ABSENT_LOGIT
    return LinearProbe(weight=raw_weight, bias=raw_bias)
