"""`python -m trainer triton-repo`: its config.pbtxt is one Triton's own parser reads, and fits the model.

The config is parsed with Triton's ModelConfig protobuf (shipped in tritonclient), so a misspelt
field or enum fails here as it would in tritonserver; its names, dtypes and shapes are checked
against the ONNX graph, and its parameters with the same check `--engine triton` makes.
"""

from __future__ import annotations

import json

import onnx
import pytest

from catbreed_desktop.core.bundle import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME, load_bundle
from catbreed_desktop.core.engines.triton.client import model_mismatches
from catbreed_desktop.core.paths import default_model_dir
from trainer.triton import write_triton_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")
json_format = pytest.importorskip("google.protobuf.json_format")


def onnx_dims(value: onnx.ValueInfoProto) -> list[int]:
    """The graph's dims after the batch dimension (Triton's `dims` leave it out when batching)."""
    return [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]


@pytest.mark.parametrize("which", ["shipped", "colour"])
def test_config_parses_as_triton_model_config_and_matches_the_graph(which, colour_bundle, tmp_path) -> None:
    bundle = load_bundle(default_model_dir()) if which == "shipped" else colour_bundle
    model_dir = write_triton_repository(bundle.path, tmp_path / "repo", name="cats", max_batch_size=16)
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
    )

    assert config.name == "cats" and config.backend == "onnxruntime"
    assert config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    graph = onnx.load(str(model_dir / "1" / "model.onnx"), load_external_data=False).graph
    fp32 = model_config_pb2.DataType.Value("TYPE_FP32")
    (graph_input,) = [i for i in graph.input if i.name == INPUT_NAME]
    (config_input,) = config.input
    assert (config_input.name, config_input.data_type, list(config_input.dims)) == (
        INPUT_NAME, fp32, onnx_dims(graph_input)
    )  # fmt: skip
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    graph_outputs = {o.name: o for o in graph.output}
    wanted = [LOGITS_NAME] + ([EMBEDDING_NAME] if bundle.ood is not None else [])
    assert [o.name for o in config.output] == wanted
    for output in config.output:
        assert output.data_type == fp32
        assert list(output.dims) == onnx_dims(graph_outputs[output.name])
    labels = (model_dir / config.output[0].label_filename).read_text(encoding="utf-8").splitlines()
    assert labels == list(bundle.labels)
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    assert model_mismatches(as_json, bundle) == []


def test_labels_with_quotes_and_non_ascii_survive_the_config(tmp_path) -> None:
    from factories import TINY_SPEC, make_colour_model

    from catbreed_desktop.core.bundle import write_bundle

    odd = ('Cat "Red"', "Chat bleu é", "back\\slash")
    bundle = write_bundle(
        tmp_path / "odd",
        make_colour_model(tmp_path / "m.onnx"),
        labels=odd,
        architecture="t",
        preprocessing=TINY_SPEC,
    )
    model_dir = write_triton_repository(bundle.path, tmp_path / "repo")
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
    )
    assert json.loads(config.parameters["catbreed_labels"].string_value) == list(odd)
    other = load_bundle(default_model_dir())
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    assert any("labels" in problem for problem in model_mismatches(as_json, other))
