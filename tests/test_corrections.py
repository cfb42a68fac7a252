"""Exporting reviewed labels as a CSV for the trainer or as folders of copies."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import COLOURS, make_photo

from catbreed_desktop.core.corrections import (
    Correction,
    export_corrections_csv,
    export_corrections_folders,
    read_corrections_csv,
)


def test_csv_has_the_trainer_header_and_one_row_per_photo(tmp_path: Path) -> None:
    red = make_photo(tmp_path / "photos" / "red.png", COLOURS["Red Cat"])
    blue = make_photo(tmp_path / "photos" / "blue, with comma.png", COLOURS["Blue Cat"])
    corrections = [Correction(red, "Green Cat"), Correction(blue, "Blue Cat"), Correction(red, "Red Cat")]
    csv_path = tmp_path / "out" / "labels.csv"
    assert export_corrections_csv(corrections, csv_path) == 2
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,label"
    assert read_corrections_csv(csv_path) == [Correction(red, "Red Cat"), Correction(blue, "Blue Cat")]


def test_csv_export_refuses_a_folder_and_reading_checks_the_header(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        export_corrections_csv([], tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,breed\nx.png,Red Cat\n", encoding="utf-8")
    with pytest.raises(ValueError, match="path,label"):
        read_corrections_csv(bad)


def test_folder_export_copies_into_breed_folders_without_overwriting(tmp_path: Path) -> None:
    red = make_photo(tmp_path / "a" / "cat.png", COLOURS["Red Cat"], seed=1)
    other_red = make_photo(tmp_path / "b" / "cat.png", COLOURS["Red Cat"], seed=2)
    target = tmp_path / "export"
    existing = make_photo(target / "Red Cat" / "cat.png", COLOURS["Green Cat"], seed=3)
    before = existing.read_bytes()
    progress: list[tuple[int, int]] = []

    result = export_corrections_folders(
        [Correction(red, "Red Cat"), Correction(other_red, "Red Cat")],
        target,
        on_progress=lambda *p: progress.append(p),
    )

    assert existing.read_bytes() == before
    copies = sorted(copy.name for _, copy in result.copied)
    assert copies == ["cat (2).png", "cat (3).png"]
    for source, copy in result.copied:
        assert copy.read_bytes() == source.read_bytes()
        assert source.exists()
    assert progress[-1] == (2, 2)

    again = export_corrections_folders([Correction(red, "Red Cat")], target)
    assert again.copied == [] and again.skipped_duplicates == [red]


def test_folder_export_reports_unreadable_files_and_goes_on(tmp_path: Path) -> None:
    good = make_photo(tmp_path / "good.png", COLOURS["Blue Cat"])
    result = export_corrections_folders(
        [Correction(tmp_path / "vanished.png", "Blue Cat"), Correction(good, "Blue/Cat")], tmp_path / "export"
    )
    assert [path for path, _ in result.failed] == [tmp_path / "vanished.png"]
    assert [copy for _, copy in result.copied] == [tmp_path / "export" / "Blue_Cat" / "good.png"]
