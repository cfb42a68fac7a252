"""`triton-repo`: lay out a model bundle as an NVIDIA Triton Inference Server model repository.

The study project this grew from served its ViT through Triton; a bundle carries everything Triton
needs, so this writes `<out>/<name>/config.pbtxt`, `<out>/<name>/1/model.onnx` and the label file
that Triton's classification extension reads. The config's parameters carry the labels, input size
and model checksum that `catbreed classify --engine triton` checks, as `catbreed serve` does. Preprocessing stays with the client (the shared
`catbreed_desktop.core.photos.preprocessing.preprocess`), as it does for the app.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from google.protobuf.text_encoding import CEscape

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, ModelBundle, load_bundle
from catbreed_desktop.core.engines.triton.contract import embedding_size, model_parameters

LABELS_FILE = "labels.txt"


def triton_config(bundle: ModelBundle, name: str, max_batch_size: int) -> str:
    """The config.pbtxt text for `bundle` on Triton's ONNX Runtime backend, with dynamic batching."""
    size = bundle.preprocessing.size
    outputs = [
        f'  {{\n    name: "{LOGITS_NAME}"\n    data_type: TYPE_FP32\n    dims: [ {bundle.num_labels} ]\n'
        f'    label_filename: "{LABELS_FILE}"\n  }}'
    ]
    if bundle.ood is not None:
        dimension = embedding_size(bundle)
        outputs.append(
            f'  {{\n    name: "{EMBEDDING_NAME}"\n    data_type: TYPE_FP32\n    dims: [ {dimension} ]\n  }}'
        )
    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [\n  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_FP32\n'
        f"    dims: [ 3, {size}, {size} ]\n  }}\n]\n"
        "output [\n" + ",\n".join(outputs) + "\n]\n"
        "dynamic_batching { }\n"
        "instance_group [ { kind: KIND_AUTO } ]\n"
        # What `--engine triton` checks before trusting the server: labels, input size, checksum.
        + "".join(
            f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{CEscape(value, as_utf8=True)}" }}\n}}\n'
            for key, value in model_parameters(bundle).items()
        )
    )


def write_triton_repository(
    bundle_dir: Path, out_dir: Path, name: str = "catbreed", max_batch_size: int = 32
) -> Path:
    """Write the model repository entry for the bundle; returns the model folder."""
    bundle = load_bundle(bundle_dir)
    model_dir = out_dir / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle.model_path, version_dir / "model.onnx")
    (model_dir / LABELS_FILE).write_text("\n".join(bundle.labels) + "\n", encoding="utf-8")
    (model_dir / "config.pbtxt").write_text(triton_config(bundle, name, max_batch_size), encoding="utf-8")
    return model_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "triton-repo", help="write a bundle as a Triton Inference Server model repository"
    )
    parser.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="REPOSITORY_DIR")
    parser.add_argument("--name", default="catbreed", help="model name in the repository")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # A BundleError reaches the command line, which prints it as one line on stderr (exit 2).
    model_dir = write_triton_repository(args.bundle, args.out, args.name, args.max_batch_size)
    print(f"wrote {model_dir}; serve with: tritonserver --model-repository {args.out}")
    return 0
