"""Training objectives ("actors"): run the network on a batch and return ``(loss, stats)``.

One module per objective, each registering in :data:`OBJECTIVES` when imported here:

* ``supervised`` (:mod:`.supervised`): ground-truth boxes (and scores) for a MixFormerV2 or a MixViT teacher;
* ``distill`` and ``dense_to_sparse`` (:mod:`.distill`): a MixFormerV2 student against a frozen teacher,
  MixFormerV2 stage 1 and MLP reduction;
* ``depth_prune`` (:mod:`.depth_prune`): MixFormerV2 stage 2, progressive model depth pruning;
* ``score`` (:mod:`.score`): the score-head stage;
* ``compress`` (:mod:`.compresstracker`): CompressTracker replacement training;
* ``loretrack`` (:mod:`.loretrack`): LoReTrack low-resolution distillation.

A new objective is a module here with an ``@OBJECTIVES.register(NAME)`` class and one import line below.
"""

from mfv2.training.objectives.base import (
    EDGES,
    OBJECTIVES,
    Batch,
    Objective,
    TeacherObjective,
    TeacherOptions,
    build_objective,
    freeze_score_head,
    unwrap,
)
from mfv2.training.objectives.compresstracker import CompressObjective, CompressOptions
from mfv2.training.objectives.depth_prune import DepthPruneObjective, DepthPruneOptions, PrunePlan, prune_plan
from mfv2.training.objectives.distill import DenseToSparseObjective, DistillObjective, DistillOptions
from mfv2.training.objectives.loretrack import LoReTrackObjective, LoReTrackOptions
from mfv2.training.objectives.score import ScoreObjective, ScoreOptions
from mfv2.training.objectives.supervised import SupervisedObjective, SupervisedOptions, box_losses

__all__ = [
    "EDGES",
    "OBJECTIVES",
    "Batch",
    "Objective",
    "TeacherObjective",
    "TeacherOptions",
    "build_objective",
    "freeze_score_head",
    "unwrap",
    "SupervisedObjective",
    "SupervisedOptions",
    "box_losses",
    "DistillObjective",
    "DistillOptions",
    "DenseToSparseObjective",
    "DepthPruneObjective",
    "DepthPruneOptions",
    "PrunePlan",
    "prune_plan",
    "ScoreObjective",
    "ScoreOptions",
    "CompressObjective",
    "CompressOptions",
    "LoReTrackObjective",
    "LoReTrackOptions",
]
