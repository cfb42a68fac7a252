"""`catbreed serve` keeps Triton's log off the terminal unless -v, and says where it went.

Triton printed some 50 lines before `ready:`, two of them errors about CUDA on a machine meant to
run on its CPU. pytriton is not installed here (it needs numpy < 2), so `serving.serve` is
replaced by a stand-in that records what Triton would be configured with; tests/test_serving.py
checks a real server's start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from catbreed_desktop.cli import serve_command
from catbreed_desktop.cli.main import main
from catbreed_desktop.core import paths
from catbreed_desktop.core.engines.triton import server as serving


class StandInEngine:
    provider = "a stand-in engine"

    def close(self) -> None:
        pass


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """What each stand-in start saw: Triton's log file setting and pytriton's log level."""
    # Whatever `catbreed serve` sets in this process is taken back after the test.
    monkeypatch.setenv(serve_command.TRITON_LOG_FILE_VARIABLE, "unset")
    monkeypatch.delenv(serve_command.TRITON_LOG_FILE_VARIABLE)
    monkeypatch.setattr(logging.getLogger("pytriton"), "level", logging.NOTSET)
    seen: list[dict[str, object]] = []

    def serve(bundle, engine, options, on_ready=None) -> None:
        seen.append(
            {
                "log_file": os.environ.get(serve_command.TRITON_LOG_FILE_VARIABLE),
                "pytriton_level": logging.getLogger("pytriton").level,
            }
        )
        on_ready({"http": "http://127.0.0.1:18123", "grpc": "grpc://127.0.0.1:18124", "model": "catbreed"})

    monkeypatch.setattr(serving, "serve", serve)
    monkeypatch.setattr(serve_command, "create_engine", lambda *args, **kwargs: StandInEngine())
    return seen


def serve(colour_bundle, *verbose: str) -> int:
    return main(
        [
            *verbose,
            "serve",
            "--model",
            str(colour_bundle.path),
            "--http-port",
            "18123",
            "--grpc-port",
            "18124",
        ]
    )


def test_triton_logs_to_a_file_named_in_one_line(capsys, colour_bundle, started) -> None:
    log = paths.data_dir() / "triton-18123.log"
    log.write_text("the log of the run before\n")

    assert serve(colour_bundle) == 0

    out, err = capsys.readouterr()
    assert out == "ready: http://127.0.0.1:18123 grpc://127.0.0.1:18124 model catbreed\n"
    assert f"catbreed: Triton's log goes to {log} (`catbreed -v serve` shows it here)\n" in err
    assert started == [{"log_file": str(log), "pytriton_level": logging.WARNING}]
    assert not log.exists()  # each start begins a fresh log (Triton writes it)


def test_verbose_leaves_triton_s_log_on_the_terminal(capsys, colour_bundle, started) -> None:
    assert serve(colour_bundle, "-v") == 0

    assert "Triton's log" not in capsys.readouterr().err
    assert started == [{"log_file": None, "pytriton_level": logging.NOTSET}]
    assert not Path(paths.data_dir() / "triton-18123.log").exists()
