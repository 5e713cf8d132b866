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

__all__ = ["ScoreOptions", "ScoreObjective"]


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
