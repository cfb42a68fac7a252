"""Where CatBreed keeps things: user data (sort journals), cache (TensorRT engines), config, models.

Each location follows platformdirs and can be redirected with an environment variable, which
the tests use to stay out of the user's folders.
"""

from __future__ import annotations

import os
import sys
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


def project_root() -> Path:
    """The source checkout, or the unpacked PyInstaller folder when frozen."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root)
    return Path(__file__).resolve().parents[2]


def default_model_dir() -> Path:
    """The bundle used when none is given: $CATBREED_MODEL, else the project's `models/` folder."""
    override = os.environ.get(MODEL_ENV)
    if override:
        return Path(override)
    return project_root() / "models"
