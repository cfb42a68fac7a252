"""The import rules CONTRIBUTING.md states, held: the core and the command line never load Qt, and
the light modules (engine names, which files are photos) load neither numpy nor PIL.

Each check imports in a fresh interpreter, since this process has long loaded everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import catbreed_desktop

CHECKOUT = Path(catbreed_desktop.__file__).resolve().parents[1]


def _modules_loaded_by(imports: list[str]) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing each of `imports`."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {imports!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=CHECKOUT, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return set(json.loads(completed.stdout.splitlines()[-1]))


def _modules_under(package: str) -> list[str]:
    """Every module of `package`, found on disk (importing them is the subprocess's job)."""
    folder = CHECKOUT / package.replace(".", "/")
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(CHECKOUT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_core_and_the_command_line_load_no_qt() -> None:
    modules = _modules_under("catbreed_desktop.core") + _modules_under("catbreed_desktop.cli")
    assert "catbreed_desktop.core.photos.formats" in modules and "catbreed_desktop.cli.main" in modules
    assert "PySide6" not in _modules_loaded_by(modules)


@pytest.mark.parametrize(
    "module",
    [
        "catbreed_desktop.core.engines.names",
        "catbreed_desktop.core.photos.formats",
        "catbreed_desktop.core.photos",
        "catbreed_desktop.core.engines",
    ],
)
def test_light_modules_load_neither_numpy_nor_pil(module: str) -> None:
    loaded = _modules_loaded_by([module])
    assert module.split(".")[0] in loaded  # the import did happen
    assert not {"numpy", "PIL"} & loaded, f"{module} loads {sorted({'numpy', 'PIL'} & loaded)}"
