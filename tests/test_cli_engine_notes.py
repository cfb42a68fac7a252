"""Notes on faster engines passed over are for -v, or for a GPU that could not be used.

On a CPU machine they only advised installing TensorRT and onnxruntime-gpu on every run; in the
frozen build the `pip install` advice means nothing at all.
"""

from __future__ import annotations

import sys

import pytest
from factories import COLOURS, make_photo

from catbreed_desktop.cli import common
from catbreed_desktop.cli.main import main

NOTES = [
    "TensorRT skipped: TensorRT is not installed or cannot load (No module named 'tensorrt'); "
    "pip install 'catbreed-desktop[tensorrt]' (TensorRT 10+ and cuda-python; NVIDIA GPU and driver)",
    "ONNX Runtime CUDA skipped: ONNX Runtime CUDA is not available: the installed onnxruntime has no "
    "CUDA provider (install onnxruntime-gpu instead of onnxruntime: pip uninstall -y onnxruntime && "
    "pip install 'catbreed-desktop[gpu]')",
]


@pytest.fixture
def photo(tmp_path, monkeypatch):
    # The notes of a CPU machine, whatever engines this machine has.
    monkeypatch.setattr(common.Classifier, "fallback_notes", property(lambda self: list(NOTES)))
    return make_photo(tmp_path / "red.png", COLOURS["Red Cat"])


def notes_printed(capsys, *argv: str) -> list[str]:
    assert main(list(argv)) == 0
    return [line for line in capsys.readouterr().err.splitlines() if ": note: " in line]


def test_a_machine_without_a_gpu_gets_no_engine_notes_unless_verbose(
    capsys, monkeypatch, colour_bundle, photo
) -> None:
    monkeypatch.setattr(common, "gpu_present", lambda: False)
    command = ["classify", str(photo), "--model", str(colour_bundle.path), "--engine", "auto"]
    assert notes_printed(capsys, *command) == []
    assert notes_printed(capsys, "-v", *command) == [f"catbreed: note: {note}" for note in NOTES]


def test_a_gpu_that_cannot_be_used_is_always_explained(capsys, monkeypatch, colour_bundle, photo) -> None:
    monkeypatch.setattr(common, "gpu_present", lambda: True)
    command = ["classify", str(photo), "--model", str(colour_bundle.path), "--engine", "auto"]
    assert notes_printed(capsys, *command) == [f"catbreed: note: {note}" for note in NOTES]


def test_the_frozen_build_drops_pip_advice(monkeypatch) -> None:
    monkeypatch.setattr(common, "gpu_present", lambda: True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert common.engine_notes(NOTES, verbose=False) == [
        "TensorRT skipped: TensorRT is not installed or cannot load (No module named 'tensorrt')",
        "ONNX Runtime CUDA skipped: ONNX Runtime CUDA is not available: the installed onnxruntime has no "
        "CUDA provider",
    ]
    monkeypatch.setattr(sys, "frozen", False)
    assert common.engine_notes(NOTES, verbose=False) == NOTES
    monkeypatch.setattr(common, "gpu_present", lambda: False)
    assert common.engine_notes(NOTES, verbose=False) == []
    assert common.engine_notes(NOTES, verbose=True) == NOTES
