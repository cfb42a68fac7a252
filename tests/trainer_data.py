"""Synthetic breed datasets for the trainer tests: colour-coded classes with planted duplicates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

# Folder names as real datasets spell them; the alias table maps them onto breed names.
CLASS_COLOURS = {
    "British_Shorthair": (200, 40, 40),
    "Norwegian Forest": (40, 180, 60),
    "Sphynx - Hairless Cat": (40, 60, 200),
}
BREEDS = {
    "British_Shorthair": "British Shorthair",
    "Norwegian Forest": "Norwegian Forest Cat",
    "Sphynx - Hairless Cat": "Sphynx",
}


def synthetic_photo(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A photo of one dominant colour with a random blotchy brightness pattern unique to `seed`.

    The pattern gives every photo its own perceptual hash, so only planted copies are duplicates.
    """
    rng = np.random.default_rng(seed)
    blotches = rng.uniform(0.45, 1.0, size=(6, 8)).astype(np.float32)
    shade = np.asarray(
        Image.fromarray((blotches * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    )
    pixels = np.asarray(colour, dtype=np.float32)[None, None, :] * (shade[..., None] / 255.0)
    pixels += rng.normal(0, 4, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def near_copy(source: Path, target: Path) -> Path:
    """A resized, recompressed, slightly brightened copy: different bytes, same picture."""
    with Image.open(source) as image:
        copy = image.convert("RGB").resize((80, 60), Image.Resampling.BICUBIC)
    pixels = np.clip(np.asarray(copy, dtype=np.int16) + 6, 0, 255).astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(target, quality=85)
    return target


def make_breed_folders(
    root: Path, per_class: int = 15, planted: int = 3
) -> dict[str, list[tuple[Path, Path]]]:
    """Write `per_class` photos per class plus `planted` exact and `planted` near copies per class.

    Returns {"exact": [(original, copy)...], "near": [...]}.
    """
    pairs: dict[str, list[tuple[Path, Path]]] = {"exact": [], "near": []}
    for class_number, (folder, colour) in enumerate(CLASS_COLOURS.items()):
        originals = []
        for i in range(per_class):
            path = root / folder / f"img_{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic_photo(colour, seed=1000 * class_number + i).save(path)
            originals.append(path)
        for k in range(planted):
            exact_source, near_source = originals[2 * k], originals[2 * k + 1]
            exact = root / folder / f"copy_of_{exact_source.name}"
            shutil.copyfile(exact_source, exact)
            pairs["exact"].append((exact_source, exact))
            pairs["near"].append((near_source, near_copy(near_source, root / folder / f"near_{k}.jpg")))
    return pairs


def run_trainer(*args: str) -> None:
    """`python -m trainer ARGS` in this process; the test fails naming the command if it exits non-zero."""
    from trainer.cli import main as trainer_main

    status = trainer_main(list(args))
    assert status == 0, f"python -m trainer {' '.join(args)} exited {status}"
