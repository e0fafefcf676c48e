"""Small layers that more than one paper uses."""

from __future__ import annotations

import torch
import torch.nn as nn


class SpatialAttention(nn.Module):
    """CBAM's spatial attention (Woo et al., ECCV 2018): channel mean and max, k x k conv + BN, sigmoid.

    Returns the (B, 1, H, W) map in [0, 1]; FAClue applies it to DCT coefficients, RALF to the Xception stem.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([features.mean(dim=1, keepdim=True), features.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))
