"""Three-source training: exclusions in `prepare`, source weights, per-source model choice,
trusted-source label cleaning and an unsure threshold held on several sources."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_data import synthetic_photo
from trainer_sources import NOISY, OXFORD, PETFINDER, make_two_source_workdir

from catbreed_desktop.core.photos import Preprocessing
from trainer.augment import THUMBNAIL_SIDE, AugmentOptions, augment, shrink_to_thumbnail
from trainer.cleaning import held_out_probabilities
from trainer.cli import main
from trainer.coverage import choose_decision
from trainer.dataset import read_manifest
from trainer.metrics import source_mean_scores
from trainer.train import class_weights, weighted_loss

WEB = "web-cat-breeds"


def _web_source(root: Path) -> Path:
    """A web-search source: two good breed folders (one with a tiny thumbnail) and a junk folder."""
    web = root / WEB
    colours = {"Bengal": (200, 40, 40), "Siamese": (40, 60, 200), "Safari": (120, 120, 120)}
    for number, (breed, colour) in enumerate(colours.items()):
        for index in range(6):
            size = (20, 16) if (breed, index) == ("Bengal", 0) else (64, 48)
            path = web / breed / f"{index:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic_photo(colour, seed=50_000 + 100 * number + index, size=size).save(path)
    return web


def test_prepare_leaves_out_skipped_folders_and_not_cats_with_reasons(tmp_path, capsys):
    web = _web_source(tmp_path)
    skipped = tmp_path / "skipped.json"
    skipped.write_text(json.dumps({"_comment": "junk", f"{WEB}/Safari": "the browser logo"}))
    not_cat = (web / "Siamese" / "0003.jpg").resolve()
    screen = tmp_path / "screen.jsonl"
    rows = [
        {"path": str(not_cat), "ok": True, "is_cat": False, "ood_score": 1.5},
        {"path": str(web / "Siamese" / "0004.jpg"), "ok": True, "is_cat": True, "ood_score": -2.0},
        {"path": str(web / "Bengal" / "0002.jpg"), "ok": False, "error": "unreadable"},
    ]
    screen.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    work = tmp_path / "work"

    status = main(
        [
            "prepare",
            "--data",
            str(web),
            "--out",
            str(work),
            "--skip-folders",
            str(skipped),
            "--not-cats",
            str(screen),
        ]
    )

    assert status == 0
    kept = {sample.path for sample in read_manifest(work)}
    assert not_cat not in kept
    assert not any(path.parent.name == "Safari" for path in kept)
    assert (web / "Bengal" / "0000.jpg").resolve() in kept, "a tiny thumbnail is a photo like any other"
    assert len(kept) == 11
    summary = json.loads((work / "summary.json").read_text())
    assert summary["excluded"] == {
        WEB: {
            "not a cat (the screening bundle's not-a-cat detector)": 1,
            "skipped folder: the browser logo": 6,
        }
    }
    with open(work / "excluded.csv", newline="") as handle:
        excluded = list(csv.DictReader(handle))
    assert len(excluded) == 7 and {row["folder"] for row in excluded} == {"Safari", "Siamese"}
    assert sorted(p.name for p in (work / "excluded").iterdir()) == [
        f"{WEB}-not_a_cat.png",
        f"{WEB}-skipped_folders.png",
    ]
    assert "left out 6 web-cat-breeds photos: skipped folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"Safari": "no source"}', "SOURCE/FOLDER"),
        ("{", "cannot read"),
    ],
)
def test_a_bad_skipped_folders_file_is_one_line(tmp_path, capsys, content, message):
    web = _web_source(tmp_path)
    skipped = tmp_path / "skipped.json"
    skipped.write_text(content)
    status = main(
        ["prepare", "--data", str(web), "--out", str(tmp_path / "w"), "--skip-folders", str(skipped)]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_web_folder_aliases_join_their_breeds(tmp_path):
    web = tmp_path / WEB
    for folder in ("Van_Kedisi", "Turkish_Van", "Cymric", "Manx"):
        for index in range(3):
            path = web / folder / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic_photo((10 * len(folder), 90, 90), seed=hash(folder) % 1000 * 10 + index).save(path)
    assert main(["prepare", "--data", str(web), "--out", str(tmp_path / "w")]) == 0
    labels = json.loads((tmp_path / "w" / "labels.json").read_text())
    assert labels == ["Manx", "Turkish Van"]


def test_a_source_weight_scales_its_photos_in_the_loss_and_the_breed_balance():
    targets = torch.tensor([0, 0, 1])
    per_photo = torch.tensor([1.0, 3.0, 5.0])
    # The second photo's source counts a quarter: (1 + 0.25 * 3) / 1.25 for breed 0, then breed 1.
    photo_weights = torch.tensor([1.0, 0.25, 1.0])
    loss = weighted_loss(per_photo, targets, photo_weights, None)
    assert loss.item() == pytest.approx((1 + 0.75 + 5) / 2.25)
    balanced = class_weights([0, 0, 1], 2, [1.0, 0.25, 1.0])
    # Weighted counts 1.25 and 1: the weights make both breeds weigh the same in all.
    assert (balanced[0] * 1.25).item() == pytest.approx(balanced[1].item())
    assert torch.allclose(class_weights([0, 0, 1], 2), class_weights([0, 0, 1], 2, [1.0, 1.0, 1.0]))


def test_the_source_mean_leaves_out_noisy_breeds_and_weighs_sources_alike():
    labels = ["Bengal", "Birman", "Siamese"]
    sources = [OXFORD] * 3 + [PETFINDER] * 6
    targets = [0, 1, 2, 0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 2, 0, 0, 0, 0, 0, 2]  # petfinder's Birman (noisy) all wrong
    scores = source_mean_scores(targets, predictions, sources, labels, {PETFINDER: set(NOISY)})
    assert scores["per_source_macro_f1"][OXFORD] == pytest.approx(1.0)
    # The noisy breed's photos are left out: over Bengal (precision 2/3, recall 1) and Siamese
    # (precision 1, recall 1/2) only.
    expected = (0.8 + 2 / 3) / 2
    assert scores["per_source_macro_f1"][PETFINDER] == pytest.approx(expected)
    assert scores["source_mean_macro_f1"] == pytest.approx((1.0 + expected) / 2)


def test_training_with_a_source_left_out_and_the_source_mean_choice(tmp_path):
    workdir, _ = make_two_source_workdir(tmp_path)
    status = main(
        ["train", str(workdir), "--preset", "tiny", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
         "--source-weight", f"{PETFINDER}=0", "--select-by", "source-mean", "--crop-min-area", "0.35",
         "--color-jitter", "0.2", "--class-weighting", "none", "--thumbnail-share", "0.5"]
    )  # fmt: skip
    assert status == 0
    validation = json.loads((workdir / "checkpoints" / "best" / "validation.json").read_text())
    assert set(validation["per_source_macro_f1"]) == {OXFORD, PETFINDER}
    params = json.loads((next((workdir / "runs").iterdir()) / "metrics.jsonl").read_text().splitlines()[0])
    oxford_train = sum(1 for s in read_manifest(workdir) if s.split == "train" and s.source == OXFORD)
    assert params["train_photos"] == oxford_train, "a source at weight 0 is left out of training"
    assert params["source_weights"] == [[PETFINDER, 0.0]]
    assert params["thumbnail_share"] == 0.5


def test_colour_jitter_and_crop_area_change_the_view_but_not_the_default():
    image = synthetic_photo((200, 120, 40), seed=3, size=(64, 48))
    spec = Preprocessing(size=32)
    plain = augment(image, spec, np.random.default_rng(1))
    same = augment(image, spec, np.random.default_rng(1), AugmentOptions())
    jittered = augment(image, spec, np.random.default_rng(1), AugmentOptions(color_jitter=0.4))
    assert np.array_equal(plain, same)
    assert not np.allclose(plain, jittered)


def test_a_large_photo_becomes_a_web_sized_jpeg_thumbnail_and_a_small_one_stays_as_it_is():
    large = synthetic_photo((200, 120, 40), seed=3, size=(640, 480))
    small = synthetic_photo((200, 120, 40), seed=3, size=(120, 90))
    for seed in range(20):
        thumbnail = shrink_to_thumbnail(large, np.random.default_rng(seed))
        assert THUMBNAIL_SIDE[0] <= min(thumbnail.size) <= THUMBNAIL_SIDE[1]
        assert thumbnail.size[0] / thumbnail.size[1] == pytest.approx(640 / 480, rel=0.02)
        assert thumbnail.mode == "RGB"
        assert shrink_to_thumbnail(small, np.random.default_rng(seed)) is small


def test_thumbnail_views_are_drawn_only_when_asked_for():
    image = synthetic_photo((200, 120, 40), seed=3, size=(640, 480))
    spec = Preprocessing(size=32)
    plain = augment(image, spec, np.random.default_rng(1))
    # Off, no random number is drawn for it: every other view stays what it was.
    assert np.array_equal(
        plain, augment(image, spec, np.random.default_rng(1), AugmentOptions(thumbnail_share=0))
    )
    always = AugmentOptions(thumbnail_share=1.0)
    views = [augment(image, spec, np.random.default_rng(seed), always) for seed in range(3)]
    assert not any(np.array_equal(plain, view) for view in views)


def test_label_cleaning_judged_by_trusted_sources_only():
    rng = np.random.default_rng(0)
    # Two breeds, well apart in feature space; the untrusted source labels half its photos wrongly.
    features = np.concatenate(
        [rng.normal(0, 0.3, (40, 4)) + [2, 0, 0, 0], rng.normal(0, 0.3, (40, 4)) - [2, 0, 0, 0]]
    )
    targets = np.array([0] * 40 + [1] * 40)
    trusted = np.array(([True] * 20 + [False] * 20) * 2)
    targets[20:30] = 1  # untrusted photos of breed 0 labelled breed 1
    splits = ["train"] * 80
    judged = held_out_probabilities(features, targets, splits, list(range(80)), 2, 3, 83, trusted)
    by_all = held_out_probabilities(features, targets, splits, list(range(80)), 2, 3, 83)
    # The wrong labels get less support when they take no part in fitting.
    assert (judged[20:30, 1] < by_all[20:30, 1]).all()
    assert judged[20:30, 1].max() < 0.3 < by_all[20:30, 1].mean()


def test_the_threshold_holds_on_each_named_source_and_the_larger_wins():
    # Source a is right at any confidence; source b only above 0.8.
    probabilities = np.array([[0.6, 0.4], [0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.55, 0.45]])
    targets = np.array([0, 0, 1, 0, 1])
    sources = ["a", "a", "b", "b", "b"]
    is_cat = np.ones(5, dtype=bool)
    one = choose_decision(probabilities, targets, is_cat, sources, "a", 0.9)
    both = choose_decision(probabilities, targets, is_cat, sources, ["a", "b"], 0.9)
    assert one["min_confidence"] == pytest.approx(0.01)
    assert both["min_confidence"] == pytest.approx(0.61)
    assert both["met"] and both["validation_per_source"]["b"]["precision"] == 1.0
    assert "(each; the larger threshold)" in both["rule"]


def test_the_card_lists_exclusions_photos_per_breed_and_source_and_not_a_cat_per_breed():
    from trainer.card_data import data_section
    from trainer.report import _not_a_cat_section

    summary = {
        "sources": [{"name": OXFORD, "path": OXFORD, "photos": 3}, {"name": WEB, "path": WEB, "photos": 4}],
        "excluded": {WEB: {"skipped folder: gin bottles": 5, "not a cat (screen)": 7}},
        "cleaning": {
            "per_breed_and_source": {
                "Bengal": {OXFORD: {"photos": 3, "flagged": 0}, WEB: {"photos": 4, "flagged": 1}},
                "Sphynx": {WEB: {"photos": 2, "flagged": 0}},
            }
        },
    }
    text = "\n".join(data_section(summary, ["Bengal", "Sphynx"], None))
    assert f"- {WEB}: 7 photos, not a cat (screen)" in text
    assert "| Bengal | 3 (0) | 4 (1) |" in text and "| Sphynx | - | 2 (0) |" in text
    measure = {
        "min_confidence": 0.5,
        "negatives": {},
        "cats": {"photos": 30, "not_cat": 0.1, "unsure": 0.1, "breed": 0.8, "accuracy_of_filed": 0.9},
        "cats_flagged_by_breed": {
            "Bengal": {"photos": 20, "not_cat": 0.0},
            "Sphynx": {"photos": 10, "not_cat": 0.3},
        },
    }
    card = "\n".join(_not_a_cat_section(measure))
    assert "missed by Sphynx" in card
    assert card.index("| Sphynx | 10 | 30.0% |") < card.index("| Bengal | 20 | 0.0% |")


def test_the_detector_sample_caps_each_breed_and_is_repeatable():
    from trainer.dataset import Sample
    from trainer.evaluate import at_most_per_breed

    samples = [
        Sample(Path(f"{breed}{i}.jpg"), breed, "train", i)
        for breed, n in (("A", 10), ("B", 3))
        for i in range(n)
    ]
    capped = at_most_per_breed(samples, 4)
    assert [s.label for s in capped].count("A") == 4 and [s.label for s in capped].count("B") == 3
    assert capped == at_most_per_breed(samples, 4)


@pytest.mark.parametrize("weight", ["petfinder", "petfinder=-1", "petfinder=0.5,1", "=1"])
def test_train_refuses_a_malformed_source_weight(tmp_path, weight, capsys):
    assert main(["train", str(tmp_path), "--source-weight", weight]) == 2
    assert "expected SOURCE=" in capsys.readouterr().err


def test_shares_that_may_be_zero_take_zero_and_shares_that_may_not_refuse_it(capsys):
    from trainer.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "work", "--label-smoothing", "0", "--thumbnail-share", "0"])
    assert (args.label_smoothing, args.thumbnail_share) == (0.0, 0.0)
    for option, value in (
        ("--keep-patches", "0"),
        ("--thumbnail-share", "1.5"),
        ("--label-smoothing", "-0.1"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "work", option, value])
        assert "must be a share" in capsys.readouterr().err
