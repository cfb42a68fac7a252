"""Trainer commands show their own lines, not the libraries' chatter, unless run with -v.

Loading a pretrained backbone made transformers print a "LOAD REPORT" table (with raw colour
codes, listing the new head as MISSING) after a "Loading weights" bar; `export` added PyTorch's
"torchvision is not installed" warnings and a FutureWarning. The commands run in subprocesses, as
people run them, since the libraries read their switches when first imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_data import make_breed_folders
from trainer_data import run_trainer as run_in_process

from trainer import cli
from trainer.quiet import QUIET_ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
CHATTER = ("LOAD REPORT", "MISSING", "\x1b[", "Loading weights", "torchvision", "Warning")
# Each argument a command line (its words on separate lines), all in one interpreter as `python -m
# trainer` would run them one after the other; the exit status is the worst one.
RUNNER = (
    "import sys; from trainer.cli import main; sys.exit(max([main(a.split('\\n')) for a in sys.argv[1:]]))"
)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prepared work folder, the same trained (tiny preset) and evaluated, and a tiny pretrained DINOv2."""
    from transformers import Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("quiet")
    make_breed_folders(root / "data", per_class=6, planted=0)
    run_in_process("prepare", "--data", str(root / "data"), "--out", str(root / "prepared"))
    shutil.copytree(root / "prepared", root / "work")
    run_in_process("train", str(root / "work"), "--preset", "tiny", "--epochs", "1", "--batch-size", "8")
    run_in_process("evaluate", str(root / "work"))
    config = Dinov2Config(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )  # fmt: skip
    Dinov2Model(config).save_pretrained(root / "backbone")
    return {"root": root, "prepared": root / "prepared", "work": root / "work", "backbone": root / "backbone"}


def baseline_on_a_fresh_copy(work: dict[str, Path], tmp_path: Path) -> list[str]:
    """`baseline` with the backbone on the prepared folder afresh: no features cached, so the backbone loads."""
    folder = shutil.copytree(work["prepared"], tmp_path / "prepared")
    return ["baseline", str(folder), "--base-model", str(work["backbone"]), "--image-size", "32"]


def run_trainer(*commands: list[str]) -> subprocess.CompletedProcess[str]:
    # As from a shell: without the switches an in-process trainer run of another test has set here.
    environment = {name: value for name, value in os.environ.items() if name not in QUIET_ENVIRONMENT}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *("\n".join(command) for command in commands)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_loading_a_backbone_and_exporting_print_only_the_trainers_own_lines(work, tmp_path: Path) -> None:
    export = ["export", str(work["work"]), "--out", str(tmp_path / "bundle")]

    completed = run_trainer(baseline_on_a_fresh_copy(work, tmp_path), export)

    assert completed.returncode == 0, completed.stderr
    assert "baseline (C=" in completed.stdout and "bundle written to" in completed.stdout
    shown = [word for word in CHATTER if word in completed.stderr + completed.stdout]
    assert shown == [], completed.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_verbose_shows_the_libraries_output(work, tmp_path: Path) -> None:
    completed = run_trainer(["-v", *baseline_on_a_fresh_copy(work, tmp_path)])

    assert completed.returncode == 0, completed.stderr
    assert "LOAD REPORT" in completed.stderr and "classifier.weight" in completed.stderr


def test_the_command_line_quiets_the_libraries_unless_verbose(monkeypatch, tmp_path: Path) -> None:
    asked: list[bool] = []
    monkeypatch.setattr(cli, "quiet_libraries", asked.append)
    monkeypatch.setattr(cli, "_subset", lambda args: 0)
    for verbose in ([], ["-v"]):
        assert cli.main([*verbose, "subset", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert asked == [False, True]
