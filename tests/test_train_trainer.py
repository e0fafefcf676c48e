"""`deepscan train` end to end on a tiny generated face folder: every detector, resume, fine-tuning and DDP.

Runs are tiny (32 px faces, batches of 2, 2 steps) so that every registered detector trains on a CPU in seconds;
detectors whose parameter shapes follow the face size are built smaller through ``detector.kwargs``.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.detectors import create_detector, list_detectors
from deepscan.media.synthetic import portrait, second_portrait
from deepscan.train.errors import TrainingInterrupted
from deepscan.train.progress import StepDone, TrainingProgress
from deepscan.train.recipe import load_recipe
from deepscan.train.trainer import TrainOptions, train
from deepscan.weights import build_detector, load_weights, resolve_weights

from small_detectors import TRAINING_KWARGS


RECIPE = """\
detector: {{name: {name}, kwargs: {kwargs}}}
input_size: 32
data:
  train: [{{kind: folder, path: faces}}]
  val_fraction: 0.34
  face: {{cache_dir: cache, frames_per_video: 2}}
  sbi: {{ratio: 0.5}}
augment: {{crop_scale: [1.2, 1.4], rotation: 5, color_cast: 0.5, rescale: 0.3, jpeg: 0.3, h264: 0.3}}
optim: {{name: adam, lr: 1.0e-4}}
schedule: {{name: cosine}}
batch_size: 2
epochs: 1
steps_per_epoch: 2
num_workers: 0
"""

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """faces/real and faces/fake (three people each, as in a dataset of crops) and a shared face cache."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    people = [portrait(), second_portrait(), portrait()[:, ::-1]]
    for label in ("real", "fake"):
        folder = root / "faces" / label
        folder.mkdir(parents=True)
        for index, person in enumerate(people):
            image = person.astype(np.float32)
            if label == "fake":  # a crude "swap": the middle of the face recoloured
                image[180:330, 190:350] *= rng.uniform(0.75, 1.25, 3)
            image = np.clip(image * rng.uniform(0.9, 1.1, 3), 0, 255).astype(np.uint8)
            Image.fromarray(image).resize((200, 234)).save(folder / f"person{index}.png")
    return root


def write_recipe(workspace: Path, name: str, kwargs: dict | None = None, file: str | None = None) -> Path:
    path = workspace / (file or f"{name}.yaml")
    path.write_text(RECIPE.format(name=name, kwargs=json.dumps(kwargs if kwargs is not None else TRAINING_KWARGS.get(name, {}))))
    return path


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def portrait_png(workspace):
    path = workspace / "suspect.png"
    Image.fromarray(portrait()).resize((300, 352)).save(path)
    return path


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_trains_two_steps_and_its_weights_load_for_scanning(workspace, portrait_png, name):
    recipe = write_recipe(workspace, name)
    output = workspace / "runs" / name
    result = run_cli("train", recipe, "-o", output)
    assert result.exit_code == 0, result.output
    weights, card_path = output / f"{name}.safetensors", output / f"{name}.card.json"
    card = json.loads(card_path.read_text())
    assert card["schema"] == "deepscan.model-card" and card["detector"]["name"] == name
    assert card["weights"]["sha256"] == resolve_weights(None, weights).sha256
    assert card["training"]["epochs"] == 1 and len(card["recipe"]["sha256"]) == 64
    assert card["training"]["device_name"] == f"a {os.cpu_count()}-core CPU"  # what a model card says trained it
    assert card["validation"]["select_on"] == "val_auc"
    assert card["data"]["train"][0]["real_faces"] > 0 and card["data"]["pseudo_fakes"]["ratio"] == 0.5
    [entry] = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert entry["train"]["steps"] == 2 and np.isfinite(entry["train"]["loss"]) and entry["val"]["faces"] > 0
    assert (output / "curves.png").stat().st_size > 1000
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["detector"] == name and json.loads(metadata["detector_kwargs"]) == card["detector"]["architecture_kwargs"]
    # The weights rebuild the detector they came from (kwargs from their metadata, as scan does) and score a face.
    detector, _ = build_detector(name, weights)
    with torch.no_grad():
        assert torch.isfinite(detector.eval()(torch.rand(1, 3, 32, 32))).all()
    if name == "ralf":
        # The card says which perceptual network the loss used; it is no part of the weights or their kwargs.
        assert card["start"]["perceptual"] == {"network": "random", "weights": "random", "seed": 0}
        assert "perceptual" not in json.loads(metadata["detector_kwargs"])
    if name == "faclue":
        # `deepscan scan --weights` loads exactly as above (build_detector); run it once end to end.
        report = workspace / f"{name}-scan.json"
        scanned = run_cli("scan", portrait_png, "--method", name, "--weights", weights, "--json", report)
        assert scanned.exit_code == 0, scanned.output
        custody = json.loads(report.read_text())["custody"]
        assert custody["weights"]["trained"] is True and custody["weights"]["sha256"] == card["weights"]["sha256"]


class AfterEachStep(TrainingProgress):
    """Calls ``hook(epoch, step)`` after every optimisation step, where the run reports it, and records the run's
    epoch events as tuples in ``events`` and its messages in ``messages``."""

    def __init__(self, hook=lambda epoch, step: None):
        self.hook = hook
        self.events: list[tuple] = []
        self.messages: list[str] = []

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_epoch_start(self, start) -> None:
        self.events.append(("start", start.epoch, start.steps, start.done))

    def on_step(self, step: StepDone) -> None:
        self.events.append(("step", step.epoch, step.step))
        self.hook(step.epoch, step.step)

    def on_epoch_steps_end(self) -> None:
        self.events.append(("steps end",))

    def on_epoch_end(self, summary) -> None:
        self.events.append(("end", summary.epoch))


def _weights_equal(first: Path, second: Path) -> bool:
    a, b = load_file(str(first)), load_file(str(second))
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_resume_after_ctrl_c_and_after_a_crash_ends_with_the_uninterrupted_weights(workspace):
    # SGD with momentum and a cosine schedule: optimiser and scheduler state must both come back.
    # (64 px: FAClue's attention maps are too small at 32 px for momentum SGD to stay finite.)
    changes = ["epochs=2", "steps_per_epoch=3", "input_size=64", "optim={name: sgd, lr: 0.001, momentum: 0.9}"]
    recipe = load_recipe(write_recipe(workspace, "faclue", file="resume.yaml"), changes)
    runs = workspace / "runs" / "resume"
    watched = AfterEachStep()
    straight = train(recipe, TrainOptions(output=runs / "straight", progress=watched))
    # The caller hears of every epoch and step, in order (epochs counted from 0, steps done from 1).
    assert watched.events == [
        ("start", 0, 3, 0), ("step", 0, 1), ("step", 0, 2), ("step", 0, 3), ("steps end",), ("end", 0),
        ("start", 1, 3, 0), ("step", 1, 1), ("step", 1, 2), ("step", 1, 3), ("steps end",), ("end", 1),
    ]

    def ctrl_c_in_first_epoch(epoch, step):
        if (epoch, step) == (0, 2):
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the trainer finishes the step and saves

    def crash_in_second_epoch(epoch, step):
        if (epoch, step) == (1, 1):
            raise RuntimeError("power cut")

    cut = runs / "cut"
    with pytest.raises(TrainingInterrupted) as stopped:
        train(recipe, TrainOptions(output=cut, progress=AfterEachStep(ctrl_c_in_first_epoch)))
    assert (stopped.value.epoch, stopped.value.step) == (0, 2)
    assert not (cut / "faclue.safetensors").exists()
    # Workers make the samples now (the first run made them in-process): samples depend on their seeds only.
    resumed = load_recipe(write_recipe(workspace, "faclue", file="resume.yaml"), changes + ["num_workers=1"])
    crashing = AfterEachStep(crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        train(resumed, TrainOptions(output=cut, resume=True, progress=crashing))
    # The resumed epoch starts with its first two steps done; an epoch's steps end, for the caller, even in a crash.
    assert crashing.events == [("start", 0, 3, 2), ("step", 0, 3), ("steps end",), ("end", 0),
                               ("start", 1, 3, 0), ("step", 1, 1), ("steps end",)]
    assert f"resuming at epoch 1, step 2 from {cut / 'checkpoint.pt'}" in crashing.messages
    final = train(resumed, TrainOptions(output=cut, resume=True))
    assert [h["train"]["loss"] for h in final.history] == [h["train"]["loss"] for h in straight.history]
    assert _weights_equal(final.weights, straight.weights)
    assert _weights_equal(cut / "best.safetensors", runs / "straight" / "best.safetensors")


def test_an_existing_run_is_never_overwritten_and_a_changed_recipe_does_not_resume(workspace):
    recipe = write_recipe(workspace, "sficonv", file="guard.yaml")
    output = workspace / "runs" / "guard"
    assert run_cli("train", recipe, "-o", output).exit_code == 0
    again = run_cli("train", recipe, "-o", output)
    assert again.exit_code == 2 and "already holds a training run" in again.stderr
    changed = run_cli("train", recipe, "-o", output, "--resume", "--set", "optim.lr=0.5")
    assert changed.exit_code == 2 and "the recipe differs" in changed.stderr
    missing = run_cli("train", recipe, "-o", workspace / "runs" / "never", "--resume")
    assert missing.exit_code == 2 and "no checkpoint.pt" in missing.stderr


def test_a_resumed_run_with_other_epochs_keeps_its_cosine_plan_and_its_card_says_so(workspace):
    recipe = write_recipe(workspace, "sficonv", file="longer.yaml")  # 1 epoch, cosine
    output = workspace / "runs" / "longer"
    assert run_cli("train", recipe, "-o", output).exit_code == 0
    first = json.loads((output / "sficonv.card.json").read_text())["training"]
    assert (first["epochs"], first["lr_schedule_epochs"]) == (1, 1)
    # Another memory layout changes only rounding: the run goes on in it.
    longer = run_cli("train", recipe, "-o", output, "--resume", "--set", "epochs=2", "--set", "channels_last=true")
    assert longer.exit_code == 0, longer.output
    assert "the cosine schedule was planned for 1" in longer.stderr
    training = json.loads((output / "sficonv.card.json").read_text())["training"]
    assert (training["epochs"], training["lr_schedule_epochs"]) == (2, 1)


def test_ralf_without_its_perceptual_checkpoint_stops_in_one_line_before_training(workspace):
    # A perceptual loss on random features measures nothing: no silent fallback to a random network. A relative
    # perceptual_path is read from the recipe's folder, like every path of a recipe.
    kwargs = dict(TRAINING_KWARGS["ralf"], perceptual="lite0", perceptual_path="pretrained/lite0.pth")
    output = workspace / "runs" / "ralf-no-perceptual"
    result = run_cli("train", write_recipe(workspace, "ralf", kwargs, file="ralf-lite0.yaml"), "-o", output)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "detector.kwargs.perceptual" in lines[0], result.stderr
    assert f"{workspace / 'pretrained' / 'lite0.pth'} does not exist" in " ".join(result.stderr.split()), result.stderr
    assert not (output / "checkpoint.pt").exists()


def test_ctrl_c_exits_130_with_a_checkpoint(workspace, monkeypatch):
    import deepscan.train.trainer as trainer

    def interrupted(recipe, options, context=None):
        raise TrainingInterrupted(Path(options.output) / "checkpoint.pt", 0, 1)

    monkeypatch.setattr(trainer, "train", interrupted)
    result = run_cli("train", write_recipe(workspace, "sficonv", file="ctrl-c.yaml"), "-o", workspace / "runs" / "x")
    assert result.exit_code == 130 and "--resume" in result.stderr


def test_fine_tuning_on_real_footage_starts_from_given_weights(workspace):
    """The forensic-lab workflow: a trained detector, fine-tuned on authentic faces only, with SBI fakes."""
    start = workspace / "runs" / "faclue" / "faclue.safetensors"
    if not start.exists():  # this test may run alone: make the starting weights first
        assert run_cli("train", write_recipe(workspace, "faclue"), "-o", start.parent).exit_code == 0
    recipe = write_recipe(workspace, "faclue", file="own-footage.yaml")
    text = recipe.read_text().replace("{kind: folder, path: faces}", "{kind: real_images, path: faces/real, crop_faces: true}")
    recipe.write_text(text.replace("ratio: 0.5", "ratio: 1.0"))
    output = workspace / "runs" / "own-footage"
    result = run_cli("train", recipe, "-o", output, "--init", start, "--set", "optim.lr=1e-12")
    assert result.exit_code == 0, result.output
    card = json.loads((output / "faclue.card.json").read_text())
    assert card["start"]["init"]["sha256"] == resolve_weights(None, start).sha256
    assert card["data"]["train"][0]["fake_faces"] == 0  # real footage only: every fake is an SBI pseudo-fake
    before, after = load_file(str(start)), load_file(str(output / "faclue.safetensors"))
    # A vanishing learning rate leaves the weights where they started (batch-norm statistics still move).
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before if "running" not in k and "num_batches" not in k)


def test_two_process_distributed_run_on_cpu_finishes(workspace):
    recipe = write_recipe(workspace, "sficonv", file="ddp.yaml")
    output = workspace / "runs" / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "deepscan", "train", str(recipe), "-o", str(output), "--set", "epochs=2", "--set", "batch_size=4"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # A session of its own, so that a hung run can be stopped with its worker processes.
    launcher = subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        _, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate()
        pytest.fail("the 2-process run did not finish within 300 s")
    assert launcher.returncode == 0, stderr[-3000:]
    card = json.loads((output / "sficonv.card.json").read_text())
    assert card["training"]["world_size"] == 2 and card["training"]["epochs"] == 2
    history = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [entry["train"]["faces"] for entry in history] == [8, 8]  # 2 steps x global batch 4, over both ranks
    detector = create_detector("sficonv")
    load_weights(detector, resolve_weights(None, output / "sficonv.safetensors"))


SEPARABLE_RECIPE = """\
detector: {{name: {name}, kwargs: {kwargs}}}
input_size: 32
data:
  train: [{{kind: folder, path: separable, crop_faces: false}}]
  val_fraction: 0.0
  face: {{cache_dir: cache, frames_per_video: 1}}
augment: {{hflip: 0.5}}
optim: {{name: adam, lr: 1.0e-3}}
schedule: {{name: constant}}
sampler: balanced
batch_size: 8
epochs: 4
steps_per_epoch: 10
num_workers: 0
"""


@pytest.fixture(scope="module")
def separable_faces(workspace):
    """Sixteen people, each real and with a blue-tinted mouth: a forgery any detector that learns sees at once."""
    rng = np.random.default_rng(1)
    for label in ("real", "fake"):
        (workspace / "separable" / label).mkdir(parents=True)
    for index in range(16):
        person = (portrait() if index % 2 else second_portrait()).astype(np.float32)
        person = person[:, ::-1] if index % 4 >= 2 else person
        person *= rng.uniform(0.8, 1.2, 3)
        fake = person.copy()
        fake[250:330, 200:340] *= np.array([0.6, 0.8, 1.5])
        for label, image in (("real", person), ("fake", fake)):
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).resize((64, 75)).save(
                workspace / "separable" / label / f"person{index:02d}.png"
            )
    return workspace / "separable"


@pytest.mark.parametrize("name", ["faclue", "sficonv"])
def test_the_trainer_learns_a_separable_forgery(workspace, separable_faces, name):
    """A trainer that cannot learn (wrong labels, broken gradients, a frozen stream) fails here, not in a 3-hour run."""
    recipe_path = workspace / f"separable-{name}.yaml"
    recipe_path.write_text(SEPARABLE_RECIPE.format(name=name, kwargs=json.dumps(TRAINING_KWARGS.get(name, {}))))
    output = workspace / "runs" / f"separable-{name}"
    train(load_recipe(recipe_path), TrainOptions(output=output))
    losses = [json.loads(line)["train"]["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < 0.45, losses


@pytest.mark.parametrize("name", ["faclue", "pel"])
@pytest.mark.parametrize("backbone, says", [("efficientnet_nope", "is not a timm model"),
                                            ("resnet18", "is not an EfficientNet-style network")])
def test_a_backbone_the_detector_cannot_cut_is_a_one_line_recipe_error(workspace, name, backbone, says):
    recipe = write_recipe(workspace, name, {"backbone": backbone}, file=f"backbone-{name}.yaml")
    result = run_cli("train", recipe, "-o", workspace / "runs" / f"backbone-{name}-{backbone}")
    assert result.exit_code == 2, result.output
    assert f"detector.kwargs: {dict(faclue='FAClue', pel='PEL')[name]}: backbone {backbone!r} {says}" in result.stderr
    assert "internal error" not in result.output


def test_shipping_reads_the_validation_faces_of_a_recipe_that_holds_out_training_groups(workspace):
    """A recipe without validation sources of its own (val_fraction): the faces held out of its training
    sources, each named by its training source."""
    from deepscan.train import shipping

    faces = shipping.validation_faces(write_recipe(workspace, "sficonv", file="held-out.yaml"))
    assert faces.crops.shape[1:] == (32, 32, 3) and len(faces.crops) == len(faces.labels) == len(faces.sources) > 0
    assert len(set(faces.sources.tolist())) == 1 and f"({faces.sources[0]}, held-out groups;" in faces.described
    assert set(faces.labels.tolist()) == {0, 1}


def test_a_channels_last_recipe_trains_weights_and_batches_in_that_layout(workspace, monkeypatch):
    from deepscan.detectors.ralf import RALF

    seen = []
    original = RALF.training_step

    def spy(self, x, y, optimizers, progress=0.0):
        kernel = self.reconstructor.stem[0].weight
        seen.append((x.is_contiguous(memory_format=torch.channels_last),
                     kernel.is_contiguous(memory_format=torch.channels_last)))
        return original(self, x, y, optimizers, progress)

    monkeypatch.setattr(RALF, "training_step", spy)
    recipe = write_recipe(workspace, "ralf", file="ralf-layout.yaml")
    for channels_last in (False, True):
        seen.clear()
        output = workspace / "runs" / f"ralf-channels-last-{channels_last}"
        result = run_cli("train", recipe, "-o", output, "--set", f"channels_last={str(channels_last).lower()}")
        assert result.exit_code == 0, result.output
        assert seen == [(channels_last, channels_last)] * 2  # both steps, batch and weights alike
        # The weights come out in the usual layout and score a face.
        detector, _ = build_detector("ralf", output / "ralf.safetensors")
        with torch.no_grad():
            assert torch.isfinite(detector.eval()(torch.rand(1, 3, 32, 32))).all()
