"""``depth_prune``: MixFormerV2 stage 2, progressive model depth pruning, and its layer rule.

``distill`` plus the residual branches of the blocks to eliminate scaled by
``gamma(t) = 0.5 * (1 + cos(pi * t / m))``, ``t`` the 1-based epoch, 0 from epoch ``m`` on; those
blocks are frozen (they are still computed). The route removes them after the stage and renumbers
the rest (:func:`mfv2.training.pruning.remove_blocks`). Difference from the official code, on
purpose: ``gamma`` of epoch ``e`` is ``gamma(e)`` (the official trainer evaluates ``gamma(e + 1)``
with ``m = 40`` hard-coded).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mfv2.errors import ConfigError
from mfv2.training.objectives.base import OBJECTIVES, Batch, unwrap
from mfv2.training.objectives.distill import DistillObjective, DistillOptions
from mfv2.training.pruning import depth_gamma, set_branch_scale

__all__ = ["PrunePlan", "prune_plan", "DepthPruneOptions", "DepthPruneObjective"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrunePlan:
    """Which blocks a depth-pruning stage eliminates and which layers mimic which.

    Attributes:
        remove: indices of the blocks to eliminate, in the teacher's (and the decaying student's) numbering.
        pairs_during: ``(student, teacher)`` feature pairs while the student still has every block.
        pairs_after: the same pairs after :func:`~mfv2.training.pruning.remove_blocks` renumbered the student.
    """

    remove: tuple[int, ...]
    pairs_during: tuple[tuple[int, int], ...]
    pairs_after: tuple[tuple[int, int], ...]


def prune_plan(depth: int, target_depth: int) -> PrunePlan:
    """The elimination rule of the paper's 12 -> 8 stage, generalised.

    The ``depth`` blocks are split into ``depth - target_depth`` consecutive groups of equal size; the
    first block of each group is eliminated and the last block of each group is where the student's
    features are matched to the teacher's. 12 -> 8 gives groups of 3: eliminate 0, 3, 6, 9, match
    2, 5, 8, 11 (after renumbering 1, 3, 5, 7 <-> 2, 5, 8, 11), the official configs. 8 -> 4 gives
    groups of 2: eliminate 0, 2, 4, 6, match 1, 3, 5, 7 (after renumbering 0, 1, 2, 3 <-> 1, 3, 5, 7).

    Raises:
        ConfigError: ``target_depth`` is not in ``[1, depth)`` or ``depth - target_depth`` does not divide ``depth``.
    """
    removed = depth - target_depth
    if not 0 < target_depth < depth or depth % removed:
        raise ConfigError(
            f"cannot prune {depth} -> {target_depth} blocks by the group rule: {depth - target_depth} eliminated "
            f"blocks must divide {depth}; list remove_blocks and feat_pairs explicitly instead"
        )
    group = depth // removed
    remove = tuple(range(0, depth, group))
    matched = tuple(g + group - 1 for g in remove)
    survivors = [i for i in range(depth) if i not in remove]
    return PrunePlan(
        remove=remove,
        pairs_during=tuple((m, m) for m in matched),
        pairs_after=tuple((survivors.index(m), m) for m in matched),
    )


@dataclass(frozen=True)
class DepthPruneOptions(DistillOptions):
    """``distill`` options plus the blocks to eliminate and the decay length ``decay_epochs`` (``m``)."""

    remove_blocks: tuple[int, ...] = ()
    decay_epochs: float = 40.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.remove_blocks:
            raise ConfigError("objective.options.remove_blocks is empty; list the blocks to eliminate, e.g. [0, 3, 6, 9]")
        if self.decay_epochs <= 0:
            raise ConfigError(f"objective.options.decay_epochs must be > 0, got {self.decay_epochs}")


@OBJECTIVES.register("depth_prune")
class DepthPruneObjective(DistillObjective):
    """Stage 2: ``distill`` while the eliminated blocks' residual branches decay to zero."""

    Options = DepthPruneOptions

    def __init__(self, options: Mapping[str, Any] | None = None, *, device: torch.device | str = "cpu") -> None:
        super().__init__(options, device=device)
        self.gamma = 1.0

    def prepare(self, model: nn.Module) -> None:
        super().prepare(model)
        student = unwrap(model)
        depth = len(student.backbone.blocks)
        remove = self.options.remove_blocks
        bad = [i for i in remove if not 0 <= i < depth]
        if bad or len(set(remove)) >= depth:
            raise ConfigError(f"objective.options.remove_blocks {list(remove)} does not fit a {depth}-block student")
        for i in remove:
            student.backbone.blocks[i].requires_grad_(False)
        set_branch_scale(student, remove, self.gamma)

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self.gamma = depth_gamma(epoch, self.options.decay_epochs)
        set_branch_scale(unwrap(model), self.options.remove_blocks, self.gamma)
        log.debug("epoch %d: residual scale of blocks %s = %.4f", epoch, list(self.options.remove_blocks), self.gamma)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        total, stats = super().__call__(model, batch)
        stats["gamma"] = self.gamma
        return total, stats
