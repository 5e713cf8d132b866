"""CompressTracker for MixFormerV2: replacement training of a shallower student inside its teacher.

A structure-agnostic compression of a trained tracker (Hong et al., "General Compression Framework for
Efficient Transformer Object Tracking", 2024), applied to MixFormerV2 as the ``compress`` objective:

* **Stage division**: the teacher's ``N`` blocks are split into as many consecutive stages as the
  student has blocks (:func:`stage_division`; 8 -> 4 gives {0, 1}, {2, 3}, {4, 5}, {6, 7}); student
  block ``i`` learns to stand in for teacher stage ``i``.
* **Replacement training**: every step, each student block is independently replaced by its frozen
  teacher stage with probability ``p`` (:func:`replacement_probability`, the authors' schedule:
  ``replace_prob`` 0.5 for the first ``hold_fraction`` 10 % of the run, then falling (linearly, or
  along half a cosine) to 0, the student alone, at ``student_only_fraction`` 90 %), and at least
  ``min_student_blocks`` (1) student blocks run in every step (:func:`keep_students`; the authors' code
  never runs the whole teacher). The student learns inside the teacher's context. Gradients flow
  through the teacher stages into earlier student blocks, but only student parameters are updated; a
  replaced block gets no gradient that step.
* **Prediction guidance and stage-wise feature mimicking**: ground-truth ``l1`` L1 + ``ciou`` CIoU,
  the teacher's predictions (``kl`` KL on the edge distributions, ``teacher_l1``/``teacher_ciou`` on
  its boxes) and ``feat`` times the MSE between each computed student block's output and its
  teacher stage's output (from a separate pass of the whole teacher).
* The student starts from the teacher: block ``i`` copies the last block of stage ``i`` (``init_layer:
  last``, the authors' code; ``first`` is the other choice, which our comparison found far worse); patch embedding, prediction tokens and heads are copied
  (:func:`init_student_from_teacher`, done in :meth:`CompressObjective.prepare`, so a resumed run
  restores its own weights afterwards).

The student's score head is frozen (as in ``distill`` with ``score: 0``). Under DDP set
``find_unused_parameters: true``: replaced blocks take no part in a step.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mfv2.errors import ConfigError
from mfv2.models.mixformerv2 import MixFormerV2
from mfv2.training.losses import ciou_loss, cxcywh_to_xyxy, kl_distill_loss, l1_loss, xywh_to_xyxy
from mfv2.training.models import input_sizes
from mfv2.training.objectives.base import EDGES, OBJECTIVES, Batch, TeacherObjective, TeacherOptions, unwrap

__all__ = [
    "stage_division",
    "replacement_probability",
    "sample_replacement",
    "keep_students",
    "TeacherStage",
    "replaced_blocks",
    "init_student_from_teacher",
    "CompressOptions",
    "CompressObjective",
]

log = logging.getLogger(__name__)


def stage_division(teacher_depth: int, student_depth: int) -> tuple[tuple[int, ...], ...]:
    """Consecutive teacher blocks per student block, as even as possible (longer stages last).

    ``stage_division(8, 4) == ((0, 1), (2, 3), (4, 5), (6, 7))``; ``stage_division(12, 5)`` gives stages
    of 2, 2, 3, 2, 3 blocks.

    Raises:
        ConfigError: ``student_depth`` is not in ``[1, teacher_depth]``.
    """
    if not 1 <= student_depth <= teacher_depth:
        raise ConfigError(
            f"a {student_depth}-block student cannot stand in for a {teacher_depth}-block teacher; "
            f"the student needs between 1 and {teacher_depth} blocks"
        )
    bounds = [i * teacher_depth // student_depth for i in range(student_depth + 1)]
    return tuple(tuple(range(bounds[i], bounds[i + 1])) for i in range(student_depth))


def replacement_probability(
    progress: float,
    start: float,
    hold_fraction: float = 0.1,
    student_only_fraction: float = 0.9,
    ramp: Literal["linear", "cosine"] = "linear",
) -> float:
    """Probability that a student block is replaced, ``progress`` (in [0, 1]) into the run.

    ``start`` until ``hold_fraction``, then falling to 0 at ``student_only_fraction`` (linearly, or along
    half a cosine) and 0 after: the student alone.
    """
    if progress <= hold_fraction:
        return start
    if progress >= student_only_fraction:
        return 0.0
    t = (progress - hold_fraction) / (student_only_fraction - hold_fraction)
    if ramp == "cosine":
        return start * 0.5 * (1.0 + math.cos(math.pi * t))
    return start * (1.0 - t)


def sample_replacement(num_blocks: int, p: float, generator: torch.Generator | None = None) -> tuple[bool, ...]:
    """One Bernoulli(``p``) draw per student block: ``True`` means "replaced by its teacher stage"."""
    return tuple(bool(r) for r in (torch.rand(num_blocks, generator=generator) < p).tolist())


def keep_students(mask: Sequence[bool], minimum: int, generator: torch.Generator | None = None) -> tuple[bool, ...]:
    """``mask`` with random replaced blocks given back to the student until ``minimum`` student blocks run."""
    out = list(mask)
    replaced = [i for i, r in enumerate(out) if r]
    missing = minimum - (len(out) - len(replaced))
    if missing > 0:
        for k in torch.randperm(len(replaced), generator=generator)[:missing].tolist():
            out[replaced[k]] = False
    return tuple(out)


class TeacherStage(nn.Module):
    """Consecutive teacher blocks behind the block interface ``forward(x, num_template)``."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, num_template: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, num_template)
        return x


@contextlib.contextmanager
def replaced_blocks(student: MixFormerV2, stages: Sequence[nn.Module], mask: Sequence[bool]) -> Iterator[None]:
    """Within the block, ``student.backbone.blocks[i]`` is ``stages[i]`` wherever ``mask[i]``.

    The student's own forward then runs the hybrid network (and reports the stage outputs among its
    ``features``); the original blocks are back afterwards, also after an exception.
    """
    blocks = student.backbone.blocks
    if len(mask) != len(blocks) or len(stages) != len(blocks):
        raise ValueError(f"{len(blocks)} student blocks, {len(stages)} stages and a mask of {len(mask)}")
    own = list(blocks)
    try:
        for i, replace in enumerate(mask):
            if replace:
                blocks[i] = stages[i]
        yield
    finally:
        for i, block in enumerate(own):
            blocks[i] = block


def init_student_from_teacher(
    student: MixFormerV2,
    teacher: MixFormerV2,
    stages: Sequence[Sequence[int]],
    *,
    layer: Literal["first", "last"] = "first",
) -> list[int]:
    """Copy the teacher into the student: block ``i`` from the first/last block of stage ``i``, all else as is.

    Returns:
        The teacher block each student block was copied from.

    Raises:
        ConfigError: the two networks differ in anything but depth.
    """
    sources = [s[0] if layer == "first" else s[-1] for s in stages]
    t_sd = teacher.state_dict()
    state = {}
    for key, value in student.state_dict().items():
        src = key
        if key.startswith("backbone.blocks."):
            _, _, index, rest = key.split(".", 3)
            src = f"backbone.blocks.{sources[int(index)]}.{rest}"
        if src not in t_sd or t_sd[src].shape != value.shape:
            got = tuple(t_sd[src].shape) if src in t_sd else "missing"
            raise ConfigError(
                f"cannot initialise the student from the teacher: {key} {tuple(value.shape)} vs teacher {src} {got}; "
                "give the student the teacher's width, heads, MLP ratio, input sizes and bins, or set "
                "objective.options.init_from_teacher: false"
            )
        state[key] = t_sd[src]
    student.load_state_dict(state, strict=True)
    return sources


@dataclass(frozen=True)
class CompressOptions(TeacherOptions):
    """Teacher (:class:`~.base.TeacherOptions`, ``teacher_kind`` must be ``mixformerv2``), replacement
    schedule and loss weights of ``compress`` (see the module docstring)."""

    teacher_kind: str = "mixformerv2"
    replace_prob: float = 0.5
    hold_fraction: float = 0.1
    student_only_fraction: float = 0.9
    ramp: Literal["linear", "cosine"] = "linear"
    min_student_blocks: int = 1
    init_from_teacher: bool = True
    init_layer: Literal["first", "last"] = "last"
    l1: float = 5.0
    ciou: float = 2.0
    kl: float = 5.0
    teacher_l1: float = 5.0
    teacher_ciou: float = 2.0
    feat: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teacher_kind != "mixformerv2":
            raise ConfigError(
                f"objective 'compress' replaces student blocks by MixFormerV2 teacher blocks; the teacher is a "
                f"{self.teacher_kind}: distil a MixFormerV2 from it first (route stage1)"
            )
        if not 0.0 <= self.replace_prob <= 1.0:
            raise ConfigError(f"objective.options.replace_prob is a probability in [0, 1], got {self.replace_prob}")
        if not 0.0 <= self.hold_fraction < self.student_only_fraction <= 1.0:
            raise ConfigError(
                "objective.options needs 0 <= hold_fraction < student_only_fraction <= 1 (fractions of the run), got "
                f"{self.hold_fraction} and {self.student_only_fraction}"
            )
        if self.min_student_blocks < 0:
            raise ConfigError(f"objective.options.min_student_blocks must be >= 0, got {self.min_student_blocks}")
        weights = ("l1", "ciou", "kl", "teacher_l1", "teacher_ciou", "feat")
        if any(getattr(self, w) < 0 for w in weights):
            raise ConfigError(f"objective.options weights {', '.join(weights)} must be >= 0")


@OBJECTIVES.register("compress")
class CompressObjective(TeacherObjective):
    """CompressTracker replacement training of a MixFormerV2 student (see the module docstring).

    Attributes:
        stages: teacher block indices per student block, set by :meth:`prepare`.
        probability: the replacement probability of the current epoch.
        last_mask: which student blocks the last training step replaced.
    """

    Options = CompressOptions

    def __init__(self, options: Mapping[str, Any] | None = None, *, device: torch.device | str = "cpu") -> None:
        super().__init__(options, device=device)
        o = self.options
        self.stages: tuple[tuple[int, ...], ...] = ()
        self._stage_modules: list[TeacherStage] = []
        self.probability = o.replace_prob
        self.last_mask: tuple[bool, ...] = ()

    def prepare(self, model: nn.Module) -> None:
        super().prepare(model)
        student = unwrap(model)
        if not hasattr(student, "box_head"):
            raise ConfigError("objective 'compress' needs a MixFormerV2 student (model.kind: mixformerv2)")
        if input_sizes(student) != input_sizes(self.teacher):
            raise ConfigError(
                f"the teacher's inputs (template, search, patch) {input_sizes(self.teacher)} differ from the "
                f"student's {input_sizes(student)}; replacement training feeds both the same crops"
            )
        t_blocks = self.teacher.backbone.blocks
        self.stages = stage_division(len(t_blocks), len(student.backbone.blocks))
        self._stage_modules = [TeacherStage([t_blocks[j] for j in s]) for s in self.stages]
        if self.options.init_from_teacher:
            sources = init_student_from_teacher(student, self.teacher, self.stages, layer=self.options.init_layer)
            log.info("compress: stages %s; student blocks start from teacher blocks %s", list(self.stages), sources)
        student.score_head.requires_grad_(False)

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        o = self.options
        progress = (epoch - 1) / self.total_epochs
        self.probability = replacement_probability(progress, o.replace_prob, o.hold_fraction, o.student_only_fraction,
                                                   o.ramp)
        log.info("epoch %d: replacement probability %.4f", epoch, self.probability)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        student = unwrap(model)
        inputs = (batch["template"], batch["online_template"], batch["search"])
        with torch.no_grad():
            t_out = self.teacher(*inputs)
        self.last_mask = keep_students(sample_replacement(len(self.stages), self.probability), self.options.min_student_blocks)
        with replaced_blocks(student, self._stage_modules, self.last_mask):
            out = model(*inputs)
        pred = cxcywh_to_xyxy(out["pred_boxes"].float())
        t_pred = cxcywh_to_xyxy(t_out["pred_boxes"].float())
        stats: dict[str, float] = {"replace_p": self.probability, "replaced": sum(self.last_mask) / len(self.last_mask)}
        total = pred.sum() * 0.0
        pos = batch["label"] > 0.5
        if bool(pos.any()):
            gt = xywh_to_xyxy(batch["search_box"].float()).clamp(0, 1)
            l1 = l1_loss(pred[pos], gt[pos])
            ciou, iou = ciou_loss(pred[pos], gt[pos])
            total = total + o.l1 * l1 + o.ciou * ciou
            stats.update({"Loss/l1": l1.item(), "Loss/ciou": ciou.item(), "IoU": iou.mean().item()})
        t_l1 = l1_loss(pred, t_pred)
        t_ciou, _ = ciou_loss(pred, t_pred)
        kl = kl_distill_loss([out[f"logits_{e}"].float() for e in EDGES], [t_out[f"prob_{e}"].float() for e in EDGES])
        total = total + o.teacher_l1 * t_l1 + o.teacher_ciou * t_ciou + o.kl * kl
        stats.update({"Loss/teacher_l1": t_l1.item(), "Loss/teacher_ciou": t_ciou.item(), "Loss/kl": kl.item()})
        computed = [i for i, r in enumerate(self.last_mask) if not r]
        if o.feat > 0 and computed:
            feat = torch.stack([
                F.mse_loss(out["features"][i].float(), t_out["features"][self.stages[i][-1]].float()) for i in computed
            ]).mean()
            total = total + o.feat * feat
            stats["Loss/feat"] = feat.item()
        stats["Loss/total"] = total.item()
        return total, stats
