"""MVT neck: BatchNorm per branch, pixel-wise correlation with SE channel attention, 1x1 to the head width."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BNAdjust", "ChannelAttention", "PixelwiseCorrelation", "FeatureFusor", "pixelwise_correlation"]


class BNAdjust(nn.Module):
    """Two independent BatchNorms: ``BN_x`` for the search features, ``BN_z`` for the template's."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.BN_x = nn.BatchNorm2d(channels)  # noqa: N815  (official key names)
        self.BN_z = nn.BatchNorm2d(channels)  # noqa: N815

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.BN_x(x), self.BN_z(z)


def pixelwise_correlation(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``corr[b, k, i, j] = sum_c z[b, c, k] * x[b, c, i, j]``, k the row-major template position.

    (B, C, Hz, Wz), (B, C, Hx, Wx) -> (B, Hz * Wz, Hx, Wx); raw dot products, no normalisation.
    """
    B, C, Hx, Wx = x.shape
    # (B, C, Hz*Wz) -> (B, Hz*Wz, C) @ (B, C, Hx*Wx) -> (B, Hz*Wz, Hx*Wx)
    corr = torch.matmul(z.flatten(2).transpose(1, 2), x.flatten(2))
    return corr.reshape(B, -1, Hx, Wx)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation with reduction 1: avg-pool, 1x1, ReLU, 1x1, sigmoid, scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(w)


class PixelwiseCorrelation(nn.Module):
    """Pixel-wise correlation followed by channel attention over its Hz * Wz channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.CA_layer = ChannelAttention(channels)  # noqa: N815

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.CA_layer(pixelwise_correlation(z, x))


class FeatureFusor(nn.Module):
    """``pw_corr`` then ``adj_layer`` (1x1 conv with bias): (B, 128, .) pair -> (B, out, Hx, Wx)."""

    def __init__(self, corr_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pw_corr = PixelwiseCorrelation(corr_channels)
        self.adj_layer = nn.Conv2d(corr_channels, out_channels, 1)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.adj_layer(self.pw_corr(z, x))
