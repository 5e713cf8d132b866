"""``distill`` and ``dense_to_sparse``: a MixFormerV2 student against a frozen teacher.

* ``distill``: the box losses on ground truth, ``kl * KL`` between the student's edge logits and the
  teacher's (MixViT or MixFormerV2) edge marginals (resampled when the bin counts differ) and
  ``feat * MSE`` between matched block outputs. The official stage-1 weights are l1 5, ciou 2, kl 5;
  stage 2 adds feat 0.2. MLP reduction uses it too (the route slices the student's MLPs first).
* ``dense_to_sparse`` (stage 1): ``distill`` plus optional attention distillation, the prediction
  tokens' attention pulled toward the MixViT teacher's corner maps (``attn: 0``, the default, is the
  paper's stage 1; the demo route needs it, see :class:`DenseToSparseObjective`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mfv2.errors import ConfigError
from mfv2.models.mixformerv2 import NUM_PRED_TOKENS
from mfv2.training.losses import feature_mimic_loss, kl_distill_loss, score_bce_loss
from mfv2.training.models import input_sizes
from mfv2.training.objectives.base import (
    EDGES,
    OBJECTIVES,
    Batch,
    TeacherObjective,
    TeacherOptions,
    freeze_score_head,
    unwrap,
)
from mfv2.training.objectives.supervised import box_losses

__all__ = [
    "DistillOptions",
    "DistillObjective",
    "DenseToSparseOptions",
    "DenseToSparseObjective",
    "corner_token_maps",
    "prediction_token_attention",
]


@dataclass(frozen=True)
class DistillOptions(TeacherOptions):
    """Teacher (:class:`~.base.TeacherOptions`) and loss weights of ``distill``.

    ``feat_pairs`` lists ``[student_layer, teacher_layer]`` pairs for feature mimicking (official
    12->8: ``[[2, 2], [5, 5], [8, 8], [11, 11]]``; depth 8: ``[[1, 2], [3, 5], [5, 8], [7, 11]]``).
    """

    l1: float = 5.0
    ciou: float = 2.0
    kl: float = 5.0
    feat: float = 0.0
    feat_pairs: tuple[tuple[int, ...], ...] = ()
    score: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(len(p) != 2 for p in self.feat_pairs):
            raise ConfigError("objective.options.feat_pairs must be [student_layer, teacher_layer] pairs")
        if self.feat > 0 and not self.feat_pairs:
            raise ConfigError("objective.options.feat > 0 needs feat_pairs, e.g. [[1, 2], [3, 5], [5, 8], [7, 11]]")


@OBJECTIVES.register("distill")
class DistillObjective(TeacherObjective):
    """A MixFormerV2 student distilled from a frozen teacher (see the module docstring)."""

    Options = DistillOptions

    def prepare(self, model: nn.Module) -> None:
        super().prepare(model)
        student = unwrap(model)
        if input_sizes(student) != input_sizes(self.teacher):
            raise ConfigError(
                f"the teacher's inputs (template, search, patch) {input_sizes(self.teacher)} differ from the "
                f"student's {input_sizes(student)}; distillation feeds both the same crops (set "
                "objective.options.teacher_input: student to run the teacher at the student's sizes)"
            )
        if self.options.score == 0:
            freeze_score_head(student)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        inputs = (batch["template"], batch["online_template"], batch["search"])
        out = model(*inputs)
        if "logits_l" not in out:
            raise ConfigError("objective 'distill' needs a MixFormerV2 student (model.kind: mixformerv2)")
        with torch.no_grad():
            t_out = self.teacher(*inputs)
        total, stats = box_losses(out, batch, o.l1, o.ciou, "ciou")
        kl = kl_distill_loss([out[f"logits_{e}"].float() for e in EDGES], [t_out[f"prob_{e}"].float() for e in EDGES])
        total = total + o.kl * kl
        stats["Loss/kl"] = kl.item()
        if o.feat > 0:
            s_feats, t_feats = out["features"], t_out["features"]
            extra = s_feats[0].shape[1] - t_feats[0].shape[1]
            if extra:  # a MixViT teacher has no prediction tokens: compare the shared tokens only
                s_feats = [f[:, : f.shape[1] - extra] for f in s_feats]
            feat = feature_mimic_loss(s_feats, t_feats, [(int(a), int(b)) for a, b in o.feat_pairs])
            total = total + o.feat * feat
            stats["Loss/feat"] = feat.item()
        if o.score > 0:
            bce = score_bce_loss(out["pred_scores"].float(), batch["label"])
            total = total + o.score * bce
            stats["Loss/score"] = bce.item()
        stats["Loss/total"] = total.item()
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
            from mfv2.models.mixformerv2.mixvit import MixViT

            if not isinstance(self.teacher, MixViT):
                raise ConfigError("objective.options.attn > 0 needs a MixViT teacher (its corner maps); set attn: 0")
            if len(unwrap(model).backbone.blocks) < 2:
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
        student = unwrap(model)
        tl, br = corner_token_maps(t_out, student.config.search_grid)
        attn = prediction_token_attention(student, out["features"], out["features"][0].shape[1]
                                          - student.config.num_search_tokens - NUM_PRED_TOKENS)
        target = torch.stack([tl, br, tl, br], dim=1).to(attn.dtype)  # edges l, r, t, b
        ce = -(target * (attn + 1e-8).log()).sum(dim=-1).mean()
        total = total + self.options.attn * ce
        stats["Loss/attn"] = ce.item()
        stats["Loss/total"] = total.item()
        return total, stats
