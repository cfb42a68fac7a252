"""The Triton contract: what `catbreed serve`, the trainer's model repository and `TritonEngine` agree on.

The model's name, and the model config parameters (strings, as Triton's are) that tell a client
which labels the outputs are in, the input size and the model's sha256, so that the client can
refuse a server running another model. Imports neither pytriton nor tritonclient.
"""

from __future__ import annotations

import json

from catbreed_desktop.core.bundle import ModelBundle
from catbreed_desktop.core.ood import OodDetector

MODEL_NAME = "catbreed"
# The model config parameters a client checks (`model_parameters`). Triton ignores keys it does
# not know, on pytriton's Python backend and the ONNX Runtime backend alike.
PARAM_VERSION = "catbreed_metadata_version"
PARAM_LABELS = "catbreed_labels"
PARAM_INPUT_SIZE = "catbreed_input_size"
PARAM_SHA256 = "catbreed_model_sha256"
PARAM_EMBEDDING = "catbreed_embedding_size"
METADATA_VERSION = "1"


def embedding_size(bundle: ModelBundle) -> int | None:
    """The width of the bundle's embedding output when its not-a-cat detector needs it, else None."""
    if bundle.ood is None:
        return None
    return OodDetector.from_config(bundle.ood, bundle.num_labels).embedding_size


def model_parameters(bundle: ModelBundle) -> dict[str, str]:
    """The model config parameters that describe `bundle` to a client; Triton parameters are strings."""
    parameters = {
        PARAM_VERSION: METADATA_VERSION,
        PARAM_LABELS: json.dumps(list(bundle.labels), ensure_ascii=False),
        PARAM_INPUT_SIZE: str(bundle.preprocessing.size),
        PARAM_SHA256: bundle.model_sha256,
    }
    size = embedding_size(bundle)
    if size is not None:
        parameters[PARAM_EMBEDDING] = str(size)
    return parameters
