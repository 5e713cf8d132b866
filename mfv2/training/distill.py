"""The MixFormerV2 distillation stages as trainer objectives, and the layer rule of depth pruning.

Stage 1 (dense -> sparse) and MLP reduction use the ``distill`` objective of
:mod:`mfv2.training.objectives` (the student is initialised by the route, see
:mod:`mfv2.training.routes`). This module adds the objectives the other stages need:

* ``dense_to_sparse`` (stage 1): ``distill`` plus optional attention distillation, the prediction
  tokens' attention pulled toward the MixViT teacher's corner maps (``attn: 0``, the default, is the
  paper's stage 1; the demo route needs it, see :class:`DenseToSparseObjective`).
* ``depth_prune`` (stage 2, progressive model depth pruning): ``distill`` plus the residual branches of
  the blocks to eliminate scaled by ``gamma(t) = 0.5 * (1 + cos(pi * t / m))``, ``t`` the 1-based epoch,
  0 from epoch ``m`` on; those blocks are frozen (they are still computed). The route removes them
  after the stage and renumbers the rest (:func:`mfv2.training.pruning.remove_blocks`).
* ``score``: backbone and box head frozen (and in eval mode), the score head trained with
  ``bce * BCE`` on positive and negative search crops (``data.mode: trident_pro``).

Differences from the official code, on purpose: ``gamma`` of epoch ``e`` is ``gamma(e)`` (the official
trainer evaluates ``gamma(e + 1)`` with ``m = 40`` hard-coded); the frozen parts of the score stage run
in eval mode (the official actor leaves DropPath active in the frozen backbone), and the score stage
runs at all (the official trainer calls its actor with an argument it does not take).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mfv2.errors import ConfigError
from mfv2.models.mixformerv2 import NUM_PRED_TOKENS
from mfv2.training.losses import score_bce_loss
from mfv2.training.objectives import OBJECTIVES, Batch, DistillObjective, DistillOptions, Objective
from mfv2.training.pruning import depth_gamma, set_branch_scale

__all__ = [
    "PrunePlan",
    "prune_plan",
    "DepthPruneOptions",
    "DepthPruneObjective",
    "ScoreOptions",
    "ScoreObjective",
]

log = logging.getLogger(__name__)


def _unwrap(model: nn.Module) -> Any:
    """The network inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


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
        student = _unwrap(model)
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
        set_branch_scale(_unwrap(model), self.options.remove_blocks, self.gamma)
        log.debug("epoch %d: residual scale of blocks %s = %.4f", epoch, list(self.options.remove_blocks), self.gamma)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        total, stats = super().__call__(model, batch)
        stats["gamma"] = self.gamma
        return total, stats


def corner_token_maps(teacher_out: Mapping[str, Any], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's corner distributions summed onto the student's search-token grid.

    Args:
        teacher_out: MixViT outputs with ``prob_tl``/``prob_br`` (B, M*M), ``M`` a multiple of ``grid``.
        grid: the student's search grid side (search size / patch size).

    Returns:
        Top-left and bottom-right maps, each (B, grid*grid) summing to 1, row-major like the search tokens.
    """
    maps = []
    for key in ("prob_tl", "prob_br"):
        prob = teacher_out[key]
        B, n = prob.shape
        M = round(n**0.5)
        if M * M != n or M % grid:
            raise ConfigError(f"the teacher's {M}x{M} corner map does not pool onto the student's {grid}x{grid} search grid")
        f = M // grid
        # (B, M*M) -> (B, grid, f, grid, f) -> (B, grid*grid)
        maps.append(prob.reshape(B, grid, f, grid, f).sum(dim=(2, 4)).reshape(B, grid * grid))
    return maps[0], maps[1]


def prediction_token_attention(student: Any, features: list[torch.Tensor], num_template: int) -> torch.Tensor:
    """Attention of the four prediction tokens over the search tokens in the student's last block.

    Recomputed from the last block's input, ``features[-2]`` (so the student needs two blocks or more).

    Returns:
        (B, 4, Ns) attention weights (averaged over heads) of the l, r, t, b tokens on the search tokens.
    """
    if len(features) < 2:
        raise ConfigError("attention distillation needs a student with at least two blocks")
    last = student.backbone.blocks[-1]
    q, k, _ = last.attn.qkv_heads(last.norm1(features[-2]))  # (B, H, N, d) each
    scale = q.shape[-1] ** -0.5
    attn = (q[:, :, -NUM_PRED_TOKENS:] @ k.transpose(-2, -1) * scale).softmax(dim=-1)  # (B, H, 4, N)
    return attn[..., num_template:-NUM_PRED_TOKENS].mean(dim=1)


class _Capture:
    """Calls ``fn`` and keeps its last output."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.out: Any = None

    def __call__(self, *args: Any) -> Any:
        self.out = self.fn(*args)
        return self.out


@dataclass(frozen=True)
class DenseToSparseOptions(DistillOptions):
    """``distill`` options plus ``attn``, the weight of attention distillation (0 = the paper's stage 1)."""

    attn: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attn < 0:
            raise ConfigError(f"objective.options.attn must be >= 0, got {self.attn}")


@OBJECTIVES.register("dense_to_sparse")
class DenseToSparseObjective(DistillObjective):
    """Stage 1 with optional attention distillation from a MixViT teacher.

    With ``attn > 0`` the prediction tokens' attention over the search tokens in the student's last
    block is pulled (cross-entropy, batch mean) toward the teacher's corner distribution pooled onto the
    token grid: top-left for the l and t tokens, bottom-right for r and b. Prediction tokens start out
    attending uniformly, and from scratch they need many thousands of steps to find the target (the
    slow start of query-based heads); this dense signal gives them the teacher's answer directly. It is
    not part of the paper's recipe (``attn: 0`` reproduces it); the demo route uses it.
    """

    Options = DenseToSparseOptions

    def prepare(self, model: nn.Module) -> None:
        super().prepare(model)
        if self.options.attn > 0:
            from mfv2.models.mixvit import MixViT

            if not isinstance(self.teacher, MixViT):
                raise ConfigError("objective.options.attn > 0 needs a MixViT teacher (its corner maps); set attn: 0")
            if len(_unwrap(model).backbone.blocks) < 2:
                raise ConfigError("attention distillation needs a student with at least two blocks")

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        if self.options.attn == 0:
            return super().__call__(model, batch)
        # The distill losses come from DistillObjective; both networks' outputs are captured on the way.
        net, teacher = _Capture(model), _Capture(self.teacher)
        self.teacher = teacher  # type: ignore[assignment]
        try:
            total, stats = super().__call__(net, batch)  # type: ignore[arg-type]
        finally:
            self.teacher = teacher.fn
        out, t_out = net.out, teacher.out
        student = _unwrap(model)
        tl, br = corner_token_maps(t_out, student.config.search_grid)
        attn = prediction_token_attention(student, out["features"], out["features"][0].shape[1]
                                          - student.config.num_search_tokens - NUM_PRED_TOKENS)
        target = torch.stack([tl, br, tl, br], dim=1).to(attn.dtype)  # edges l, r, t, b
        ce = -(target * (attn + 1e-8).log()).sum(dim=-1).mean()
        total = total + self.options.attn * ce
        stats["Loss/attn"] = ce.item()
        stats["Loss/total"] = total.item()
        return total, stats


@dataclass(frozen=True)
class ScoreOptions:
    """Weight of the score stage's binary cross-entropy."""

    bce: float = 1.0

    def __post_init__(self) -> None:
        if self.bce <= 0:
            raise ConfigError(f"objective.options.bce must be > 0, got {self.bce}")


@OBJECTIVES.register("score")
class ScoreObjective(Objective):
    """Score stage: only ``score_head`` learns; samples labelled 1 (target in the crop) or 0 (not)."""

    Options = ScoreOptions

    def prepare(self, model: nn.Module) -> None:
        net = _unwrap(model)
        if getattr(net, "score_head", None) is None:
            raise ConfigError("objective 'score' needs a MixFormerV2 model with a score head (model.kind: mixformerv2)")
        net.requires_grad_(False)
        net.score_head.requires_grad_(True)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        net = _unwrap(model)
        for name, child in net.named_children():
            if name != "score_head":
                child.eval()
        out = model(batch["template"], batch["online_template"], batch["search"])
        logits = out["pred_scores"].float()
        bce = score_bce_loss(logits, batch["label"])
        total = self.options.bce * bce
        correct = ((logits > 0) == (batch["label"] > 0.5)).float().mean()
        return total, {"Loss/score": bce.item(), "Loss/total": total.item(), "Accuracy": correct.item()}
