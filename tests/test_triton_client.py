"""The Triton engine's parts that need no server: URLs, the metadata check, the command-line rules.

Everything that talks to a real server is in test_serving.py.
"""

from __future__ import annotations

import builtins
import re

import pytest

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.engines import EngineUnavailable
from catbreed_desktop.core.engines.triton.client import TritonEngine, model_mismatches, parse_server_url
from catbreed_desktop.core.engines.triton.contract import model_parameters
from catbreed_desktop.core.install_hints import install_extra_command


@pytest.mark.parametrize(
    ("url", "protocol", "location", "ssl"),
    [
        ("http://127.0.0.1:8000", "http", "127.0.0.1:8000", False),
        ("127.0.0.1:9000", "http", "127.0.0.1:9000", False),
        ("grpc://localhost", "grpc", "localhost:8001", False),
        ("https://triton.example:443/v2proxy/", "http", "triton.example:443/v2proxy", True),
        ("grpcs://[::1]:8101", "grpc", "[::1]:8101", True),
    ],
)
def test_server_urls(url: str, protocol: str, location: str, ssl: bool) -> None:
    address = parse_server_url(url)
    assert (address.protocol, address.location, address.ssl) == (protocol, location, ssl)


@pytest.mark.parametrize(
    "url", ["", "ftp://host:1", "http://:8000", "grpc://host:1/path", "http://h:99999", "http://h:1?x=1"]
)
def test_bad_server_urls_are_refused_in_words(url: str) -> None:
    with pytest.raises(ValueError, match="URL|empty"):
        parse_server_url(url)


def test_metadata_check_accepts_the_bundle_and_names_each_difference(colour_bundle) -> None:
    def config(parameters: dict[str, str]) -> dict:
        return {"parameters": {key: {"string_value": value} for key, value in parameters.items()}}

    assert model_mismatches(config(model_parameters(colour_bundle)), colour_bundle) == []
    changed = model_parameters(colour_bundle) | {
        "catbreed_labels": '["Red Cat", "Blue Cat", "Green Cat"]',
        "catbreed_input_size": "64",
        "catbreed_model_sha256": "0" * 64,
    }
    problems = model_mismatches(config(changed), colour_bundle)
    assert len(problems) == 3
    assert "labels are 3 (Red Cat, Blue Cat, Green Cat)" in problems[0]
    assert "input size is 64, the bundle's 32" in problems[1]
    assert "checksum is 000000000000…" in problems[2]
    assert "no catbreed metadata" in model_mismatches({"parameters": {}}, colour_bundle)[0]


def test_missing_tritonclient_says_what_to_install(colour_bundle, monkeypatch) -> None:
    real_import = builtins.__import__

    def without_tritonclient(name, *args, **kwargs):
        if name.startswith("tritonclient"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tritonclient)
    with pytest.raises(
        EngineUnavailable, match="over gRPC needs tritonclient.*" + re.escape(install_extra_command("triton"))
    ):
        TritonEngine(colour_bundle, "grpc://127.0.0.1:1")
    # HTTP needs only the standard library: without tritonclient it gets as far as the server.
    with pytest.raises(EngineUnavailable, match="cannot reach the Triton server at http://127.0.0.1:1"):
        TritonEngine(colour_bundle, "http://127.0.0.1:1")


def test_engine_triton_needs_server_and_server_needs_triton(colour_bundle, tmp_path, capsys) -> None:
    photo = tmp_path / "a.png"
    photo.write_bytes(b"")
    model = ["--model", str(colour_bundle.path)]
    assert main(["classify", str(photo), *model, "--engine", "triton"]) == 2
    assert "--engine triton needs --server URL" in capsys.readouterr().err
    assert main(["classify", str(photo), *model, "--engine", "cpu", "--server", "http://127.0.0.1:1"]) == 2
    assert "--server is for --engine triton" in capsys.readouterr().err
    assert main(["engines", *model, "--engine", "triton"]) == 2
    assert "needs --server" in capsys.readouterr().err


def test_serve_refuses_equal_ports(colour_bundle, capsys) -> None:
    assert (
        main(["serve", "--model", str(colour_bundle.path), "--http-port", "9000", "--grpc-port", "9000"]) == 2
    )
    assert "must differ" in capsys.readouterr().err
