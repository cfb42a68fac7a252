"""Draw the CatBreed app icon (a cat face on a rounded tile) and save it as resources/catbreed.png.

Run `python packaging/make_icon.py` to regenerate it; the PNG is committed so builds need no script.
The script lives here, not in resources/, because resources/ is packaged as
`catbreed_desktop.resources` and every module in it would land in the wheel.
The drawing is supersampled 4x and reduced, which smooths the edges; a palette keeps the file small.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
SCALE = 4  # draw large, then reduce, for anti-aliased edges
TILE = (46, 94, 170)
FUR = (245, 166, 66)
DARK = (40, 30, 30)
PINK = (240, 130, 150)


def draw_icon(size: int = SIZE) -> Image.Image:
    """The icon as an RGBA image of `size` x `size` pixels."""
    big = size * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        # Coordinates are given on a 0..1 grid so the drawing is independent of the size.
        return (round(x0 * big), round(y0 * big), round(x1 * big), round(y1 * big))

    def points(*xy: tuple[float, float]) -> list[tuple[int, int]]:
        return [(round(x * big), round(y * big)) for x, y in xy]

    draw.rounded_rectangle(box(0.02, 0.02, 0.98, 0.98), radius=round(0.2 * big), fill=TILE)
    draw.polygon(points((0.2, 0.48), (0.24, 0.14), (0.44, 0.32)), fill=FUR)  # left ear
    draw.polygon(points((0.8, 0.48), (0.76, 0.14), (0.56, 0.32)), fill=FUR)  # right ear
    draw.polygon(points((0.25, 0.38), (0.265, 0.22), (0.37, 0.31)), fill=PINK)
    draw.polygon(points((0.75, 0.38), (0.735, 0.22), (0.63, 0.31)), fill=PINK)
    draw.ellipse(box(0.17, 0.26, 0.83, 0.86), fill=FUR)  # head
    draw.ellipse(box(0.32, 0.46, 0.42, 0.58), fill=DARK)  # eyes
    draw.ellipse(box(0.58, 0.46, 0.68, 0.58), fill=DARK)
    draw.polygon(points((0.46, 0.64), (0.54, 0.64), (0.5, 0.69)), fill=PINK)  # nose
    for side in (-1, 1):  # whiskers
        for dy in (-0.03, 0.02):
            start = (0.5 + side * 0.1, 0.68 + dy / 2)
            end = (0.5 + side * 0.36, 0.66 + dy * 2)
            draw.line(points(start, end), fill=DARK, width=max(1, big // 128))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def save_icon(path: Path, size: int = SIZE) -> Path:
    """Save the icon as a small palette PNG (with transparency) and return the path."""
    icon = draw_icon(size).quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    icon.save(path, optimize=True)
    return path


if __name__ == "__main__":
    target = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "resources" / "catbreed.png"
    )
    print(save_icon(target))
