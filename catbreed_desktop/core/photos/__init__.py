"""Photos: which files are photos, decoding them within bounds, and preprocessing them for a model.

`decode` turns a file into an upright RGB image or raises `PhotoError`, with its memory reserved
in `decode_budget` and JPEG scans counted by `jpeg_structure`; `decode_pool` runs decodes in other
processes on machines with many cores. The names below are re-exported lazily, so importing this
package (or one of its light modules) loads neither numpy nor PIL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from catbreed_desktop.core.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from catbreed_desktop.core.photos.decode import (
        HEIF_AVAILABLE as HEIF_AVAILABLE,
    )
    from catbreed_desktop.core.photos.decode import (
        IMAGENET_MEAN as IMAGENET_MEAN,
    )
    from catbreed_desktop.core.photos.decode import (
        IMAGENET_STD as IMAGENET_STD,
    )
    from catbreed_desktop.core.photos.decode import (
        MAX_JPEG_SCANS as MAX_JPEG_SCANS,
    )
    from catbreed_desktop.core.photos.decode import (
        PHOTO_SUFFIXES as PHOTO_SUFFIXES,
    )
    from catbreed_desktop.core.photos.decode import (
        REDUCING_GAP as REDUCING_GAP,
    )
    from catbreed_desktop.core.photos.decode import (
        PhotoError as PhotoError,
    )
    from catbreed_desktop.core.photos.decode import (
        Preprocessing as Preprocessing,
    )
    from catbreed_desktop.core.photos.decode import (
        is_photo_path as is_photo_path,
    )
    from catbreed_desktop.core.photos.decode import (
        iter_photo_paths as iter_photo_paths,
    )
    from catbreed_desktop.core.photos.decode import (
        load_and_preprocess as load_and_preprocess,
    )
    from catbreed_desktop.core.photos.decode import (
        load_photo as load_photo,
    )
    from catbreed_desktop.core.photos.decode import (
        normalize as normalize,
    )
    from catbreed_desktop.core.photos.decode import (
        preprocess as preprocess,
    )
    from catbreed_desktop.core.photos.decode import (
        resize_and_crop as resize_and_crop,
    )
    from catbreed_desktop.core.photos.decode import (
        stack_batch as stack_batch,
    )

_HOMES = {
    "PHOTO_SUFFIXES": "decode",
    "is_photo_path": "decode",
    "iter_photo_paths": "decode",
    "HEIF_AVAILABLE": "decode",
    "MAX_JPEG_SCANS": "decode",
    "REDUCING_GAP": "decode",
    "PhotoError": "decode",
    "load_photo": "decode",
    "IMAGENET_MEAN": "decode",
    "IMAGENET_STD": "decode",
    "Preprocessing": "decode",
    "normalize": "decode",
    "preprocess": "decode",
    "resize_and_crop": "decode",
    "load_and_preprocess": "decode",
    "stack_batch": "decode",
}
__all__ = list(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
