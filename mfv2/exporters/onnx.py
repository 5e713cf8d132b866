"""ONNX graphs of a tracker model (any family): the full forward and the split pair, with their metadata.

Three fixed-shape graphs are traced from one model's ``graphs()``, with the tensors its family's
``graph_io`` names (MixFormerV2 / MVT):

* ``full``: ``template, online_template, search -> boxes, score`` / ``template, search -> score_map,
  size_map, offset_map``;
* ``template_encoder``: ``template[, online_template] -> kv`` (the template keys/values / the stem
  features of the template), run once per template update;
* ``search_decoder``: ``search, kv -> `` the full graph's outputs, run per frame.

MixFormerV2's ``score`` is a probability (the sigmoid is inside the graph); MVT's maps are decoded
by the family's post-processing (:mod:`mfv2.artifacts.families`). The TorchScript exporter
(``dynamo=False``) is used on purpose: in torch 2.13 it traces these graphs in well under a second,
honours the requested opset, lowers SDPA to MatMul/Softmax and leaves a graph onnxsim and onnxslim
accept, whereas the dynamo exporter needs onnxscript, takes ~10x longer, emits opset 18 whatever is
asked and its ``Split(num_outputs)`` nodes then break onnxsim at opset 17.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfv2.artifacts.families import runtime_family, runtime_family_of
# The reading side of the metadata belongs to the contract (runtimes read stand-alone files through it).
from mfv2.artifacts.manifest import METADATA_KEY, manifest_from_onnx, onnx_metadata as read_metadata
from mfv2.config import FamilyConfig
from mfv2.errors import ConfigError, ExportError
from mfv2.fileio import atomic_path

if TYPE_CHECKING:
    import onnx
    import torch

    from mfv2.artifacts import Artifact, Manifest

__all__ = [
    "MIN_OPSET",
    "MAX_OPSET",
    "LAYERNORM_OPSET",
    "HEAD_SCOPES",
    "is_head_node",
    "METADATA_KEY",
    "graph_io",
    "batch_axis",
    "check_opset",
    "export_graph",
    "check_model",
    "op_counts",
    "write_metadata",
    "read_metadata",
    "manifest_from_onnx",
    "artifact_metadata",
]

log = logging.getLogger(__name__)

MIN_OPSET = 14  # scaled_dot_product_attention has no TorchScript-exporter lowering below 14
MAX_OPSET = 20  # the TorchScript exporter's ceiling in torch 2.x
LAYERNORM_OPSET = 17  # first opset with a LayerNormalization op
# Name scopes of the prediction heads in traced graphs (``/net/box_head/...`` in the full graph,
# ``/box_head/...`` in the decoder) and the final sigmoid; fp16 conversion keeps these in fp32, int8
# quantization leaves them alone.
HEAD_SCOPES: tuple[str, ...] = ("/box_head/", "/score_head/")
SIGMOID_NODE = "/Sigmoid"


def is_head_node(name: str) -> bool:
    """Whether an ONNX (or OpenVINO) node name belongs to a prediction head or the final sigmoid."""
    return name == SIGMOID_NODE or any(scope in name for scope in HEAD_SCOPES)


def batch_axis(family_name: str, tensor: str) -> int:
    """The batch axis of a graph tensor: 0, except the template state ``kv`` (the family's axis)."""
    return runtime_family(family_name).kv_batch_axis if tensor == "kv" else 0


def graph_io(cfg: FamilyConfig, batch: int = 1) -> dict[str, tuple[dict[str, list[int]], dict[str, list[int]]]]:
    """Input and output ``name -> shape`` of each graph for ``cfg`` at ``batch`` targets (-1: a dynamic batch)."""
    return runtime_family_of(cfg).graph_io(cfg, batch)


def check_opset(opset: int, allow_low_opset: bool = False) -> None:
    """Refuse opsets the exporter cannot write, and those below 17 unless the user insists.

    Below opset 17 LayerNormalization is decomposed into ReduceMean/Pow/Sqrt, which TensorRT runs in
    fp16 and overflows after attention (NVIDIA/TensorRT#2781); some NPU toolchains need it anyway.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset {opset} is outside what the exporter writes for this model ({MIN_OPSET}..{MAX_OPSET}); use 17")
    if opset < LAYERNORM_OPSET:
        if not allow_low_opset:
            raise ConfigError(
                f"opset {opset} decomposes LayerNormalization, which overflows in TensorRT fp16; use opset >= 17, "
                "or pass --allow-low-opset if your toolchain needs it"
            )
        log.warning(
            "opset %d: LayerNormalization is decomposed into elementary ops; TensorRT fp16 may overflow after "
            "attention (keep such graphs fp32 on TensorRT)",
            opset,
        )


def _wrappers(model: Any) -> dict[str, torch.nn.Module]:
    """Each of ``model.graphs()`` as a module with positional inputs and a tuple of outputs, in graph_io order."""
    from torch import nn

    io = graph_io(model.config)

    class Graph(nn.Module):
        def __init__(self, net: Any, name: str) -> None:
            super().__init__()
            self.net, self.name = net, name
            self.inputs, self.outputs = list(io[name][0]), list(io[name][1])

        def forward(self, *args: torch.Tensor) -> Any:
            out = self.net.graphs()[self.name](**dict(zip(self.inputs, args)))
            return tuple(out[k] for k in self.outputs) if len(self.outputs) > 1 else out[self.outputs[0]]

    return {name: Graph(model, name) for name in io}


def export_graph(
    model: Any, graph: str, path: str | os.PathLike[str], *, batch: int = 1, opset: int = LAYERNORM_OPSET,
    dynamic_batch: bool = False,
) -> Path:
    """Trace ``graph`` of ``model`` to ``path`` with fixed shapes (TorchScript exporter, constant folding).

    With ``dynamic_batch`` the batch axis of every input and output is left dynamic (traced at ``batch``).

    Raises:
        ExportError: if tracing fails.
    """
    import torch

    ins, outs = graph_io(model.config, batch)[graph]
    family = runtime_family_of(model.config).name
    gen = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*shape, generator=gen) for shape in ins.values())
    module = _wrappers(model)[graph].eval()
    path = Path(path)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter warns it is deprecated and the shape checks warn they trace as constants.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(ins),
                output_names=list(outs),
                opset_version=opset,
                do_constant_folding=True,
                dynamic_axes={n: {batch_axis(family, n): "batch"} for n in (*ins, *outs)} if dynamic_batch else None,
                dynamo=False,
            )
    except Exception as e:  # the exporter raises many unrelated types
        # Its messages can carry the whole TorchScript graph; the last line says what went wrong.
        reason = (str(e).strip().splitlines() or [""])[-1]
        raise ExportError(f"tracing the {graph} graph at opset {opset} failed: {type(e).__name__}: {reason}") from e
    return path


def check_model(path: str | os.PathLike[str]) -> None:
    """``onnx.checker`` with full shape inference; a failure is an :class:`ExportError`."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{Path(path).name} fails onnx.checker: {e}") from e


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Node count per ``domain::op`` (default domain without prefix)."""
    return Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node)


def write_metadata(path: str | os.PathLike[str], props: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of an ONNX file (written to a temporary name, then renamed)."""
    import onnx

    p = Path(path)
    model = onnx.load(str(p))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(p) as tmp:
        onnx.save(model, str(tmp))


def artifact_metadata(manifest: Manifest, artifact: Artifact) -> dict[str, str]:
    """The metadata of one file: flat facts for people and tools, and ``mfv2``, the manifest as JSON.

    The JSON lists this artifact alone (without its hash, which depends on the metadata), so a
    single file is self-describing; :func:`manifest_from_onnx` reads it back.
    """
    data = manifest.to_dict()
    entry = dataclasses.asdict(artifact)
    entry["sha256"] = ""
    data["artifacts"] = [entry]
    cfg = manifest.model
    return {
        "description": f"{runtime_family(manifest.family).title}-{cfg.name} {artifact.graph} graph, {artifact.precision}",
        "family": manifest.family,
        "variant": cfg.name,
        "graph": artifact.graph,
        "precision": artifact.precision,
        "batch": "dynamic" if manifest.batch is None else str(manifest.batch),
        "opset": str(manifest.opset),
        "template_size": str(cfg.template_size),
        "search_size": str(cfg.search_size),
        "num_bins": str(getattr(cfg, "num_bins", "")),
        "template_factor": str(manifest.tracker.template_factor),
        "search_factor": str(manifest.tracker.search_factor),
        "mean": json.dumps(list(manifest.mean)),
        "std": json.dumps(list(manifest.std)),
        "input_format": "RGB NCHW float32, (x / 255 - mean) / std",
        "boxes": manifest.boxes,
        "score": manifest.score,
        "inputs": json.dumps(artifact.inputs),
        "outputs": json.dumps(artifact.outputs),
        "parity": json.dumps(artifact.parity),
        "source_sha256": str(manifest.source.get("sha256", "")),
        "mfv2_version": manifest.toolkit.get("mfv2", ""),
        METADATA_KEY: json.dumps(data, sort_keys=True),
    }
