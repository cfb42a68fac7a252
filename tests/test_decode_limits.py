"""Decoding hostile files: unsupported formats, endless progressive scans, memory, and Cancel mid-decode."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from factories import COLOURS, make_photo
from peak_memory import PEAK_MEMORY
from PIL import Image

from catbreed_desktop.core import classify as classify_module
from catbreed_desktop.core.classify import Classifier, Prediction
from catbreed_desktop.core.photos import (
    MAX_JPEG_SCANS,
    REDUCING_GAP,
    PhotoError,
    Preprocessing,
    load_and_preprocess,
    load_photo,
    preprocess,
)
from catbreed_desktop.core.photos.decode_budget import MemoryBudget
from catbreed_desktop.core.photos.jpeg_structure import count_jpeg_scans, jpeg_coefficient_bytes

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]

# A PostScript program that never ends, in an EPS header Pillow's EPS plugin accepts.
ENDLESS_POSTSCRIPT = "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{ } loop\nshowpage\n%%EOF\n"

needs_resource = pytest.mark.skipif(os.name == "nt", reason="peak memory is read with the resource module")


def run_python(code: str, *args: object, timeout: float, env: dict | None = None) -> dict:
    """Run `code` with `args`; it prints one JSON object as its last line, which is returned."""
    completed = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def jpeg_pieces(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG split into (marker, bytes) pieces; an SOS piece runs to the end of its entropy-coded data."""
    pieces, position = [(0xD8, data[:2])], 2
    while position < len(data):
        marker = data[position + 1]
        if marker == 0xD9:
            pieces.append((marker, data[position : position + 2]))
            break
        end = position + 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker == 0xDA:
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
        pieces.append((marker, data[position:end]))
        position = end
    return pieces


def many_scan_jpeg(path: Path, scans: int, side: int) -> Path:
    """A progressive greyscale JPEG whose last refinement scan is repeated until it has `scans` scans.

    libjpeg only warns about the repeats and decodes each one: a pass over every block.
    """
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "JPEG", progressive=True, quality=90)
    pieces = jpeg_pieces(buffer.getvalue())
    scan_pieces = [piece for marker, piece in pieces if marker == 0xDA]
    body = b"".join(piece for marker, piece in pieces if marker != 0xD9)
    path.write_bytes(body + scan_pieces[-1] * (scans - len(scan_pieces)) + b"\xff\xd9")
    return path


def jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A valid 16x16 baseline JPEG whose frame header claims `width` x `height` (about 630 bytes)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, "JPEG", quality=50)
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def flat_grey16_png(path: Path, side: int) -> Path:
    """A black 16-bit greyscale PNG of `side` x `side`, written a row at a time (about 190 kB at 10,000)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + 2 * side)  # filter byte, then the row's samples
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


# --- 7: only the photo formats the app supports are opened -------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="the stand-in Ghostscript is a shell script")
def test_postscript_named_jpg_fails_fast_and_never_runs_ghostscript(tmp_path: Path) -> None:
    # A stand-in `gs` first on PATH: it logs every call and, like Ghostscript on `{ } loop`,
    # never finishes a rendering. The subprocess timeout turns a hang into a failure.
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "gs-calls.txt"
    ghostscript = tools / "gs"
    ghostscript.write_text(
        f'#!/bin/sh\necho "$@" >> "{calls}"\n'
        'if [ "$1" = "--version" ]; then echo 10.02.1; exit 0; fi\nexec sleep 60\n'
    )
    ghostscript.chmod(0o755)
    photo = tmp_path / "holiday.jpg"
    photo.write_text(ENDLESS_POSTSCRIPT)
    code = """
import json, sys
from catbreed_desktop.core.photos import PhotoError, load_photo
try:
    load_photo(sys.argv[1])
    print(json.dumps({"error": None}))
except PhotoError as error:
    print(json.dumps({"error": error.reason}))
"""
    environment = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.monotonic()

    result = run_python(code, photo, timeout=20, env=environment)

    assert result["error"] is not None and "not a supported photo format" in result["error"]
    assert not calls.exists(), f"Ghostscript was run: {calls.read_text()}"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("kind", ["PPM", "TGA", "ICO", "PCX", "QOI", "SGI", "EPS", "JPEG2000"])
def test_formats_the_app_does_not_support_are_refused_whatever_the_name(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"photo-{kind}.jpg"
    Image.new("RGB", (32, 32), (10, 120, 200)).save(path, kind)

    with pytest.raises(PhotoError, match="not a supported photo format") as caught:
        load_photo(path)
    assert caught.value.path == path


def test_a_phone_multi_picture_jpeg_still_opens_as_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    first, second = Image.new("RGB", (64, 48), (200, 10, 10)), Image.new("RGB", (64, 48), (10, 200, 10))
    first.save(path, "MPO", save_all=True, append_images=[second])
    with Image.open(path) as check:
        assert check.format == "MPO"

    image = load_photo(path)

    assert image.size == (64, 48)
    assert image.getpixel((32, 24))[0] > 150  # the first picture


# --- 8: a bounded amount of work per file, and Cancel that does not wait for it ----------------------


def test_a_jpeg_of_forty_thousand_scans_is_refused_before_decoding(tmp_path: Path) -> None:
    # The file: 4000x4000, 40,000 scans; decoding it took minutes (over 150 s).
    path = many_scan_jpeg(tmp_path / "scans.jpg", 40_000, 4000)
    started = time.monotonic()

    with pytest.raises(PhotoError, match="scans") as caught:
        load_and_preprocess(path, Preprocessing())

    assert time.monotonic() - started < 1.0
    assert caught.value.path == path


def test_the_scan_limit_is_exact(tmp_path: Path) -> None:
    at_limit = many_scan_jpeg(tmp_path / "at-limit.jpg", MAX_JPEG_SCANS, 256)
    over_limit = many_scan_jpeg(tmp_path / "over-limit.jpg", MAX_JPEG_SCANS + 1, 256)

    assert load_photo(at_limit).size == (256, 256)
    with pytest.raises(PhotoError, match=f"more than {MAX_JPEG_SCANS} scans"):
        load_photo(over_limit)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


@pytest.mark.parametrize("progressive", [False, True])
def test_scans_are_counted_by_structure_not_by_stray_bytes(tmp_path: Path, progressive: bool) -> None:
    rng = np.random.default_rng(5)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
        buffer, "JPEG", progressive=progressive
    )
    plain = buffer.getvalue()
    expected = sum(1 for marker, _ in jpeg_pieces(plain) if marker == 0xDA)
    assert expected == (10 if progressive else 1)
    # Scan markers inside a comment, and a motion photo's "video" after the image, do not count;
    # comment sizes around 64 KiB put the next real marker across the counter's read boundary.
    trailer = b"\xff\xda\x00\x08" * 50_000
    for size in (10, 65_500, 65_531, 65_532, 65_533):
        comment = _segment(0xFE, (b"\xff\xda" * size)[:size])
        data = plain[:2] + comment + plain[2:] + trailer
        path = tmp_path / f"stray-{size}.jpg"
        path.write_bytes(data)
        with path.open("rb") as file:
            assert count_jpeg_scans(file, MAX_JPEG_SCANS) == expected, size
        assert load_photo(path).size == (160, 120)


def test_coefficient_memory_follows_the_sampling_factors() -> None:
    # 4:2:0 colour: the luma at full size, each chroma plane at a quarter; two bytes per coefficient.
    assert jpeg_coefficient_bytes((1600, 1200), [(1, 2, 2, 0), (2, 1, 1, 1), (3, 1, 1, 1)]) == (
        1600 * 1200 * 2 * 3 // 2
    )
    assert jpeg_coefficient_bytes((800, 800), [(1, 1, 1, 0)]) == 800 * 800 * 2


def _close_to_decoding_in_full(path: Path, spec: Preprocessing) -> None:
    """What the model sees of a photo decoded reduced is within a few grey levels of decoding it in full."""
    levels = (
        np.abs(load_and_preprocess(path, spec) - preprocess(load_photo(path), spec)) * min(spec.std) * 255
    )
    assert levels.max() < 4.5 and levels.mean() < 0.5, (path.name, levels.max(), levels.mean())


def _smooth_photo(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 255, (size[1] // 60, size[0] // 60, 3), dtype=np.uint8))
    return coarse.resize(size, Image.Resampling.BICUBIC)


def test_large_jpegs_decode_at_a_reduced_scale_never_below_the_reducing_gap(tmp_path: Path) -> None:
    path = tmp_path / "large.jpg"
    _smooth_photo((6000, 4000), seed=8).save(path, quality=92)
    spec = Preprocessing()

    reduced = load_photo(path, needed_side=spec.resize)

    assert load_photo(path).size == (6000, 4000)
    assert REDUCING_GAP * spec.resize <= min(reduced.size)
    assert reduced.size == (1500, 1000)  # DCT scaling by 1/4, the smallest that keeps 3 x 256
    _close_to_decoding_in_full(path, spec)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_reduced_jpeg_is_cropped_where_the_full_one_is_whatever_its_orientation(
    tmp_path: Path, orientation: int
) -> None:
    # 3001 x 2003 is no multiple of the 1/4 scale: the last reduced row and column are partial.
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented-{orientation}.jpg"
    _smooth_photo((3001, 2003), seed=orientation).save(path, quality=92, exif=exif.tobytes())
    spec = Preprocessing(size=64, resize=72)

    assert min(load_photo(path, needed_side=spec.resize).size) < 2003 // 2
    _close_to_decoding_in_full(path, spec)


def test_large_photos_of_other_formats_are_shrunk_as_they_are_converted(tmp_path: Path) -> None:
    pixels = _smooth_photo((1201, 902), seed=9)
    spec = Preprocessing(size=32, resize=36)
    for name, image in {
        "rgb.png": pixels,
        "rgba.png": pixels.convert("RGBA"),
        "grey.png": pixels.convert("L"),
        "grey16.png": Image.fromarray(np.asarray(pixels.convert("L"), np.uint16) * 257),
        "cmyk.tiff": pixels.convert("CMYK"),
    }.items():
        path = tmp_path / name
        image.save(path)

        reduced = load_photo(path, needed_side=spec.resize)

        assert reduced.mode == "RGB" and min(reduced.size) >= REDUCING_GAP * spec.resize, name
        assert reduced.size == (151, 113), name  # averaged 8 x 8, the last row and column partly
        _close_to_decoding_in_full(path, spec)


def _stuck_decoder(monkeypatch: pytest.MonkeyPatch, stuck: Path) -> tuple[threading.Event, threading.Event]:
    """Make decoding `stuck` block until released, as a 40,000-scan JPEG did; (started, release)."""
    started, release = threading.Event(), threading.Event()
    real = classify_module.load_and_preprocess

    def decode(path: Path, spec: Preprocessing):
        if Path(path) == stuck:
            started.set()
            release.wait(30)
        return real(path, spec)

    monkeypatch.setattr(classify_module, "load_and_preprocess", decode)
    return started, release


def test_stop_ends_the_run_within_a_second_while_a_decode_is_stuck(colour_bundle, tmp_path, monkeypatch):
    photos = [make_photo(tmp_path / f"cat-{i}.png", COLOURS["Red Cat"], seed=i) for i in range(6)]
    started, release = _stuck_decoder(monkeypatch, photos[3])
    # Without a prompt stop the run would wait for the release, five seconds on.
    fallback = threading.Timer(5.0, release.set)
    stop = threading.Event()
    classifier = Classifier(colour_bundle, engine="cpu", batch_size=2, decode_workers=2)
    results = []
    fallback.start()
    try:
        for result in classifier.classify(photos, should_stop=stop.is_set):
            results.append(result)
            if len(results) == 2:
                assert started.wait(5)
                stop.set()
                stop_requested = time.monotonic()
        latency = time.monotonic() - stop_requested
    finally:
        release.set()
        fallback.cancel()
        classifier.close()

    assert latency < 1.0
    assert [r.path for r in results] == photos[:2]
    assert all(isinstance(r, Prediction) for r in results)


def test_window_cancel_takes_effect_within_a_second_while_a_decode_is_stuck(
    qtbot, colour_bundle, tmp_path, monkeypatch
) -> None:
    from catbreed_desktop.core.settings import Settings
    from catbreed_desktop.gui.main_window import MainWindow

    folder = tmp_path / "photos"
    photos = [make_photo(folder / f"cat-{i}.png", COLOURS["Blue Cat"], seed=i) for i in range(8)]
    started, release = _stuck_decoder(monkeypatch, photos[2])
    fallback = threading.Timer(5.0, release.set)
    window = MainWindow(Settings(engine="cpu", batch_size=2), model_path=colour_bundle.path)
    qtbot.addWidget(window)
    fallback.start()
    try:
        window.add_inputs([folder])
        qtbot.waitUntil(started.is_set, timeout=10_000)
        cancelled = time.monotonic()
        window.cancel()
        qtbot.waitUntil(lambda: not window.is_busy(), timeout=3_000)
        latency = time.monotonic() - cancelled
    finally:
        release.set()
        fallback.cancel()

    assert latency < 1.0
    assert window.statusBar().currentMessage() == "Classification cancelled"
    assert len(window.photos.records) == len(photos)  # every photo is still listed, unclassified or not
    window.close()


# --- 9: decoding memory stays within a budget ---------------------------------------------------------


def test_memory_budget_is_shared_first_come_first_served_and_admits_an_oversized_request() -> None:
    budget = MemoryBudget(100)
    peak, order, lock = [0], [], threading.Lock()

    def decode(name: str, amount: int) -> None:
        with budget.hold(amount):
            with lock:
                peak[0] = max(peak[0], budget.in_use)
                order.append(name)
            time.sleep(0.05)

    names = [("small-0", 40), ("small-1", 40), ("huge", 500), ("small-2", 40), ("small-3", 40)]
    threads = [threading.Thread(target=decode, args=item) for item in names]
    with budget.hold(100):  # everyone queues, in a known order
        for count, thread in enumerate(threads, start=1):
            thread.start()
            deadline = time.monotonic() + 5
            while budget.waiting < count and time.monotonic() < deadline:
                time.sleep(0.001)
    for thread in threads:
        thread.join(5)

    assert peak[0] <= 100
    # The huge request waits for the budget to empty, and the small ones after it wait for it.
    assert set(order[:2]) == {"small-0", "small-1"}
    assert order[2] == "huge"
    assert set(order[3:]) == {"small-2", "small-3"}
    assert budget.in_use == 0 and budget.waiting == 0


@needs_resource
def test_a_630_byte_jpeg_declaring_100_megapixels_decodes_in_little_memory(tmp_path: Path) -> None:
    # It took 1.2 GB decoded in full; DCT scaling decodes it at 1250x1250.
    path = jpeg_declaring(tmp_path / "tiny.jpg", 10_000, 10_000)
    assert path.stat().st_size < 1000
    code = (
        PEAK_MEMORY
        + """
import json
from catbreed_desktop.core.photos import Preprocessing, load_and_preprocess
baseline = peak_mib()
array = load_and_preprocess(sys.argv[1], Preprocessing())
print(json.dumps({"shape": list(array.shape), "baseline": baseline, "peak": peak_mib()}))
"""
    )
    result = run_python(code, path, timeout=60)

    assert result["shape"] == [3, 224, 224]
    assert result["peak"] - result["baseline"] < 100, result


@needs_resource
@pytest.mark.slow
def test_sixteen_bit_100_megapixel_pngs_stay_within_a_gigabyte_with_four_decoders(
    colour_bundle, tmp_path: Path
) -> None:
    # Six of these peaked at 5.6 GB with two decoding threads and 10.5 GB with four.
    folder = tmp_path / "wide"
    folder.mkdir()
    first = flat_grey16_png(folder / "wide-0.png", 10_000)
    for index in range(1, 4):
        (folder / f"wide-{index}.png").write_bytes(first.read_bytes())
    code = (
        PEAK_MEMORY
        + """
import json
from pathlib import Path
from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.classify import Classifier, Failure
paths = sorted(Path(sys.argv[2]).glob("*.png"))
with Classifier(load_bundle(sys.argv[1]), engine="cpu", batch_size=4, decode_workers=4) as classifier:
    outcomes = [r.reason if isinstance(r, Failure) else r.label for r in classifier.classify(paths)]
print(json.dumps({"outcomes": outcomes, "peak": peak_mib()}))
"""
    )
    result = run_python(code, colour_bundle.path, folder, timeout=120)

    assert len(result["outcomes"]) == 4
    assert all(outcome in COLOURS for outcome in result["outcomes"]), result["outcomes"]
    assert result["peak"] < 1024, result
