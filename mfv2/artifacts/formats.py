"""The export format table and the file-naming rule of an export directory.

One table drives option validation, the CLI choices and the file names, as Ultralytics'
``export_formats()`` does: a format has a suffix, says whether it needs a GPU and which precisions it
writes. Files are ``<stem>[.<precision>][<tag>]<suffix>``: ``model.onnx``, ``search_decoder.int8.onnx``,
``search_decoder.int8-dynamic.onnx``, ``template_encoder.fp16.xml``, ``model.fp16.engine``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mfv2.errors import ConfigError
from mfv2.registry import Registry

__all__ = [
    "ExportFormat",
    "FORMATS",
    "GRAPH_STEMS",
    "SPLIT_GRAPHS",
    "SIMPLIFIERS",
    "artifact_name",
    "parse_precisions",
]


@dataclass(frozen=True)
class ExportFormat:
    """One artifact format: ``name`` as in the manifest, file ``suffix``, the precisions it can hold.

    ``tag`` follows the precision in file names, for formats that share a suffix with another.
    """

    name: str
    suffix: str
    needs_gpu: bool
    precisions: tuple[str, ...]
    description: str
    tag: str = ""


FORMATS: Registry[ExportFormat] = Registry("export format")
FORMATS.add("onnx", ExportFormat("onnx", ".onnx", False, ("fp32", "fp16", "int8"), "ONNX, fixed shapes"))
# Int8 MatMuls quantized per call (MatMulInteger), run by ONNX Runtime on CPUs; the Q/DQ "onnx" int8
# files stay for TensorRT, which builds int8 engines from Q/DQ only.
FORMATS.add(
    "onnx-dynamic",
    ExportFormat("onnx-dynamic", ".onnx", False, ("int8",), "ONNX, dynamic int8 MatMuls (ONNX Runtime CPU)", "-dynamic"),
)
# The int8 graph TensorRT builds from (symmetric int8 on an fp16 base), see quantize.to_int8_tensorrt.
FORMATS.add(
    "onnx-tensorrt",
    ExportFormat("onnx-tensorrt", ".onnx", False, ("int8",), "ONNX, int8 Q/DQ for TensorRT (fp16 base)", "-trt"),
)
FORMATS.add(
    "openvino", ExportFormat("openvino", ".xml", False, ("fp32", "fp16", "int8"), "OpenVINO IR (.xml + .bin)")
)
FORMATS.add(
    "tensorrt",
    ExportFormat("tensorrt", ".engine", True, ("fp32", "fp16", "bf16", "int8"), "TensorRT plan, byte-pure"),
)

# Graph name (manifest) -> file stem.
GRAPH_STEMS: dict[str, str] = {
    "full": "model",
    "template_encoder": "template_encoder",
    "search_decoder": "search_decoder",
}
SPLIT_GRAPHS: tuple[str, str] = ("template_encoder", "search_decoder")
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
