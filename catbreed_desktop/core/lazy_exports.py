"""Package re-exports that import a submodule only when one of its names is first used.

A package's `__init__` runs before any of its submodules, so eager re-exports would make every
light submodule (the photo formats, the engine names) as slow to import as the heaviest one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that finds each name of `homes` in its submodule.

    `homes` maps a public name to the submodule (relative to `package`) that defines it.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home}"), name)

    return __getattr__
