"""Package re-exports that import a submodule only when one of its names is first used.

A package's `__init__` runs before any of its submodules, so eager re-exports would make every
light submodule (the photo formats, the engine names) as slow to import as the heaviest one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any


def lazy_exports(package: str, names: Sequence[str], submodules: Sequence[str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that finds each of `names` in the first of `submodules`
    (relative to `package`) that has it; list the cheap submodules first, since each one tried is imported.
    """
    exported = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in exported:
            for submodule in submodules:
                module = importlib.import_module(f"{package}.{submodule}")
                if hasattr(module, name):
                    return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
