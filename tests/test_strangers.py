"""Weights and recipes from strangers: nothing in them runs code, and each refusal is one line naming the file.

Every hostile file here carries a live payload (unpickling it creates a marker file, shown at the end of each test
by loading it the unsafe way), so that a test fails if deepscan ever unpickles it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.media.synthetic import portrait

runner = CliRunner()


class Payload:
    """Unpickled, it opens ``marker`` for writing: the file appears. (Pickling only records the call.)"""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def pickled_payload(path: Path, marker: Path) -> Path:
    """A torch checkpoint as a stranger would hand it over: a state dict with the payload among its tensors."""
    torch.save({"head.weight": torch.zeros(1, 4), "head.bias": Payload(marker)}, path)
    return path


def assert_payload_is_live(path: Path, marker: Path) -> None:
    """The file would have created ``marker`` had anyone unpickled it: the tests above it can fail."""
    assert not marker.exists()
    live = path.with_name(path.name + ".live.pt")  # torch.load reads a .safetensors name as safetensors
    shutil.copyfile(path, live)
    torch.load(live, map_location="cpu", weights_only=False)  # the unsafe way, on purpose
    assert marker.exists()


def one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def face_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("evidence") / "face.png"
    Image.fromarray(portrait()).save(path)
    return path


# --- weights ----------------------------------------------------------------------------------------------------

PICKLE_REFUSED = ("only .safetensors weights (or their .safetensors.index.json shard index) are accepted (pickled "
                  "checkpoints can run code)")


@pytest.mark.parametrize("name, message", [
    ("model.pt", PICKLE_REFUSED),
    ("model.pth", PICKLE_REFUSED),
    ("model.bin", PICKLE_REFUSED),
    ("model.safetensors", "not a readable safetensors file"),  # a pickle renamed: read as safetensors, refused
])
def test_pickled_weights_are_refused_and_never_unpickled(tmp_path, face_png, name, message):
    marker = tmp_path / "pwned"
    weights = pickled_payload(tmp_path / name, marker)
    for command in (["scan", face_png, "--method", "faclue", "--weights", weights],
                    ["explain", "--method", "faclue", face_png, "--weights", weights, "--out", tmp_path / "x"]):
        line = one_line(runner.invoke(app, [str(part) for part in command]))
        assert name in line and message in line, line
        assert not marker.exists()
    assert_payload_is_live(weights, marker)


def test_weights_of_another_detector_are_named_in_one_line(tmp_path, face_png):
    weights = tmp_path / "other.safetensors"
    save_file({"head.weight": torch.zeros(1, 4)}, str(weights), metadata={"detector": "pel"})
    line = one_line(runner.invoke(app, ["scan", str(face_png), "--method", "faclue", "--weights", str(weights)]))
    assert line.endswith("other.safetensors: weights of detector 'pel', not 'faclue' (use --method pel)"), line


def test_weights_of_another_shape_name_the_tensor_and_both_shapes(tmp_path, face_png):
    from deepscan.detectors import create_detector

    state = {name: tensor.contiguous() for name, tensor in create_detector("faclue").state_dict().items()}
    wanted = list(state["head.weight"].shape)
    state["head.weight"] = torch.zeros(1, 7)  # a head of another width: another build of the detector
    weights = tmp_path / "resized.safetensors"
    save_file(state, str(weights), metadata={"detector": "faclue"})
    line = one_line(runner.invoke(app, ["scan", str(face_png), "--method", "faclue", "--weights", str(weights)]))
    assert (f"resized.safetensors: does not fit detector 'faclue': shape mismatch in head.weight: [1, 7] in the "
            f"file, {wanted} in the detector (0 missing, 0 unexpected, 1 misshapen tensors)") in line, line


def test_weights_that_differ_from_their_card_are_refused_through_the_cli(tmp_path, face_png):
    weights = tmp_path / "w.safetensors"
    save_file({"head.weight": torch.zeros(1, 4)}, str(weights), metadata={"detector": "faclue"})
    card = {"schema": "deepscan.model-card", "detector": {"name": "faclue"},
            "weights": {"file": "w.safetensors", "sha256": "0" * 64}}
    (tmp_path / "w.card.json").write_text(json.dumps(card))
    line = one_line(runner.invoke(app, ["scan", str(face_png), "--method", "faclue", "--weights", str(weights)]))
    assert "w.safetensors: sha256" in line and "differs from its model card w.card.json" in line, line


# --- recipes ----------------------------------------------------------------------------------------------------

RECIPE = """\
detector: {{name: {name}, kwargs: {kwargs}}}
input_size: 32
data:
  train: [{{kind: folder, path: faces, crop_faces: false}}]
  val_fraction: 0.5
  face: {{cache_dir: cache}}
batch_size: 2
epochs: 1
steps_per_epoch: 1
num_workers: 0
"""


@pytest.fixture
def workspace(tmp_path) -> Path:
    """Face crops under faces/real and faces/fake, and ``evil.py``: importing it creates ``imported``."""
    face = portrait()[100:400:6, 120:420:6]
    for shade, label in enumerate(("real", "fake")):
        (tmp_path / "faces" / label).mkdir(parents=True)
        for index in range(2):  # each file its own content: files with identical content are used once
            image = (face // (2 + index + 2 * shade)).astype("uint8")
            Image.fromarray(image).save(tmp_path / "faces" / label / f"p{index}.png")
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\nx = 1\n")
    return tmp_path


def recipe(workspace: Path, file: str, name: str = "sficonv", kwargs: dict | None = None, extra: str = "") -> str:
    (workspace / file).write_text(RECIPE.format(name=name, kwargs=json.dumps(kwargs or {})) + extra)
    return file


# A fresh interpreter whose working folder (first on its sys.path) holds evil.py: a recipe that made deepscan
# import a module by a name it gives would import it. Several commands in one process: torch imports once.
DRIVER = """
import json, sys
from typer.testing import CliRunner
from deepscan.cli import app
results = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, args)
    error = result.exception if not isinstance(result.exception, SystemExit) else None
    results.append({"code": result.exit_code, "stderr": result.stderr, "error": repr(error) if error else None})
print(json.dumps(results))
"""


def run_in_workspace(workspace: Path, commands: list[list[str]]) -> list[dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands)], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_recipe_cannot_import_or_run_code(workspace):
    marker = workspace / "pwned"
    pickled_payload(workspace / "trunk.pth", marker)
    pickled_payload(workspace / "start.pt", marker)
    cases = [
        (recipe(workspace, "name.yaml", name="evil"), [], "detector.name: unknown detector 'evil'"),
        (recipe(workspace, "module.yaml", extra="seed: !!python/module:evil\n"), [],
         "not valid YAML at line 11 (the tag !!python/module:evil is refused"),
        (recipe(workspace, "apply.yaml", extra="seed: !!python/object/apply:evil.x []\n"), [],
         "(the tag !!python/object/apply:evil.x is refused"),
        (recipe(workspace, "set.yaml"), ["--set", "detector.name=!!python/name:evil.x"],
         "--set detector.name=!!python/name:evil.x: the tag !!python/name:evil.x is refused"),
        (recipe(workspace, "trunk.yaml", extra="pretrained: {path: trunk.pth, format: timm, into: [[stem]]}\n"), [],
         "trunk.pth: not a readable checkpoint (UnpicklingError)"),
        (recipe(workspace, "init.yaml", extra="init: start.pt\n"), [],
         "init: " + str(workspace / "start.pt") + ": only .safetensors weights (or their .safetensors.index.json "
         "shard index) are accepted"),
    ]
    # A backbone is a name in timm's registry, never a module path: an unknown one is an error, not an import.
    backbone = recipe(workspace, "backbone.yaml", name="faclue", kwargs={"backbone": "evil"})
    commands = [["train", file, "-o", f"runs/{file}", *extra] for file, extra, _ in cases]
    results = run_in_workspace(workspace, commands + [["train", backbone, "-o", "runs/backbone"]])
    for (file, _, message), result in zip(cases, results):
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert result["code"] == 2 and result["error"] is None, (file, result)
        assert len(lines) == 1 and message in lines[0], (file, lines)
    assert results[-1]["code"] != 0 and "evil" in (results[-1]["error"] or results[-1]["stderr"]), results[-1]
    assert not (workspace / "imported").exists() and not marker.exists()
    assert not any((workspace / "runs").glob("*/*.safetensors"))
    # evil.py is importable from there, and the payloads are live: had deepscan done either, the test would fail.
    subprocess.run([sys.executable, "-c", "import evil"], cwd=workspace, check=True)
    assert (workspace / "imported").exists()
    assert_payload_is_live(workspace / "trunk.pth", marker)


def test_a_pickled_payload_as_the_checkpoint_to_resume_is_refused(workspace):
    marker = workspace / "pwned"
    run = workspace / "runs" / "handed-over"
    run.mkdir(parents=True)
    pickled_payload(run / "checkpoint.pt", marker)  # a run folder from someone else, resumed here
    file = recipe(workspace, "resume.yaml")
    [result] = run_in_workspace(workspace, [["train", file, "-o", str(run), "--resume"]])
    lines = [line for line in result["stderr"].splitlines() if line.strip() and "error:" in line]
    assert result["code"] == 2 and result["error"] is None, result
    assert lines == [f"error: {run / 'checkpoint.pt'}: unreadable checkpoint (UnpicklingError)"], result["stderr"]
    assert not marker.exists()
    assert_payload_is_live(run / "checkpoint.pt", marker)
