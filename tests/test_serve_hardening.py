"""`catbreed serve` against hostile clients and crashes, without a Triton server: the pixel check,
the one-line error replies, Triton's settings, the watchdog that ends Triton's processes when
`serve` is killed, and the clean-up of model folders such a kill left behind.

test_serving.py runs the same paths against a real server where pytriton can run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

import numpy as np
import pytest

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.bundle import INPUT_NAME, LOGITS_NAME
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.triton import server as serving
from catbreed_desktop.core.engines.triton import watchdog as serve_watchdog
from catbreed_desktop.core.engines.triton.watchdog import remove_stale_model_folders

CHECKOUT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
pytestmark = pytest.mark.timeout(120)


# --- what a client sends --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (3e38, "outside"), (-40.0, "outside")],
)
def test_pixels_no_preprocessing_produces_are_refused(colour_bundle, value: float, words: str) -> None:
    with create_engine(colour_bundle, "cpu") as engine:
        infer = serving.make_infer_function(engine)
        batch = np.zeros((2, 3, 32, 32), np.float32)
        batch[1, 2, 5, 5] = value
        with pytest.raises(serving.InvalidPixels, match=words):
            infer(**{INPUT_NAME: batch})


def test_every_pixel_a_photo_can_have_is_served(colour_bundle) -> None:
    low, high = serving.pixel_bounds(colour_bundle.preprocessing, margin=0.0)
    black, white = np.broadcast_to(low, (1, 3, 32, 32)), np.broadcast_to(high, (1, 3, 32, 32))
    with create_engine(colour_bundle, "cpu") as engine:
        logits = serving.make_infer_function(engine)(
            **{INPUT_NAME: np.concatenate([black, white]).astype("f4")}
        )
    assert np.isfinite(logits[LOGITS_NAME]).all()
    # ImageNet statistics: black is about -2.1 in red, white about 2.6 in blue.
    assert low.ravel()[0] == pytest.approx(-0.485 / 0.229) and high.ravel()[2] == pytest.approx(0.594 / 0.225)


def fake_handler_module() -> types.ModuleType:
    """A module that answers as pytriton's inference handler does: the traceback text goes to the client."""
    module = types.ModuleType("fake_inference_handler")
    module.traceback = traceback  # type: ignore[attr-defined]

    def answer(call):  # type: ignore[no-untyped-def]
        try:
            call()
        except Exception:
            return module.traceback.format_exc()  # type: ignore[attr-defined]
        return "fine"

    module.answer = answer  # type: ignore[attr-defined]
    return module


def test_error_replies_are_one_line_without_the_servers_internals(colour_bundle, caplog) -> None:
    module = fake_handler_module()
    assert serving.hide_tracebacks_from_clients(module)
    assert not serving.hide_tracebacks_from_clients(module)  # once is enough, and it says so

    with create_engine(colour_bundle, "cpu") as engine:
        infer = serving.make_infer_function(engine)
        reply = module.answer(lambda: infer(**{INPUT_NAME: np.full((1, 3, 32, 32), np.nan, np.float32)}))
    assert reply == "bad request: the pixels hold NaN or infinite values"

    def bug() -> None:
        raise KeyError("/opt/secret/path")

    reply = module.answer(bug)
    assert reply == "the server failed on this request; its log says why"
    # pytriton 0.7 formats the error it passes on with format_exception: the same one line.
    error = ValueError("the pixels hold NaN")
    assert module.traceback.format_exception(None, error, None) == ["bad request: the pixels hold NaN"]
    assert "Traceback" in caplog.text and "/opt/secret/path" in caplog.text  # kept in the server's log
    assert module.traceback.format_list is traceback.format_list  # the rest of the module is the real one


def test_triton_gets_its_http_threads_and_a_bounded_stop() -> None:
    settings = serving.triton_settings(serving.ServeOptions(http_threads=3))
    assert settings["http_thread_count"] == 3 and settings["exit_timeout_secs"] == serving.EXIT_TIMEOUT_S
    assert settings["allow_metrics"] is False


# --- processes a killed serve leaves ---------------------------------------------------------------


FAKE_SERVE = """
import subprocess, sys, time
from catbreed_desktop.core.engines.triton.watchdog import start_watchdog
watchdog = start_watchdog()
child = subprocess.Popen(["sleep", "300"])
shell = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE)
grandchild = shell.stdout.readline().decode().strip()
assert watchdog.refresh()
print(child.pid, shell.pid, grandchild, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    return serve_watchdog._start_time(pid) is not None


def wait_until_gone(pids: list[int], limit_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + limit_s
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@linux_only
def test_killing_serve_kills_every_process_below_it() -> None:
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    serve = subprocess.Popen([sys.executable, "-c", FAKE_SERVE], stdout=subprocess.PIPE, env=env)
    pids: list[int] = []
    try:
        pids = [int(pid) for pid in serve.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
        serve.kill()  # SIGKILL: no handler, no finally
        serve.wait(timeout=30)
        assert wait_until_gone(pids) == []
    finally:
        for pid in [serve.pid, *pids]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@linux_only
def test_a_stopped_serve_leaves_no_process_behind(colour_bundle, tmp_path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the clean-up at start looks here
    started: list[subprocess.Popen[bytes]] = []

    def fake_serve(bundle, engine, options, on_ready=None):  # type: ignore[no-untyped-def]
        started.append(subprocess.Popen(["sleep", "300"]))  # a model process Triton failed to stop
        on_ready({"http": "http://x", "grpc": "grpc://x", "model": "m"})
        raise KeyboardInterrupt

    monkeypatch.setattr(serving, "serve", fake_serve)
    try:
        assert main(["serve", "--model", str(colour_bundle.path), "--engine", "cpu"]) == 0
        started[0].wait(timeout=30)
        assert started[0].returncode == -signal.SIGKILL
    finally:
        if started and started[0].poll() is None:
            started[0].kill()


# --- model folders a killed serve leaves ------------------------------------------------------------


def model_folder(root: Path, name: str, config: str, age_s: float = 3600) -> Path:
    folder = root / name
    (folder / "catbreed" / "1").mkdir(parents=True)
    (folder / "catbreed" / "config.pbtxt").write_text(config)
    (folder / "catbreed" / "1" / "model.py").write_text("# the stub's model\n")
    old = time.time() - age_s
    os.utime(folder, (old, old))
    return folder


@linux_only
def test_only_our_stale_model_folders_are_removed(tmp_path: Path) -> None:
    ours = 'parameters { key: "catbreed_model_sha256" value { string_value: "ab" } }\n'
    stale = model_folder(tmp_path, "folderAb12Cd", ours)
    theirs = model_folder(tmp_path, "folderXyZ123", 'name: "resnet"\n')
    young = model_folder(tmp_path, "folderYoung1", ours, age_s=0)
    in_use = model_folder(tmp_path, "folderInUse1", ours)
    wrong_name = model_folder(tmp_path, "folder12345", ours)
    elsewhere = model_folder(tmp_path / "outside", "target", ours)
    link = tmp_path / "folderLink12"
    link.symlink_to(elsewhere, target_is_directory=True)
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(in_use)])
    # Under load the child may not have exec'd yet: wait until its command line names the folder.
    cmdline = Path(f"/proc/{user.pid}/cmdline")
    deadline = time.monotonic() + 30
    while str(in_use).encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert remove_stale_model_folders(tmp_path) == [stale]
    finally:
        user.kill()
        user.wait()
    assert not stale.exists()
    assert all(folder.is_dir() for folder in (theirs, young, in_use, wrong_name, elsewhere))
    assert (elsewhere / "catbreed" / "config.pbtxt").is_file() and link.is_symlink()
