"""The export format table and the file-naming rule of an export directory.

One table drives option validation, the CLI choices and the file names, as Ultralytics'
``export_formats()`` does: a format has a suffix and the precisions it writes. The graph names and
graph modes are spelled here once too. Files are ``<stem>[.<precision>][<tag>]<suffix>``: ``model.onnx``, ``search_decoder.int8.onnx``,
``search_decoder.int8-dynamic.onnx``, ``template_encoder.fp16.xml``, ``model.fp16.engine``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from mfv2.errors import ConfigError
from mfv2.registry import Registry

__all__ = [
    "ExportFormat",
    "FORMATS",
    "GRAPH_MODES",
    "GRAPH_SETS",
    "GRAPH_STEMS",
    "GRAPHS",
    "GraphMode",
    "GraphName",
    "GraphSet",
    "PRECISIONS",
    "SPLIT_GRAPHS",
    "SIMPLIFIERS",
    "artifact_name",
    "file_precision",
    "parse_precisions",
]


@dataclass(frozen=True)
class ExportFormat:
    """One artifact format: ``name`` as in the manifest, file ``suffix``, the precisions it can hold.

    ``tag`` follows the precision in file names, for formats that share a suffix with another.
    """

    name: str
    suffix: str
    precisions: tuple[str, ...]
    description: str
    tag: str = ""


FORMATS: Registry[ExportFormat] = Registry("export format")
FORMATS.add("onnx", ExportFormat("onnx", ".onnx", ("fp32", "fp16", "int8"), "ONNX, fixed shapes"))
# Int8 MatMuls quantized per call (MatMulInteger), run by ONNX Runtime on CPUs; the Q/DQ "onnx" int8
# files stay for TensorRT, which builds int8 engines from Q/DQ only.
FORMATS.add(
    "onnx-dynamic",
    ExportFormat("onnx-dynamic", ".onnx", ("int8",), "ONNX, dynamic int8 MatMuls (ONNX Runtime CPU)", "-dynamic"),
)
# The int8 graph TensorRT builds from (symmetric int8 on an fp16 base), see quantize.to_int8_tensorrt.
FORMATS.add(
    "onnx-tensorrt",
    ExportFormat("onnx-tensorrt", ".onnx", ("int8",), "ONNX, int8 Q/DQ for TensorRT (fp16 base)", "-trt"),
)
FORMATS.add(
    "openvino", ExportFormat("openvino", ".xml", ("fp32", "fp16", "int8"), "OpenVINO IR (.xml + .bin)")
)
FORMATS.add(
    "tensorrt",
    ExportFormat("tensorrt", ".engine", ("fp32", "fp16", "bf16", "int8"), "TensorRT plan, byte-pure"),
)

#: Every precision some format holds, in table order (fp32, fp16, int8, bf16): the CLI's choices.
PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(p for name in FORMATS for p in FORMATS.get(name).precisions))

#: A graph of an export (the ``graph`` of a manifest entry).
GraphName = Literal["full", "template_encoder", "search_decoder"]
#: Graph name -> file stem.
GRAPH_STEMS: dict[str, str] = {
    "full": "model",
    "template_encoder": "template_encoder",
    "search_decoder": "search_decoder",
}
GRAPHS: tuple[str, ...] = tuple(GRAPH_STEMS)
SPLIT_GRAPHS: tuple[str, str] = ("template_encoder", "search_decoder")
#: The graphs one run uses: the split pair (template encoder once per template, search decoder per
#: frame) or the full graph.
GraphSet = Literal["split", "full"]
GRAPH_SETS: dict[str, tuple[str, ...]] = {"split": SPLIT_GRAPHS, "full": ("full",)}
#: What a runner is asked for: a graph set, or ``auto`` (split when exported).
GraphMode = Literal["auto", GraphSet]
GRAPH_MODES: tuple[str, ...] = get_args(GraphMode)
SIMPLIFIERS: tuple[str, ...] = ("onnxsim", "onnxslim", "none")


def artifact_name(graph: str, precision: str = "fp32", format: str = "onnx") -> str:
    """File name of ``graph`` at ``precision`` in ``format``: fp32 carries no precision tag."""
    if graph not in GRAPH_STEMS:
        raise ConfigError(f"unknown graph {graph!r}; known: {', '.join(GRAPH_STEMS)}")
    fmt = FORMATS.get(format)
    if precision not in fmt.precisions:
        raise ConfigError(f"{fmt.name} does not hold {precision!r}; choose from {', '.join(fmt.precisions)}")
    tag = "" if precision == "fp32" else f".{precision}"
    return f"{GRAPH_STEMS[graph]}{tag}{fmt.tag}{fmt.suffix}"


def file_precision(precision: str) -> str:
    """The precision of the file a run at ``precision`` reads: bf16 runs from the fp32 file (OpenVINO
    and TensorRT cast at load or build time), every other precision from its own."""
    return "fp32" if precision == "bf16" else precision


def parse_precisions(values: str | Iterable[str], format: str = "onnx") -> tuple[str, ...]:
    """Validate a precision list (``"fp32,fp16"`` or an iterable), keeping order and dropping repeats.

    Raises:
        ConfigError: for a precision ``format`` cannot hold, naming the valid ones.
    """
    items = values.split(",") if isinstance(values, str) else list(values)
    allowed = FORMATS.get(format).precisions
    out: list[str] = []
    for raw in items:
        p = raw.strip().lower()
        if not p:
            continue
        if p not in allowed:
            raise ConfigError(f"unknown {format} precision {raw!r}; choose from {', '.join(allowed)}")
        if p not in out:
            out.append(p)
    return tuple(out)
