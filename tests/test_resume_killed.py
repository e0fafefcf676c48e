"""A training run killed outright (SIGKILL: no handler runs, nothing is flushed) resumes to the very weights of a
run that was never interrupted, and a checkpoint being written when the kill comes is never left half-written.

Every run is a real `deepscan train` process on a tiny generated face folder (32 px face crops, batches of 2,
2 steps per epoch), one interpreter thread each, so that the uninterrupted and the resumed runs compute alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from deepscan.media.synthetic import portrait, second_portrait
from small_detectors import TRAINING_KWARGS


RECIPE = """\
detector: {{name: {name}, kwargs: {kwargs}}}
input_size: 32
data:
  train: [{{kind: folder, path: faces, crop_faces: false}}]
  val_fraction: 0.34
  face: {{cache_dir: cache}}
  sbi: {{ratio: 0.5}}
augment: {{crop_scale: [1.2, 1.4], rotation: 5, color_cast: 0.5, jpeg: 0.3}}
optim: {{name: adam, lr: 1.0e-4}}
schedule: {{name: cosine}}
batch_size: 2
epochs: 3
steps_per_epoch: 2
num_workers: 0
"""

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """faces/real and faces/fake: three people each, already cropped, and a face cache shared by every run."""
    root = tmp_path_factory.mktemp("killed")
    rng = np.random.default_rng(0)
    people = [portrait(), second_portrait(), portrait()[:, ::-1]]
    for label in ("real", "fake"):
        (root / "faces" / label).mkdir(parents=True)
        for index, person in enumerate(people):
            image = person[80:480, 60:460].astype(np.float32)
            if label == "fake":  # a crude "swap": the middle of the face recoloured
                image[100:250, 130:270] *= rng.uniform(0.75, 1.25, 3)
            image = np.clip(image * rng.uniform(0.9, 1.1, 3), 0, 255).astype(np.uint8)
            Image.fromarray(image).resize((48, 48)).save(root / "faces" / label / f"person{index}.png")
    return root


def train(workspace: Path, recipe: Path, output: Path, *extra: str) -> subprocess.Popen:
    # An empty torch hub folder: nothing this machine has cached is read.
    env = dict(ENV, TORCH_HOME=str(workspace / "torch-home"))
    # A session of its own: the kill reaches the run and anything it started.
    return subprocess.Popen([sys.executable, "-m", "deepscan", "train", str(recipe), "-o", str(output), *extra],
                            cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(run: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        pytest.fail(f"the training run did not finish within {timeout:.0f} s")
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)


def kill_after_first_checkpoint(run: subprocess.Popen, checkpoint: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():  # renamed into place whole: its name appearing means it is complete
        if run.poll() is not None:
            pytest.fail(f"the run ended before writing a checkpoint: {run.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()


def weights_equal(first: Path, second: Path) -> bool:
    a, b = load_file(str(first)), load_file(str(second))
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


# Every detector with a training loop of its own kind: FAClue (the paper's loop), SFIConv (a plain one), PEL, MC-LCR
# and RALF, whose frozen perceptual network (eq. 6) is not in the checkpoint and must be rebuilt identical on
# resume. About 22-25 s each on a 2-core CPU shared with a training run (measured: PEL 22 s, RALF 23 s, MC-LCR
# 25 s), mostly three interpreters starting.
@pytest.mark.parametrize("name", ["faclue", "sficonv", "ralf", "pel", "mclcr"])
def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_uninterrupted_weights(workspace, name):
    recipe = workspace / f"{name}.yaml"
    recipe.write_text(RECIPE.format(name=name, kwargs=json.dumps(TRAINING_KWARGS.get(name, {}))))
    straight, killed = workspace / "runs" / name / "straight", workspace / "runs" / name / "killed"
    uninterrupted = train(workspace, recipe, straight)  # side by side with the run to kill: they share nothing
    kill_after_first_checkpoint(train(workspace, recipe, killed), killed / "checkpoint.pt")
    done = finish(uninterrupted)
    assert done.returncode == 0, done.stderr[-3000:]

    assert not (killed / f"{name}.safetensors").exists(), "the run finished before the kill: nothing was tested"
    state = torch.load(killed / "checkpoint.pt", map_location="cpu", weights_only=True)  # whole, and readable
    assert 1 <= state["epoch"] < 3

    resumed = finish(train(workspace, recipe, killed, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at epoch" in resumed.stderr
    history = [[json.loads(line)["train"]["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
               for run in (straight, killed)]
    assert history[0] == history[1] and len(history[0]) == 3
    assert weights_equal(killed / f"{name}.safetensors", straight / f"{name}.safetensors")
    assert weights_equal(killed / "best.safetensors", straight / "best.safetensors")


KILLED_WHILE_WRITING = """
import os, signal, sys
from pathlib import Path
from deepscan.runtime import atomic_write

path = Path(sys.argv[1])
atomic_write(path, lambda handle: handle.write(b"the checkpoint of epoch 1"))

def half_then_killed(handle):
    handle.write(b"the checkpoint of ep")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(path, half_then_killed)
"""


def test_a_kill_while_a_checkpoint_is_written_leaves_the_previous_one_whole(tmp_path):
    from deepscan.runtime import atomic_write

    path = tmp_path / "checkpoint.pt"
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(path)], env=ENV, capture_output=True,
                          timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert path.read_bytes() == b"the checkpoint of epoch 1"

    def fails(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails)
    assert path.read_bytes() == b"the checkpoint of epoch 1"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # the half-written temporary is gone too
