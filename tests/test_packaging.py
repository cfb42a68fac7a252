"""The wheel and sdist: `python -m build` packs the default model and icon, and nothing the app does
not need; the wheel installed into a fresh venv outside the checkout classifies real photos with
no `--model`.

Building (about 10 s) and installing into a fresh venv with its dependencies (about 20 s) happen
once per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = ("model.onnx", "bundle.json", "ood.npz", "README.md", "MODEL_CARD.md", "card_notes.md")
WHEEL_LIMIT = 30e6  # the model is 27 MB of it; a wheel much bigger has picked up something else


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built as a release is: the wheel from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def fresh_venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv outside the checkout, with the wheel and its `cpu` extra installed from the index."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    assert ROOT not in venv.parents  # outside the checkout, so nothing can be found through it
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    completed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{dists['wheel']}[cpu]"],
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return venv


def _outside_environment() -> dict[str, str]:
    """The test's environment without anything that could lead back to the checkout or its model."""
    hidden = {"PYTHONPATH", "CATBREED_MODEL", "VIRTUAL_ENV", "PYTHONHOME"}
    return {key: value for key, value in os.environ.items() if key not in hidden}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_wheel_holds_every_module_the_default_model_and_the_icon_and_nothing_else(dists) -> None:
    wheel = dists["wheel"]
    assert wheel.stat().st_size < WHEEL_LIMIT, f"{wheel.name} is {wheel.stat().st_size / 1e6:.1f} MB"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in MODEL_FILES:
            packed = archive.read(f"catbreed_desktop/default_model/{name}")
            assert _sha256(packed) == _sha256((ROOT / "models" / name).read_bytes()), name
        assert (
            archive.read("catbreed_desktop/resources/catbreed.png")
            == (ROOT / "resources" / "catbreed.png").read_bytes()
        )
    # pyproject.toml lists the packages by hand: a package left out of it would be missing here.
    sources = {
        path.relative_to(ROOT).as_posix()
        for package in ("catbreed_desktop", "trainer")
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sources - names == set()
    assert "trainer/aliases.json" in names
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"catbreed_desktop", "trainer", wheel.name.split("-py3")[0] + ".dist-info"}
    unwanted = [
        name for name in names if name.endswith((".pyc", ".engine", "screenshot.png", "make_icon.py"))
    ]
    assert unwanted == []


def test_the_sdist_holds_the_model_folder_and_the_whole_test_suite(dists) -> None:
    with tarfile.open(dists["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"models/{name}" for name in MODEL_FILES} <= names
    assert {"pyproject.toml", "resources/catbreed.png", "tests/conftest.py", "tests/factories.py"} <= names


def test_the_installed_wheel_classifies_real_photos_with_its_own_default_model(
    fresh_venv, shared_cats, tmp_path
) -> None:
    photos = {
        path: folder.name.replace("_", " ")
        for folder in sorted(shared_cats.iterdir())
        if folder.is_dir()
        for path in sorted(folder.glob("*.jpg"))[:2]
    }
    assert len(photos) == 24
    completed = subprocess.run(
        [str(fresh_venv / "bin" / "catbreed"), "classify", "--json", "--engine", "cpu", *map(str, photos)],
        cwd=tmp_path,
        env=_outside_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    packaged = fresh_venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    packaged = packaged / "site-packages" / "catbreed_desktop" / "default_model"
    assert f"from {packaged}" in completed.stderr  # the venv's own copy, not the checkout's models/
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert len(records) == len(photos)
    right = sum(record["label"] == photos[Path(record["path"])] for record in records)
    assert right >= 0.8 * len(records), completed.stdout


def test_the_installed_wheel_writes_a_desktop_entry_with_its_own_launcher_and_icon(
    fresh_venv, tmp_path
) -> None:
    environment = {**_outside_environment(), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    completed = subprocess.run(
        [str(fresh_venv / "bin" / "catbreed-desktop"), "--install-desktop-entry"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    entry = (tmp_path / "xdg" / "applications" / "org.catbreed.CatBreed.desktop").read_text()
    assert f"\nExec={fresh_venv / 'bin' / 'catbreed-desktop'} %F\n" in entry
    assert (
        tmp_path / "xdg" / "icons" / "hicolor" / "256x256" / "apps" / "org.catbreed.CatBreed.png"
    ).is_file()
