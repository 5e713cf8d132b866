"""Distillation routes: stages run in order, each stage's output feeding the next, resumable stage by stage.

A route is a YAML file ``mfv2/training/configs/route_<name>.yaml`` (or any path)::

    name: S
    stages:
      - name: stage1                  # output: <out>/02_stage1/final.pt
        config: distill_stage1        # a TrainConfig YAML (shipped name or path)
        init: {config: {depth: 12, ...}}
        teacher: teacher              # an earlier stage whose output is the frozen teacher
      - name: prune12to8
        config: distill_prune
        init: {from: stage1}
        teacher: stage1
        set: {objective.options.remove_blocks: [0, 3, 6, 9]}

``init`` says how the stage's model starts: ``{variant: NAME}`` or ``{config: {ModelConfig fields}}``
(a fresh MixFormerV2, seeded; add ``backbone_from: STAGE`` to copy that stage's patch embedding and
blocks into it, as the official stage 1 starts from MAE weights), ``{mixvit: NAME | {MixViTConfig
fields}}`` (a fresh MixViT teacher), ``{from: STAGE}`` (the output of an earlier stage) or
``{from: STAGE, mlp_ratio: R}`` (MLP reduction: fc1/fc2 sliced from that output); ``search_factor: F``
with ``from`` records search crops of F target sizes in the model (the stage trains, and the tracker
crops, at F). ``set`` overrides config values (dotted keys). A stage whose objective lists
``remove_blocks`` (``depth_prune``) has those blocks removed after training, and its output is the
shallower model. ``model_name`` names the architecture recorded in the stage output. Stage configs are
looked up as a path, then as ``NAME.yaml`` beside the route file, then among the shipped configs.

Each stage trains in ``<out>/<NN>_<stage>/train`` with :class:`mfv2.training.Trainer` and writes its
model to ``<out>/<NN>_<stage>/final.pt`` (an mfv2 native checkpoint, or an mfv2 MixViT file for a
teacher). A rerun skips stages whose ``final.pt`` exists and resumes a stage from its last epoch.
The last stage's output is copied to ``<out>/final.pt``; ``<out>/log.csv`` gathers every epoch of
every stage.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfv2.config import load_yaml
from mfv2.errors import ConfigError
from mfv2.fileio import atomic_path
from mfv2.training.models import MODEL_KINDS, build_network, read_state
from mfv2.training.routes.spec import (
    CONFIG_DIR,
    Route,
    StageInit,
    StageSpec,
    builtin_routes,
    get_path,
    load_route,
    scale_config,
    set_path,
)

__all__ = [
    "StageInit",
    "StageSpec",
    "Route",
    "PlannedStage",
    "RouteResult",
    "builtin_routes",
    "load_route",
    "scale_config",
    "plan_route",
    "run_route",
    "FINAL",
]

log = logging.getLogger(__name__)

FINAL = "final.pt"


@dataclass(frozen=True)
class PlannedStage:
    """A stage resolved for one run: where it writes, what it starts from, its teacher and its config."""

    index: int
    spec: StageSpec
    folder: Path
    output: Path
    kind: str
    teacher: Path | None
    teacher_kind: str | None
    config: dict[str, Any]
    given: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class RouteResult:
    """The stages of a finished (or stopped) run and the final checkpoint."""

    output: Path
    final: Path | None
    stages: list[PlannedStage]
    history: list[dict[str, Any]] = field(default_factory=list)


def _stage_yaml(route: Route, stage: StageSpec) -> Path:
    """A stage config: a path (relative to the route file or the working folder), else ``NAME.yaml``
    beside the route file, else a shipped config."""
    name = stage.config
    candidates = (route.base_dir / name, Path(name), route.base_dir / f"{name}.yaml", CONFIG_DIR / f"{name}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"stage {stage.name}: config {name!r} is neither a file nor a shipped config")


def plan_route(
    route: Route,
    output: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    overrides: Sequence[str] = (),
    given: Mapping[str, str | os.PathLike[str]] | None = None,
) -> list[PlannedStage]:
    """Resolve every stage of ``route`` for a run in ``output`` without training anything.

    Args:
        route: the route.
        output: the run folder.
        scale: size multiplier (:func:`scale_config`).
        overrides: ``section.key=value`` strings applied to every stage's config last.
        given: stage name -> an existing checkpoint that stands for that stage's output (e.g. a teacher).
    """
    from mfv2.training.config import apply_overrides

    given = dict(given or {})
    unknown = sorted(set(given) - {s.name for s in route.stages})
    if unknown:
        raise ConfigError(f"route {route.name} has no stage {', '.join(unknown)}; stages: {', '.join(s.name for s in route.stages)}")
    out = Path(output)
    plan: list[PlannedStage] = []
    by_name: dict[str, PlannedStage] = {}
    for i, stage in enumerate(route.stages, start=1):
        data = dict(load_yaml(_stage_yaml(route, stage)))
        for key, value in stage.set.items():
            set_path(data, key, copy.deepcopy(value))
        data = apply_overrides(scale_config(data, scale), list(overrides))
        source = by_name[stage.init.source] if stage.init.source else None
        kind = stage.init.kind or (source.kind if source else "mixformerv2")
        set_path(data, "model.kind", kind)
        teacher = by_name[stage.teacher] if stage.teacher else None
        if teacher is not None:
            set_path(data, "objective.options.teacher_kind", teacher.kind)
            set_path(data, "objective.options.teacher_checkpoint", str(teacher.output))
            set_path(data, "objective.options.teacher_variant", None)
        if stage.name not in given:
            _check_decay(stage.name, data)
        folder = out / f"{i:02d}_{stage.name}"
        path = Path(given[stage.name]) if stage.name in given else folder / FINAL
        planned = PlannedStage(i, stage, folder, path, kind, teacher.output if teacher else None,
                               teacher.kind if teacher else None, data, stage.name in given)
        plan.append(planned)
        by_name[stage.name] = planned
    return plan


def _check_decay(name: str, config: Mapping[str, Any]) -> None:
    """Refuse a stage that removes blocks whose residual scale gamma has not reached 0 by its last epoch."""
    from mfv2.training.pruning import depth_gamma

    remove, decay = get_path(config, "objective.options.remove_blocks"), get_path(config, "objective.options.decay_epochs")
    epochs = get_path(config, "optim.epochs")
    if not remove or not isinstance(epochs, int):
        return
    m = 40.0 if decay is None else float(decay)
    gamma = depth_gamma(epochs, m) if m > 0 else 0.0
    if gamma > 0:
        raise ConfigError(
            f"stage {name} removes blocks {list(remove)} after {epochs} epochs, but their residual scale gamma is "
            f"still {gamma:.4f} then (it reaches 0 at epoch {m:g}); set optim.epochs >= "
            f"objective.options.decay_epochs"
        )


def _init_checkpoint(stage: PlannedStage, plan: Mapping[str, PlannedStage], seed: int) -> Path:
    """The checkpoint the stage's trainer builds its model from (written for fresh and sliced models)."""
    import torch

    from mfv2.training.pruning import slice_mlp

    init = stage.spec.init
    path = _init_checkpoint_path(stage, plan)
    if path != stage.folder / "init.pt":
        return path
    stage.folder.mkdir(parents=True, exist_ok=True)
    meta = {"route_stage": stage.name, "init": "fresh"}
    kind = MODEL_KINDS.get(stage.kind)
    torch.manual_seed(seed)
    if init.source is not None:
        model: Any = build_network(stage.kind, None, plan[init.source].output)
        how = f"from {init.source}"
        if init.mlp_ratio is not None:
            model, how = slice_mlp(model, float(init.mlp_ratio)), f"mlp sliced from {init.source}"
        cfg = model.config
        if init.search_factor is not None:
            cfg, how = cfg.replace(search_factor=float(init.search_factor)), f"{how}, search factor {init.search_factor:g}"
        model.config = kind.named(cfg, stage.spec.model_name)
        return kind.save(model, path, {**meta, "init": how})
    model = kind.create(kind.named(kind.config(init.fresh), stage.spec.model_name))
    if init.backbone_from is not None:
        source = plan[init.backbone_from]
        sd = model.state_dict()
        sd.update(_backbone_weights(source.output, source.kind, sd))
        model.load_state_dict(sd)
        meta["init"] = f"backbone from {init.backbone_from}"
    if init.mae is not None:
        from mfv2.training.mae import mae_backbone_weights

        sd = model.state_dict()
        sd.update(mae_backbone_weights(init.mae, sd))
        model.load_state_dict(sd)
        meta["init"] = f"backbone from MAE {init.mae}"
    return kind.save(model, path, meta)


def _backbone_weights(path: Path, kind: str, student: Mapping[str, Any]) -> dict[str, Any]:
    """The patch embedding and block weights of the model at ``path`` for the student keys ``student``."""
    sd = read_state(kind, path)
    keys = [k for k in student if k.startswith(("backbone.patch_embed.", "backbone.blocks."))]
    bad = [k for k in keys if k not in sd or tuple(sd[k].shape) != tuple(student[k].shape)]
    if bad:
        raise ConfigError(
            f"backbone_from {path}: {len(bad)} student backbone weights are missing or differ in shape there "
            f"(e.g. {bad[0]}); the models need the same width, MLP ratio and patch size, and at least as many blocks"
        )
    return {k: sd[k] for k in keys}


def _init_checkpoint_path(stage: PlannedStage, plan: Mapping[str, PlannedStage]) -> Path:
    """An earlier stage's output, or the ``init.pt`` :func:`_init_checkpoint` writes in the stage folder."""
    init = stage.spec.init
    if init.source is not None and init.mlp_ratio is None and init.search_factor is None:
        return plan[init.source].output
    return stage.folder / "init.pt"


def _train_config(stage: PlannedStage, init: Path) -> Any:
    from mfv2.training.config import TrainConfig

    data = copy.deepcopy(stage.config)
    set_path(data, "model.checkpoint", str(init))
    # ModelSpec.variant is typed str; the architecture comes from the init checkpoint (variant None).
    set_path(data, "model.variant", "S")
    cfg = TrainConfig.from_dict(data, where=f"stage {stage.name}")
    return cfg.replace(model=dataclasses.replace(cfg.model, variant=None), output=None)  # type: ignore[arg-type]


def _finish(stage: PlannedStage, trained: Path, meta: dict[str, Any]) -> Path:
    """Write the stage output from its last training checkpoint (removing eliminated blocks)."""
    from mfv2.training.pruning import remove_blocks

    kind = MODEL_KINDS.get(stage.kind)
    model: Any = build_network(stage.kind, None, trained)
    remove = get_path(stage.config, "objective.options.remove_blocks")
    if remove:  # only depth_prune lists blocks to remove, and it trains a MixFormerV2
        depth = model.config.depth
        model = remove_blocks(model, [int(i) for i in remove])
        log.info("stage %s: removed blocks %s, %d -> %d blocks", stage.name, list(remove), depth, model.config.depth)
        meta = {**meta, "removed_blocks": [int(i) for i in remove]}
    model.config = kind.named(model.config, stage.spec.model_name)
    return kind.save(model, stage.output, meta)


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_route_log(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def run_route(
    route: Route,
    output: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    overrides: Sequence[str] = (),
    given: Mapping[str, str | os.PathLike[str]] | None = None,
    stop_after: str | None = None,
    progress: bool | None = None,
) -> RouteResult:
    """Run (or continue) every stage of ``route`` in ``output``; see :func:`plan_route` for the arguments.

    ``stop_after`` ends the run after that stage. Returns the planned stages, the merged history and
    ``<output>/final.pt`` once the last stage is done.
    """
    from mfv2.training.distributed import cleanup_distributed, setup_distributed

    if stop_after is not None:
        route.stage(stop_after)
    plan = plan_route(route, output, scale=scale, overrides=overrides, given=given)
    for stage in plan:
        if stage.given and not stage.output.is_file():
            raise ConfigError(f"stage {stage.name}: the given checkpoint {stage.output} does not exist")
    # Under torchrun every process runs the route; rank 0 alone writes the files between stages.
    dist, _ = setup_distributed(str(plan[-1].config.get("device", "auto")))
    try:
        history = _run_stages(route, plan, scale=scale, stop_after=stop_after, progress=progress, dist=dist)
    finally:
        cleanup_distributed(dist)
    out = Path(output)
    final = None
    last = plan[-1]
    if dist.is_main and history:
        _write_route_log(out / "log.csv", history)
    if last.output.is_file():
        final = out / FINAL
        if dist.is_main:
            with atomic_path(final) as tmp:
                shutil.copyfile(last.output, tmp)
    return RouteResult(out, final, plan, history)


def _needed_stages(plan: Sequence[PlannedStage], stop_after: str | None) -> set[str]:
    """Names of the stages a run must train or read: the target stage and, from it backwards, whatever a
    stage without an output starts from or learns from. A given or finished stage needs nothing earlier."""
    target = len(plan) - 1 if stop_after is None else [p.name for p in plan].index(stop_after)
    needed = {plan[target].name}
    for stage in reversed(plan[: target + 1]):
        if stage.name in needed and not stage.output.is_file():
            init = stage.spec.init
            needed.update(n for n in (init.source, init.backbone_from, stage.spec.teacher) if n is not None)
    return needed


def _run_stages(
    route: Route, plan: list[PlannedStage], *, scale: float, stop_after: str | None, progress: bool | None, dist: Any
) -> list[dict[str, Any]]:
    """Train the stages that have no output yet; returns every stage's epoch rows."""
    from mfv2.fileio import sha256
    from mfv2.training.checkpoints import LATEST, checkpoint_dir
    from mfv2.training.distributed import barrier
    from mfv2.training.trainer import Trainer

    by_name = {p.name: p for p in plan}
    needed = _needed_stages(plan, stop_after)
    Path(plan[0].folder.parent).mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    for stage in plan:
        say = log.info if dist.is_main else log.debug
        if stage.output.is_file():
            say("stage %d/%d %s: using %s", stage.index, len(plan), stage.name, stage.output)
        elif stage.name not in needed:
            say("stage %d/%d %s: not needed, the stages after it have their inputs", stage.index, len(plan), stage.name)
        else:
            say("stage %d/%d %s: training in %s", stage.index, len(plan), stage.name, stage.folder)
            seed = int(stage.config.get("seed", 42))
            if dist.is_main:
                _init_checkpoint(stage, by_name, seed)
            barrier(dist)
            cfg = _train_config(stage, _init_checkpoint_path(stage, by_name))
            train_dir = stage.folder / "train"
            resume = (checkpoint_dir(train_dir) / LATEST).is_file()
            Trainer(cfg, train_dir, resume=resume, progress=progress).fit()
            if dist.is_main:
                teacher = None if stage.teacher is None else {"path": str(stage.teacher), "sha256": sha256(stage.teacher)}
                meta = {"route": route.name, "stage": stage.name, "epochs": cfg.optim.epochs, "scale": scale,
                        "teacher": teacher}
                _finish(stage, checkpoint_dir(train_dir) / LATEST, meta)
            barrier(dist)
        history += [{"stage": stage.name, **row} for row in _read_log(stage.folder / "train" / "log.csv")]
        if stage.name == stop_after:
            break
    return history
