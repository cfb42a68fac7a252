"""The personal layer's core: the store of corrections and how it changes predictions."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from catbreed_desktop.core.classify import Prediction
from catbreed_desktop.core.personal import LayerSettings, PersonalLayer, PersonalStore, PersonalStoreError
from catbreed_desktop.core.personal.combine import WHITENED, WIDE_REACH, Metric
from catbreed_desktop.core.personal.store import photo_key

LABELS = ("A", "B", "C")
SHA = "ab" * 32


def unit(*values: float) -> np.ndarray:
    row = np.array(values, dtype=np.float32)
    return row / np.linalg.norm(row)


def prediction(probabilities: list[float], embedding: np.ndarray, name: str = "x.jpg") -> Prediction:
    probs = np.array(probabilities)
    order = np.argsort(-probs)
    top = tuple((LABELS[i], float(probs[i])) for i in order)
    return Prediction(Path(name), top, probs, embedding=embedding)


# ------------------------------------------------------------------------------------------ store


def test_store_round_trip_keeps_labels_paths_and_embeddings(tmp_path: Path) -> None:
    store = PersonalStore(SHA, tmp_path)
    store.add([tmp_path / "a.jpg", tmp_path / "b.jpg"], ["A", "B"], np.eye(2, 4), when=100.0)
    again = PersonalStore(SHA, tmp_path)
    assert again.labels == ["A", "B"]
    assert again.photo_paths == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    np.testing.assert_array_equal(again.embeddings, np.eye(2, 4, dtype=np.float32))
    assert [e.time for e in again.entries] == [100.0, 100.0]
    assert again.warning is None
    # No temporary file is left beside the store.
    assert [p.name for p in tmp_path.iterdir()] == [f"{SHA}.npz"]


def test_correcting_a_photo_again_replaces_its_entry(tmp_path: Path) -> None:
    store = PersonalStore(SHA, tmp_path)
    store.add([tmp_path / "a.jpg"], ["A"], np.ones((1, 3)))
    store.add([tmp_path / "a.jpg"], ["B"], np.ones((1, 3)))
    assert PersonalStore(SHA, tmp_path).labels == ["B"]


def test_store_keeps_only_the_newest_entries(tmp_path: Path) -> None:
    store = PersonalStore(SHA, tmp_path, max_entries=3)
    for i in range(5):
        store.add([tmp_path / f"{i}.jpg"], ["A"], np.full((1, 2), i), when=float(i))
    again = PersonalStore(SHA, tmp_path, max_entries=3)
    assert [Path(p).name for p in again.photo_paths] == ["2.jpg", "3.jpg", "4.jpg"]
    assert len(again) == 3


def test_adding_one_at_a_time_keeps_the_bound_the_order_and_the_round_trip_as_the_store_grows(
    tmp_path: Path,
) -> None:
    bound = 100
    store = PersonalStore(SHA, tmp_path, max_entries=bound)
    expected: list[tuple[str, float, float]] = []  # photo, time, its embedding's value; oldest first
    buffers_replaced = 0
    early = None
    for i in range(1_000):
        # Now and then a photo is corrected again or an entry comes dated before the newest.
        name = f"{i // 2}.jpg" if i % 97 == 0 else f"{i}.jpg"
        when = float(i - 50) if i % 131 == 0 else float(i)
        kept_before = store.embeddings
        store.add([tmp_path / name], ["A" if i % 2 else "B"], np.full((1, 4), i), when=when, save=False)
        buffers_replaced += not np.shares_memory(kept_before, store.embeddings)

        expected = [e for e in expected if e[0] != name] + [(name, when, float(i))]
        if len(expected) > bound:  # the oldest go; among equal times the first added
            oldest = sorted(range(len(expected)), key=lambda j: expected[j][1])[: len(expected) - bound]
            expected = [e for j, e in enumerate(expected) if j not in oldest]
        assert [Path(p).name for p in store.photo_paths] == [e[0] for e in expected]
        assert store.times.tolist() == [e[1] for e in expected]
        assert store.embeddings[:, 0].tolist() == [e[2] for e in expected]
        assert store.labels == ["A" if int(e[2]) % 2 else "B" for e in expected]
        if i == 150:
            early = store.copy()
            early_names = list(early.photo_paths)
            early_rows = early.embeddings.copy()

    # Adding copies what is kept only when the room to spare runs out or an entry is replaced or
    # comes out of order, not at each correction.
    assert buffers_replaced < 100
    # A copy taken earlier does not change as the store goes on.
    assert early is not None and early.photo_paths == early_names
    np.testing.assert_array_equal(early.embeddings, early_rows)
    store.save()
    again = PersonalStore(SHA, tmp_path, max_entries=bound)
    assert again.photo_paths == store.photo_paths and again.labels == store.labels
    np.testing.assert_array_equal(again.embeddings, store.embeddings)
    np.testing.assert_array_equal(again.times, store.times)
    again.add([tmp_path / "last.jpg"], ["A"], np.ones((1, 4)), when=10_000.0)
    assert len(again) == bound and Path(again.photo_paths[-1]).name == "last.jpg"


def test_a_damaged_store_is_set_aside_with_a_warning_and_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    PersonalStore(SHA, tmp_path).add([tmp_path / "a.jpg"], ["A"], np.ones((1, 3)))
    damaged = tmp_path / f"{SHA}.npz"
    damaged.write_bytes(damaged.read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        store = PersonalStore(SHA, tmp_path)
    assert len(store) == 0
    assert store.warning is not None and "could not be read" in store.warning
    assert "\n" not in store.warning
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    kept_aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(kept_aside) == 1 and not damaged.exists()
    store.add([tmp_path / "b.jpg"], ["B"], np.ones((1, 3)))
    assert PersonalStore(SHA, tmp_path).labels == ["B"]


def test_another_bundle_has_its_own_store(tmp_path: Path) -> None:
    PersonalStore(SHA, tmp_path).add([tmp_path / "a.jpg"], ["A"], np.ones((1, 3)))
    assert len(PersonalStore("cd" * 32, tmp_path)) == 0
    assert len(PersonalStore(SHA, tmp_path)) == 1


def test_a_store_file_of_another_model_renamed_into_place_is_not_trusted(tmp_path: Path) -> None:
    other = "cd" * 32
    PersonalStore(other, tmp_path).add([tmp_path / "a.jpg"], ["A"], np.ones((1, 3)))
    os.replace(tmp_path / f"{other}.npz", tmp_path / f"{SHA}.npz")
    store = PersonalStore(SHA, tmp_path)
    assert len(store) == 0 and store.warning is not None


def test_store_refuses_unusable_embeddings(tmp_path: Path) -> None:
    store = PersonalStore(SHA, tmp_path)
    with pytest.raises(PersonalStoreError):
        store.add([tmp_path / "a.jpg"], ["A"], np.array([[np.nan, 1.0]]))
    store.add([tmp_path / "a.jpg"], ["A"], np.ones((1, 3)))
    with pytest.raises(PersonalStoreError, match="wide"):
        store.add([tmp_path / "b.jpg"], ["A"], np.ones((1, 4)))


def test_forget_one_photo_or_everything(tmp_path: Path) -> None:
    store = PersonalStore(SHA, tmp_path)
    store.add([tmp_path / "a.jpg", tmp_path / "b.jpg"], ["A", "B"], np.eye(2, 3))
    assert store.forget([tmp_path / "a.jpg"]) == 1
    assert PersonalStore(SHA, tmp_path).labels == ["B"]
    assert store.forget() == 1
    assert not (tmp_path / f"{SHA}.npz").exists()
    assert len(PersonalStore(SHA, tmp_path)) == 0


def test_forgetting_without_saving_leaves_the_file_for_a_later_save(tmp_path: Path) -> None:
    store = PersonalStore(SHA, tmp_path)
    store.add([tmp_path / "a.jpg"], ["A"], np.ones((1, 3)))
    assert store.forget(save=False) == 1
    assert len(PersonalStore(SHA, tmp_path)) == 1  # the window writes it in the background
    store.save()
    assert not (tmp_path / f"{SHA}.npz").exists()


def test_photo_key_is_the_same_for_relative_and_absolute_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert photo_key("a.jpg") == photo_key(tmp_path / "a.jpg")


# ------------------------------------------------------------------------------------ combination


# A 200-wide space with breed means, as a bundle's detector gives them: breed B's training mean is
# far from where this person's B cats lie (`B_HERE`), the way another collection's photos are.
WIDE = 200
WIDE_MEANS = np.zeros((3, WIDE), dtype=np.float32)
WIDE_MEANS[0, 0] = WIDE_MEANS[1, 1] = WIDE_MEANS[2, 2] = 8.0
B_HERE = np.zeros(WIDE, dtype=np.float32)
B_HERE[0], B_HERE[3] = 8.0, 8.0


def b_cats(count: int, seed: int) -> np.ndarray:
    """Different cats of breed B as this person photographs them: around `B_HERE`, each its own."""
    return B_HERE + np.random.default_rng(seed).normal(0, 4.0, (count, WIDE)).astype(np.float32)


def wide_layer(count: int, settings: LayerSettings = WIDE_REACH) -> PersonalLayer:
    """`count` corrected B cats, with the breed shift on unless `settings` say otherwise."""
    corrected = b_cats(count, seed=1)
    metric = Metric(means=WIDE_MEANS)
    return PersonalLayer(LABELS, corrected, ["B"] * count, metric=metric, settings=settings)


@pytest.mark.parametrize("metric", [Metric(), Metric(means=np.eye(3, dtype=np.float32))])
def test_with_no_corrections_the_bundle_answer_is_unchanged(metric: Metric) -> None:
    layer = PersonalLayer(LABELS, np.zeros((0, 3)), [], metric=metric, settings=WHITENED)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    combined = layer.combine(probabilities, np.eye(2, 3))
    np.testing.assert_array_equal(combined.probabilities, probabilities)
    original = [prediction([0.7, 0.2, 0.1], unit(1, 0, 0))]
    assert layer.adapt(original) == original
    assert layer.adapt(original)[0] is original[0]


@pytest.mark.parametrize("method", ["knn", "ncm"])
def test_a_near_duplicate_of_a_corrected_photo_takes_its_label(method: str) -> None:
    corrected = unit(1, 1, 0)
    layer = PersonalLayer(
        LABELS, corrected[None, :], ["B"], ["/photos/tom.jpg"], settings=LayerSettings(method=method)
    )
    near = prediction([0.8, 0.15, 0.05], unit(1, 0.98, 0.05), "tom2.jpg")
    far = prediction([0.8, 0.15, 0.05], unit(0, 0, 1), "other.jpg")
    adapted_near, adapted_far = layer.adapt([near, far])
    assert adapted_near.label == "B" and adapted_near.confidence > 0.9
    assert adapted_near.personal and adapted_near.moved_by == "tom.jpg → B"
    assert np.isclose(adapted_near.probabilities.sum(), 1.0)
    # A photo unlike every correction keeps the model's answer exactly.
    assert adapted_far is far and not adapted_far.personal


def test_a_breed_nobody_corrected_keeps_the_model_answer() -> None:
    layer = PersonalLayer(LABELS, np.stack([unit(1, 0, 0), unit(0.9, 0.1, 0)]), ["A", "A"])
    photo = prediction([0.1, 0.1, 0.8], unit(0, 0.2, 1))
    assert layer.adapt([photo])[0].label == "C"


def test_corrections_to_breeds_the_bundle_lacks_are_left_out() -> None:
    layer = PersonalLayer(LABELS, np.stack([unit(1, 0, 0), unit(0, 1, 0)]), ["A", "Z"])
    assert len(layer) == 1


def test_photos_without_usable_embeddings_keep_the_model_answer() -> None:
    layer = PersonalLayer(LABELS, unit(1, 0, 0)[None, :], ["B"])
    probabilities = np.array([[0.8, 0.1, 0.1]])
    combined = layer.combine(probabilities, np.array([[np.nan, 0, 0]]))
    np.testing.assert_array_equal(combined.probabilities, probabilities)


def test_nearest_photos_are_ranked_by_similarity() -> None:
    layer = PersonalLayer(LABELS, unit(1, 0, 0)[None, :], ["A"])
    candidates = np.stack([unit(0, 0, 1), unit(1, 0.1, 0), unit(1, 0.5, 0)])
    assert [row for row, _ in layer.nearest_photos(unit(1, 0, 0), candidates, limit=5)] == [1, 2]


def test_similar_photos_are_offered_further_out_than_answers_change() -> None:
    layer = PersonalLayer(LABELS, unit(1, 0, 0)[None, :], ["A"], settings=WHITENED)
    # Cosine 0.4: past the offer's floor, short of the gate where the layer changes an answer.
    maybe_same_cat = unit(0.4, np.sqrt(1 - 0.4**2), 0)
    assert WHITENED.similar < 0.4 < WHITENED.low
    assert [row for row, _ in layer.nearest_photos(unit(1, 0, 0), maybe_same_cat[None, :], limit=5)] == [0]
    probabilities = np.array([[0.2, 0.7, 0.1]])
    np.testing.assert_array_equal(
        layer.combine(probabilities, maybe_same_cat[None, :]).probabilities, probabilities
    )


def test_a_bundle_with_a_not_a_cat_detector_compares_photos_in_its_whitened_space(tmp_path: Path) -> None:
    from factories import COLOUR_LABELS, make_ood_colour_bundle

    from catbreed_desktop.core.personal.combine import WHITENED, layer_setup

    bundle = make_ood_colour_bundle(tmp_path / "bundle")
    metric, settings = layer_setup(bundle)
    assert settings == WHITENED and metric.whiten is not None and metric.features == (0, 3)
    store = PersonalStore(bundle.model_sha256, tmp_path / "store")
    store.add([tmp_path / "purple.png"], ["Green Cat"], np.array([[1.0, -1.5, 1.7]]))
    layer = PersonalLayer.for_bundle(store, bundle)
    probabilities = [0.1, 0.1, 0.8]
    photo = Prediction(
        Path("purple2.png"),
        tuple((COLOUR_LABELS[i], probabilities[i]) for i in (2, 0, 1)),
        np.array(probabilities),
        embedding=np.array([1.02, -1.48, 1.69], dtype=np.float32),
    )
    assert layer.adapt([photo])[0].label == "Green Cat"


def test_a_breed_with_several_corrections_pulls_another_cat_of_it() -> None:
    photo = b_cats(1, seed=2)
    layer = wide_layer(40)
    # Not a near copy of any correction: the kNN step leaves it alone, the breed shift moves it.
    assert layer.similarities(photo).max() < WIDE_REACH.low
    probabilities = np.array([[0.55, 0.35, 0.10]])
    shifted = layer.combine(probabilities, photo).probabilities
    assert shifted.argmax() == 1 and np.isclose(shifted.sum(), 1.0)
    # One correction is not enough to overrule the model on another cat.
    assert wide_layer(1).combine(probabilities, photo).probabilities.argmax() == 0


def test_by_default_another_cat_of_a_corrected_breed_keeps_its_answer_and_the_same_cat_follows() -> None:
    photo = b_cats(1, seed=2)
    probabilities = np.array([[0.55, 0.35, 0.10]])
    layer = wide_layer(40, WHITENED)
    np.testing.assert_array_equal(layer.combine(probabilities, photo).probabilities, probabilities)
    # A near copy of one of those corrections still takes its label.
    near_copy = b_cats(1, seed=1) + np.random.default_rng(5).normal(0, 0.5, (1, WIDE)).astype(np.float32)
    assert layer.similarities(near_copy).max() >= WHITENED.duplicate
    assert layer.combine(probabilities, near_copy).probabilities.argmax() == 1


def test_the_breed_shift_leaves_uncorrected_breeds_in_their_order() -> None:
    probabilities = np.array([[0.5, 0.2, 0.3], [0.1, 0.3, 0.6]])
    shifted = wide_layer(10).combine(probabilities, b_cats(2, seed=3)).probabilities
    np.testing.assert_allclose(
        np.log(shifted[:, 0] / shifted[:, 2]), np.log(probabilities[:, 0] / probabilities[:, 2])
    )


def test_an_adjusted_prediction_names_the_correction_of_its_new_breed() -> None:
    photo = Prediction(
        Path("other.jpg"),
        (("A", 0.55), ("B", 0.35), ("C", 0.1)),
        np.array([0.55, 0.35, 0.1]),
        embedding=b_cats(1, seed=2)[0],
    )
    adapted = wide_layer(40).adapt([photo])[0]
    assert adapted.label == "B" and adapted.moved_by == "a corrected photo → B"


def test_a_damaged_or_empty_store_gives_the_bundle_answer(tmp_path: Path, caplog) -> None:
    from factories import make_ood_colour_bundle

    bundle = make_ood_colour_bundle(tmp_path / "bundle")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / f"{bundle.model_sha256}.npz").write_bytes(b"PK\x03\x04 not a zip")
    with caplog.at_level(logging.WARNING):
        damaged = PersonalStore(bundle.model_sha256, tmp_path / "store")
    assert damaged.warning and not len(damaged)
    photo = prediction([0.2, 0.5, 0.3], np.array([1.0, -1.5, 1.7], dtype=np.float32))
    for store in (damaged, PersonalStore(bundle.model_sha256, tmp_path / "empty")):
        layer = PersonalLayer.for_bundle(store, bundle)
        assert len(layer) == 0 and layer.adapt([photo])[0] is photo
