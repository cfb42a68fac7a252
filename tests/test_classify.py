"""The classification pipeline: batching, bad files, cancelling, decoded images and the OOD detector."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from factories import (
    COLOUR_LABELS,
    COLOURS,
    colour_embedding,
    colour_energy_detector,
    make_colour_bundle,
    make_ood_colour_bundle,
    make_photo,
)
from PIL import Image

from catbreed_desktop.core.bundle import BundleError
from catbreed_desktop.core.classify import Classifier, Failure, Prediction
from catbreed_desktop.core.engines.base import Engine
from catbreed_desktop.core.ood import OodConfigError, OodDetector, mahalanobis_scores
from catbreed_desktop.core.photos import load_and_preprocess, stack_batch


@pytest.fixture
def photos(tmp_path) -> dict[Path, str]:
    """Nine photos, three per colour label, in mixed formats; maps path -> expected label."""
    expected = {}
    for i in range(9):
        label = COLOUR_LABELS[i % 3]
        suffix = (".png", ".jpg", ".webp")[i // 3]
        expected[make_photo(tmp_path / "photos" / f"photo{i}{suffix}", COLOURS[label], seed=i)] = label
    return expected


@pytest.fixture
def bad_files(tmp_path) -> list[Path]:
    folder = tmp_path / "bad"
    folder.mkdir()
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("this is a text file with a photo's name\n")
    truncated = folder / "truncated.png"
    good = make_photo(folder / "whole.png", (200, 10, 10), size=(200, 150))
    truncated.write_bytes(good.read_bytes()[:300])
    good.unlink()
    return [empty, text, truncated, folder / "missing.jpg"]


def classify_all(classifier: Classifier, paths) -> list[Prediction | Failure]:
    return list(classifier.classify(paths))


def test_predictions_are_right_and_in_input_order(colour_bundle, photos):
    classifier = Classifier(colour_bundle, engine="cpu", batch_size=4, top_k=2)

    results = classify_all(classifier, list(photos))

    assert [r.path for r in results] == list(photos)
    for result in results:
        assert isinstance(result, Prediction)
        assert result.label == photos[result.path]
        assert len(result.top) == 2 and result.top[0][1] >= result.top[1][1]
        assert result.confidence == pytest.approx(result.probabilities.max())
        assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert result.ood_score is None and result.is_cat
    assert classifier.provider == "ONNX Runtime CPU"


def test_results_do_not_depend_on_order(colour_bundle, photos):
    classifier = Classifier(colour_bundle, engine="cpu", batch_size=4)
    shuffled = list(photos)
    random.Random(7).shuffle(shuffled)

    forward = {r.path: r for r in classify_all(classifier, list(photos))}
    backward = {r.path: r for r in classify_all(classifier, shuffled)}

    assert forward.keys() == backward.keys()
    for path, result in forward.items():
        assert result.top[0][0] == backward[path].top[0][0]
        np.testing.assert_allclose(result.probabilities, backward[path].probabilities, atol=1e-6)


def test_batch_sizes_one_and_eight_agree(colour_bundle, photos):
    single = classify_all(Classifier(colour_bundle, engine="cpu", batch_size=1), list(photos))
    eight = classify_all(Classifier(colour_bundle, engine="cpu", batch_size=8), list(photos))

    assert [r.label for r in single] == [r.label for r in eight]
    for one, batched in zip(single, eight, strict=True):
        np.testing.assert_allclose(one.probabilities, batched.probabilities, atol=1e-6)


def test_bad_files_fail_alone_and_the_rest_still_classify(colour_bundle, photos, bad_files):
    good = list(photos)
    mixed = [good[0], bad_files[0], good[1], bad_files[1], bad_files[2], good[2], bad_files[3], *good[3:]]

    results = classify_all(Classifier(colour_bundle, engine="cpu", batch_size=2), mixed)

    assert [r.path for r in results] == mixed
    failures = {r.path: r.reason for r in results if isinstance(r, Failure)}
    assert set(failures) == set(bad_files)
    assert failures[bad_files[0]] == "the file is empty"
    assert "not an image" in failures[bad_files[1]]
    assert "corrupt or truncated" in failures[bad_files[2]] or "not an image" in failures[bad_files[2]]
    assert failures[bad_files[3]] == "no such file"
    assert all(r.label == photos[r.path] for r in results if isinstance(r, Prediction))


def test_only_bad_files_still_report_each(colour_bundle, bad_files):
    results = classify_all(Classifier(colour_bundle, engine="cpu", batch_size=1), bad_files * 3)
    assert len(results) == 12 and all(isinstance(r, Failure) for r in results)


def test_progress_counts_up_to_total(colour_bundle, photos):
    calls = []
    classifier = Classifier(colour_bundle, engine="cpu", batch_size=4)

    list(classifier.classify(photos, on_progress=lambda done, total: calls.append((done, total))))

    assert calls == [(0, 9), (4, 9), (8, 9), (9, 9)]


def test_should_stop_ends_the_run_between_batches(colour_bundle, photos):
    classifier = Classifier(colour_bundle, engine="cpu", batch_size=2)
    seen: list[Prediction | Failure] = []

    for result in classifier.classify(photos, should_stop=lambda: len(seen) >= 2):
        seen.append(result)

    assert [r.path for r in seen] == list(photos)[:2]


def test_abandoning_the_iterator_leaves_no_decoder_threads(colour_bundle, photos):
    import threading

    classifier = Classifier(colour_bundle, engine="cpu", batch_size=2)
    results = classifier.classify(photos)
    next(results)
    results.close()

    assert not [t for t in threading.enumerate() if t.name.startswith("catbreed-decode")]


def test_classify_images_matches_files(colour_bundle, photos):
    classifier = Classifier(colour_bundle, engine="cpu", batch_size=4)
    paths = list(photos)
    with_files = classify_all(classifier, paths)
    images = [Image.open(p) for p in paths]

    decoded = classifier.classify_images(images)

    assert [d.path for d in decoded] == [Path("")] * len(paths)
    for from_file, from_image in zip(with_files, decoded, strict=True):
        assert from_image.label == from_file.label
        np.testing.assert_allclose(from_image.probabilities, from_file.probabilities, atol=1e-6)


def test_top_k_is_capped_at_the_number_of_labels(colour_bundle, photos):
    result = classify_all(Classifier(colour_bundle, engine="cpu", top_k=10), list(photos)[:1])[0]
    assert {label for label, _ in result.top} == set(COLOUR_LABELS)
    probabilities = [p for _, p in result.top]
    assert probabilities == sorted(probabilities, reverse=True)


# --- "not a cat" -------------------------------------------------------------------------------------


def test_mahalanobis_scores_match_the_definition():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(5, 4))
    means = rng.normal(size=(3, 4))
    factor = rng.normal(size=(4, 4))
    precision = factor @ factor.T + np.eye(4)

    scores = mahalanobis_scores(embeddings, means, precision)

    expected = [min(np.sqrt((x - m) @ precision @ (x - m)) for m in means) for x in embeddings]
    np.testing.assert_allclose(scores, expected, rtol=1e-10)
    np.testing.assert_allclose(mahalanobis_scores(means, means, precision), 0.0, atol=1e-6)


def test_ood_detector_refuses_bad_sections():
    good = {"method": "mahalanobis", "means": [[0.0, 0.0]], "precision": [[1, 0], [0, 1]], "threshold": 2}
    assert OodDetector.from_config(good, num_labels=1).embedding_size == 2
    with pytest.raises(OodConfigError, match="method 'energy' is not supported"):
        OodDetector.from_config({**good, "method": "energy"})
    with pytest.raises(OodConfigError, match="missing 'threshold'"):
        OodDetector.from_config({k: v for k, v in good.items() if k != "threshold"})
    with pytest.raises(OodConfigError, match="precision must be 2x2"):
        OodDetector.from_config({**good, "precision": [[1.0]]})
    with pytest.raises(OodConfigError, match="1 class means but the bundle has 3 labels"):
        OodDetector.from_config(good, num_labels=3)


def test_energy_detector_adds_the_scaled_distance_on_its_span_and_the_scaled_energy():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(3, 2))
    config = {
        "method": "mahalanobis_energy",
        "means": means.tolist(),
        "precision": [[2.0, 0.0], [0.0, 1.0]],
        "threshold": 1.5,
        "embedding_size": 5,
        "features": [2, 4],
        "distance_scale": 2.0,
        "energy_scale": 4.0,
    }
    detector = OodDetector.from_config(config, num_labels=3)
    embeddings, logits = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))

    scores = detector.scores(embeddings, logits)

    distances = mahalanobis_scores(embeddings[:, 2:4], means, np.diag([2.0, 1.0]))
    energies = -np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(scores, distances / 2.0 + energies / 4.0, rtol=1e-12)
    np.testing.assert_array_equal(detector.is_cat(embeddings, logits), scores <= 1.5)
    assert detector.embedding_size == 5 and detector.uses_logits
    with pytest.raises(ValueError, match="scores the logits too"):
        detector.scores(embeddings)
    with pytest.raises(OodConfigError, match="missing 'energy_scale'"):
        OodDetector.from_config({k: v for k, v in config.items() if k != "energy_scale"})
    with pytest.raises(OodConfigError, match=r"features \[3, 6\) must lie within the 5-wide embedding"):
        OodDetector.from_config({**config, "features": [3, 6]})
    with pytest.raises(OodConfigError, match="scales must be positive"):
        OodDetector.from_config({**config, "distance_scale": 0})


def test_non_cat_detector_adds_the_scaled_linear_term_on_the_same_span():
    rng = np.random.default_rng(2)
    means = rng.normal(size=(3, 2))
    config = {
        "method": "mahalanobis_energy_non_cat",
        "means": means.tolist(),
        "precision": [[2.0, 0.0], [0.0, 1.0]],
        "threshold": 1.5,
        "embedding_size": 5,
        "features": [2, 4],
        "distance_scale": 2.0,
        "energy_scale": 4.0,
        "non_cat_weights": [0.5, -1.0],
        "non_cat_bias": 0.25,
        "non_cat_scale": 0.5,
    }
    detector = OodDetector.from_config(config, num_labels=3)
    without_term = OodDetector.from_config({**config, "method": "mahalanobis_energy"}, num_labels=3)
    embeddings, logits = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))

    scores = detector.scores(embeddings, logits)

    linear = (embeddings[:, 2:4] @ np.array([0.5, -1.0]) + 0.25) / 0.5
    np.testing.assert_allclose(scores, without_term.scores(embeddings, logits) + linear, rtol=1e-12)
    assert detector.uses_logits
    with pytest.raises(OodConfigError, match="missing 'non_cat_weights'"):
        OodDetector.from_config({k: v for k, v in config.items() if k != "non_cat_weights"})
    with pytest.raises(OodConfigError, match="non_cat_weights must be 2 numbers"):
        OodDetector.from_config({**config, "non_cat_weights": [1.0, 2.0, 3.0]})
    with pytest.raises(OodConfigError, match="NaN or infinite"):
        OodDetector.from_config({**config, "non_cat_bias": float("nan")})
    with pytest.raises(OodConfigError, match="scales must be positive"):
        OodDetector.from_config({**config, "non_cat_scale": -1.0})


def test_the_classifier_scores_the_energy_detector_on_embeddings_and_logits(tmp_path):
    # The distance is scaled down to count for little, so the energy decides: no breed claims grey.
    ood = colour_energy_detector() | {
        "distance_scale": 100.0,
        "threshold": -4.0,  # red photos score about -6.6 (one breed's logit stands out), grey about -2.2
    }
    bundle = make_colour_bundle(tmp_path / "energy-bundle", ood=ood)
    red = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])
    grey = make_photo(tmp_path / "grey.png", (128, 128, 128))

    with Classifier(bundle, engine="cpu") as classifier:
        red_result, grey_result = classify_all(classifier, [red, grey])
        raw = classifier.engine.run(
            stack_batch([load_and_preprocess(p, bundle.preprocessing) for p in (red, grey)])
        )

    expected = OodDetector.from_config(bundle.ood).scores(raw["embedding"], raw["logits"])
    assert [red_result.ood_score, grey_result.ood_score] == pytest.approx(expected.tolist(), abs=1e-4)
    assert red_result.is_cat and red_result.label == "Red Cat"
    assert not grey_result.is_cat


def test_photo_far_from_every_breed_is_not_a_cat(tmp_path):
    bundle = make_ood_colour_bundle(tmp_path / "ood-bundle", threshold=1.0)
    red = make_photo(tmp_path / "red.png", COLOURS["Red Cat"])
    grey = make_photo(tmp_path / "grey.png", (128, 128, 128))

    red_result, grey_result = classify_all(Classifier(bundle, engine="cpu"), [red, grey])

    assert red_result.is_cat and red_result.label == "Red Cat"
    assert red_result.ood_score is not None and red_result.ood_score < 0.5
    assert not grey_result.is_cat
    expected = mahalanobis_scores(
        np.array([colour_embedding((128, 128, 128))]), bundle.ood["means"], bundle.ood["precision"]
    )[0]
    assert grey_result.ood_score == pytest.approx(expected, abs=0.05)


class LogitsOnlyEngine(Engine):
    """An engine whose model has no embedding output."""

    provider = "test"

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("logits",)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": np.zeros((len(batch), self.bundle.num_labels), dtype=np.float32)}


def test_ood_section_without_embedding_output_is_a_bundle_error(tmp_path):
    bundle = make_ood_colour_bundle(tmp_path / "ood-bundle")
    with pytest.raises(BundleError, match="no 'embedding' output"):
        Classifier(bundle, engine=LogitsOnlyEngine(bundle))


def test_bad_ood_section_is_a_bundle_error(tmp_path):
    import dataclasses

    bundle = make_ood_colour_bundle(tmp_path / "ood-bundle")
    broken = dataclasses.replace(bundle, ood={**bundle.ood, "precision": [[1.0]]})
    with pytest.raises(BundleError, match="precision must be 3x3"):
        Classifier(broken, engine="cpu")
