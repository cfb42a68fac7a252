"""Small things the tests build for themselves: coloured photos and a tiny ONNX colour classifier."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle, write_bundle
from catbreed_desktop.core.photos import Preprocessing

# Three "breeds" told apart by their dominant colour, so predictions are known in advance.
COLOUR_LABELS = ("Red Cat", "Green Cat", "Blue Cat")
COLOURS = {"Red Cat": (220, 30, 30), "Green Cat": (30, 200, 40), "Blue Cat": (30, 40, 220)}
TINY_SPEC = Preprocessing(size=32, resize=36)
# The breeds of the retrained default model: the window and the CLI must cope with a list this long.
BREEDS_33 = (
    "Abyssinian", "American Curl", "American Shorthair", "Balinese", "Bengal", "Birman", "Bombay",
    "British Shorthair", "Burmese", "Cornish Rex", "Devon Rex", "Egyptian Mau", "Exotic Shorthair",
    "Havana", "Himalayan", "Japanese Bobtail", "Korat", "Maine Coon", "Manx", "Nebelung",
    "Norwegian Forest Cat", "Oriental Shorthair", "Persian", "Ragdoll", "Russian Blue",
    "Scottish Fold", "Selkirk Rex", "Siamese", "Siberian", "Snowshoe", "Sphynx", "Tonkinese",
    "Turkish Angora",
)  # fmt: skip


def make_photo(
    path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), seed: int = 0
) -> Path:
    """Write a noisy photo of one dominant colour; the format follows the suffix."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.int16)
    noise = rng.integers(-20, 21, size=(size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_colour_model(path: Path, size: int = TINY_SPEC.size, num_labels: int = 3) -> Path:
    """An ONNX model: mean colour per channel -> linear layer -> logits, plus the mean as embedding.

    Channel c votes for label c; labels from the fourth on get no vote (logit 0), so with many of
    them a pure colour is still clearly its label and a mixed one is spread thin (unsure).
    """
    weights = np.zeros((3, num_labels), dtype=np.float32)
    weights[:, :3] = np.eye(3, dtype=np.float32) * 4.0
    bias = np.zeros(num_labels, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], [EMBEDDING_NAME], axis=1),
            helper.make_node("Gemm", [EMBEDDING_NAME, "weights", "bias"], [LOGITS_NAME]),
        ],
        "colour_classifier",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", num_labels]),
            helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_colour_bundle(folder: Path, ood: dict | None = None) -> ModelBundle:
    """A complete, valid bundle around the colour classifier."""
    model = make_colour_model(folder.parent / f"{folder.name}-source.onnx")
    return write_bundle(
        folder,
        model,
        labels=COLOUR_LABELS,
        architecture="test-colour-classifier",
        preprocessing=TINY_SPEC,
        metrics={"accuracy": 1.0},
        ood=ood,
    )


def make_breeds_bundle(
    folder: Path, labels: tuple[str, ...] | None = None, decision: dict | None = None
) -> ModelBundle:
    """A valid bundle of many breeds around the colour classifier; `decision` goes into bundle.json as is.

    `labels` defaults to the 33 breeds in reverse alphabetical order (a bundle's order is the
    model's, not the alphabet's), so red photos are "Turkish Angora", green "Tonkinese" and blue
    "Sphynx".
    """
    labels = tuple(reversed(BREEDS_33)) if labels is None else labels
    model = make_colour_model(folder.parent / f"{folder.name}-source.onnx", num_labels=len(labels))
    return write_bundle(
        folder,
        model,
        labels=labels,
        architecture="test-colour-classifier",
        preprocessing=TINY_SPEC,
        metrics={"accuracy": 1.0},
        decision=decision,
    )


def colour_embedding(colour: tuple[int, int, int], spec: Preprocessing = TINY_SPEC) -> list[float]:
    """The colour model's `embedding` of a plain photo of `colour`: its normalised channel means."""
    return [(c / 255.0 - m) / s for c, m, s in zip(colour, spec.mean, spec.std, strict=True)]


def colour_energy_detector() -> dict:
    """A distance-plus-energy "not a cat" section around the colour breeds whose threshold flags
    nothing, for commands that set its threshold again."""
    return {
        "method": "mahalanobis_energy",
        "means": [colour_embedding(COLOURS[label]) for label in COLOUR_LABELS],
        "precision": np.eye(3).tolist(),
        "embedding_size": 3,
        "features": [0, 3],
        "distance_scale": 1.0,
        "energy_scale": 1.0,
        "threshold": 100.0,
    }


def make_ood_colour_bundle(folder: Path, threshold: float = 1.0) -> ModelBundle:
    """The colour bundle with a Mahalanobis "not a cat" section: photos far from all three colours fail it."""
    ood = {
        "method": "mahalanobis",
        "means": [colour_embedding(COLOURS[label]) for label in COLOUR_LABELS],
        "precision": np.eye(3).tolist(),
        "threshold": threshold,
    }
    return make_colour_bundle(folder, ood=ood)


def make_colour_manifest(workdir: Path, photos: Path, per_split: int = 6, flagged_per_breed: int = 0) -> None:
    """A `prepare`-style work folder for the colour breeds: `per_split` photos of each in every
    split, shades around its colour; the first `flagged_per_breed` training photos of each are
    marked flagged, as `clean` marks them."""
    import json

    from trainer.dataset import Sample, write_manifest

    workdir.mkdir()
    samples: list[Sample] = []
    for label in COLOUR_LABELS:
        for split in ("train", "val", "test"):
            for n in range(per_split):
                red, green, blue = (max(0, min(255, c + 9 * n - 20)) for c in COLOURS[label])
                path = make_photo(photos / split / f"{label}-{n}.png", (red, green, blue))
                flagged = split == "train" and n < flagged_per_breed
                samples.append(Sample(path, label, split, len(samples), "colours", flagged=flagged))
    write_manifest(workdir, samples)
    (workdir / "labels.json").write_text(json.dumps(list(COLOUR_LABELS)))


def heic_bytes(image: Image.Image, quality: int = 90) -> bytes | None:
    """`image` encoded as HEIC by pillow-heif's encoder (a test-only dependency), or None without one.

    The app decodes with pi-heif, which has no encoder, so tests make their HEIC files here.
    """
    try:
        import pillow_heif
    except ImportError:
        return None
    if not pillow_heif.libheif_info().get("encoders"):
        return None
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=quality)
    return buffer.getvalue()


def import_script(path: Path, monkeypatch) -> ModuleType:
    """A script (bench/, not a package) imported as a module, its additions to `sys.path` and
    `sys.modules` undone by `monkeypatch` after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name while the file runs.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
