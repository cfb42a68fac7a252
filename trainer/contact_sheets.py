"""Contact sheets: a grid of captioned thumbnails, so a person can check what a step left out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

THUMBNAIL = 112
SHEET_COLUMNS = 8
SHEET_MAX_PHOTOS = 64


@dataclass(frozen=True)
class SheetEntry:
    """One photo on a sheet, with two short caption lines."""

    path: Path
    caption: str
    detail: str = ""


def contact_sheet(path: Path, title: str, entries: Sequence[SheetEntry]) -> Path:
    """Write the first `SHEET_MAX_PHOTOS` entries as a PNG grid headed by `title`."""
    from catbreed_desktop.core.photos import PhotoError, load_photo

    shown = list(entries[:SHEET_MAX_PHOTOS])
    rows = (len(shown) + SHEET_COLUMNS - 1) // SHEET_COLUMNS
    caption, header = 26, 24
    cell_height = THUMBNAIL + caption
    sheet = Image.new("RGB", (SHEET_COLUMNS * THUMBNAIL, header + rows * cell_height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (4, 4),
        title + (f" (first {len(shown)} of {len(entries)} shown)" if len(shown) < len(entries) else ""),
        fill="black",
    )
    for number, entry in enumerate(shown):
        x = (number % SHEET_COLUMNS) * THUMBNAIL
        y = header + (number // SHEET_COLUMNS) * cell_height
        try:
            photo = load_photo(entry.path)
            photo.thumbnail((THUMBNAIL - 4, THUMBNAIL - 4))
            sheet.paste(photo, (x + 2, y + 2))
        except PhotoError:
            draw.text((x + 4, y + 40), "unreadable", fill="red")
        draw.text((x + 2, y + THUMBNAIL), entry.caption[:17], fill="black")
        draw.text((x + 2, y + THUMBNAIL + 12), entry.detail[:18], fill="gray")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def file_stem(name: str) -> str:
    """A file-name-safe form of a breed or source name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "sheet"
