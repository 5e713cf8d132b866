"""MobileViT-S (v1), stages 1-4, with Siam-MoViT blocks: the MVT backbone.

Every activation is ReLU and every conv is bias-free, as the released tracker builds it. The stem
(``conv_1``, ``layer_1``, ``layer_2``) runs on each image alone; ``layer_3`` and ``layer_4`` each start
with a stride-2 MobileNetV2 block per image, then one Siam-MoViT block that attends over the joint
[search; template] tokens, separately for each of the four pixel positions of a 2x2 patch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvLayer", "InvertedResidual", "TransformerEncoder", "SiamMoViTBlock", "MobileViTBackbone", "unfold", "fold"]

PATCH = 2  # side of the MobileViT patch (2 x 2 pixels)


class ConvLayer(nn.Module):
    """``block`` = conv (no bias) [+ BatchNorm] [+ ReLU]; padding keeps the size at stride 1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 norm: bool = True, act: bool = True) -> None:  # fmt: skip
        super().__init__()
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        )
        if norm:
            parts["norm"] = nn.BatchNorm2d(cout)
        if act:
            parts["act"] = nn.ReLU()
        self.block = nn.Sequential(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depth-wise (stride), 1x1 reduce; residual at stride 1, same width."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(OrderedDict(
            exp_1x1=ConvLayer(cin, hidden, 1),
            conv_3x3=ConvLayer(hidden, hidden, 3, stride, groups=hidden),
            red_1x1=ConvLayer(hidden, cout, 1, act=False),
        ))  # fmt: skip
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MultiHeadAttention(nn.Module):
    """Softmax self-attention; ``qkv_proj`` lays out [q | k | v], each split into contiguous heads."""

    def __init__(self, dim: int, heads: int, attn_drop: float = 0.1) -> None:
        super().__init__()
        self.heads = heads
        self.attn_drop = attn_drop
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        # (B, N, 3C) -> (3, B, heads, N, head_dim)
        q, k, v = self.qkv_proj(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        # (B, heads, N, head_dim) -> (B, N, C), heads in order
        return self.out_proj(y.transpose(1, 2).reshape(B, N, C))


class TransformerEncoder(nn.Module):
    """Pre-norm layer: ``x + MHA(LN(x))``, then ``+ FFN(LN(.))`` with a ReLU FFN."""

    def __init__(self, dim: int, ffn: int, heads: int, drop: float = 0.1, attn_drop: float = 0.1) -> None:
        super().__init__()
        self.pre_norm_mha = nn.Sequential(nn.LayerNorm(dim), MultiHeadAttention(dim, heads, attn_drop), nn.Dropout(drop))
        self.pre_norm_ffn = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(0.0), nn.Linear(ffn, dim), nn.Dropout(drop)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pre_norm_mha(x)
        return x + self.pre_norm_ffn(x)


def unfold(fm: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B * 4, H/2 * W/2, D): row ``b * 4 + 2 * jh + jw`` holds ``fm[b, :, jh::2, jw::2]`` row-major."""
    B, D, H, W = fm.shape
    torch._assert(H % PATCH == 0 and W % PATCH == 0, f"unfold needs an even feature map, got {H}x{W}")
    # (B, D, H/2, 2, W/2, 2) -> (B, 2, 2, H/2, W/2, D)
    x = fm.reshape(B, D, H // PATCH, PATCH, W // PATCH, PATCH).permute(0, 3, 5, 2, 4, 1)
    return x.reshape(B * PATCH * PATCH, (H // PATCH) * (W // PATCH), D)


def fold(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`unfold`: (B * 4, H/2 * W/2, D) -> (B, D, H, W)."""
    BP, _, D = tokens.shape
    h, w = height // PATCH, width // PATCH
    # (B, 2, 2, H/2, W/2, D) -> (B, D, H/2, 2, W/2, 2)
    x = tokens.reshape(BP // (PATCH * PATCH), PATCH, PATCH, h, w, D).permute(0, 5, 3, 1, 4, 2)
    return x.reshape(BP // (PATCH * PATCH), D, height, width)


class SiamMoViTBlock(nn.Module):
    """MobileViT block over a search/template pair with shared weights and joint attention.

    local conv per map -> unfold -> [search; template] tokens -> transformer layers + LN -> split ->
    fold -> 1x1 projection -> ``fusion(cat[input, projected])`` per map.
    """

    def __init__(self, channels: int, dim: int, ffn: int, layers: int, heads: int = 4) -> None:
        super().__init__()
        self.local_rep = nn.Sequential(OrderedDict(
            conv_3x3=ConvLayer(channels, channels, 3),
            conv_1x1=ConvLayer(channels, dim, 1, norm=False, act=False),
        ))  # fmt: skip
        self.global_rep = nn.Sequential(*[TransformerEncoder(dim, ffn, heads) for _ in range(layers)], nn.LayerNorm(dim))
        self.conv_proj = ConvLayer(dim, channels, 1)
        self.fusion = ConvLayer(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (Hx, Wx), (Hz, Wz) = x.shape[-2:], z.shape[-2:]
        tx, tz = unfold(self.local_rep(x)), unfold(self.local_rep(z))
        n = tx.shape[1]
        tokens = self.global_rep(torch.cat([tx, tz], dim=1))  # search first
        fx = self.conv_proj(fold(tokens[:, :n], Hx, Wx))
        fz = self.conv_proj(fold(tokens[:, n:], Hz, Wz))
        return self.fusion(torch.cat([x, fx], dim=1)), self.fusion(torch.cat([z, fz], dim=1))


class MobileViTBackbone(nn.Module):
    """``conv_1``, ``layer_1`` .. ``layer_4`` of MobileViT-S; output stride 16, 128 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_1 = ConvLayer(3, 16, 3, stride=2)
        self.layer_1 = nn.Sequential(InvertedResidual(16, 32, 1, 4))
        self.layer_2 = nn.Sequential(InvertedResidual(32, 64, 2, 4), InvertedResidual(64, 64, 1, 4), InvertedResidual(64, 64, 1, 4))
        self.layer_3 = nn.ModuleList([InvertedResidual(64, 96, 2, 4), SiamMoViTBlock(96, 144, 288, layers=2)])
        self.layer_4 = nn.ModuleList([InvertedResidual(96, 128, 2, 4), SiamMoViTBlock(128, 192, 384, layers=4)])

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 64, S/4, S/4); the same weights for template and search."""
        return self.layer_2(self.layer_1(self.conv_1(image)))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stem features of search ``x`` and template ``z`` -> (B, 128, X/16, X/16), (B, 128, Z/16, Z/16)."""
        for down, siam in (self.layer_3, self.layer_4):
            x, z = siam(down(x), down(z))
        return x, z
