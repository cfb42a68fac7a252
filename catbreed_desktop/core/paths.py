"""Where CatBreed keeps things: user data, cache, config, and the default model and icon it ships.

Each user folder follows platformdirs and can be redirected with an environment variable, which
the tests use to stay out of the user's folders; the default model is found in a checkout, an
installed wheel and the frozen build alike, unless $CATBREED_MODEL names another.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "CatBreed"
APP_AUTHOR = "CatBreed"
MODEL_ENV = "CATBREED_MODEL"


def _dir(env: str, default: str) -> Path:
    path = Path(os.environ.get(env) or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Per-user data: sort journals."""
    return _dir("CATBREED_DATA_DIR", platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))


def cache_dir() -> Path:
    """Per-user cache: built TensorRT engines, thumbnails."""
    return _dir("CATBREED_CACHE_DIR", platformdirs.user_cache_dir(APP_NAME, APP_AUTHOR))


def config_dir() -> Path:
    """Per-user settings of the window."""
    return _dir("CATBREED_CONFIG_DIR", platformdirs.user_config_dir(APP_NAME, APP_AUTHOR))


# The package folder; an installed wheel and the frozen build keep the shipped files inside it,
# a source checkout keeps them beside it.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CHECKOUT_DIR = PACKAGE_DIR.parent


def _shipped(packaged: str, in_checkout: str) -> Path:
    """Where a file or folder that ships with the app lies, installed, frozen or in a checkout.

    pyproject.toml maps the checkout's top-level `models/` and `resources/` into the wheel as the
    data-only packages `catbreed_desktop.default_model` and `catbreed_desktop.resources`, and
    packaging/catbreed.spec copies them to the same places in the frozen folder (PyInstaller sets
    `__file__` below `sys._MEIPASS`), so the package-relative path serves both. A checkout, editable
    install included, has no such folder inside the package and uses its own top-level one.
    """
    inside = PACKAGE_DIR / packaged
    if inside.exists():
        return inside
    if (CHECKOUT_DIR / "pyproject.toml").is_file():
        return CHECKOUT_DIR / in_checkout
    return inside  # an installed package missing its data: name the place it should be


def default_model_dir() -> Path:
    """The bundle used when none is given: $CATBREED_MODEL, else the default bundle shipped with the app."""
    override = os.environ.get(MODEL_ENV)
    if override:
        return Path(override)
    return _shipped("default_model", "models")


def app_icon_path() -> Path:
    """The app's 256 x 256 PNG icon, for the window and the desktop entry."""
    return _shipped("resources/catbreed.png", "resources/catbreed.png")
