"""MC-LCR: multi-modal contrastive classification by locally correlated representations.

Paper: G. Wang, Q. Jiang, X. Jin, W. Li, X. Cui, "MC-LCR: Multi-modal contrastive classification by locally
correlated representations for effective face forgery detection", Knowledge-Based Systems, 2022.
Section, equation and table numbers below refer to it; every size is the paper's Table 1.

- Spatial branch (sec. 3.1): Xception with the shallow style representation block (SSRB). The Gram matrix of the
  feature maps of each of Xception's blocks 1-3 is averaged row-wise into a shallow style feature (SSF) of 64, 128
  and 256 values; the global feature GF (1024) comes from the end of the network.
- Frequency branch (secs. 3.2-3.3): the grey face is cut into 16x16 patches (N = 256 at 256x256); the 2-D DFT of
  each patch (eq. 2, with its 1/P^2 factor) gives an amplitude and a phase spectrum (eq. 4), each flattened and
  embedded to D = 256 by its own linear layer. PAPDA (eqs. 5-8) lets the phase tokens query the amplitude tokens
  (4-head attention on layer-normed embeddings, residual) and the reverse; two MLP-Mixer layers per modality
  (eqs. 9-10), then LayerNorm and average pooling over patches give AF and PF (eq. 11, 256 each).
- Fusion and heads (sec. 3.4): F_MM = [SSF_b1, SSF_b2, SSF_b3, GF, AF, PF] (eq. 12) -> linear -> F_E (1024);
  F_E -> linear -> z (128, L2-normalised) for the supervised contrastive loss (eq. 13, tau 0.1) and
  F_E -> fully connected layer for the cross-entropy (eq. 14); L = alpha L_SC + (1 - alpha) L_CE (eq. 15).

Which Xception, and which layers are tapped. The paper counts Xception's 14 modules as Chollet does (the first
module is the two stem convolutions, the last is the two exit separable convolutions), which is the only count
under which blocks 1-3 output 64, 128 and 256 channels. timm's ``legacy_xception`` is that exact network (the
Keras/Chollet Xception, ImageNet weights available), with different names: b1 = ``conv1..act2`` (64 ch),
b2 = ``block1`` (128 ch), b3 = ``block2`` (256 ch), b14 = ``conv3..act4`` (2048 ch). timm's ``xception41/65/71``
are DeepLab's aligned Xceptions with other widths and were not used in the paper.

Interpretations where the paper is silent or self-contradictory:
- GF: the paper says GF is the output of block 14 and has 1024 values, but block 14 outputs 2048 channels. The
  whole Xception is kept (so that the all-off ablation is the paper's Xception baseline and every pretrained block
  is used) and its ImageNet classifier is re-sized to 1024 outputs: GF = FC(GAP(b14)). Truncating at the
  1024-channel block 13 would match the size but drop block 14, which the paper names.
- SSRB input: Fig. 6 takes the maps "from the activation layer" of each block, so each block output is passed
  through ReLU (exactly what the next block's first layer does) before the Gram matrix. The Gram matrix is divided
  by the number of positions (H*W) so that SSF values do not grow with the input size.
- Attention scale: eq. 5 writes sqrt(D) but the attention runs per head on d = D/h (eq. 6); the usual sqrt(d).
  One LayerNorm per modality is shared by both attention directions (Q_ps and K_ps = V_ps are both LN(E_ps)).
- Ablations (Tables 5-6): with all three parts removed the paper's baseline is plain Xception, so "w/o PAPDA"
  removes the amplitude/phase branch (AF, PF) entirely; "w/o SSRB" removes the SSF vectors; "w/o SC loss" sets
  alpha to 0 (eq. 15) and drops the projection head.
- Supervised contrastive loss: eq. 13 is the L_out loss of Khosla et al. [34], which the paper cites and adopts;
  its denominator runs over every other sample of the batch (as in [34]), which also keeps the loss finite when a
  batch holds a single class. The sum over anchors is taken as a mean (over anchors that have at least one
  positive), so that it is on the scale of the mean cross-entropy it is mixed with.
- Dropout: the paper sets "all dropout layers" to 0.5 without saying where they are; there is one, on F_E before
  the classifier. The encoder and projection are single linear layers as sec. 3.4 says.
- ``backbone`` (default ``legacy_xception``, the paper's): EfficientNet-Lite0 or MobileNetV2 (timm), whose ImageNet
  weights are reachable offline (deepscan.detectors.pretrained) where Xception's are not. The SSRB then taps their
  first three stages (``blocks[0..2]``, strides 2, 4 and 8, as Xception's blocks 1-3), whose narrower maps give
  SSF vectors of 16 + 24 + 40 values instead of 64 + 128 + 256, and GF comes from their head conv (1280 channels)
  pooled and re-sized to 1024 as Xception's is. A recipe starts them from ImageNet with
  ``pretrained: {into: [[backbone.conv_stem, backbone.bn1, backbone.blocks, backbone.conv_head, backbone.bn2]]}``.
- The 2-class FC head is kept; the detector's single fake logit is ``logit_fake - logit_real``, so its sigmoid is
  exactly the softmax probability of "fake", and the 2-class cross-entropy equals BCE on that logit.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from deepscan.detectors.base import Detector, DetectorConfig, FrequencyView, LossOutput
from deepscan.detectors.registry import register_detector
from deepscan.frequency import from_patches, patch_fft2, rgb_to_gray

# The paper's training settings (sec. 4.1: FF++, 30 frames per video, 8 real + 8 fake faces per batch) are
# recipes/mclcr.yaml, read by deepscan.train.recipe.


def supervised_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Eq. 13 (SupCon L_out of Khosla et al.) on L2-normalised embeddings ``(B, P)`` with class labels ``(B,)``.

    For each anchor i with at least one positive: ``-mean_p log(exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t))``;
    the result is the mean over those anchors, or 0 (still attached to the graph) when no anchor has a positive.
    """
    batch = embeddings.shape[0]
    similarity = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(batch, dtype=torch.bool, device=embeddings.device)
    log_prob = similarity - torch.logsumexp(similarity.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positives = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask
    positive_counts = positives.sum(dim=1)
    has_positive = positive_counts > 0
    if not has_positive.any():
        return embeddings.sum() * 0.0
    per_anchor = -(log_prob * positives).sum(dim=1)[has_positive] / positive_counts[has_positive]
    return per_anchor.mean()


class ShallowStyleRepresentation(nn.Module):
    """SSRB (sec. 3.1, eq. 1): row-wise average of the Gram matrix of a feature map -> one value per channel."""

    @staticmethod
    def gram(features: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, C)``, normalised by the number of positions."""
        flat = features.flatten(2)
        return flat @ flat.transpose(1, 2) / flat.shape[-1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.gram(F.relu(features)).mean(dim=2)


class PatchSpectra(nn.Module):
    """Eqs. 2-4: amplitude and phase of the DFT of each P x P patch of the grey face, one row per patch."""

    def __init__(self, patch_size: int = 16):
        super().__init__()
        self.patch_size = patch_size

    def spectra(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] -> amplitude and phase, each ``(B, H/P, W/P, P, P)``."""
        amplitude, phase = patch_fft2(rgb_to_gray(x), self.patch_size)
        return amplitude[:, 0] / self.patch_size**2, phase[:, 0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> amplitude and phase tokens ``(B, N, P*P)``, patches in row-major order."""
        amplitude, phase = self.spectra(x)
        return amplitude.flatten(1, 2).flatten(2), phase.flatten(1, 2).flatten(2)


class AmplitudePhaseDualAttention(nn.Module):
    """PAPDA (sec. 3.3, eqs. 5-8): each modality's tokens are enhanced by attending from the other modality."""

    def __init__(self, dim: int = 256, heads: int = 4):
        super().__init__()
        self.norm_amplitude = nn.LayerNorm(dim)
        self.norm_phase = nn.LayerNorm(dim)
        self.phase_queries_amplitude = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.amplitude_queries_phase = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(
        self, amplitude: torch.Tensor, phase: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Embeddings ``(B, N, D)`` -> tokens AT, PT and, on request, the head-averaged attention maps ``(B, N, N)``."""
        amplitude_normed, phase_normed = self.norm_amplitude(amplitude), self.norm_phase(phase)
        amplitude_update, amplitude_attention = self.phase_queries_amplitude(
            phase_normed, amplitude_normed, amplitude_normed, need_weights=need_weights
        )
        phase_update, phase_attention = self.amplitude_queries_phase(
            amplitude_normed, phase_normed, phase_normed, need_weights=need_weights
        )
        attention = (amplitude_attention, phase_attention) if need_weights else None
        return amplitude + amplitude_update, phase + phase_update, attention


class MixerStream(nn.Module):
    """Two MLP-Mixer layers (eqs. 9-10, timm's MixerBlock) then LayerNorm and average over patches (eq. 11)."""

    def __init__(self, num_tokens: int, dim: int = 256, depth: int = 2):
        super().__init__()
        from timm.models.mlp_mixer import MixerBlock

        # Table 1: the token-mixing MLP is N wide, the channel-mixing MLP is D wide.
        widths = (num_tokens / dim, 1.0)
        self.layers = nn.Sequential(*[MixerBlock(dim, num_tokens, mlp_ratio=widths) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(tokens)).mean(dim=1)


class FrequencyBranch(nn.Module):
    """Patch spectra -> embeddings -> PAPDA -> two Mixer streams -> AF, PF."""

    def __init__(self, image_size: int = 256, patch_size: int = 16, dim: int = 256, heads: int = 4):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_spectra = PatchSpectra(patch_size)
        self.embed_amplitude = nn.Linear(patch_size**2, dim)
        self.embed_phase = nn.Linear(patch_size**2, dim)
        self.papda = AmplitudePhaseDualAttention(dim, heads)
        self.amplitude_mixer = MixerStream(self.num_patches, dim)
        self.phase_mixer = MixerStream(self.num_patches, dim)

    def embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amplitude, phase = self.patch_spectra(x)
        return self.embed_amplitude(amplitude), self.embed_phase(phase)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amplitude_tokens, phase_tokens, _ = self.papda(*self.embeddings(x))
        return self.amplitude_mixer(amplitude_tokens), self.phase_mixer(phase_tokens)


# The spatial backbones (timm names) and the layer Grad-CAM reads: Xception, the paper's, and the two whose ImageNet
# weights are reachable offline (timm's EfficientNet class: stem, seven stages, head conv).
SPATIAL_BACKBONES = {"legacy_xception": "backbone.act4", "efficientnet_lite0": "backbone.bn2",
                     "mobilenetv2_100": "backbone.bn2"}


class MCLCR(Detector):
    """Xception + SSRB (spatial) and patch-wise amplitude/phase with PAPDA and Mixers (frequency), SupCon + CE."""

    def __init__(
        self,
        pretrained: bool = False,
        backbone: str = "legacy_xception",
        image_size: int = 256,
        patch_size: int = 16,
        frequency_dim: int = 256,
        attention_heads: int = 4,
        global_dim: int = 1024,
        encoding_dim: int = 1024,
        projection_dim: int = 128,
        dropout: float = 0.5,
        temperature: float = 0.1,
        supcon_weight: float = 0.5,
        use_ssrb: bool = True,
        use_papda: bool = True,
        use_supcon: bool = True,
    ):
        super().__init__()
        import timm

        if not 0.0 <= supcon_weight <= 1.0:
            raise ValueError(f"supcon_weight (alpha of eq. 15) must lie in [0, 1], got {supcon_weight}")
        if backbone not in SPATIAL_BACKBONES:
            raise TypeError(f"MC-LCR: backbone must be one of {', '.join(SPATIAL_BACKBONES)}, not {backbone!r}")
        self.backbone_name = backbone
        self.image_size = image_size
        self.temperature = temperature
        self.supcon_weight = supcon_weight if use_supcon else 0.0
        self.backbone = timm.create_model(backbone, pretrained=pretrained, num_classes=global_dim)
        self.ssrb = ShallowStyleRepresentation() if use_ssrb else None
        self.frequency = (
            FrequencyBranch(image_size, patch_size, frequency_dim, attention_heads) if use_papda else None
        )
        shallow_dim = sum(self._stage_channels().values()) if use_ssrb else 0
        fused_dim = shallow_dim + global_dim + (2 * frequency_dim if use_papda else 0)
        self.encoder = nn.Linear(fused_dim, encoding_dim)
        self.projection = nn.Linear(encoding_dim, projection_dim) if use_supcon else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoding_dim, 2)

    @property
    def _is_xception(self) -> bool:
        return self.backbone_name == "legacy_xception"

    def _stage_channels(self) -> dict[str, int]:
        net = self.backbone
        if self._is_xception:
            return {"b1": net.conv2.out_channels, "b2": net.block1.skip.out_channels, "b3": net.block2.skip.out_channels}
        return {f"b{index + 1}": [m for m in net.blocks[index].modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
                for index in range(3)}

    def _stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Normalised face -> the three shallow stage outputs the SSRB reads, and the last feature map."""
        net = self.backbone
        if self._is_xception:
            b1 = net.act2(net.bn2(net.conv2(net.act1(net.bn1(net.conv1(x))))))
            b2 = net.block1(b1)
            b3 = net.block2(b2)
            deep = b3
            for index in range(3, 13):
                deep = getattr(net, f"block{index}")(deep)
            return [b1, b2, b3], net.act4(net.bn4(net.conv4(net.act3(net.bn3(net.conv3(deep))))))
        b1 = net.blocks[0](net.bn1(net.conv_stem(x)))
        b2 = net.blocks[1](b1)
        b3 = net.blocks[2](b2)
        deep = b3
        for stage in net.blocks[3:]:
            deep = stage(deep)
        return [b1, b2, b3], net.bn2(net.conv_head(deep))

    def spatial_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised face -> GF ``(B, 1024)`` and the SSF vectors of blocks 1-3 (empty without SSRB)."""
        stages, deep = self._stages(x)
        shallow = [self.ssrb(stage) for stage in stages] if self.ssrb is not None else []
        return self.backbone.forward_head(deep), shallow

    def cam_target_layers(self) -> list[nn.Module]:
        # The registered target is Xception's; another backbone names its own last feature layer.
        return [self.get_submodule(SPATIAL_BACKBONES[self.backbone_name])]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Face crops in [0, 1] -> F_E ``(B, 1024)``."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            expected = f"{self.image_size}x{self.image_size}"
            raise ValueError(f"MC-LCR was built for {expected} faces, got {tuple(x.shape[-2:])}")
        global_feature, shallow = self.spatial_features(self.normalize(x))
        parts = [*shallow, global_feature]
        if self.frequency is not None:
            parts.extend(self.frequency(x))
        return self.encoder(torch.cat(parts, dim=1))

    def class_logits(self, encoding: torch.Tensor) -> torch.Tensor:
        """F_E -> (real, fake) logits ``(B, 2)``."""
        return self.classifier(self.dropout(encoding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        two_class = self.class_logits(self.encode(x))
        return two_class[:, 1] - two_class[:, 0]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> LossOutput:
        """Eq. 15: ``alpha * L_SC + (1 - alpha) * L_CE`` (y: 1 = fake, 0 = real)."""
        labels = y.long()
        encoding = self.encode(x)
        two_class = self.class_logits(encoding)
        cross_entropy = F.cross_entropy(two_class, labels)
        logits = two_class[:, 1] - two_class[:, 0]
        if self.projection is None or self.supcon_weight == 0.0:
            return LossOutput(loss=cross_entropy, logits=logits, terms={"ce": cross_entropy.item()})
        embeddings = F.normalize(self.projection(encoding), dim=1)
        contrastive = supervised_contrastive_loss(embeddings, labels, self.temperature)
        total = self.supcon_weight * contrastive + (1.0 - self.supcon_weight) * cross_entropy
        return LossOutput(
            loss=total, logits=logits, terms={"ce": cross_entropy.item(), "supcon": contrastive.item()}
        )

    # --- explanation ----------------------------------------------------------------------------
    @torch.no_grad()
    def frequency_views(self, x: torch.Tensor) -> dict[str, FrequencyView]:
        face = x[:1]
        spectra = self.frequency.patch_spectra.spectra if self.frequency is not None else PatchSpectra().spectra
        amplitude, phase = spectra(face)  # (1, gh, gw, P, P)
        # Centre each patch's DC term, as spectra are usually shown; the patches stay where they are in the face.
        centred_amplitude = torch.fft.fftshift(amplitude, dim=(-2, -1))
        centred_phase = torch.fft.fftshift(phase, dim=(-2, -1))
        patch = amplitude.shape[-1]
        views = {
            "patch_amplitude": FrequencyView(
                title=f"Patch-wise amplitude spectra ({patch}x{patch} DFT of the grey face, log)",
                image=from_patches(torch.log(centred_amplitude + 1e-6).unsqueeze(1))[0, 0].cpu().numpy(),
                description="Each patch shows its own spectrum, DC at its centre; checkerboard artifacts show as "
                "regular peaks repeated across patches (the paper's Figure 3).",
                cmap="magma",
            ),
            "patch_phase": FrequencyView(
                title=f"Patch-wise phase spectra ({patch}x{patch} DFT of the grey face)",
                image=from_patches(centred_phase.unsqueeze(1))[0, 0].cpu().numpy(),
                description="Phase in [-pi, pi] per patch; it carries structure and position, and the paper finds "
                "forgery differences in more patches here than in the amplitude.",
                cmap="twilight",
            ),
        }
        if self.frequency is not None:
            amplitude_tokens, phase_tokens = self.frequency.embeddings(face)
            _, _, (amplitude_attention, phase_attention) = self.frequency.papda(
                amplitude_tokens, phase_tokens, need_weights=True
            )
            maps = torch.stack([amplitude_attention[0], phase_attention[0]])  # (2, N, N): query patch x key patch
            grid = int(math.isqrt(maps.shape[-1]))
            views["papda_attention"] = FrequencyView(
                title="PAPDA attention (phase queries amplitude; amplitude queries phase)",
                image=maps.cpu().numpy(),
                description="Row i, column j: how much patch i's query attends to patch j's key, averaged over "
                "the 4 heads; patches in row-major order.",
                cmap="viridis",
            )
            views["papda_attention_received"] = FrequencyView(
                title="Attention each patch receives in PAPDA (amplitude keys; phase keys)",
                image=maps.mean(dim=1).reshape(2, grid, grid).cpu().numpy(),
                description="Mean over all query patches, laid out on the face's patch grid: where the cross-"
                "modal attention looks.",
                cmap="viridis",
            )
        return views


MCLCR_SUMMARY = (
    "MC-LCR reads the face in two ways: an Xception whose shallow feature maps are summarised by their Gram "
    "(style) correlations, and the amplitude and phase spectra of 16x16 patches of the grey face, which attend "
    "to each other (PAPDA) before two MLP-Mixers. The fused features are trained with cross-entropy plus a "
    "supervised contrastive loss that pulls faces of the same class together."
)


@register_detector(
    DetectorConfig(
        name="mclcr",
        paper="Wang et al., MC-LCR: Multi-modal contrastive classification by locally correlated representations "
        "for effective face forgery detection (Knowledge-Based Systems, 2022)",
        input_size=256,
        gflops=13.18,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        cam_target_layers=("backbone.act4",),
        weights="mclcr.safetensors",
        summary=MCLCR_SUMMARY,
    )
)
def mclcr(**kwargs) -> MCLCR:
    return MCLCR(**kwargs)
