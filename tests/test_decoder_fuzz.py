"""Decoder fuzzing: seeded mutations of real JPEG, PNG, WebP, HEIC and TIFF bytes through the decoder and CLI.

Every mutated file must give either a model input or a `PhotoError` naming it: no other
exception, no hang, no runaway memory. The mutations are seeded, so a failure reproduces.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_CATS
from factories import heic_bytes
from peak_memory import PEAK_MEMORY
from PIL import Image

from catbreed_desktop.core.photos import HEIF_AVAILABLE

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.name == "nt", reason="peak memory via resource"),
]
ROOT = Path(__file__).resolve().parents[1]

FUZZ_SEED = 20_240_508
MUTATIONS = 1500
CLI_FILES = 60
SECONDS = 60.0
PEAK_MIB = 1024

INTERESTING_16 = (0, 1, 2, 7, 8, 15, 16, 255, 256, 4095, 4096, 10_000, 32_767, 32_768, 65_535)
INTERESTING_32 = (*INTERESTING_16, 100_000, 1 << 20, 0x7FFF_FFFF, 0xFFFF_FFFF)

# Decodes every file in a folder in one fresh interpreter and reports what happened, the slowest
# file and the peak resident memory.
DECODE_ALL = (
    PEAK_MEMORY
    + """
import json, sys, time, traceback
from pathlib import Path
from catbreed_desktop.core.photos import PhotoError, Preprocessing, load_and_preprocess

spec = Preprocessing()
outcomes, unexpected, slowest = {}, [], (0.0, "")
for path in sorted(Path(sys.argv[1]).iterdir()):
    started = time.perf_counter()
    try:
        array = load_and_preprocess(path, spec)
        ok = array.shape == (3, spec.size, spec.size) and bool((array == array).all())
        outcomes[path.name] = "decoded" if ok else "bad array"
    except PhotoError as error:
        outcomes[path.name] = "refused" if error.path == path and error.reason else "unnamed error"
    except BaseException:
        outcomes[path.name] = "unexpected"
        unexpected.append(f"{path.name}: {traceback.format_exc()}")
    slowest = max(slowest, (time.perf_counter() - started, path.name))
print(json.dumps({"outcomes": outcomes, "unexpected": unexpected, "slowest": slowest, "peak_mib": peak_mib()}))
"""
)

# `catbreed ...` exactly as the console script runs it, writing its peak resident memory at exit.
CLI = (
    PEAK_MEMORY
    + """
from pathlib import Path
from catbreed_desktop.cli.main import main

status = main(sys.argv[2:])
Path(sys.argv[1]).write_text(str(peak_mib()))
sys.exit(status)
"""
)


def _real_photo() -> tuple[list[bytes], Image.Image]:
    """Bytes of real cat JPEGs and one of them decoded; a made photo where the shared set is absent."""
    if SHARED_CATS.is_dir():
        files = [sorted((SHARED_CATS / breed).glob("*.jpg"))[0] for breed in ("Bengal", "Persian")]
        files = [file for file in files if file.is_file()]
        if files:
            with Image.open(files[0]) as image:
                return [file.read_bytes() for file in files], image.convert("RGB")
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 255, (8, 10, 3), dtype=np.uint8))
    photo = coarse.resize((500, 375), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    return [buffer.getvalue()], photo


def _encoded(image: Image.Image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def seed_files() -> dict[str, bytes]:
    """File name -> bytes of a real photo in each format and flavour the decoder must survive."""
    jpegs, photo = _real_photo()
    small = photo.copy()
    small.thumbnail((160, 160))
    seeds = {f"real-{index}.jpg": data for index, data in enumerate(jpegs)}
    seeds["progressive.jpg"] = _encoded(small, "JPEG", progressive=True, quality=85)
    seeds["photo.png"] = _encoded(small, "PNG")
    seeds["alpha.png"] = _encoded(small.convert("RGBA"), "PNG")
    grey = np.asarray(small.convert("L"), dtype=np.uint16) * 257
    seeds["grey16.png"] = _encoded(Image.fromarray(grey), "PNG")
    seeds["lossy.webp"] = _encoded(small, "WEBP", quality=80)
    seeds["lossless.webp"] = _encoded(small, "WEBP", lossless=True)
    seeds["lzw.tiff"] = _encoded(small, "TIFF", compression="tiff_lzw")
    seeds["raw.tiff"] = _encoded(small, "TIFF")
    heic = heic_bytes(small, quality=80) if HEIF_AVAILABLE else None
    if heic is not None:
        seeds["photo.heic"] = heic
    return seeds


def _put(data: bytearray, offset: int, value: int, size: int, order: str = ">") -> None:
    if offset >= 0 and offset + size <= len(data):
        data[offset : offset + size] = struct.pack(
            order + {2: "H", 4: "I"}[size], value & ((1 << (8 * size)) - 1)
        )


def _jpeg_header_edit(data: bytearray, rng: random.Random) -> str:
    segments, position = [], 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        segments.append((marker, position))
        if marker == 0xDA:
            break
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    frames = [offset for marker, offset in segments if marker in (0xC0, 0xC1, 0xC2)]
    scans = [offset for marker, offset in segments if marker == 0xDA]
    choice = rng.randrange(4)
    if choice == 0 and frames:  # declared height and width
        _put(data, frames[0] + 5, rng.choice(INTERESTING_16), 2)
        _put(data, frames[0] + 7, rng.choice(INTERESTING_16), 2)
        return "jpeg-size"
    if choice == 1 and frames:  # a component's sampling factors
        sampling = frames[0] + 11 + 3 * rng.randrange(3)
        if sampling < len(data):
            data[sampling] = rng.choice((0x00, 0x11, 0x12, 0x21, 0x44, 0x48, 0xFF))
        return "jpeg-sampling"
    if choice == 2 and scans:  # progression parameters: Ss, Se, Ah/Al
        end = scans[0] + 2 + struct.unpack(">H", data[scans[0] + 2 : scans[0] + 4])[0]
        data[end - 1 - rng.randrange(3)] = rng.randrange(256)
        return "jpeg-progression"
    marker, offset = rng.choice(segments)  # a marker segment's length
    _put(data, offset + 2, rng.choice(INTERESTING_16), 2)
    return "jpeg-length"


def _png_header_edit(data: bytearray, rng: random.Random) -> str:
    field = rng.randrange(5)
    if field < 2:
        _put(data, 16 + 4 * field, rng.choice(INTERESTING_32), 4)
    else:
        data[24 + field - 2] = rng.choice((0, 1, 2, 3, 4, 6, 8, 16, 255))  # depth, colour type, compression
    if rng.random() < 0.8:  # a right checksum lets the decoder believe the header
        _put(data, 29, zlib.crc32(bytes(data[12:29])), 4)
    return "png-header"


def _webp_header_edit(data: bytearray, rng: random.Random) -> str:
    if rng.random() < 0.3:
        _put(data, 4, rng.choice(INTERESTING_32), 4, "<")  # RIFF size
        return "webp-riff-size"
    # Width and height: 16 bits each in VP8, 14 in VP8L, 24 in VP8X, this far from the chunk tag.
    for tag, width, height in ((b"VP8 ", 14, 16), (b"VP8L", 9, 11), (b"VP8X", 12, 15)):
        found = data.find(tag)
        if found >= 0:
            _put(data, found + rng.choice((width, height)), rng.choice(INTERESTING_16), 2, "<")
            return "webp-size"
    return "webp-none"


def _heic_header_edit(data: bytearray, rng: random.Random) -> str:
    found = data.find(b"ispe")
    if found >= 0 and rng.random() < 0.5:
        _put(data, found + 8 + 4 * rng.randrange(2), rng.choice(INTERESTING_32), 4)
        return "heic-size"
    boxes = [data.find(tag) for tag in (b"ftyp", b"meta", b"iloc", b"iinf", b"iprp", b"hvcC", b"mdat")]
    boxes = [offset for offset in boxes if offset >= 4]
    if boxes:
        _put(data, rng.choice(boxes) - 4, rng.choice(INTERESTING_32), 4)
    return "heic-box-size"


def _tiff_header_edit(data: bytearray, rng: random.Random) -> str:
    order = "<" if data[:2] == b"II" else ">"
    directory = struct.unpack(order + "I", data[4:8])[0]
    if directory + 2 > len(data):
        return "tiff-none"
    count = struct.unpack(order + "H", data[directory : directory + 2])[0]
    if rng.random() < 0.1:
        _put(data, directory, rng.choice(INTERESTING_16), 2, order)
        return "tiff-entry-count"
    entry = directory + 2 + 12 * rng.randrange(max(1, count))
    _put(data, entry + 8, rng.choice(INTERESTING_32), 4, order)  # the value (or its offset)
    return "tiff-field"


HEADER_EDITS = {
    ".jpg": _jpeg_header_edit,
    ".png": _png_header_edit,
    ".webp": _webp_header_edit,
    ".heic": _heic_header_edit,
    ".tiff": _tiff_header_edit,
}


def mutate(name: str, original: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded mutation of a seed file: (kind, bytes)."""
    data = bytearray(original)
    kind = rng.choice(("truncate", "flip", "flip", "overwrite", "header", "header", "header"))
    if kind == "truncate":
        return kind, bytes(data[: rng.randrange(1, len(data))])
    # Headers decide how much a decoder allocates and loops: aim half of the damage at them.
    span = min(len(data), 512) if rng.random() < 0.5 else len(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(span)] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        start, length = rng.randrange(span), rng.randint(1, 64)
        filler = rng.choice((b"\x00", b"\xff", None))
        run = filler * length if filler else bytes(rng.randrange(256) for _ in range(length))
        data[start : start + length] = run[: len(data) - start]
    else:
        kind = HEADER_EDITS[Path(name).suffix](data, rng)
    return kind, bytes(data)


def test_mutated_photos_give_a_photo_or_a_photo_error_never_a_crash_hang_or_memory_blowup(
    colour_bundle, tmp_path: Path
) -> None:
    started = time.monotonic()
    seeds = seed_files()
    rng = random.Random(FUZZ_SEED)
    folder = tmp_path / "mutated"
    folder.mkdir()
    kinds: Counter[str] = Counter()
    names = sorted(seeds)
    for index in range(MUTATIONS):
        name = names[index % len(names)]
        kind, data = mutate(name, seeds[name], rng)
        kinds[kind] += 1
        (folder / f"{index:04d}-{kind}-{name}").write_bytes(data)

    decoded = subprocess.run(
        [sys.executable, "-c", DECODE_ALL, str(folder)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert decoded.returncode == 0, decoded.stderr
    report = json.loads(decoded.stdout.splitlines()[-1])

    cli_folder = tmp_path / "cli"
    cli_folder.mkdir()
    chosen = sorted(folder.iterdir())[:: MUTATIONS // CLI_FILES][:CLI_FILES]
    for path in chosen:
        (cli_folder / path.name).write_bytes(path.read_bytes())
    peak_file = tmp_path / "cli-peak.txt"
    command = [sys.executable, "-c", CLI, str(peak_file), "classify", str(cli_folder)]
    command += ["--model", str(colour_bundle.path), "--engine", "cpu", "--json"]
    cli = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    elapsed = time.monotonic() - started
    cli_peak = float(peak_file.read_text()) if peak_file.exists() else float("nan")

    outcomes = Counter(report["outcomes"].values())
    print(
        f"\n{MUTATIONS} mutations {dict(kinds)}: {dict(outcomes)}; slowest {report['slowest']}; "
        f"decoder peak {report['peak_mib']:.0f} MiB; CLI exit {cli.returncode}, "
        f"peak {cli_peak:.0f} MiB; {elapsed:.1f} s in all"
    )
    assert not report["unexpected"], f"{len(report['unexpected'])} unexpected:\n" + "\n".join(
        report["unexpected"][:3]
    )
    assert set(outcomes) <= {"decoded", "refused"}, outcomes
    assert len(report["outcomes"]) == MUTATIONS
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0  # the mutations reach both ends
    assert report["peak_mib"] < PEAK_MIB

    assert cli.returncode in (0, 1), cli.stderr
    assert "Traceback" not in cli.stderr, cli.stderr
    records = [json.loads(line) for line in cli.stdout.splitlines()]
    assert sorted(Path(record["path"]).name for record in records) == sorted(p.name for p in chosen)
    assert all(record["ok"] or record["error"] for record in records)
    assert cli_peak < PEAK_MIB
    assert elapsed < SECONDS
