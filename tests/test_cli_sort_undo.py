"""`catbreed sort` and `catbreed undo` end to end, on real cat photos mixed with broken files and
clashing names: every photo ends up exactly once with its bytes, and undo restores the start exactly."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from sorting_helpers import sha256, snapshot, write

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.sorting import NOT_CAT_FOLDER, UNSURE_FOLDER

FOLDERS = ("Red Cat", "Green Cat", "Blue Cat", UNSURE_FOLDER, NOT_CAT_FOLDER)


def _real_photo_library(root: Path, shared_cats: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Copies of 12 real photos (two different ones both named cat.jpg), broken files, and
    files already in the target under a clashing name. Returns (photos, broken, pre-existing)."""
    breeds = sorted(p for p in shared_cats.iterdir() if p.is_dir())[:12]
    photos = []
    for number, breed in enumerate(breeds):
        original = sorted(breed.glob("*.jpg"))[0]
        name = "cat.jpg" if number < 2 else original.name
        photos.append(Path(shutil.copyfile(original, _parent(root / "src" / f"roll{number % 2}" / name))))
    truncated = photos[2].read_bytes()
    broken = [
        write(root / "src" / "roll0" / "truncated.jpg", truncated[: len(truncated) // 3]),
        write(root / "src" / "roll0" / "empty.jpg", b""),
        write(root / "src" / "roll1" / "notes.jpg", "this is a shopping list, not a photo\n"),
    ]
    # Whatever folder the model picks, "cat.jpg" is already taken there by a different file.
    existing = [write(root / "sorted" / folder / "cat.jpg", f"an older {folder} photo") for folder in FOLDERS]
    return photos, broken, existing


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_sort_then_undo_real_photos_with_bad_files_and_clashing_names(
    tmp_path: Path, shared_cats: Path, colour_bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, broken, existing = _real_photo_library(tmp_path, shared_cats)
    before = snapshot(tmp_path)
    target = tmp_path / "sorted"
    command = [
        "sort",
        str(tmp_path / "src"),
        "--recursive",
        "--into",
        str(target),
        "--model",
        str(colour_bundle.path),
    ]
    command += ["--engine", "cpu"]

    assert main([*command, "--dry-run"]) == 1  # 1: some files could not be read
    dry = capsys.readouterr()
    assert "dry run: nothing was changed" in dry.out
    assert sum(line.startswith("move") for line in dry.out.splitlines()) == len(photos)
    assert snapshot(tmp_path) == before

    assert main(command) == 1
    out, err = capsys.readouterr()
    for bad in broken:
        assert str(bad) in err
        assert before[str(bad.relative_to(tmp_path))] == sha256(bad)  # untouched, where it was
    assert f"{len(photos)} moved" in out and "journal: " in out
    everywhere = Counter(sha256(p) for p in tmp_path.rglob("*") if p.is_file())
    for photo in photos:
        digest = before[str(photo.relative_to(tmp_path))]
        assert everywhere[digest] == 1, f"{photo.name} is not present exactly once"
        assert not photo.exists()
    in_target = {sha256(p): p for p in target.rglob("*") if p.is_file()}
    assert all(before[str(p.relative_to(tmp_path))] in in_target for p in photos)
    for older in existing:
        assert older.read_text().startswith("an older")
    clashed = list(target.rglob("cat (*).jpg"))
    assert len(clashed) >= 2  # both cat.jpg photos were renamed, never written over the older one

    assert main(["undo"]) == 0
    assert "12 photos put back" in capsys.readouterr().out
    assert snapshot(tmp_path) == before
    assert main(["undo"]) == 1
    assert "no sort to undo" in capsys.readouterr().err


def test_copy_sort_files_by_colour_and_undo_removes_only_the_copies(
    tmp_path: Path, colour_bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    for number, colour in enumerate(COLOURS.values()):
        make_photo(tmp_path / "src" / f"{number}.png", colour, seed=number)
    before = snapshot(tmp_path)
    target = tmp_path / "out"
    status = main(
        ["sort", str(tmp_path / "src"), "--into", str(target), "--copy", "--model", str(colour_bundle.path)]
    )
    assert status == 0
    assert "3 copied" in capsys.readouterr().out
    placed = {p.parent.name: p.name for p in target.rglob("*.png")}
    assert placed == {label: f"{number}.png" for number, label in enumerate(COLOURS)}
    assert snapshot(tmp_path / "src") == {
        k.removeprefix("src/"): v for k, v in before.items() if k.startswith("src/")
    }

    assert main(["undo"]) == 0
    assert "3 copies removed" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_everything_goes_to_unsure_with_an_impossible_threshold(
    tmp_path: Path, colour_bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    make_photo(tmp_path / "src" / "red.png", COLOURS["Red Cat"])
    target = tmp_path / "out"
    args = ["sort", str(tmp_path / "src"), "--into", str(target), "--min-confidence", "1"]
    assert main([*args, "--model", str(colour_bundle.path)]) == 0
    assert (target / UNSURE_FOLDER / "red.png").is_file()


def test_bad_arguments_are_refused_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = write(tmp_path / "a.jpg", "x")
    assert main(["sort", str(photo), "--into", str(tmp_path / "out"), "--min-confidence", "2"]) == 2
    assert main(["sort", str(photo), "--into", str(photo)]) == 2
    assert main(["sort", str(photo), "--into", str(tmp_path / "o"), "--move", "--copy"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert photo.read_text() == "x"


def test_resume_says_when_there_is_nothing_to_resume(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resume"]) == 1
    assert "no interrupted sort" in capsys.readouterr().err
