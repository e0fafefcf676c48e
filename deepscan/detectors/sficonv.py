"""SFIConv: space-frequency interactive convolution, and the backbones built with it.

Paper: Z. Guo, Z. Jia, L. Wang, D. Wang, G. Yang, N. Kasabov, "Constructing New Backbone Networks via
Space-Frequency Interactive Convolution for Deepfake Detection", IEEE Transactions on Information Forensics
and Security, 2023. Section, equation and table numbers below refer to it.

- MCSConv (sec. III-B, eq. 1): one constrained kernel per input channel (centre -1, the other taps sum to 1),
  applied depthwise, then a k x k convolution across channels with the kernel size of the convolution it
  replaces. The constrained kernels are high-pass: their taps sum to 0, so flat regions give no response.
- SFIConv (sec. III-C): Stage 1 splits one tensor into a spatial branch ((1 - alpha) c_out channels, vanilla
  convolution) and a frequency branch (alpha c_out channels, MCSConv); Stage 2 updates each branch and lets
  them interact (four convolutions, eqs. 2-5); Stage 3 fuses the two into one tensor (eqs. 6-7).
- Flexible form (eq. 8): the frequency branch lives at beta times the spatial size; nearest-neighbour
  resizing matches the sizes wherever the branches meet.
- Backbones (Table III): SFIC-ResNet26 (the default detector), SFIC-ResNet50 and SFIC-VGG13, with the plain
  ResNet26, ResNet50 and VGG13 as baselines. The paper's parameter and GMac counts are checked in the tests.

Where the paper is silent, the authors' released SFIC-ResNet (github.com/EricGzq/SFIConv) is followed:
- The constrained kernels are 5 x 5 whatever the replaced kernel is: a 1 x 1 kernel cannot satisfy eq. 1,
  and the first SFIConv of a ResNet replaces a 1 x 1 convolution.
- SFIC-ResNet: standard 7 x 7 stem; the first block of layer1 splits (Stage 1 on its first 1 x 1
  convolution, whose output also feeds that block's projection shortcut); every convolution of layers 1-3,
  shortcuts included, is a Stage 2; the first block of layer4 fuses (Stage 3 on its last convolution and on
  its shortcut); the remaining layer4 blocks are plain. Downsampling is a 2 x 2 average pool on each branch
  followed by stride-1 convolutions.
- Eq. 8 resizes the *outputs* of the cross-branch convolutions: S->F is computed at the spatial size and
  then shrunk, F->S and F->F at the frequency size. This is what reproduces Table II, whose GMac fall
  linearly in alpha at a fixed beta; Stage 1 computes its frequency output at full size and then shrinks it.
  (The released code has this resizing commented out, i.e. beta = 1 only.)
- SFIC-VGG13: the VGG13 layout with batch norm (trained from scratch), Stage 1 on the second convolution,
  Stage 2 on the third to ninth, Stage 3 on the last; max pooling on each branch; global average pooling and
  one fully connected layer, which is what the paper's 9.41 M parameters imply.
- The 2-class softmax head of the paper is expressed as one fake logit with BCE, which is the same model.
- Eq. 1 must hold during training (the authors' code freezes the kernels after initialising them). Here it is
  a parametrisation (``torch.nn.utils.parametrize``): the kernel the convolution uses is always computed from
  free weights by fixing the centre at -1 and projecting the other taps onto the plane where they sum to 1.
  So the constraint holds after every optimiser step, for any optimiser, after loading a checkpoint, and with
  a trainer that never calls ``after_optimizer_step``; gradients are those of the constrained kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from deepscan.detectors.base import Detector, DetectorConfig, FrequencyView
from deepscan.detectors.registry import register_detector
from deepscan.frequency import log_magnitude

# The paper's training settings (sec. IV-A-3; the rotation range is not given) are recipes/sficonv.yaml,
# read by deepscan.train.recipe.

CONSTRAINED_KERNEL_SIZE = 5
Pair = tuple[torch.Tensor, torch.Tensor]


def split_channels(channels: int, alpha: float) -> tuple[int, int]:
    """(spatial, frequency) channel counts for a tensor of ``channels``: alpha of them are frequency."""
    frequency = int(alpha * channels)
    if frequency < 1 or frequency >= channels:
        raise ValueError(f"alpha={alpha} leaves a branch of {channels} channels empty")
    return channels - frequency, frequency


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resizing (eq. 8); a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="nearest")


def _frequency_size(size: torch.Size, beta: float) -> tuple[int, int]:
    return max(1, int(size[-2] * beta)), max(1, int(size[-1] * beta))


def _downsample(stride: int) -> nn.Module:
    # ceil_mode keeps a 1-pixel frequency map (small inputs with small beta) from pooling to nothing.
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    return nn.AvgPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)


def _off_centre_mask(kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(kernel_size, kernel_size, device=like.device, dtype=like.dtype)
    mask[kernel_size // 2, kernel_size // 2] = 0
    return mask


class ConstrainedKernel(nn.Module):
    """Eq. 1 as a parametrisation: centre -1, the other taps projected onto the plane where they sum to 1.

    The Euclidean projection (subtract the excess evenly) is used rather than the classic division by the
    sum, which blows up when the free taps happen to sum to nearly 0.
    """

    def forward(self, free: torch.Tensor) -> torch.Tensor:
        kernel_size = free.shape[-1]
        off_centre = _off_centre_mask(kernel_size, free)
        taps = free * off_centre
        excess = (taps.sum(dim=(-2, -1), keepdim=True) - 1.0) / (kernel_size * kernel_size - 1)
        return (taps - excess) * off_centre - (1.0 - off_centre)


class MCSConv(nn.Module):
    """Multichannel constrained separable convolution (sec. III-B, Fig. 3)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        constrained_kernel_size: int = CONSTRAINED_KERNEL_SIZE,
    ):
        super().__init__()
        if constrained_kernel_size < 3 or constrained_kernel_size % 2 == 0:
            raise ValueError("the constrained kernels need an odd size of at least 3 (eq. 1 needs a centre)")
        self.constrained = nn.Conv2d(
            in_channels,
            in_channels,
            constrained_kernel_size,
            padding=constrained_kernel_size // 2,
            groups=in_channels,
            bias=False,
        )
        with torch.no_grad():
            self.constrained.weight.copy_(self._initial_kernels(self.constrained.weight))
        parametrize.register_parametrization(self.constrained, "weight", ConstrainedKernel())
        self.cross_channel = _conv(in_channels, out_channels, kernel_size)

    @staticmethod
    def _initial_kernels(like: torch.Tensor) -> torch.Tensor:
        # Positive neighbour weights summing to 1, centre -1: each kernel starts as a prediction-error filter
        # (weighted mean of the neighbours minus the pixel), as in constrained convolution.
        kernel_size = like.shape[-1]
        off_centre = _off_centre_mask(kernel_size, like)
        taps = torch.rand_like(like) * off_centre
        return taps / taps.sum(dim=(-2, -1), keepdim=True) - (1.0 - off_centre)

    @property
    def kernels(self) -> torch.Tensor:
        """The constrained kernels in use, ``(C_in, 1, k, k)``."""
        return self.constrained.weight

    def trace_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The ``C_in`` depthwise high-frequency trace maps, before the cross-channel convolution."""
        return self.constrained(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cross_channel(self.trace_maps(x))


class SFIConvStage1(nn.Module):
    """Generation: one tensor in, (spatial, frequency) out; the frequency branch comes from MCSConv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        alpha: float,
        beta: float = 1.0,
        stride: int = 1,
        constrained_kernel_size: int = CONSTRAINED_KERNEL_SIZE,
    ):
        super().__init__()
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        spatial_out, frequency_out = split_channels(out_channels, alpha)
        self.beta = beta
        self.downsample = _downsample(stride)
        self.spatial = _conv(in_channels, spatial_out, kernel_size)
        self.frequency = MCSConv(in_channels, frequency_out, kernel_size, constrained_kernel_size)

    def forward(self, x: torch.Tensor) -> Pair:
        x = self.downsample(x)
        frequency = self.frequency(x)
        return self.spatial(x), _resize(frequency, _frequency_size(x.shape, self.beta))


class SFIConvStage2(nn.Module):
    """Interaction (eqs. 2-5): each branch updates itself and sends an interaction term to the other."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, alpha: float, stride: int = 1):
        super().__init__()
        spatial_in, frequency_in = split_channels(in_channels, alpha)
        spatial_out, frequency_out = split_channels(out_channels, alpha)
        self.downsample = _downsample(stride)
        self.spatial_to_spatial = _conv(spatial_in, spatial_out, kernel_size)
        self.spatial_to_frequency = _conv(spatial_in, frequency_out, kernel_size)
        self.frequency_to_frequency = _conv(frequency_in, frequency_out, kernel_size)
        self.frequency_to_spatial = _conv(frequency_in, spatial_out, kernel_size)

    def forward(self, pair: Pair) -> Pair:
        spatial, frequency = (self.downsample(x) for x in pair)
        spatial_size, frequency_size = spatial.shape[-2:], frequency.shape[-2:]
        new_spatial = self.spatial_to_spatial(spatial) + _resize(self.frequency_to_spatial(frequency), spatial_size)
        new_frequency = self.frequency_to_frequency(frequency) + _resize(
            self.spatial_to_frequency(spatial), frequency_size
        )
        return new_spatial, new_frequency


class SFIConvStage3(nn.Module):
    """Fusion (eqs. 6-7): both branches convolved to ``out_channels`` and summed at the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, alpha: float, stride: int = 1):
        super().__init__()
        spatial_in, frequency_in = split_channels(in_channels, alpha)
        self.downsample = _downsample(stride)
        self.spatial_to_spatial = _conv(spatial_in, out_channels, kernel_size)
        self.frequency_to_spatial = _conv(frequency_in, out_channels, kernel_size)

    def forward(self, pair: Pair) -> torch.Tensor:
        spatial, frequency = (self.downsample(x) for x in pair)
        return self.spatial_to_spatial(spatial) + _resize(self.frequency_to_spatial(frequency), spatial.shape[-2:])


class PairNormAct(nn.Module):
    """Batch norm (and ReLU) on each branch. ``act_spatial`` outputs a plain tensor, for Grad-CAM."""

    def __init__(self, channels: int, alpha: float, activation: bool = True):
        super().__init__()
        spatial, frequency = split_channels(channels, alpha)
        self.norm_spatial = nn.BatchNorm2d(spatial)
        self.norm_frequency = nn.BatchNorm2d(frequency)
        # Not in place: Grad-CAM keeps a reference to the spatial activation.
        self.act_spatial = nn.ReLU() if activation else nn.Identity()
        self.act_frequency = nn.ReLU() if activation else nn.Identity()

    def forward(self, pair: Pair) -> Pair:
        spatial, frequency = pair
        return self.act_spatial(self.norm_spatial(spatial)), self.act_frequency(self.norm_frequency(frequency))


class SFICBottleneck(nn.Module):
    """ResNet bottleneck whose convolutions are SFIConv stages.

    ``role`` is where the block sits: ``"split"`` (first block of layer1: Stage 1 turns the single input
    into a pair), ``"pair"`` (Stage 2 throughout) or ``"fuse"`` (first block of layer4: Stage 3 at the end
    and on the shortcut, one tensor out).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, alpha: float, beta: float, role: str,
                 constrained_kernel_size: int = CONSTRAINED_KERNEL_SIZE):
        super().__init__()
        if role not in ("split", "pair", "fuse"):
            raise ValueError(f"unknown bottleneck role {role!r}")
        self.role = role
        width, out_channels = planes, planes * self.expansion
        if role == "split":
            self.conv1 = SFIConvStage1(in_channels, width, 1, alpha, beta,
                                       constrained_kernel_size=constrained_kernel_size)
            shortcut_in = width  # the split pair is what the shortcut carries
        else:
            self.conv1 = SFIConvStage2(in_channels, width, 1, alpha)
            shortcut_in = in_channels
        self.bn1 = PairNormAct(width, alpha)
        self.conv2 = SFIConvStage2(width, width, 3, alpha, stride=stride)
        self.bn2 = PairNormAct(width, alpha)
        needs_projection = stride != 1 or shortcut_in != out_channels
        if role == "fuse":
            self.conv3 = SFIConvStage3(width, out_channels, 1, alpha)
            self.bn3 = nn.BatchNorm2d(out_channels)
            self.shortcut = (
                nn.Sequential(SFIConvStage3(shortcut_in, out_channels, 1, alpha, stride=stride),
                              nn.BatchNorm2d(out_channels))
                if needs_projection else None
            )
            self.act = nn.ReLU()
        else:
            self.conv3 = SFIConvStage2(width, out_channels, 1, alpha)
            self.bn3 = PairNormAct(out_channels, alpha, activation=False)
            self.shortcut = (
                nn.Sequential(SFIConvStage2(shortcut_in, out_channels, 1, alpha, stride=stride),
                              PairNormAct(out_channels, alpha, activation=False))
                if needs_projection else None
            )
            self.act_spatial = nn.ReLU()
            self.act_frequency = nn.ReLU()

    def forward(self, x: torch.Tensor | Pair) -> torch.Tensor | Pair:
        out = self.bn1(self.conv1(x))
        if self.role == "split":
            x = out  # the residual starts from the split pair (there is no pair before Stage 1)
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        residual = x if self.shortcut is None else self.shortcut(x)
        if self.role == "fuse":
            return self.act(out + residual)
        return self.act_spatial(out[0] + residual[0]), self.act_frequency(out[1] + residual[1])


def _init_convolutions(model: nn.Module) -> None:
    """He initialisation as torchvision's ResNet; the constrained kernels keep their own start."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not parametrize.is_parametrized(module):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class SFICResNet(nn.Module):
    """SFIC-ResNet (Table III) on torchvision's bottleneck ResNet layout, one fake logit out."""

    def __init__(self, layers: tuple[int, int, int, int], alpha: float = 0.5, beta: float = 1.0,
                 constrained_kernel_size: int = CONSTRAINED_KERNEL_SIZE):
        from torchvision.models.resnet import Bottleneck  # torchvision is imported only when a model is built

        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        stages = []
        for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stage = []
            for block in range(blocks):
                stride = 2 if layer > 1 and block == 0 else 1
                if layer == 4 and block > 0:  # after the fusion the network is a plain ResNet again
                    stage.append(Bottleneck(in_channels, planes))
                else:
                    role = "split" if (layer, block) == (1, 0) else "fuse" if layer == 4 else "pair"
                    stage.append(SFICBottleneck(in_channels, planes, stride, alpha, beta, role,
                                                constrained_kernel_size))
                in_channels = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, 1)
        _init_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SFIConvLayer(nn.Module):
    """One replaced convolution of a plain (VGG-like) network: an SFIConv stage, then batch norm and ReLU."""

    def __init__(self, stage: nn.Module, out_channels: int, alpha: float):
        super().__init__()
        self.conv = stage
        if isinstance(stage, SFIConvStage3):
            self.norm_act = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU())
        else:
            self.norm_act = PairNormAct(out_channels, alpha)

    def forward(self, x: torch.Tensor | Pair) -> torch.Tensor | Pair:
        return self.norm_act(self.conv(x))


class PairMaxPool(nn.MaxPool2d):
    """VGG's 2 x 2 max pool, on one tensor or on each branch of a pair."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor | Pair) -> torch.Tensor | Pair:
        pool = super().forward
        return tuple(pool(branch) for branch in x) if isinstance(x, tuple) else pool(x)


class SFICVGG(nn.Module):
    """SFIC-VGG (Table III): the first convolution plain, then Stage 1, Stage 2 ..., Stage 3 on the last."""

    def __init__(self, layout: str = "B", alpha: float = 0.5, beta: float = 1.0,
                 constrained_kernel_size: int = CONSTRAINED_KERNEL_SIZE):
        from torchvision.models.vgg import cfgs as vgg_layouts

        super().__init__()
        widths = vgg_layouts[layout]
        convolutions = [w for w in widths if w != "M"]
        self.stem = nn.Sequential(_conv(3, convolutions[0], 3), nn.BatchNorm2d(convolutions[0]), nn.ReLU(inplace=True))
        body: list[nn.Module] = []
        in_channels, seen = convolutions[0], 1
        for width in widths[1:]:
            if width == "M":
                body.append(PairMaxPool())
                continue
            seen += 1
            if seen == 2:
                stage = SFIConvStage1(in_channels, width, 3, alpha, beta,
                                      constrained_kernel_size=constrained_kernel_size)
            elif seen == len(convolutions):
                stage = SFIConvStage3(in_channels, width, 3, alpha)
            else:
                stage = SFIConvStage2(in_channels, width, 3, alpha)
            body.append(SFIConvLayer(stage, width, alpha))
            in_channels = width
        self.body = nn.Sequential(*body)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, 1)
        _init_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.body(self.stem(x))), 1))


class PlainVGG(nn.Module):
    """The VGG baseline with batch norm, global average pooling and one fake logit."""

    def __init__(self, layout: str = "B"):
        from torchvision.models.vgg import cfgs as vgg_layouts
        from torchvision.models.vgg import make_layers

        super().__init__()
        self.features = make_layers(vgg_layouts[layout], batch_norm=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear([w for w in vgg_layouts[layout] if w != "M"][-1], 1)
        _init_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class BackboneDetector(Detector):
    """A single-logit classifier backbone behind the detector interface (the paper's baselines)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x)).squeeze(1)


def _tile(maps: torch.Tensor, columns: int, gap: int = 1) -> np.ndarray:
    """``(C, H, W)`` -> one ``(rows * (H + gap) - gap, columns * (W + gap) - gap)`` picture.

    Gaps and empty tiles take the smallest value of the maps, so the picture stays finite.
    """
    maps = maps.detach().float().cpu()
    channels, height, width = maps.shape
    rows = -(-channels // columns)
    canvas = torch.full((rows * columns, height + gap, width + gap), maps.min().item())
    canvas[:channels, :height, :width] = maps
    canvas = canvas.view(rows, columns, height + gap, width + gap).permute(0, 2, 1, 3)
    canvas = canvas.reshape(rows * (height + gap), columns * (width + gap))
    return canvas[: canvas.shape[0] - gap, : canvas.shape[1] - gap].numpy()


def kernel_frequency_response(kernels: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``|FFT|`` of each kernel ``(C, 1, k, k)`` zero-padded to ``size``, DC at the centre: ``(C, size, size)``."""
    spectrum = torch.fft.fft2(kernels[:, 0], s=(size, size))
    return torch.fft.fftshift(spectrum.abs(), dim=(-2, -1))


class SFIConvDetector(BackboneDetector):
    """An SFIC backbone: its views show what the MCSConv of Stage 1 extracts from a face."""

    def __init__(self, backbone: nn.Module, alpha: float, beta: float):
        super().__init__(backbone)
        self.alpha, self.beta = alpha, beta

    @property
    def mcsconv(self) -> MCSConv:
        return next(module for module in self.modules() if isinstance(module, MCSConv))

    @torch.no_grad()
    def frequency_views(self, x: torch.Tensor) -> dict[str, FrequencyView]:
        mcsconv = self.mcsconv
        captured: list[torch.Tensor] = []
        hook = mcsconv.constrained.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            with self.evaluating():  # a view must not move the batch-norm statistics
                self(x[:1])
        finally:
            hook.remove()
        traces = captured[0][0].abs()
        per_map_peak = traces.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        energy = F.interpolate(traces.mean(0, keepdim=True)[None], size=x.shape[-2:], mode="bilinear",
                               align_corners=False)[0, 0]
        columns = int(np.ceil(np.sqrt(traces.shape[0])))
        # eps 1e-2 rather than the default: the exact zero at DC would otherwise swamp the colour range.
        spectra = log_magnitude(kernel_frequency_response(mcsconv.kernels.float()), eps=1e-2)
        kernel_size = mcsconv.kernels.shape[-1]
        return {
            "mcsconv_traces": FrequencyView(
                title="High-frequency trace maps of MCSConv (|response| per constrained kernel)",
                image=_tile(traces / per_map_peak, columns),
                description=(
                    f"One tile per constrained {kernel_size}x{kernel_size} kernel, each applied to one of the "
                    "feature maps entering SFIConv Stage 1 and scaled to its own peak. Flat regions give nothing; "
                    "edges and fine texture light up."
                ),
                cmap="magma",
            ),
            "mcsconv_energy": FrequencyView(
                title="Mean high-frequency energy of MCSConv over the face",
                image=energy.cpu().numpy(),
                description="The trace maps averaged over kernels and resized to the face: where the "
                "frequency branch of SFIConv starts from.",
                cmap="magma",
            ),
            "mcsconv_kernel_spectra": FrequencyView(
                title="Frequency response of the constrained kernels (log |FFT|, DC at the centre)",
                image=_tile(spectra, columns),
                description="Each kernel's centre is -1 and its other taps sum to 1, so its response at DC "
                "(the centre of each tile) is zero: MCSConv passes only high frequencies.",
            ),
        }


@dataclass(frozen=True)
class SFIConvConfig(DetectorConfig):
    """Default configuration of an SFIC backbone: the channel ratio alpha and the frequency-branch scale beta."""

    backbone: str = "resnet26"
    alpha: float = 0.5
    beta: float = 1.0


PAPER = (
    "Guo et al., Constructing New Backbone Networks via Space-Frequency Interactive Convolution for "
    "Deepfake Detection (IEEE TIFS 2023)"
)
SFICONV_SUMMARY = (
    "SFIConv replaces the convolutions of a standard backbone with a two-branch convolution: a spatial branch "
    "and a high-frequency branch that starts from constrained (prediction-error) kernels. The branches exchange "
    "features at every layer and are fused before the classifier."
)
BASELINE_SUMMARY = "The plain {} the SFIConv paper compares against (Table III), trained from scratch."
RESNET_LAYOUTS = {"resnet26": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}


def _register_sfic_resnet(name: str, depth: str, weights: str | None = None, gflops: float | None = None):
    @register_detector(
        SFIConvConfig(
            name=name,
            paper=PAPER,
            input_size=256,
            gflops=gflops,
            cam_target_layers=(f"backbone.layer3.{RESNET_LAYOUTS[depth][2] - 1}.act_spatial",),
            weights=weights,
            summary=f"SFIC-{depth.replace('resnet', 'ResNet')}. " + SFICONV_SUMMARY,
            backbone=depth,
        )
    )
    def entrypoint(alpha: float = 0.5, beta: float = 1.0,
                   constrained_kernel_size: int = CONSTRAINED_KERNEL_SIZE) -> SFIConvDetector:
        return SFIConvDetector(SFICResNet(RESNET_LAYOUTS[depth], alpha, beta, constrained_kernel_size), alpha, beta)

    return entrypoint


def _register_resnet_baseline(name: str, depth: str):
    @register_detector(
        DetectorConfig(
            name=name,
            paper=PAPER + ", baseline",
            input_size=256,
            cam_target_layers=("backbone.layer3",),
            summary=BASELINE_SUMMARY.format(depth.replace("resnet", "ResNet")),
        )
    )
    def entrypoint() -> BackboneDetector:
        from torchvision.models.resnet import Bottleneck, ResNet

        return BackboneDetector(ResNet(Bottleneck, list(RESNET_LAYOUTS[depth]), num_classes=1))

    return entrypoint


sficonv = _register_sfic_resnet("sficonv", "resnet26", weights="sficonv.safetensors", gflops=6.13)
sficonv_resnet50 = _register_sfic_resnet("sficonv_resnet50", "resnet50")
baseline_resnet26 = _register_resnet_baseline("baseline_resnet26", "resnet26")
baseline_resnet50 = _register_resnet_baseline("baseline_resnet50", "resnet50")

# Grad-CAM on the ninth convolution of VGG13 in both: the last layer where SFIC-VGG13 still has a spatial branch.
_VGG13_SFIC_CAM = "backbone.body.11.norm_act.act_spatial"
_VGG13_PLAIN_CAM = "backbone.features.30"


@register_detector(
    SFIConvConfig(
        name="sficonv_vgg13",
        paper=PAPER,
        input_size=256,
        cam_target_layers=(_VGG13_SFIC_CAM,),
        summary="SFIC-VGG13. " + SFICONV_SUMMARY,
        backbone="vgg13",
    )
)
def sficonv_vgg13(alpha: float = 0.5, beta: float = 1.0,
                  constrained_kernel_size: int = CONSTRAINED_KERNEL_SIZE) -> SFIConvDetector:
    return SFIConvDetector(SFICVGG("B", alpha, beta, constrained_kernel_size), alpha, beta)


@register_detector(
    DetectorConfig(
        name="baseline_vgg13",
        paper=PAPER + ", baseline",
        input_size=256,
        cam_target_layers=(_VGG13_PLAIN_CAM,),
        summary=BASELINE_SUMMARY.format("VGG13 (with batch norm)"),
    )
)
def baseline_vgg13() -> BackboneDetector:
    return BackboneDetector(PlainVGG("B"))
