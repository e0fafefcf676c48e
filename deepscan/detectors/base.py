"""The one interface every detector implements.

A detector is a ``torch.nn.Module`` that takes a batch of face crops, RGB, float in ``[0, 1]``, shape
``(B, 3, S, S)`` with ``S = config.input_size``, and returns one fake-logit per face, shape ``(B,)``:
``sigmoid(logit)`` is the probability that the face is forged (label 1 = fake, 0 = real).

Normalisation and any frequency transform happen inside the detector, so that the pipeline never
needs to know which method it runs. Beyond ``forward`` a detector offers what the other commands
need: its training loss and step (``train``), the layers Grad-CAM should look at and its own
frequency views (``explain``). Defaults here cover plain single-optimiser classifiers; a method with
more (several optimisers, constrained weights, extra losses) overrides the matching method.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetectorConfig:
    """Default configuration that lives beside each detector's entrypoint."""

    name: str
    paper: str
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Dotted module paths (relative to the detector) that Grad-CAM hooks; each must output a tensor.
    cam_target_layers: tuple[str, ...] = ()
    # Shipped weights: file name under weights/ and, optionally, the hub repository that hosts it.
    weights: str | None = None
    hub_repo: str | None = None
    summary: str = ""
    # The cost of scoring one face at input_size, in GFLOP (torch.utils.flop_counter on a one-face forward of the
    # default build; FFTs and DCTs are not counted): what `deepscan models` states, whatever the machine.
    gflops: float | None = None


@dataclass
class LossOutput:
    """A training loss with the logits it came from and its named terms (floats, for logging)."""

    loss: torch.Tensor
    logits: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class FrequencyView:
    """One picture of what a method sees: a map (H, W) shown with ``cmap``, a colour image (H, W, 3) in [0, 1],
    or a stack of maps (K, H, W) shown side by side (MC-LCR's attention per direction, say)."""

    title: str
    image: np.ndarray
    description: str = ""
    cmap: str = "viridis"


OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class Detector(nn.Module):
    """Base class: subclasses implement ``logits`` (and override the rest only when they must)."""

    config: DetectorConfig
    # Sub-modules used only while training (a GAN discriminator, say): left out of shipped weights and of
    # the parameter count, and not required when loading weights for inference.
    training_only: tuple[str, ...] = ()

    def is_training_only(self, name: str) -> bool:
        return any(name == module or name.startswith(module + ".") for module in self.training_only)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.config.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Face crops in ``[0, 1]`` -> fake logits ``(B,)``."""
        raise NotImplementedError

    # --- training -------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> LossOutput:
        """Binary cross-entropy on the fake logit (y: 1 = fake, 0 = real)."""
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y.float())
        return LossOutput(loss=loss, logits=logits, terms={"bce": loss.item()})

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter sets, one optimiser each. One set, ``model``, unless a method needs more."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def training_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        progress: float = 0.0,
    ) -> LossOutput:
        """One optimisation step on a batch; ``progress`` in [0, 1] is how far training has got."""
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        out = self.loss(x, y)
        out.loss.backward()
        optimizer.step()
        self.after_optimizer_step()
        return out

    def after_optimizer_step(self) -> None:
        """Hook for constraints that must hold on the weights after every update."""

    # --- explanation ----------------------------------------------------------------------------
    def cam_target_layers(self) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self.config.cam_target_layers]

    @torch.no_grad()
    def frequency_views(self, x: torch.Tensor) -> dict[str, FrequencyView]:
        """The method's own frequency views of one face ``(1, 3, S, S)``; none by default. A view that runs the
        network runs it under :meth:`evaluating`."""
        return {}

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """The detector in eval mode inside the block, then back in the mode it was in: a view asked for during
        training must not move the batch-norm statistics (nor draw dropout)."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def count_parameters(self) -> int:
        """Parameters used at inference (training-only modules excluded)."""
        return sum(p.numel() for name, p in self.named_parameters() if not self.is_training_only(name))
