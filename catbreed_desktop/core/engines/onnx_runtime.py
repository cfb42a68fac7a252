"""ONNX Runtime engine on CUDA or CPU, with an explicit provider list and a check of what really runs.

ONNX Runtime quietly drops a requested provider it cannot start (no GPU, missing CUDA or cuDNN
libraries, or the CPU-only package) and runs on CPU. After the session starts we read
`session.get_providers()` and refuse to call a CPU session "CUDA".
"""

from __future__ import annotations

import warnings

import numpy as np

from catbreed_desktop.core.bundle import INPUT_NAME, BundleError, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, check_batch, check_outputs

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
PROVIDER_NAMES = {"cuda": "ONNX Runtime CUDA", "cpu": "ONNX Runtime CPU"}
# ORT's own log level 3 = errors only: its warnings about a missing provider are what we report.
_ORT_ERRORS_ONLY = 3


def cuda_provider_installed() -> bool:
    """True when the installed onnxruntime build offers CUDA (the onnxruntime-gpu package)."""
    import onnxruntime

    return CUDA_PROVIDER in onnxruntime.get_available_providers()


class OnnxRuntimeEngine(Engine):
    """A bundle's model in an ONNX Runtime session on `device` ("cuda" or "cpu")."""

    def __init__(self, bundle: ModelBundle, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(bundle)
        if device not in PROVIDER_NAMES:
            raise ValueError(f"unknown ONNX Runtime device {device!r}; use 'cuda' or 'cpu'")
        import onnxruntime

        if device == "cuda" and not cuda_provider_installed():
            raise EngineUnavailable(
                "ONNX Runtime CUDA is not available: the installed onnxruntime has no CUDA provider "
                "(install onnxruntime-gpu instead of onnxruntime: pip install 'catbreed-desktop[gpu]')"
            )
        options = onnxruntime.SessionOptions()
        options.log_severity_level = _ORT_ERRORS_ONLY
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # Idle ORT threads otherwise spin on the cores that the photo-decoding threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = [CPU_PROVIDER]
        if device == "cuda":
            providers = [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
        try:
            with warnings.catch_warnings():
                # A provider ORT cannot start is reported below, in our words, not as its warning.
                warnings.simplefilter("ignore", UserWarning)
                if device == "cuda":
                    onnxruntime.set_default_logger_severity(_ORT_ERRORS_ONLY)
                session = onnxruntime.InferenceSession(
                    str(bundle.model_path), sess_options=options, providers=providers
                )
        except Exception as error:  # ORT raises its own exception types without a common base
            if device == "cuda":
                raise EngineUnavailable(f"ONNX Runtime CUDA could not start: {error}") from None
            raise BundleError(f"ONNX Runtime cannot load {bundle.model_path}: {error}") from None

        active = session.get_providers()
        if device == "cuda" and (not active or active[0] != CUDA_PROVIDER):
            raise EngineUnavailable(
                "ONNX Runtime CUDA did not start: no CUDA GPU answered or the CUDA/cuDNN libraries are "
                f"missing, so ONNX Runtime fell back to {', '.join(active) or 'nothing'}"
            )
        self.session = session
        self.active_providers: tuple[str, ...] = tuple(active)
        self.provider = PROVIDER_NAMES[device]
        self._output_names = tuple(output.name for output in session.get_outputs())

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        array = check_batch(batch, self.bundle)
        outputs = self.session.run(None, {INPUT_NAME: array})
        # ORT returns what the graph computes even where that contradicts its declared shapes.
        return check_outputs(dict(zip(self._output_names, outputs, strict=True)), self.bundle, len(array))
