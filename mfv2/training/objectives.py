"""Objectives ("actors"): run the network on a batch and return ``(loss, stats)``.

The trainer knows nothing about losses: it calls ``objective(model, batch)`` and averages whatever
stats come back. New training routes register an :class:`Objective` subclass in :data:`OBJECTIVES`
and name it in the YAML config (``objective: {name: ..., options: {...}}``); its ``Options``
dataclass validates the options. A name not registered yet makes :func:`build_objective` import the
other modules of :mod:`mfv2.training`, so objectives defined there need no edit here. Two objectives ship here:

* ``supervised``: a MixFormerV2 or MixViT trained on ground-truth boxes, ``l1 * L1 + iou * (C|G)IoU``
  on positive samples, plus ``score * BCE`` on the score logits when the model has a score head.
* ``distill``: a MixFormerV2 student against a frozen teacher (MixViT or MixFormerV2): the box losses
  on ground truth, ``kl * KL`` between the student's edge logits and the teacher's edge marginals
  (resampled when the bin counts differ) and ``feat * MSE`` between matched block outputs.
  The official stage-1 weights are l1 5, ciou 2, kl 5; stage 2 adds feat 0.2.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from mfv2.errors import ConfigError
from mfv2.registry import Registry
from mfv2.training.config import from_mapping
from mfv2.training.losses import (
    box_iou,
    ciou_loss,
    cxcywh_to_xyxy,
    feature_mimic_loss,
    giou_loss,
    kl_distill_loss,
    l1_loss,
    score_bce_loss,
    xywh_to_xyxy,
)
from mfv2.training.models import build_network, input_sizes

__all__ = ["Objective", "OBJECTIVES", "SupervisedObjective", "DistillObjective", "build_objective", "Batch"]

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
_EDGES = ("l", "t", "r", "b")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


@dataclass(frozen=True)
class _NoOptions:
    pass


class Objective:
    """Base class: subclasses set ``Options`` (a frozen dataclass) and implement :meth:`__call__`.

    Args:
        options: the YAML ``objective.options`` mapping, checked against ``Options``.
        device: where the batch and any auxiliary network (a teacher) live.
    """

    Options: ClassVar[type] = _NoOptions

    def __init__(self, options: Mapping[str, Any] | None = None, *, device: torch.device | str = "cpu") -> None:
        self.options: Any = from_mapping(self.Options, dict(options or {}), f"objective.options ({type(self).__name__})")
        self.device = torch.device(device)

    def prepare(self, model: nn.Module) -> None:
        """Called once before the optimiser is built: freeze parameters, check compatibility."""

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """Called before each training epoch (1-based), e.g. for schedules inside the model."""

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Per-sample IoU (B,) of the predicted box with the ground truth, for validation."""
        out = model(batch["template"], batch["online_template"], batch["search"])
        gt = xywh_to_xyxy(batch["search_box"].float()).clamp(0, 1)
        return box_iou(cxcywh_to_xyxy(out["pred_boxes"].float()), gt)[0]


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def _import_training_modules() -> None:
    """Import every module of :mod:`mfv2.training`, so objectives defined elsewhere in it register."""
    import mfv2.training

    for info in pkgutil.iter_modules(mfv2.training.__path__):
        importlib.import_module(f"mfv2.training.{info.name}")


def build_objective(name: str, options: Mapping[str, Any] | None, *, device: torch.device | str) -> Objective:
    """The objective registered as ``name`` (in any module of :mod:`mfv2.training`), options validated."""
    if name not in OBJECTIVES:
        _import_training_modules()
    return OBJECTIVES.get(name)(options, device=device)


def _box_losses(
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
        head = getattr(_unwrap(model), "score_head", None)
        if head is not None and self.options.score == 0:
            head.requires_grad_(False)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        out = model(batch["template"], batch["online_template"], batch["search"])
        total, stats = _box_losses(out, batch, o.l1, o.iou, o.iou_loss)
        if o.score > 0 and "pred_scores" in out:
            bce = score_bce_loss(out["pred_scores"].float(), batch["label"])
            total = total + o.score * bce
            stats["Loss/score"] = bce.item()
        stats["Loss/total"] = total.item()
        return total, stats


@dataclass(frozen=True)
class DistillOptions:
    """Teacher and loss weights of ``distill``.

    ``feat_pairs`` lists ``[student_layer, teacher_layer]`` pairs for feature mimicking (official
    12->8: ``[[2, 2], [5, 5], [8, 8], [11, 11]]``; depth 8: ``[[1, 2], [3, 5], [5, 8], [7, 11]]``).
    Without ``teacher_checkpoint`` the teacher keeps random weights (smoke tests only).
    """

    teacher_kind: str = "mixvit"
    teacher_variant: str | None = None
    teacher_checkpoint: str | None = None
    l1: float = 5.0
    ciou: float = 2.0
    kl: float = 5.0
    feat: float = 0.0
    feat_pairs: tuple[tuple[int, ...], ...] = ()
    score: float = 0.0

    def __post_init__(self) -> None:
        if any(len(p) != 2 for p in self.feat_pairs):
            raise ConfigError("objective.options.feat_pairs must be [student_layer, teacher_layer] pairs")
        if self.feat > 0 and not self.feat_pairs:
            raise ConfigError("objective.options.feat > 0 needs feat_pairs, e.g. [[1, 2], [3, 5], [5, 8], [7, 11]]")
        if self.teacher_checkpoint is None and self.teacher_variant is None:
            raise ConfigError("objective.options needs teacher_checkpoint (or teacher_variant for a random teacher)")


@OBJECTIVES.register("distill")
class DistillObjective(Objective):
    """A MixFormerV2 student distilled from a frozen teacher (see the module docstring)."""

    Options = DistillOptions

    def __init__(self, options: Mapping[str, Any] | None = None, *, device: torch.device | str = "cpu") -> None:
        super().__init__(options, device=device)
        o = self.options
        if o.teacher_checkpoint is None:
            log.warning("distill: no teacher_checkpoint, the %s teacher has random weights", o.teacher_kind)
        self.teacher = build_network(o.teacher_kind, o.teacher_variant, o.teacher_checkpoint).to(self.device).eval()
        self.teacher.requires_grad_(False)

    def prepare(self, model: nn.Module) -> None:
        student = _unwrap(model)
        if input_sizes(student) != input_sizes(self.teacher):
            raise ConfigError(
                f"the teacher's inputs (template, search, patch) {input_sizes(self.teacher)} differ from the "
                f"student's {input_sizes(student)}; distillation feeds both the same crops"
            )
        head = getattr(student, "score_head", None)
        if head is not None and self.options.score == 0:
            head.requires_grad_(False)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        inputs = (batch["template"], batch["online_template"], batch["search"])
        out = model(*inputs)
        if "logits_l" not in out:
            raise ConfigError("objective 'distill' needs a MixFormerV2 student (model.kind: mixformerv2)")
        with torch.no_grad():
            t_out = self.teacher(*inputs)
        total, stats = _box_losses(out, batch, o.l1, o.ciou, "ciou")
        kl = kl_distill_loss([out[f"logits_{e}"].float() for e in _EDGES], [t_out[f"prob_{e}"].float() for e in _EDGES])
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
