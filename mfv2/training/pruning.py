"""Model reduction for MixFormerV2 distillation: progressive depth pruning and MLP reduction.

* Progressive model depth pruning: the residual branches of the blocks to eliminate are scaled by
  ``gamma(t) = 0.5 * (1 + cos(pi * t / m))`` for ``t <= m`` and 0 after; a block at gamma 0 is an
  identity, and :func:`remove_blocks` then drops it and renumbers the rest.
* MLP reduction: a student's ``fc1``/``fc2`` initialised by slicing the teacher's,
  ``w' = w[:d1', :d2']``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from mfv2.errors import ConfigError
from mfv2.models.mixformerv2 import MixFormerV2
from mfv2.models.mixformerv2.vit import BranchScale

__all__ = [
    "depth_gamma",
    "set_branch_scale",
    "remove_blocks",
    "remove_blocks_state_dict",
    "slice_mlp",
]


def depth_gamma(t: float, m: float = 40.0) -> float:
    """Residual scale of an eliminated block after ``t`` epochs (fractions allowed) of an ``m``-epoch decay."""
    if m <= 0:
        raise ConfigError(f"the decay length m must be positive, got {m}")
    if t >= m:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * max(t, 0.0) / m))


def _check_indices(model: MixFormerV2, indices: Sequence[int]) -> list[int]:
    depth = len(model.backbone.blocks)
    bad = [i for i in indices if not 0 <= i < depth]
    if bad:
        raise ConfigError(f"block indices {bad} out of range for a {depth}-block model")
    if len(set(indices)) >= depth:
        raise ConfigError("cannot eliminate every block")
    return sorted(set(indices))


def set_branch_scale(model: MixFormerV2, indices: Sequence[int], gamma: float) -> None:
    """Scale both residual branches of the blocks ``indices`` by ``gamma`` (in place)."""
    for i in _check_indices(model, indices):
        block = model.backbone.blocks[i]
        if isinstance(block.branch_scale, BranchScale):
            block.branch_scale.gamma = gamma
        else:
            block.branch_scale = BranchScale(gamma)


def remove_blocks(model: MixFormerV2, indices: Sequence[int]) -> MixFormerV2:
    """A copy of ``model`` without the blocks ``indices``; the survivors keep their order and weights."""
    drop = set(_check_indices(model, indices))
    kept = [copy.deepcopy(b) for i, b in enumerate(model.backbone.blocks) if i not in drop]
    for block in kept:
        block.branch_scale = nn.Identity()
    cfg = model.config.replace(depth=len(kept))
    student = MixFormerV2(cfg)
    student.load_state_dict(remove_blocks_state_dict(model.state_dict(), sorted(drop)))
    return student.train(model.training)


def remove_blocks_state_dict(sd: dict[str, torch.Tensor], indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Drop the keys of blocks ``indices`` and renumber the surviving ``backbone.blocks.N`` consecutively."""
    drop = set(indices)
    blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("backbone.blocks.")})
    renumber = {old: new for new, old in enumerate(b for b in blocks if b not in drop)}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("backbone.blocks."):
            parts = key.split(".")
            old = int(parts[2])
            if old in drop:
                continue
            parts[2] = str(renumber[old])
            key = ".".join(parts)
        out[key] = value
    return out


def slice_mlp(model: MixFormerV2, mlp_ratio: float) -> MixFormerV2:
    """A copy of ``model`` whose MLP hidden width is ``embed_dim * mlp_ratio``, initialised by slicing.

    ``fc1.weight[:h]``, ``fc1.bias[:h]`` and ``fc2.weight[:, :h]`` of every block are kept (the paper's
    ``w' = w[:d1', :d2']``); everything else is copied unchanged.
    """
    cfg = model.config.replace(mlp_ratio=mlp_ratio)
    hidden = cfg.mlp_hidden
    if hidden > model.config.mlp_hidden:
        raise ConfigError(f"MLP reduction cannot grow the hidden width ({model.config.mlp_hidden} -> {hidden})")
    sd = dict(model.state_dict())
    for key in list(sd):
        if ".mlp.fc1." in key:
            sd[key] = sd[key][:hidden].clone()
        elif key.endswith(".mlp.fc2.weight"):
            sd[key] = sd[key][:, :hidden].clone()
    student = MixFormerV2(cfg)
    student.load_state_dict(sd)
    return student.train(model.training)
