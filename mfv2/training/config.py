"""``TrainConfig``: everything a training run needs, read from YAML (no torch import here).

A YAML file has the sections ``model``, ``data``, ``optim`` and ``objective`` plus a few top-level keys;
unknown keys anywhere are rejected with the list of valid ones. Dataset entries are
``{name, ratio, <reader options>}`` and the objective's ``options`` are checked by the objective itself
(see :mod:`mfv2.training.objectives`). ``--set section.key=value`` on the command line overrides a value.
Every section is a :class:`mfv2.config.Config` (typed, nested ``from_dict``, ``to_dict``, ``replace``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mfv2.config import Config, from_mapping, load_yaml, parse_yaml
from mfv2.errors import ConfigError

__all__ = [
    "ModelSpec",
    "DatasetSpec",
    "DataConfig",
    "OptimConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "load_train_config",
    "apply_overrides",
    "builtin_configs",
]

def _plain(obj: Any) -> Any:
    """YAML-ready data of a config: fields recursively, through a section's own ``to_dict`` where it has one."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if type(obj).to_dict is not Config.to_dict:  # type: ignore[attr-defined]
            return obj.to_dict()  # type: ignore[attr-defined]
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class ModelSpec(Config):
    """The network being trained: ``kind`` (``mixformerv2`` or ``mixvit``), a registered variant, weights.

    ``variant: null`` with a ``checkpoint`` takes the architecture the checkpoint records (e.g. to
    fine-tune a model a route made).
    """

    kind: str = "mixformerv2"
    variant: str | None = "S"
    checkpoint: str | None = None
    drop_path_rate: float = 0.1


@dataclass(frozen=True)
class DatasetSpec(Config):
    """One dataset of the mix: the reader ``name``, its sampling ``ratio`` and the reader's options."""

    name: str
    ratio: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str | None = "dataset") -> DatasetSpec:
        if not isinstance(data, dict) or "name" not in data:
            raise ConfigError(f"{where} must be a mapping with a 'name' (got {data!r})")
        rest = dict(data)
        name, ratio = rest.pop("name"), rest.pop("ratio", 1.0)
        if not isinstance(ratio, (int, float)) or ratio < 0:
            raise ConfigError(f"{where}.ratio must be a number >= 0, got {ratio!r}")
        return cls(str(name), float(ratio), rest)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ratio": self.ratio, **_plain(self.options)}


@dataclass(frozen=True)
class DataConfig(Config):
    """Datasets, sampler and processing.

    ``global_batch_size`` (the official recipes: 256 = 8 GPUs x 32) is split over the processes of the
    run, so the recipe holds on any number of GPUs; when it does not divide by the world size the
    per-process batch is rounded down and the learning rate scaled linearly, with a warning. Without
    it, ``batch_size`` is per process and the global batch grows with the world size.
    ``search_factor`` ``None`` means the official factor of the model's crop size (5.0 for 288-pixel
    search crops, 4.5 otherwise). ``persistent_workers`` keeps the DataLoader workers across epochs.
    """

    datasets: tuple[DatasetSpec, ...] = ()
    val_datasets: tuple[DatasetSpec, ...] = ()
    mode: Literal["causal", "trident", "trident_pro"] = "causal"
    max_gap: int = 200
    pos_prob: float = 0.5
    template_order: Literal["test", "official"] = "test"
    samples_per_epoch: int = 60000
    val_samples: int = 10000
    batch_size: int = 32
    global_batch_size: int | None = None
    num_workers: int = 2
    persistent_workers: bool = True
    template_factor: float = 2.0
    search_factor: float | None = None
    search_scale_jitter: float = 0.5
    search_centre_jitter: float = 4.5
    grayscale_prob: float = 0.05
    joint_flip_prob: float = 0.5
    crop_flip_prob: float = 0.0
    brightness_jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("data.datasets is empty; list at least one dataset, e.g. [{name: synthetic}]")
        for key in ("samples_per_epoch", "batch_size", "max_gap"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ConfigError(f"data.global_batch_size must be >= 1 (or null), got {self.global_batch_size}")
        if self.num_workers < 0 or self.val_samples < 0:
            raise ConfigError("data.num_workers and data.val_samples must be >= 0")
        if self.samples_per_epoch < self.batch_size:
            raise ConfigError(
                f"data.samples_per_epoch ({self.samples_per_epoch}) is smaller than one batch ({self.batch_size})"
            )


@dataclass(frozen=True)
class OptimConfig(Config):
    """AdamW with a backbone learning-rate multiplier, a step schedule and gradient clipping.

    The learning rate is multiplied by ``decay_rate`` every ``lr_drop_epoch`` epochs (the official code
    ignores its DECAY_RATE and always uses 0.1). ``amp`` runs autocast in ``amp_dtype``: ``auto`` is
    fp16 on GPU (with a GradScaler) and bf16 on CPU; ``bf16`` on GPU needs no scaler. An fp16 step
    whose gradients overflow is skipped (the scaler lowers its scale), counted and logged; only
    ``max_skipped_steps`` skips in a row stop the run. Without a scaler a non-finite gradient stops it.
    """

    epochs: int = 500
    lr: float = 4e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    lr_drop_epoch: int = 400
    decay_rate: float = 0.1
    grad_clip: float = 0.1
    amp: bool = False
    amp_dtype: Literal["auto", "fp16", "bf16"] = "auto"
    max_skipped_steps: int = 100

    def __post_init__(self) -> None:
        if self.max_skipped_steps < 1:
            raise ConfigError(f"optim.max_skipped_steps must be >= 1, got {self.max_skipped_steps}")
        if self.epochs < 1 or self.lr_drop_epoch < 1:
            raise ConfigError("optim.epochs and optim.lr_drop_epoch must be >= 1")
        if self.lr <= 0 or self.backbone_lr_mult < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("optim.lr must be > 0; backbone_lr_mult, weight_decay and grad_clip >= 0")


@dataclass(frozen=True)
class ObjectiveConfig(Config):
    """The registered objective ``name`` and its ``options`` (validated by the objective)."""

    name: str = "supervised"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig(Config):
    """A training run.

    Every epoch writes the full state (model, optimiser, scheduler, scaler, RNG) to ``latest.pth``;
    the ``keep_full`` newest full states are kept (``full_ep%04d.pth`` besides ``latest.pth``), older
    ones deleted. Every ``checkpoint_every`` epochs and at the end a weights-only milestone
    ``ep%04d.pth`` is written (a third of a full state's size). ``checkpoint_every``/``val_every`` are
    in epochs (0 = never, except the last epoch); ``official_checkpoint`` also writes
    ``{'net': state_dict}`` files next to the milestones.
    """

    data: DataConfig
    model: ModelSpec = ModelSpec()
    optim: OptimConfig = OptimConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    seed: int = 42
    device: str = "auto"
    output: str | None = None
    checkpoint_every: int = 5
    keep_full: int = 2
    val_every: int = 5
    official_checkpoint: bool = False
    log: Literal["csv", "tensorboard"] = "csv"
    progress: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.keep_full < 1:
            raise ConfigError(f"keep_full must be >= 1 (latest.pth is the resume point), got {self.keep_full}")

    @classmethod
    def from_dict(cls, data: Any, where: str | None = "config") -> TrainConfig:
        if not isinstance(data, dict) or "data" not in data:
            raise ConfigError(f"{where} needs a 'data' section with at least one dataset")
        return from_mapping(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a config mapping."""
    out = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects section.key=value, e.g. optim.epochs=10; got {item!r}")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: the value is not valid YAML") from e
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.get(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {p} is not a section")
            node[p] = dict(child)
            node = node[p]
        node[leaf] = value
    return out


def builtin_configs() -> dict[str, Path]:
    """Name -> path of the YAML configs shipped in ``mfv2/training/configs``."""
    folder = Path(__file__).resolve().parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def load_train_config(path_or_name: str | os.PathLike[str], overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (or the name of a shipped config) into a :class:`TrainConfig`."""
    shipped = builtin_configs()
    key = str(path_or_name)
    path = shipped[key] if key in shipped and not Path(key).exists() else Path(path_or_name)
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist; pass a YAML file or one of: {', '.join(shipped)}")
    return TrainConfig.from_dict(apply_overrides(load_yaml(path), overrides or []), where=str(path))
