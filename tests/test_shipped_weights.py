"""The weights that ship in weights/: every file checks out, every detector scores a face, every card holds.

These tests read the real shipped files (no fixture replaces them), so they fail when a file is edited, added
without its checksum, or shipped with a card that does not describe it.
"""

import json

import numpy as np
import pytest

from deepscan.calibration import Calibration
from deepscan.detectors import get_config
from deepscan.media.faces import FaceDetector, crop_face
from deepscan.media.synthetic import portrait
from deepscan.model_card import CalibrationSection, read_model_card
from deepscan.scan import face_logits
from deepscan.weights import build_detector, resolve_detector_weights, sha256_file, shipped_checksums, shipped_weights_dir

FOLDER = shipped_weights_dir()
LISTED = shipped_checksums(FOLDER)
SHIPPED = sorted(name.removesuffix(".safetensors") for name in LISTED if name.endswith(".safetensors"))
NOT_LISTED = {"README.md", "SHA256SUMS", "__init__.py", "__pycache__"}


def test_every_shipped_file_is_listed_with_its_sha256():
    present = {path.name for path in FOLDER.iterdir()} - NOT_LISTED
    assert present == set(LISTED)
    for name, digest in LISTED.items():
        assert sha256_file(FOLDER / name) == digest, name


def test_shipped_files_stay_small():
    assert sum((FOLDER / name).stat().st_size for name in LISTED) < 250 * 2**20


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_describes_its_weights(name):
    card = read_model_card(FOLDER / f"{name}.card.json")
    assert card.detector.name == name and card.weights.sha256 == LISTED[f"{name}.safetensors"]
    raw = json.loads((FOLDER / f"{name}.card.json").read_text())
    # What the issue asks every card to state: data and splits, the recipe, training time and hardware.
    assert raw["data"]["train"] and raw["data"]["val"] and len(raw["recipe"]["sha256"]) == 64
    assert raw["training"]["seconds"] > 0 and raw["training"]["device"]
    assert (FOLDER / f"{name}.md").is_file()


@pytest.mark.parametrize("name", SHIPPED)
def test_calibration_maps_the_stored_validation_scores_as_the_card_says(name):
    section = CalibrationSection.model_validate(json.loads((FOLDER / f"{name}.card.json").read_text())["calibration"])
    calibration = Calibration.from_card(section)
    assert calibration.calibrated
    np.testing.assert_allclose(calibration.probability(section.check.logits), section.check.probabilities, atol=1e-9)
    # Monotonic: a higher logit is never a lower P(fake).
    assert np.all(np.diff(calibration.probability(sorted(section.check.logits))) >= 0)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_detector_scores_a_face(name):
    resolved = resolve_detector_weights(get_config(name), None)
    assert resolved.source == "shipped" and resolved.trained
    detector, _ = build_detector(name, resolved=resolved)
    image = portrait()
    faces = FaceDetector()
    try:
        [face] = faces.detect(image)
    finally:
        faces.close()
    crop = crop_face(image, face, detector.config.input_size, 1.3)
    probability = resolved.calibration.probability(face_logits(detector.eval(), crop[None]))
    assert probability.shape == (1,) and 0.0 <= probability[0] <= 1.0


@pytest.mark.skipif(not SHIPPED, reason="no detector weights ship yet")
def test_the_ensemble_is_formed_from_the_shipped_detectors():
    from deepscan.ensemble import plan_ensemble

    plan = plan_ensemble()
    assert sorted(name for name, _ in plan.members) == SHIPPED
    assert all(resolved.source == "shipped" for _, resolved in plan.members)


def test_the_readmes_table_of_held_out_figures_is_the_cards():
    from pathlib import Path

    from deepscan.train.shipping import shipped_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = shipped_table(FOLDER)
    assert len(table.splitlines()) == 12 and table in readme, "re-paste `python -m deepscan.train.shipping table`"
