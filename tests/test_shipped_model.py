"""The default model in `models/`: a verified bundle that names real cats' breeds out of the box.

The photos come from the test split that `python -m trainer prepare` makes of the shared Oxford
cats with seed 83, so none of them was seen in training.
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
    assert len(shipped.labels) == 12 and shipped.provenance["precision"] == "int8"
    metrics = shipped.metrics
    assert metrics["test"]["macro_f1"] > metrics["baseline_test"]["macro_f1"]
    assert metrics["int8"]["test_macro_f1_fp32"] - metrics["int8"]["test_macro_f1_int8"] <= 0.01
    assert metrics["calibration"]["test_ece_after"] <= 0.05
    assert shipped.provenance["split_seed"] == 83 and shipped.provenance["training"]["settings"]["seed"] == 83


def test_catbreed_classify_names_held_out_cats_with_the_shipped_model(shipped, shared_cats, tmp_path, capsys):
    assert trainer_main(["prepare", "--data", str(shared_cats), "--out", str(tmp_path / "split")]) == 0
    by_breed: dict[str, list[Path]] = defaultdict(list)
    for sample in split_samples(read_manifest(tmp_path / "split"), "test"):
        by_breed[sample.label].append(sample.path)
    chosen = {path: breed for breed, paths in by_breed.items() for path in sorted(paths)[:PHOTOS_PER_BREED]}
    capsys.readouterr()

    status = catbreed_main(["classify", *map(str, chosen), "--engine", "cpu", "--json"])

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and len(records) == len(chosen) == 12 * PHOTOS_PER_BREED
    right = sum(record["label"] == chosen[Path(record["path"])] for record in records)
    assert right / len(records) >= 0.8, f"only {right} of {len(records)} held-out cats named right"
