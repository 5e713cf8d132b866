"""mfv2.artifacts.formats: the format / precision / graph table and the file-naming rule of an export directory."""

from __future__ import annotations

from typing import get_args

import pytest

from mfv2.artifacts import (
    FORMATS,
    GRAPH_MODES,
    GRAPH_SETS,
    GRAPH_STEMS,
    GRAPHS,
    SPLIT_GRAPHS,
    GraphName,
    GraphSet,
    artifact_name,
    file_precision,
    parse_precisions,
)
from mfv2.errors import ConfigError, UnknownNameError


@pytest.mark.parametrize(
    ("graph", "precision", "format", "name"),
    [
        ("full", "fp32", "onnx", "model.onnx"),
        ("search_decoder", "int8", "onnx", "search_decoder.int8.onnx"),
        ("search_decoder", "int8", "onnx-dynamic", "search_decoder.int8-dynamic.onnx"),
        ("template_encoder", "int8", "onnx-tensorrt", "template_encoder.int8-trt.onnx"),
        ("template_encoder", "fp16", "openvino", "template_encoder.fp16.xml"),
        ("full", "fp16", "tensorrt", "model.fp16.engine"),
        ("full", "bf16", "tensorrt", "model.bf16.engine"),
    ],
)
def test_artifact_names(graph: str, precision: str, format: str, name: str) -> None:
    assert artifact_name(graph, precision, format) == name


def test_artifact_name_refuses_what_the_table_does_not_hold() -> None:
    with pytest.raises(ConfigError, match="unknown graph 'head'; known: full, template_encoder, search_decoder"):
        artifact_name("head")
    with pytest.raises(ConfigError, match="onnx-dynamic does not hold 'fp16'; choose from int8"):
        artifact_name("full", "fp16", "onnx-dynamic")
    with pytest.raises(UnknownNameError):
        artifact_name("full", "fp32", "tflite")


def test_parse_precisions_keeps_order_and_drops_repeats() -> None:
    assert parse_precisions("fp16, FP32,,fp16") == ("fp16", "fp32")
    assert parse_precisions(["int8"], "openvino") == ("int8",)
    assert parse_precisions("bf16", "tensorrt") == ("bf16",)
    with pytest.raises(ConfigError, match="unknown onnx precision 'bf16'; choose from fp32, fp16, int8"):
        parse_precisions("fp32,bf16")


def test_graph_tables_agree() -> None:
    assert tuple(GRAPH_STEMS) == GRAPHS == get_args(GraphName) and set(SPLIT_GRAPHS) < set(GRAPHS)
    assert tuple(GRAPH_SETS) == get_args(GraphSet) and GRAPH_MODES == ("auto", "split", "full")
    assert {g for graphs in GRAPH_SETS.values() for g in graphs} == set(GRAPHS)
    assert FORMATS.names() == ["onnx", "onnx-dynamic", "onnx-tensorrt", "openvino", "tensorrt"]


@pytest.mark.parametrize(("precision", "file"), [("bf16", "fp32"), ("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8")])
def test_bf16_runs_from_the_fp32_file(precision: str, file: str) -> None:
    assert file_precision(precision) == file
