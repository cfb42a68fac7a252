"""The shipped bundle's float graphs, checked against the int8 CPU engine on 48 Oxford cats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from float_graph_models import op_types, run, signature
from onnx import TensorProto

from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.float_graph import QUANTIZED_OP_TYPES, float_graph_path
from catbreed_desktop.core.photos import load_and_preprocess

SHIPPED = Path(__file__).resolve().parents[1] / "models"
PHOTOS_PER_BREED = 4


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory):
    if not (SHIPPED / "bundle.json").is_file():
        pytest.skip(f"no shipped bundle in {SHIPPED}")
    bundle = load_bundle(SHIPPED)
    cache = tmp_path_factory.mktemp("float-graphs")
    return bundle, {
        precision: float_graph_path(bundle, precision, cache_dir=cache) for precision in ("fp32", "fp16")
    }


def test_the_shipped_float_graphs_have_no_integer_compute_and_the_same_signature(shipped) -> None:
    bundle, graphs = shipped
    original = onnx.load(str(bundle.model_path))
    # Older bundles are dynamic (MatMulInteger), the shipped one static QDQ (DequantizeLinear).
    assert op_types(original)["MatMulInteger"] + op_types(original)["DequantizeLinear"] > 0
    for precision, path in graphs.items():
        derived = onnx.load(str(path))
        assert not set(op_types(derived)) & QUANTIZED_OP_TYPES, precision
        assert signature(derived) == signature(original), precision
        assert all(t[1] == TensorProto.FLOAT for part in signature(derived) for t in part)
        assert (
            op_types(derived)["MatMul"] == op_types(original)["MatMul"] + op_types(original)["MatMulInteger"]
        )


@pytest.mark.slow  # about 15 s on two shared cores: 48 photos through int8 and fp16 on the CPU
def test_the_shipped_float_graphs_name_the_breeds_the_int8_cpu_engine_names(
    shipped, shared_cats: Path
) -> None:
    bundle, graphs = shipped
    photos = [
        photo
        for folder in sorted(p for p in shared_cats.iterdir() if p.is_dir())
        for photo in sorted(folder.glob("*.jpg"))[:PHOTOS_PER_BREED]
    ]
    batch = np.stack([load_and_preprocess(photo, bundle.preprocessing) for photo in photos])
    with create_engine(bundle, "cpu") as engine:
        int8 = engine.run(batch)["logits"].argmax(axis=1)

    half = run(graphs["fp16"], batch)["logits"].argmax(axis=1)
    # fp32 on a quarter of them: it is checked in full by bench/check_float_graph.py.
    full = run(graphs["fp32"], batch[::PHOTOS_PER_BREED])["logits"].argmax(axis=1)

    assert len(photos) == 12 * PHOTOS_PER_BREED
    # The full check (2,371 photos) asks for 99 %; 48 photos allow at most one difference.
    assert np.sum(half != int8) <= 1, f"fp16 differs from int8 on {np.sum(half != int8)} of {len(photos)}"
    assert np.sum(full != int8[::PHOTOS_PER_BREED]) == 0
