"""MVT checkpoints: which state dicts are MVT's, the config their shapes describe, and the strict check."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from mfv2.config import MVT_VARIANTS, MVTConfig
from mfv2.errors import ConfigError

__all__ = ["claims", "detect_config", "expected_shapes", "check_state_dict"]

_CORR_KEY = "feature_fusor.pw_corr.CA_layer.fc1.weight"
_ADJ_KEY = "feature_fusor.adj_layer.weight"


def claims(sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``sd`` has MVT's key layout (the MobileViT stem and the correlation neck)."""
    return "backbone.conv_1.block.conv.weight" in sd and _CORR_KEY in sd


def detect_config(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> MVTConfig:
    """The config the tensor shapes describe.

    The template size follows from the correlation channels (one per template feature cell, stride
    16) and the head width from ``adj_layer``; the network is fully convolutional, so the search size
    is not in the weights and stays the official 256.
    """
    try:
        corr, head = sd[_CORR_KEY].shape[0], sd[_ADJ_KEY].shape[0]
    except KeyError as e:
        raise ConfigError(f"{source} does not look like an MVT model: missing {e}; expected the official keys "
                          "backbone.*, neck.*, feature_fusor.*, box_head.*") from e  # fmt: skip
    grid = math.isqrt(corr)
    if grid * grid != corr:
        raise ConfigError(f"{source}: {corr} correlation channels are not a square template grid")
    cfg = MVTConfig(name="custom", template_size=16 * grid, head_channels=head)
    for name in MVT_VARIANTS:
        known = MVT_VARIANTS.get(name)
        if known.replace(name="custom") == cfg:
            return known
    return cfg


def expected_shapes(cfg: MVTConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of an MVT built from ``cfg`` (without allocating it)."""
    from mfv2.models.mvt.model import MVT

    with torch.device("meta"):
        model = MVT(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(sd: Mapping[str, torch.Tensor], cfg: MVTConfig, source: str = "checkpoint") -> None:
    """Raise :class:`ConfigError` unless ``sd`` has exactly the keys and shapes of ``cfg``, naming every difference."""
    want = expected_shapes(cfg)
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    misshaped = [f"{k} {tuple(sd[k].shape)} != {want[k]}" for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")
            parts.append(f"{len(items)} {label}: {shown}")
    raise ConfigError(f"{source} does not fit MVT-{cfg.name} ({cfg.describe()}): {'; '.join(parts)}")
