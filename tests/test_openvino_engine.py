"""The OpenVINO CPU engine: its outputs held to ONNX Runtime's, its cache, and auto's use of it.

The engine tests skip where openvino is not installed; what the app does without it (the message,
auto keeping to ONNX Runtime, and falling back to OpenVINO only when ONNX Runtime is missing) is
tested everywhere, with the engines faked where needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_fakes import make_int8_colour_bundle
from factories import COLOUR_LABELS, COLOURS, make_photo

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import BundleError
from catbreed_desktop.core.engines import (
    EngineUnavailable,
    choose,
    create_engine,
    onnx_runtime,
    openvino_engine,
    tensorrt_rtx,
)
from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
from catbreed_desktop.core.engines.base import Engine
from catbreed_desktop.core.engines.names import CPU_ENGINES, ENGINE_NAMES, OPENVINO
from catbreed_desktop.core.install_hints import install_extra_command
from catbreed_desktop.core.photos import load_and_preprocess, stack_batch


def unavailable(message: str):
    def refuse(*args, **kwargs):
        raise EngineUnavailable(message)

    return refuse


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", unavailable("TensorRT is not installed (test)"))
    monkeypatch.setattr(tensorrt_rtx, "load_plugin", unavailable("TensorRT for RTX is not installed (test)"))
    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)


@pytest.fixture
def batch(tmp_path, colour_bundle):
    """Seven photos: one per colour label in label order, then four more, as one preprocessed batch."""
    labels = [*COLOUR_LABELS, *COLOUR_LABELS, COLOUR_LABELS[0]]
    photos = [make_photo(tmp_path / f"{i}.png", COLOURS[label], seed=i) for i, label in enumerate(labels)]
    return stack_batch([load_and_preprocess(p, colour_bundle.preprocessing) for p in photos])


def no_openvino(name: str):
    raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_a_missing_openvino_is_refused_in_one_line_naming_the_extra():
    with pytest.raises(EngineUnavailable) as refused:
        openvino_engine.load_openvino(no_openvino)
    message = str(refused.value)
    assert "OpenVINO is not installed" in message and install_extra_command("openvino") in message
    assert "\n" not in message


def test_asking_for_openvino_by_name_never_falls_back(colour_bundle, monkeypatch):
    monkeypatch.setattr(openvino_engine, "load_openvino", unavailable("OpenVINO is not installed (test)"))
    with pytest.raises(EngineUnavailable, match="OpenVINO is not installed"):
        create_engine(colour_bundle, OPENVINO)


def test_auto_runs_onnx_runtime_on_the_cpu_and_openvino_only_when_asked(colour_bundle, no_gpu, monkeypatch):
    started: list[str] = []
    monkeypatch.setattr(openvino_engine, "OpenVinoEngine", lambda *args, **kwargs: started.append("openvino"))

    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "ONNX Runtime CPU" and started == []
    assert ENGINE_NAMES[-len(CPU_ENGINES) :] == CPU_ENGINES == ("cpu", "openvino")


class StandInEngine(Engine):
    provider = "OpenVINO CPU (stand-in)"

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("logits",)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": np.zeros((len(batch), self.bundle.num_labels), dtype=np.float32)}


def onnxruntime_missing(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")


def test_auto_falls_back_to_openvino_when_onnx_runtime_is_missing_and_says_why(
    colour_bundle, no_gpu, monkeypatch
):
    monkeypatch.setattr(choose, "OnnxRuntimeEngine", onnxruntime_missing)
    monkeypatch.setattr(openvino_engine, "OpenVinoEngine", lambda bundle, **kwargs: StandInEngine(bundle))

    engine = create_engine(colour_bundle, "auto")

    assert engine.provider == "OpenVINO CPU (stand-in)"
    assert engine.fallback_notes[-1] == "ONNX Runtime CPU skipped: No module named 'onnxruntime'"
    assert engine.fallback_notes[-2].startswith("ONNX Runtime CUDA skipped: No module named")


def test_without_any_cpu_runtime_auto_reports_onnx_runtime_missing(colour_bundle, no_gpu, monkeypatch):
    monkeypatch.setattr(choose, "OnnxRuntimeEngine", onnxruntime_missing)
    monkeypatch.setattr(openvino_engine, "load_openvino", unavailable("OpenVINO is not installed (test)"))

    with pytest.raises(ModuleNotFoundError, match="onnxruntime"):
        create_engine(colour_bundle, "auto")


def test_a_model_onnx_runtime_cannot_load_is_not_handed_to_openvino(colour_bundle, no_gpu, monkeypatch):
    colour_bundle.model_path.write_bytes(b"not an onnx model")
    monkeypatch.setattr(
        openvino_engine, "OpenVinoEngine", lambda *args, **kwargs: pytest.fail("OpenVINO was tried")
    )
    with pytest.raises(BundleError, match="ONNX Runtime cannot load"):
        create_engine(colour_bundle, "auto")


# --- with openvino installed ---------------------------------------------------------------------------


@pytest.fixture
def openvino():
    return pytest.importorskip("openvino")


def test_outputs_match_onnx_runtime_logits_embedding_and_probabilities(openvino, colour_bundle, batch):
    reference = create_engine(colour_bundle, "cpu")
    engine = create_engine(colour_bundle, OPENVINO, threads=1)

    outputs, expected = engine.run(batch), reference.run(batch)

    assert engine.output_names == reference.output_names == ("logits", "embedding")
    assert engine.provider == "OpenVINO CPU (latency)"
    for name in expected:
        assert outputs[name].shape == expected[name].shape
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5)
    np.testing.assert_allclose(engine.predict(batch), reference.predict(batch), atol=1e-5)
    assert [COLOUR_LABELS[i] for i in engine.predict(batch[:3]).argmax(axis=1)] == list(COLOUR_LABELS)


def test_int8_graph_runs_and_agrees_with_onnx_runtime(openvino, tmp_path, batch):
    bundle = make_int8_colour_bundle(tmp_path / "int8")
    reference = create_engine(bundle, "cpu").run(batch)

    outputs = openvino_engine.OpenVinoEngine(bundle, threads=1).run(batch)

    assert outputs["logits"].argmax(axis=1).tolist() == reference["logits"].argmax(axis=1).tolist()
    np.testing.assert_allclose(outputs["embedding"], reference["embedding"], atol=1e-5)


@pytest.mark.parametrize("hint", ["latency", "throughput"])
def test_a_photo_gets_the_same_outputs_alone_as_in_a_batch(openvino, colour_bundle, batch, hint):
    engine = openvino_engine.OpenVinoEngine(colour_bundle, threads=2, hint=hint)

    together = engine.run(batch)

    for index in range(len(batch)):
        alone = engine.run(batch[index : index + 1])
        for name in engine.output_names:
            np.testing.assert_allclose(alone[name][0], together[name][index], atol=1e-6)


def test_the_compiled_model_is_cached_under_the_user_cache(openvino, colour_bundle):
    engine = openvino_engine.OpenVinoEngine(colour_bundle, threads=1)

    assert engine.cache_dir == paths.cache_dir() / "openvino"
    assert any(path.is_file() and path.stat().st_size for path in engine.cache_dir.iterdir())
    without = openvino_engine.OpenVinoEngine(colour_bundle, threads=1, cache=False)
    assert without.cache_dir is None


def test_a_model_openvino_cannot_read_is_a_bundle_error(openvino, colour_bundle):
    colour_bundle.model_path.write_bytes(b"not an onnx model")
    with pytest.raises(BundleError, match="OpenVINO cannot compile"):
        openvino_engine.OpenVinoEngine(colour_bundle)


def test_unknown_hint_is_refused(openvino, colour_bundle):
    with pytest.raises(ValueError, match="latency, throughput"):
        openvino_engine.OpenVinoEngine(colour_bundle, hint="fastest")


# --- closing never hangs ---------------------------------------------------------------------------
# The hang was a deadlock: a Python callback given to OpenVINO (`AsyncInferQueue.set_callback`) can
# be released last on OpenVINO's callback thread, after `wait_all` has returned; freeing it takes
# the GIL, while `close` holds the GIL and joins that thread as the compiled model goes. Whether
# the release comes late is a race (about 1 run in 8 of `catbreed engines --check` on 2 busy
# cores), so the first test checks the cause itself: OpenVINO is never handed a Python callable.


@pytest.mark.parametrize("hint", ["latency", "throughput"])
def test_openvino_is_never_handed_a_python_callback(openvino, colour_bundle, batch, monkeypatch, hint):
    handed: list[object] = []
    for kind in (openvino.AsyncInferQueue, openvino.InferRequest):
        monkeypatch.setattr(kind, "set_callback", lambda self, callback: handed.append(callback))

    engine = openvino_engine.OpenVinoEngine(colour_bundle, threads=2, hint=hint)
    with engine:
        assert engine.run(batch)["logits"].shape == (len(batch), colour_bundle.num_labels)

    assert handed == []


CHECK_CPU_THEN_OPENVINO = """
import json, sys
from catbreed_desktop.core.bundle import load_bundle
from catbreed_desktop.core.engines.inventory import list_engines
infos = list_engines(load_bundle(sys.argv[1]), check=("cpu", "openvino"))
print(json.dumps({info.name: info.checked for info in infos}))
"""


def test_checking_onnx_runtime_then_openvino_ends(openvino, colour_bundle):
    # What `catbreed engines --check` does on a CPU machine, in a process of its own under a bound:
    # a hang there cannot be interrupted from Python (the main thread sits in a native join).
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHECK_CPU_THEN_OPENVINO, str(colour_bundle.path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"checking ONNX Runtime CPU, then OpenVINO, did not end in {hung.timeout} s")
    assert done.returncode == 0, done.stderr
    checked = json.loads(done.stdout.splitlines()[-1])
    assert checked["cpu"].startswith("finite outputs") and checked["openvino"].startswith("finite outputs")
