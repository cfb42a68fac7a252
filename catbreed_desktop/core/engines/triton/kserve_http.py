"""The Triton engine's HTTP transport: the KServe v2 protocol over the standard library.

tritonclient's HTTP client runs on gevent, and a gevent hub left in a thread that Qt started
crashes the whole process when that thread ends (its loop is freed while Python tears the
thread's state down). The window loads models and classifies on such threads, so HTTP goes
through `http.client` here instead: health and model queries as JSON, inference with Triton's
binary tensor extension (a JSON header, then the raw little-endian tensors).

One client holds one keep-alive connection and is used by one thread at a time.

The server is not trusted with sizes or time: every reply has a byte limit (a few MB for the
JSON calls, what the request can need for inference, given by the caller), checked against the
declared Content-Length before any body is read and again while reading; and every request has one
deadline for all of it (connect, send, first byte, the whole reply), checked before each read from
the socket, so a server that sends one byte a second is cut off as surely as one that is silent.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import ssl as ssl_module
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from catbreed_desktop.core.errors import CatBreedError

# Triton's datatype names for the numpy dtypes the engine sends or may receive.
DATATYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "UINT8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
HEADER_LENGTH = "Inference-Header-Content-Length"
# Health, readiness and config replies are small JSON: a config of thousands of labels is well under this.
JSON_REPLY_LIMIT = 4 * 1024 * 1024
_READ_CHUNK = 64 * 1024


class KServeError(CatBreedError):
    """The server answered with an error, or an answer that is not the protocol's; the text says which."""


class KServeTimeout(KServeError, TimeoutError):
    """A request's deadline passed before its whole reply had arrived."""


class KServeHttpClient:
    """A Triton (KServe v2) server at `location` ("host:port[/path]"), over HTTP or HTTPS."""

    def __init__(
        self,
        location: str,
        *,
        ssl: bool = False,
        connection_timeout: float = 10.0,
        network_timeout: float = 60.0,
    ) -> None:
        """`network_timeout` is each request's deadline, from connecting to the reply's last byte;
        `connection_timeout` caps the connecting part of it."""
        hostport, _, path = location.partition("/")
        self._hostport = hostport
        self._prefix = f"/{path}" if path else ""
        self._ssl = ssl
        self._connection_timeout = connection_timeout
        self._network_timeout = network_timeout
        self._connection: http.client.HTTPConnection | None = None
        self._socket: _DeadlineSocket | None = None

    # --- the protocol's calls -----------------------------------------------------------------------

    def is_server_live(self) -> bool:
        return self._request("GET", "/v2/health/live")[0] == 200

    def is_model_ready(self, model: str) -> bool:
        return self._request("GET", f"/v2/models/{quote(model, safe='')}/ready")[0] == 200

    def get_model_config(self, model: str) -> dict[str, Any]:
        status, _, body = self._request("GET", f"/v2/models/{quote(model, safe='')}/config")
        if status != 200:
            raise KServeError(_error_text(status, body))
        config = _json(body)
        if not isinstance(config, dict):
            raise KServeError("the model config is not a JSON object")
        return config

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        *,
        reply_limit: int = JSON_REPLY_LIMIT,
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (name -> array); returns the named `outputs` as arrays.

        `reply_limit` is the most bytes the reply may have: what the outputs of this many inputs
        can take (see `client.reply_limit`); a larger reply is refused unread.
        """
        arrays = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
        header = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": _datatype(array.dtype),
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in arrays.items()
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        }
        head = json.dumps(header).encode("utf-8")
        body = b"".join([head, *(_little_endian(array).tobytes() for array in arrays.values())])
        status, headers, reply = self._request(
            "POST",
            f"/v2/models/{quote(model, safe='')}/infer",
            body,
            {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))},
            limit=reply_limit,
        )
        if status != 200:
            raise KServeError(_error_text(status, reply))
        return parse_infer_reply(reply, headers.get(HEADER_LENGTH))

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.close()
            self._connection = None
            self._socket = None

    # --- the connection -----------------------------------------------------------------------------

    def _connect(self, deadline: float) -> http.client.HTTPConnection:
        timeout = max(0.001, min(self._connection_timeout, deadline - time.monotonic()))
        connection: http.client.HTTPConnection
        if self._ssl:
            connection = http.client.HTTPSConnection(
                self._hostport, timeout=timeout, context=ssl_module.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(self._hostport, timeout=timeout)
        connection.connect()
        # Every later send and read goes through the deadline's checks.
        self._socket = _DeadlineSocket(connection.sock)
        connection.sock = self._socket
        return connection

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        limit: int = JSON_REPLY_LIMIT,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        # A kept-alive connection the server has since closed fails at once; that request is sent
        # again once on a fresh connection. A fresh connection that fails is the server's failure.
        deadline = time.monotonic() + self._network_timeout
        reused = self._connection is not None
        try:
            return self._exchange(method, path, body, headers, limit, deadline)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        return self._exchange(method, path, body, headers, limit, deadline)

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        limit: int,
        deadline: float,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request and its reply; the connection is dropped after a failure or when the server closes it."""
        try:
            if self._connection is None:
                self._connection = self._connect(deadline)
            assert self._socket is not None
            self._socket.deadline = deadline
            self._connection.request(method, self._prefix + path, body=body, headers=dict(headers or {}))
            response = self._connection.getresponse()
            data = _read_body(response, limit)
            response.close()  # read to its end: the connection may carry the next request
        except (OSError, http.client.HTTPException, KServeError) as error:
            self.close()
            if isinstance(error, http.client.HTTPException) and not isinstance(error, ConnectionError):
                # Bytes that are not HTTP: said in words, with only a short, quoted sample of them.
                raise KServeError(
                    f"the server's answer is not HTTP ({type(error).__name__}: {str(error)[:40]!r})"
                ) from None
            raise
        if response.will_close:
            self.close()
        return response.status, response.headers, data


class _DeadlineSocket:
    """A connected socket whose every send and read first checks the request's deadline and waits
    at most until then: http.client reads status line, headers and body through `makefile`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = float("inf")

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise KServeTimeout("the server did not answer in time (the request's deadline passed)")
        return left

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(self.remaining())
        self.sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        self.sock.settimeout(self.remaining())
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            self.remaining()  # raises once the deadline has passed, as it has
            raise

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        self.sock.close()

    def __getattr__(self, name: str) -> Any:  # setsockopt, fileno and the like go to the socket
        return getattr(self.sock, name)


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)


def _read_body(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The reply's body, refused unread when its declared length passes `limit`, and stopped once it does.

    A body shorter than its declared length (the server closed early) is a `KServeError`.
    """
    if response.length is not None and response.length > limit:
        raise KServeError(
            f"the server announced a reply of {response.length} bytes, more than the {limit} this request "
            "can need"
        )
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            # read1: at most one read from the socket, so the deadline is checked between reads.
            chunk = response.read1(_READ_CHUNK)
        except http.client.IncompleteRead as error:
            raise KServeError(
                f"the server's reply was cut short ({len(error.partial) + size} bytes, "
                f"{error.expected} more were announced)"
            ) from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise KServeError(f"the server sent more than the {limit} bytes this request can need")
        parts.append(chunk)
    if response.length:  # the server closed the connection before the announced length
        raise KServeError(
            f"the server's reply was cut short ({size} bytes, {response.length} more were announced)"
        )
    return b"".join(parts)


def parse_infer_reply(reply: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """An inference reply's outputs: a JSON header (`header_length` bytes, or all of it), then binary tensors."""
    try:
        size = int(header_length) if header_length is not None else len(reply)
    except ValueError:
        raise KServeError(f"bad {HEADER_LENGTH} {header_length!r}") from None
    if not 0 < size <= len(reply):
        raise KServeError(f"{HEADER_LENGTH} {size} does not fit a reply of {len(reply)} bytes")
    header = _json(reply[:size])
    if not isinstance(header, dict) or not isinstance(header.get("outputs"), list):
        raise KServeError("the reply names no outputs")
    offset = size
    results: dict[str, np.ndarray] = {}
    for output in header["outputs"]:
        try:
            name, shape, datatype = str(output["name"]), [int(n) for n in output["shape"]], output["datatype"]
        except (KeyError, TypeError, ValueError):
            raise KServeError(f"an output of the reply lacks a name, shape or datatype: {output!r}") from None
        if datatype not in DATATYPES:
            raise KServeError(f"output {name} has datatype {datatype}, which the engine does not read")
        dtype = DATATYPES[datatype]
        binary_size = (output.get("parameters") or {}).get("binary_data_size")
        if binary_size is None:
            values = np.asarray(output.get("data", []), dtype=dtype)
        else:
            end = offset + int(binary_size)
            if end > len(reply):
                raise KServeError(f"output {name} is cut short: the reply ends at byte {len(reply)}")
            values = np.frombuffer(reply[offset:end], dtype=dtype)
            offset = end
        if values.size != int(np.prod(shape)):
            raise KServeError(f"output {name} holds {values.size} values, not the {shape} it names")
        results[name] = values.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return results


def _datatype(dtype: np.dtype) -> str:
    little = np.dtype(dtype).newbyteorder("<")  # single-byte types ignore the byte order
    for name, known in DATATYPES.items():
        if little == known:
            return name
    raise ValueError(f"no Triton datatype for numpy {dtype}")


def _little_endian(array: np.ndarray) -> np.ndarray:
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also integers of 5000 digits
        raise KServeError(f"the server's answer is not JSON: {data[:80]!r}") from None


def _error_text(status: int, body: bytes) -> str:
    """The `error` text of an error reply, else its status and first bytes."""
    with contextlib.suppress(KServeError):
        reply = _json(body)
        if isinstance(reply, dict) and reply.get("error"):
            return str(reply["error"])
    text = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}" + (f": {text}" if text else "")
