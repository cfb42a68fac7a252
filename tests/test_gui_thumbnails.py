"""Thumbnails: decoded off the GUI thread through load_photo (EXIF rotation applied), cached on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from PIL import Image

from catbreed_desktop.gui.thumbnails import ThumbnailLoader, cache_key, make_thumbnail, thumbnail_cache_dir

pytestmark = pytest.mark.timeout(60)


def rotated_jpeg(path: Path) -> Path:
    """A 80x40 photo stored sideways: EXIF orientation 6 says to turn it into 40x80."""
    image = Image.new("RGB", (80, 40), COLOURS["Red Cat"])
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    return path


def test_thumbnails_are_upright_and_cached_by_path_time_and_size(tmp_path: Path, qapp) -> None:
    photo = rotated_jpeg(tmp_path / "sideways.jpg")
    cache = tmp_path / "cache"
    cache.mkdir()
    image = make_thumbnail(photo, 64, cache)
    assert (image.width(), image.height()) == (32, 64)
    key = cache_key(photo, 64)
    assert (cache / f"{key}.png").is_file()

    rotated_jpeg(photo)  # rewritten: a new time stamp, so a new key
    photo.write_bytes(photo.read_bytes() + b"\0")
    assert cache_key(photo, 64) != key
    assert cache_key(tmp_path / "missing.jpg", 64) is None


def test_loader_decodes_in_the_background_and_reports_failures(qtbot, tmp_path: Path) -> None:
    good = make_photo(tmp_path / "good.png", COLOURS["Blue Cat"], size=(300, 200))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"broken")
    loader = ThumbnailLoader()
    assert loader.thumbnail(good, 100) is None  # not ready yet: requested
    with qtbot.waitSignals([loader.ready, loader.ready], timeout=10_000):
        assert loader.thumbnail(bad, 100) is None
    image = loader.thumbnail(good, 100)
    assert (image.width(), image.height()) == (100, 67)
    assert loader.thumbnail(bad, 100) is None and loader.is_idle()  # a failure is not retried
    assert any(thumbnail_cache_dir().iterdir())
    loader.shutdown()
