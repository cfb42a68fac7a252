"""What the engine benchmarks share: picking photos, 12-megapixel copies, the PyTorch eager baseline,
timing and tables.

The eager baseline is a transformers `Dinov2ForImageClassification` holding the weights of the
bundle's derived fp32 graph (the int8 weights dequantized: the model the CPU engine runs, without
rounding activations to 8 bits), checked against ONNX Runtime on that graph before anything is
timed; `--checkpoint` uses a Hugging Face checkpoint folder instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Run from a checkout without installing it: the package is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catbreed_desktop.core.bundle import LOGITS_NAME, ModelBundle  # noqa: E402
from catbreed_desktop.core.engines.base import Engine  # noqa: E402
from catbreed_desktop.core.engines.names import DEFAULT_BATCH_SIZE  # noqa: E402
from catbreed_desktop.core.photos import iter_photo_paths  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "oxford-pet-cats"
LARGE_SIDE = 4000  # 4000 x 3000 for the 4:3 photos: 12 megapixels
LARGE_QUALITY = 95
EAGER = "transformers eager"
# The logits of eager and of ONNX Runtime on the same fp32 weights must agree this closely before
# eager counts as the same model (the export check of the trainer uses the same bound).
EAGER_TOLERANCE = 1e-3


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every engine benchmark takes: the bundle, the photos and the threads."""
    parser.add_argument(
        "--bundle", type=Path, default=ROOT / "models", help="model bundle (default: models/)"
    )
    parser.add_argument(
        "--photos",
        type=Path,
        default=DEFAULT_PHOTOS,
        help=f"photo folder, searched recursively (default: {DEFAULT_PHOTOS})",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per runtime (default: 2)")


def add_timing_options(parser: argparse.ArgumentParser) -> None:
    """The PyTorch eager baseline, and how long and how often each figure is timed."""
    parser.add_argument(
        "--checkpoint", type=Path, help="eager baseline from this Hugging Face folder instead"
    )
    parser.add_argument("--skip-eager", action="store_true", help="no PyTorch baseline (no ratios)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed passes per figure; the best is kept (default: 3)"
    )
    parser.add_argument(
        "--min-images", type=int, default=64, help="images per inference-only pass, at least (default: 64)"
    )


def add_large_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--large-dir",
        type=Path,
        help="where the 12 MP copies go (default: a temporary folder, removed after)",
    )


# --- photos -------------------------------------------------------------------------------------------


def pick_photos(folder: Path, count: int | None) -> list[Path]:
    """`count` photos (all when None) spread evenly over every sub-folder, so every breed is represented."""
    found = iter_photo_paths([folder], recursive=True)
    if not found:
        raise SystemExit(f"no photos found in {folder}")
    if count is None or count >= len(found):
        return found
    by_folder: dict[Path, list[Path]] = {}
    for path in found:
        by_folder.setdefault(path.parent, []).append(path)
    groups = list(by_folder.values())
    picked: list[Path] = []
    for index, group in enumerate(groups):
        share = count // len(groups) + (index < count % len(groups))
        step = len(group) / max(1, share)
        picked += [group[int(i * step)] for i in range(min(share, len(group)))]
    return picked


def large_copies(photos: Sequence[Path], folder: Path, side: int = LARGE_SIDE) -> list[Path]:
    """Each photo upscaled (bicubic) to `side` px on its long side (12 MP by default), saved as a quality-95 JPEG.

    Named after the photo's folder and name (and `side`, when not the default), and made only
    once: an existing copy is reused.
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    suffix = "" if side == LARGE_SIDE else f"-{side}px"
    copies = []
    for photo in photos:
        copy = folder / f"{photo.parent.name}__{photo.stem}{suffix}.jpg"
        if not copy.is_file():
            with Image.open(photo) as image:
                rgb = image.convert("RGB")
            scale = side / max(rgb.size)
            size = (round(rgb.width * scale), round(rgb.height * scale))
            partial = copy.with_suffix(".part")
            rgb.resize(size, Image.Resampling.BICUBIC).save(partial, "JPEG", quality=LARGE_QUALITY)
            partial.replace(copy)
        copies.append(copy)
    return copies


def warm_cache(paths: Sequence[Path]) -> None:
    """Read every file once so that no measurement pays for a cold disk."""
    for path in paths:
        path.read_bytes()


# --- the eager baseline ---------------------------------------------------------------------------------


class EagerEngine(Engine):
    """A transformers image classifier run by PyTorch in eager mode, under `torch.no_grad()`."""

    provider = "PyTorch eager (transformers)"

    def __init__(self, bundle: ModelBundle, model: Any, threads: int) -> None:
        import torch

        super().__init__(bundle)
        torch.set_num_threads(threads)
        self.model = model.eval()

    @property
    def output_names(self) -> tuple[str, ...]:
        return (LOGITS_NAME,)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            logits = self.model(pixel_values=torch.from_numpy(np.ascontiguousarray(batch))).logits
        return {LOGITS_NAME: logits.numpy()}


def eager_model(bundle: ModelBundle, checkpoint: Path | None) -> Any:
    """The bundle's model in transformers: from `checkpoint`, else rebuilt from the derived fp32 graph."""
    if checkpoint is not None:
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(checkpoint)
    if bundle.architecture != "Dinov2ForImageClassification":
        raise SystemExit(
            f"cannot rebuild a {bundle.architecture} in transformers from its graph; give --checkpoint or --skip-eager"
        )
    return dinov2_from_graph(bundle)


def dinov2_from_graph(bundle: ModelBundle) -> Any:
    """A `Dinov2ForImageClassification` holding the weights of the bundle's derived fp32 graph.

    The export keeps module names for biases, norms and embeddings. Linear weights are stored
    transposed under anonymous names: each is the MatMul weight feeding the Add of a named bias.
    The position embeddings were folded into one anonymous (1, tokens, hidden) constant.
    """
    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import Dinov2ForImageClassification

    from catbreed_desktop.core.engines.float_graph import float_graph_path
    from trainer.backbone_import import dinov2_config

    graph = onnx.load(str(float_graph_path(bundle, "fp32"))).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    state: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name.startswith("body.dinov2."):
            state[name.removeprefix("body.")] = array
        elif name == "head.bias":
            state["classifier.bias"] = array
        elif name in ("head.weight", "head.weight_Transposed"):
            state["classifier.weight"] = array if name == "head.weight" else array.T
    for node in graph.node:
        bias = next((name for name in node.input if name.endswith(".bias") and name in arrays), None)
        if node.op_type != "Add" or bias is None or not bias.startswith("body.dinov2."):
            continue
        matmul = next((producer.get(name) for name in node.input if name != bias), None)
        if matmul is None or matmul.op_type != "MatMul":
            continue
        weight = next((arrays[name] for name in matmul.input if name in arrays), None)
        if weight is not None:
            state[bias.removeprefix("body.").removesuffix(".bias") + ".weight"] = weight.T

    hidden = state["dinov2.embeddings.cls_token"].shape[-1]
    patch = state["dinov2.embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = bundle.preprocessing.size // patch
    positions = [
        array
        for name, array in arrays.items()
        if not name.startswith(("body.", "head.")) and array.shape == (1, 1 + grid * grid, hidden)
    ]
    if len(positions) != 1:
        raise SystemExit(
            f"expected one position-embedding constant in the fp32 graph, found {len(positions)}"
        )
    state["dinov2.embeddings.position_embeddings"] = positions[0]
    state.setdefault("dinov2.embeddings.mask_token", np.zeros((1, hidden), dtype=np.float32))
    epsilon = next(
        (
            attr.f
            for node in graph.node
            if node.op_type == "LayerNormalization"
            for attr in node.attribute
            if attr.name == "epsilon"
        ),
        1e-6,
    )
    config = dinov2_config(
        state,
        grid,
        prefix="dinov2.",
        layer_norm_eps=epsilon,
        num_labels=bundle.num_labels,
        id2label=dict(enumerate(bundle.labels)),
        label2id={label: index for index, label in enumerate(bundle.labels)},
    )
    model = Dinov2ForImageClassification(config)
    missing, unexpected = model.load_state_dict(
        {name: torch.from_numpy(np.array(array, dtype=np.float32)) for name, array in state.items()},
        strict=False,
    )
    if missing or unexpected:
        raise SystemExit(
            f"the fp32 graph's weights do not fit Dinov2ForImageClassification: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()


# --- measuring ------------------------------------------------------------------------------------------


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def inference_rate(
    engine: Engine,
    inputs: np.ndarray,
    batch_size: int,
    min_images: int,
    repeat: int,
    min_seconds: float = 0.5,
) -> float:
    """Images/s of `engine.run` on batches of `batch_size`, best of `repeat` passes.

    A pass is `min_images` images or more, and `min_seconds` or more, so that a GPU's passes are
    long enough to time.
    """
    batch = np.ascontiguousarray(np.resize(inputs, (batch_size, *inputs.shape[1:])))
    engine.run(batch)  # warm-up: arenas, kernels, caches
    one_call = best_seconds(lambda: engine.run(batch), 1)
    calls = max(1, math.ceil(min_images / batch_size), math.ceil(min_seconds / max(one_call, 1e-6)))

    def run() -> None:
        for _ in range(calls):
            engine.run(batch)

    return calls * batch_size / best_seconds(run, repeat)


def logits_of(engine: Engine, inputs: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    return np.concatenate(
        [engine.run(inputs[i : i + batch_size])[LOGITS_NAME] for i in range(0, len(inputs), batch_size)]
    )


# --- printing ---------------------------------------------------------------------------------------------


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int]) -> None:
    """Rows under a header, the first column left-aligned and the others right-aligned."""

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:>{width}}" if index else f"{cell:<{width}}"
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))
    print()


def load_average() -> str:
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def interleaved_rates(
    engines: dict[str, Engine], inputs: np.ndarray, batch_size: int, min_images: int, repeat: int
) -> dict[str, float]:
    """Images/s of each engine on batches of `batch_size`, best of `repeat` passes taken in turns.

    Turns rather than one engine after another: on a shared machine the load drifts, and a slow
    minute should cost every engine one pass, not one engine all of its passes.
    """
    batch = np.ascontiguousarray(np.resize(inputs, (batch_size, *inputs.shape[1:])))
    calls = max(1, math.ceil(min_images / batch_size))
    for engine in engines.values():
        engine.run(batch)  # warm-up: arenas, kernels, caches
    best = dict.fromkeys(engines, math.inf)
    for _ in range(repeat):
        for name, engine in engines.items():
            start = time.perf_counter()
            for _ in range(calls):
                engine.run(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: calls * batch_size / seconds for name, seconds in best.items()}
