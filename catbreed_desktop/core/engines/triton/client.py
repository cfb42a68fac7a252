"""The `triton` engine: a bundle's model run by a Triton Inference Server, over HTTP or gRPC.

Photos are decoded and preprocessed here, as for every engine; only the (N, 3, S, S) float32
batches travel. A batch is cut into requests of at most `request_size` photos, and up to
`in_flight` of them are sent at once, each from its own worker thread with its own client
(clients are not meant to be shared between threads), so the server's dynamic batcher always has
work queued.

Before the first photo the engine reads the model's config from the server and refuses a model
that is not the bundle's: the labels in output order, the input size and the model's sha256 are
in its parameters (`contract.model_parameters`), written by `catbreed serve` and by
`python -m trainer triton-repo` alike. A server that cannot be reached at start raises
`EngineUnavailable` naming the URL; one that stops answering mid-run raises `TritonServerLost`,
which ends the run: the photos classified before keep their results.

The server is trusted neither with sizes nor with time. Every request has one deadline
(`timeout_s`, `--server-timeout` on the command line) for all of it, and a missed one is a server
lost; every reply is bounded (a few MB for the config, for inference what `request_size` photos'
outputs can take: `reply_limit`), over HTTP by `kserve_http` and over gRPC by the channel's
`grpc.max_receive_message_length`.

HTTP goes through the standard library (`kserve_http`: tritonclient's HTTP client runs on gevent,
which crashes a Qt app when a thread that used it ends); gRPC through tritonclient, imported only
when such an engine starts (the `triton` extra, `install_hints.install_extra_command`).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle
from catbreed_desktop.core.engines.base import Engine, EngineUnavailable, check_batch, check_outputs
from catbreed_desktop.core.engines.names import ENGINE_TITLES, TRITON
from catbreed_desktop.core.engines.triton.contract import (
    METADATA_VERSION,
    MODEL_NAME,
    PARAM_EMBEDDING,
    PARAM_INPUT_SIZE,
    PARAM_LABELS,
    PARAM_SHA256,
    PARAM_VERSION,
    embedding_size,
)
from catbreed_desktop.core.engines.triton.kserve_http import JSON_REPLY_LIMIT, KServeHttpClient
from catbreed_desktop.core.errors import CatBreedError
from catbreed_desktop.core.install_hints import install_extra_command

DEFAULT_PORTS = {"http": 8000, "https": 8000, "grpc": 8001, "grpcs": 8001}
DEFAULT_REQUEST_SIZE = 8
DEFAULT_IN_FLIGHT = 4
# Each request's deadline, from connecting to the reply's last byte: long enough for a busy CPU
# server to work through its queue of requests; a dead server answers at once.
DEFAULT_TIMEOUT_S = 30.0
# An inference reply's room beyond its values: the JSON header that names the outputs.
REPLY_HEADER_ALLOWANCE = 64 * 1024
# Bytes a reply may spend on one output value: 4 as FP32, 8 as FP64, up to ~25 as a JSON number.
REPLY_BYTES_PER_VALUE = 32


def reply_limit(photos: int, values_per_photo: int) -> int:
    """The most bytes an inference reply for `photos` photos of `values_per_photo` output values may take."""
    return REPLY_HEADER_ALLOWANCE + photos * values_per_photo * REPLY_BYTES_PER_VALUE


class TritonServerLost(CatBreedError, RuntimeError):
    """The server stopped answering during a run; the message names it and says what was kept.

    Exit status 2, as for a model that cannot be used: the run did not finish, and rerunning it
    once the server is back is what to do.
    """


@dataclass(frozen=True)
class ServerAddress:
    """A Triton server's address as its clients take it: protocol, "host:port[/path]", TLS or not."""

    protocol: str  # "http" or "grpc"
    location: str
    ssl: bool
    url: str  # as people wrote it, for messages


def parse_server_url(url: str) -> ServerAddress:
    """`http://host:port`, `grpc://host:port` (https, grpcs for TLS); a bare `host:port` is HTTP.

    Raises ValueError saying what is wrong.
    """
    text = url.strip()
    if not text:
        raise ValueError("the Triton server URL is empty; give one such as http://127.0.0.1:8000")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"unknown scheme in the Triton server URL {url!r}: use http://, https://, grpc:// or grpcs://"
        )
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as error:
        raise ValueError(f"bad port in the Triton server URL {url!r}: {error}") from None
    if not parts.hostname:
        raise ValueError(f"no host in the Triton server URL {url!r}")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"the Triton server URL {url!r} may hold only a host, a port and (HTTP) a path")
    protocol = "grpc" if scheme.startswith("grpc") else "http"
    path = parts.path.rstrip("/")
    if path and protocol == "grpc":
        raise ValueError(f"a gRPC server URL has no path: {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ServerAddress(protocol, f"{host}:{port}{path}", scheme.endswith("s"), url.strip())


class TritonEngine(Engine):
    """`bundle`'s model as served by the Triton server at `url` under `model_name`."""

    def __init__(
        self,
        bundle: ModelBundle,
        url: str,
        *,
        model_name: str = MODEL_NAME,
        request_size: int = DEFAULT_REQUEST_SIZE,
        in_flight: int = DEFAULT_IN_FLIGHT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(bundle)
        if request_size < 1 or in_flight < 1:
            raise ValueError("request_size and in_flight must be at least 1")
        try:
            self.address = parse_server_url(url)
        except ValueError as error:
            raise EngineUnavailable(str(error)) from None
        self.model_name = model_name
        self.timeout_s = float(timeout_s)
        self._grpc = _import_grpc_client() if self.address.protocol == "grpc" else None
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self.provider = f"{ENGINE_TITLES[TRITON]} at {self.address.url}"
        width = embedding_size(bundle)
        self._outputs = (LOGITS_NAME,) + ((EMBEDDING_NAME,) if width is not None else ())
        self._values_per_photo = bundle.num_labels + (width or 0)
        # Clients are made before the server's batch limit is known: bounded by the requested size.
        self._reply_limit = reply_limit(request_size, self._values_per_photo)
        config = self._read_config()
        self.server_max_batch = _config_max_batch(config)
        self.request_size = max(1, min(request_size, self.server_max_batch or request_size))
        self._reply_limit = reply_limit(self.request_size, self._values_per_photo)
        self._pool = ThreadPoolExecutor(in_flight, thread_name_prefix="catbreed-triton")
        self.in_flight = in_flight

    # --- start: reach the server and check its model ------------------------------------------------

    def _read_config(self) -> dict[str, Any]:
        client = self._client()
        where = f"the Triton server at {self.address.url}"
        try:
            live = client.is_server_live()
        except Exception as error:  # tritonclient and its transports raise many unrelated types
            raise EngineUnavailable(f"cannot reach {where}: {_reason(error)}") from None
        if not live:
            raise EngineUnavailable(f"{where} answers but is not live")
        try:
            ready = client.is_model_ready(self.model_name)
        except Exception as error:
            raise EngineUnavailable(
                f"cannot ask {where} about model {self.model_name!r}: {_reason(error)}"
            ) from None
        if not ready:
            raise EngineUnavailable(
                f"{where} has no model {self.model_name!r} ready (start one with `catbreed serve`, or check "
                "the model name and the server's log)"
            )
        try:
            config = client.get_model_config(self.model_name)
        except Exception as error:
            raise EngineUnavailable(f"cannot read the model config from {where}: {_reason(error)}") from None
        problems = model_mismatches(config, self.bundle)
        if problems:
            raise EngineUnavailable(
                f"{where} serves a model {self.model_name!r} that is not the one in {self.bundle.path}: "
                + "; ".join(problems)
            )
        return dict(config)

    # --- running batches ------------------------------------------------------------------------------

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._outputs

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        array = check_batch(batch, self.bundle)
        # Spread even a small batch over the requests in flight: the server batches them again.
        size = min(self.request_size, -(-len(array) // self.in_flight))
        chunks = [array[start : start + size] for start in range(0, len(array), size)]
        futures = [self._pool.submit(self._infer, chunk) for chunk in chunks]
        parts = [future.result() for future in futures]  # in order; the first failure is raised
        outputs = {name: np.concatenate([part[name] for part in parts]) for name in self._outputs}
        return check_outputs(outputs, self.bundle, len(array))

    def _infer(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        try:
            reply = self._client().infer(
                self.model_name,
                {INPUT_NAME: chunk},
                self._outputs,
                reply_limit=reply_limit(len(chunk), self._values_per_photo),
            )
            outputs = {name: reply.get(name) for name in self._outputs}
        except Exception as error:  # a dead server, a timeout, an error reply: the run cannot go on
            raise TritonServerLost(
                f"the Triton server at {self.address.url} stopped answering ({_reason(error)}); "
                "the photos classified before keep their results, the others were not classified"
            ) from None
        missing = [name for name, value in outputs.items() if value is None]
        if missing:
            raise TritonServerLost(f"the Triton server at {self.address.url} sent no {', '.join(missing)}")
        return outputs

    def _client(self) -> Any:
        """This thread's client, created on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self._grpc is not None:
                client = _GrpcClient(
                    self._grpc, self.address, self.timeout_s, max(JSON_REPLY_LIMIT, self._reply_limit)
                )
            else:
                client = KServeHttpClient(
                    self.address.location,
                    ssl=self.address.ssl,
                    connection_timeout=min(self.timeout_s, 10.0),
                    network_timeout=self.timeout_s,
                )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # a connection already broken needs no closing
                client.close()


class _GrpcClient:
    """tritonclient's gRPC client behind the calls `KServeHttpClient` offers, so the engine runs
    one path whichever protocol it speaks."""

    def __init__(self, module: Any, address: ServerAddress, timeout_s: float, receive_limit: int) -> None:
        self._module = module
        self._client = module.InferenceServerClient(
            address.location, ssl=address.ssl, channel_args=grpc_channel_args(module, receive_limit)
        )
        self._timeout_s = timeout_s

    def is_server_live(self) -> bool:
        return bool(self._client.is_server_live(client_timeout=self._timeout_s))

    def is_model_ready(self, model: str) -> bool:
        return bool(self._client.is_model_ready(model, client_timeout=self._timeout_s))

    def get_model_config(self, model: str) -> dict[str, Any]:
        reply = self._client.get_model_config(model, as_json=True, client_timeout=self._timeout_s)
        return dict(reply.get("config", {}))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        *,
        reply_limit: int = JSON_REPLY_LIMIT,
    ) -> dict[str, np.ndarray | None]:
        """Run `model` on float32 `inputs` (name -> array); an output the reply lacks comes back None.

        `reply_limit` is enforced for the whole channel when it is made (`grpc_channel_args`).
        """
        requests = []
        for name, array in inputs.items():
            request = self._module.InferInput(name, list(array.shape), "FP32")
            request.set_data_from_numpy(array)
            requests.append(request)
        wanted = [self._module.InferRequestedOutput(name) for name in outputs]
        result = self._client.infer(model, requests, outputs=wanted, client_timeout=self._timeout_s)
        return {name: result.as_numpy(name) for name in outputs}

    def close(self) -> None:
        self._client.close()


def grpc_channel_args(module: Any, receive_limit: int) -> list[tuple[str, int]]:
    """tritonclient's own channel options (keep-alive as it sets them), with replies bounded to
    `receive_limit` bytes instead of its 2 GB; requests stay unbounded, they are ours."""
    keepalive = module.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", int(receive_limit)),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
    ]


def model_mismatches(config: dict[str, Any], bundle: ModelBundle) -> list[str]:
    """What in a served model's config (as JSON) differs from `bundle`; empty when it is the bundle's model."""
    raw = config.get("parameters") or {}
    parameters = {
        key: value.get("string_value", "") if isinstance(value, dict) else str(value)
        for key, value in raw.items()
    }
    if PARAM_SHA256 not in parameters or PARAM_LABELS not in parameters:
        return [
            "its config carries no catbreed metadata (labels, input size, model checksum); serve the bundle "
            "with `catbreed serve` or write the repository with `python -m trainer triton-repo`"
        ]
    problems = []
    if parameters.get(PARAM_VERSION) != METADATA_VERSION:
        problems.append(f"metadata version {parameters.get(PARAM_VERSION)!r}, expected {METADATA_VERSION!r}")
    try:
        labels = json.loads(parameters[PARAM_LABELS])
    except json.JSONDecodeError:
        labels = None
    if labels != list(bundle.labels):
        problems.append(f"its labels are {_short(labels)}, the bundle's are {_short(list(bundle.labels))}")
    size = str(bundle.preprocessing.size)
    if parameters.get(PARAM_INPUT_SIZE) != size:
        problems.append(f"its input size is {parameters.get(PARAM_INPUT_SIZE)}, the bundle's {size}")
    if parameters[PARAM_SHA256] != bundle.model_sha256:
        problems.append(
            f"its model checksum is {parameters[PARAM_SHA256][:12]}…, the bundle's {bundle.model_sha256[:12]}…"
        )
    width = embedding_size(bundle)
    if width is not None and parameters.get(PARAM_EMBEDDING) != str(width):
        problems.append(
            f"its embedding size is {parameters.get(PARAM_EMBEDDING)}, the detector needs {width}"
        )
    return problems


def _config_max_batch(config: dict[str, Any]) -> int:
    try:
        return max(0, int(config.get("max_batch_size", 0)))
    except (TypeError, ValueError):
        return 0


def _import_grpc_client() -> Any:
    try:
        import tritonclient.grpc as module
    except ImportError as error:
        raise EngineUnavailable(
            f"the Triton engine over gRPC needs tritonclient, which is not installed ({error}); {install_extra_command('triton')}"
        ) from None
    return module


def _short(labels: object) -> str:
    if not isinstance(labels, list):
        return "unreadable"
    shown = ", ".join(map(str, labels[:4])) + (", …" if len(labels) > 4 else "")
    return f"{len(labels)} ({shown})"


def _reason(error: BaseException) -> str:
    """One line for a client error: tritonclient's InferenceServerException keeps its text in `message()`."""
    message = getattr(error, "message", None)
    text = message() if callable(message) else str(error)
    return " ".join(str(text or type(error).__name__).split())
