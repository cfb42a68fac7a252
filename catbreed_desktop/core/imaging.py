"""Photo decoding and preprocessing: the one function the app and the trainer both use.

Decoding turns any supported file into an upright RGB image (EXIF orientation applied, first
frame of animations) or raises `PhotoError` naming the file. Preprocessing turns that image into
the normalised CHW float32 array a model bundle asks for.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF support is optional at run time but a declared dependency.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_AVAILABLE = False

PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif"}
)

# 100 megapixels covers every camera people carry while refusing decompression bombs.
MAX_PIXELS = 100_000_000

# Our own cap, checked on the header before any pixel is decoded, is the rule. Pillow's warning
# would otherwise be printed for legal photos between its 89 MP default and our cap, and
# silencing it per call with `warnings.catch_warnings` is not thread-safe (decoding runs in
# worker threads). Pillow's hard error (twice its limit) still fires and is reported.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class PhotoError(Exception):
    """A file that cannot be used as a photo: corrupt, truncated, empty, too large or not an image."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # Rebuild from (path, reason) so the error survives process pools and DataLoader workers.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: shorter side resized to `resize`, centre crop of `size`, normalised."""

    size: int = 224
    resize: int = 256
    resample: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop: str = field(default="center")

    def __post_init__(self) -> None:
        # Coerce JSON lists to tuples of floats so the spec stays hashable and comparable.
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be three finite numbers (R, G, B), not {values}")
            object.__setattr__(self, name, values)
        if not all(v > 0 for v in self.std):
            raise ValueError(f"std values must be positive, not {self.std}")
        if self.size < 1:
            raise ValueError(f"crop size must be at least 1 pixel, not {self.size}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"unknown resample rule {self.resample!r}; use one of {sorted(_RESAMPLE)}")
        if self.crop != "center":
            raise ValueError(f"unknown crop rule {self.crop!r}; only 'center' is supported")
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be at least the crop size ({self.size})")

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "resize": self.resize,
            "resample": self.resample,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            size=int(data["size"]),
            resize=int(data["resize"]),
            resample=str(data.get("resample", "bicubic")),
            crop=str(data.get("crop", "center")),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
        )


def is_photo_path(path: str | Path) -> bool:
    """True when the file name has a photo suffix we can decode."""
    return Path(path).suffix.lower() in PHOTO_SUFFIXES


def iter_photo_paths(paths: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of photo paths.

    Files named explicitly are kept whatever their suffix (and even when missing), so that a
    mislabelled file is reported by the decoder rather than silently ignored. Folders contribute
    their photo-suffixed files, skipping hidden ones such as macOS `._IMG_0001.jpg` resource forks.
    """
    found: dict[Path, Path] = {}  # resolved path -> path as the caller spelled it

    def add(path: Path) -> None:
        found.setdefault(path.resolve(), path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in _photos_in_folder(path, recursive):
                add(child)
        else:
            add(path)
    return sorted(found.values())


def _photos_in_folder(folder: Path, recursive: bool) -> Iterable[Path]:
    """Photo-suffixed, non-hidden regular files of a folder (and its sub-folders when recursive)."""
    # os.walk skips unreadable sub-folders instead of failing the whole scan, and does not
    # follow symlinked folders, so a link loop cannot recurse forever.
    for root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            child = Path(root) / name
            if not name.startswith(".") and is_photo_path(child) and child.is_file():
                yield child
        if not recursive:
            break


def load_photo(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a photo as an upright RGB image, or raise `PhotoError` that names the file.

    The pixel cap is checked on the header, before decoding, so a decompression bomb costs
    nothing. Animated files give their first frame.
    """
    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise PhotoError(path, "is a folder, not a photo")
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or device would block or never end.
            raise PhotoError(path, "is not a regular file")
        if info.st_size == 0:
            raise PhotoError(path, "the file is empty")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise PhotoError(path, f"{width}x{height} pixels is over the limit of {max_pixels:,} pixels")
            if width < 1 or height < 1:
                raise PhotoError(path, f"the image has no pixels ({width}x{height})")
            image.seek(0)  # first frame of GIFs and other animations
            image.load()
            return _to_rgb(_upright(image))
    except PhotoError:
        raise
    except FileNotFoundError:
        raise PhotoError(path, "no such file") from None
    except IsADirectoryError:
        raise PhotoError(path, "is a folder, not a photo") from None
    except PermissionError:
        raise PhotoError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise PhotoError(path, "not an image, or an image format that cannot be read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError(path, "too many pixels (possible decompression bomb)") from None
    except MemoryError:
        raise PhotoError(path, "not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as error:
        raise PhotoError(path, f"corrupt or truncated image ({error})") from None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the photo as stored, not lost."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # Pillow raises assorted types for malformed EXIF; the pixels are still fine
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB, compositing transparency on white as viewers do."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _wide_grey_to_rgb(image)
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise ValueError(f"colour mode {image.mode} cannot be converted to RGB") from None


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale into 8 bits by their natural range, not clipped to white."""
    array = np.asarray(image, dtype=np.float64)
    peak = float(np.nanmax(array)) if array.size else 0.0
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        full_scale = 1.0  # float images conventionally hold 0..1
    elif peak <= 255.0:
        full_scale = 255.0
    elif peak <= 65535.0:
        full_scale = 65535.0
    else:
        full_scale = peak
    grey = np.clip(np.nan_to_num(array) * (255.0 / full_scale), 0.0, 255.0)
    return Image.fromarray(np.round(grey).astype(np.uint8)).convert("RGB")


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Resize the shorter side to `spec.resize`, then take the centre `spec.size` square.

    Only the cropped region is resampled (Pillow's `box`), which gives the same pixels as
    resizing the whole image first but keeps a long thin panorama from growing to gigapixels.
    """
    width, height = image.size
    scale = spec.resize / min(width, height)
    new_width = max(spec.size, round(width * scale))
    new_height = max(spec.size, round(height * scale))
    left = (new_width - spec.size) // 2
    top = (new_height - spec.size) // 2
    x_step = width / new_width
    y_step = height / new_height
    box = (left * x_step, top * y_step, (left + spec.size) * x_step, (top + spec.size) * y_step)
    return image.resize((spec.size, spec.size), _RESAMPLE[spec.resample], box=box)


def normalize(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """An RGB image of the model's size as a normalised CHW float32 array."""
    if image.mode != "RGB":
        image = _to_rgb(image)
    array = np.asarray(image, dtype=np.float32) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """The model input for one decoded photo: resize, centre crop, normalise; CHW float32."""
    if image.mode != "RGB":
        image = _to_rgb(image)
    return normalize(resize_and_crop(image, spec), spec)


def load_and_preprocess(path: str | Path, spec: Preprocessing) -> np.ndarray:
    """Decode and preprocess one file; raises `PhotoError` for anything unusable."""
    return preprocess(load_photo(path), spec)


def stack_batch(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack preprocessed photos into one NCHW batch."""
    return np.ascontiguousarray(np.stack(arrays, axis=0), dtype=np.float32)
