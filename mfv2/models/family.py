"""The model-family registry: what ``build_model`` and ``read_checkpoint`` need to know about a family.

A family (MixFormerV2, MVT, ...) registers one :class:`ModelFamily` with :func:`register_family` when its
package is imported; :mod:`mfv2.models` imports every family package explicitly. Nothing here imports a
family, so the factory and the checkpoint reader sit below the families and no import cycle forms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mfv2.errors import ConfigError
from mfv2.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ModelFamily", "FAMILIES", "register_family", "get_family", "family_of", "detect_family"]

StateDict = Mapping[str, "torch.Tensor"]


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Attributes:
        name: the family's registry name (recorded in native checkpoints).
        config_type: the family's architecture config class (``from_dict`` / ``to_dict``, a ``name``).
        variants: registered variant name -> config.
        default_variant: what ``build_model()`` builds without a variant or checkpoint.
        build: ``(config, drop_path_rate) -> nn.Module``, a freshly initialised model.
        claims: whether a state dict has this family's key layout (cheap; no shape checks).
        detect: ``(state_dict, source) -> config`` inferred from the tensor shapes; raises
            :class:`~mfv2.errors.ConfigError` when the keys are the family's but the shapes make no model.
        check_state_dict: ``(state_dict, config, source)``; raises ``ConfigError`` naming every key that
            does not fit ``config``.
        resize: ``(state_dict, config, source) -> state_dict`` whose input-size dependent tensors fit
            ``config``'s template and search sizes (fixed tables rebuilt, learned ones refused); ``None``
            when the family cannot change its input sizes.
    """

    name: str
    config_type: type[Any]
    variants: Registry[Any]
    default_variant: str
    build: Callable[[Any, float], nn.Module]
    claims: Callable[[StateDict], bool]
    detect: Callable[[StateDict, str], Any]
    check_state_dict: Callable[[StateDict, Any, str], None]
    resize: Callable[[StateDict, Any, str], dict[str, torch.Tensor]] | None = None

    def config(self, variant_or_config: Any) -> Any:
        """The config of a registered variant name, or ``variant_or_config`` itself."""
        return variant_or_config if isinstance(variant_or_config, self.config_type) else self.variants.get(variant_or_config)


FAMILIES: Registry[ModelFamily] = Registry("model family")


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to :data:`FAMILIES` (a name registered twice raises)."""
    FAMILIES.add(family.name, family)
    return family


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name`` (an unknown name lists the known ones)."""
    return FAMILIES.get(name)


def family_of(variant_or_config: Any) -> ModelFamily:
    """The family of a config instance or of a variant name (a name two families share is an error)."""
    families = [FAMILIES.get(n) for n in FAMILIES]
    if not isinstance(variant_or_config, str):
        for family in families:
            if isinstance(variant_or_config, family.config_type):
                return family
        raise ConfigError(f"{type(variant_or_config).__name__} is not the config of a model family ({', '.join(FAMILIES)})")
    owners = [f for f in families if variant_or_config in f.variants]
    if len(owners) == 1:
        return owners[0]
    if owners:
        raise ConfigError(f"variant {variant_or_config!r} is ambiguous: {', '.join(f.name for f in owners)} all have it")
    # Let the first family's registry word the error (close matches, known names).
    return families[0] if len(families) == 1 else _unknown_variant(variant_or_config, families)


def _unknown_variant(name: str, families: list[ModelFamily]) -> ModelFamily:
    known = "; ".join(f"{f.name}: {', '.join(f.variants)}" for f in families)
    raise ConfigError(f"unknown model variant {name!r}; known: {known}")


def detect_family(state_dict: StateDict, source: str) -> tuple[ModelFamily, Any]:
    """The family whose key layout ``state_dict`` has, and the config its shapes describe."""
    families = [FAMILIES.get(n) for n in FAMILIES]
    for family in families:
        if family.claims(state_dict):
            return family, family.detect(state_dict, source)
    # No family claims the keys: the first family's detection words the error (what it expected).
    if len(families) == 1:
        return families[0], families[0].detect(state_dict, source)
    raise ConfigError(
        f"{source} holds no model of a known family ({', '.join(FAMILIES)}): its keys match none of their layouts"
    )
