"""What a JPEG file will cost to decode, read from its marker structure before any pixel is decoded.

Two numbers matter. The scan count: each progressive scan makes the decoder pass over every 8x8
block of the image, so a small file of 40,000 tiny scans decodes for minutes (libjpeg-turbo's
`djpeg -maxscans` exists for the same reason). And the coefficient memory: a multi-scan JPEG is
decoded into a buffer of all the image's DCT coefficients, whatever scale it is output at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import BinaryIO

# A marker: 0xFF then a code. Inside entropy-coded data 0xFF is followed only by 0x00 (a stuffed
# byte) or a restart marker (0xD0-0xD7), and a run of 0xFF is fill before the real code.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
_BLOCK = 1 << 16


def count_jpeg_scans(file: BinaryIO, stop_after: int) -> int:
    """Scans (SOS markers) of the first image of a JPEG file, counting no further than `stop_after + 1`.

    Marker segments are skipped by their length, so bytes inside EXIF or ICC data never count,
    and counting ends at the first image's end: a phone's second picture or a motion photo's
    video appended after it is not the image Pillow decodes. A damaged structure ends the count
    early; the decoder reports the damage itself.
    """
    data, base, at_end = b"", 0, False  # `data` holds the file's bytes from offset `base`
    position, scans = 2, 0  # just after SOI
    while True:
        offset = position - base
        match = _MARKER.search(data, offset) if 0 <= offset <= len(data) else None
        if match is None or match.start() + 4 > len(data):
            if at_end:
                return scans
            # Read on from the marker (it needs its length bytes), or from the last byte read, in
            # case it is the 0xFF of a marker cut in two.
            resume = base + (match.start() if match is not None else max(offset, len(data) - 1))
            file.seek(resume)
            data, base = file.read(_BLOCK), resume
            at_end = len(data) < _BLOCK
            position = max(position, resume)
            continue
        start = match.start()
        code = data[start + 1]
        if code == _EOI:
            return scans
        if code in (_SOI, _TEM):  # markers without a length
            position = base + start + 2
            continue
        length = int.from_bytes(data[start + 2 : start + 4], "big")
        if length < 2:
            return scans
        if code == _SOS:
            scans += 1
            if scans > stop_after:
                return scans
        # After an SOS header the entropy-coded data follows; the next search skips over it.
        position = base + start + 2 + length


def jpeg_coefficient_bytes(size: tuple[int, int], layers: Sequence[tuple[int, int, int, int]]) -> int:
    """Bytes of the DCT coefficient buffer libjpeg keeps for a multi-scan JPEG of `size`.

    `layers` is Pillow's `JpegImageFile.layer`: (component id, horizontal and vertical sampling
    factors, quantisation table) per component. Each component stores 64 two-byte coefficients per
    8x8 block at its own sampling.
    """
    width, height = size
    if not layers:
        return width * height * 2 * 3
    h_max = max(max(1, layer[1]) for layer in layers)
    v_max = max(max(1, layer[2]) for layer in layers)
    blocks = 0
    for _, h_sampling, v_sampling, _ in layers:
        blocks += math.ceil(width * max(1, h_sampling) / h_max / 8) * math.ceil(
            height * max(1, v_sampling) / v_max / 8
        )
    return blocks * 64 * 2
