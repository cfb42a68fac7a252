"""bench/gpu_check.py on a machine without a GPU: it says so instead of pretending, and its CPU parts run.

The script is what a lent GPU machine runs once, with no second try; this runs it as it would be
run there (`--quick`, on a few photos the test makes and the colour bundle), in a child process
whose Python cannot open an internet connection, since that machine has none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import ModuleType

import pytest
from factories import COLOURS, import_script, make_photo

from catbreed_desktop.cli.common import gpu_present
from catbreed_desktop.core.engines.names import CPU, ENGINE_TITLES, GPU_ENGINES
from catbreed_desktop.core.engines.onnx_runtime import Placement

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
GPU_VARIANTS = ("tensorrt-fp16", "tensorrt-rtx", "cuda-fp16", "cuda-fp32")
PHOTOS_PER_BREED = 3

# Loaded by every Python the script starts (PYTHONPATH): internet sockets and name lookups fail,
# the local ones that the decoding processes' fork server uses still work.
OFFLINE = """
import socket

def _offline(*args, **kwargs):
    raise OSError("no network here: the lent GPU machine has none")

_connect = socket.socket.connect

def _local_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _offline()
    return _connect(self, address)

socket.socket.connect = _local_only
socket.socket.connect_ex = _local_only
socket.getaddrinfo = _offline
socket.create_connection = _offline
"""

pytestmark = pytest.mark.skipif(
    gpu_present(), reason="this machine has an NVIDIA driver: the script would run the GPU engines for real"
)


@pytest.fixture
def breed_folders(tmp_path: Path) -> Path:
    """One sub-folder per breed, as the Oxford photos come, with a few JPEGs each."""
    folder = tmp_path / "photos"
    for index, (label, colour) in enumerate(COLOURS.items()):
        for seed in range(PHOTOS_PER_BREED):
            make_photo(folder / label.replace(" ", "_") / f"{index}-{seed}.jpg", colour, (80, 60), seed)
    return folder


def test_without_a_gpu_every_gpu_engine_is_refused_with_its_reason_and_the_cpu_parts_run(
    tmp_path: Path, breed_folders: Path, colour_bundle
) -> None:
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "sitecustomize.py").write_text(OFFLINE)
    out = tmp_path / "figures" / "gpu_check.json"
    photos = PHOTOS_PER_BREED * len(COLOURS)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(offline), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, str(SCRIPT), "--quick", "--photos", str(breed_folders)]
    command += [
        "--bundle",
        str(colour_bundle.path),
        "--out",
        str(out),
        "--large-dir",
        str(tmp_path / "large"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=240)

    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["status"] == "complete" and results["errors"] == []

    # Each engine's check ran in a child of its own and refused each GPU engine in its own words.
    check = results["check"]
    assert list(check["runs"]) == [*GPU_ENGINES, CPU]
    for name, run in check["runs"].items():
        assert run["exit_status"] == 0 and f"--engine {name}" in run["command"]
        assert [entry["name"] for entry in run["listing"]["engines"]][: len(GPU_ENGINES)] == list(GPU_ENGINES)
    for name in GPU_ENGINES:
        assert check["engines"][name]["usable"] is False
        assert check["engines"][name]["reason"]
        assert f"{ENGINE_TITLES[name]}: refused: {check['engines'][name]['reason']}" in done.stdout
    assert check["engines"][CPU]["usable"] is True

    # No GPU figure is made up: every GPU variant is refused with the check's reason, nothing timed.
    rows = {row["key"]: row for row in results["engines"]}
    assert list(rows) == [*GPU_VARIANTS, "cpu"]
    for key in GPU_VARIANTS:
        row = rows[key]
        assert row["usable"] is False and row["reason"] == check["engines"][row["engine"]]["reason"]
        assert set(row["engine_only"]) == {"skipped"} and set(row["agreement"]) == {"skipped"}
        assert set(row["end_to_end"]) == {"skipped"}
    verdict = results["verdict"]
    assert verdict["gpu_engines_usable"] == [] and set(verdict["gpu_engines_refused"]) == set(GPU_VARIANTS)
    assert all(target["value"] is None and target["met"] is None for target in verdict["targets"])
    assert "no GPU engine could run here" in done.stdout
    assert results["machine"]["gpu"] is None and results["machine"]["cores"] == os.cpu_count()
    assert results["machine"]["cpu"]

    # The CPU reference ran every part: timed at each batch size, on the photos, through the real CLI.
    cpu = rows["cpu"]
    assert cpu["usable"] is True and cpu["provider"] == ENGINE_TITLES[CPU]
    assert set(cpu["engine_only"]["images_per_s"]) == {"1", "8"}
    assert all(rate > 0 for rate in cpu["engine_only"]["images_per_s"].values())
    assert cpu["agreement"]["photos"] == photos and len(cpu["agreement"]["top1"]) == photos
    # The colour bundle names each photo after its colour: the reference really classified them.
    for path, label in cpu["agreement"]["top1"].items():
        assert Path(path).parent.name == label.replace(" ", "_")
    sets = results["end_to_end"]["sets"]
    assert sets["oxford"]["photos"] == photos and sets["large"]["photos"] == photos
    assert len(list((tmp_path / "large").glob("*.jpg"))) == photos
    for key in ("oxford", "large"):
        figure = cpu["end_to_end"][key]
        assert figure["exit_status"] == 0 and figure["cli_provider"] == ENGINE_TITLES[CPU]
        assert (figure["classified"], figure["failed"]) == (photos, 0)
        assert figure["photos_per_s"] > 0 and figure["target_photos_per_s"] is None


# --- what the GPU machine will see, without one ----------------------------------------------------


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script imported as a module, its additions to `sys.path` and `sys.modules` undone after."""
    return import_script(SCRIPT, monkeypatch)


def _row(key: str, engine: str, rates: dict[str, float], end_to_end: dict | None = None) -> dict:
    target = 4000.0 if key == "cuda-fp16" else None
    best = max(rates.values())
    return {
        "key": key,
        "engine": engine,
        "title": key,
        "usable": True,
        "reason": None,
        "engine_only": {
            "images_per_s": rates,
            "best_images_per_s": best,
            "target_images_per_s": target,
            "meets_target": None if target is None else best >= target,
        },
        "agreement": {"photos": 240, "same_top1": 238, "share": 0.99167, "max_abs_logit_diff": 0.31},
        "end_to_end": end_to_end
        or {"skipped": "catbreed classify runs ONNX Runtime CUDA on the fp16 graph only"},
    }


def _figure(rate: float, target: float | None) -> dict:
    return {"photos": 2371, "exit_status": 0, "photos_per_s": rate, "target_photos_per_s": target,
            "meets_target": None if target is None else rate >= target}  # fmt: skip


def test_with_gpu_figures_the_verdict_takes_the_best_gpu_engine_and_the_summary_says_met_or_missed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gpu_check: ModuleType
) -> None:
    on_gpu = "placement: " + Placement({"CUDAExecutionProvider": 900, "CPUExecutionProvider": 12}).summary()
    leaked = "placement: " + Placement({"CUDAExecutionProvider": 899}, cpu_compute=("MatMul (m)",)).summary()
    started = {"available": True, "started": True}
    assert gpu_check.checked_placement("cuda", {**started, "notes": [on_gpu]})[0] is True
    assert gpu_check.checked_placement("cuda", {**started, "notes": [leaked]}) == (False, leaked)
    assert gpu_check.checked_placement("cuda", {**started, "notes": []})[0] is None
    assert gpu_check.checked_placement("tensorrt", started)[0] is True
    assert gpu_check.checked_placement("tensorrt-rtx", {**started, "providers": ["NvTensorRTRTX"]})[0] is None
    assert gpu_check.checked_placement("cuda", {"available": False}) == (None, "not started")

    rates = {"1": 300.0, "8": 2100.0, "64": 4300.0, "128": 4400.0}
    rows = [
        _row("tensorrt-fp16", "tensorrt", rates, {"oxford": _figure(900.0, 800.0), "large": _figure(350.0, 400.0)}),
        {"key": "tensorrt-rtx", "engine": "tensorrt-rtx", "title": "rtx", "usable": False, "reason": "no plugin",
         "engine_only": {"skipped": "engine not usable"}, "agreement": {"skipped": "engine not usable"},
         "end_to_end": {"skipped": "engine not usable"}},
        _row("cuda-fp16", "cuda", rates, {"oxford": _figure(700.0, 800.0), "large": _figure(390.0, 400.0)}),
        _row("cuda-fp32", "cuda", {key: rate / 2 for key, rate in rates.items()}),
        _row("cpu", "cpu", {"1": 20.0, "8": 60.0, "64": 70.0, "128": 70.0},
             {"oxford": _figure(150.0, None), "large": _figure(120.0, None)}),
    ]  # fmt: skip
    check_entry = {"usable": True, "compute_on_gpu": True, "compute_on_gpu_basis": on_gpu}
    results = {
        "machine": {"gpu": "NVIDIA H200", "cpu": "some CPU", "cores": 16,
                    "runtimes": {"onnxruntime": {"version": "1.31.1", "providers": ["CUDAExecutionProvider"]},
                                 "preload": {"status": "onnxruntime.preload_dlls() called"}, "tensorrt": "10.13"}},
        "bundle": {"path": "models", "architecture": "Dinov2ForImageClassification", "labels": 33},
        "check": {"runs": {"tensorrt": {"exit_status": 0, "seconds": 90.0}},
                  "engines": {"tensorrt": check_entry, "tensorrt-rtx": {"usable": False, "reason": "no plugin"},
                              "cuda": check_entry}},
        "agreement_photos": {"photos": 240},
        "engines": rows,
        "end_to_end": {"sets": {"oxford": {"label": "Oxford size", "photos": 2371},
                                "large": {"label": "12 MP", "photos": 2371, "seconds_to_make": 25.0}}},
        "errors": [],
    }  # fmt: skip
    results["verdict"] = verdict = gpu_check.verdict(results)

    assert verdict["gpu_engines_usable"] == ["tensorrt-fp16", "cuda-fp16", "cuda-fp32"]
    assert verdict["gpu_engines_refused"] == {"tensorrt-rtx": "no plugin"}
    engine_only, oxford, large = verdict["targets"]
    assert (engine_only["value"], engine_only["met"]) == (4400.0, True)
    # Each end-to-end target is judged on the fastest GPU engine, never on the CPU reference.
    assert (oxford["value"], oxford["engine"], oxford["met"]) == (900.0, "tensorrt-fp16", True)
    assert (large["value"], large["engine"], large["met"]) == (390.0, "cuda-fp16", False)

    args = Namespace(repeat=3, batch_sizes=[1, 8, 64, 128], batch_size=128, out=tmp_path / "out.json")
    gpu_check.print_summary(results, args)
    printed = capsys.readouterr().out
    assert "GPU NVIDIA H200" in printed and "TensorRT for RTX: refused: no plugin" in printed
    assert "ONNX Runtime CUDA: usable; compute on the GPU: yes" in printed
    assert "[check: exit 0, 90.0 s]" in printed
    assert ">= 4,000 (best): met" in printed and "238/240 (99.17 %)" in printed
    assert "900.0 (>= 800: met)" in printed and "350.0 (>= 400: MISSED)" in printed
    assert "150.0 (reference)" in printed
    assert "end to end, 12 MP, photos/s: 390.0 (cuda-fp16), target >= 400: MISSED" in printed
