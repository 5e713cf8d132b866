"""Training losses of MixFormerV2 and its MixViT teacher.

Boxes are normalised to the search crop. Predictions arrive as ``(cx, cy, w, h)`` and may be inverted
(the distribution head does not clamp); ground truth arrives as ``(x, y, w, h)``. The box losses work
on corners ``(x1, y1, x2, y2)`` with the ground truth clamped to [0, 1], as the official actors do.
The conversions and the IoU follow :mod:`mfv2.geometry.boxes` (same layouts, same formulas; the test
compares them); they stay in torch here because training needs their gradients, and the IoU adds
:data:`EPS` to the union so an empty one gives 0 without a division by zero.

Differences from the official code (MixFormerV2 commit 1041438), on purpose:

* CIoU keeps the official variant (``alpha`` gated on IoU > 0.5, result clamped to [-1, 1]) but adds an
  epsilon to every division and measures areas with non-negative sides, so it cannot produce NaN; the
  official code has no epsilon and replaces any failure with a loss of 0.
* KL distillation resamples the teacher's marginals when its bin count differs from the student's
  (the official configs distil 72-bin teacher maps, the released students have 96 bins).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "EPS",
    "cxcywh_to_xyxy",
    "xywh_to_xyxy",
    "box_iou",
    "l1_loss",
    "giou_loss",
    "ciou_loss",
    "resample_bins",
    "kl_distill_loss",
    "feature_mimic_loss",
    "score_bce_loss",
]

EPS = 1e-7


def cxcywh_to_xyxy(box: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size -> corners."""
    cx, cy, w, h = box.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xywh_to_xyxy(box: torch.Tensor) -> torch.Tensor:
    """(..., 4) top-left/size -> corners."""
    x, y, w, h = box.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and union of matched corner boxes (..., 4); inverted boxes count as empty."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = _area(a) + _area(b) - inter
    return inter / (union + EPS), union


def l1_loss(pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all coordinates of (B, 4) corner boxes."""
    return F.l1_loss(pred_xyxy, gt_xyxy)


def _enclosing(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    return lt, rb


def giou_loss(pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``1 - GIoU`` of (B, 4) corner boxes, and the (B,) IoU (detached)."""
    iou, union = box_iou(pred_xyxy, gt_xyxy)
    lt, rb = _enclosing(pred_xyxy, gt_xyxy)
    enclosing = (rb - lt).clamp(min=0).prod(dim=-1)
    giou = iou - (enclosing - union) / (enclosing + EPS)
    return (1 - giou).mean(), iou.detach()


def ciou_loss(pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``1 - clamp(IoU - rho^2/c^2 - alpha*v, -1, 1)`` (the official "CIoU") and the (B,) IoU.

    ``rho`` is the centre distance, ``c`` the enclosing box diagonal,
    ``v = 4/pi^2 (atan(w_g/h_g) - atan(w_p/h_p))^2`` and ``alpha = [IoU > 0.5] v / (1 - IoU + v)``
    without gradient, as in the official code; every division carries an epsilon.
    """
    iou, _ = box_iou(pred_xyxy, gt_xyxy)
    lt, rb = _enclosing(pred_xyxy, gt_xyxy)
    c2 = ((rb - lt) ** 2).sum(dim=-1) + EPS
    centre_p = (pred_xyxy[..., :2] + pred_xyxy[..., 2:]) / 2
    centre_g = (gt_xyxy[..., :2] + gt_xyxy[..., 2:]) / 2
    rho2 = ((centre_p - centre_g) ** 2).sum(dim=-1)
    wp = (pred_xyxy[..., 2] - pred_xyxy[..., 0]).clamp(min=0)
    hp = (pred_xyxy[..., 3] - pred_xyxy[..., 1]).clamp(min=0)
    wg = (gt_xyxy[..., 2] - gt_xyxy[..., 0]).clamp(min=0)
    hg = (gt_xyxy[..., 3] - gt_xyxy[..., 1]).clamp(min=0)
    v = (4 / math.pi**2) * (torch.atan(wg / (hg + EPS)) - torch.atan(wp / (hp + EPS))) ** 2
    with torch.no_grad():
        alpha = (iou > 0.5).to(v.dtype) * v / (1 - iou + v + EPS)
    ciou = (iou - rho2 / c2 - alpha * v).clamp(-1.0, 1.0)
    return (1 - ciou).mean(), iou.detach()


def resample_bins(prob: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Re-express a distribution over ``F`` edge bins on ``num_bins`` bins.

    Bin ``i`` of ``F`` stands for the coordinate ``i / F``. Each source bin's mass is split linearly
    between the two target bins around its coordinate, which keeps the total mass and (away from the
    last bin) the expected coordinate. Identity when the counts agree.

    Args:
        prob: (..., F) probabilities.
        num_bins: the target count.

    Returns:
        (..., num_bins) probabilities.
    """
    F_src = prob.shape[-1]
    if F_src == num_bins:
        return prob
    u = torch.arange(F_src, dtype=torch.float64) * num_bins / F_src  # source coordinates in target bins
    lo = u.floor().long().clamp(max=num_bins - 1)
    w_hi = (u - lo).clamp(0, 1)
    hi = (lo + 1).clamp(max=num_bins - 1)
    matrix = torch.zeros(F_src, num_bins, dtype=torch.float64)
    matrix[torch.arange(F_src), lo] += 1 - w_hi
    matrix[torch.arange(F_src), hi] += w_hi
    return prob @ matrix.to(device=prob.device, dtype=prob.dtype)


def kl_distill_loss(
    student_logits: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Mean over edges of ``KL(teacher || student)``, batch-mean, temperature 1.

    Equals the official ``KLDivLoss(reduction='batchmean')(log_softmax(student), teacher)`` averaged over
    the four edges. Teacher marginals with another bin count are resampled with :func:`resample_bins`.

    Args:
        student_logits: per edge, (B, F_s) logits.
        teacher_probs: per edge, (B, F_t) probabilities, in the same edge order.
    """
    if len(student_logits) != len(teacher_probs) or not student_logits:
        raise ValueError("kl_distill_loss needs the same non-zero number of student and teacher edges")
    losses = []
    for s, t in zip(student_logits, teacher_probs):
        t = resample_bins(t.detach().to(s.dtype), s.shape[-1])
        losses.append(F.kl_div(F.log_softmax(s, dim=-1), t, reduction="batchmean"))
    return torch.stack(losses).mean()


def feature_mimic_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    pairs: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """MSE over all elements between matched block outputs (student layer ``s`` vs teacher layer ``t``).

    Args:
        student_features: the student's block outputs, each (B, N, C).
        teacher_features: the teacher's block outputs, same token count and width.
        pairs: ``(student_layer, teacher_layer)`` indices, e.g. ``[(1, 2), (3, 5), (5, 8), (7, 11)]``.
    """
    if not pairs:
        raise ValueError("feature_mimic_loss needs at least one (student, teacher) layer pair")
    s = torch.stack([student_features[i] for i, _ in pairs])
    t = torch.stack([teacher_features[j].detach() for _, j in pairs])
    if s.shape != t.shape:
        raise ValueError(f"matched features differ in shape: student {tuple(s.shape)} vs teacher {tuple(t.shape)}")
    return F.mse_loss(s, t.to(s.dtype))


def score_bce_loss(score_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (B,) score logits against (B,) labels in {0, 1}."""
    return F.binary_cross_entropy_with_logits(score_logits, labels.to(score_logits.dtype))
