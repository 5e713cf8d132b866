"""MixFormerV2 weights: the architecture a state dict describes, and a strict check against a config."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mfv2.config import VARIANTS, ModelConfig
from mfv2.errors import ConfigError
from mfv2.models.mixformerv2.model import MixFormerV2
from mfv2.models.mixformerv2.vit import rebuild_sincos_tables

__all__ = ["claims", "detect_config", "expected_shapes", "check_state_dict", "resize_inputs"]


def claims(sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``sd`` has the official MixFormerV2 key layout (a patch embedding under ``backbone``, a box head)."""
    return "backbone.patch_embed.proj.weight" in sd and any(k.startswith("box_head.") for k in sd)


def detect_config(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> ModelConfig:
    """Infer the architecture from tensor shapes: depth, width, MLP ratio, input sizes, bins.

    The head count is not in the weights; it is taken as width / 64, as in every released model.
    """
    try:
        C, _, patch, _ = sd["backbone.patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.blocks."))
        hidden = sd["backbone.blocks.0.mlp.fc1.weight"].shape[0]
        num_t = sd["backbone.pos_embed_t"].shape[1]
        num_s = sd["backbone.pos_embed_s"].shape[1]
        bins = sd["box_head.layers.1.0.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise ConfigError(
            f"{source} does not look like a MixFormerV2 model: missing {e}; expected the official keys "
            "backbone.*, box_head.*, score_head.*"
        ) from e
    grid_t, grid_s = round(num_t**0.5), round(num_s**0.5)
    if grid_t**2 != num_t or grid_s**2 != num_s:
        raise ConfigError(f"{source}: position tables of {num_t}/{num_s} tokens are not square grids")
    cfg = ModelConfig(
        name="custom",
        depth=depth,
        embed_dim=C,
        num_heads=max(1, C // 64),
        mlp_ratio=hidden / C,
        patch_size=patch,
        template_size=grid_t * patch,
        search_size=grid_s * patch,
        num_bins=bins,
    )
    return _named(cfg)


def _named(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` renamed to the registered variant it equals, if any."""
    for name in VARIANTS:
        known = VARIANTS.get(name)
        if known.replace(name=cfg.name) == cfg:
            return known
    return cfg


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of a model built from ``cfg`` (computed without allocating it)."""
    with torch.device("meta"):
        model = MixFormerV2(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(sd: Mapping[str, torch.Tensor], cfg: ModelConfig, source: str = "checkpoint") -> None:
    """Raise :class:`ConfigError` unless ``sd`` fits ``cfg`` exactly, naming every difference."""
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
    try:
        looks = detect_config(sd, source)
        hint = f"the file looks like {'MixFormerV2-' + looks.name if looks.name != 'custom' else 'a custom model'} ({looks.describe()})"
    except ConfigError:
        hint = "the file does not look like any MixFormerV2 model"
    raise ConfigError(
        f"{source} does not fit MixFormerV2-{cfg.name} ({cfg.describe()}): {'; '.join(parts)}; {hint}. "
        "Pass the matching --variant, or none to detect it."
    )


def resize_inputs(sd: Mapping[str, torch.Tensor], cfg: ModelConfig, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``sd`` with its sin-cos position tables rebuilt for ``cfg``'s template and search grids."""
    return rebuild_sincos_tables(sd, {"backbone.pos_embed_t": cfg.template_grid, "backbone.pos_embed_s": cfg.search_grid},
                                 source)
