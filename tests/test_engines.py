"""Engines: CPU predictions, calibrated softmax, provider names and the automatic fallback chain."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime
import pytest
from factories import COLOUR_LABELS, COLOURS, make_photo

from catbreed_desktop.core.engines import EngineUnavailable, create_engine, onnx_runtime, softmax
from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
from catbreed_desktop.core.imaging import load_and_preprocess, stack_batch


@pytest.fixture
def colour_batch(tmp_path, colour_bundle):
    """One photo per colour label, in label order, as a preprocessed batch."""
    photos = [
        make_photo(tmp_path / f"{i}.png", COLOURS[label], seed=i) for i, label in enumerate(COLOUR_LABELS)
    ]
    return stack_batch([load_and_preprocess(p, colour_bundle.preprocessing) for p in photos])


def missing_tensorrt(*args, **kwargs):
    raise EngineUnavailable("TensorRT is not installed (test)")


@pytest.fixture
def no_gpu(monkeypatch):
    """Make TensorRT and ONNX Runtime CUDA unavailable whatever this machine has."""
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing_tensorrt)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)


def test_cpu_engine_classifies_colours_and_probabilities_sum_to_one(colour_bundle, colour_batch):
    engine = create_engine(colour_bundle, "cpu")

    probabilities = engine.predict(colour_batch)

    assert engine.provider == "ONNX Runtime CPU"
    assert probabilities.shape == (3, 3)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [COLOUR_LABELS[i] for i in probabilities.argmax(axis=1)] == list(COLOUR_LABELS)


def test_run_returns_logits_and_embedding(colour_bundle, colour_batch):
    engine = create_engine(colour_bundle, "cpu")

    outputs = engine.run(colour_batch)

    assert engine.output_names == ("logits", "embedding")
    assert engine.has_embedding
    assert outputs["logits"].shape == (3, 3)
    # The colour model's embedding is the per-channel mean of the normalised photo.
    np.testing.assert_allclose(outputs["embedding"], colour_batch.mean(axis=(2, 3)), atol=1e-5)


def test_higher_temperature_lowers_confidence_but_not_the_ranking(colour_bundle, colour_batch):
    sharp = create_engine(colour_bundle, "cpu").predict(colour_batch)
    softened_bundle = dataclasses.replace(colour_bundle, temperature=8.0)
    soft = create_engine(softened_bundle, "cpu").predict(colour_batch)

    assert (soft.max(axis=1) < sharp.max(axis=1)).all()
    np.testing.assert_array_equal(soft.argmax(axis=1), sharp.argmax(axis=1))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)


def test_softmax_divides_logits_by_temperature():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]], dtype=np.float32)

    result = softmax(logits, temperature=2.0)

    expected_first = np.exp(1.0) / (np.exp(1.0) + 1.0)
    np.testing.assert_allclose(result[0], [expected_first, 1 - expected_first], rtol=1e-6)
    np.testing.assert_allclose(result[1], [0.5, 0.5])


def test_huge_logits_do_not_overflow():
    result = softmax(np.array([[1e4, 0.0, -1e4]]))
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result[0], [1.0, 0.0, 0.0])


def test_wrong_batch_shape_is_refused_in_words(colour_bundle):
    engine = create_engine(colour_bundle, "cpu")
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        engine.predict(np.zeros((1, 3, 16, 16), dtype=np.float32))


def test_auto_falls_back_to_cpu_and_says_why(colour_bundle, no_gpu):
    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "ONNX Runtime CPU"
    assert len(engine.fallback_notes) == 2
    tensorrt_note, cuda_note = engine.fallback_notes
    assert tensorrt_note.startswith("TensorRT skipped:") and "not installed" in tensorrt_note
    assert cuda_note.startswith("ONNX Runtime CUDA skipped:") and "onnxruntime-gpu" in cuda_note


def test_explicit_engines_never_fall_back(colour_bundle, no_gpu):
    with pytest.raises(EngineUnavailable, match="TensorRT is not installed"):
        create_engine(colour_bundle, "tensorrt")
    with pytest.raises(EngineUnavailable, match="onnxruntime-gpu"):
        create_engine(colour_bundle, "cuda")


def test_cuda_that_silently_runs_on_cpu_is_not_called_cuda(colour_bundle, monkeypatch):
    """ORT drops a CUDA provider it cannot start; the engine must notice via get_providers()."""
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        pytest.skip("this machine really has ONNX Runtime CUDA")
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", missing_tensorrt)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *available])

    with pytest.raises(EngineUnavailable, match="fell back to CPUExecutionProvider"):
        create_engine(colour_bundle, "cuda")
    engine = create_engine(colour_bundle, "auto")
    assert engine.provider == "ONNX Runtime CPU"
    assert "fell back" in engine.fallback_notes[-1]


def test_tensorrt_failing_mid_start_falls_back_in_auto(colour_bundle, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA call failed: cudaErrorMemoryAllocation")

    monkeypatch.setattr(tensorrt_engine, "load_toolkit", broken)
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)

    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "ONNX Runtime CPU"
    assert "cudaErrorMemoryAllocation" in engine.fallback_notes[0]


def test_unknown_preference_is_refused(colour_bundle):
    with pytest.raises(ValueError, match="auto, tensorrt, cuda, cpu"):
        create_engine(colour_bundle, "gpu")
