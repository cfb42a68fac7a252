"""The Triton client against hostile servers: it must neither trust their sizes nor wait on them for good.

A raw-socket KServe server here answers health and readiness, serves the colour bundle's config
(so the engine starts) and then misbehaves on one call as each test asks: a huge body announced or
streamed, a slow drip of one byte at a time, a Content-Length that lies, a reply cut short, bytes
that are not HTTP, JSON nested beyond any parser. Over gRPC, an in-process tritonclient service
sends an oversized or late reply. Deadlines here are a fraction of a second, so the module is fast.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.bundle import INPUT_NAME, LOGITS_NAME, ModelBundle
from catbreed_desktop.core.engines import EngineUnavailable
from catbreed_desktop.core.engines.triton.client import (
    TritonEngine,
    TritonServerLost,
    grpc_channel_args,
    reply_limit,
)
from catbreed_desktop.core.engines.triton.contract import MODEL_NAME, model_parameters
from catbreed_desktop.core.engines.triton.kserve_http import HEADER_LENGTH, KServeError, KServeHttpClient

# A hostile server that the client failed to cut off would hang the test: fail it instead.
pytestmark = pytest.mark.timeout(60)

DEADLINE_S = 0.5
GiB = 1024**3
# How many 64 KiB pieces the huge replies stream before giving up: 256 MiB here;
# bench/hostile_triton_server.py raises it to the audit's 8 GiB.
HUGE_CHUNKS = 4096

Behaviour = Callable[[socket.socket], None]


def http_reply(
    status: int, body: bytes, headers: dict[str, str] | None = None, length: int | None = None
) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body) if length is None else length}"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def config_body(bundle: ModelBundle) -> bytes:
    parameters = {key: {"string_value": value} for key, value in model_parameters(bundle).items()}
    return json.dumps({"name": MODEL_NAME, "max_batch_size": 8, "parameters": parameters}).encode()


def good_infer_reply(photos: int, labels: int) -> bytes:
    logits = np.zeros((photos, labels), "<f4")
    head = json.dumps(
        {"outputs": [{"name": LOGITS_NAME, "datatype": "FP32", "shape": [photos, labels],
                      "parameters": {"binary_data_size": logits.nbytes}}]}
    ).encode()  # fmt: skip
    return http_reply(200, head + logits.tobytes(), {HEADER_LENGTH: str(len(head))})


# --- the ways a reply can be hostile ---------------------------------------------------------------


def announce_huge(sock: socket.socket) -> None:
    """8 GiB announced, then zeros for as long as the client reads."""
    sock.sendall(http_reply(200, b"", length=8 * GiB))
    with _closed_quietly():
        for _ in range(HUGE_CHUNKS):
            sock.sendall(b"\0" * 65536)


def stream_huge(sock: socket.socket) -> None:
    """A chunked body of zeros without end and without a length."""
    sock.sendall(b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"
    with _closed_quietly():
        for _ in range(HUGE_CHUNKS):
            sock.sendall(chunk)


def slow_drip(sock: socket.socket) -> None:
    """A valid reply, one byte every 0.1 s: never silent long enough for a per-read timeout."""
    with _closed_quietly():
        for byte in http_reply(200, b"{}" + b" " * 10_000):
            sock.sendall(bytes([byte]))
            time.sleep(0.1)


def length_says_more_and_stalls(sock: socket.socket) -> None:
    sock.sendall(http_reply(200, b"{}", length=1000))
    time.sleep(10)


def length_says_more_and_closes(sock: socket.socket) -> None:
    sock.sendall(http_reply(200, b"{}", length=1000))


def garbage(sock: socket.socket) -> None:
    sock.sendall(bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8)))


def nested_json(sock: socket.socket) -> None:
    sock.sendall(http_reply(200, b"[" * 100_000 + b"]" * 100_000))


class HostileServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__(("127.0.0.1", 0), _Connection)
        self.bundle = bundle
        self.hostile: dict[str, Behaviour] = {}  # "config" or "infer" -> what the server does instead

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Connection(socketserver.BaseRequestHandler):
    server: HostileServer

    def handle(self) -> None:
        reader = self.request.makefile("rb")
        with _closed_quietly():
            while True:
                request_line = reader.readline()
                if not request_line:
                    return
                headers = {}
                while (line := reader.readline().strip()) != b"":
                    key, _, value = line.decode().partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", 0)))
                path = request_line.split()[1].decode()
                call = "infer" if path.endswith("/infer") else "config" if path.endswith("/config") else ""
                if call in self.server.hostile:
                    self.server.hostile[call](self.request)
                    return
                if call == "config":
                    self.request.sendall(http_reply(200, config_body(self.server.bundle)))
                elif call == "infer":
                    size = int(headers[HEADER_LENGTH.lower()])
                    photos = json.loads(body[:size])["inputs"][0]["shape"][0]
                    self.request.sendall(good_infer_reply(photos, self.server.bundle.num_labels))
                else:
                    self.request.sendall(http_reply(200, b""))


class _closed_quietly:
    """The client hanging up on a hostile reply is the point: the server thread just ends."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: object, trace: object) -> bool:
        return isinstance(error, OSError)


@pytest.fixture
def hostile(colour_bundle: ModelBundle) -> Iterator[HostileServer]:
    server = HostileServer(colour_bundle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(server: HostileServer, timeout: float = DEADLINE_S) -> KServeHttpClient:
    return KServeHttpClient(server.url.removeprefix("http://"), network_timeout=timeout)


def pixels(photos: int = 2) -> dict[str, np.ndarray]:
    return {INPUT_NAME: np.zeros((photos, 3, 32, 32), np.float32)}


# --- the HTTP client --------------------------------------------------------------------------------


def test_the_honest_server_works(hostile) -> None:
    reply = client(hostile, timeout=10).infer(MODEL_NAME, pixels(), [LOGITS_NAME], reply_limit=10_000)
    assert reply[LOGITS_NAME].shape == (2, 3)


def test_a_huge_announced_reply_is_refused_before_its_body_is_read(hostile) -> None:
    hostile.hostile["infer"] = announce_huge
    with pytest.raises(KServeError, match="announced a reply of 8589934592 bytes, more than the 10000"):
        client(hostile, timeout=10).infer(MODEL_NAME, pixels(), [LOGITS_NAME], reply_limit=10_000)
    hostile.hostile["config"] = announce_huge
    with pytest.raises(KServeError, match="announced a reply of 8589934592 bytes"):
        client(hostile, timeout=10).get_model_config(MODEL_NAME)


def test_a_huge_reply_without_a_length_is_cut_off_at_the_limit(hostile) -> None:
    hostile.hostile["infer"] = stream_huge
    with pytest.raises(KServeError, match="more than the 10000 bytes"):
        client(hostile, timeout=10).infer(MODEL_NAME, pixels(), [LOGITS_NAME], reply_limit=10_000)
    hostile.hostile["config"] = stream_huge
    with pytest.raises(KServeError, match="more than the 4194304 bytes"):
        client(hostile, timeout=10).get_model_config(MODEL_NAME)


def test_a_slow_drip_is_cut_off_by_the_whole_reply_deadline(hostile) -> None:
    hostile.hostile["config"] = slow_drip
    started = time.monotonic()
    with pytest.raises(KServeError, match="did not answer in time"):
        client(hostile).get_model_config(MODEL_NAME)
    # Without a whole-reply deadline the drip would last 1000 s; any bound far below that proves it.
    assert time.monotonic() - started < 30


def test_a_length_that_lies_is_a_deadline_or_a_cut_short_reply(hostile) -> None:
    hostile.hostile["config"] = length_says_more_and_stalls
    with pytest.raises(KServeError, match="did not answer in time"):
        client(hostile).get_model_config(MODEL_NAME)
    hostile.hostile["config"] = length_says_more_and_closes
    with pytest.raises(KServeError, match="cut short"):
        client(hostile).get_model_config(MODEL_NAME)


def test_garbage_and_nested_json_are_errors_not_crashes(hostile) -> None:
    hostile.hostile["config"] = garbage
    with pytest.raises(KServeError, match="not HTTP"):
        client(hostile).get_model_config(MODEL_NAME)
    hostile.hostile["config"] = nested_json
    with pytest.raises(KServeError, match="not JSON"):
        client(hostile).get_model_config(MODEL_NAME)


# --- the engine and the command line ------------------------------------------------------------------


def test_the_engine_bounds_each_request_by_its_photos(hostile, colour_bundle, monkeypatch) -> None:
    limits: list[int] = []
    real_infer = KServeHttpClient.infer

    def spy(self, model, inputs, outputs, *, reply_limit):
        limits.append(reply_limit)
        return real_infer(self, model, inputs, outputs, reply_limit=reply_limit)

    monkeypatch.setattr(KServeHttpClient, "infer", spy)
    with TritonEngine(colour_bundle, hostile.url, request_size=4, in_flight=1, timeout_s=10) as engine:
        engine.run(np.zeros((6, 3, 32, 32), np.float32))
    assert limits == [reply_limit(4, 3), reply_limit(2, 3)]
    assert reply_limit(8, 3) < 100_000  # a few KB per request, nowhere near a server's 8 GiB


@pytest.mark.parametrize("behaviour", [announce_huge, slow_drip, garbage, nested_json])
def test_a_hostile_config_refuses_the_engine_in_one_line(hostile, colour_bundle, behaviour) -> None:
    hostile.hostile["config"] = behaviour
    with pytest.raises(EngineUnavailable, match="cannot read the model config") as refused:
        TritonEngine(colour_bundle, hostile.url, timeout_s=DEADLINE_S)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("behaviour", [announce_huge, stream_huge, slow_drip, length_says_more_and_stalls])
def test_a_hostile_inference_reply_is_a_server_lost(hostile, colour_bundle, behaviour) -> None:
    hostile.hostile["infer"] = behaviour
    with (
        TritonEngine(colour_bundle, hostile.url, timeout_s=DEADLINE_S) as engine,
        pytest.raises(TritonServerLost, match="stopped answering"),
    ):
        engine.run(np.zeros((2, 3, 32, 32), np.float32))


def _inbox(folder: Path) -> dict[str, bytes]:
    from factories import COLOURS, make_photo

    for index, colour in enumerate(COLOURS.values()):
        make_photo(folder / f"cat{index}.png", colour, seed=index)
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.parametrize("behaviour", [slow_drip, announce_huge])
def test_sort_against_a_hostile_server_ends_in_one_line_with_nothing_moved(
    hostile, colour_bundle, tmp_path, capsys, behaviour
) -> None:
    inbox = tmp_path / "inbox"
    before = _inbox(inbox)
    hostile.hostile["infer"] = behaviour
    status = main(
        ["sort", str(inbox), "--into", str(tmp_path / "sorted"), "--model", str(colour_bundle.path),
         "--engine", "triton", "--server", hostile.url, "--server-timeout", str(DEADLINE_S)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2, err
    assert "stopped answering" in err and "nothing was moved" in err
    assert "Traceback" not in err
    assert {path.name: path.read_bytes() for path in inbox.iterdir()} == before
    assert not (tmp_path / "sorted").exists() or not any((tmp_path / "sorted").rglob("*.png"))


def test_server_timeout_must_be_a_positive_number(colour_bundle, tmp_path, capsys) -> None:
    assert main(["classify", str(tmp_path), "--model", str(colour_bundle.path), "--server-timeout", "0"]) == 2
    assert "--server-timeout: must be a number of seconds above 0" in capsys.readouterr().err


# --- gRPC ---------------------------------------------------------------------------------------------


grpc = pytest.importorskip("grpc")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")


def test_the_grpc_channel_bounds_replies_and_not_requests() -> None:
    options = dict(grpc_channel_args(tritonclient_grpc, 123_456))
    assert options["grpc.max_receive_message_length"] == 123_456
    assert options["grpc.max_send_message_length"] == -1


@pytest.fixture
def grpc_server(colour_bundle: ModelBundle) -> Iterator[tuple[str, dict[str, str]]]:
    from concurrent import futures

    from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

    mode: dict[str, str] = {"infer": "huge"}

    class Service(service_pb2_grpc.GRPCInferenceServiceServicer):
        def ServerLive(self, request, context):
            return service_pb2.ServerLiveResponse(live=True)

        def ModelReady(self, request, context):
            return service_pb2.ModelReadyResponse(ready=True)

        def ModelConfig(self, request, context):
            config = model_config_pb2.ModelConfig(name=MODEL_NAME, max_batch_size=8)
            for key, value in model_parameters(colour_bundle).items():
                config.parameters[key].string_value = value
            return service_pb2.ModelConfigResponse(config=config)

        def ModelInfer(self, request, context):
            if mode["infer"] == "late":
                time.sleep(3)
            photos = request.inputs[0].shape[0]
            reply = service_pb2.ModelInferResponse(model_name=MODEL_NAME)
            reply.outputs.add(name=LOGITS_NAME, datatype="FP32", shape=[photos, 3])
            size = 64 * 1024 * 1024 if mode["infer"] == "huge" else photos * 3 * 4
            reply.raw_output_contents.append(b"\0" * size)
            return reply

    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_send_message_length", -1)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"grpc://127.0.0.1:{port}", mode
    server.stop(grace=None)


def test_a_huge_grpc_reply_is_refused_by_the_channel(grpc_server, colour_bundle) -> None:
    url, mode = grpc_server
    mode["infer"] = "fine"
    with TritonEngine(colour_bundle, url, timeout_s=10) as engine:
        assert engine.run(np.zeros((2, 3, 32, 32), np.float32))[LOGITS_NAME].shape == (2, 3)
    mode["infer"] = "huge"  # 64 MB for two photos' three logits
    with (
        TritonEngine(colour_bundle, url, timeout_s=10) as engine,
        pytest.raises(TritonServerLost, match="stopped answering.*(?i:larger than max|RESOURCE_EXHAUSTED)"),
    ):
        engine.run(np.zeros((2, 3, 32, 32), np.float32))


def test_a_late_grpc_reply_misses_its_deadline(grpc_server, colour_bundle) -> None:
    url, mode = grpc_server
    mode["infer"] = "late"
    with (
        TritonEngine(colour_bundle, url, timeout_s=DEADLINE_S) as engine,
        pytest.raises(TritonServerLost, match="stopped answering"),
    ):
        engine.run(np.zeros((1, 3, 32, 32), np.float32))


def test_engines_lists_a_slow_server_as_unavailable_within_the_deadline(
    hostile, colour_bundle, capsys, monkeypatch
) -> None:
    from catbreed_desktop.core.engines.triton import client as triton_client

    deadlines: list[float] = []

    class Recording(triton_client.TritonEngine):
        def __init__(self, *args, **kwargs) -> None:
            deadlines.append(kwargs.get("timeout_s", triton_client.DEFAULT_TIMEOUT_S))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(triton_client, "TritonEngine", Recording)
    hostile.hostile["config"] = slow_drip
    main(["engines", "--model", str(colour_bundle.path), "--server", hostile.url, "--server-timeout", "0.5"])
    assert deadlines == [0.5]
    assert "did not answer in time" in capsys.readouterr().out
