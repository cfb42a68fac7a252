"""TensorRT logic that runs without a GPU: toolkit detection, engine cache keys, rebuilds, the build recipe.

TensorRT and cuda-python are replaced by small fakes that record what the code asks of them. The
engine builds from the bundle's derived float graph, strongly typed; its key holds the graph's checksum.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import json
import re
import shutil
from types import ModuleType, SimpleNamespace

import numpy as np
import onnx
import pytest
from engine_fakes import make_int8_colour_bundle
from factories import COLOUR_LABELS, COLOURS, make_photo

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import sha256_file
from catbreed_desktop.core.engines import EngineUnavailable, create_engine
from catbreed_desktop.core.engines import tensorrt as tensorrt_engine
from catbreed_desktop.core.engines.float_graph import float_graph_path, has_quantized_ops
from catbreed_desktop.core.engines.tensorrt import (
    EngineCacheError,
    EngineKey,
    TensorRTEngine,
    TensorRTToolkit,
    build_tensorrt_engine,
    engine_bytes,
    engine_paths,
    ensure_engine_file,
    load_toolkit,
    make_engine_key,
    stale_reasons,
)
from catbreed_desktop.core.install_hints import install_extra_command


class CudaError(enum.Enum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100


class FakeCudart(ModuleType):
    """Enough of cuda-python's runtime module to look for a GPU."""

    cudaError_t = CudaError

    def __init__(self, devices: int = 1, gpu_name: bytes = b"NVIDIA Test GPU\x00\x00\x00") -> None:
        super().__init__("cuda.bindings.runtime")
        self.devices = devices
        self.gpu_name = gpu_name
        self.memory: dict[int, bytearray] = {}
        self.streams: set[int] = set()
        self.next_pointer = 0x1000

    def cudaGetDeviceCount(self):
        if not self.devices:
            return CudaError.cudaErrorNoDevice, 0
        return CudaError.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, device: int):
        return CudaError.cudaSuccess, SimpleNamespace(name=self.gpu_name)

    # Device memory is simulated with bytearrays behind integer "pointers".
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h")

    def cudaMalloc(self, nbytes: int):
        pointer, self.next_pointer = self.next_pointer, self.next_pointer + 0x1000
        self.memory[pointer] = bytearray(nbytes)
        return CudaError.cudaSuccess, pointer

    def cudaFree(self, pointer: int):
        del self.memory[pointer]
        return (CudaError.cudaSuccess,)

    def cudaStreamCreate(self):
        self.streams.add(7)
        return CudaError.cudaSuccess, 7

    def cudaStreamDestroy(self, stream):
        self.streams.discard(stream)
        return (CudaError.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        assert stream in self.streams
        return (CudaError.cudaSuccess,)

    def cudaMemcpyAsync(self, destination, source, nbytes, kind, stream):
        assert stream in self.streams
        if kind == "h2d":
            assert nbytes <= len(self.memory[destination]), "copy larger than the device buffer"
            self.memory[destination][:nbytes] = ctypes.string_at(source, nbytes)
        else:
            ctypes.memmove(destination, bytes(self.memory[source][:nbytes]), nbytes)
        return (CudaError.cudaSuccess,)


class FakeTensorRT(ModuleType):
    """Enough of the TensorRT 10 builder API to record how an engine would be built."""

    class Logger:
        WARNING = "warning"

        def __init__(self, level: str) -> None:
            self.level = level

    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(FP16="fp16")
    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
    TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")

    @staticmethod
    def nptype(dtype: str):
        return np.dtype(dtype).type

    def Runtime(self, logger):  # noqa: N802 - mirrors tensorrt.Runtime
        trt = self

        class Runtime:
            def deserialize_cuda_engine(self, data: bytes):
                if not data.startswith(b"serialized engine"):
                    return None
                return FakeCudaEngine(trt.onnx_model, trt.cudart, trt.shapes["pixel_values"][2][0])

        return Runtime()

    def __init__(
        self, version: str = "10.3.0", parse_errors: tuple[str, ...] = (), build_fails: bool = False
    ):
        super().__init__("tensorrt")
        self.__version__ = version
        self.parse_errors = parse_errors
        self.build_fails = build_fails
        self.parsed: list[str] = []
        self.flags: list[str] = []
        self.network_flags: list[int] = []
        self.shapes: dict[str, tuple] = {}
        self.builds = 0
        self.onnx_model = ""
        self.cudart: FakeCudart | None = None

    def Builder(self, logger):  # noqa: N802 - mirrors tensorrt.Builder
        trt = self

        class Profile:
            def set_shape(self, name, smallest, optimal, largest):
                trt.shapes[name] = (smallest, optimal, largest)

        class Config:
            def set_memory_pool_limit(self, pool, size):
                assert pool == "workspace" and size > 0

            def set_flag(self, flag):
                trt.flags.append(flag)

            def add_optimization_profile(self, profile):
                assert isinstance(profile, Profile)

        class Builder:
            def create_network(self, flags):
                trt.network_flags.append(flags)
                return SimpleNamespace(flags=flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                trt.builds += 1
                return None if trt.build_fails else b"serialized engine %d" % trt.builds

        return Builder()

    def OnnxParser(self, network, logger):  # noqa: N802 - mirrors tensorrt.OnnxParser
        trt = self

        class Parser:
            num_errors = len(trt.parse_errors)

            def parse_from_file(self, path):
                trt.parsed.append(path)
                trt.onnx_model = path
                return not trt.parse_errors

            def get_error(self, index):
                return trt.parse_errors[index]

        return Parser()


class FakeCudaEngine:
    """A "built engine" that runs the ONNX model with ONNX Runtime on the fake device memory."""

    def __init__(self, onnx_model: str, cudart: FakeCudart, max_batch: int) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
        self.cudart = cudart
        self.max_batch = max_batch
        # Embedding listed before logits: the engine must still put logits first.
        self.names = ["pixel_values", *reversed([o.name for o in self.session.get_outputs()])]
        self.num_io_tensors = len(self.names)
        self.shapes_run: list[tuple] = []

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == "pixel_values" else "output"

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_shape(self, name: str) -> tuple:
        if name == "pixel_values":
            return (-1, *self.session.get_inputs()[0].shape[1:])
        return (-1, 3)

    def create_execution_context(self):
        engine = self

        class Context:
            def __init__(self) -> None:
                self.addresses: dict[str, int] = {}
                self.input_shape: tuple = ()

            def set_tensor_address(self, name, pointer):
                self.addresses[name] = pointer

            def set_input_shape(self, name, shape):
                self.input_shape = tuple(shape)
                return 1 <= shape[0] <= engine.max_batch

            def get_tensor_shape(self, name):
                return (self.input_shape[0], 3)

            def execute_async_v3(self, stream):
                memory = engine.cudart.memory
                count = int(np.prod(self.input_shape))
                batch = np.frombuffer(memory[self.addresses["pixel_values"]], np.float32, count)
                engine.shapes_run.append(self.input_shape)
                outputs = engine.session.run(None, {"pixel_values": batch.reshape(self.input_shape)})
                for output, value in zip(engine.session.get_outputs(), outputs, strict=True):
                    data = np.ascontiguousarray(value, np.float32).tobytes()
                    memory[self.addresses[output.name]][: len(data)] = data
                return True

        return Context()


def importer(**modules: ModuleType):
    """An import function that knows only `modules` (dots written as underscores in the keywords)."""
    known = {name.replace("__", "."): module for name, module in modules.items()}

    def import_module(name: str) -> ModuleType:
        if name not in known:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return known[name]

    return import_module


def fake_toolkit(**trt_options) -> TensorRTToolkit:
    trt, cudart = FakeTensorRT(**trt_options), FakeCudart()
    trt.cudart = cudart
    return TensorRTToolkit(trt=trt, cudart=cudart, gpu_name="NVIDIA Test GPU")


KEY = EngineKey(
    gpu_name="NVIDIA Test GPU",
    tensorrt_version="10.3.0",
    model_sha256="ab" * 32,
    graph_sha256="ef" * 32,
    fp16=False,
    opt_batch=8,
    max_batch=32,
)


# --- finding TensorRT, cuda-python and a GPU ---------------------------------------------------------


def test_missing_tensorrt_says_what_to_install():
    with pytest.raises(
        EngineUnavailable, match="TensorRT is not installed.*" + re.escape(install_extra_command("tensorrt"))
    ):
        load_toolkit(importer())


def test_tensorrt_older_than_10_is_refused():
    with pytest.raises(EngineUnavailable, match="TensorRT 8.6.1 is too old; CatBreed needs TensorRT 10"):
        load_toolkit(importer(tensorrt=FakeTensorRT("8.6.1")))


def test_missing_cuda_python_is_named():
    with pytest.raises(EngineUnavailable, match="cuda-python is not installed"):
        load_toolkit(importer(tensorrt=FakeTensorRT()))


def test_machine_without_gpu_is_reported():
    modules = importer(tensorrt=FakeTensorRT(), cuda__bindings__runtime=FakeCudart(devices=0))
    with pytest.raises(EngineUnavailable, match="no CUDA GPU answered.*cudaErrorNoDevice"):
        load_toolkit(modules)


def test_toolkit_reads_gpu_name_and_version():
    toolkit = load_toolkit(importer(tensorrt=FakeTensorRT("10.7.0"), cuda__bindings__runtime=FakeCudart()))
    assert toolkit.gpu_name == "NVIDIA Test GPU"
    assert toolkit.version == "10.7.0"


def test_older_cuda_python_module_name_is_accepted():
    toolkit = load_toolkit(
        importer(tensorrt=FakeTensorRT(), cuda__cudart=FakeCudart(gpu_name=b"Old Layout GPU"))
    )
    assert toolkit.gpu_name == "Old Layout GPU"


# --- the engine cache --------------------------------------------------------------------------------


def test_key_comes_from_gpu_tensorrt_model_graph_and_precision(colour_bundle):
    graph = colour_bundle.model_path
    key = make_engine_key(fake_toolkit(), colour_bundle, fp16=True, batch_size=4, max_batch=32, graph=graph)
    assert key == EngineKey(
        "NVIDIA Test GPU", "10.3.0", colour_bundle.model_sha256, sha256_file(graph), True, 4, 32
    )
    # A batch larger than the requested maximum widens the profile instead of failing later.
    wide = make_engine_key(fake_toolkit(), colour_bundle, False, batch_size=64, max_batch=32, graph=graph)
    assert wide.max_batch == 64


def test_key_changes_when_the_float_graph_changes(colour_bundle, tmp_path):
    """A new derivation of the same model (another float_graph version, say) is another engine."""
    graph = tmp_path / "graph.onnx"
    shutil.copyfile(colour_bundle.model_path, graph)
    before = make_engine_key(fake_toolkit(), colour_bundle, True, 8, 32, graph=graph)
    model = onnx.load(str(graph))
    onnx.helper.set_model_props(model, {"catbreed.float_graph": "fp16 v2"})
    onnx.save(model, str(graph))

    after = make_engine_key(fake_toolkit(), colour_bundle, True, 8, 32, graph=graph)

    assert after.graph_sha256 != before.graph_sha256 and after.model_sha256 == before.model_sha256
    ensure_engine_file(before, lambda: b"old", folder=tmp_path)
    assert [r for r in stale_reasons(after, tmp_path) if r.startswith("float graph changed")]


def test_engine_is_built_once_then_reused(tmp_path):
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"engine"

    first = ensure_engine_file(KEY, build, folder=tmp_path)
    second = ensure_engine_file(KEY, build, folder=tmp_path)

    assert first == second and first.read_bytes() == b"engine"
    assert len(builds) == 1
    assert json.loads(engine_paths(KEY, tmp_path)[1].read_text()) == KEY.to_json()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"gpu_name": "NVIDIA Other GPU"}, "GPU changed"),
        ({"tensorrt_version": "10.4.0"}, "TensorRT version changed ('10.3.0' -> '10.4.0')"),
        ({"graph_sha256": "12" * 32}, "float graph changed"),
        ({"opt_batch": 16}, "batch size changed"),
        ({"max_batch": 64}, "largest batch changed"),
    ],
)
def test_any_change_of_key_rebuilds_in_place(tmp_path, change, reason):
    ensure_engine_file(KEY, lambda: b"old", folder=tmp_path)
    changed = dataclasses.replace(KEY, **change)

    assert any(reason in r for r in stale_reasons(changed, tmp_path))
    path = ensure_engine_file(changed, lambda: b"new", folder=tmp_path)

    assert path == engine_paths(KEY, tmp_path)[0]
    assert path.read_bytes() == b"new"
    assert stale_reasons(changed, tmp_path) == []


def test_model_and_precision_get_their_own_files(tmp_path):
    other_model = dataclasses.replace(KEY, model_sha256="cd" * 32)
    half = dataclasses.replace(KEY, fp16=True)
    files = {ensure_engine_file(key, lambda: b"e", folder=tmp_path) for key in (KEY, other_model, half)}
    assert len(files) == 3
    assert {f.name for f in files} == {
        "abababababababab-fp32.engine",
        "cdcdcdcdcdcdcdcd-fp32.engine",
        "abababababababab-fp16.engine",
    }


def test_interrupted_build_without_key_file_is_rebuilt(tmp_path):
    engine_file, _ = engine_paths(KEY, tmp_path)
    engine_file.write_bytes(b"half written")

    assert stale_reasons(KEY, tmp_path) == ["the cached engine's key file is missing or unreadable"]
    assert ensure_engine_file(KEY, lambda: b"whole", folder=tmp_path).read_bytes() == b"whole"


def test_damaged_key_file_and_force_rebuild(tmp_path):
    ensure_engine_file(KEY, lambda: b"one", folder=tmp_path)
    engine_paths(KEY, tmp_path)[1].write_text("{not json")
    assert stale_reasons(KEY, tmp_path) == ["the cached engine's key file is missing or unreadable"]

    ensure_engine_file(KEY, lambda: b"two", folder=tmp_path)
    assert ensure_engine_file(KEY, lambda: b"three", folder=tmp_path, force=True).read_bytes() == b"three"


def test_empty_build_result_is_an_error_and_caches_nothing(tmp_path):
    with pytest.raises(EngineUnavailable, match="empty engine"):
        ensure_engine_file(KEY, lambda: b"", folder=tmp_path)
    assert stale_reasons(KEY, tmp_path) == ["no cached engine"]


def test_an_unwritable_cache_still_gives_the_engine_with_a_warning(tmp_path, caplog):
    blocked = tmp_path / "tensorrt"
    blocked.write_text("a file where the cache folder should be")

    with caplog.at_level("WARNING", logger=tensorrt_engine.__name__):
        serialized = engine_bytes(KEY, lambda: b"engine", folder=blocked)

    assert serialized == b"engine"
    assert "cannot write the TensorRT engine cache" in caplog.text
    assert blocked.read_text() == "a file where the cache folder should be"


def test_filling_an_unwritable_cache_is_one_line_error(tmp_path):
    blocked = tmp_path / "tensorrt"
    blocked.write_text("x")

    with pytest.raises(
        EngineCacheError, match=r"^cannot store the TensorRT engine in .*tensorrt: "
    ) as caught:
        ensure_engine_file(KEY, lambda: b"engine", folder=blocked)
    assert "\n" not in str(caught.value)


def test_engine_starts_when_the_whole_cache_is_unwritable(colour_bundle, nine_photo_batch):
    (paths.cache_dir() / "tensorrt").parent.mkdir(parents=True, exist_ok=True)
    (paths.cache_dir() / "tensorrt").write_text("x")
    toolkit = fake_toolkit()

    first = TensorRTEngine(colour_bundle, batch_size=8, toolkit=toolkit)
    second = TensorRTEngine(colour_bundle, batch_size=8, toolkit=toolkit)

    assert toolkit.trt.builds == 2  # nothing cached, nothing lost
    assert second.predict(nine_photo_batch).argmax(axis=1).tolist() == [0, 1, 2] * 3
    first.close()
    second.close()


# --- the build recipe --------------------------------------------------------------------------------


def test_build_uses_dynamic_batch_profile_and_user_cache(colour_bundle):
    toolkit = fake_toolkit()

    path = build_tensorrt_engine(colour_bundle, fp16=False, batch_size=8, toolkit=toolkit)

    assert path.parent == paths.cache_dir() / "tensorrt"
    assert path.read_bytes() == b"serialized engine 1"
    # The colour bundle is a float model: it is its own fp32 graph.
    assert toolkit.trt.parsed == [str(colour_bundle.model_path)]
    assert toolkit.trt.shapes["pixel_values"] == ((1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))
    assert toolkit.trt.flags == []
    assert toolkit.trt.network_flags == [1 << FakeTensorRT.NetworkDefinitionCreationFlag.STRONGLY_TYPED]
    # Same bundle, same settings: the cached engine is reused.
    build_tensorrt_engine(colour_bundle, fp16=False, batch_size=8, toolkit=toolkit)
    assert toolkit.trt.builds == 1


def test_fp16_build_parses_the_fp16_graph_strongly_typed_and_keeps_fp32_engine(colour_bundle):
    toolkit = fake_toolkit()
    fp32 = build_tensorrt_engine(colour_bundle, fp16=False, toolkit=toolkit)
    fp16 = build_tensorrt_engine(colour_bundle, fp16=True, toolkit=toolkit)

    # Precision comes from the graph's types; the FP16 builder flag is not allowed with strong typing.
    assert toolkit.trt.parsed[1] == str(float_graph_path(colour_bundle, "fp16"))
    assert toolkit.trt.flags == []
    assert set(toolkit.trt.network_flags) == {1 << FakeTensorRT.NetworkDefinitionCreationFlag.STRONGLY_TYPED}
    assert fp32 != fp16 and fp32.is_file() and fp16.is_file()


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_an_int8_bundle_is_built_from_its_derived_float_graph(tmp_path, fp16):
    bundle = make_int8_colour_bundle(tmp_path / "int8-bundle")
    toolkit = fake_toolkit()

    path = build_tensorrt_engine(bundle, fp16=fp16, toolkit=toolkit)

    graph = float_graph_path(bundle, "fp16" if fp16 else "fp32")
    assert toolkit.trt.parsed == [str(graph)]
    assert has_quantized_ops(onnx.load(str(bundle.model_path)))
    assert not has_quantized_ops(onnx.load(str(graph)))
    recorded = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert recorded["graph_sha256"] == sha256_file(graph)


def test_a_new_float_graph_rebuilds_the_cached_engine(colour_bundle, monkeypatch, tmp_path):
    toolkit = fake_toolkit()
    first = build_tensorrt_engine(colour_bundle, toolkit=toolkit)
    other = tmp_path / "rederived.onnx"
    model = onnx.load(str(colour_bundle.model_path))
    onnx.helper.set_model_props(model, {"catbreed.float_graph": "fp32 v2"})
    onnx.save(model, str(other))
    monkeypatch.setattr(tensorrt_engine, "tensorrt_graph", lambda bundle, fp16: other)

    second = build_tensorrt_engine(colour_bundle, toolkit=toolkit)

    assert second == first and toolkit.trt.builds == 2  # rebuilt in place
    assert toolkit.trt.parsed[-1] == str(other)


def test_unparsable_model_reports_parser_errors(colour_bundle):
    toolkit = fake_toolkit(parse_errors=("unsupported operator Foo",))
    with pytest.raises(EngineUnavailable, match="TensorRT cannot parse .*unsupported operator Foo"):
        build_tensorrt_engine(colour_bundle, toolkit=toolkit)


def test_failed_build_is_reported(colour_bundle):
    with pytest.raises(EngineUnavailable, match="could not build an engine"):
        build_tensorrt_engine(colour_bundle, toolkit=fake_toolkit(build_fails=True))


# --- running an engine (on simulated device memory) ---------------------------------------------------


@pytest.fixture
def nine_photo_batch(tmp_path, colour_bundle):
    from catbreed_desktop.core.photos import load_and_preprocess, stack_batch

    photos = [make_photo(tmp_path / f"{i}.png", COLOURS[COLOUR_LABELS[i % 3]], seed=i) for i in range(9)]
    return stack_batch([load_and_preprocess(p, colour_bundle.preprocessing) for p in photos])


def test_engine_runs_batches_larger_than_its_profile_in_chunks(colour_bundle, nine_photo_batch):
    toolkit = fake_toolkit()
    engine = TensorRTEngine(colour_bundle, batch_size=2, max_batch=4, toolkit=toolkit)

    outputs = engine.run(nine_photo_batch)
    probabilities = engine.predict(nine_photo_batch)

    reference = create_engine(colour_bundle, "cpu")
    np.testing.assert_allclose(outputs["logits"], reference.run(nine_photo_batch)["logits"], atol=1e-5)
    np.testing.assert_allclose(probabilities, reference.predict(nine_photo_batch), atol=1e-5)
    assert engine.provider == "TensorRT"
    assert (engine.graph_path, engine.graph_precision) == (colour_bundle.model_path, "fp32")
    assert engine.output_names == ("logits", "embedding")
    assert [shape[0] for shape in engine._engine.shapes_run[:3]] == [4, 4, 1]

    engine.close()
    assert toolkit.cudart.memory == {} and toolkit.cudart.streams == set()


def test_damaged_cached_engine_is_rebuilt(colour_bundle, nine_photo_batch):
    toolkit = fake_toolkit()
    path = build_tensorrt_engine(colour_bundle, batch_size=8, toolkit=toolkit)
    path.write_bytes(b"garbage from another TensorRT")

    engine = TensorRTEngine(colour_bundle, batch_size=8, toolkit=toolkit)

    assert toolkit.trt.builds == 2
    assert engine.predict(nine_photo_batch).argmax(axis=1).tolist() == [0, 1, 2] * 3


def test_auto_prefers_tensorrt_when_it_starts(colour_bundle, monkeypatch):
    toolkit = fake_toolkit(version="10.8.0")
    monkeypatch.setattr(tensorrt_engine, "load_toolkit", lambda: toolkit)

    engine = create_engine(colour_bundle, "auto", fp16=True)

    assert engine.provider == "TensorRT FP16"
    assert engine.fallback_notes == []
    assert (engine.graph_path, engine.graph_precision) == (float_graph_path(colour_bundle, "fp16"), "fp16")
    assert toolkit.trt.parsed == [str(engine.graph_path)] and toolkit.trt.flags == []
