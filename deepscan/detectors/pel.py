"""PEL: Progressive Enhancement Learning on RGB and fine-grained frequency clues.

Paper: Q. Gu, S. Chen, T. Yao, Y. Chen, S. Ding, R. Yi, "Exploiting Fine-grained Face Forgery Clues via
Progressive Enhancement Learning", AAAI 2022. Section, equation and table numbers below refer to it.

- Fine-grained frequency input (sec. 3.1, eq. 1): the YCbCr face is cut by an 8x8 window sliding with stride 2;
  each window's 8x8 DCT is spread over 64 channels, one per band, so the 3 colour channels give 192 channels at
  H/2 x W/2. A 1x1 convolution picks 64 of them, and the result is brought back to H x W.
- Two EfficientNet-B4 streams (timm), RGB and frequency, identical but for the first convolution (3 or 64 input
  channels). The paper's "convolutional blocks" are timm's seven stages ``blocks[0..6]``; "after the first two
  blocks" is after ``blocks[0]`` and ``blocks[1]``, "the second to the penultimate" is after ``blocks[1..5]``.
- Self-enhancement (sec. 3.2): noise enhancement ``f + dwconv1x1(sigmoid(f - median3x3(f)))`` (eqs. 2-3) after
  ``blocks[0..1]``; channel attention ``f + f * sigmoid(MLP(GAP(f) + GMP(f)))`` (eq. 4) after ``blocks[1..5]``.
- Mutual enhancement (sec. 3.3, eqs. 5-6) after ``blocks[1..5]``, behind self-enhancement: both streams'
  features are concatenated, a pointwise conv and a sigmoid give one spatial map per stream, and each stream
  becomes ``f + dwconv1x1(f * a)``.
- Head (sec. 3.4, eq. 7): both streams' final features, pooled and concatenated, give one fake logit (BCE).
- Ablations: ``streams`` ("both", "rgb", "freq"), ``self_enhancement`` and ``mutual_enhancement`` reproduce the
  rows of Table 4; ``denoiser`` reproduces Table 5 (``"median3"`` default, ``"median5"``, ``"median7"``,
  ``"mean3"``, and the multi-filter rows as ``"median3+median5"`` and ``"median3+median5+median7"``).

Interpretations where the paper is silent:
- Window alignment: the input is reflect-padded by 3 pixels per side before the stride-2 window slides, so there
  are exactly H/2 x W/2 windows (the H/2 x W/2 of eq. 1) and window (i, j) is centred on the 2x2 pixel block
  (2i..2i+1, 2j..2j+1). Reflection rather than zeros keeps the padding from adding a false edge to every band.
- Back to H x W: the paper gives the frequency input as 64 x H x W and says the streams differ only in the first
  conv's input channels, so the 64-channel H/2 map is bilinearly upsampled (align_corners=False, which matches
  the window centres above) rather than giving the frequency stem stride 1. The 1x1 conv runs before the upsample:
  both are linear and bilinear weights sum to one, so the order does not change the result, only the cost.
- The frequency stream sees the DCT of YCbCr pixels in [0, 1] without further normalisation; its stem BN scales it.
- Each stream ends with timm's head conv (to 1792 channels) and BN, as EfficientNet-B4 does, then global average
  pooling; that is where "the outputs of two streams are concatenated" (3584 features -> one logit).
- The channel-attention MLP is Linear-ReLU-Linear with reduction 16 (the SE/CBAM convention); eq. 4 sums GAP and
  GMP *before* the MLP, and that is kept.
- The depthwise 1x1 convs that "adjust the amplitude" (eqs. 3 and 6) start at zero, so every enhancement starts
  as the identity (channel attention aside, which eq. 4 defines without such a conv) and an ImageNet-pretrained
  backbone starts from its own features.
- Filters on feature maps use replicate padding (``scipy.ndimage`` mode "nearest"): it works at any feature size.
- Multiple median filters (Table 5): one noise map per filter, each through the sigmoid, stacked per channel and
  reduced by a 1x1 group conv (one group per channel), which is the depthwise conv when there is one filter.
- In single-stream ablations the mutual-enhancement module becomes a spatial attention on that stream alone, as
  sec. 4.3 says; it is the same module with one stream.
- Dropout 0.4 before the logit: EfficientNet-B4's own head dropout (the paper names none).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deepscan.detectors.base import Detector, DetectorConfig, FrequencyView
from deepscan.detectors.layers import efficientnet
from deepscan.detectors.registry import register_detector
from deepscan.frequency import rgb_to_ycbcr, sliding_dct2

# The paper's training settings (sec. 4.1: 320 px on FF++, 224 on WildDeepfake; 50 frames per video) are
# recipes/pel.yaml, read by deepscan.train.recipe.

DCT_WINDOW = 8
DCT_STRIDE = 2
STREAM_NAMES = ("rgb", "freq")


# --- fine-grained frequency input (sec. 3.1) --------------------------------------------------------------------
def fine_grained_decomposition(x: torch.Tensor, window: int = DCT_WINDOW, stride: int = DCT_STRIDE) -> torch.Tensor:
    """Eq. 1: RGB in [0, 1] ``(B, 3, H, W)`` -> ``(B, 3 * window**2, H / stride, W / stride)`` DCT bands.

    Channel ``c * window**2 + u * window + v`` holds band (u, v) of YCbCr channel c (Y, Cb, Cr).
    """
    pad = (window - stride) // 2
    padded = F.pad(rgb_to_ycbcr(x), (pad, pad, pad, pad), mode="reflect")
    return sliding_dct2(padded, window=window, stride=stride)


class FineGrainedFrequencyInput(nn.Module):
    """Sec. 3.1: DCT bands -> 1x1 conv (band selection) -> the RGB stream's resolution."""

    def __init__(self, out_channels: int = 64, window: int = DCT_WINDOW, stride: int = DCT_STRIDE):
        super().__init__()
        self.window = window
        self.stride = stride
        self.band_conv = nn.Conv2d(3 * window * window, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = self.band_conv(fine_grained_decomposition(x, self.window, self.stride))
        return F.interpolate(bands, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def band_weights(self) -> torch.Tensor:
        """How much each of the DCT bands feeds the stream: ``|w|`` summed over output channels, ``(3, k, k)``."""
        weight = self.band_conv.weight.detach().abs().sum(dim=(0, 2, 3))
        return weight.view(3, self.window, self.window)


# --- denoisers on feature maps (sec. 3.2, Table 5) --------------------------------------------------------------
def median_filter2d(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Exact ``kernel_size x kernel_size`` median per channel, replicate border (scipy mode "nearest")."""
    pad = kernel_size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    windows = padded.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # (B, C, H, W, k, k)
    return windows.flatten(-2).median(dim=-1).values


def mean_filter2d(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``kernel_size x kernel_size`` box mean per channel, replicate border (scipy mode "nearest")."""
    pad = kernel_size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return F.avg_pool2d(padded, kernel_size, stride=1)


_FILTERS = {"median": median_filter2d, "mean": mean_filter2d}
_FILTER_SPEC = re.compile(r"^(median|mean)(\d+)$")


def parse_denoiser(spec: str) -> tuple[tuple[str, int], ...]:
    """``"median3"`` -> ``(("median", 3),)``; several filters joined by ``+`` (Table 5's multi-filter rows)."""
    filters = []
    for part in spec.split("+"):
        match = _FILTER_SPEC.match(part.strip())
        if match is None or int(match.group(2)) % 2 == 0:
            raise ValueError(
                f"unknown denoiser {part!r} in {spec!r}: use median<k> or mean<k> with odd k, joined by '+' "
                "(e.g. 'median3', 'mean3', 'median3+median5')"
            )
        filters.append((match.group(1), int(match.group(2))))
    return tuple(filters)


# --- enhancement modules ---------------------------------------------------------------------------------------
def _zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class NoiseEnhancement(nn.Module):
    """Eqs. 2-3: ``f + Conv(sigmoid(f - M(f)))`` with M a denoiser and Conv a depthwise 1x1 conv."""

    def __init__(self, channels: int, filters: tuple[tuple[str, int], ...] = (("median", 3),)):
        super().__init__()
        self.filters = filters
        self.amplitude = _zero_init(
            nn.Conv2d(channels * len(filters), channels, kernel_size=1, groups=channels)
        )

    def noise(self, f: torch.Tensor) -> torch.Tensor:
        """The squashed noise maps, laid out so that channel ``c * K + k`` is channel c under filter k."""
        maps = [torch.sigmoid(f - _FILTERS[kind](f, size)) for kind, size in self.filters]
        return torch.stack(maps, dim=2).flatten(1, 2)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f + self.amplitude(self.noise(f))


class ChannelAttention(nn.Module):
    """Eq. 4: ``f + f * sigmoid(MLP(GAP(f) + GMP(f)))``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        pooled = f.mean(dim=(2, 3)) + f.amax(dim=(2, 3))
        weights = torch.sigmoid(self.mlp(pooled))[:, :, None, None]
        return f + f * weights


class SelfEnhancement(nn.Module):
    """Sec. 3.2: noise enhancement then channel attention, each mounted only where the paper puts it."""

    def __init__(
        self,
        channels: int,
        noise: bool,
        attention: bool,
        filters: tuple[tuple[str, int], ...],
        reduction: int,
    ):
        super().__init__()
        self.noise = NoiseEnhancement(channels, filters) if noise else nn.Identity()
        self.attention = ChannelAttention(channels, reduction) if attention else nn.Identity()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.attention(self.noise(f))


class MutualEnhancement(nn.Module):
    """Eqs. 5-6: a pointwise conv over the concatenated streams gives one spatial map per stream;
    each stream becomes ``f + dwconv1x1(f * a)``. With one stream it is a plain spatial attention."""

    def __init__(self, channels: int, num_streams: int = 2):
        super().__init__()
        self.attention = nn.Conv2d(channels * num_streams, num_streams, kernel_size=1)
        self.amplitudes = nn.ModuleList(
            _zero_init(nn.Conv2d(channels, channels, kernel_size=1, groups=channels)) for _ in range(num_streams)
        )

    def maps(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.attention(torch.cat(features, dim=1)))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = self.maps(features)
        return [
            f + amplitude(f * maps[:, i : i + 1]) for i, (f, amplitude) in enumerate(zip(features, self.amplitudes))
        ]


# --- the two streams ---------------------------------------------------------------------------------------------
class EfficientNetStream(nn.Module):
    """One timm EfficientNet cut into stem, the seven stages and the head conv, so that modules fit between."""

    def __init__(self, backbone: str, in_chans: int, pretrained: bool):
        super().__init__()
        net = efficientnet("PEL", backbone, in_chans, pretrained)
        self.stem = nn.Sequential(net.conv_stem, net.bn1)
        self.blocks = net.blocks
        self.head = nn.Sequential(net.conv_head, net.bn2)
        self.num_features = net.num_features

    def stage_widths(self) -> list[int]:
        return [[m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features for stage in self.blocks]


class PEL(Detector):
    """Two-stream (RGB + fine-grained frequency) EfficientNet with self- and mutual enhancement."""

    def __init__(
        self,
        backbone: str = "efficientnet_b4",
        pretrained: bool = False,
        streams: str = "both",
        self_enhancement: bool = True,
        mutual_enhancement: bool = True,
        denoiser: str = "median3",
        frequency_channels: int = 64,
        reduction: int = 16,
        dropout: float = 0.4,
    ):
        super().__init__()
        if streams not in ("both", "rgb", "freq"):
            raise ValueError(f"streams must be 'both', 'rgb' or 'freq', not {streams!r}")
        self.config = PEL_CONFIG  # the registry sets it too; this keeps a directly built PEL usable
        used = STREAM_NAMES if streams == "both" else (streams,)
        filters = parse_denoiser(denoiser)

        self.frequency_input = FineGrainedFrequencyInput(frequency_channels) if "freq" in used else None
        in_chans = {"rgb": 3, "freq": frequency_channels}
        self.streams = nn.ModuleDict({name: EfficientNetStream(backbone, in_chans[name], pretrained) for name in used})

        widths = next(iter(self.streams.values())).stage_widths()
        last = len(widths) - 1
        noise_stages = {0, 1}  # "after the first two convolutional blocks"
        middle_stages = set(range(1, last))  # "the second to the penultimate convolutional blocks"
        self.self_enhancement = nn.ModuleDict(
            {
                name: nn.ModuleDict(
                    {
                        str(i): SelfEnhancement(widths[i], i in noise_stages, i in middle_stages, filters, reduction)
                        for i in sorted(noise_stages | middle_stages)
                    }
                )
                for name in (used if self_enhancement else ())
            }
        )
        self.mutual_enhancement = nn.ModuleDict(
            {str(i): MutualEnhancement(widths[i], len(used)) for i in sorted(middle_stages)}
            if mutual_enhancement
            else {}
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(sum(stream.num_features for stream in self.streams.values()), 1)

    def stream_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = {}
        if "rgb" in self.streams:
            inputs["rgb"] = self.normalize(x)
        if "freq" in self.streams:
            inputs["freq"] = self.frequency_input(x)
        return inputs

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stream inputs -> concatenated pooled features of all streams, ``(B, sum of head widths)``."""
        names = list(self.streams)
        feats = [self.streams[name].stem(inputs[name]) for name in names]
        for stage in range(len(self.streams[names[0]].blocks)):
            key = str(stage)
            feats = [
                self._self_enhance(name, key, self.streams[name].blocks[stage](f)) for name, f in zip(names, feats)
            ]
            if key in self.mutual_enhancement:
                feats = self.mutual_enhancement[key](feats)
        pooled = [self.streams[name].head(f).mean(dim=(2, 3)) for name, f in zip(names, feats)]
        return torch.cat(pooled, dim=1)

    def _self_enhance(self, stream: str, stage: str, f: torch.Tensor) -> torch.Tensor:
        modules = self.self_enhancement[stream] if stream in self.self_enhancement else {}
        return modules[stage](f) if stage in modules else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(self.stream_inputs(x)))).squeeze(1)

    def cam_target_layers(self) -> list[nn.Module]:
        """The head of each stream that this variant has (single-stream ablations have one)."""
        modules = dict(self.named_modules())
        return [modules[name] for name in self.config.cam_target_layers if name in modules]

    @torch.no_grad()
    def frequency_views(self, x: torch.Tensor) -> dict[str, FrequencyView]:
        bands = fine_grained_decomposition(x[:1])[0]  # (192, H/2, W/2)
        energy = bands.square().mean(dim=(1, 2)).view(3, DCT_WINDOW, DCT_WINDOW)
        views = {
            "dct_band_energy": FrequencyView(
                title="Energy of the 192 sliding-window DCT bands (Y | Cb | Cr, log10)",
                image=_side_by_side(torch.log10(energy + 1e-12)),
                description=(
                    "Mean squared coefficient of each 8x8 DCT band over all windows of the face; "
                    "columns 0-7 Y, 8-15 Cb, 16-23 Cr; in each grid the DC band is top-left and the highest "
                    "frequencies bottom-right."
                ),
            )
        }
        if self.frequency_input is not None:
            views["band_weights"] = FrequencyView(
                title="Learned 1x1 band weights (Y | Cb | Cr)",
                image=_side_by_side(self.frequency_input.band_weights()),
                description=(
                    "Sum of |weight| of the 1x1 conv over its 64 outputs: the bands the frequency stream listens "
                    "to most are the brightest; layout as in the band-energy view."
                ),
                cmap="magma",
            )
        return views


def _side_by_side(grids: torch.Tensor) -> np.ndarray:
    """``(3, k, k)`` -> ``(k, 3k)``: the three colour channels' band grids next to each other."""
    return torch.cat(list(grids), dim=1).cpu().numpy()


PEL_SUMMARY = (
    "PEL looks at the face twice: as pixels, and as 192 fine-grained frequency bands (an 8x8 DCT sliding over "
    "the YCbCr face with stride 2). Each stream sharpens feature noise and weighs its channels "
    "(self-enhancement), and the two streams show each other where to look (mutual enhancement) after every "
    "stage. Input 224x224: the paper's size for WildDeepfake (it uses 320 on FF++), chosen here for CPU speed."
)

PEL_CONFIG = DetectorConfig(
    name="pel",
    paper="Gu et al., Exploiting Fine-grained Face Forgery Clues via Progressive Enhancement Learning (AAAI 2022)",
    input_size=224,
    gflops=7.29,
    weights="pel.safetensors",
    cam_target_layers=("streams.rgb.head", "streams.freq.head"),
    summary=PEL_SUMMARY,
)


@register_detector(PEL_CONFIG)
def pel(**kwargs) -> PEL:
    return PEL(**kwargs)
