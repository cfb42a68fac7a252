"""A tiny prepared work folder with two data sources, as `prepare` and `clean` leave it.

Two colour-coded sources share three breeds; the second adds a fourth whose colour is the same as
one of the shared breeds', so the model must confuse them, and marks that shared breed noisy in its
MANIFEST.csv. Each source has a README.md with licence words, as the shared data folders do.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer_data import synthetic_photo

from trainer.dataset import Sample, count_table, write_manifest

OXFORD, PETFINDER = "oxford-pet-cats", "petfinder-gano-cats"
COLOURS = {"Bengal": (200, 40, 40), "Birman": (40, 180, 60), "Siamese": (40, 60, 200)}
HAVANA_COLOUR = COLOURS["Birman"]  # indistinguishable on purpose: a known confusion
SPLIT_OF_INDEX = ["test"] * 3 + ["val"] * 2 + ["train"] * 7  # 12 photos per (source, breed)
NOISY = ["Birman"]
LEFT_OUT = {"Korat": "fewer than 60 photos left after label cleaning"}
READMES = {
    OXFORD: "# Tiny Oxford\n\nMade by the tests. Licence: Creative Commons Attribution-ShareAlike 4.0.\n",
    PETFINDER: "# Tiny Petfinder\n\nShelter photos. No licence is stated: use these photos to train and\n"
    "evaluate, do not redistribute them.\n",
}


def make_two_source_workdir(root: Path) -> tuple[Path, Path]:
    """(work folder, data root) with photos under root/data and the work folder at root/work."""
    data, workdir = root / "data", root / "work"
    breeds = {OXFORD: dict(COLOURS), PETFINDER: dict(COLOURS) | {"Havana": HAVANA_COLOUR}}
    samples = []
    group = 0
    for source_number, (source, colours) in enumerate(breeds.items()):
        folder = data / source
        folder.mkdir(parents=True)
        (folder / "README.md").write_text(READMES[source])
        for breed_number, (breed, colour) in enumerate(sorted(colours.items())):
            for index, split in enumerate(SPLIT_OF_INDEX):
                path = folder / breed / f"{index:02d}.png"
                path.parent.mkdir(exist_ok=True)
                synthetic_photo(colour, seed=10_000 * source_number + 100 * breed_number + index).save(path)
                # One test and one training photo of the noisy breed fail label cleaning.
                flagged = source == PETFINDER and breed in NOISY and index in (0, 11)
                samples.append(Sample(path.resolve(), breed, split, group, source, flagged))
                group += 1
    labels = sorted({s.label for s in samples})
    workdir.mkdir()
    write_manifest(workdir, samples)
    (workdir / "labels.json").write_text(json.dumps(labels))
    summary = {
        "data_root": "../data",
        "sources": [
            {
                "name": source,
                "path": source,
                "photos": sum(s.source == source for s in samples),
                "noisy_breeds": NOISY if source == PETFINDER else [],
            }
            for source in breeds
        ],
        "left_out_breeds": LEFT_OUT,
        "seed": 83,
        "top_breeds": 50,
        "photos_found": len(samples),
        "photos_kept": len(samples),
        "unreadable": {},
        "dropped_breeds": {},
        "duplicates": {"exact_duplicate_pairs": 0, "near_duplicate_pairs": 0},
        "counts": count_table(samples, labels),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return workdir, data


def one_source_workdir(workdir: Path, source: str, out: Path) -> Path:
    """A work folder with one source's photos of `workdir`, same splits (a comparison model's)."""
    from trainer.dataset import read_manifest

    samples = [s for s in read_manifest(workdir) if s.source == source]
    labels = sorted({s.label for s in samples})
    out.mkdir()
    write_manifest(out, samples)
    (out / "labels.json").write_text(json.dumps(labels))
    (out / "summary.json").write_text(json.dumps({"sources": [{"name": source, "path": source}]}))
    return out
