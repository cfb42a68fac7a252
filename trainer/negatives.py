"""`negatives`: a folder of photos with no cat in them, for measuring the "not a cat" detector.

Offline, the real non-cat photos at hand are the sample images that scientific Python packages
ship (scikit-image, scikit-learn, matplotlib: people, objects, landscapes, microscopy, a rocket,
a motorcycle...) and scikit-image's small set of face photos. Synthetic images (noise, gradients,
geometric shapes) are added as a separate group, since they are easy cases. None of these is used
for training: the detector is fitted on cat photos only, so every negative here is held out.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Sample images that contain a cat, so they are not negatives.
_CAT_SAMPLES = {"chelsea.png"}
_SAMPLE_FOLDERS = {
    "skimage": ("data",),
    "sklearn": ("datasets", "images"),
    "matplotlib": ("mpl-data", "sample_data"),
}
_PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
_MIN_SIDE = 64


def _package_folder(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return folder if folder.is_dir() else None


def sample_photos() -> list[tuple[str, Path]]:
    """(package, path) of the non-cat sample photos shipped by installed packages, large enough to be photos."""
    found = []
    for package, parts in _SAMPLE_FOLDERS.items():
        folder = _package_folder(package, *parts)
        if folder is None:
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in _PHOTO_SUFFIXES or path.name in _CAT_SAMPLES:
                continue
            with Image.open(path) as image:
                if min(image.size) >= _MIN_SIDE:
                    found.append((package, path))
    return found


def face_photos(limit: int) -> list[Image.Image]:
    """Up to `limit` small face photos (Labeled Faces in the Wild subset shipped by scikit-image)."""
    folder = _package_folder("skimage", "data")
    if folder is None or not (folder / "lfw_subset.npy").is_file():
        return []
    faces = np.load(folder / "lfw_subset.npy")[:limit]
    return [Image.fromarray((face * 255).astype(np.uint8)).convert("RGB") for face in faces]


def synthetic_images(count: int, seed: int = 0, size: int = 256) -> list[Image.Image]:
    """Noise, colour gradients and random shapes: images that are clearly not cats."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        kind = index % 3
        if kind == 0:
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            images.append(Image.fromarray(pixels))
        elif kind == 1:
            start, end = rng.integers(0, 256, size=(2, 3))
            ramp = np.linspace(0.0, 1.0, size)[None, :, None]
            pixels = (start + (end - start) * ramp) * np.ones((size, 1, 1))
            images.append(Image.fromarray(pixels.astype(np.uint8)))
        else:
            image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(image)
            for _ in range(6):
                x0, y0 = rng.integers(0, size // 2, 2)
                width, height = rng.integers(16, size // 2, 2)
                x1, y1 = x0 + width, y0 + height
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                if rng.random() < 0.5:
                    draw.rectangle((int(x0), int(y0), int(x1), int(y1)), fill=colour)
                else:
                    draw.ellipse((int(x0), int(y0), int(x1), int(y1)), fill=colour)
            images.append(image)
    return images


def write_negatives(out_dir: Path, faces: int = 60, synthetic: int = 30) -> dict[str, int]:
    """Write the negatives into `out_dir/<group>/`; returns how many photos each group got."""
    counts = {}
    real = out_dir / "photos"
    real.mkdir(parents=True, exist_ok=True)
    for package, path in sample_photos():
        with Image.open(path) as image:
            image.convert("RGB").save(real / f"{package}-{path.stem}.png")
    counts["photos"] = len(list(real.iterdir()))
    for group, images in (("faces", face_photos(faces)), ("synthetic", synthetic_images(synthetic))):
        folder = out_dir / group
        folder.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            image.save(folder / f"{group}-{index:03d}.png")
        counts[group] = len(images)
    return counts


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "negatives", help="write held-out non-cat photos for the not-a-cat measure"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--faces", type=int, default=60)
    parser.add_argument("--synthetic", type=int, default=30)
    parser.set_defaults(handler=lambda args: _run(args))


def _run(args: argparse.Namespace) -> int:
    counts = write_negatives(args.out, faces=args.faces, synthetic=args.synthetic)
    print(", ".join(f"{n} {group}" for group, n in counts.items()) + f" written to {args.out}")
    return 0
