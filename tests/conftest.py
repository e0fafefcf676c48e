"""Shared fixtures: public-domain portraits and small H.264 clips made from them (session-wide), a tiny detector,
weights folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepscan.detectors.base import Detector, DetectorConfig

from deepscan.media.synthetic import moving_portrait_clip, portrait


@pytest.fixture(scope="session")
def portrait_image() -> np.ndarray:
    """Grace Hopper (matplotlib sample, public domain), 600 x 512 RGB uint8, read-only (shared)."""
    image = portrait()
    image.flags.writeable = False
    return image


@pytest.fixture(scope="session")
def portrait_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 25 fps, 320 x 240 H.264 mp4 of one portrait moving over a plain canvas."""
    path = tmp_path_factory.mktemp("clips") / "one_face.mp4"
    return moving_portrait_clip(path, seconds=2.0, fps=25, size=(320, 240), faces=1)


@pytest.fixture(scope="session")
def two_face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 25 fps, 320 x 240 H.264 mp4 of two portraits side by side, moving independently."""
    path = tmp_path_factory.mktemp("clips") / "two_faces.mp4"
    return moving_portrait_clip(path, seconds=2.0, fps=25, size=(320, 240), faces=2)


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """Small tensors through deep nets: one intra-op thread beats two fighting on a shared 2-core machine
    (measured 5-10x slower with two under load). Modules opt in with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- tiny trained detectors with model cards, in a stand-in for the shipped weights folder -----------------------


class _Shipped:
    """A temporary folder standing in for ``weights/``: tiny detectors' weights, model cards and SHA256SUMS.

    The tiny detectors (``tiny_a`` at 32 px, ``tiny_b`` at 48 px) give every face the same fake-logit, set when
    their weights are written, so that calibrated probabilities and verdicts are known exactly.
    """

    SIZES = {"tiny_a": 32, "tiny_b": 48}

    def __init__(self, folder: Path):
        self.folder = folder

    def weights(self, name: str, logit: float, folder: Path | None = None, dtype=None) -> Path:
        import torch

        from deepscan.detectors import create_detector
        from deepscan.weights import save_weights

        detector = create_detector(name)
        with torch.no_grad():
            detector.head.weight.zero_()
            detector.head.bias.fill_(logit)
        if dtype is not None:
            detector = detector.to(dtype)
        path = (folder or self.folder) / f"{name}.safetensors"
        save_weights(detector, path)
        return path

    def card(self, weights: Path, **sections) -> Path:
        import json

        from deepscan.weights import sha256_file

        name = weights.name.split(".")[0]
        card = {
            "schema": "deepscan.model-card",
            "schema_version": 1,
            "detector": {"name": name, "input_size": self.SIZES.get(name)},
            "weights": {"file": weights.name, "sha256": sha256_file(weights), "format": "safetensors"},
            "metrics": {"auc": 0.9},  # read by nobody: cards may carry anything else
            **sections,
        }
        path = weights.with_name(f"{name}.card.json")
        path.write_text(json.dumps(card, indent=2))
        return path

    def add(self, name: str, logit: float, **sections) -> Path:
        """Ship ``name`` with the given card sections (none: no card) and list it in SHA256SUMS."""
        weights = self.weights(name, logit)
        if sections:
            self.card(weights, **sections)
        self.seal()
        return weights

    def seal(self) -> None:
        """(Re)write SHA256SUMS over every file in the folder, as a release would."""
        from deepscan.weights import sha256_file

        lines = [f"{sha256_file(path)}  {path.name}" for path in sorted(self.folder.iterdir())
                 if path.name != "SHA256SUMS" and path.is_file()]
        (self.folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture
def shipped(tmp_path_factory, monkeypatch) -> _Shipped:
    """Tiny detectors registered for this test only, and an empty stand-in for the shipped weights folder."""
    import torch

    from deepscan import weights
    from deepscan.detectors import registry
    from deepscan.detectors.base import Detector, DetectorConfig

    class Tiny(Detector):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.mean(dim=(2, 3))).squeeze(1)

    registry.list_detectors()  # the built-in detectors first, so that they are not loaded over the patch
    for name, size in _Shipped.SIZES.items():
        config = DetectorConfig(name=name, paper=f"{name}, a test detector", input_size=size,
                                weights=f"{name}.safetensors")
        monkeypatch.setitem(registry._ENTRYPOINTS, name, (lambda **kwargs: Tiny(), config))
    folder = tmp_path_factory.mktemp("shipped")
    monkeypatch.setattr(weights, "shipped_weights_dir", lambda: folder)
    return _Shipped(folder)


@pytest.fixture
def calibration_card() -> dict:
    """A model card's ``calibration`` section: ``P(fake) = sigmoid(2 * logit - 1)``, threshold 0.7, with the check
    (what logits -1, 0 and 2 must map to). A fresh copy per test: tests edit it."""
    return {
        "method": "platt", "scale": 2.0, "bias": -1.0, "threshold": 0.7, "threshold_rule": "test", "fitted_on": "test",
        "val_faces": 10,
        "check": {"logits": [-1.0, 0.0, 2.0], "probabilities": [0.04742587317756678, 0.2689414213699951,
                                                                0.9525741268224334]},
    }


@pytest.fixture
def untrained(tmp_path, monkeypatch):
    """No shipped weights at all (an empty weights folder): every detector is untrained, as before any shipped."""
    from deepscan import weights

    folder = tmp_path / "no-weights"
    folder.mkdir()
    monkeypatch.setattr(weights, "shipped_weights_dir", lambda: folder)
    return folder


TINY_CAM = DetectorConfig(name="tiny_cam", paper="a test detector", input_size=32, cam_target_layers=("conv",),
                          weights="tiny_cam.safetensors")


class _TinyCam(Detector):
    """A convolution for Grad-CAM to look at and a head on its pooled output: a detector that costs next to nothing,
    for tests of what surrounds one. Seeded (without touching the global generator): every one has the same
    weights, and P(fake) differs from face to face."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 1)
        self.config = TINY_CAM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3))).squeeze(1)


@pytest.fixture
def tiny_cam_detector() -> type[Detector]:
    """Makes tiny detectors (method ``tiny_cam``, 32 px), each with the same weights."""
    return _TinyCam


@pytest.fixture
def tiny_cam(monkeypatch) -> str:
    """The tiny detector registered as the method ``tiny_cam``, for the CLI; returns the method's name."""
    from deepscan.detectors import registry

    registry.list_detectors()
    monkeypatch.setitem(registry._ENTRYPOINTS, "tiny_cam", (lambda **kwargs: _TinyCam(), TINY_CAM))
    return "tiny_cam"
