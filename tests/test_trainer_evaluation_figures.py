"""Per-source figures, risk-coverage, the default "unsure" threshold, portable paths and the
model card's new sections, each on a small hand-made example whose answer is worked out below."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.breakdown import source_figures
from trainer.card_data import data_section, licence_words, train_command
from trainer.card_results import comparisons_section, coverage_section
from trainer.compare import breed_set, parse_checkpoint, seen_photos
from trainer.coverage import choose_decision, coverage_figures, lowest_threshold, risk_coverage
from trainer.dataset import Sample, write_manifest
from trainer.metrics import confused_pairs
from trainer.portable import is_absolute_text, portable, portable_path, portable_text
from trainer.shipped import FP32_KEY, bundle_decision, bundle_metrics

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------------------- per-source figures


def test_per_source_figures_on_hand_made_predictions():
    labels = ["Maine Coon", "Bengal", "Siamese"]
    # ox: truth A A B B, predicted A B B B.  pf: truth A C C B, predicted C C A B; its second
    # photo is flagged; its manifest marks "Maine_Coon" (= label "Maine Coon") noisy.
    targets = np.array([0, 0, 1, 1, 0, 2, 2, 1])
    predictions = np.array([0, 1, 1, 1, 2, 2, 0, 1])
    sources = ["ox"] * 4 + ["pf"] * 4
    flagged = np.array([False] * 5 + [True] + [False] * 2)

    figures = source_figures(targets, predictions, sources, flagged, labels, {"pf": ["Maine_Coon"]})

    ox, pf = figures["ox"], figures["pf"]
    assert ox["test"]["count"] == 4 and ox["test"]["accuracy"] == pytest.approx(0.75)
    # Maine Coon: P 1, R 1/2 -> F1 2/3; Bengal: P 2/3, R 1 -> F1 0.8.
    assert ox["test"]["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert ox["breeds"] == ["Maine Coon", "Bengal"]
    assert ox["per_breed"]["Bengal"]["precision"] == pytest.approx(2 / 3)
    assert "clean_breeds_macro_f1" not in ox  # ox marks nothing noisy
    assert pf["test"]["accuracy"] == pytest.approx(0.5)
    # Maine Coon F1 0, Bengal 1, Siamese (P 1/2, R 1/2) 0.5.
    assert pf["test"]["macro_f1"] == pytest.approx(0.5)
    assert pf["noisy_breeds"] == ["Maine Coon"] and pf["clean_breeds"] == 2
    assert pf["clean_breeds_macro_f1"] == pytest.approx(0.75)  # Bengal 1, Siamese 0.5
    # Without the flagged Siamese photo: truth A C B, predicted C A B -> 1/3; F1 0, 0, 1.
    assert pf["without_flagged"]["flagged_left_out"] == 1
    assert pf["without_flagged"]["accuracy"] == pytest.approx(1 / 3)
    assert pf["without_flagged"]["macro_f1"] == pytest.approx(1 / 3)


def test_confused_pairs_come_from_the_matrix():
    matrix = [[5, 2, 0], [3, 4, 1], [0, 0, 6]]
    pairs = confused_pairs(matrix, ["A", "B", "C"])
    assert [p["breeds"] for p in pairs] == [["A", "B"], ["B", "C"]]  # A/C never confused: not listed
    assert pairs[0]["mistakes"] == 5 and pairs[0]["a_as_b"] == 2 and pairs[0]["b_as_a"] == 3
    assert pairs[0]["share_of_pair_photos"] == pytest.approx(5 / 15)
    assert pairs[1]["share_of_pair_photos"] == pytest.approx(1 / 14)


# ----------------------------------------------------------------------- risk-coverage, threshold

# Ten photos: (top-1 probability, right?, a cat?, source). The last one the not-a-cat detector
# rejects: confident and wrong, it must count for nothing.
PHOTOS = [
    (0.95, True, True, "ox"),
    (0.90, True, True, "ox"),
    (0.85, True, True, "ox"),
    (0.80, False, True, "ox"),
    (0.75, True, True, "ox"),
    (0.60, False, True, "pf"),
    (0.55, True, True, "pf"),
    (0.40, False, True, "pf"),
    (0.30, True, True, "pf"),
    (0.99, False, False, "pf"),
]


def _example() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Four breeds; the top one gets the probability, the other three share the rest."""
    probabilities, targets = [], []
    for number, (top, right, _, _) in enumerate(PHOTOS):
        predicted = number % 4
        row = np.full(4, (1.0 - top) / 3)
        row[predicted] = top
        probabilities.append(row)
        targets.append(predicted if right else (predicted + 1) % 4)
    return (
        np.array(probabilities),
        np.array(targets),
        np.array([p[2] for p in PHOTOS]),
        [p[3] for p in PHOTOS],
    )


def test_lowest_threshold_meeting_the_target_is_chosen():
    probabilities, targets, is_cat, _ = _example()
    # Precision of the filed cats by threshold: up to 0.60 at most 5/7; (0.60, 0.75] 4/5 = 0.8;
    # (0.75, 0.80] 3/4; (0.80, 0.85] 3/3. Not monotone, and the lowest qualifying one wins.
    assert lowest_threshold(probabilities, targets, is_cat, 0.8) == (0.61, True)
    assert lowest_threshold(probabilities, targets, is_cat, 0.9) == (0.81, True)
    # Were the confident non-cat photo filed, 0.9 would never be reached; the best precision
    # (3 of 4 at (0.80, 0.85]) is then taken, and said not to meet the target.
    assert lowest_threshold(probabilities, targets, np.ones(10, bool), 0.9) == (0.81, False)


def test_decision_is_chosen_on_the_named_source_or_on_everything():
    probabilities, targets, is_cat, sources = _example()

    on_ox = choose_decision(probabilities, targets, is_cat, sources, source="ox", target_precision=0.9)
    assert on_ox["min_confidence"] == 0.81 and on_ox["met"] and on_ox["chosen_on"] == "validation"
    assert "ox validation photos" in on_ox["rule"] and "90%" in on_ox["rule"]
    assert on_ox["validation"]["filed"] == 3 and on_ox["validation"]["precision"] == 1.0
    # ox alone is 4/5 right at any threshold: 0.8 is met at the lowest one.
    assert choose_decision(probabilities, targets, is_cat, sources, "ox", 0.8)["min_confidence"] == 0.01

    fallback = choose_decision(probabilities, targets, is_cat, sources, "absent", 0.8)
    assert fallback["fell_back_to_all_sources"] and "all validation photos" in fallback["rule"]
    assert fallback["min_confidence"] == 0.61


def test_risk_coverage_per_source_and_overall():
    probabilities, targets, is_cat, sources = _example()

    rows = risk_coverage(probabilities, targets, is_cat, sources, default=0.61)

    assert [r["threshold"] for r in rows] == [0.5, 0.61, 0.7, 0.9]
    assert [r["is_default"] for r in rows] == [False, True, False, False]
    at = {r["threshold"]: r for r in rows}
    overall = at[0.5]["overall"]
    assert (overall["photos"], overall["filed"], overall["filed_right"]) == (10, 7, 5)
    assert overall["coverage"] == pytest.approx(0.7) and overall["precision"] == pytest.approx(5 / 7)
    assert overall["not_cat"] == pytest.approx(0.1) and overall["unsure"] == pytest.approx(0.2)
    assert at[0.61]["overall"]["coverage"] == pytest.approx(0.5)
    assert at[0.61]["overall"]["precision"] == pytest.approx(0.8)
    assert at[0.9]["overall"]["filed"] == 2 and at[0.9]["overall"]["precision"] == 1.0
    assert at[0.5]["per_source"]["ox"]["coverage"] == 1.0
    assert at[0.5]["per_source"]["ox"]["precision"] == pytest.approx(0.8)
    assert at[0.5]["per_source"]["pf"]["coverage"] == pytest.approx(0.4)
    assert at[0.5]["per_source"]["pf"]["precision"] == pytest.approx(0.5)
    assert at[0.5]["per_source"]["pf"]["not_cat"] == pytest.approx(0.2)
    assert at[0.9]["per_source"]["ox"]["coverage"] == pytest.approx(0.4)
    # Nothing of pf filed at 0.7: coverage 0, precision undefined rather than 0 or 1.
    assert at[0.7]["per_source"]["pf"]["coverage"] == 0.0
    assert at[0.7]["per_source"]["pf"]["precision"] is None


def test_filing_mirrors_the_apps_folder_rule():
    from catbreed_desktop.core.sorting.folder_names import NOT_CAT_FOLDER, UNSURE_FOLDER
    from catbreed_desktop.core.sorting.plan import SortItem, folder_for

    probabilities, targets, is_cat, _ = _example()
    for threshold in (0.3, 0.55, 0.6, 0.61, 0.9):
        expected = 0
        for row, cat in zip(probabilities, is_cat, strict=True):
            item = SortItem(
                source=Path("x.jpg"), label="Bengal", confidence=float(row.max()), is_cat=bool(cat)
            )
            expected += folder_for(item, threshold) not in (NOT_CAT_FOLDER, UNSURE_FOLDER)
        assert coverage_figures(probabilities, targets, is_cat, threshold)["filed"] == expected


# ------------------------------------------------------------------------------ bundle metrics


def test_bundle_headline_is_the_shipped_models_and_fp32_is_kept_apart():
    calibration = {"temperature": 1.5, "fitted_on": "val", "bins": 15, "test_ece_before": 0.1}
    evaluation = {
        "test": {"accuracy": 0.9},
        "calibration": calibration | {"test_ece_after": 0.05, "reliability_before": []},
        "decision": {"min_confidence": 0.7, "chosen_on": "validation", "rule": "r", "met": True},
        "checkpoint": "/somewhere/best",
    }
    shipped = evaluation | {
        "test": {"accuracy": 0.8},
        "decision": evaluation["decision"] | {"min_confidence": 0.72},
    }

    int8 = bundle_metrics(evaluation, "int8", shipped)
    assert int8["test"]["accuracy"] == 0.8 and int8["precision"] == "int8"
    assert int8[FP32_KEY]["test"]["accuracy"] == 0.9
    assert "reliability_before" not in int8["calibration"] and "checkpoint" not in int8
    assert bundle_decision(int8) == {"min_confidence": 0.72, "chosen_on": "validation", "rule": "r"}
    fp32 = bundle_metrics(evaluation, "fp32")
    assert fp32["test"]["accuracy"] == 0.9 and FP32_KEY not in fp32


def test_portable_paths_name_no_absolute_path(tmp_path):
    from trainer.portable import REPO_ROOT

    line = f"python -m trainer export {tmp_path}/work --out {REPO_ROOT}/models/v2 --x=/home/someone/data"
    assert portable_text(line) == "python -m trainer export work --out models/v2 --x=data"
    assert portable_path(REPO_ROOT / "runs" / "v2") == "runs/v2"
    assert portable_path("C:\\Users\\me\\work") == "work"
    assert portable_text("precision / recall at http://example.org/a, photos/s") == (
        "precision / recall at http://example.org/a, photos/s"
    )
    cleaned = portable({"a": [str(tmp_path), {"b": "file:///home/u/mlruns"}], "n": 3})
    assert cleaned == {"a": [tmp_path.name, {"b": "mlruns"}], "n": 3}
    assert not is_absolute_text(json.dumps(cleaned))


# --------------------------------------------------------------------------------------- compare


def test_checkpoint_names_breed_sets_and_photos_a_checkpoint_has_seen(tmp_path):
    assert parse_checkpoint("oxford=runs/ox/checkpoints/best") == ("oxford", Path("runs/ox/checkpoints/best"))
    assert parse_checkpoint("runs/ox/checkpoints/best")[0] == "ox"
    assert breed_set("Bengal, Siamese") == ["Bengal", "Siamese"]
    (tmp_path / "labels.json").write_text('["Bengal", "Birman"]')
    assert breed_set(str(tmp_path)) == ["Bengal", "Birman"]

    workdir = tmp_path / "work"
    workdir.mkdir()
    write_manifest(
        workdir,
        [
            Sample(Path("/d/a.jpg"), "Bengal", "train", 0, "ox"),
            Sample(Path("/d/b.jpg"), "Bengal", "val", 1, "ox"),
            Sample(Path("/d/c.jpg"), "Bengal", "test", 2, "ox"),
        ],
    )
    assert seen_photos(workdir / "checkpoints" / "best") == {Path("/d/a.jpg"), Path("/d/b.jpg")}
    assert seen_photos(tmp_path / "elsewhere" / "best") is None


# ------------------------------------------------------------------------------------ card parts


def test_licence_words_are_quoted_from_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Photos\n\nTaken by us. Licence: Creative Commons\nAttribution 4.0. Enjoy.\n")
    assert licence_words(readme) == "Licence: Creative Commons Attribution 4.0."
    assert licence_words(tmp_path / "missing.md") is None
    readme.write_text(
        "# Photos\n\nKept as thumbnails (150 px).\n\n## Licence\n\nThe photos have no licence.\n"
    )
    assert licence_words(readme) == "The photos have no licence."


def test_a_source_built_elsewhere_quotes_the_readme_in_the_data_folder_of_its_name(tmp_path):
    # Web photos built from a manifest lie outside the data folder; their README stays in it.
    (tmp_path / "data" / "web").mkdir(parents=True)
    (tmp_path / "data" / "web" / "README.md").write_text("Licence: none of their own; evaluate only.\n")
    summary = {"sources": [{"name": "web", "path": "home/built/web", "photos": 3}]}

    lines = data_section(summary, ["Red Cat"], tmp_path / "data")

    assert (
        "- **web**, 3 photos kept. Licence, in its README's words: Licence: none of their own"
        in "\n".join(lines)
    )


@pytest.mark.skipif(not (SHARED_DATA / "petfinder-gano-cats").is_dir(), reason="shared data absent")
def test_licence_words_of_the_shared_sources():
    assert "Creative Commons Attribution-ShareAlike 4.0" in licence_words(
        SHARED_DATA / "oxford-pet-cats" / "README.md"
    )
    petfinder = licence_words(SHARED_DATA / "petfinder-gano-cats" / "README.md")
    assert "No licence is stated" in petfinder and "do not redistribute" in petfinder


def test_train_command_is_rebuilt_from_training_settings():
    training = {
        "settings": {
            "base_model": "dinov2",
            "preset": None,
            "epochs": 8,
            "probe_head": True,
            "restart": False,
        }
    }
    assert (
        train_command(training)
        == "python -m trainer train WORKDIR --base-model dinov2 --epochs 8 --probe-head"
    )
    assert train_command({"command_line": "python -m trainer train w"}) == "python -m trainer train w"


def test_coverage_and_comparison_tables_in_the_card():
    probabilities, targets, is_cat, sources = _example()
    figures = {
        "decision": choose_decision(probabilities, targets, is_cat, sources, "ox", 0.9),
        "risk_coverage": risk_coverage(probabilities, targets, is_cat, sources, default=0.81),
    }
    text = "\n".join(coverage_section(figures, "the test model"))
    assert "Default unsure threshold: **0.81**" in text
    assert "| 0.50 | 70.0% | 71.4% | 100.0% | 80.0% | 40.0% | 50.0% |" in text
    assert "| 0.81 (default) | 30.0% | 100.0% | 60.0% | 100.0% | 0.0% | n/a |" in text
    assert "all 10.0%, ox 0.0%, pf 20.0%" in text

    comparison = {
        "title": "Oxford-only against all breeds",
        "split": "test",
        "sources": ["pf"],
        "breeds": ["Bengal", "Siamese"],
        "photos": 40,
        "left_out_seen_in_training": {"12-breed": 3},
        "checkpoints": {
            "oxford-only": {
                "labels": 12,
                "overall": {"accuracy": 0.5, "macro_f1": 0.45},
                "without_flagged": {"macro_f1": 0.5},
                "predicted_outside_set": 0.0,
            },
        },
    }
    text = "\n".join(comparisons_section([comparison]))
    assert "### Oxford-only against all breeds" in text
    assert "| oxford-only | 12 | 0.5000 | 0.4500 | 0.5000 | 0.0% |" in text
    assert "3 (12-breed)" in text
