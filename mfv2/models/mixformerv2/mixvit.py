"""MixViT (MixFormer-ViT): the dense-head teacher of MixFormerV2's distillation, training only.

A ViT with the same asymmetric mixed attention as MixFormerV2 but no prediction tokens: the search
tokens go to a corner head (:mod:`mfv2.models.mixformerv2.corner_heads`) whose soft-argmax gives the box and whose
marginals give ``prob_l/t/r/b``, the distributions the student's edge bins are distilled from.

The module layout follows the official checkpoint (``mixformer_vit_base_online.pth.tar``): the backbone
is a timm-style VisionTransformer, so it also carries ``cls_token``, ``pos_embed`` (the 224-pixel
pretraining table), ``norm`` and a 1000-class ``head`` that the tracker never uses; they are kept (frozen)
only so that official files load strictly. The official online checkpoint's score-branch keys are
ignored on load (the teacher has no score module). The model is trainable on its own (L1 + GIoU on the
corners, objective ``supervised``), so a user without a teacher checkpoint can make one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mfv2.config import Config
from mfv2.errors import ConfigError
from mfv2.fileio import atomic_path
from mfv2.models.checkpoint import assign_state_dict, load_pickled
from mfv2.models.mixformerv2.corner_heads import CornerHead, CornerKind, soft_argmax
from mfv2.models.mixformerv2.vit import (
    Block,
    PatchEmbed,
    init_weights,
    rebuild_sincos_tables,
    sincos_pos_table,
    trunc_normal_,
)
from mfv2.registry import Registry

__all__ = [
    "MixViTConfig",
    "MixViT",
    "MIXVIT_VARIANTS",
    "build_mixvit",
    "save_mixvit",
    "load_mixvit_state",
    "detect_mixvit_config",
    "MIXVIT_FORMAT",
]

log = logging.getLogger(__name__)

MIXVIT_FORMAT = "mfv2-mixvit"


@dataclass(frozen=True)
class MixViTConfig(Config):
    """Architecture of a MixViT teacher.

    ``head`` is ``corner_up`` (72x72 map for a 288 crop, both official teacher configs) or ``corner``;
    ``head_channels`` is the official ``HEAD_DIM``; ``pretrain_size`` only sizes the unused ``pos_embed``.
    """

    name: str = "B"
    depth: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    template_size: int = 128
    search_size: int = 288
    head: CornerKind = "corner_up"
    head_channels: int = 384
    pretrain_size: int = 224
    num_classes: int = 1000

    def __post_init__(self) -> None:
        for key in ("depth", "embed_dim", "num_heads", "patch_size", "template_size", "search_size", "pretrain_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"MixViTConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ConfigError(f"embed_dim {self.embed_dim} must be divisible by num_heads and by 4")
        for key in ("template_size", "search_size", "pretrain_size"):
            if getattr(self, key) % self.patch_size:
                raise ConfigError(f"{key} {getattr(self, key)} is not a multiple of patch_size {self.patch_size}")
        if self.head not in ("corner", "corner_up"):
            raise ConfigError(f"MixViTConfig.head must be 'corner' or 'corner_up', got {self.head!r}")
        if self.head_channels < 8 or self.head_channels % 8:
            raise ConfigError(f"head_channels must be a positive multiple of 8, got {self.head_channels}")

    @property
    def search_grid(self) -> int:
        return self.search_size // self.patch_size

    @property
    def template_grid(self) -> int:
        return self.template_size // self.patch_size

    @property
    def map_size(self) -> int:
        """Side of the corner maps = number of bins of each marginal (72 for B)."""
        return self.search_grid * (4 if self.head == "corner_up" else 1)

    def describe(self) -> str:
        return (
            f"depth {self.depth}, width {self.embed_dim}, template {self.template_size}, search {self.search_size}, "
            f"head {self.head} {self.head_channels}, {self.map_size}x{self.map_size} map"
        )


MIXVIT_VARIANTS: Registry[MixViTConfig] = Registry("MixViT variant")
MIXVIT_VARIANTS.add("B", MixViTConfig())
# ViT-L layout from the official large config; its head width is an assumption (unverified).
MIXVIT_VARIANTS.add("L", MixViTConfig(name="L", depth=24, embed_dim=1024, num_heads=16))
MIXVIT_VARIANTS.add(
    "tiny",
    MixViTConfig(
        name="tiny", depth=2, embed_dim=128, num_heads=2, mlp_ratio=2.0, template_size=32, search_size=64,
        head_channels=32, pretrain_size=32, num_classes=10,
    ),
)


class MixViTBackbone(nn.Module):
    """timm-style ViT body with fixed sin-cos tables for the template and search grids."""

    def __init__(self, cfg: MixViTConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        C = cfg.embed_dim
        pre_tokens = (cfg.pretrain_size // cfg.patch_size) ** 2
        # Registration order = the official state-dict order. cls_token, pos_embed, norm and head are
        # never used by the tracker; they exist (frozen) so official checkpoints load strictly.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C), requires_grad=False)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pre_tokens, C), requires_grad=False)
        self.pos_embed_s = nn.Parameter(sincos_pos_table(C, cfg.search_grid)[None], requires_grad=False)
        self.pos_embed_t = nn.Parameter(sincos_pos_table(C, cfg.template_grid)[None], requires_grad=False)
        self.patch_embed = PatchEmbed(cfg.patch_size, C)
        rates = [drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(C, cfg.num_heads, int(round(C * cfg.mlp_ratio)), drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(C, eps=1e-6)
        self.head = nn.Linear(C, cfg.num_classes)
        for p in (*self.norm.parameters(), *self.head.parameters()):
            p.requires_grad_(False)
        self.blocks.apply(init_weights)
        self.patch_embed.apply(init_weights)
        trunc_normal_(self.cls_token.data)

    def forward(
        self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Search tokens after the last block (B, Ns, C) and every block's output (B, N, C)."""
        B = template.shape[0]
        online = online_template.flatten(0, 1) if online_template.dim() == 5 else online_template
        z = self.patch_embed(template) + self.pos_embed_t
        oz = self.patch_embed(online) + self.pos_embed_t
        # (B*K, Nt, C) -> (B, K*Nt, C)
        zs = torch.cat([z, oz.reshape(B, -1, z.shape[-1])], dim=1)
        x = torch.cat([zs, self.patch_embed(search) + self.pos_embed_s], dim=1)
        features = []
        for block in self.blocks:
            x = block(x, zs.shape[1])
            features.append(x)
        return x[:, zs.shape[1]:], features


class MixViT(nn.Module):
    """The MixViT teacher: backbone + corner box head (keys ``backbone.*``, ``box_head.*``)."""

    def __init__(self, cfg: MixViTConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = MixViTBackbone(cfg, drop_path_rate)
        self.box_head = CornerHead(cfg.embed_dim, cfg.head_channels, cfg.head)

    def forward(
        self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Box, corner distributions and edge marginals.

        Args:
            template: (B, 3, Z, Z) float32 ImageNet-normalised RGB crop.
            online_template: (B, 3, Z, Z) or (B, K, 3, Z, Z).
            search: (B, 3, X, X).

        Returns:
            ``pred_boxes`` (B, 4) normalised cx, cy, w, h; ``score_map_tl/br`` (B, M, M) logits;
            ``prob_tl/br`` (B, M*M); ``prob_l/t/r/b`` (B, M) edge marginals (probabilities);
            ``features`` every block's output tokens (B, N, C).
        """
        cfg = self.config
        for name, x, size in (("template", template, cfg.template_size), ("online_template", online_template,
                              cfg.template_size), ("search", search, cfg.search_size)):
            torch._assert(x.dim() in (4, 5) and x.shape[-3:] == (3, size, size),
                          f"{name}: expected (B, 3, {size}, {size}), got {tuple(x.shape)}")
        tokens, features = self.backbone(template, online_template, search)
        g = cfg.search_grid
        # (B, g*g, C) -> (B, C, g, g)
        fmap = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, g, g)
        map_tl, map_br = self.box_head(fmap)
        tl, br = soft_argmax(map_tl), soft_argmax(map_br)
        x1, y1, x2, y2 = tl["x"], tl["y"], br["x"], br["y"]
        return {
            "pred_boxes": torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=1),
            "score_map_tl": map_tl,
            "score_map_br": map_br,
            "prob_tl": tl["prob"],
            "prob_br": br["prob"],
            "prob_l": tl["prob_x"],
            "prob_t": tl["prob_y"],
            "prob_r": br["prob_x"],
            "prob_b": br["prob_y"],
            "features": features,
        }


def detect_mixvit_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> MixViTConfig:
    """Infer a MixViT architecture from tensor shapes, named after the registered variant it equals.

    The head count is not in the shapes: it is taken as ``width / 64`` (ViT-B and ViT-L).
    """
    try:
        C, _, patch, _ = sd["backbone.patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.blocks."))
        hidden = sd["backbone.blocks.0.mlp.fc1.weight"].shape[0]
        num_t, num_s = sd["backbone.pos_embed_t"].shape[1], sd["backbone.pos_embed_s"].shape[1]
        num_pre = sd["backbone.pos_embed"].shape[1] - 1
        num_classes = sd["backbone.head.weight"].shape[0]
        channels = sd["box_head.conv1_tl.0.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise ConfigError(
            f"{source} does not look like a MixViT teacher: missing {e}; expected backbone.* and box_head.conv*_tl keys"
        ) from e
    cfg = MixViTConfig(
        name="custom", depth=depth, embed_dim=C, num_heads=max(1, C // 64), mlp_ratio=hidden / C, patch_size=patch,
        template_size=round(num_t**0.5) * patch, search_size=round(num_s**0.5) * patch,
        head="corner_up" if "box_head.adjust1_tl.0.weight" in sd else "corner", head_channels=channels,
        pretrain_size=round(num_pre**0.5) * patch, num_classes=num_classes,
    )
    for name in MIXVIT_VARIANTS:
        known = MIXVIT_VARIANTS.get(name)
        if dataclasses.replace(known, name="custom") == cfg:
            return known
    return cfg


def load_mixvit_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], MixViTConfig | None, dict[str, Any]]:
    """Read a MixViT state dict from an official file (``{'net': ...}``), a bare state dict or the mfv2 format.

    Returns the state dict (``module.`` prefixes dropped), the architecture recorded in an mfv2 file
    (``None`` otherwise) and the file's meta data. Pickled project objects are never executed.
    """
    # The one pickle loader of the project: restricted unpickling only (issue #18).
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"teacher checkpoint {p} does not exist; pass a MixViT .pth.tar or an mfv2 teacher file")
    obj = load_pickled(p)
    cfg, meta = None, {}
    if isinstance(obj, dict) and obj.get("format") == MIXVIT_FORMAT:
        sd, cfg, meta = obj["state_dict"], MixViTConfig.from_dict(obj["config"]), dict(obj.get("meta", {}))
    elif isinstance(obj, dict) and isinstance(obj.get("net"), dict):
        sd = obj["net"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise ConfigError(f"{p} is not a MixViT checkpoint: expected {{'net': state_dict}} or an mfv2 teacher file")
    return {k.removeprefix("module."): v for k, v in sd.items()}, cfg, meta


def _check_keys(sd: dict[str, torch.Tensor], model: MixViT, source: str) -> dict[str, torch.Tensor]:
    want = model.state_dict()
    ours = [k for k in sd if k.startswith(("backbone.", "box_head."))]
    ignored = sorted(set(sd) - set(ours))
    if ignored:
        log.info("%s: ignoring %d keys the teacher has no module for (e.g. %s)", source, len(ignored), ignored[0])
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in ours if k not in want]
    misshaped = [f"{k} {tuple(sd[k].shape)} != {tuple(want[k].shape)}" for k in want
                 if k in sd and sd[k].shape != want[k].shape]
    if missing or unexpected or misshaped:
        parts = [f"{len(v)} {label}: {', '.join(v[:5])}" for label, v in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if v]
        raise ConfigError(
            f"{source} does not fit MixViT-{model.config.name} ({model.config.describe()}): {'; '.join(parts)}. "
            "Pass the matching teacher variant, or none to detect it."
        )
    return {k: sd[k] for k in want}


def build_mixvit(
    variant_or_config: str | MixViTConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    drop_path_rate: float = 0.0,
    template_size: int | None = None,
    search_size: int | None = None,
) -> MixViT:
    """Build a MixViT teacher, optionally loading an official or mfv2 checkpoint strictly.

    Args:
        variant_or_config: ``"B"``, ``"L"``, ``"tiny"`` or a :class:`MixViTConfig`; ``None`` means the
            architecture recorded in or detected from ``checkpoint`` (``"B"`` without one).
        checkpoint: official ``mixformer_vit_base_online.pth.tar``-style file, bare state dict or a file
            written by :func:`save_mixvit`. Every backbone and box-head key must match in name and shape;
            keys of modules the teacher does not have (the online score branch) are ignored.
        drop_path_rate: stochastic depth for training.
        template_size, search_size: build the teacher at these input sizes instead; the checkpoint's
            fixed sin-cos tables (``pos_embed_t``/``pos_embed_s``) are rebuilt for the new grids, as the
            official loader does (a learned table is refused). The unused 224-pixel ``pos_embed`` stays.

    Returns:
        The model in eval mode.
    """
    sizes: dict[str, Any] = {k: v for k, v in (("template_size", template_size), ("search_size", search_size)) if v is not None}

    def resolve(v: str | MixViTConfig) -> MixViTConfig:
        return v if isinstance(v, MixViTConfig) else MIXVIT_VARIANTS.get(v)

    if checkpoint is None:
        cfg = resolve("B" if variant_or_config is None else variant_or_config)
        return MixViT(dataclasses.replace(cfg, **sizes), drop_path_rate).eval()
    sd, recorded, _ = load_mixvit_state(checkpoint)
    if variant_or_config is not None:
        cfg = resolve(variant_or_config)
    else:
        cfg = recorded or detect_mixvit_config(sd, str(checkpoint))
    if sizes:
        cfg = dataclasses.replace(cfg, **sizes)
        sd = rebuild_sincos_tables(sd, {"backbone.pos_embed_t": cfg.template_grid, "backbone.pos_embed_s": cfg.search_grid},
                                   str(checkpoint))
    with torch.device("meta"):
        model = MixViT(cfg, drop_path_rate)  # nothing initialised: the checkpoint's tensors are assigned
    return assign_state_dict(model, _check_keys(sd, model, str(checkpoint))).eval()


def save_mixvit(model: MixViT, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> Path:
    """Write a MixViT in the mfv2 teacher format (loads with ``weights_only=True``), atomically."""
    p = Path(path)
    if not p.parent.is_dir():
        raise ConfigError(f"cannot write {p}: folder {p.parent} does not exist")
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    obj = {"format": MIXVIT_FORMAT, "format_version": 1, "config": model.config.to_dict(), "state_dict": sd,
           "meta": dict(meta or {})}
    with atomic_path(p) as tmp:
        torch.save(obj, tmp)
    return p
