"""FAClue: frequency clues by adaptive frequency-attention.

Paper: W. Liang, Y. Wu, J. Wu, J. Xu, "FAClue: Exploring Frequency Clues by Adaptive Frequency-Attention
for Deepfake Detection" (Nankai University). Section numbers below refer to it.

- FAE (sec. 3.2, eqs. 1-2): a Frequency-Attention module (channel-wise average and max pooling, 7x7 conv + BN,
  sigmoid) re-weights the DCT coefficients of the YCbCr face, once on the global DCT and once on every 16x16
  patch DCT (one shared module over all patches, so each patch is attended on its own). Each perspective is
  taken back to pixels by its matching inverse (global IDCT, block IDCT) and the two are concatenated into a
  6-channel frequency image.
- Two EfficientNet-B0 streams (timm), RGB and frequency; the paper's "7 main layers" are timm's ``blocks[0..6]``.
- RFCE (sec. 3.3, eqs. 3-5) after layers 2, 4 and 7: softmax *across the two domains* of 1x1-conv spatial maps
  and of GAP channel vectors; each stream is scaled by its share.
- FGA (sec. 3.4, eq. 6) on the layer-7 outputs, then GAP and one fully connected layer.

Interpretations where the paper is silent: the FC layer sees FGA's 320 channels (timm's 1280-channel head conv
is not mentioned and is dropped); the frequency guide in FGA is a one-channel 1x1 conv + BN map, as the paper
defines f_1x1 in sec. 3.3; the channel weights of FGA come from a 1x1 conv without BN on the pooled vector
(a BN over a 1x1 map breaks batches of one and the softmax normalises anyway); the 2-class cross-entropy of the
paper is expressed as one fake logit with BCE, which is the same model.

One option departs from the paper, off by default: ``rfce_channel_scale`` multiplies the GAP vectors of eq. 4 by a
learnable scalar started at the given value (see ``RGBFrequencyComplementaryEnhancement``), for fine-tuning
ImageNet trunks on little data, where eq. 4 saturates at the start.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deepscan.detectors.base import Detector, DetectorConfig, FrequencyView
from deepscan.detectors.layers import SpatialAttention, efficientnet
from deepscan.detectors.registry import register_detector
from deepscan.frequency import (
    block_dct2,
    block_idct2,
    dct2,
    from_patches,
    idct2,
    log_magnitude,
    rgb_to_ycbcr,
    to_patches,
)

# The paper's training settings (sec. 4.1) are recipes/faclue.yaml, read by deepscan.train.recipe.


class FrequencyAttention(SpatialAttention):
    """FA module, eq. 1: CBAM-style spatial attention over the DCT plane, each coefficient weighted by its neighbours."""

    def weights(self, coefficients: torch.Tensor) -> torch.Tensor:
        return super().forward(coefficients)

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        return coefficients * self.weights(coefficients)


class FrequencyAttentionExtractor(nn.Module):
    """FAE, eq. 2: global and local (patch) attended DCTs, back to pixels, concatenated."""

    def __init__(self, patch_size: int = 16, kernel_size: int = 7, use_global: bool = True, use_local: bool = True):
        super().__init__()
        if not (use_global or use_local):
            raise ValueError("FAE needs the global or the local perspective (or both)")
        self.patch_size = patch_size
        self.global_attention = FrequencyAttention(kernel_size) if use_global else None
        self.local_attention = FrequencyAttention(kernel_size) if use_local else None

    @property
    def out_channels(self) -> int:
        return 3 * ((self.global_attention is not None) + (self.local_attention is not None))

    def _local_patches(self, ycbcr: torch.Tensor) -> torch.Tensor:
        """Patch DCTs laid out as a batch of (3, p, p) maps so that one FA module sees each patch alone."""
        patches = to_patches(block_dct2(ycbcr, self.patch_size), self.patch_size)  # (B, 3, gh, gw, p, p)
        b, c, gh, gw, p, _ = patches.shape
        return patches.permute(0, 2, 3, 1, 4, 5).reshape(b * gh * gw, c, p, p), (b, c, gh, gw)

    @staticmethod
    def _stitch(per_patch: torch.Tensor, grid: tuple[int, int, int, int]) -> torch.Tensor:
        b, c, gh, gw = grid
        p = per_patch.shape[-1]
        return from_patches(per_patch.reshape(b, gh, gw, c, p, p).permute(0, 3, 1, 2, 4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ycbcr = rgb_to_ycbcr(x)
        parts = []
        if self.global_attention is not None:
            parts.append(idct2(self.global_attention(dct2(ycbcr))))
        if self.local_attention is not None:
            patches, grid = self._local_patches(ycbcr)
            attended = self._stitch(self.local_attention(patches), grid)
            parts.append(block_idct2(attended, self.patch_size))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The FA weights over the coefficients of each perspective, (B, 1, H, W)."""
        ycbcr = rgb_to_ycbcr(x)
        maps = {}
        if self.global_attention is not None:
            maps["global"] = self.global_attention.weights(dct2(ycbcr))
        if self.local_attention is not None:
            patches, grid = self._local_patches(ycbcr)
            maps["local"] = self._stitch(self.local_attention.weights(patches), (*grid[:1], 1, *grid[2:]))
        return maps


class RGBFrequencyComplementaryEnhancement(nn.Module):
    """RFCE, eqs. 3-5: the two domains compete for each position and each channel (softmax across domains)."""

    def __init__(self, channels: int, channel_scale: float | None = None):
        super().__init__()
        self.spatial_rgb = nn.Sequential(nn.Conv2d(channels, 1, 1, bias=False), nn.BatchNorm2d(1))
        self.spatial_freq = nn.Sequential(nn.Conv2d(channels, 1, 1, bias=False), nn.BatchNorm2d(1))
        # Eq. 4 as written is a softmax of the raw GAP vectors (scale 1, fixed). With ImageNet trunks the per-face
        # channel means reach +-5 to 20, so at the start the softmax is saturated: each channel of each face goes
        # wholly to one domain, at random, and half the pretrained features are switched off. A learnable scale,
        # started small, lets training begin from intact trunks and sharpen the competition as it learns.
        self.channel_scale = None if channel_scale is None else nn.Parameter(torch.tensor(float(channel_scale)))

    def forward(self, rgb: torch.Tensor, freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = torch.softmax(torch.stack([self.spatial_rgb(rgb), self.spatial_freq(freq)]), dim=0)
        pooled = torch.stack([rgb.mean((2, 3), keepdim=True), freq.mean((2, 3), keepdim=True)])
        channel = torch.softmax(pooled if self.channel_scale is None else pooled * self.channel_scale, dim=0)
        return spatial[0] * channel[0] * rgb, spatial[1] * channel[1] * freq


class FrequencyGuidedAttention(nn.Module):
    """FGA, eq. 6: frequency features tell the RGB features where to look, then channels are re-weighted."""

    def __init__(self, channels: int):
        super().__init__()
        self.guide = nn.Sequential(nn.Conv2d(channels, 1, 1, bias=False), nn.BatchNorm2d(1))
        self.channel = nn.Conv2d(channels, channels, 1)

    def forward(self, rgb: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
        guided = rgb * torch.sigmoid(self.guide(freq))
        channel_weights = torch.softmax(self.channel(guided.mean((2, 3), keepdim=True)), dim=1)
        return rgb + guided * channel_weights


def _efficientnet_trunk(backbone: str, in_chans: int, pretrained: bool) -> tuple[nn.Module, nn.ModuleList]:
    net = efficientnet("FAClue", backbone, in_chans, pretrained)
    return nn.Sequential(net.conv_stem, net.bn1), net.blocks


class FAClue(Detector):
    """Dual-stream (RGB + FAE frequency) EfficientNet with RFCE and FGA."""

    def __init__(
        self,
        backbone: str = "efficientnet_b0",
        pretrained: bool = False,
        patch_size: int = 16,
        fa_kernel_size: int = 7,
        use_global: bool = True,
        use_local: bool = True,
        use_rfce: bool = True,
        use_fga: bool = True,
        rfce_layers: tuple[int, ...] = (2, 4, 7),
        rfce_channel_scale: float | None = None,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.fae = FrequencyAttentionExtractor(patch_size, fa_kernel_size, use_global, use_local)
        self.rgb_stem, self.rgb_blocks = _efficientnet_trunk(backbone, 3, pretrained)
        self.freq_stem, self.freq_blocks = _efficientnet_trunk(backbone, self.fae.out_channels, pretrained)
        widths = [self._block_width(block) for block in self.rgb_blocks]
        self.rfce = nn.ModuleDict(
            {str(i): RGBFrequencyComplementaryEnhancement(widths[i - 1], rfce_channel_scale) for i in rfce_layers} if use_rfce else {}
        )
        self.fga = FrequencyGuidedAttention(widths[-1]) if use_fga else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], 1)

    @staticmethod
    def _block_width(stage: nn.Module) -> int:
        return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        rgb = self.rgb_stem(self.normalize(x))
        freq = self.freq_stem(self.fae(x))
        for layer, (rgb_block, freq_block) in enumerate(zip(self.rgb_blocks, self.freq_blocks), start=1):
            rgb, freq = rgb_block(rgb), freq_block(freq)
            if str(layer) in self.rfce:
                rgb, freq = self.rfce[str(layer)](rgb, freq)
        if self.fga is None:  # ablation "w/o FGA": plain sum of the two domains
            return rgb + freq
        return self.fga(rgb, freq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean((2, 3))
        return self.head(self.dropout(pooled)).squeeze(1)

    @torch.no_grad()
    def frequency_views(self, x: torch.Tensor) -> dict[str, FrequencyView]:
        views = {
            "dct": FrequencyView(
                title="Global DCT of the face (Y channel, log magnitude)",
                image=log_magnitude(dct2(rgb_to_ycbcr(x)))[0, 0].cpu().numpy(),
                description="Low frequencies top-left, high frequencies bottom-right.",
            )
        }
        with self.evaluating():  # the FA modules' batch norm must not move
            maps = self.fae.attention_maps(x)
        for name, weights in maps.items():
            perspective = "whole-face DCT" if name == "global" else f"{self.fae.patch_size}x{self.fae.patch_size} patch DCTs"
            views[f"fa_{name}"] = FrequencyView(
                title=f"FA weights on the {perspective}",
                image=np.asarray(weights[0, 0].cpu().numpy()),
                description="Bright coefficients are the frequency bands the FA module lets through.",
                cmap="magma",
            )
        return views


FACLUE_SUMMARY = (
    "FAClue looks at the face twice: as pixels, and as DCT frequency coefficients re-weighted by learned "
    "frequency attention over the whole face and over 16x16 patches. The two streams exchange what each "
    "sees best (RFCE) and the frequency stream guides where the pixel stream looks (FGA)."
)


@register_detector(
    DetectorConfig(
        name="faclue",
        paper="Liang et al., FAClue: Exploring Frequency Clues by Adaptive Frequency-Attention for Deepfake Detection",
        input_size=224,
        gflops=1.79,
        cam_target_layers=("rgb_blocks.6", "freq_blocks.6"),
        weights="faclue.safetensors",
        summary=FACLUE_SUMMARY,
    )
)
def faclue(**kwargs) -> FAClue:
    return FAClue(**kwargs)
