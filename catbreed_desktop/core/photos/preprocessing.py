"""Model preprocessing: a decoded photo as the normalised CHW float32 array a bundle asks for.

The app and the trainer both use `load_and_preprocess`, so a model sees the same pixels in
training, in evaluation and in the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catbreed_desktop.core.photos.decode import MAX_PIXELS, Region, decode_with_region, to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "resize": self.resize,
            "resample": self.resample,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            size=int(data["size"]),
            resize=int(data["resize"]),
            resample=str(data.get("resample", "bicubic")),
            crop=str(data.get("crop", "center")),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
        )


def resize_and_crop(image: Image.Image, spec: Preprocessing, region: Region | None = None) -> Image.Image:
    """Resize the shorter side to `spec.resize`, then take the centre `spec.size` square.

    Only the cropped region is resampled (Pillow's `box`), which gives the same pixels as
    resizing the whole image first but keeps a long thin panorama from growing to gigapixels.
    `region` is the part of `image` that shows the photo, when that is not all of it (a photo
    decoded reduced), so that the crop falls where it would on the photo as stored.
    """
    left_edge, top_edge, right_edge, bottom_edge = region or (0, 0, *image.size)
    width, height = right_edge - left_edge, bottom_edge - top_edge
    scale = spec.resize / min(width, height)
    new_width = max(spec.size, round(width * scale))
    new_height = max(spec.size, round(height * scale))
    left = (new_width - spec.size) // 2
    top = (new_height - spec.size) // 2
    x_step = width / new_width
    y_step = height / new_height
    box = (
        left_edge + left * x_step,
        top_edge + top * y_step,
        left_edge + (left + spec.size) * x_step,
        top_edge + (top + spec.size) * y_step,
    )
    return image.resize((spec.size, spec.size), _RESAMPLE[spec.resample], box=box)


def normalize(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """An RGB image of the model's size as a normalised CHW float32 array."""
    if image.mode != "RGB":
        image = to_rgb(image)
    array = np.asarray(image, dtype=np.float32) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """The model input for one decoded photo: resize, centre crop, normalise; CHW float32."""
    if image.mode != "RGB":
        image = to_rgb(image)
    return normalize(resize_and_crop(image, spec), spec)


def load_and_preprocess(path: str | Path, spec: Preprocessing) -> np.ndarray:
    """Decode and preprocess one file; raises `PhotoError` for anything unusable."""
    image, region = decode_with_region(Path(path), MAX_PIXELS, spec.resize)
    return normalize(resize_and_crop(image, spec, region), spec)


def stack_batch(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack preprocessed photos into one NCHW batch."""
    return np.ascontiguousarray(np.stack(arrays, axis=0), dtype=np.float32)
