"""The Triton engine's HTTP transport against a small in-process KServe v2 server.

The server here speaks the protocol as Triton does (JSON health and config calls; inference with
the binary tensor extension); test_serving.py runs the same client against a real Triton.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME
from catbreed_desktop.core.engines.triton.kserve_http import (
    HEADER_LENGTH,
    KServeError,
    KServeHttpClient,
    parse_infer_reply,
)

MODEL = "catbreed"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Triton
    close_silently = False  # drop the connection after each reply without saying so

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]  # before the client can see the reply
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.close_silently:
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path == "/v2/health/live" or self.path == f"/v2/models/{MODEL}/ready":
            self._reply(200)
        elif self.path == f"/v2/models/{MODEL}/config":
            self._reply(200, json.dumps({"name": MODEL, "max_batch_size": 8}).encode())
        else:
            self._reply(400, json.dumps({"error": f"no model at {self.path}"}).encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != f"/v2/models/{MODEL}/infer":
            self._reply(400, json.dumps({"error": "unknown model"}).encode())
            return
        size = int(self.headers[HEADER_LENGTH])
        request = json.loads(body[:size])
        (given,) = request["inputs"]
        if given["datatype"] != "FP32":
            self._reply(400, json.dumps({"error": f"expected FP32, got {given['datatype']}"}).encode())
            return
        pixels = np.frombuffer(body[size:], dtype="<f4").reshape(given["shape"])
        # Logits: the mean of each channel; embedding: the photo's index and its sum, as float64 in JSON.
        logits = pixels.mean(axis=(2, 3)).astype("<f4")
        embedding = np.stack([np.arange(len(pixels)), pixels.sum(axis=(1, 2, 3))], axis=1)
        outputs = [
            {"name": LOGITS_NAME, "datatype": "FP32", "shape": list(logits.shape),
             "parameters": {"binary_data_size": logits.nbytes}},
            {"name": EMBEDDING_NAME, "datatype": "FP64", "shape": list(embedding.shape),
             "data": embedding.ravel().tolist()},
        ]  # fmt: skip
        head = json.dumps({"model_name": MODEL, "outputs": outputs}).encode()
        self._reply(200, head + logits.tobytes(), {HEADER_LENGTH: str(len(head))})


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    _Handler.close_silently = False


def _location(server: ThreadingHTTPServer) -> str:
    return f"127.0.0.1:{server.server_address[1]}"


def test_health_config_and_binary_inference_round_trip(server) -> None:
    client = KServeHttpClient(_location(server), network_timeout=10)
    assert client.is_server_live() and client.is_model_ready(MODEL)
    assert not client.is_model_ready("other")
    assert client.get_model_config(MODEL) == {"name": MODEL, "max_batch_size": 8}
    pixels = np.random.default_rng(0).normal(size=(3, 3, 4, 4)).astype(np.float32)
    outputs = client.infer(MODEL, {INPUT_NAME: pixels}, [LOGITS_NAME, EMBEDDING_NAME])
    np.testing.assert_array_equal(outputs[LOGITS_NAME], pixels.mean(axis=(2, 3)))
    assert outputs[EMBEDDING_NAME].dtype == np.float64
    np.testing.assert_allclose(outputs[EMBEDDING_NAME][:, 1], pixels.sum(axis=(1, 2, 3)), rtol=1e-6)
    assert server.requests == 5
    client.close()


def test_error_replies_are_raised_with_the_servers_words(server) -> None:
    client = KServeHttpClient(_location(server))
    with pytest.raises(KServeError, match="expected FP32, got FP64"):
        client.infer(MODEL, {INPUT_NAME: np.zeros((1, 3, 2, 2))}, [LOGITS_NAME])
    with pytest.raises(KServeError, match="no model at /v2/models/other/config"):
        client.get_model_config("other")
    assert client.is_server_live()  # the connection is still good after error replies


def test_a_connection_the_server_dropped_is_made_again_once(server) -> None:
    _Handler.close_silently = True
    client = KServeHttpClient(_location(server))
    for _ in range(3):
        assert client.is_server_live()
    assert server.requests == 3


def test_no_server_is_an_os_error_and_a_path_prefix_is_kept(server) -> None:
    with pytest.raises(OSError):
        KServeHttpClient("127.0.0.1:9", connection_timeout=2).is_server_live()
    prefixed = KServeHttpClient(f"{_location(server)}/proxy")
    assert not prefixed.is_server_live()  # the fake server knows no /proxy/v2/...: an error reply


def test_malformed_replies_are_refused_in_words() -> None:
    head = json.dumps({"outputs": [{"name": "logits", "datatype": "FP32", "shape": [2, 2],
                                    "parameters": {"binary_data_size": 16}}]}).encode()  # fmt: skip
    with pytest.raises(KServeError, match="cut short"):
        parse_infer_reply(head + b"\0" * 8, str(len(head)))
    with pytest.raises(KServeError, match="does not fit"):
        parse_infer_reply(head, "99999")
    with pytest.raises(KServeError, match="not JSON"):
        parse_infer_reply(b"<html>", None)
    whole = parse_infer_reply(head + np.arange(4, dtype="<f4").tobytes(), str(len(head)))
    np.testing.assert_array_equal(whole["logits"], [[0, 1], [2, 3]])


def test_the_http_engine_never_loads_gevent(colour_bundle) -> None:
    # tritonclient's HTTP client runs on gevent, whose hub crashed the window when the Qt thread that
    # loaded a Triton model ended; the engine's HTTP path must not import it at all.
    script = (
        "import sys\n"
        "from catbreed_desktop.core.bundle import load_bundle\n"
        "from catbreed_desktop.core.engines import EngineUnavailable\n"
        "from catbreed_desktop.core.engines.triton.client import TritonEngine\n"
        f"bundle = load_bundle({str(colour_bundle.path)!r})\n"
        "try:\n"
        "    TritonEngine(bundle, 'http://127.0.0.1:9', timeout_s=2)\n"
        "except EngineUnavailable as error:\n"
        "    print('refused:', error)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('gevent', 'geventhttpclient', 'tritonclient')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    refused, modules = result.stdout.splitlines()
    assert "cannot reach the Triton server at http://127.0.0.1:9" in refused
    assert modules == "[]"
