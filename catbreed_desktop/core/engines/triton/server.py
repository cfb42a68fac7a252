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

What a client sends is checked before the model sees it: pixels must be finite and within what the
bundle's preprocessing can produce (`pixel_bounds`), else the client gets one line saying so, never
a traceback of the server's internals (`hide_tracebacks_from_clients`). Triton's HTTP server has
no cap on open connections nor a timeout for idle ones (each costs a file descriptor); `serve`
sets its HTTP thread count, and a server open to many clients belongs behind a proxy that caps
connections. The processes Triton starts are ended with `serve` even when it is killed
(`watchdog`), and model folders such a kill left in the temporary folder are removed at the
next start.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable
from catbreed_desktop.core.engines.triton.contract import MODEL_NAME, embedding_size, model_parameters
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.install_hints import new_environment_command
from catbreed_desktop.core.photos import Preprocessing

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_MAX_BATCH = 32
# How long Triton may hold a request to fill a batch: short, since one photo costs ~10 ms on a CPU.
MAX_QUEUE_DELAY_US = 2_000
# Triton's HTTP worker threads; each open connection costs a file descriptor, not a thread.
HTTP_THREADS = 8
# How long Triton waits for the model to unload when stopped, before it exits anyway.
EXIT_TIMEOUT_S = 10
# Room beyond the exact range of normalised pixels, as a share of that range: a client resizing in
# float (bicubic overshoots a little at sharp edges) is still served.
PIXEL_MARGIN = 0.1


@dataclass(frozen=True)
class ServeOptions:
    """Where and how `serve` listens; ports of 0 are not allowed (Triton needs them up front)."""

    host: str = DEFAULT_HOST
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    max_batch: int = DEFAULT_MAX_BATCH
    model_name: str = MODEL_NAME
    log_verbose: int = 0
    http_threads: int = HTTP_THREADS


class InvalidPixels(CatBreedError, ValueError):
    """A request's pixels that no photo preprocessed for this bundle can have; the message says which."""


def pixel_bounds(preprocessing: Preprocessing, margin: float = PIXEL_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the lowest and highest value a photo normalised by `preprocessing` can take, widened
    by `margin` of that range: (0 - mean) / std to (1 - mean) / std, shaped (1, 3, 1, 1)."""
    mean = np.asarray(preprocessing.mean, np.float64)
    std = np.asarray(preprocessing.std, np.float64)
    low, high = (0.0 - mean) / std, (1.0 - mean) / std
    room = margin * (high - low)
    return (low - room).reshape(1, 3, 1, 1), (high + room).reshape(1, 3, 1, 1)


def check_pixels(batch: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]) -> None:
    """Raise `InvalidPixels` when `batch` holds NaN, infinities or values outside `bounds`."""
    if not np.isfinite(batch).all():
        raise InvalidPixels("the pixels hold NaN or infinite values")
    low, high = bounds
    if batch.ndim == 4 and batch.shape[1] == 3 and ((batch < low) | (batch > high)).any():
        floor, ceiling = float(low.min()), float(high.max())
        raise InvalidPixels(
            f"pixel values from {float(batch.min()):.4g} to {float(batch.max()):.4g} are outside what this "
            f"model's preprocessing produces (about {floor:.3g} to {ceiling:.3g})"
        )


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
    batch against max_batch_size; here the pixels are checked (`check_pixels`) and the engine
    checks the shape again. Either gives a ValueError, which pytriton returns as an error reply
    (one line, `hide_tracebacks_from_clients`), so a bad request never stops the server.
    """
    outputs = [LOGITS_NAME] + ([EMBEDDING_NAME] if embedding_size(engine.bundle) is not None else [])
    bounds = pixel_bounds(engine.bundle.preprocessing)

    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        batch = inputs[INPUT_NAME]
        check_pixels(batch, bounds)
        result = engine.run(batch)
        return {name: np.ascontiguousarray(result[name], dtype=np.float32) for name in outputs}

    return infer


def client_error_text() -> str:
    """What a client is told of the exception being handled: a ValueError's message (a bad
    request), else that the server failed, with the traceback going to the server's log only."""
    return _OneLineTracebacks.format_exception(sys.exc_info()[1])[0]


class _OneLineTracebacks(types.SimpleNamespace):
    """The `traceback` module as pytriton's inference handler sees it, but `format_exc`, whose text
    goes back to the client, gives `client_error_text` instead of the server's stack."""

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    @staticmethod
    def format_exc(*args: Any, **kwargs: Any) -> str:
        return client_error_text()

    @staticmethod
    def format_exception(
        kind: Any, error: BaseException | None = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        error = error if isinstance(error, BaseException) else kind
        if isinstance(error, ValueError):
            return [f"bad request: {' '.join(str(error).split())}"]
        log.error("the model failed on a request", exc_info=error)
        return ["the server failed on this request; its log says why"]


def hide_tracebacks_from_clients(module: Any) -> bool:
    """Make `module` (pytriton's inference handler) tell clients `client_error_text`, not tracebacks.

    pytriton sends `traceback.format_exc()` of a failed call back as the error reply: file paths,
    source lines and library versions, to anyone who sends NaN. Returns whether `module` was one
    that does so; the real-server tests check the replies themselves.
    """
    if getattr(module, "traceback", None) is not traceback:
        return False
    module.traceback = _OneLineTracebacks()
    return True


def triton_settings(options: ServeOptions) -> dict[str, Any]:
    """The TritonConfig fields `serve` sets."""
    return {
        "http_address": options.host,
        "http_port": options.http_port,
        "http_thread_count": options.http_threads,
        "grpc_address": options.host,
        "grpc_port": options.grpc_port,
        "allow_metrics": False,  # its port would be one more listener, and nothing here reads it
        "log_verbose": options.log_verbose,
        "exit_on_error": True,
        "exit_timeout_secs": EXIT_TIMEOUT_S,
    }


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
    import importlib

    hidden = False
    for name in ("pytriton.proxy.inference_handler", "pytriton.proxy.inference"):
        try:
            hidden |= hide_tracebacks_from_clients(importlib.import_module(name))
        except ImportError:
            continue
    if not hidden:
        log.warning(
            "this pytriton's error replies could not be reduced to one line; they may hold tracebacks"
        )
    config = TritonConfig(**triton_settings(options))
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
