"""`catbreed serve` on a real Triton Inference Server (pytriton) in a subprocess, used over loopback.

The server runs from its own environment (numpy < 2, `serve_env`); the client side, `--engine
triton` over HTTP or gRPC, runs here. Ports are chosen free at run time, on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serve_env import running_server, serve_unsupported_reason

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, load_bundle
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.engines import EngineUnavailable, create_engine
from catbreed_desktop.core.engines.triton.client import TritonEngine, TritonServerLost
from catbreed_desktop.core.paths import default_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
if (reason := serve_unsupported_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=reason))

SHIPPED = default_model_dir()
MAX_BATCH = 8


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory: pytest.TempPathFactory):
    """The shipped model served once for the module, on free loopback ports."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_server(SHIPPED, log, "--engine", "cpu", "--max-batch", str(MAX_BATCH)) as server:
        yield server


def some_cats(shared_cats: Path, per_breed: int = 2) -> list[Path]:
    """`per_breed` photos of each breed folder, in a fixed order: 24 for the 12 breeds."""
    photos: list[Path] = []
    for folder in sorted(p for p in shared_cats.iterdir() if p.is_dir()):
        photos += sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[
            :per_breed
        ]
    return photos


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder`, by relative path, with the sha256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def top1(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, str]:
    assert main(argv) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    return {record["path"]: record["label"] for record in map(json.loads, lines)}


def test_server_gets_ready_and_publishes_the_bundles_metadata(shipped_server) -> None:
    bundle = load_bundle(SHIPPED)
    with urllib.request.urlopen(f"{shipped_server.http_url}/v2/models/catbreed/config", timeout=10) as reply:
        config = json.load(reply)
    parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
    assert json.loads(parameters["catbreed_labels"]) == list(bundle.labels)
    assert parameters["catbreed_model_sha256"] == bundle.model_sha256
    assert parameters["catbreed_input_size"] == "224"
    assert config["max_batch_size"] == MAX_BATCH
    assert "dynamic_batching" in config
    assert [tensor["name"] for tensor in config["input"]] == [INPUT_NAME]
    assert [tensor["name"] for tensor in config["output"]] == [LOGITS_NAME, EMBEDDING_NAME]
    assert shipped_server.started_in_s < 60


def test_a_normal_start_prints_no_triton_log_and_names_the_file_it_went_to(shipped_server) -> None:
    started = shipped_server.log.read_text(errors="replace").split("\nready: ")[0].splitlines()
    # A server killed by an earlier run on this machine (another test session) leaves a model
    # folder that this start removes and names: a line of the app's own, not Triton's log.
    started = [line for line in started if not line.endswith("left by a catbreed server that was killed")]
    # Before: some 50 lines of Triton's log, with "E..." lines about CUDA on a CPU-only machine.
    assert all(line.startswith("catbreed: ") for line in started), started
    named = [line for line in started if "Triton's log goes to " in line]
    assert len(named) == 1 and len(started) <= 3, started
    log = Path(named[0].split("Triton's log goes to ")[1].split(" (")[0])
    assert log.parent == shipped_server.log.parent / "data"
    assert "Started HTTPService" in log.read_text(errors="replace")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_engine_matches_the_local_cpu_engine(shipped_server, protocol: str) -> None:
    bundle = load_bundle(SHIPPED)
    # Within what preprocessing produces (about -2.1 to 2.6 for ImageNet statistics): the server refuses more.
    batch = np.random.default_rng(7).uniform(-2.0, 2.0, size=(5, 3, 224, 224)).astype(np.float32)
    url = shipped_server.http_url if protocol == "http" else shipped_server.grpc_url
    # The int8 model quantizes each batch with one dynamic scale, so a photo's logits depend on its
    # batch-mates: one photo per request, one request at a time, makes the server's batches those
    # of the local run. (Top-1 with batches and requests in flight is the next test's business.)
    with (
        create_engine(bundle, "cpu") as local,
        TritonEngine(bundle, url, request_size=1, in_flight=1) as remote,
    ):
        served = remote.run(batch)
        expected = [local.run(batch[row : row + 1]) for row in range(len(batch))]
    for name in (LOGITS_NAME, EMBEDDING_NAME):
        np.testing.assert_allclose(served[name], np.concatenate([e[name] for e in expected]), atol=1e-4)


def test_classify_through_the_server_gives_the_local_top1_on_24_photos(
    shipped_server, shared_cats, capsys
) -> None:
    photos = [str(p) for p in some_cats(shared_cats)]
    assert len(photos) >= 24
    common = ["classify", *photos, "--json", "--model", str(SHIPPED)]
    local = top1(capsys, [*common, "--engine", "cpu"])
    served = top1(capsys, [*common, "--engine", "triton", "--server", shipped_server.http_url])
    assert len(local) == len(photos)
    assert served == local


def test_sort_through_the_server_then_undo_restores_the_inbox_exactly(
    shipped_server, shared_cats, tmp_path, capsys
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for photo in some_cats(shared_cats, per_breed=1):
        shutil.copy2(photo, inbox / photo.name)
    before = tree(inbox)
    sorted_dir = tmp_path / "sorted"
    argv = ["sort", str(inbox), "--into", str(sorted_dir), "--model", str(SHIPPED)]
    assert main([*argv, "--engine", "triton", "--server", shipped_server.grpc_url]) == 0, (
        capsys.readouterr().err
    )
    assert tree(inbox) == {}
    assert sorted(tree(sorted_dir).values()) == sorted(before.values())
    assert main(["undo"]) == 0
    assert tree(inbox) == before
    assert tree(sorted_dir) == {}


def test_bad_requests_get_error_replies_and_the_server_keeps_serving(shipped_server) -> None:
    from catbreed_desktop.core.engines.triton.kserve_http import KServeError, KServeHttpClient

    url = shipped_server.http_url.removeprefix("http://")
    client = KServeHttpClient(url, network_timeout=30)

    def infer(array: np.ndarray) -> dict[str, np.ndarray]:
        return client.infer("catbreed", {INPUT_NAME: array}, [LOGITS_NAME])

    bad = {
        "wrong size": np.zeros((1, 3, 100, 100), np.float32),
        "oversized batch": np.zeros((MAX_BATCH + 1, 3, 224, 224), np.float32),
        "wrong type": np.zeros((1, 3, 224, 224), np.float64),
        "NaN pixels": np.full((1, 3, 224, 224), np.nan, np.float32),
        "infinite pixels": np.full((1, 3, 224, 224), np.inf, np.float32),
        "finite pixels no photo has": np.full((1, 3, 224, 224), 3e38, np.float32),
    }
    for name, array in bad.items():
        with pytest.raises(KServeError) as refused:
            infer(array)
        # None of the server's own frames, paths or library versions; pytriton's stub in Triton's
        # Python backend still puts its two frames around the message, which this cannot change.
        assert "catbreed_desktop" not in str(refused.value) and "site-packages" not in str(refused.value), (
            name
        )
        if "pixels" in name:
            assert "bad request: " in str(refused.value), name
        assert client.is_server_live(), name
    for body in (
        b"{not json",
        json.dumps({"inputs": [{"name": INPUT_NAME, "shape": [1], "datatype": "FP32"}]}).encode(),
    ):
        request = urllib.request.Request(
            f"{shipped_server.http_url}/v2/models/catbreed/infer", data=body, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as reply:
            urllib.request.urlopen(request, timeout=10)
        assert reply.value.code >= 400  # Triton answers 400 or 500, with a message
        assert client.is_server_live()
    good = infer(np.zeros((2, 3, 224, 224), np.float32))
    assert good[LOGITS_NAME].shape == (2, len(load_bundle(default_model_dir()).labels))
    client.close()


def test_server_down_at_start_names_the_url(tmp_path, colour_bundle, capsys) -> None:
    from serve_env import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    photo = tmp_path / "cat.png"
    from factories import COLOURS, make_photo

    make_photo(photo, COLOURS["Red Cat"])
    status = main(
        ["classify", str(photo), "--model", str(colour_bundle.path), "--engine", "triton", "--server", url]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert f"cannot reach the Triton server at {url}" in err
    with pytest.raises(EngineUnavailable, match="needs the server's URL"):
        create_engine(colour_bundle, "triton")


def test_a_server_serving_another_model_is_refused(shipped_server, colour_bundle) -> None:
    with pytest.raises(EngineUnavailable) as refused:
        TritonEngine(colour_bundle, shipped_server.http_url)
    message = str(refused.value)
    assert "is not the one in" in message
    assert (
        f"labels are {len(load_bundle(default_model_dir()).labels)} (Abyssinian" in message
        and "model checksum" in message
        and "input size" in message
    )


def _colour_photos(folder: Path, count: int) -> list[Path]:
    from factories import COLOURS, make_photo

    names = list(COLOURS)
    return [make_photo(folder / f"cat{i:02d}.png", COLOURS[names[i % 3]], seed=i) for i in range(count)]


def _kill_after_first_batch(monkeypatch: pytest.MonkeyPatch, server) -> list[int]:
    """Let the engine's first batch through, then crash the server before the second is sent."""
    calls: list[int] = []
    real_run = TritonEngine.run

    def run(self: TritonEngine, batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        if len(calls) == 2:
            server.kill()
        return real_run(self, batch)

    monkeypatch.setattr(TritonEngine, "run", run)
    return calls


def test_server_killed_mid_classify_stops_the_run_and_keeps_what_was_done(
    colour_bundle, tmp_path, monkeypatch
) -> None:
    photos = _colour_photos(tmp_path / "photos", 12)
    with running_server(colour_bundle.path, tmp_path / "serve.log", "--engine", "cpu") as server:
        calls = _kill_after_first_batch(monkeypatch, server)
        results: list[Prediction] = []
        engine = TritonEngine(colour_bundle, server.http_url)
        with (
            Classifier(colour_bundle, engine=engine, batch_size=4) as classifier,
            pytest.raises(
                TritonServerLost, match=f"the Triton server at {server.http_url} stopped answering"
            ),
        ):
            for result in classifier.classify(photos):
                assert isinstance(result, Prediction)
                results.append(result)
    assert calls == [4, 4]
    assert [r.path for r in results] == photos[:4]
    assert [r.label for r in results] == ["Red Cat", "Green Cat", "Blue Cat", "Red Cat"]


def test_server_killed_mid_sort_moves_nothing(colour_bundle, tmp_path, monkeypatch, capsys) -> None:
    inbox = tmp_path / "inbox"
    _colour_photos(inbox, 12)
    before = tree(inbox)
    sorted_dir = tmp_path / "sorted"
    with running_server(colour_bundle.path, tmp_path / "serve.log", "--engine", "cpu") as server:
        _kill_after_first_batch(monkeypatch, server)
        status = main(
            ["sort", str(inbox), "--into", str(sorted_dir), "--model", str(colour_bundle.path),
             "--batch-size", "4", "--engine", "triton", "--server", server.grpc_url]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2, err
    assert "stopped answering" in err and "Stopped after classifying 4 of 12 photos; nothing was moved" in err
    assert tree(inbox) == before
    assert not sorted_dir.exists() or tree(sorted_dir) == {}
    assert main(["undo"]) == 1  # no sort was started, so there is nothing to undo
