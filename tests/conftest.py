"""Shared fixtures: public-domain portraits and small H.264 clips made from them (session-wide)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
