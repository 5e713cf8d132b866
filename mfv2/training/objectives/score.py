"""``score``: the MixFormerV2 score stage.

Backbone and box head frozen (and in eval mode), the score head trained with ``bce * BCE`` on positive
and negative search crops (``data.mode: trident_pro``). Differences from the official code, on
purpose: the frozen parts run in eval mode (the official actor leaves DropPath active in the frozen
backbone), and the stage runs at all (the official trainer calls its actor with an argument it does
not take).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mfv2.errors import ConfigError
from mfv2.training.losses import score_bce_loss
from mfv2.training.objectives.base import OBJECTIVES, Batch, Objective, unwrap

__all__ = ["ScoreOptions", "ScoreObjective", "roc_auc"]


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U, ties counted half).

    ``nan`` when either class is absent.
    """
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2  # 1-based average rank of each value
    rank_sum = mean_rank[inverse][pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
        net = unwrap(model)
        if getattr(net, "score_head", None) is None:
            raise ConfigError("objective 'score' needs a MixFormerV2 model with a score head (model.kind: mixformerv2)")
        net.requires_grad_(False)
        net.score_head.requires_grad_(True)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        net = unwrap(model)
        for name, child in net.named_children():
            if name != "score_head":
                child.eval()
        out = model(batch["template"], batch["online_template"], batch["search"])
        logits = out["pred_scores"].float()
        bce = score_bce_loss(logits, batch["label"])
        total = self.options.bce * bce
        correct = ((logits > 0) == (batch["label"] > 0.5)).float().mean()
        return total, {"Loss/score": bce.item(), "Loss/total": total.item(), "Accuracy": correct.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The score logit and the label of every sample (the box of a negative sample means nothing)."""
        out = model(batch["template"], batch["online_template"], batch["search"])
        return {"score": out["pred_scores"].float(), "label": batch["label"]}

    def summarize(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Accuracy of ``logit > 0`` against the labels, and the ROC AUC of the score (positives vs negatives)."""
        score, label = values["score"], values["label"] > 0.5
        return {"Accuracy": float(((score > 0) == label).float().mean()), "AUC": roc_auc(score, values["label"])}
