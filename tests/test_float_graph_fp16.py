"""fp16 graphs (`float_graph.fp16`): float32 at the edges and around the sensitive ops, runnable on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from float_graph_models import float_types, pixels, quantized, run, signature, tiny_model
from onnx import TensorProto

from catbreed_desktop.core.engines.float_graph import dequantize_model, to_float16


def test_fp16_graph_keeps_float32_io_and_sensitive_ops_and_runs_on_cpu(tmp_path: Path) -> None:
    float32 = dequantize_model(quantized(tiny_model(), tmp_path))

    half = to_float16(float32)

    assert signature(half) == signature(float32)
    types = float_types(half)
    weights = {t.name: t.data_type for t in half.graph.initializer}
    assert weights["dense.weight"] == weights["head.weight"] == TensorProto.FLOAT16
    assert weights["norm.scale"] == weights["norm.bias"] == TensorProto.FLOAT  # read by LayerNorm only
    for node in half.graph.node:
        floats = [
            types[name]
            for name in (*node.input, *node.output)
            if types.get(name) in (TensorProto.FLOAT, TensorProto.FLOAT16)
        ]
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceMean"):
            assert set(floats) == {TensorProto.FLOAT}, node.name
        elif node.op_type in ("MatMul", "Conv", "Add"):
            assert set(floats) == {TensorProto.FLOAT16}, node.name
    batch = pixels(3)
    want, got = run(float32, batch), run(half, batch)
    for name in ("logits", "embedding"):
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=2e-2, atol=2e-2)
