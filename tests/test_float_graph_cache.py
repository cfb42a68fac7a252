"""The float-graph cache (`float_graph.cache`): checksummed records, damaged or unwritable caches, versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from float_graph_models import LABELS, SIZE, pixels, quantized, run, tiny_model
from onnx import TensorProto

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import BundleError, ModelBundle, sha256_file
from catbreed_desktop.core.engines.float_graph import cache as fg
from catbreed_desktop.core.engines.float_graph import float_graph_path
from catbreed_desktop.core.photos import Preprocessing


def tiny_bundle(folder: Path, model: onnx.ModelProto) -> ModelBundle:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return ModelBundle(
        path=folder,
        labels=LABELS,
        architecture="tiny",
        preprocessing=Preprocessing(size=SIZE, resize=SIZE),
        model_sha256=sha256_file(folder / "model.onnx"),
    )


@pytest.fixture
def int8_bundle(tmp_path: Path) -> ModelBundle:
    return tiny_bundle(tmp_path / "bundle", quantized(tiny_model(), tmp_path / "quantize"))


def test_graphs_are_cached_in_the_user_cache_with_a_checksum_record(int8_bundle: ModelBundle) -> None:
    first = float_graph_path(int8_bundle, "fp16")
    stamp = first.stat().st_mtime_ns

    again = float_graph_path(int8_bundle, "fp16")

    assert again == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert first.parent == paths.cache_dir() / "float-graphs"
    assert first.name.startswith(int8_bundle.model_sha256[:16]) and "fp16" in first.name
    record = json.loads(first.with_suffix(".json").read_text(encoding="utf-8"))
    assert record["source_sha256"] == int8_bundle.model_sha256
    assert record["graph_sha256"] == sha256_file(first)
    assert not [p for p in first.parent.iterdir() if p.suffix == ".tmp"]
    fp32 = float_graph_path(int8_bundle, "fp32")
    assert fp32 != first and fp32.is_file()
    batch = pixels(2)
    np.testing.assert_allclose(run(first, batch)["logits"], run(fp32, batch)["logits"], rtol=2e-2, atol=2e-2)


def test_a_damaged_cached_graph_or_record_is_rebuilt(int8_bundle: ModelBundle, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    graph = float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    good = graph.read_bytes()

    graph.write_bytes(good[:-10] + b"0123456789")  # same size, other bytes
    assert float_graph_path(int8_bundle, "fp32", cache_dir=cache) == graph
    assert graph.read_bytes() == good

    graph.with_suffix(".json").write_text("{not json", encoding="utf-8")
    float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    assert json.loads(graph.with_suffix(".json").read_text(encoding="utf-8"))["graph_sha256"] == sha256_file(
        graph
    )

    graph.unlink()
    assert float_graph_path(int8_bundle, "fp32", cache_dir=cache).read_bytes() == good


@pytest.fixture
def fresh_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's stand-in folder for an unwritable cache starts unmade, under this test's folder."""
    import tempfile

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(fg, "_fallback", None, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    return temporary


def test_a_nested_or_huge_numbered_record_is_rebuilt_not_raised(
    int8_bundle: ModelBundle, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    graph = float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    record = graph.with_suffix(".json")
    for damage in ("[" * 100_000 + "]" * 100_000, '{"graph_bytes": ' + "9" * 5000 + "}", "\udcff"):
        record.write_bytes(damage.encode("utf-8", "surrogatepass"))
        assert float_graph_path(int8_bundle, "fp32", cache_dir=cache) == graph
        assert json.loads(record.read_text(encoding="utf-8"))["graph_sha256"] == sha256_file(graph)


def test_a_folder_where_the_graph_belongs_gets_the_graph_built_elsewhere(
    int8_bundle: ModelBundle, tmp_path: Path, fresh_fallback: Path
) -> None:
    cache = tmp_path / "cache"
    in_the_way = fg.cache_files(int8_bundle, "fp16", cache)[0]
    (in_the_way / "someone's").mkdir(parents=True)

    graph = float_graph_path(int8_bundle, "fp16", cache_dir=cache)

    assert graph.parent.parent == fresh_fallback and graph.is_file()
    assert (in_the_way / "someone's").is_dir()  # what was in the way is left alone
    record = json.loads(graph.with_suffix(".json").read_text(encoding="utf-8"))
    assert record["source_sha256"] == int8_bundle.model_sha256 and record["graph_sha256"] == sha256_file(
        graph
    )
    stamp = graph.stat().st_mtime_ns
    assert float_graph_path(int8_bundle, "fp16", cache_dir=cache) == graph  # reused within the run
    assert graph.stat().st_mtime_ns == stamp
    graph.write_bytes(b"damaged")  # checked on every load, in the stand-in folder too
    assert float_graph_path(int8_bundle, "fp16", cache_dir=cache) == graph
    assert sha256_file(graph) == record["graph_sha256"]


def test_a_read_only_cache_gets_the_graph_built_elsewhere_or_one_line(
    int8_bundle: ModelBundle, tmp_path: Path, fresh_fallback: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from catbreed_desktop.core.engines import OnnxRuntimeEngine
    from catbreed_desktop.core.errors import CatBreedError

    cache = tmp_path / "cache"
    real_write = fg.atomic_write_bytes

    def read_only_under(folder: Path):  # type: ignore[no-untyped-def]
        def write(path, data):  # type: ignore[no-untyped-def]
            if Path(path).is_relative_to(folder):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            real_write(path, data)

        return write

    monkeypatch.setattr(fg, "atomic_write_bytes", read_only_under(cache))
    graph = float_graph_path(int8_bundle, "fp32", cache_dir=cache)
    assert graph.is_relative_to(fresh_fallback) and graph.is_file()

    monkeypatch.setattr(fg, "_fallback", None, raising=False)
    monkeypatch.setattr(fg, "atomic_write_bytes", read_only_under(Path("/")))
    monkeypatch.setattr(paths, "cache_dir", lambda: cache)
    with pytest.raises(
        CatBreedError, match="cannot store the derived fp16 graph.*Read-only file system"
    ) as refused:
        OnnxRuntimeEngine(int8_bundle, device="cpu", graph="fp16")
    assert isinstance(refused.value, OSError)  # so that engine "auto" passes over a GPU engine that hits it
    assert "\n" not in str(refused.value)


def test_each_bundle_and_derivation_version_gets_its_own_file(
    int8_bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tiny_bundle(tmp_path / "other", quantized(tiny_model(seed=7), tmp_path / "quantize-other"))
    cache = tmp_path / "cache"
    mine = float_graph_path(int8_bundle, "fp16", cache_dir=cache)
    theirs = float_graph_path(other, "fp16", cache_dir=cache)
    assert mine != theirs and mine.read_bytes() != theirs.read_bytes()

    monkeypatch.setattr(fg, "DERIVATION_VERSION", fg.DERIVATION_VERSION + 1)
    newer = float_graph_path(int8_bundle, "fp16", cache_dir=cache)

    assert newer != mine and newer.is_file()
    assert not mine.exists() and theirs.exists()  # the outdated derivation of the same model is gone


def test_a_float_bundle_is_its_own_fp32_graph_and_only_fp16_is_derived(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "float-bundle", tiny_model())
    cache = tmp_path / "cache"
    assert float_graph_path(bundle, "fp32", cache_dir=cache) == bundle.model_path
    half = float_graph_path(bundle, "fp16", cache_dir=cache)
    assert half.parent == cache
    assert {t.data_type for t in onnx.load(str(half)).graph.initializer} >= {TensorProto.FLOAT16}


def test_a_model_changed_since_its_bundle_was_loaded_is_refused(
    int8_bundle: ModelBundle, tmp_path: Path
) -> None:
    onnx.save(tiny_model(seed=5), str(int8_bundle.model_path))
    with pytest.raises(BundleError, match="checksum"):
        float_graph_path(int8_bundle, "fp16", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="precision"):
        float_graph_path(int8_bundle, "int4", cache_dir=tmp_path / "cache")
