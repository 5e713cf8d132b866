"""MixFormerV2: a one-stream ViT with four prediction tokens, a distribution box head and a score head.

Two ways to run it, equal to float tolerance:

* ``model(template, online_template, search)``: the full forward of the official code;
* ``kv = model.encode_templates(template, online_template)`` once per template update, then
  ``model.track_search(search, kv)`` per frame. Template tokens attend only to templates, so their
  keys and values do not depend on the search; in the last block only the four prediction tokens are
  carried through (the heads read nothing else).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from mfv2.config import ModelConfig
from mfv2.models.mixformerv2.heads import DistributionBoxHead, ScoreHead
from mfv2.models.mixformerv2.vit import Block, PatchEmbed, init_weights, sincos_pos_table, trunc_normal_

__all__ = ["MixFormerV2", "Backbone", "NUM_PRED_TOKENS"]

NUM_PRED_TOKENS = 4  # prediction tokens, in the order l, r, t, b


class Backbone(nn.Module):
    """Patch embedding, fixed sin-cos position tables, prediction tokens and the mixed-attention blocks."""

    def __init__(self, cfg: ModelConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        C = cfg.embed_dim
        # Registration order = the official state-dict order.
        self.pos_embed_s = nn.Parameter(sincos_pos_table(C, cfg.search_grid)[None], requires_grad=False)
        self.pos_embed_t = nn.Parameter(sincos_pos_table(C, cfg.template_grid)[None], requires_grad=False)
        self.reg_tokens = nn.Parameter(trunc_normal_(torch.zeros(1, NUM_PRED_TOKENS, C)))
        self.pos_embed_reg = nn.Parameter(torch.zeros(1, NUM_PRED_TOKENS, C))
        self.patch_embed = PatchEmbed(cfg.patch_size, C)
        rates = [drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(C, cfg.num_heads, cfg.mlp_hidden, drop_path=r) for r in rates)
        self.blocks.apply(init_weights)
        self.patch_embed.apply(init_weights)

    @property
    def block_list(self) -> list[Block]:
        """The blocks, typed."""
        return cast(list[Block], list(self.blocks))

    def embed_templates(self, template: torch.Tensor, online_template: torch.Tensor) -> torch.Tensor:
        """Template tokens (B, (1 + K) * Nt, C) from (B, 3, Z, Z) and (B, 3, Z, Z) or (B, K, 3, Z, Z)."""
        B = template.shape[0]
        # (B, K, 3, Z, Z) -> (B*K, 3, Z, Z): K online templates per target
        online = online_template.flatten(0, 1) if online_template.dim() == 5 else online_template
        z = self.patch_embed(template) + self.pos_embed_t
        oz = self.patch_embed(online) + self.pos_embed_t
        # (B*K, Nt, C) -> (B, K*Nt, C)
        return torch.cat([z, oz.reshape(B, -1, z.shape[-1])], dim=1)

    def embed_search(self, search: torch.Tensor) -> torch.Tensor:
        """Search tokens followed by the prediction tokens: (B, Ns + 4, C)."""
        x = self.patch_embed(search) + self.pos_embed_s
        reg = (self.reg_tokens + self.pos_embed_reg).expand(x.shape[0], -1, -1)
        return torch.cat([x, reg], dim=1)


class MixFormerV2(nn.Module):
    """The MixFormerV2 tracker network (official key layout: ``backbone``, ``box_head``, ``score_head``)."""

    def __init__(self, cfg: ModelConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg, drop_path_rate)
        self.box_head = DistributionBoxHead(cfg.embed_dim, cfg.num_bins)
        self.score_head = ScoreHead(cfg.embed_dim)

    def _check(self, name: str, x: torch.Tensor, size: int) -> None:
        torch._assert(
            x.dim() in (4, 5) and x.shape[-3:] == (3, size, size),
            f"{name}: expected (B, 3, {size}, {size}) float32, got {tuple(x.shape)}",
        )

    def _heads(self, reg: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.box_head(reg)
        out["pred_scores"] = self.score_head(reg)
        out["reg_tokens"] = reg
        return out

    def forward(
        self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Full forward.

        Args:
            template: (B, 3, Z, Z) float32, ImageNet-normalised RGB crop of the first frame.
            online_template: (B, 3, Z, Z) or (B, K, 3, Z, Z), the online template(s).
            search: (B, 3, X, X) float32 search crop.

        Returns:
            ``pred_boxes`` (B, 4) normalised cx, cy, w, h; ``pred_scores`` (B,) logits; ``logits_*`` and
            ``prob_*`` (B, F) per edge l, r, t, b; ``reg_tokens`` (B, 4, C); ``features``, every block's
            output tokens (B, N, C) in the order [template, online, search, prediction].
        """
        cfg = self.config
        self._check("template", template, cfg.template_size)
        self._check("online_template", online_template, cfg.template_size)
        self._check("search", search, cfg.search_size)
        z = self.backbone.embed_templates(template, online_template)
        x = torch.cat([z, self.backbone.embed_search(search)], dim=1)
        features = []
        for block in self.backbone.blocks:
            x = block(x, z.shape[1])
            features.append(x)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = dict(self._heads(x[:, -NUM_PRED_TOKENS:]))
        out["features"] = features
        return out

    def encode_templates(self, template: torch.Tensor, online_template: torch.Tensor) -> torch.Tensor:
        """Per-layer keys and values of the template tokens.

        Returns:
            kv: (depth, 2, B, heads, (1 + K) * Nt, head_dim); ``kv[i, 0]`` keys and ``kv[i, 1]`` values
            of block ``i``. Recompute only when a template changes.
        """
        cfg = self.config
        self._check("template", template, cfg.template_size)
        self._check("online_template", online_template, cfg.template_size)
        z = self.backbone.embed_templates(template, online_template)
        kv = []
        *body, last = self.backbone.block_list
        for block in body:
            k, v, z = block.template_kv(z)
            kv.append(torch.stack([k, v]))
        kv.append(torch.stack(last.attn.kv_heads(last.norm1(z))))  # the last block's template outputs are unused
        return torch.stack(kv)

    def track_search(self, search: torch.Tensor, kv: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame forward against cached template keys/values (from :meth:`encode_templates`).

        Returns the keys of :meth:`forward` except ``features`` (the last block computes only the
        prediction tokens).
        """
        self._check("search", search, self.config.search_size)
        x = self.backbone.embed_search(search)
        *body, last = self.backbone.block_list
        for i, block in enumerate(body):
            x = block.search_step(x, kv[i, 0], kv[i, 1])
        reg = last.search_step(x, kv[-1, 0], kv[-1, 1], queries=NUM_PRED_TOKENS)
        return self._heads(reg)


    def graphs(self) -> dict[str, Callable[..., dict[str, torch.Tensor]]]:
        """The exported graphs as functions of their named inputs, returning their named outputs
        (``boxes`` cx, cy, w, h; ``score`` a probability; ``kv`` the template keys/values)."""

        def heads(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"boxes": out["pred_boxes"], "score": torch.sigmoid(out["pred_scores"])}

        def full(template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor) -> dict[str, torch.Tensor]:
            return heads(cast(dict[str, torch.Tensor], self(template, online_template, search)))

        return {
            "full": full,
            "template_encoder": lambda template, online_template: {"kv": self.encode_templates(template, online_template)},
            "search_decoder": lambda search, kv: heads(self.track_search(search, kv)),
        }
