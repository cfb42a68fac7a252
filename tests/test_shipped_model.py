"""The default model in `models/`: a verified bundle that names real cats' breeds out of the box.

The photos come from the test split that `python -m trainer prepare` makes of the two shared cat
collections with seed 83 (the model's own split), so none of them was seen in training.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from catbreed_desktop.cli.main import main as catbreed_main
from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.paths import default_model_dir
from trainer.cli import main as trainer_main
from trainer.dataset import read_manifest, split_samples

PHOTOS_PER_BREED = 4


@pytest.fixture(scope="module")
def shipped():
    folder = default_model_dir()
    if not (folder / "bundle.json").is_file():
        pytest.fail(f"no default model bundle in {folder}; models/ must ship one")
    return load_bundle(folder)


def test_the_shipped_bundle_is_small_and_records_its_measurements(shipped):
    files = ("model.onnx", "bundle.json", *(["ood.npz"] if shipped.ood else []))
    assert sum((shipped.path / name).stat().st_size for name in files) < 40e6
    assert len(shipped.labels) == 33 and shipped.provenance["precision"] == "int8"
    metrics = shipped.metrics
    # The headline is the shipped int8 model's own, and int8 costs at most a point of macro F1.
    assert metrics["test"]["macro_f1"] == metrics["int8"]["test_macro_f1_int8"]
    assert metrics["int8"]["test_macro_f1_fp32"] - metrics["int8"]["test_macro_f1_int8"] <= 0.01
    assert metrics["int8"]["max_abs_logit_diff_alone_vs_batched"] < 1e-4
    assert set(metrics["sources"]) == {"oxford-pet-cats", "petfinder-gano-cats"}
    assert 0 < shipped.decision["min_confidence"] < 1 and shipped.decision["chosen_on"] == "validation"
    assert "/work/" not in (shipped.path / "bundle.json").read_text()
    assert metrics["calibration"]["test_ece_after"] <= 0.05
    assert shipped.provenance["split_seed"] == 83 and shipped.provenance["training"]["settings"]["seed"] == 83


def test_catbreed_classify_names_held_out_cats_with_the_shipped_model(shipped, shared_cats, tmp_path, capsys):
    second = shared_cats.parent / "petfinder-gano-cats"
    if not second.is_dir():
        pytest.skip(f"the second shared collection is not at {second}; the model's split needs both")
    sources = ["--data", str(shared_cats), "--data", str(second)]
    assert trainer_main(["prepare", *sources, "--out", str(tmp_path / "split")]) == 0
    by_breed: dict[str, list[Path]] = defaultdict(list)
    for sample in split_samples(read_manifest(tmp_path / "split"), "test"):
        if sample.source == shared_cats.name:  # the carefully labelled collection
            by_breed[sample.label].append(sample.path)
    chosen = {path: breed for breed, paths in by_breed.items() for path in sorted(paths)[:PHOTOS_PER_BREED]}
    capsys.readouterr()

    status = catbreed_main(["classify", *map(str, chosen), "--engine", "cpu", "--json"])

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and len(records) == len(chosen) == 12 * PHOTOS_PER_BREED
    right = sum(record["label"] == chosen[Path(record["path"])] for record in records)
    # 0.81 of the Oxford test photos are named right choosing among 33 breeds (MODEL_CARD.md).
    assert right / len(records) >= 0.7, f"only {right} of {len(records)} held-out cats named right"
