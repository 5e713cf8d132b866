"""The objective base: one call per step, ``objective(model, batch) -> (loss, stats)``.

The trainer knows nothing about losses: it calls the objective and averages whatever stats come back.
An objective registers in :data:`OBJECTIVES` under the name a YAML config gives
(``objective: {name: ..., options: {...}}``); its ``Options`` dataclass validates the options.
Objectives that learn from a frozen teacher take the one teacher option set, :class:`TeacherOptions`,
and build the teacher through :class:`TeacherObjective`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from mfv2.errors import ConfigError
from mfv2.registry import Registry
from mfv2.config import from_mapping
from mfv2.training.losses import box_iou, cxcywh_to_xyxy, xywh_to_xyxy
from mfv2.training.models import build_network, input_sizes

__all__ = [
    "Objective",
    "OBJECTIVES",
    "Batch",
    "EDGES",
    "TeacherOptions",
    "TeacherObjective",
    "build_objective",
    "unwrap",
    "freeze_score_head",
]

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
EDGES = ("l", "t", "r", "b")


def unwrap(model: nn.Module) -> Any:
    """The network inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


def freeze_score_head(model: nn.Module) -> None:
    """Freeze the score head, if the network has one, so that no parameter goes without a gradient."""
    head = getattr(unwrap(model), "score_head", None)
    if head is not None:
        head.requires_grad_(False)


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
        self.total_epochs = 1

    def crop_sizes(self) -> tuple[int, int] | None:
        """(template, search) sizes the training crops are cut at; ``None``: the trained model's."""
        return None

    def set_total_epochs(self, epochs: int) -> None:
        """The run's length in epochs, for schedules given as fractions of the run (the trainer calls it)."""
        self.total_epochs = max(int(epochs), 1)

    def prepare(self, model: nn.Module) -> None:
        """Called once before the optimiser is built: freeze parameters, check compatibility."""

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """Called before each training epoch (1-based), e.g. for schedules inside the model."""

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-sample validation values, each (B,): here the IoU of the predicted box and the label."""
        out = model(batch["template"], batch["online_template"], batch["search"])
        gt = xywh_to_xyxy(batch["search_box"].float()).clamp(0, 1)
        return {"IoU": box_iou(cxcywh_to_xyxy(out["pred_boxes"].float()), gt)[0], "label": batch["label"]}

    def summarize(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Validation metrics from the concatenated :meth:`evaluate` values of the whole validation set.

        Here the mean IoU over the samples that hold the target (label 1): a negative sample's box is
        meaningless.
        """
        pos = values["label"] > 0.5
        return {"IoU": float(values["IoU"][pos].mean())} if bool(pos.any()) else {}


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def build_objective(name: str, options: Mapping[str, Any] | None, *, device: torch.device | str) -> Objective:
    """The objective registered as ``name``, options validated.

    Every shipped objective is registered by :mod:`mfv2.training.objectives` (explicit imports), which
    Python loads before this module.
    """
    return OBJECTIVES.get(name)(options, device=device)


@dataclass(frozen=True)
class TeacherOptions:
    """The frozen teacher: its model ``kind``, a registered ``variant`` and/or a ``checkpoint``.

    Without ``teacher_checkpoint`` the teacher keeps random weights (smoke tests only). A route fills
    these fields in from the stage it names as teacher. ``teacher_input: student`` runs the teacher at
    the student's input sizes (its fixed sin-cos tables rebuilt for them, e.g. the released 128/288
    MixViT-B teaching a 112/224 student); ``checkpoint`` keeps the sizes the teacher was trained at.
    """

    teacher_kind: str = "mixvit"
    teacher_variant: str | None = None
    teacher_checkpoint: str | None = None
    teacher_input: Literal["student", "checkpoint"] = "student"

    def __post_init__(self) -> None:
        if self.teacher_checkpoint is None and self.teacher_variant is None:
            raise ConfigError("objective.options needs teacher_checkpoint (or teacher_variant for a random teacher)")


class TeacherObjective(Objective):
    """An objective with a frozen teacher (``self.teacher``, eval mode, no gradients) on ``device``."""

    Options: ClassVar[type] = TeacherOptions

    def __init__(self, options: Mapping[str, Any] | None = None, *, device: torch.device | str = "cpu") -> None:
        super().__init__(options, device=device)
        o = self.options
        if o.teacher_checkpoint is None:
            log.warning("%s: no teacher_checkpoint, the %s teacher has random weights", type(self).__name__, o.teacher_kind)
        self.teacher: Any = self._build_teacher()

    def _build_teacher(self, template_size: int | None = None, search_size: int | None = None) -> Any:
        o = self.options
        teacher = build_network(o.teacher_kind, o.teacher_variant, o.teacher_checkpoint,
                                template_size=template_size, search_size=search_size)
        return teacher.to(self.device).eval().requires_grad_(False)

    def prepare(self, model: nn.Module) -> None:
        """With ``teacher_input: student``, rebuild the teacher at the student's input sizes if they differ."""
        if self.options.teacher_input != "student":
            return
        student, teacher = input_sizes(unwrap(model)), input_sizes(self.teacher)
        if student[:2] != teacher[:2]:
            log.info("teacher (template %d, search %d) runs at the student's template %d, search %d (sin-cos tables "
                     "rebuilt)", teacher[0], teacher[1], student[0], student[1])
            self.teacher = self._build_teacher(student[0], student[1])
