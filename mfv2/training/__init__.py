"""Training: dataset readers, samplers and processing, losses, objectives and the (DDP-capable) trainer.

Needs torch. ``mfv2 train --config CFG.yaml`` is the command-line entry point; in Python::

    from mfv2.training import Trainer, load_train_config

    result = Trainer(load_train_config("tiny_synthetic"), "runs/tiny").fit()

Bugs and quirks of the official MixFormerV2 training code (spec section 7) fixed here:

* no ``.cuda()`` anywhere: CPU, one GPU or ``torchrun`` on NCCL/gloo (quirk 1);
* one objective call per step, so AMP (bf16 on CPU, fp16 on GPU) and every stage run (quirks 4, AMP crash);
* the teacher's 72-bin marginals are resampled for 96-bin students (quirk 5, :mod:`.losses`);
* ``decay_rate`` is honoured by the step schedule (quirk 6, :class:`.config.OptimConfig`);
* templates keep their test-time roles and crops are not flipped apart from each other (quirk 7,
  :mod:`.data.sampler`, :mod:`.data.processing`; ``template_order: official`` restores the swap);
* ground truth is clamped to the crop and CIoU has an epsilon, so it cannot NaN (quirks 8-9);
* checkpoints are plain dicts (``weights_only`` loading) written atomically; resume is exact.
"""

from mfv2.training.config import TrainConfig, apply_overrides, builtin_configs, load_train_config
from mfv2.training.objectives import OBJECTIVES, DistillObjective, Objective, SupervisedObjective, build_objective
from mfv2.training.trainer import Trainer, TrainResult, build_sampler, param_groups

__all__ = [
    "TrainConfig",
    "load_train_config",
    "apply_overrides",
    "builtin_configs",
    "Trainer",
    "TrainResult",
    "build_sampler",
    "param_groups",
    "Objective",
    "OBJECTIVES",
    "build_objective",
    "SupervisedObjective",
    "DistillObjective",
]
