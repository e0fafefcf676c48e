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


EFFICIENTNET_PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")


def efficientnet(owner: str, backbone: str, in_chans: int, pretrained: bool) -> nn.Module:
    """A timm EfficientNet-style network (stem, stages, head conv: EfficientNet, Lite, MobileNetV2...), for the
    detectors that cut one into parts. Another name is a TypeError, as for an unknown keyword, naming ``owner``."""
    import timm  # slow to import; only needed when a model is built

    if not timm.is_model(backbone):
        raise TypeError(f"{owner}: backbone {backbone!r} is not a timm model (e.g. efficientnet_b0, efficientnet_lite0)")
    net = timm.create_model(backbone, pretrained=pretrained, in_chans=in_chans, num_classes=0)
    if not all(hasattr(net, part) for part in EFFICIENTNET_PARTS):
        raise TypeError(f"{owner}: backbone {backbone!r} is not an EfficientNet-style network "
                        f"({', '.join(EFFICIENTNET_PARTS)}); e.g. efficientnet_b0, efficientnet_lite0")
    return net
