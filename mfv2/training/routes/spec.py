"""The route file format: stages, how each stage's model starts, its teacher, and small-run scaling.

A route is a YAML file ``mfv2/training/configs/route_<name>.yaml`` (or any path); see
:mod:`mfv2.training.routes` for the keys and for running one.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfv2.config import load_yaml
from mfv2.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "StageInit",
    "StageSpec",
    "Route",
    "builtin_routes",
    "load_route",
    "set_path",
    "get_path",
    "scale_config",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class StageInit:
    """How a stage's model starts: exactly one of ``source`` (an earlier stage), ``variant``, ``config``, ``mixvit``.

    ``mlp_ratio`` (with ``source``) slices the MLPs; ``search_factor`` (with ``source``) records a new
    search crop factor in the model, so that the stage trains and the tracker crops at it;
    ``backbone_from`` (with ``variant`` or ``config``) copies the patch embedding and blocks of an earlier
    stage's model (MixViT or MixFormerV2) into the fresh student; ``mae`` copies them from an MAE ViT file
    instead (:mod:`mfv2.training.mae`), as the official stage 1 does, also when the student's width differs
    from its teacher's.
    """

    source: str | None = None
    mlp_ratio: float | None = None
    variant: str | None = None
    config: Mapping[str, Any] | None = None
    mixvit: str | Mapping[str, Any] | None = None
    backbone_from: str | None = None
    mae: str | None = None
    search_factor: float | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> StageInit:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping such as {{from: stage1}} or {{variant: S}}, got {data!r}")
        valid = {"from", "mlp_ratio", "search_factor", "variant", "config", "mixvit", "backbone_from", "mae"}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(sorted(valid))}")
        init = cls(source=data.get("from"), **{k: data.get(k) for k in valid - {"from"}})
        given = [k for k in ("source", "variant", "config", "mixvit") if getattr(init, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where} needs exactly one of from, variant, config, mixvit (got {len(given)})")
        if init.mlp_ratio is not None and init.source is None:
            raise ConfigError(f"{where}: mlp_ratio slices the MLPs of an earlier stage's model; add from: STAGE")
        factor = init.search_factor
        if factor is not None and (init.source is None or not isinstance(factor, (int, float)) or factor <= 0):
            raise ConfigError(f"{where}: search_factor re-records a positive crop factor in an earlier stage's model "
                              "(with from: STAGE); a fresh model takes it in config")
        for key in ("backbone_from", "mae"):
            if getattr(init, key) is not None and init.kind != "mixformerv2":
                raise ConfigError(f"{where}: {key} initialises a fresh MixFormerV2; use it with variant or config")
        if init.backbone_from is not None and init.mae is not None:
            raise ConfigError(f"{where}: give backbone_from or mae, not both (both set the patch embedding and blocks)")
        return init

    @property
    def kind(self) -> str | None:
        """``mixvit`` or ``mixformerv2`` for a fresh model, ``None`` when inherited from a stage."""
        if self.source is not None:
            return None
        return "mixvit" if self.mixvit is not None else "mixformerv2"

    @property
    def fresh(self) -> str | Mapping[str, Any]:
        """The variant name or config fields of a fresh model (``mixvit``, ``variant`` or ``config``)."""
        if self.source is not None:
            raise ValueError("a stage that starts from an earlier stage has no fresh model")
        spec = self.mixvit if self.mixvit is not None else self.variant
        return spec if spec is not None else dict(self.config or {})


@dataclass(frozen=True)
class StageSpec:
    """One stage of a route (see the module docstring for the keys)."""

    name: str
    config: str
    init: StageInit
    teacher: str | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    model_name: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Route:
    """A named sequence of stages; ``base_dir`` resolves relative stage-config paths."""

    name: str
    stages: tuple[StageSpec, ...]
    description: str = ""
    base_dir: Path = CONFIG_DIR

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path = CONFIG_DIR, where: str = "route") -> Route:
        unknown = sorted(set(data) - {"name", "description", "stages"})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: name, description, stages")
        raw = data.get("stages")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where} needs a non-empty list 'stages'")
        stages: list[StageSpec] = []
        for i, s in enumerate(raw):
            w = f"{where}.stages[{i}]"
            if not isinstance(s, dict) or not {"name", "config", "init"} <= set(s):
                raise ConfigError(f"{w} must be a mapping with name, config and init")
            valid = {f.name for f in dataclasses.fields(StageSpec)}
            bad = sorted(set(s) - valid)
            if bad:
                raise ConfigError(f"unknown key(s) {', '.join(bad)} in {w}; valid keys: {', '.join(sorted(valid))}")
            stage = StageSpec(
                name=str(s["name"]), config=str(s["config"]), init=StageInit.from_dict(s["init"], f"{w}.init"),
                teacher=s.get("teacher"), set=dict(s.get("set") or {}), model_name=s.get("model_name"),
                description=str(s.get("description", "")),
            )
            earlier = [t.name for t in stages]
            if stage.name in earlier:
                raise ConfigError(f"{w}: stage name {stage.name!r} is used twice")
            refs = ((stage.teacher, "teacher"), (stage.init.source, "init.from"), (stage.init.backbone_from, "init.backbone_from"))
            for ref, what in refs:
                if ref is not None and ref not in earlier:
                    raise ConfigError(f"{w}.{what}: {ref!r} is not an earlier stage (earlier: {', '.join(earlier) or 'none'})")
            stages.append(stage)
        return cls(str(data.get("name", "route")), tuple(stages), str(data.get("description", "")), base_dir)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"route {self.name} has no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")


def builtin_routes() -> dict[str, Path]:
    """Route name (lower case) -> path of the ``route_*.yaml`` files shipped in ``mfv2/training/configs``."""
    return {p.stem.removeprefix("route_").lower(): p for p in sorted(CONFIG_DIR.glob("route_*.yaml"))}


def load_route(name_or_path: str | os.PathLike[str]) -> Route:
    """A shipped route by name (``B``, ``S``, ``demo_s``; any case) or a route YAML file."""
    shipped = builtin_routes()
    key = str(name_or_path)
    path = shipped[key.lower()] if key.lower() in shipped and not Path(key).is_file() else Path(key)
    if not path.is_file():
        raise ConfigError(f"route {key!r} is neither a shipped route ({', '.join(shipped)}) nor a YAML file")
    return Route.from_dict(load_yaml(path), path.resolve().parent, str(path))


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted = "a.b.c"``, creating missing sections."""
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {p} is not a section")
        node = child
    node[leaf] = value


def get_path(data: Mapping[str, Any], dotted: str) -> Any:
    """``data[a][b][c]`` for ``dotted = "a.b.c"``, or ``None`` when a key is missing."""
    node: Any = data
    for p in dotted.split("."):
        if not isinstance(node, Mapping) or p not in node:
            return None
        node = node[p]
    return node


def scale_config(data: Mapping[str, Any], scale: float) -> dict[str, Any]:
    """A copy of a stage config mapping for a run ``scale`` times the size, for small runs.

    Epoch counts (``optim.epochs``, ``optim.lr_drop_epoch``, ``checkpoint_every``, ``val_every``, the
    pruning decay ``objective.options.decay_epochs``, shortened with the epochs when they round down,
    so a decay never outlasts its run) and sample counts (``data.samples_per_epoch``,
    ``data.val_samples``) are multiplied by ``scale``; counts stay >= 1 and an epoch holds at least
    one batch. ``scale = 0.01`` turns 500 epochs of 60k samples into 5 epochs of 600.
    """
    if not scale > 0:
        raise ConfigError(f"--scale must be > 0, got {scale}")
    out = copy.deepcopy(dict(data))
    if scale == 1:
        return out

    def scaled(key: str, minimum: float, integer: bool = True) -> None:
        value = get_path(out, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            v = value * scale
            set_path(out, key, max(minimum, round(v)) if integer else max(v, 1e-6))

    epochs = get_path(out, "optim.epochs")
    for key in ("optim.epochs", "optim.lr_drop_epoch"):
        scaled(key, 1)
    for key in ("checkpoint_every", "val_every"):
        scaled(key, 1)
    scaled("objective.options.decay_epochs", 0, integer=False)
    decay = get_path(out, "objective.options.decay_epochs")
    if isinstance(epochs, int) and epochs > 0 and isinstance(decay, float):
        # Rounding the epochs down must not leave a decay longer than the run (blocks removed at gamma > 0).
        set_path(out, "objective.options.decay_epochs", min(decay, get_path(out, "optim.epochs") * decay / (epochs * scale)))
    batch = get_path(out, "data.batch_size") or 32
    scaled("data.samples_per_epoch", batch)
    scaled("data.val_samples", 1)
    return out
