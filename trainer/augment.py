"""Training augmentations in PIL: random rotation, random resized crop, horizontal flip, sharpness,
and optionally a shrink to thumbnail size and colour jitter (brightness, contrast, saturation).

Every random choice comes from the `numpy.random.Generator` passed in, so a sample seeded by
(seed, epoch, index) is augmented the same way after a resume. The output goes through the
shared `normalize`, so training sees exactly the app's pixel scaling.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from catbreed_desktop.core.photos import Preprocessing, normalize

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

MAX_ROTATION_DEGREES = 15.0
CROP_AREA = (0.6, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
SHARPNESS = (0.5, 2.0)
# Web-search thumbnails: short side 91-140 px (10th-90th percentile of the web photos), JPEG at
# middling quality.
THUMBNAIL_SIDE = (96, 160)
THUMBNAIL_JPEG_QUALITY = (70, 95)


@dataclass(frozen=True)
class AugmentOptions:
    """The tunable parts: the smallest crop (share of the photo's area), the colour jitter
    strength (each of brightness, contrast and saturation is scaled by 1 +- this) and the share of
    photos first shrunk to a thumbnail."""

    crop_min_area: float = CROP_AREA[0]
    color_jitter: float = 0.0
    thumbnail_share: float = 0.0


DEFAULT_AUGMENT = AugmentOptions()


def random_rotation(image: Image.Image, rng: np.random.Generator, fill: tuple[int, int, int]) -> Image.Image:
    angle = float(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)


def random_resized_crop(
    image: Image.Image,
    size: int,
    rng: np.random.Generator,
    resample: Image.Resampling,
    min_area: float = CROP_AREA[0],
) -> Image.Image:
    """A random box of `min_area`-100% of the area and aspect 3:4 to 4:3, resized to `size` x `size`."""
    width, height = image.size
    area = width * height
    for _ in range(10):
        target_area = area * rng.uniform(min_area, CROP_AREA[1])
        aspect = math.exp(rng.uniform(math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            return image.resize((size, size), resample, box=(left, top, left + crop_w, top + crop_h))
    side = min(width, height)  # fallback: the centre square
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), resample, box=(left, top, left + side, top + side))


def shrink_to_thumbnail(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo as a web-search thumbnail of a random size and JPEG quality (`as_thumbnail`).

    A breed learned from large photos alone loses its fine marks on a thumbnail, and its small
    photos go to look-alikes learned at that size; seeing large photos small too teaches the
    breed at both sizes.
    """
    side = int(rng.integers(THUMBNAIL_SIDE[0], THUMBNAIL_SIDE[1] + 1))
    quality = int(rng.integers(THUMBNAIL_JPEG_QUALITY[0], THUMBNAIL_JPEG_QUALITY[1] + 1))
    return as_thumbnail(image, side, quality)


def as_thumbnail(image: Image.Image, side: int, quality: int) -> Image.Image:
    """The photo with its short side shrunk to `side` px, saved as a JPEG of `quality` and read
    back; a photo already that small is returned as it is."""
    width, height = image.size
    if min(width, height) <= side:
        return image
    scale = side / min(width, height)
    small = image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC
    )
    encoded = io.BytesIO()
    small.save(encoded, "JPEG", quality=quality)
    encoded.seek(0)
    with Image.open(encoded) as decoded:
        return decoded.convert("RGB")


def colour_jitter(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a factor in [1 - strength, 1 + strength]."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return image


def augment(
    image: Image.Image,
    spec: Preprocessing,
    rng: np.random.Generator,
    options: AugmentOptions = AugmentOptions(),
) -> np.ndarray:
    """One randomly augmented training view of a decoded RGB photo, as a normalised CHW array."""
    options = options or DEFAULT_AUGMENT
    red, green, blue = (round(255 * m) for m in spec.mean)  # the mean colour normalises to zero
    fill = (red, green, blue)
    # No draw at all when off, so runs without thumbnails see the same views as before.
    if options.thumbnail_share > 0 and rng.random() < options.thumbnail_share:
        image = shrink_to_thumbnail(image, rng)
    image = random_rotation(image, rng, fill)
    image = random_resized_crop(
        image, spec.size, rng, _RESAMPLE.get(spec.resample, Image.Resampling.BICUBIC), options.crop_min_area
    )
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Sharpness(image).enhance(float(rng.uniform(*SHARPNESS)))
    if options.color_jitter > 0:
        # Drawn after every other choice, so runs without jitter see the same crops as before.
        image = colour_jitter(image, options.color_jitter, rng)
    return normalize(image, spec)
