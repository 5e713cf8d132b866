"""Analytic FLOPs of MixFormerV2 per graph, from its :class:`~mfv2.config.ModelConfig` alone.

Counted are the matrix products, 2 FLOPs per multiply-add, as ``torch.utils.flop_counter`` counts
them: the patch-embedding convolution, the qkv/proj/MLP linears of each block, the attention
products ``QK^T`` and ``AV`` under the asymmetric mask (template queries see only template keys,
search and prediction queries see all keys) and the linears of the box and score heads. Biases,
LayerNorm, softmax, GELU and the heads' ``4 x bins`` expectation are left out (well under 1 %).

Graphs: ``full`` is the official forward (templates, search and prediction tokens through every
block). The split pair is ``template_encoder`` (template keys/values of every block, once per
template update) and ``search_decoder`` (per frame: search and prediction tokens against the cached
keys/values; the last block keeps only the four prediction tokens' queries and MLP).

Families without an analytic count (MVT: convolutions, depth-wise included, and MobileViT attention)
are counted from their exported fp32 ONNX graphs by :func:`onnx_flops`: 2 FLOPs per multiply-add of
every Conv, MatMul and Gemm at the graph's inferred shapes, biases left out as above.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from mfv2.artifacts import GRAPH_SETS, GRAPHS, GraphName, GraphSet
from mfv2.config import FamilyConfig, ModelConfig, family_variant_config, variant_config
from mfv2.errors import ConfigError

__all__ = ["FlopCount", "graph_flops", "frame_flops", "count_flops", "onnx_flops", "export_graph_flops",
           "has_analytic_flops"]

_PRED_TOKENS = 4


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward of a graph, by part."""

    patch_embed: int
    qkv: int
    attention: int
    proj: int
    mlp: int
    heads: int

    @property
    def total(self) -> int:
        return self.patch_embed + self.qkv + self.attention + self.proj + self.mlp + self.heads

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def _linear(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def _attention(queries: int, keys: int, dim: int) -> int:
    # QK^T and AV: each queries x keys x head_dim per head, summed over heads = queries x keys x dim.
    return 2 * 2 * queries * keys * dim


def graph_flops(
    config: str | FamilyConfig,
    graph: GraphName,
    *,
    online_templates: int = 1,
    batch: int = 1,
) -> FlopCount:
    """FLOPs of one call of ``graph`` for ``config`` (a variant name or a :class:`ModelConfig`).

    Raises:
        ConfigError: an unknown graph or a non-positive count.
    """
    if graph not in GRAPHS:
        raise ConfigError(f"unknown graph {graph!r}; graphs: {', '.join(GRAPHS)}")
    if online_templates < 1 or batch < 1:
        raise ConfigError(f"online_templates and batch must be >= 1, got {online_templates}, {batch}")
    if not isinstance(config, (str, ModelConfig)):
        raise ConfigError(f"analytic FLOPs are counted for MixFormerV2 only, not {type(config).__name__}")
    cfg = variant_config(config)
    C, H, D = cfg.embed_dim, cfg.mlp_hidden, cfg.depth
    nz = (1 + online_templates) * cfg.num_template_tokens  # template tokens, both templates
    nx = cfg.num_search_tokens + _PRED_TOKENS  # search + prediction tokens
    patch = 3 * cfg.patch_size**2
    heads = _linear(_PRED_TOKENS, C, C) + _linear(_PRED_TOKENS, C, cfg.num_bins)  # box head
    heads += _linear(_PRED_TOKENS, C, C) + _linear(_PRED_TOKENS, C, 1)  # score head

    if graph == "full":
        n = nz + nx
        parts = dict(
            patch_embed=_linear(nz + cfg.num_search_tokens, patch, C),
            qkv=D * _linear(n, C, 3 * C),
            attention=D * (_attention(nz, nz, C) + _attention(nx, n, C)),
            proj=D * _linear(n, C, C),
            mlp=D * 2 * _linear(n, C, H),
            heads=heads,
        )
    elif graph == "template_encoder":
        # Blocks 0..D-2 run the templates through; the last block only needs their keys and values.
        parts = dict(
            patch_embed=_linear(nz, patch, C),
            qkv=(D - 1) * _linear(nz, C, 3 * C) + _linear(nz, C, 2 * C),
            attention=(D - 1) * _attention(nz, nz, C),
            proj=(D - 1) * _linear(nz, C, C),
            mlp=(D - 1) * 2 * _linear(nz, C, H),
            heads=0,
        )
    else:
        keys = nz + nx
        q = _PRED_TOKENS  # the pruned last block: queries, projection and MLP of the prediction tokens only
        parts = dict(
            patch_embed=_linear(cfg.num_search_tokens, patch, C),
            qkv=(D - 1) * _linear(nx, C, 3 * C) + _linear(nx, C, 2 * C) + _linear(q, C, C),
            attention=(D - 1) * _attention(nx, keys, C) + _attention(q, keys, C),
            proj=(D - 1) * _linear(nx, C, C) + _linear(q, C, C),
            mlp=(D - 1) * 2 * _linear(nx, C, H) + 2 * _linear(q, C, H),
            heads=heads,
        )
    return FlopCount(**{k: v * batch for k, v in parts.items()})


def count_flops(config: str | FamilyConfig, graph: GraphName, export_dir: str | os.PathLike[str] | None = None) -> int:
    """FLOPs of one call of ``graph``: analytic where :func:`graph_flops` counts the family, else from
    the fp32 ONNX file of ``export_dir``.

    Raises:
        ConfigError: a family without an analytic count and no export to count.
    """
    if has_analytic_flops(config):
        return graph_flops(config, graph).total
    if export_dir is None:
        raise ConfigError(f"{family_variant_config(config).name}: FLOPs are counted from the ONNX graphs; give an export")
    return export_graph_flops(export_dir, graph)


def frame_flops(
    config: str | FamilyConfig,
    graph: GraphSet,
    *,
    update_interval: int | None = None,
    export_dir: str | os.PathLike[str] | None = None,
) -> int:
    """FLOPs per tracked frame (``export_dir`` as :func:`count_flops`).

    ``full`` runs the whole graph every frame. ``split`` runs the search decoder every frame plus,
    when ``update_interval`` is given, the template encoder amortised over that many frames.
    """
    if graph == "full":
        return count_flops(config, "full", export_dir)
    if graph not in GRAPH_SETS:
        raise ConfigError(f"unknown graph {graph!r}; use one of {', '.join(GRAPH_SETS)}")
    per_frame = count_flops(config, "search_decoder", export_dir)
    if update_interval:
        per_frame += count_flops(config, "template_encoder", export_dir) // update_interval
    return per_frame


def has_analytic_flops(config: str | FamilyConfig) -> bool:
    """Whether :func:`graph_flops` counts ``config`` (MixFormerV2); others are counted from their ONNX graphs."""
    return isinstance(family_variant_config(config), ModelConfig)


@lru_cache(maxsize=32)
def _onnx_flops(path: str, mtime_ns: int) -> int:
    import numpy as np
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes: dict[str, list[int]] = {}
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]  # a dynamic batch counts as 1
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        if node.output[0] not in shapes or any(i not in shapes for i in node.input[:2]):
            raise ConfigError(f"{Path(path).name}: no inferred shape for {node.op_type} {node.name!r}; cannot count its FLOPs")
        out, a, w = shapes[node.output[0]], shapes[node.input[0]], shapes[node.input[1]]
        if node.op_type == "Conv":  # weight (Cout, Cin / groups, kH, kW): each output element sums Cin/groups x kH x kW
            macs = int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "MatMul":  # (..., M, K) @ (..., K, N)
            macs = int(np.prod(out)) * a[-1]
        else:
            trans_a = next((att.i for att in node.attribute if att.name == "transA"), 0)
            macs = int(np.prod(out)) * (a[0] if trans_a else a[1])
        total += 2 * macs
    return total


def onnx_flops(path: str | os.PathLike[str]) -> int:
    """FLOPs of one call of the ONNX graph at ``path``: 2 per multiply-add of its Conv, MatMul and Gemm nodes.

    Raises:
        ConfigError: a node whose input or output shape cannot be inferred.
    """
    path = Path(path)
    return _onnx_flops(str(path), path.stat().st_mtime_ns)


def export_graph_flops(export_dir: str | os.PathLike[str], graph: GraphName) -> int:
    """FLOPs of one call of ``graph`` of an export, counted from its fp32 ONNX file (any family)."""
    from mfv2.artifacts import artifact_name

    if graph not in GRAPHS:
        raise ConfigError(f"unknown graph {graph!r}; graphs: {', '.join(GRAPHS)}")
    return onnx_flops(Path(export_dir) / artifact_name(graph, "fp32", "onnx"))
