"""The trainer uses the app's core, never its command line or its window.

The trainer shares what the app and the trainer must agree on (bundle format, preprocessing,
softmax, the not-a-cat detector, the Triton contract, the run loop in `core.program`); the `catbreed`
command, the window and the window's settings are the app's own, so no trainer module imports them,
not even inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[1] / "trainer"
APP_ONLY = ("catbreed_desktop.cli", "catbreed_desktop.gui", "catbreed_desktop.core.settings")


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_no_trainer_module_imports_the_apps_command_line_window_or_settings() -> None:
    found = {
        f"{path.name}: {module}"
        for path in sorted(TRAINER.glob("*.py"))
        for module in _imported_modules(path)
        if any(module == banned or module.startswith(banned + ".") for banned in APP_ONLY)
    }
    assert not found, f"the trainer imports the app's own modules: {sorted(found)}"


def test_the_check_sees_function_local_imports(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from catbreed_desktop.core.settings import Settings\n")
    assert "catbreed_desktop.core.settings" in _imported_modules(module)
