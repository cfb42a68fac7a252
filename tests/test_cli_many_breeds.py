"""The command line with a 33-breed bundle: every breed can be printed, and the bundle's unsure threshold is the default."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from factories import BREEDS_33, make_breeds_bundle, make_photo

from catbreed_desktop.cli.main import build_parser, main

DECISION = {"min_confidence": 0.45, "chosen_on": "validation", "rule": "lowest threshold keeping 95% right"}
RED, PURPLE = (220, 30, 30), (150, 30, 150)  # a sure "Turkish Angora" (0.96) and an unsure "Sphynx" (0.41)


@pytest.fixture
def breeds_bundle(tmp_path: Path):
    return make_breeds_bundle(tmp_path / "bundle", decision=DECISION)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    make_photo(tmp_path / "photos" / "red.png", RED)
    make_photo(tmp_path / "photos" / "purple.png", PURPLE)
    return tmp_path / "photos"


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_classify_json_can_list_every_one_of_33_breeds(capsys, breeds_bundle, photos) -> None:
    status, out, err = run(
        capsys, "classify", str(photos), "--model", str(breeds_bundle.path), "--json", "--top-k", "40"
    )

    assert status == 0
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    for record in records.values():
        labels = [entry["label"] for entry in record["top"]]
        assert sorted(labels) == sorted(BREEDS_33)  # all of them, beyond any 12, once each
        assert abs(sum(entry["probability"] for entry in record["top"]) - 1.0) < 1e-4
    assert records["red.png"]["label"] == "Turkish Angora"
    assert "(33 breeds)" in err


def test_classify_marks_unsure_photos_with_the_bundles_threshold(capsys, breeds_bundle, photos) -> None:
    model = ["--model", str(breeds_bundle.path)]
    status, out, err = run(capsys, "classify", str(photos), *model, "--json")
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert status == 0
    assert records["purple.png"]["unsure"] is True and records["red.png"]["unsure"] is False
    assert "unsure below 45.0%: recommended by the model bundle, chosen on validation photos" in err

    # The person's value wins, and then nothing is said about the bundle's.
    _, out, err = run(capsys, "classify", str(photos), *model, "--json", "--min-confidence", "0.3")
    assert not any(json.loads(line)["unsure"] for line in out.splitlines())
    assert "unsure below" not in err

    _, out, _ = run(capsys, "classify", str(photos), *model, "--csv")
    rows = {Path(row["path"]).name: row for row in csv.DictReader(io.StringIO(out))}
    assert (rows["purple.png"]["status"], rows["purple.png"]["unsure"]) == ("ok", "true")
    assert rows["red.png"]["unsure"] == "false"

    _, out, _ = run(capsys, "classify", str(photos), *model)
    table = {line.split()[0].rsplit("/", 1)[-1]: line for line in out.splitlines()}
    assert "[unsure]  Sphynx" in table["purple.png"] and "[unsure]" not in table["red.png"]


def test_sort_defaults_to_the_bundles_threshold_and_an_explicit_one_wins(
    capsys, breeds_bundle, photos, tmp_path: Path
) -> None:
    target = tmp_path / "sorted"
    common = ["sort", str(photos), "--into", str(target), "--model", str(breeds_bundle.path), "--dry-run"]

    status, out, err = run(capsys, *common)
    assert status == 0
    assert "  Unsure: 1" in out and "  Turkish Angora: 1" in out
    assert "unsure below 45.0%: recommended by the model bundle" in err

    status, out, err = run(capsys, *common, "--min-confidence", "0.3")
    assert status == 0
    assert "  Sphynx: 1" in out and "Unsure" not in out
    assert "unsure below" not in err
    assert not target.exists()


def test_an_older_bundle_sorts_with_the_old_default(capsys, colour_bundle, tmp_path: Path) -> None:
    make_photo(tmp_path / "photos" / "red.png", RED)
    status, _, err = run(
        capsys, "sort", str(tmp_path / "photos"), "--into", str(tmp_path / "out"), "--model",
        str(colour_bundle.path), "--dry-run",
    )  # fmt: skip
    assert status == 0
    assert "unsure below 50.0%: the default: this model bundle recommends no threshold" in err


def test_a_bundle_with_a_bad_threshold_stops_the_command_with_the_reason(
    capsys, breeds_bundle, photos
) -> None:
    manifest = breeds_bundle.path / "bundle.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["decision"]["min_confidence"] = 1.2
    manifest.write_text(json.dumps(data), encoding="utf-8")

    status, out, err = run(capsys, "classify", str(photos), "--model", str(breeds_bundle.path))
    assert status == 2 and out == ""
    assert "cannot use the model:" in err
    assert "'decision' min_confidence must be between 0 and 1 (both excluded), not 1.2" in err


@pytest.mark.parametrize("command", ["sort", "classify"])
def test_help_says_where_the_default_threshold_comes_from(command: str) -> None:
    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    text = " ".join(subcommands[command].format_help().split())
    assert "--min-confidence P" in text
    assert "the threshold the model bundle recommends" in text
    assert "'decision.min_confidence' its trainer chose on validation photos" in text
    assert "0.5 for a bundle without one" in text
