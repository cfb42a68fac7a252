"""Photo decoding and preprocessing: the one function the app and the trainer both use.

Decoding turns any supported file into an upright RGB image (EXIF orientation applied, first
frame of animations) or raises `PhotoError` naming the file. Preprocessing turns that image into
the normalised CHW float32 array a model bundle asks for.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        )


def is_photo_path(path: str | Path) -> bool:
    """True when the file name has a photo suffix we can decode."""
    return Path(path).suffix.lower() in PHOTO_SUFFIXES


def iter_photo_paths(paths: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of photo paths.

    Files named explicitly are kept whatever their suffix, so that a mislabelled file is
    reported by the decoder rather than silently ignored; folders contribute photo-suffixed files.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            children = sorted(p for p in path.glob(pattern) if p.is_file() and is_photo_path(p))
            found.update((child, None) for child in children)
        else:
            found[path] = None
    return list(found)


def load_photo(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a photo as an upright RGB image, or raise `PhotoError` that names the file."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise PhotoError(path, "the file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise PhotoError(
                        path, f"{width}x{height} pixels is over the limit of {max_pixels:,} pixels"
                    )
                image.seek(0)  # first frame of GIFs and other animations
                image.load()
                upright = ImageOps.exif_transpose(image)
                return _to_rgb(upright)
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
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise PhotoError(path, f"corrupt or truncated image ({error})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB, compositing transparency on white as viewers do."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale into 8 bits instead of clipping to white.
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        return Image.fromarray((array * (255.0 / peak)).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Resize the shorter side to `spec.resize`, then take the centre `spec.size` square."""
    width, height = image.size
    scale = spec.resize / min(width, height)
    new_size = (max(spec.size, round(width * scale)), max(spec.size, round(height * scale)))
    resized = image.resize(new_size, _RESAMPLE[spec.resample])
    left = (new_size[0] - spec.size) // 2
    top = (new_size[1] - spec.size) // 2
    return resized.crop((left, top, left + spec.size, top + spec.size))


def normalize(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """An RGB image of the model's size as a normalised CHW float32 array."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """The model input for one decoded photo: resize, centre crop, normalise; CHW float32."""
    return normalize(resize_and_crop(image, spec), spec)


def load_and_preprocess(path: str | Path, spec: Preprocessing) -> np.ndarray:
    """Decode and preprocess one file; raises `PhotoError` for anything unusable."""
    return preprocess(load_photo(path), spec)


def stack_batch(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack preprocessed photos into one NCHW batch."""
    return np.ascontiguousarray(np.stack(arrays, axis=0), dtype=np.float32)
