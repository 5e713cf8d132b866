"""What a consumer of an export needs to know about its model family, in NumPy only (no torch).

A family (MixFormerV2, MVT) differs at run time in five facts, all recorded here and looked up by the
name the manifest records: its config type (how ``manifest.model`` reads), its pre-processing
(mean/std of ``(x / 255 - mean) / std``), the tensors of its graphs (:attr:`RuntimeFamily.graph_io`),
its post-processing (graph outputs -> box and score in the search crop) and its template policy
(``online``: the tracker swaps in confident crops; ``none``: the first template stays). The runner,
the tracker loop, export, bench and eval read these facts, never the family's name.

It sits in the floor because :class:`~mfv2.runtimes.ModelRunner` (below ``tracking``) post-processes
every backend's outputs and the manifest parses the model config through it; the torch side of a
family (builder, checkpoint detection, traced graphs) lives in :mod:`mfv2.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from mfv2.config import ModelConfig, MVTConfig
from mfv2.errors import ConfigError
from mfv2.registry import Registry

__all__ = [
    "RuntimeFamily",
    "RUNTIME_FAMILIES",
    "GraphIO",
    "TemplatePolicy",
    "runtime_family",
    "runtime_family_of",
    "hann2d",
    "decode_center",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TemplatePolicy = Literal["online", "none"]
#: graph name -> (input name -> shape, output name -> shape)
GraphIO = dict[str, tuple[dict[str, list[int]], dict[str, list[int]]]]
Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RuntimeFamily:
    """The run-time facts of one model family.

    Attributes:
        name: registry name, recorded in manifests (``mixformerv2``, ``mvt``).
        title: how reports and metadata name the family (``MixFormerV2``, ``MVT``).
        config_type: the architecture config class (``from_dict``, ``template_size``, ``search_size``).
        mean, std: per-channel RGB normalisation of ``x / 255``.
        template_inputs: the template tensors of the full graph and the template encoder, in order.
        template_policy: ``online`` (confident crops become online templates) or ``none``.
        kv_batch_axis: the batch axis of ``kv``, the template state the encoder hands the decoder.
        graph_io: ``(config, batch) -> GraphIO``, the tensors of every graph.
        postprocess: ``(outputs, batch) -> (boxes (B, 4) cxcywh in the crop, score (B,) probability)``
            from the outputs of the full graph or the search decoder.
    """

    name: str
    title: str
    config_type: type[Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    template_inputs: tuple[str, ...]
    template_policy: TemplatePolicy
    kv_batch_axis: int
    graph_io: Callable[[Any, int], GraphIO]
    postprocess: Callable[[Outputs, int], tuple[np.ndarray, np.ndarray]]

    def config_from_dict(self, data: dict[str, Any]) -> Any:
        return self.config_type.from_dict(data)


RUNTIME_FAMILIES: Registry[RuntimeFamily] = Registry("model family")


def runtime_family(name: str) -> RuntimeFamily:
    """The family registered as ``name``."""
    return RUNTIME_FAMILIES.get(name)


def runtime_family_of(config: Any) -> RuntimeFamily:
    """The family whose config type ``config`` is."""
    for name in RUNTIME_FAMILIES:
        family = RUNTIME_FAMILIES.get(name)
        if isinstance(config, family.config_type):
            return family
    raise ConfigError(f"{type(config).__name__} is not the config of a model family ({', '.join(RUNTIME_FAMILIES)})")


# MixFormerV2 -------------------------------------------------------------------------------------


def _mixformer_io(cfg: ModelConfig, batch: int) -> GraphIO:
    B, Z, X = batch, cfg.template_size, cfg.search_size
    kv = [cfg.depth, 2, B, cfg.num_heads, 2 * cfg.num_template_tokens, cfg.head_dim]
    images = {"template": [B, 3, Z, Z], "online_template": [B, 3, Z, Z]}
    heads = {"boxes": [B, 4], "score": [B]}
    return {
        "full": ({**images, "search": [B, 3, X, X]}, dict(heads)),
        "template_encoder": (dict(images), {"kv": kv}),
        "search_decoder": ({"search": [B, 3, X, X], "kv": kv}, dict(heads)),
    }


def _mixformer_post(out: Outputs, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The graphs already end in boxes and a probability."""
    return (np.asarray(out["boxes"], dtype=np.float32).reshape(batch, 4),
            np.asarray(out["score"], dtype=np.float32).reshape(batch))  # fmt: skip


RUNTIME_FAMILIES.add("mixformerv2", RuntimeFamily(
    name="mixformerv2", title="MixFormerV2", config_type=ModelConfig, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    template_inputs=("template", "online_template"), template_policy="online", kv_batch_axis=2,
    graph_io=_mixformer_io, postprocess=_mixformer_post,
))  # fmt: skip


# MVT ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def hann2d(size: int) -> np.ndarray:
    """The official centred 2-D Hann window, (size, size) float32: the outer product of
    ``0.5 * (1 - cos(2 pi k / (size + 1)))`` for k = 1..size (never exactly 0 or 1)."""
    k = np.arange(1, size + 1, dtype=np.float64)
    w = 0.5 * (1.0 - np.cos(2.0 * np.pi * k / (size + 1)))
    out = np.outer(w, w).astype(np.float32)
    out.setflags(write=False)
    return out


def decode_center(score_map: np.ndarray, size_map: np.ndarray, offset_map: np.ndarray,
                  window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Box at the first maximum of ``score_map * window``, as the official ``cal_bbox`` decodes it.

    Args:
        score_map: (B, 1, F, F) probabilities; size_map: (B, 2, F, F) w, h as fractions of the crop;
        offset_map: (B, 2, F, F) x, y offsets in cells. window: (F, F) or None.

    Returns:
        ``boxes`` (B, 4) float32 cx, cy, w, h normalised to the crop (``cx = (col + off_x) / F``, no
        half-cell term) and ``score`` (B,) the un-windowed probability at the chosen cell.
    """
    B, _, F, W = score_map.shape
    score = np.asarray(score_map, dtype=np.float32).reshape(B, F * W)
    response = score if window is None else score * window.reshape(1, F * W)
    idx = np.argmax(response, axis=1)  # the first maximum, as torch.max
    rows = np.arange(B)
    size = np.asarray(size_map, dtype=np.float32).reshape(B, 2, F * W)[rows, :, idx]  # (B, 2)
    offset = np.asarray(offset_map, dtype=np.float32).reshape(B, 2, F * W)[rows, :, idx]
    col, row = (idx % W).astype(np.float32), (idx // W).astype(np.float32)
    boxes = np.stack([(col + offset[:, 0]) / W, (row + offset[:, 1]) / F, size[:, 0], size[:, 1]], axis=1)
    return boxes.astype(np.float32), score[rows, idx]


def _mvt_io(cfg: MVTConfig, batch: int) -> GraphIO:
    B, Z, X, F = batch, cfg.template_size, cfg.search_size, cfg.feat_size
    feat = [B, 64, Z // 4, Z // 4]  # the stem features of the template, the decoder's cached state
    maps = {"score_map": [B, 1, F, F], "size_map": [B, 2, F, F], "offset_map": [B, 2, F, F]}
    return {
        "full": ({"template": [B, 3, Z, Z], "search": [B, 3, X, X]}, dict(maps)),
        "template_encoder": ({"template": [B, 3, Z, Z]}, {"kv": feat}),
        "search_decoder": ({"search": [B, 3, X, X], "kv": feat}, dict(maps)),
    }


def _mvt_post(out: Outputs, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Hann window on the score map, argmax, offset/size decode (the map back and clip are the tracker's)."""
    score_map = np.asarray(out["score_map"])
    return decode_center(score_map, out["size_map"], out["offset_map"], hann2d(score_map.shape[-1]))


RUNTIME_FAMILIES.add("mvt", RuntimeFamily(
    name="mvt", title="MVT", config_type=MVTConfig, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    template_inputs=("template",), template_policy="none", kv_batch_axis=0, graph_io=_mvt_io, postprocess=_mvt_post,
))  # fmt: skip
