"""The default model in `models/`: a verified bundle that names real cats' breeds out of the box.

The photos are Oxford-IIIT Pet test photos of the model's own split (`trainer prepare` of its
three sources with seed 83), listed in `data/shipped_model_oxford_test.csv` because the split
depends on the web photos, which tests do not have; none of them was seen in training.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest

from catbreed_desktop.cli.main import main as catbreed_main
from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.paths import default_model_dir

PHOTOS_PER_BREED = 4
HELD_OUT = Path(__file__).parent / "data" / "shipped_model_oxford_test.csv"
SOURCES = {"oxford-pet-cats", "petfinder-gano-cats", "web-cat-breeds"}


@pytest.fixture(scope="module")
def shipped():
    folder = default_model_dir()
    if not (folder / "bundle.json").is_file():
        pytest.fail(f"no default model bundle in {folder}; models/ must ship one")
    return load_bundle(folder)


def test_the_shipped_bundle_is_small_and_records_its_measurements(shipped):
    files = ("model.onnx", "bundle.json", *(["ood.npz"] if shipped.ood else []))
    assert sum((shipped.path / name).stat().st_size for name in files) < 40e6
    assert len(shipped.labels) >= 50 and shipped.provenance["precision"] == "int8"
    metrics = shipped.metrics
    # The headline is the shipped int8 graph's own, run under ONNX Runtime.
    assert metrics["measured_with"].startswith("the shipped ONNX model under ONNX Runtime")
    assert metrics["int8"]["max_abs_logit_diff_alone_vs_batched"] < 1e-4
    # int8 cost at most a point of macro F1 where it was measured, on the body as exported.
    exported = metrics.get("head_refit", {}).get("from_bundle_metrics", {}).get("int8") or metrics["int8"]
    assert exported["test_macro_f1_fp32"] - exported["test_macro_f1_int8"] <= 0.01
    assert set(metrics["sources"]) == SOURCES
    assert metrics["sources"]["oxford-pet-cats"]["test"]["macro_f1"] >= 0.90
    assert 0 < shipped.decision["min_confidence"] < 1 and shipped.decision["chosen_on"] == "validation"
    assert "/work/" not in (shipped.path / "bundle.json").read_text()
    assert metrics["calibration"]["test_ece_after"] <= 0.05
    assert shipped.provenance["split_seed"] == 83 and shipped.provenance["training"]["settings"]["seed"] == 83


def test_catbreed_classify_names_held_out_cats_with_the_shipped_model(shipped, shared_cats, capsys):
    by_breed: dict[str, list[Path]] = defaultdict(list)
    with HELD_OUT.open(newline="", encoding="utf-8") as listing:
        for row in csv.DictReader(listing):
            by_breed[row["breed"]].append(shared_cats / row["photo"])
    chosen = {path: breed for breed, paths in by_breed.items() for path in sorted(paths)[:PHOTOS_PER_BREED]}
    capsys.readouterr()

    status = catbreed_main(["classify", *map(str, chosen), "--engine", "cpu", "--json"])

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and len(records) == len(chosen) == 12 * PHOTOS_PER_BREED
    right = sum(record["label"] == chosen[Path(record["path"])] for record in records)
    # 0.89 of the Oxford test photos are named right choosing among all its breeds (MODEL_CARD.md).
    assert right / len(records) >= 0.7, f"only {right} of {len(records)} held-out cats named right"
