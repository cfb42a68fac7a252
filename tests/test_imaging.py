"""Photo decoding and preprocessing: formats, orientation, colour modes, bombs, bad files, paths."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from factories import heic_bytes
from PIL import Image, ImageOps

from catbreed_desktop.core.photos import (
    HEIF_AVAILABLE,
    PhotoError,
    Preprocessing,
    iter_photo_paths,
    load_and_preprocess,
    load_photo,
    preprocess,
    resize_and_crop,
    stack_batch,
)

ORANGE = (230, 120, 20)


def _solid(size: tuple[int, int], colour: tuple[int, int, int] = ORANGE) -> Image.Image:
    return Image.new("RGB", size, colour)


def _assert_close(image: Image.Image, colour: tuple[int, ...], tolerance: int = 6) -> None:
    centre = image.getpixel((image.width // 2, image.height // 2))
    assert all(abs(a - b) <= tolerance for a, b in zip(centre, colour, strict=True)), (centre, colour)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tiff"])
def test_each_still_format_decodes_to_rgb_of_the_right_size(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    _solid((40, 30)).save(path)

    image = load_photo(path)

    assert image.mode == "RGB"
    assert image.size == (40, 30)
    _assert_close(image, ORANGE)


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [_solid((20, 10), (255, 0, 0)), _solid((20, 10), (0, 255, 0)), _solid((20, 10), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3  # the file really is animated

    image = load_photo(path)

    assert image.mode == "RGB"
    assert image.size == (20, 10)
    _assert_close(image, (255, 0, 0))


@pytest.mark.skipif(not HEIF_AVAILABLE, reason="pi-heif is not installed")
def test_heic_decodes_through_libheif(tmp_path: Path) -> None:
    encoded = heic_bytes(_solid((64, 48)), quality=95)
    if encoded is None:
        pytest.skip("no HEIC encoder here (pillow-heif), so no test file can be made")
    path = tmp_path / "phone.heic"
    path.write_bytes(encoded)

    image = load_photo(path)

    assert image.mode == "RGB"
    assert image.size == (64, 48)
    _assert_close(image, ORANGE, tolerance=12)  # HEVC is lossy and chroma-subsampled


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored landscape with a red top-left corner; Orientation=6 means "rotate 90 degrees
    # clockwise to view", so the viewer sees a portrait photo with red at the top-right.
    stored = _solid((60, 40), (0, 0, 200))
    stored.paste((255, 0, 0), (0, 0, 15, 15))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)

    image = load_photo(path)

    assert image.size == (40, 60)
    _assert_close(image.crop((32, 0, 40, 8)), (255, 0, 0), tolerance=30)
    _assert_close(image.crop((0, 0, 8, 8)), (0, 0, 200), tolerance=30)


# An EXIF block (found by fuzzing) on which Pillow's exif_transpose raises struct.error.
BROKEN_EXIF = bytes.fromhex(
    "4578696600004d4d002a0000000800030107000200000006000000320112000300000001000600008769"
    "000400000001000000380000000043616e6f6e00000190030002000000140000004a0000000032303230"
    "0030313a30312030303a3030cc303000"
)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_damaged_exif_keeps_the_photo(tmp_path: Path) -> None:
    path = tmp_path / "bad-exif.jpg"
    _solid((30, 20)).save(path, exif=BROKEN_EXIF)
    with Image.open(path) as check, pytest.raises(Exception):  # noqa: B017 - any type Pillow picks
        ImageOps.exif_transpose(check)

    image = load_photo(path)

    assert image.size == (30, 20)
    _assert_close(image, ORANGE)


def _make_mode(mode: str) -> tuple[Image.Image, tuple[int, int, int]]:
    """An image in `mode` and the RGB colour it must decode to."""
    if mode == "L":
        return Image.new("L", (16, 12), 100), (100, 100, 100)
    if mode == "LA":
        return Image.new("LA", (16, 12), (100, 0)), (255, 255, 255)  # fully transparent -> white
    if mode == "P":
        image = Image.new("P", (16, 12), 1)
        image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        image.info["transparency"] = 0  # index 0 transparent, index 1 opaque green
        return image, (10, 200, 30)
    if mode == "RGBA":
        return Image.new("RGBA", (16, 12), (200, 0, 0, 128)), (228, 128, 128)  # half red over white
    if mode == "CMYK":
        return Image.new("CMYK", (16, 12), (0, 255, 255, 0)), (255, 0, 0)
    if mode == "I;16":
        return Image.fromarray(np.full((12, 16), 32896, dtype=np.uint16)), (128, 128, 128)
    raise AssertionError(mode)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("L", ".png"), ("LA", ".png"), ("P", ".png"), ("RGBA", ".png"), ("CMYK", ".tiff"), ("I;16", ".png")],
)
def test_every_colour_mode_becomes_rgb(tmp_path: Path, mode: str, suffix: str) -> None:
    image, expected = _make_mode(mode)
    path = tmp_path / f"{mode.replace(';', '_')}{suffix}"
    image.save(path)
    with Image.open(path) as check:
        assert check.mode == mode  # the file kept the mode under test

    decoded = load_photo(path)

    assert decoded.mode == "RGB"
    assert decoded.size == (16, 12)
    _assert_close(decoded, expected, tolerance=2)


def test_max_pixels_refuses_larger_photos(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _solid((100, 100)).save(path)

    assert load_photo(path, max_pixels=10_000).size == (100, 100)
    with pytest.raises(PhotoError, match="over the limit") as caught:
        load_photo(path, max_pixels=9_999)
    assert str(path) in str(caught.value)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims `width` x `height` but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("side", "reason"), [(12_000, "over the limit"), (60_000, "decompression bomb")])
def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path, side: int, reason: str) -> None:
    # 144 MP is over our cap but under Pillow's hard limit (so our header check refuses it);
    # 3.6 GP is over Pillow's own. Decoding either would need gigabytes; refusing costs nothing.
    path = _png_header_only(tmp_path / "bomb.png", side, side)

    with pytest.raises(PhotoError, match=reason) as caught:
        load_photo(path)
    assert caught.value.path == path


def _write_jpeg(path: Path) -> bytes:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    return path.read_bytes()


def _corrupt_jpeg(path: Path) -> None:
    data = bytearray(_write_jpeg(path))
    data[2:200] = b"\x00" * 198  # wipe the tables the decoder needs
    path.write_bytes(bytes(data))


def _truncated_jpeg(path: Path) -> None:
    data = _write_jpeg(path)
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "corrupt.jpg": (_corrupt_jpeg, "not an image|corrupt"),
    "truncated.jpg": (_truncated_jpeg, "truncated"),
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty"),
    "notes.jpg": (lambda p: p.write_text("shopping list: cat food\n"), "not an image"),
    "missing.jpg": (lambda p: None, "no such file"),
    "folder.jpg": (lambda p: p.mkdir(), "folder"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_photo_error_naming_the_file(tmp_path: Path, name: str) -> None:
    make, reason = BAD_FILES[name]
    path = tmp_path / name
    make(path)

    with pytest.raises(PhotoError, match=reason) as caught:
        load_photo(path)

    assert str(path) in str(caught.value)
    assert caught.value.path == path


def test_photo_error_survives_pickling_for_worker_processes(tmp_path: Path) -> None:
    error = PhotoError(tmp_path / "x.jpg", "the file is empty")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


def test_a_batch_over_mixed_files_keeps_going(tmp_path: Path) -> None:
    good = []
    for index, suffix in enumerate([".jpg", ".png", ".webp"]):
        path = tmp_path / f"good{index}{suffix}"
        _solid((40, 30)).save(path)
        good.append(path)
    bad = []
    for name, (make, _) in BAD_FILES.items():
        path = tmp_path / f"bad-{name}"
        make(path)
        bad.append(path)
    spec = Preprocessing(size=16, resize=20)

    decoded, failures = [], []
    for path in sorted(good + bad):
        try:
            decoded.append(load_and_preprocess(path, spec))
        except PhotoError as error:
            failures.append(error.path)

    assert len(decoded) == len(good)
    assert sorted(failures) == sorted(bad)
    assert stack_batch(decoded).shape == (len(good), 3, 16, 16)


def test_preprocess_shape_dtype_and_normalisation() -> None:
    spec = Preprocessing(size=32, resize=40, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    grey = 128

    array = preprocess(_solid((90, 50), (grey, grey, grey)), spec)

    assert array.shape == (3, 32, 32)
    assert array.dtype == np.float32
    assert array.flags["C_CONTIGUOUS"]
    for channel in range(3):
        expected = (grey / 255 - spec.mean[channel]) / spec.std[channel]
        np.testing.assert_allclose(array[channel], expected, atol=1e-5)


def test_preprocess_accepts_images_that_are_not_rgb() -> None:
    spec = Preprocessing(size=8, resize=8)

    array = preprocess(Image.new("RGBA", (10, 10), (0, 0, 0, 0)), spec)

    np.testing.assert_allclose(array[0], (1.0 - spec.mean[0]) / spec.std[0], atol=1e-5)


@pytest.mark.parametrize("size", [(300, 100), (100, 300)])
def test_resize_and_crop_takes_the_centre_of_landscape_and_portrait(size: tuple[int, int]) -> None:
    # Three bands along the long side; only the middle one must survive the centre crop.
    image = _solid(size, (255, 0, 0))
    long_side = max(size)
    middle = (long_side // 3, 0, 2 * long_side // 3, min(size))
    if size[0] < size[1]:
        middle = (0, long_side // 3, min(size), 2 * long_side // 3)
    image.paste((0, 255, 0), middle)
    spec = Preprocessing(size=40, resize=40, resample="nearest")

    cropped = resize_and_crop(image, spec)

    assert cropped.size == (40, 40)
    colours = {colour for _, colour in cropped.getcolors()}
    assert colours == {(0, 255, 0)}


def test_resize_and_crop_matches_resizing_the_whole_image_first() -> None:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (150, 260, 3), dtype=np.uint8))
    spec = Preprocessing(size=64, resize=72)
    width = round(260 * 72 / 150)
    left, top = (width - 64) // 2, (72 - 64) // 2
    reference = image.resize((width, 72), Image.Resampling.BICUBIC).crop((left, top, left + 64, top + 64))

    difference = np.abs(np.asarray(resize_and_crop(image, spec), int) - np.asarray(reference, int))

    assert difference.max() <= 1


def test_resize_and_crop_of_a_thin_strip_stays_small() -> None:
    strip = _solid((20_000, 1))

    cropped = resize_and_crop(strip, Preprocessing())

    assert cropped.size == (224, 224)


def test_preprocessing_rejects_bad_rules() -> None:
    with pytest.raises(ValueError, match="resample"):
        Preprocessing(resample="lanczos9")
    with pytest.raises(ValueError, match="at least the crop size"):
        Preprocessing(size=256, resize=224)
    with pytest.raises(ValueError, match="three finite numbers"):
        Preprocessing(mean=(0.5, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        Preprocessing(std=(0.2, 0.0, 0.2))
    assert Preprocessing.from_dict(Preprocessing(size=8, resize=9).to_dict()) == Preprocessing(
        size=8, resize=9
    )


def test_iter_photo_paths_recursive_dedupe_sorted_and_explicit_files(tmp_path: Path) -> None:
    for name in ["b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "sub/c.webp", "sub/deeper/d.heic"]:
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    folder = tmp_path / "in"
    explicit = folder / "notes.txt"

    flat = iter_photo_paths([folder])
    deep = iter_photo_paths(
        [folder, explicit, folder / "b.jpg", folder / "sub" / ".." / "b.jpg"], recursive=True
    )

    assert flat == [folder / "a.PNG", folder / "b.jpg"]
    assert deep == sorted(deep)
    assert deep == [
        folder / "a.PNG",
        folder / "b.jpg",
        explicit,  # named explicitly, so kept for the decoder to report
        folder / "sub" / "c.webp",
        folder / "sub" / "deeper" / "d.heic",
    ]


# Found by tests/test_decoder_fuzz.py: decoders raise other types than OSError on damaged files.


@pytest.mark.skipif(not HEIF_AVAILABLE, reason="pi-heif is not installed")
def test_heic_whose_size_libheif_refuses_is_a_photo_error(tmp_path: Path) -> None:
    encoded = heic_bytes(_solid((64, 48)), quality=80)
    if encoded is None:
        pytest.skip("no HEIC encoder here (pillow-heif), so no test file can be made")
    path = tmp_path / "phone.heic"
    data = bytearray(encoded)
    spatial_extent = data.index(b"ispe")
    data[spatial_extent + 8 : spatial_extent + 12] = struct.pack(">I", 0x7FFF_FFFF)  # the width
    path.write_bytes(bytes(data))

    with pytest.raises(PhotoError, match="corrupt") as caught:  # libheif: RuntimeError
        load_photo(path)
    assert caught.value.path == path


def test_tiff_with_a_tag_of_the_wrong_type_is_a_photo_error(tmp_path: Path) -> None:
    path = tmp_path / "scan.tiff"
    _solid((16, 12)).save(path)
    data = bytearray(path.read_bytes())
    order = "<" if data[:2] == b"II" else ">"
    directory = struct.unpack(order + "I", data[4:8])[0]
    for index in range(struct.unpack(order + "H", data[directory : directory + 2])[0]):
        entry = directory + 2 + 12 * index
        if struct.unpack(order + "H", data[entry : entry + 2])[0] == 273:  # StripOffsets
            data[entry + 2 : entry + 4] = struct.pack(order + "H", 5)  # a RATIONAL, not a LONG
    path.write_bytes(bytes(data))

    with pytest.raises(PhotoError, match="corrupt") as caught:  # Pillow: TypeError
        load_photo(path)
    assert caught.value.path == path
