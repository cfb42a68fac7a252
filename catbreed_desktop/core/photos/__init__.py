"""Photos: which files are photos, decoding them within bounds, and preprocessing them for a model.

`formats` says which files are photos (without numpy or PIL); `decode` turns one into an upright
RGB image or raises `PhotoError`, with its memory reserved in `decode_budget` and JPEG scans
counted by `jpeg_structure`; `preprocessing` makes the array a model takes; `decode_pool` runs
decodes in other processes on machines with many cores. The names below are re-exported lazily,
so importing this package (or `formats`) loads neither numpy nor PIL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from catbreed_desktop.core.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from catbreed_desktop.core.photos.decode import (
        HEIF_AVAILABLE,
        MAX_JPEG_SCANS,
        REDUCING_GAP,
        PhotoError,
        load_photo,
    )
    from catbreed_desktop.core.photos.formats import (
        PHOTO_SUFFIXES,
        FolderErrorCallback,
        is_photo_path,
        iter_photo_paths,
        photos_in_subfolders,
    )
    from catbreed_desktop.core.photos.preprocessing import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        Preprocessing,
        load_and_preprocess,
        normalize,
        preprocess,
        resize_and_crop,
        stack_batch,
    )

__all__ = [
    "HEIF_AVAILABLE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_JPEG_SCANS",
    "PHOTO_SUFFIXES",
    "FolderErrorCallback",
    "REDUCING_GAP",
    "PhotoError",
    "Preprocessing",
    "is_photo_path",
    "iter_photo_paths",
    "load_and_preprocess",
    "load_photo",
    "normalize",
    "photos_in_subfolders",
    "preprocess",
    "resize_and_crop",
    "stack_batch",
]
__getattr__ = lazy_exports(__name__, __all__, ("formats", "decode", "preprocessing"))
