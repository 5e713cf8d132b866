"""``supervised``: a MixFormerV2 or a MixViT teacher trained on ground-truth boxes.

``l1 * L1 + iou * (C|G)IoU`` on positive samples, plus ``score * BCE`` on the score logits when the
model has a score head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mfv2.training.losses import ciou_loss, cxcywh_to_xyxy, giou_loss, l1_loss, score_bce_loss, xywh_to_xyxy
from mfv2.training.objectives.base import OBJECTIVES, Batch, Objective, freeze_score_head

__all__ = ["SupervisedOptions", "SupervisedObjective", "box_losses"]


def box_losses(
    out: Mapping[str, Any], batch: Batch, w_l1: float, w_iou: float, iou_kind: str
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted L1 + (C|G)IoU on positive samples (label 1); zero (but in the graph) without positives."""
    pred = cxcywh_to_xyxy(out["pred_boxes"].float())
    gt = xywh_to_xyxy(batch["search_box"].float()).clamp(0, 1)
    pos = batch["label"] > 0.5
    if not bool(pos.any()):
        return pred.sum() * 0.0, {}
    pred, gt = pred[pos], gt[pos]
    l1 = l1_loss(pred, gt)
    iou_loss, iou = (ciou_loss if iou_kind == "ciou" else giou_loss)(pred, gt)
    total = w_l1 * l1 + w_iou * iou_loss
    return total, {"Loss/l1": l1.item(), f"Loss/{iou_kind}": iou_loss.item(), "IoU": iou.mean().item()}


@dataclass(frozen=True)
class SupervisedOptions:
    """Loss weights of ``supervised``; ``iou_loss`` is ``ciou`` (MixFormerV2) or ``giou`` (MixViT teacher)."""

    l1: float = 5.0
    iou: float = 2.0
    iou_loss: Literal["ciou", "giou"] = "ciou"
    score: float = 0.0


@OBJECTIVES.register("supervised")
class SupervisedObjective(Objective):
    """Ground-truth training of a MixFormerV2 or a MixViT teacher (see the module docstring).

    With ``score: 0`` a score head, if any, is frozen so that no parameter goes without a gradient.
    """

    Options = SupervisedOptions

    def prepare(self, model: nn.Module) -> None:
        if self.options.score == 0:
            freeze_score_head(model)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        out = model(batch["template"], batch["online_template"], batch["search"])
        total, stats = box_losses(out, batch, o.l1, o.iou, o.iou_loss)
        if o.score > 0 and "pred_scores" in out:
            bce = score_bce_loss(out["pred_scores"].float(), batch["label"])
            total = total + o.score * bce
            stats["Loss/score"] = bce.item()
        stats["Loss/total"] = total.item()
        return total, stats
