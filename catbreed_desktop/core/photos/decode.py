"""Bounded photo decoding: any supported file as an upright RGB image, or a `PhotoError`.

Decoding turns a photo file into an upright RGB image (EXIF orientation applied, first frame of
animations) or raises `PhotoError` naming the file; `preprocess` turns that image into a model's input.

Decoding is bounded for hostile files: only the photo formats below are opened (a PostScript
file named .jpg is not handed to Ghostscript), JPEGs with absurd scan counts are refused before
decoding, and every decode reserves its memory in the process-wide `DECODE_BUDGET`. A caller that
will shrink the photo anyway (preprocessing) has it decoded near the size it needs.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from struct import error as struct_error
from typing import Any

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from catbreed_desktop.core.errors import CatBreedError

# Re-exported: a decoding process replaces it with the budget its pool shares (decode_pool.py).
from catbreed_desktop.core.photos.decode_budget import DECODE_BUDGET as DECODE_BUDGET
from catbreed_desktop.core.photos.jpeg_structure import count_jpeg_scans, jpeg_coefficient_bytes

try:  # HEIC/HEIF support is optional at run time but a declared dependency (pi-heif: libheif's decoder).
    import pi_heif

    pi_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_AVAILABLE = False

# Pillow's names for the formats of `formats.PHOTO_SUFFIXES`. Files are identified by their
# contents, but only these plugins are asked: any other (EPS, PDF, PSD, ...) parses bytes the app
# has no use for, and EPS runs Ghostscript, where `{ } loop` never ends.
PHOTO_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF") + (
    ("HEIF",) if HEIF_AVAILABLE else ()
)
_FORMAT_NAMES = "JPEG, PNG, WebP, HEIC, TIFF, BMP or GIF"

# 100 megapixels covers every camera people carry while refusing decompression bombs.
MAX_PIXELS = 100_000_000

# Encoders write about ten progressive scans. Each scan is a pass over every block of the image
# (about 0.8 ms per megapixel here), so a hundred keeps a 12-megapixel photo near a second.
MAX_JPEG_SCANS = 100

# A photo that will be shrunk is box-averaged to no less than this many times the size it is
# shrunk to; the exact resize follows. At 3 Pillow documents the result as indistinguishable
# from resizing in one step: what the model sees differs by a few grey levels at most, a tenth
# of one on average.
REDUCING_GAP = 3
# A JPEG is decoded reduced by its own DCT scaling (1/2, 1/4 or 1/8) to no less than this many
# times that size. A 12-megapixel photo then decodes at 1/4 scale instead of 1/2, in 30 ms
# instead of 42 (138 in full), holding a quarter of the pixels. Over the 2,371 Oxford cat photos
# upscaled to 12 MP the shipped model's top-1 matched full decoding on 99.75 % of them at 2
# (99.70 % at 3, 99.54 % at 1), each photo classified alone; batching the fully decoded photos
# by 32 changes more (99.41 %). `bench/bench_draft_decoding.py` measures it.
JPEG_DRAFT_GAP = 2

# Pixels converted at a time when a photo is converted band by band.
_BAND_PIXELS = 1 << 20

# Bytes per pixel as Pillow stores each mode (three-channel modes take four).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Full-size images a decoder holds at once: WebP, HEIF and libtiff (unlisted, 2) decode into a
# buffer of their own, which Pillow then copies.
_DECODER_COPIES = {"JPEG": 1, "MPO": 1, "PNG": 1, "GIF": 1, "BMP": 1}
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# (left, top, right, bottom) in pixels, fractions allowed.
Region = tuple[float, float, float, float]
# Each 16-bit value's 8-bit grey, as round(value * 255 / 65535): one table look-up per pixel.
_SIXTEEN_TO_EIGHT_BITS = np.round(np.arange(65536, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Our own cap, checked on the header before any pixel is decoded, is the rule. Pillow's warning
# would otherwise be printed for legal photos between its 89 MP default and our cap, and
# silencing it per call with `warnings.catch_warnings` is not thread-safe (decoding runs in
# worker threads). Pillow's hard error (twice its limit) still fires and is reported.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Pillow allocates images in blocks of up to 16 MiB, and glibc keeps freed blocks under 32 MiB in
# the arena of the thread that freed them: four decoding threads then each held on to a whole
# 100-megapixel image (990 MB peak within a 512 MB budget). Larger blocks are mapped for each
# image and unmapped when it is freed. An explicit PILLOW_BLOCK_SIZE still wins.
if "PILLOW_BLOCK_SIZE" not in os.environ and hasattr(Image.core, "set_block_size"):
    Image.core.set_block_size(64 * 1024 * 1024)

_log = logging.getLogger(__name__)


class PhotoError(CatBreedError):
    """A file that cannot be used as a photo: corrupt, truncated, empty, too large or not an image."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from (path, reason) so the error survives process pools and DataLoader workers.
        return (type(self), (self.path, self.reason))


def load_photo(
    path: str | Path, max_pixels: int = MAX_PIXELS, *, needed_side: int | None = None
) -> Image.Image:
    """Decode a photo as an upright RGB image, or raise `PhotoError` that names the file.

    The pixel cap is checked on the header, before decoding, so a decompression bomb costs
    nothing. Animated files give their first frame. A caller that will resize the photo so that
    its shorter side is `needed_side` may get it smaller than stored, though never with a shorter
    side under `JPEG_DRAFT_GAP * needed_side` (a JPEG) or `REDUCING_GAP * needed_side` (other
    formats): decoding then takes a fraction of the time and memory.
    """
    return decode_with_region(Path(path), max_pixels, needed_side)[0]


def decode_with_region(path: Path, max_pixels: int, needed_side: int | None) -> tuple[Image.Image, Region]:
    """The upright RGB image, and the part of it that shows the stored photo.

    That is all of it unless the photo was reduced: a reduced image's last row and column stand
    for fewer stored pixels than the others, so the stored photo ends inside them.
    """
    try:
        _check_file(path)
        with Image.open(path, formats=PHOTO_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise PhotoError(path, f"{width}x{height} pixels is over the limit of {max_pixels:,} pixels")
            if width < 1 or height < 1:
                raise PhotoError(path, f"the image has no pixels ({width}x{height})")
            image.seek(0)  # first frame of GIFs and other animations
            reserved, region = 0, None
            if image.format in ("JPEG", "MPO"):
                reserved, region = _prepare_jpeg(path, image, needed_side)
            reserved += _decoding_bytes(image, _reduction(image.size, needed_side))
            with DECODE_BUDGET.hold(reserved):
                image.load()
                # libheif learns the real size only as it decodes.
                width, height = image.size
                if width * height > max_pixels:
                    raise PhotoError(
                        path, f"{width}x{height} pixels is over the limit of {max_pixels:,} pixels"
                    )
                return _upright_rgb(image, _reduction(image.size, needed_side), region)
    except PhotoError:
        raise
    except FileNotFoundError:
        raise PhotoError(path, "no such file") from None
    except IsADirectoryError:
        raise PhotoError(path, "is a folder, not a photo") from None
    except PermissionError:
        raise PhotoError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise PhotoError(path, f"not an image, or not a supported photo format ({_FORMAT_NAMES})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError(path, "too many pixels (possible decompression bomb)") from None
    except MemoryError:
        raise PhotoError(path, "not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as error:
        raise PhotoError(path, f"corrupt or truncated image ({error})") from None
    except Exception as error:
        # Damaged files make Pillow's plugins raise assorted types (TypeError from a TIFF tag of
        # the wrong type, RuntimeError for every libheif error): still one unreadable file. The
        # traceback goes to the debug log (`-v`), so a bug of our own stays findable.
        _log.debug("decoding %s failed", path, exc_info=True)
        raise PhotoError(path, f"corrupt or unreadable image ({type(error).__name__}: {error})") from None


def _check_file(path: Path) -> None:
    """Refuse what is not a non-empty regular file before a decoder sees it."""
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise PhotoError(path, "is a folder, not a photo")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device would block or never end.
        raise PhotoError(path, "is not a regular file")
    if info.st_size == 0:
        raise PhotoError(path, "the file is empty")


def _prepare_jpeg(path: Path, image: Image.Image, needed_side: int | None) -> tuple[int, Region | None]:
    """Refuse a JPEG of too many scans and pick its DCT scale.

    Returns the coefficient memory decoding will take and, when the JPEG is to be decoded
    reduced, the part of the reduced image that shows the stored photo.
    """
    with path.open("rb") as file:
        scans = count_jpeg_scans(file, MAX_JPEG_SCANS)
    if scans > MAX_JPEG_SCANS:
        raise PhotoError(
            path,
            f"a progressive JPEG of more than {MAX_JPEG_SCANS} scans, too slow to decode (damaged or hostile)",
        )
    # A multi-scan JPEG keeps every DCT coefficient of the full-size image, at any output scale.
    coefficients = jpeg_coefficient_bytes(image.size, getattr(image, "layer", [])) if scans > 1 else 0
    region: Region | None = None
    if needed_side:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale, picking the smallest that stays this large.
        side = JPEG_DRAFT_GAP * needed_side
        drafted = image.draft(image.mode, (side, side))
        if drafted is not None:
            x0, y0, x1, y1 = drafted[1]
            region = (float(x0), float(y0), float(x1), float(y1))
    return coefficients, region


def _reduction(size: tuple[int, int], needed_side: int | None) -> int:
    """The box-averaging factor that keeps the shorter side at least `REDUCING_GAP * needed_side`."""
    if not needed_side:
        return 1
    return max(1, min(size) // (REDUCING_GAP * needed_side))


def _decoding_bytes(image: Image.Image, factor: int) -> int:
    """An estimate of the memory decoding and converting `image` will peak at, header known only."""
    pixels = image.size[0] * image.size[1]
    decoded = pixels * _STORED_BYTES.get(image.mode, 4) * _DECODER_COPIES.get(image.format or "", 2)
    if factor > 1:  # converted band by band into a reduced RGB image
        return decoded + pixels * 4 // (factor * factor) + _BAND_PIXELS * 16
    return decoded + 2 * pixels * 4  # a full-size RGB result, and a conversion on the way


def _upright_rgb(image: Image.Image, factor: int, region: Region | None) -> tuple[Image.Image, Region]:
    """The decoded image as a new upright RGB image, reduced `factor` times by box averaging."""
    method = _orientation(image)
    rgb = to_rgb(image) if factor == 1 else _reduced_rgb(image, factor)
    x0, y0, x1, y1 = (value / factor for value in (region or (0, 0, *image.size)))
    if method is not None:
        return rgb.transpose(method), _transposed((x0, y0, x1, y1), rgb.size, method)
    return (rgb.copy() if rgb is image else rgb), (x0, y0, x1, y1)


def _transposed(region: Region, size: tuple[int, int], method: Image.Transpose) -> Region:
    """Where `region` of an image of `size` lies once the image is transposed by `method`."""
    x0, y0, x1, y1 = region
    width, height = size
    return {
        Image.Transpose.FLIP_LEFT_RIGHT: (width - x1, y0, width - x0, y1),
        Image.Transpose.FLIP_TOP_BOTTOM: (x0, height - y1, x1, height - y0),
        Image.Transpose.ROTATE_180: (width - x1, height - y1, width - x0, height - y0),
        Image.Transpose.ROTATE_90: (y0, width - x1, y1, width - x0),
        Image.Transpose.ROTATE_270: (height - y1, x0, height - y0, x1),
        Image.Transpose.TRANSPOSE: (y0, x0, y1, x1),
        Image.Transpose.TRANSVERSE: (height - y1, width - x1, height - y0, width - x0),
    }[method]


def _orientation(image: Image.Image) -> Image.Transpose | None:
    """How to turn the photo upright, by its EXIF; None when it is upright already.

    `ImageOps.exif_transpose` also rewrites the EXIF block without the orientation. A block it
    cannot rewrite counts as damaged, and the photo is used as stored rather than lost.
    """
    try:
        exif = image.getexif()
        method = _EXIF_TRANSPOSE.get(exif.get(ExifTags.Base.Orientation, 1))
        if method is not None and "exif" in image.info:
            exif.tobytes()
        return method
    except Exception:  # Pillow raises assorted types for malformed EXIF; the pixels are still fine
        return None


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """RGB of `image` reduced `factor` times, converted a band of rows at a time.

    Converting first and averaging after gives the pixels of converting the whole image, without
    ever holding a full-size RGB copy (400 MB for 100 megapixels).
    """
    width, height = image.size
    scale = _wide_grey_scale(image) if image.mode in _WIDE_GREY else None
    rows = factor * max(1, _BAND_PIXELS // (width * factor))
    reduced = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        # Greyscale is averaged as one channel, not three equal ones; `paste` makes it RGB.
        reduced.paste(_to_grey_or_rgb(band, scale).reduce(factor), (0, top // factor))
    return reduced


def _to_grey_or_rgb(image: Image.Image, grey_scale: float | None = None) -> Image.Image:
    """8-bit greyscale when that is all the image holds, else RGB as `_to_rgb` makes it."""
    if image.mode == "L" and "transparency" not in image.info:
        return image
    if image.mode in _WIDE_GREY:
        return _wide_grey_to_l(image, _wide_grey_scale(image) if grey_scale is None else grey_scale)
    return to_rgb(image)


def to_rgb(image: Image.Image, grey_scale: float | None = None) -> Image.Image:
    """Convert any mode to RGB, compositing transparency on white as viewers do.

    An RGB image is returned as it is, not copied. `grey_scale` is the value that becomes white in
    16-bit, 32-bit and float greyscale, when known for the whole image.
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in _WIDE_GREY:
        scale = _wide_grey_scale(image) if grey_scale is None else grey_scale
        return _wide_grey_to_l(image, scale).convert("RGB")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise ValueError(f"colour mode {image.mode} cannot be converted to RGB") from None


def _grey_bands(image: Image.Image, dtype: type | None = np.float64) -> Iterable[tuple[int, np.ndarray]]:
    """(first row, values) of a wide greyscale image, a band of rows at a time."""
    width, height = image.size
    rows = max(1, _BAND_PIXELS // max(1, width))
    for top in range(0, height, rows):
        yield top, np.asarray(image.crop((0, top, width, min(height, top + rows))), dtype=dtype)


def _wide_grey_scale(image: Image.Image) -> float:
    """The value that maps to white: 16-bit full scale, else by the image's natural range."""
    if image.mode.startswith("I;16"):
        return 65535.0
    peak = 0.0
    for _, band in _grey_bands(image):
        values = band[~np.isnan(band)]
        if values.size:
            peak = max(peak, float(values.max()))
    if image.mode == "F" and peak <= 1.0:
        return 1.0  # float images conventionally hold 0..1
    if peak <= 255.0:
        return 255.0
    if peak <= 65535.0:
        return 65535.0
    return peak


def _wide_grey_to_l(image: Image.Image, full_scale: float) -> Image.Image:
    """16-bit, 32-bit and float greyscale into 8 bits by `full_scale`, not clipped to white."""
    width, height = image.size
    grey = np.empty((height, width), dtype=np.uint8)
    if image.mode.startswith("I;16"):
        for top, band in _grey_bands(image, dtype=None):
            grey[top : top + band.shape[0]] = _SIXTEEN_TO_EIGHT_BITS[band]
        return Image.fromarray(grey)
    for top, band in _grey_bands(image):
        scaled = np.clip(np.nan_to_num(band) * (255.0 / full_scale), 0.0, 255.0)
        grey[top : top + band.shape[0]] = np.round(scaled).astype(np.uint8)
    return Image.fromarray(grey)
