"""Nothing leaves the computer: ONNX Runtime's telemetry is off in every process the app starts.

ONNX Runtime 1.2x writes a device id and an event database under ~/.cache/Microsoft on its first
import, on Linux too, unless ORT_DISABLE_TELEMETRY=1 is set before that import. The test runs
`catbreed classify` in a fresh home folder and looks for anything ONNX Runtime left there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from factories import COLOURS, make_photo

ROOT = Path(__file__).resolve().parents[1]
TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"  # ONNX Runtime's own switch, read at its first import


def traces_of_onnxruntime(home: Path) -> list[str]:
    return [
        str(path.relative_to(home))
        for path in home.rglob("*")
        if "Microsoft" in path.parts or "onnxruntime" in path.name.lower()
    ]


def test_a_first_classification_in_a_fresh_home_leaves_no_onnxruntime_device_id(
    tmp_path: Path, colour_bundle
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    photo = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])
    environment = {
        key: value
        for key, value in os.environ.items()
        if key != TELEMETRY_VARIABLE and not key.startswith("XDG_")
    }
    environment["HOME"] = str(home)
    command = [sys.executable, "-m", "catbreed_desktop.cli.main", "classify", str(photo)]
    completed = subprocess.run(
        [*command, "--model", str(colour_bundle.path), "--engine", "cpu"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Red Cat" in completed.stdout  # ONNX Runtime did run
    assert traces_of_onnxruntime(home) == []


def test_the_app_sets_the_switch_only_where_the_user_has_not(tmp_path: Path) -> None:
    # The switch is read once, at ONNX Runtime's first import: a process started with it set to 0
    # (someone who wants ONNX Runtime as it comes) keeps that.
    probe = "import os, catbreed_desktop; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    for given, expected in ((None, "1"), ("0", "0")):
        environment = {k: v for k, v in os.environ.items() if k != TELEMETRY_VARIABLE}
        if given is not None:
            environment[TELEMETRY_VARIABLE] = given
        completed = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.stdout.strip() == expected, completed.stderr
