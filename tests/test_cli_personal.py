"""`catbreed correct` and the personal layer in `catbreed classify` and `catbreed sort`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from factories import COLOURS, make_photo

from catbreed_desktop.cli.main import main
from catbreed_desktop.core.corrections import Correction, export_corrections_csv, read_corrections_csv

# The colour model calls purple photos "Blue Cat"; the person says they are green cats.
PURPLE = (180, 30, 200)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    make_photo(folder / "purple1.png", PURPLE, seed=1)
    make_photo(folder / "purple2.png", PURPLE, seed=2)
    make_photo(folder / "red.png", COLOURS["Red Cat"])
    return folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def classify_json(capsys, bundle, folder: Path, *extra: str) -> dict[str, dict]:
    status, out, _ = run(capsys, "classify", str(folder), "--model", str(bundle.path), "--json", *extra)
    assert status == 0
    return {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}


def test_a_correction_changes_a_similar_photo_and_json_says_so(capsys, colour_bundle, photos):
    before = classify_json(capsys, colour_bundle, photos)
    assert before["purple2.png"]["label"] == "Blue Cat" and not before["purple2.png"]["personal"]

    status, out, _ = run(
        capsys,
        "correct",
        str(photos / "purple1.png"),
        "--breed",
        "Green Cat",
        "--model",
        str(colour_bundle.path),
    )
    assert status == 0 and "kept 1 correction" in out

    after = classify_json(capsys, colour_bundle, photos)
    assert after["purple2.png"]["label"] == "Green Cat" and after["purple2.png"]["personal"] is True
    assert after["red.png"]["label"] == "Red Cat" and after["red.png"]["personal"] is False

    ignored = classify_json(capsys, colour_bundle, photos, "--no-personal")
    assert ignored["purple2.png"]["label"] == "Blue Cat" and not ignored["purple2.png"]["personal"]


def test_csv_has_a_personal_column_as_json_has_personal(capsys, colour_bundle, photos):
    model = ("--model", str(colour_bundle.path))
    run(capsys, "correct", str(photos / "purple1.png"), "--breed", "Green Cat", *model)

    status, out, _ = run(capsys, "classify", str(photos), *model, "--csv")

    reader = csv.DictReader(io.StringIO(out))
    rows = {Path(row["path"]).name: row for row in reader}
    assert status == 0
    assert reader.fieldnames is not None and reader.fieldnames[-2:] == ["error", "personal"]
    assert (rows["purple2.png"]["label_1"], rows["purple2.png"]["personal"]) == ("Green Cat", "true")
    assert (rows["red.png"]["label_1"], rows["red.png"]["personal"]) == ("Red Cat", "false")
    json_rows = classify_json(capsys, colour_bundle, photos)
    assert {name: row["personal"] == "true" for name, row in rows.items()} == {
        name: record["personal"] for name, record in json_rows.items()
    }


def test_list_and_forget(capsys, colour_bundle, photos):
    model = ("--model", str(colour_bundle.path))
    run(
        capsys,
        "correct",
        str(photos / "purple1.png"),
        str(photos / "red.png"),
        "--breed",
        "Green Cat",
        *model,
    )
    status, out, _ = run(capsys, "correct", "--list", *model)
    assert status == 0 and "2 corrections kept" in out and "purple1.png" in out and "Green Cat 2" in out

    status, out, _ = run(capsys, "correct", "--forget", str(photos / "red.png"), *model)
    assert status == 0 and "forgot 1 correction; 1 left" in out
    status, out, _ = run(capsys, "correct", "--forget", *model)
    assert "forgot 1 correction; 0 left" in out
    assert classify_json(capsys, colour_bundle, photos)["purple2.png"]["label"] == "Blue Cat"


def test_corrections_from_the_window_export_csv(capsys, colour_bundle, photos, tmp_path):
    csv_path = tmp_path / "corrections.csv"
    export_corrections_csv([Correction(photos / "purple1.png", "Green Cat")], csv_path)
    status, out, _ = run(capsys, "correct", "--from", str(csv_path), "--model", str(colour_bundle.path))
    assert status == 0 and "kept 1 correction" in out
    assert classify_json(capsys, colour_bundle, photos)["purple2.png"]["label"] == "Green Cat"


def test_kept_corrections_export_as_the_window_csv(capsys, colour_bundle, photos, tmp_path):
    model = ("--model", str(colour_bundle.path))
    run(capsys, "correct", str(photos / "purple1.png"), "--breed", "Green Cat", *model)
    status, out, _ = run(capsys, "correct", "--export", str(tmp_path / "kept.csv"), *model)
    assert status == 0 and "wrote 1 correction" in out
    assert read_corrections_csv(tmp_path / "kept.csv") == [Correction(photos / "purple1.png", "Green Cat")]


def test_unknown_breed_and_missing_breed_are_usage_errors(capsys, colour_bundle, photos):
    status, _, err = run(
        capsys, "correct", str(photos / "red.png"), "--breed", "Tabby", "--model", str(colour_bundle.path)
    )
    assert status == 2 and "knows no breed 'Tabby'" in err and len(err.strip().splitlines()) <= 2
    status, _, err = run(capsys, "correct", str(photos / "red.png"), "--model", str(colour_bundle.path))
    assert status == 2 and "--breed" in err


def test_sort_preview_lists_photos_filed_by_a_correction(capsys, colour_bundle, photos, tmp_path):
    model = ("--model", str(colour_bundle.path))
    run(capsys, "correct", str(photos / "purple1.png"), "--breed", "Green Cat", *model)
    status, out, _ = run(
        capsys,
        "sort",
        str(photos),
        "--into",
        str(tmp_path / "sorted"),
        "--dry-run",
        "--min-confidence",
        "0.5",
        *model,
    )
    assert status == 0
    assert "filed by the breed your corrections gave" in out
    listed = out.split("filed by the breed your corrections gave")[1]
    assert "purple2.png -> Green Cat (like purple1.png → Green Cat)" in listed
    assert "red.png" not in listed
    assert sorted(p.name for p in photos.iterdir()) == ["purple1.png", "purple2.png", "red.png"]
