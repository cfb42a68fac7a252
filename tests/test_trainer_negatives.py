"""`python -m trainer negatives`: the held-out non-cat photos are decodable and hold no cat."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from catbreed_desktop.core.photos import load_photo
from trainer.negatives import write_negatives


def test_negatives_are_decodable_non_cat_photos(tmp_path: Path) -> None:
    counts = write_negatives(tmp_path, faces=5, synthetic=6)

    assert counts["faces"] == 5 and counts["synthetic"] == 6
    assert counts["photos"] >= 10  # scikit-image, scikit-learn and matplotlib sample photos
    names = {path.name for path in (tmp_path / "photos").iterdir()}
    assert not any("chelsea" in name for name in names)  # scikit-image's sample cat is no negative
    for path in sorted(tmp_path.rglob("*.png")):
        assert load_photo(path).mode == "RGB"
    with Image.open(tmp_path / "synthetic" / "synthetic-000.png") as image:
        assert image.size == (256, 256)
