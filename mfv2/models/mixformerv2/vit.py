"""ViT parts of MixFormerV2: patch embedding, 2-D sin-cos tables, mixed attention, pre-norm blocks."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mfv2.errors import ConfigError

__all__ = [
    "PatchEmbed",
    "sincos_pos_table",
    "rebuild_sincos_tables",
    "Attention",
    "Mlp",
    "Block",
    "DropPath",
    "BranchScale",
    "trunc_normal_",
    "init_weights",
]


def sincos_pos_table(embed_dim: int, grid: int) -> torch.Tensor:
    """The MAE 2-D sin-cos position table, (grid*grid, embed_dim) float32.

    Token ``n = row * grid + col``. Channels ``[0, C/2)`` encode the column (x), ``[C/2, C)`` the row (y);
    inside each half the first quarter is ``sin(p * w_d)``, the second ``cos(p * w_d)``, with
    ``w_d = 10000 ** (-d / (C/4))``.
    """
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (C/4,)
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (g, g) each

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega  # (g*g, C/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (g*g, C/2)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()  # (g*g, C)


def rebuild_sincos_tables(
    sd: Mapping[str, torch.Tensor], grids: Mapping[str, int], source: str = "checkpoint", *, atol: float = 1e-3
) -> dict[str, torch.Tensor]:
    """``sd`` with its fixed sin-cos position tables rebuilt for other grids.

    MixFormerV2 and MixViT keep ``pos_embed_t``/``pos_embed_s`` as frozen MAE 2-D sin-cos tables, so a
    model trained at one input size holds the tables for any other (the official loader rebuilds them
    too). Each table of ``grids`` (key -> new grid side) is first checked against the formula for its
    own grid; a table that differs is learned and cannot be rebuilt.

    Args:
        sd: a state dict with (1, g*g, C) tables under the keys of ``grids``.
        grids: key -> grid side of the model the state dict is for.
        source: the file's name, for messages.
        atol: largest deviation from the formula still taken as sin-cos (fp16-stored tables differ by ~5e-4).

    Raises:
        ConfigError: a table is missing, not a square grid, or not the sin-cos table of its grid.
    """
    out = dict(sd)
    for key, grid in grids.items():
        if key not in sd:
            raise ConfigError(f"{source} has no {key} to rebuild for a {grid}x{grid} grid")
        table = sd[key]
        n, dim = table.shape[-2], table.shape[-1]
        g = math.isqrt(n)
        if g * g != n:
            raise ConfigError(f"{source}: {key} holds {n} positions, not a square grid")
        if g == grid:
            continue
        deviation = float((table.reshape(n, dim).float() - sincos_pos_table(dim, g)).abs().max())
        if deviation > atol:
            raise ConfigError(
                f"{source}: {key} is not the fixed 2-D sin-cos table of a {g}x{g} grid (it differs from the formula "
                f"by up to {deviation:.3g}): a learned table cannot be rebuilt for a {grid}x{grid} grid; build the "
                f"model at the file's own input size ({g}x{g} patches)"
            )
        out[key] = sincos_pos_table(dim, grid)[None].to(table.dtype)
    return out


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: (B, 3, H, W) -> (B, H/p * W/p, C), row-major."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) -> (B, C, H/p, W/p) -> (B, HW/p², C)
        return self.proj(x).flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample; identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head attention with MixFormerV2's asymmetric mixing.

    The first ``num_template`` tokens (both templates) attend only to template keys; every other token
    (search, prediction tokens) attends to all keys. Because templates never see the search, their
    keys and values can be computed once per template update and reused (:meth:`forward_cached`).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        # (B, N, C) -> (B, heads, N, head_dim)
        return x.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = x.shape
        # (B, heads, N, head_dim) -> (B, N, C)
        return x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of ``x`` (B, N, C), each (B, heads, N, head_dim)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def kv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values only, for tokens whose queries are not needed."""
        C = x.shape[-1]
        k, v = F.linear(x, self.qkv.weight[C:], self.qkv.bias[C:]).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def q_heads(self, x: torch.Tensor) -> torch.Tensor:
        C = x.shape[-1]
        return self.split_heads(F.linear(x, self.qkv.weight[:C], self.qkv.bias[:C]))

    def forward(self, x: torch.Tensor, num_template: int) -> torch.Tensor:
        """Full mixed attention over ``x`` (B, N, C) whose first ``num_template`` tokens are templates."""
        q, k, v = self.qkv_heads(x)
        t = num_template
        out_t = F.scaled_dot_product_attention(q[:, :, :t], k[:, :, :t], v[:, :, :t])
        out_s = F.scaled_dot_product_attention(q[:, :, t:], k, v)
        return self.proj(self.merge_heads(torch.cat([out_t, out_s], dim=2)))

    def forward_cached(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor
    ) -> torch.Tensor:
        """Search-side attention: queries ``q`` against cached template keys/values plus their own."""
        out = F.scaled_dot_product_attention(q, torch.cat([k_t, k], dim=2), torch.cat([v_t, v], dim=2))
        return self.proj(self.merge_heads(out))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class BranchScale(nn.Module):
    """Multiplies a residual branch by ``gamma``; progressive depth pruning decays it to 0."""

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block.

    ``branch_scale`` is an identity unless progressive depth pruning swaps in a :class:`BranchScale`,
    so inference and export graphs carry no extra op.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.branch_scale: nn.Module = nn.Identity()

    def _residual(self, branch: torch.Tensor) -> torch.Tensor:
        return self.branch_scale(self.drop_path(branch))

    def forward(self, x: torch.Tensor, num_template: int) -> torch.Tensor:
        x = x + self._residual(self.attn(self.norm1(x), num_template))
        return x + self._residual(self.mlp(self.norm2(x)))

    def template_kv(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys/values of template tokens ``z`` (B, Nz, C) and the tokens after this block."""
        q, k, v = self.attn.qkv_heads(self.norm1(z))
        out = self.attn.proj(self.attn.merge_heads(F.scaled_dot_product_attention(q, k, v)))
        z = z + self._residual(out)
        z = z + self._residual(self.mlp(self.norm2(z)))
        return k, v, z

    def search_step(
        self, x: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, queries: int | None = None
    ) -> torch.Tensor:
        """Search and prediction tokens ``x`` (B, Nx, C) through the block with cached template K/V.

        With ``queries = n`` only the last ``n`` tokens get queries, attention output and MLP (the
        last block needs only the prediction tokens); the result is then (B, n, C).
        """
        h = self.norm1(x)
        # Two GEMMs (K and V, then Q) rather than the fused qkv one, also with every query: OpenVINO's
        # int8 kernel scales the 3C-wide product poorly to two threads (the S decoder runs 7 % faster).
        k, v = self.attn.kv_heads(h)
        if queries is None:
            q = self.attn.q_heads(h)
        else:
            q = self.attn.q_heads(h[:, -queries:])
            x = x[:, -queries:]
        x = x + self._residual(self.attn.forward_cached(q, k, v, k_t, v_t))
        return x + self._residual(self.mlp(self.norm2(x)))


def trunc_normal_(t: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """Truncated normal init at +-2 std, as ViTs use."""
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


def init_weights(m: nn.Module) -> None:
    """ViT initialisation: trunc-normal Linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        nn.init.trunc_normal_(m.weight, std=math.sqrt(1.0 / fan_in))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
