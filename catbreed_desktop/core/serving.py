"""`catbreed serve`: a model bundle on NVIDIA Triton Inference Server, through nvidia-pytriton.

pytriton ships the `tritonserver` binary and binds a Python function to it as a model: here the
bundle's own engine (`create_engine`, CPU or GPU), behind Triton's dynamic batching, over HTTP and
gRPC. Preprocessing stays with the client, as for every engine, so the server takes the same
(N, 3, S, S) float32 batch an engine does.

The model's config carries what a client must check before trusting the answers
(`model_parameters`): the labels in output order, the input size and the model's sha256. The
repository `python -m trainer triton-repo` writes for a full Triton deployment carries the same
parameters, so `TritonEngine` checks either kind of server the same way.

pytriton needs numpy < 2 (the `serve` extra pins it), so it lives in an environment of its own;
only this module imports it, and only inside `serve`.
"""

from __future__ import annotations

import json
import logging
import os
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable
from catbreed_desktop.core.install_hints import new_environment_command
from catbreed_desktop.core.ood import OodDetector

log = logging.getLogger(__name__)

MODEL_NAME = "catbreed"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_MAX_BATCH = 32
# How long Triton may hold a request to fill a batch: short, since one photo costs ~10 ms on a CPU.
MAX_QUEUE_DELAY_US = 2_000
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


@dataclass(frozen=True)
class ServeOptions:
    """Where and how `serve` listens; ports of 0 are not allowed (Triton needs them up front)."""

    host: str = DEFAULT_HOST
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    max_batch: int = DEFAULT_MAX_BATCH
    model_name: str = MODEL_NAME
    log_verbose: int = 0


def python_library_path() -> str:
    """LD_LIBRARY_PATH with the running interpreter's library folder first.

    Triton's Python-backend stub links libpython3.X.so.1.0; without this it may load the system's
    Python of the same minor version (Debian's 3.11.2 under a pyenv 3.11.7) and fail or misbehave.
    """
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    parts = [libdir, *(part for part in current.split(":") if part and part != libdir)]
    return ":".join(part for part in parts if part)


def make_infer_function(engine: Engine) -> Callable[..., dict[str, np.ndarray]]:
    """The batched function Triton calls: one stacked (N, 3, S, S) batch in, the engine's outputs out.

    Triton has already checked the name, dtype and per-photo shape against the config and the
    batch against max_batch_size; the engine checks again and gives a ValueError, which pytriton
    returns as an error reply, so a bad request never stops the server.
    """
    outputs = [LOGITS_NAME] + ([EMBEDDING_NAME] if embedding_size(engine.bundle) is not None else [])

    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        batch = inputs[INPUT_NAME]
        if not np.isfinite(batch).all():
            raise ValueError("the batch holds NaN or infinite values")
        result = engine.run(batch)
        return {name: np.ascontiguousarray(result[name], dtype=np.float32) for name in outputs}

    return infer


def serve(
    bundle: ModelBundle,
    engine: Engine,
    options: ServeOptions,
    on_ready: Callable[[Mapping[str, Any]], None] | None = None,
) -> None:
    """Serve `engine` (running `bundle`) until Ctrl+C or SIGTERM, then stop Triton and return.

    `on_ready(endpoints)` is called once the model is loaded, with the HTTP and gRPC URLs.
    Raises `EngineUnavailable` when pytriton is not installed or Triton cannot start.
    """
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as error:
        raise EngineUnavailable(
            f"nvidia-pytriton is not installed ({error}); install the serving extra in an environment of "
            f"its own (it needs numpy < 2): {new_environment_command('serve-env', 'cpu,serve')}"
        ) from None

    os.environ["LD_LIBRARY_PATH"] = python_library_path()  # inherited by tritonserver and its stubs
    size = bundle.preprocessing.size
    inputs = [Tensor(name=INPUT_NAME, dtype=np.float32, shape=(3, size, size))]
    outputs = [Tensor(name=LOGITS_NAME, dtype=np.float32, shape=(bundle.num_labels,))]
    width = embedding_size(bundle)
    if width is not None:
        outputs.append(Tensor(name=EMBEDDING_NAME, dtype=np.float32, shape=(width,)))
    config = TritonConfig(
        http_address=options.host,
        http_port=options.http_port,
        grpc_address=options.host,
        grpc_port=options.grpc_port,
        allow_metrics=False,  # its port would be one more listener, and nothing here reads it
        log_verbose=options.log_verbose,
        exit_on_error=True,
    )
    triton = Triton(config=config)
    try:
        triton.bind(
            model_name=options.model_name,
            infer_func=batch(make_infer_function(engine)),
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(
                max_batch_size=options.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US),
            ),
            strict=True,
        )
        _add_parameters(triton, options.model_name, model_parameters(bundle))
        triton.run()  # starts tritonserver and waits until the model is loaded
        if on_ready is not None:
            on_ready(
                {
                    "http": f"http://{_url_host(options.host)}:{options.http_port}",
                    "grpc": f"grpc://{_url_host(options.host)}:{options.grpc_port}",
                    "model": options.model_name,
                }
            )
        triton.serve()  # returns on SIGINT/SIGTERM or when Triton dies
    except (RuntimeError, TimeoutError, OSError) as error:
        raise EngineUnavailable(f"Triton Inference Server could not serve the model: {error}") from None
    finally:
        triton.stop()


def _add_parameters(triton: Any, model_name: str, parameters: Mapping[str, str]) -> None:
    """Put `parameters` into the bound model's config.pbtxt.

    pytriton 0.7 has no public way to add config parameters; its model object builds the config
    once and keeps it, so they go into that object before the server loads the model. The tests
    read them back from a real server, so a pytriton that changes this fails there, not silently.
    """
    models = {model.model_name: model for model in triton._model_manager.models}
    config = models[model_name]._get_triton_model_config()
    config.backend_parameters.update(parameters)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
