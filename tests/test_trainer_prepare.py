"""`python -m trainer prepare`: merging sources, aliases, unreadable files, duplicates, leak-free split."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image
from trainer_data import BREEDS, make_breed_folders, near_copy, synthetic_photo

from trainer.aliases import canonical_names, load_aliases
from trainer.cli import main
from trainer.dataset import difference_hash, read_manifest, split_groups


def _manifest_rows(workdir: Path) -> dict[str, dict]:
    with open(workdir / "manifest.csv", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def test_prepare_merges_sources_drops_bad_files_and_keeps_duplicates_in_one_split(tmp_path, capsys):
    data = tmp_path / "data"
    pairs = make_breed_folders(data, per_class=15, planted=3)
    (data / "Bombay").mkdir()
    for i in range(2):  # a fourth breed, too small for --top-breeds 3
        synthetic_photo((200, 200, 40), seed=9000 + i).save(data / "Bombay" / f"b{i}.png")
    truncated = data / "British_Shorthair" / "truncated.png"
    truncated.write_bytes((data / "British_Shorthair" / "img_000.png").read_bytes()[:200])
    not_an_image = data / "Sphynx - Hairless Cat" / "notes.jpg"
    not_an_image.write_text("not a photo")
    # A CSV of corrections, as the app exports them: a new photo under a lower-case breed name.
    extra = tmp_path / "corrections" / "extra.png"
    extra.parent.mkdir()
    synthetic_photo((40, 60, 200), seed=7777).save(extra)
    corrections = tmp_path / "corrections" / "labels.csv"
    corrections.write_text("path,label\nextra.png,sphynx\n")
    workdir = tmp_path / "work"

    status = main(
        [
            "prepare",
            "--data",
            str(data),
            "--data",
            str(corrections),
            "--out",
            str(workdir),
            "--top-breeds",
            "3",
        ]
    )

    assert status == 0
    assert json.loads((workdir / "labels.json").read_text()) == sorted(BREEDS.values())
    summary = json.loads((workdir / "summary.json").read_text())
    assert set(summary["unreadable"]) == {str(truncated.resolve()), str(not_an_image.resolve())}
    assert summary["dropped_breeds"] == {"Bombay": 2}
    rows = _manifest_rows(workdir)
    assert str(truncated.resolve()) not in rows and str(not_an_image.resolve()) not in rows
    assert rows[str(extra.resolve())]["label"] == "Sphynx"
    assert len(rows) == 3 * (15 + 6) + 1

    # Every planted copy shares its original's group and split.
    for kind, planted in pairs.items():
        for original, copy in planted:
            a, b = rows[str(original.resolve())], rows[str(copy.resolve())]
            assert a["group"] == b["group"], f"{kind} copy {copy.name} not grouped with {original.name}"
            assert a["split"] == b["split"]
    # No group crosses splits anywhere, so no test photo (nor a near copy) is in training.
    splits_of_group = defaultdict(set)
    for row in rows.values():
        splits_of_group[row["group"]].add(row["split"])
    assert all(len(splits) == 1 for splits in splits_of_group.values())
    assert summary["duplicates"]["groups_with_duplicates"] == len(pairs["exact"]) + len(pairs["near"])

    # The grouping matters: splitting photo by photo would have separated planted pairs.
    samples = read_manifest(workdir)
    index = {str(s.path): i for i, s in enumerate(samples)}
    ungrouped = split_groups([s.label for s in samples], list(range(len(samples))), seed=83)
    separated = [
        (a, b)
        for planted in pairs.values()
        for a, b in planted
        if ungrouped[index[str(a.resolve())]] != ungrouped[index[str(b.resolve())]]
    ]
    assert separated, "the planted duplicates would not have crossed splits; the test proves nothing"

    # Stratified: about 20% of each breed in test, 20% of the rest in validation.
    for breed, counts in summary["counts"].items():
        total = sum(counts.values())
        assert abs(counts["test"] - 0.2 * total) <= 2, breed
        assert abs(counts["val"] - 0.2 * (total - counts["test"])) <= 2, breed
    printed = capsys.readouterr().out
    assert "Norwegian Forest Cat" in printed and "total" in printed


def test_prepare_is_deterministic_for_a_seed(tmp_path):
    data = tmp_path / "data"
    make_breed_folders(data, per_class=10, planted=1)
    for name in ("a", "b"):
        assert main(["prepare", "--data", str(data), "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()


def test_near_copies_hash_close_and_different_photos_far(tmp_path):
    original = tmp_path / "a.png"
    synthetic_photo((200, 40, 40), seed=1).save(original)
    copy = near_copy(original, tmp_path / "copy.jpg")
    other = synthetic_photo((200, 40, 40), seed=2)
    with Image.open(original) as a, Image.open(copy) as b:
        hash_a, hash_b = difference_hash(a), difference_hash(b)
    assert bin(hash_a ^ hash_b).count("1") <= 4
    assert bin(hash_a ^ difference_hash(other)).count("1") > 4


def test_split_keeps_every_group_whole():
    labels = [f"breed{i % 3}" for i in range(120)]
    groups = [i // 3 for i in range(120)]  # groups of three photos of one breed
    assignment = split_groups(labels, groups, seed=83)
    assert set(assignment) == set(groups)
    test_photos = sum(1 for g in groups if assignment[g] == "test")
    assert 18 <= test_photos <= 30


def test_aliases_unify_spellings_and_can_be_replaced(tmp_path):
    names = canonical_names(
        ["British_Shorthair", "british shorthair", "Norwegian Forest", "SPHYNX", "Sphynx - Hairless Cat"],
        load_aliases(),
    )
    assert names == {
        "British_Shorthair": "British Shorthair",
        "british shorthair": "British Shorthair",
        "Norwegian Forest": "Norwegian Forest Cat",
        "SPHYNX": "Sphynx",
        "Sphynx - Hairless Cat": "Sphynx",
    }
    custom = tmp_path / "aliases.json"
    custom.write_text(json.dumps({"Norwegian Forest": "Wegie"}))
    assert canonical_names(["Norwegian_Forest"], load_aliases(custom)) == {"Norwegian_Forest": "Wegie"}


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"Sphinx": 3}', "must map to a breed name")],
)
def test_bad_alias_file_is_a_clear_error(tmp_path, capsys, content, message):
    make_breed_folders(tmp_path / "data", per_class=3, planted=0)
    aliases = tmp_path / "aliases.json"
    aliases.write_text(content)
    status = main(
        ["prepare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "w"), "--aliases", str(aliases)]
    )
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w" / "manifest.csv").exists()


def test_csv_without_path_label_header_is_refused(tmp_path, capsys):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,breed\nx.png,Sphynx\n")
    assert main(["prepare", "--data", str(bad), "--out", str(tmp_path / "w")]) == 2
    assert "path,label" in capsys.readouterr().err
