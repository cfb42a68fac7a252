"""What `catbreed classify` and `catbreed sort` read, said before the model loads and counted honestly.

A path that does not exist is a usage error (one line, exit 2), not a photo that failed; the
speed line counts the photos read; photos left in sub-folders without `--recursive` (the window
reads them by default) are counted, with the option that includes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import COLOURS, make_photo

from catbreed_desktop.cli import classify_command, sort_command
from catbreed_desktop.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """One photo at the top of `inbox`, two in sub-folders."""
    make_photo(tmp_path / "inbox" / "top.png", COLOURS["Red Cat"])
    make_photo(tmp_path / "inbox" / "2024" / "a.png", COLOURS["Green Cat"])
    make_photo(tmp_path / "inbox" / "2024" / "june" / "b.png", COLOURS["Blue Cat"])
    return tmp_path / "inbox"


@pytest.mark.parametrize("command", ["classify", "sort"])
def test_a_path_that_does_not_exist_is_a_usage_error_before_any_model_loads(
    capsys, monkeypatch, tmp_path: Path, command: str
) -> None:
    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded for a path that does not exist")

    for module in (classify_command, sort_command):
        monkeypatch.setattr(module, "open_classifier", must_not_load)
    missing = tmp_path / "nosuchdir"
    extra = ["--into", str(tmp_path / "sorted")] if command == "sort" else []

    status, out, err = run(capsys, command, f"{missing}/", *extra)

    assert status == 2 and out == ""
    assert err == f"catbreed: {missing}/: no such file or folder\n"  # no speed line after it
    assert not (tmp_path / "sorted").exists()


def test_the_speed_line_counts_only_the_photos_read(capsys, colour_bundle, tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png", COLOURS["Red Cat"])
    make_photo(tmp_path / "in" / "b.png", COLOURS["Blue Cat"])
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a photo")

    status, out, err = run(capsys, "classify", str(tmp_path / "in"), "--model", str(colour_bundle.path))

    assert status == 1 and len(out.splitlines()) == 2
    assert "catbreed: 2 photos in " in err
    assert "catbreed: 1 of 3 files could not be classified" in err


def test_photos_in_sub_folders_are_counted_and_the_option_that_reads_them_named(
    capsys, colour_bundle, nested: Path
) -> None:
    note = "catbreed: note: left out 2 photos in sub-folders, which --recursive includes\n"
    model = ["--model", str(colour_bundle.path)]

    status, out, err = run(capsys, "classify", str(nested), *model)
    assert status == 0 and len(out.splitlines()) == 1 and note in err

    status, out, err = run(
        capsys, "sort", str(nested), "--into", str(nested.parent / "sorted"), "--dry-run", *model
    )
    assert status == 0 and note in err and "1 to move" in out

    status, out, err = run(capsys, "classify", str(nested), "--recursive", *model)
    assert status == 0 and len(out.splitlines()) == 3 and "sub-folders" not in err

    # A sub-folder named as well is read, so its photos are not counted as left out.
    status, out, err = run(capsys, "classify", str(nested), str(nested / "2024"), *model)
    assert "left out 1 photo in sub-folders" in err and len(out.splitlines()) == 2


def test_a_folder_with_photos_only_in_sub_folders_says_how_many(capsys, tmp_path: Path) -> None:
    make_photo(tmp_path / "top" / "a" / "deep.png", COLOURS["Red Cat"])

    status, out, err = run(capsys, "classify", str(tmp_path / "top"))

    assert status == 2 and out == ""
    assert err == (
        f"catbreed: no photos found in {tmp_path / 'top'} (1 photo in sub-folders, which --recursive includes)\n"
    )
