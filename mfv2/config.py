"""Typed configuration: the one config base, the model architecture and the online tracker, YAML I/O."""

from __future__ import annotations

import dataclasses
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from mfv2.errors import ConfigError
from mfv2.fileio import atomic_write_text
from mfv2.registry import Registry

__all__ = [
    "Config",
    "from_mapping",
    "ModelConfig",
    "MVTConfig",
    "MVT_VARIANTS",
    "FamilyConfig",
    "family_variant_config",
    "TrackerConfig",
    "ExportConfig",
    "VARIANTS",
    "variant_config",
    "load_yaml",
    "parse_yaml",
    "save_yaml",
]

C = TypeVar("C", bound="Config")
T = TypeVar("T")


def from_mapping(cls: type[T], data: Any, where: str | None = None) -> T:
    """Instantiate a (possibly nested) config dataclass from a mapping, typed and strict.

    Unknown keys are rejected with the list of valid ones; values are checked against the field's
    type hint (``int``, ``float``, ``str``, ``bool``, ``X | None``, ``tuple[X, ...]``, ``Literal``,
    ``dict``) and nested dataclasses are built the same way. ``where`` names the mapping in errors
    (default: the class name); nested fields are named ``where.field``.
    """
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad {where}: {e}") from e


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint.from_dict(value, where) if issubclass(hint, Config) else from_mapping(hint, value, where)
    if origin is tuple and value is not None:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, where)
        # Several types (``str | ModelConfig``): a mapping builds the dataclass among them, other values stay.
        nested = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
        return _convert(nested[0], value, where) if nested and isinstance(value, Mapping) else value
    if origin is dict and not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where} must be one of {', '.join(map(str, typing.get_args(hint)))}, got {value!r}")
        return value
    if hint is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # numpy integers too
    if hint in (int, str, bool) and type(value) is not hint:
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


class Config:
    """The base of every config dataclass: typed, nested ``from_dict`` (:func:`from_mapping`), a
    ``to_dict`` that round-trips, and ``replace``."""

    @classmethod
    def from_dict(cls: type[C], data: Any, where: str | None = None) -> C:
        return from_mapping(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes``; an unknown name is a :class:`ConfigError` listing the valid ones."""
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ConfigError(f"unknown {type(self).__name__} option(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class ModelConfig(Config):
    """Architecture of a MixFormerV2 network.

    The released variants are ``S`` (depth 4, MLP ratio 1, 112/224 crops) and ``B`` (depth 8, MLP
    ratio 4, 128/288 crops); any other combination serves training, distillation and tests.
    ``search_factor`` / ``template_factor`` record the crop factors a network was trained with when
    they differ from the official ones (``None``: template 2.0; search 4.5, or 5.0 for 288-pixel
    search crops); the tracker crops with them.
    """

    name: str = "S"
    depth: int = 4
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 1.0
    patch_size: int = 16
    template_size: int = 112
    search_size: int = 224
    num_bins: int = 96
    search_factor: float | None = None
    template_factor: float | None = None

    def __post_init__(self) -> None:
        for key in ("search_factor", "template_factor"):
            if getattr(self, key) is not None and not getattr(self, key) > 0:
                raise ConfigError(f"ModelConfig.{key} must be positive (or null for the official factor), got {getattr(self, key)}")
        for key in ("depth", "embed_dim", "num_heads", "patch_size", "template_size", "search_size", "num_bins"):
            if getattr(self, key) < 1:
                raise ConfigError(f"ModelConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if (self.embed_dim // 2) % 2:
            raise ConfigError(f"embed_dim {self.embed_dim} must be a multiple of 4 for the 2-D sin-cos tables")
        for key in ("template_size", "search_size"):
            if getattr(self, key) % self.patch_size:
                raise ConfigError(f"{key} {getattr(self, key)} is not a multiple of patch_size {self.patch_size}")
        if self.mlp_hidden < 1:
            raise ConfigError(f"mlp_ratio {self.mlp_ratio} gives an empty MLP")

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.embed_dim * self.mlp_ratio))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def template_grid(self) -> int:
        return self.template_size // self.patch_size

    @property
    def search_grid(self) -> int:
        return self.search_size // self.patch_size

    @property
    def num_template_tokens(self) -> int:
        """Tokens of one template image (49 for S, 64 for B)."""
        return self.template_grid**2

    @property
    def num_search_tokens(self) -> int:
        return self.search_grid**2

    def describe(self) -> str:
        factors = "".join(f", {k.split('_')[0]} factor {v:g}" for k in ("template_factor", "search_factor")
                          if (v := getattr(self, k)) is not None)  # fmt: skip
        return (
            f"depth {self.depth}, width {self.embed_dim}, MLP ratio {self.mlp_ratio:g}, "
            f"template {self.template_size}, search {self.search_size}, {self.num_bins} bins{factors}"
        )


VARIANTS: Registry[ModelConfig] = Registry("model variant")
VARIANTS.add("S", ModelConfig(name="S", depth=4, mlp_ratio=1.0, template_size=112, search_size=224))
VARIANTS.add("B", ModelConfig(name="B", depth=8, mlp_ratio=4.0, template_size=128, search_size=288))
# Training-time teachers and students of the distillation routes (official layouts, 96 bins).
VARIANTS.add("B12", ModelConfig(name="B12", depth=12, mlp_ratio=4.0, template_size=128, search_size=288))
VARIANTS.add("S8", ModelConfig(name="S8", depth=8, mlp_ratio=4.0, template_size=112, search_size=224))
VARIANTS.add("S4", ModelConfig(name="S4", depth=4, mlp_ratio=4.0, template_size=112, search_size=224))
# A two-block toy for tests and smoke runs (64-d heads like every released model, so it is detectable).
VARIANTS.add(
    "tiny",
    ModelConfig(
        name="tiny", depth=2, embed_dim=128, num_heads=2, mlp_ratio=2.0, template_size=32, search_size=64, num_bins=16
    ),
)


@dataclass(frozen=True)
class MVTConfig(Config):
    """Architecture of an MVT network (MobileViT-S backbone, pixel-wise correlation, centre head).

    The backbone widths are fixed (MobileViT-S); the input sizes set the feature grids (stride 16),
    and the template grid fixes the correlation channels (``(template_size / 16) ** 2``, 64 at 128).
    ``template_factor`` / ``search_factor`` are the crop factors of the official tracker (2 and 4).
    """

    name: str = "MVT"
    template_size: int = 128
    search_size: int = 256
    head_channels: int = 256
    template_factor: float = 2.0
    search_factor: float = 4.0

    def __post_init__(self) -> None:
        for key in ("template_size", "search_size"):
            if getattr(self, key) < 32 or getattr(self, key) % 32:
                raise ConfigError(f"MVTConfig.{key} must be a positive multiple of 32 (stride 16, 2x2 patches), got {getattr(self, key)}")
        if self.head_channels < 1:
            raise ConfigError(f"MVTConfig.head_channels must be >= 1, got {self.head_channels}")
        if not (self.template_factor > 0 and self.search_factor > 0):
            raise ConfigError("MVTConfig crop factors must be positive")

    @property
    def stride(self) -> int:
        return 16

    @property
    def feat_size(self) -> int:
        """Side of the search feature map and of the score map (16 at 256)."""
        return self.search_size // self.stride

    @property
    def corr_channels(self) -> int:
        """Template positions, one correlation channel each (64 at 128)."""
        return (self.template_size // self.stride) ** 2

    def describe(self) -> str:
        return f"MobileViT-S, template {self.template_size}, search {self.search_size}, head {self.head_channels}"


MVT_VARIANTS: Registry[MVTConfig] = Registry("MVT variant")
MVT_VARIANTS.add("MVT", MVTConfig())


#: The architecture config of any model family.
FamilyConfig = ModelConfig | MVTConfig


def family_variant_config(variant: str | FamilyConfig) -> FamilyConfig:
    """The config of a variant name from any family's table (MixFormerV2's, MVT's), or ``variant`` itself."""
    if not isinstance(variant, str):
        return variant
    return MVT_VARIANTS.get(variant) if variant in MVT_VARIANTS else VARIANTS.get(variant)


def variant_config(variant: str | ModelConfig) -> ModelConfig:
    """The :class:`ModelConfig` of a registered variant name, or ``variant`` itself."""
    if isinstance(variant, ModelConfig):
        return variant
    return VARIANTS.get(variant)


# Update interval of the official per-dataset yaml files, (S, B).
_UPDATE_INTERVALS: dict[str, tuple[int, int]] = {
    "lasot": (200, 200),
    "got10k": (15, 10),
    "trackingnet": (25, 25),
    "vot20": (10, 10),
    "vot20lt": (200, 200),
    "otb": (200, 200),
    "uav": (200, 200),
    "nfs": (200, 200),
    "tnl2k": (200, 200),
    "synthetic": (200, 200),
}
# Search factors the official test scripts pass on the command line for S (B uses 5.0 everywhere).
_S_SEARCH_FACTORS: dict[str, float] = {"lasot": 4.4, "trackingnet": 4.55, "got10k": 4.55}


def _b_sized(variant: str | FamilyConfig) -> bool:
    if isinstance(variant, MVTConfig):
        return False  # MVT's crop factors are its own (MVTConfig records them)
    cfg = variant if isinstance(variant, ModelConfig) else VARIANTS.get(variant) if variant in VARIANTS else None
    return cfg.search_size >= 288 if cfg is not None else str(variant).upper().startswith("B")


@dataclass(frozen=True)
class TrackerConfig(Config):
    """Behaviour of the online tracker; defaults are the official MixFormerV2-S settings.

    ``online_size`` is the number of online templates kept (the official code crashes above 1).
    ``lost_threshold`` is the score below which ``update`` reports ``ok = False``. It defaults to 0
    (never lost): the demo model's score separates frames with IoU > 0.5 from the rest with ROC AUC
    0.52 on clip families it never saw (benchmarks/demo_model/README.md), so no threshold gives a
    useful lost flag for it; set one for a model whose score has been measured.
    """

    template_factor: float = 2.0
    search_factor: float = 4.5
    update_interval: int = 200
    update_threshold: float = 0.5
    online_size: int = 1
    max_score_decay: float = 1.0
    lost_threshold: float = 0.0
    clip_margin: int = 10

    def __post_init__(self) -> None:
        if self.template_factor <= 0 or self.search_factor <= 0:
            raise ConfigError("crop factors must be positive")
        if self.update_interval < 1:
            raise ConfigError(f"update_interval must be >= 1, got {self.update_interval}")
        if self.online_size < 1:
            raise ConfigError(f"online_size must be >= 1, got {self.online_size}")
        if not 0.0 <= self.lost_threshold <= 1.0:
            raise ConfigError(f"lost_threshold is a probability in [0, 1], got {self.lost_threshold}")

    @classmethod
    def preset(cls, dataset: str, variant: str | FamilyConfig = "S") -> TrackerConfig:
        """The official settings for ``dataset`` (lasot, got10k, trackingnet, vot20, otb, uav, ...).

        ``variant`` picks the size class: B-sized models (288-pixel search crops) use the B yaml
        (search factor 5.0), every other model the S one. A :class:`ModelConfig` that records its own
        crop factors keeps them (only the update interval comes from the preset).
        """
        key = dataset.lower().replace("-", "").replace("_", "")
        if key not in _UPDATE_INTERVALS:
            raise ConfigError(f"no tracker preset for {dataset!r}; known: {', '.join(_UPDATE_INTERVALS)}")
        small = not _b_sized(variant)
        interval = _UPDATE_INTERVALS[key][0 if small else 1]
        factor = _S_SEARCH_FACTORS.get(key, 4.5) if small else 5.0
        return cls(search_factor=factor, update_interval=interval).adapted_to(variant)

    @classmethod
    def for_model(cls, model: FamilyConfig) -> TrackerConfig:
        """The default tracker of a model: the official yaml of its size class (search factor 4.5 or 5.0),
        with the crop factors the model records."""
        return (cls(search_factor=5.0) if _b_sized(model) else cls()).adapted_to(model)

    def adapted_to(self, model: str | FamilyConfig) -> TrackerConfig:
        """These settings with the crop factors ``model`` was trained with, when it records them
        (a variant name records none)."""
        if isinstance(model, str):
            return self
        changes = {k: v for k in ("search_factor", "template_factor") if (v := getattr(model, k)) is not None}
        return self.replace(**changes) if changes else self

    @classmethod
    def presets(cls) -> list[str]:
        return list(_UPDATE_INTERVALS)


@dataclass(frozen=True)
class ExportConfig(Config):
    """What :func:`mfv2.export` writes (see its docstring for each option).

    ``precisions`` and ``openvino`` take a list or a comma-separated string; the pipeline checks them,
    the opset and the simplifier against the format table (:mod:`mfv2.artifacts`) before any work.
    """

    variant: str | ModelConfig | None = None
    batch: int | Literal["dynamic"] = 1
    opset: int = 17
    allow_low_opset: bool = False
    precisions: tuple[str, ...] = ("fp32",)
    openvino: tuple[str, ...] = ()
    simplify: Literal["onnxsim", "onnxslim", "none"] = "onnxsim"
    tracker: TrackerConfig | None = None
    seed: int = 0
    overwrite: bool = False
    skip_failed: bool = False

    def __post_init__(self) -> None:
        for key in ("precisions", "openvino"):  # a list, a tuple or "fp32,fp16"
            value = getattr(self, key)
            object.__setattr__(self, key, tuple(value.split(",")) if isinstance(value, str) else tuple(value))
        if self.batch != "dynamic" and (not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1):
            raise ConfigError(f"batch must be a positive integer, got {self.batch!r} (or 'dynamic' for a dynamic batch)")


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's floats: ``1e-4`` is a number, not the string PyYAML's
    YAML 1.1 rules make of an exponent without a decimal point."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text as the configs are read (safe, ``1e-4`` a float)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506  (a SafeLoader subclass)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = parse_yaml(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def save_yaml(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as YAML atomically (temporary file, then rename)."""
    return atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
