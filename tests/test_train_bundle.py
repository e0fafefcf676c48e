"""Face-crop bundles: made from recipes and the face cache within a size budget, read back as a recipe's data with
neither PyAV nor MediaPipe, refused when altered; training from one with bfloat16 autocast, a time budget and
sharded weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepscan.data.bundle import MANIFEST_NAME, list_bundle, read_manifest
from deepscan.data.sources import BundleSource, DataError
from deepscan.media.synthetic import portrait, second_portrait
from deepscan.train import bundle as bundle_module
from deepscan.train.bundle import BundleError, Candidate, Encoded, check_bundle, keep_share, make_bundle
from deepscan.train.recipe import RecipeError, load_recipe, recipe_hash, recipe_to_dict
from deepscan.train.trainer import TrainOptions, train
from deepscan.weights import load_weights, resolve_weights

PEOPLE = 6

SOURCE_RECIPE = """\
detector: {name: pel, kwargs: {backbone: efficientnet_b0}}
input_size: 32
data:
  train: [{kind: folder, path: faces, name: faces}]
  val_fraction: 0.34
  face: {cache_dir: cache}
"""

BUNDLE_RECIPE = """\
detector: {{name: pel, kwargs: {{backbone: efficientnet_b0}}}}
input_size: 32
data:
  train: [{{kind: bundle, path: bundle, split: train}}]
  val: [{{kind: bundle, path: bundle, split: val}}]
  sbi: {{ratio: 1.0}}
  face: {{cache_margin: {margin}}}
augment: {{crop_scale: [1.2, 1.4], rotation: 5, jpeg: 0.3}}
optim: {{name: adam, lr: 1.0e-4}}
batch_size: 2
epochs: {epochs}
steps_per_epoch: 2
num_workers: 0
precision: bf16
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """faces/real and faces/fake: six people, each a group (real/personN and fake/personN belong together)."""
    root = tmp_path_factory.mktemp("bundle")
    rng = np.random.default_rng(0)
    bases = [portrait(), second_portrait()]
    for label in ("real", "fake"):
        folder = root / "faces" / label
        folder.mkdir(parents=True)
        for index in range(PEOPLE):
            image = bases[index % 2].astype(np.float32)[:, :: 1 if index % 4 < 2 else -1]
            if label == "fake":  # a crude "swap": the middle of the face recoloured
                image[180:330, 190:350] *= rng.uniform(0.75, 1.25, 3)
            image = np.clip(image * rng.uniform(0.85, 1.15, 3), 0, 255).astype(np.uint8)
            Image.fromarray(image).resize((200, 234)).save(folder / f"person{index}.png")
    (root / "source.yaml").write_text(SOURCE_RECIPE)
    return root


@pytest.fixture(scope="module")
def whole(workspace):
    """A bundle of every face (a budget that holds them all)."""
    manifest = make_bundle([workspace / "source.yaml"], workspace / "bundle", 50, say=lambda _: None)
    return workspace / "bundle", manifest


def test_the_bundle_holds_each_face_as_a_jpeg_crop_with_its_keypoints(whole):
    folder, manifest = whole
    assert manifest["crop"] == {"size": 46, "margin": 1.8, "eval_margin": 1.3, "jpeg_quality": 95}
    faces = manifest["faces"]
    assert len(faces) == 2 * PEOPLE and {face["split"] for face in faces} == {"train", "val"}
    # Whole groups on one side: a person's real and fake faces are never split between train and val.
    sides = {}
    for face in faces:
        sides.setdefault(face["group"], set()).add(face["split"])
    assert all(len(split) == 1 for split in sides.values())
    for face in faces:
        with Image.open(folder / face["file"]) as picture:
            assert picture.format == "JPEG" and picture.size == (46, 46)
        assert len(face["keypoints"]) == 6
    assert check_bundle(folder)["selection"]["train_group_share"] == 1.0


def test_a_budget_keeps_whole_groups_and_records_those_left_out(workspace, whole):
    folder, full = whole
    whole_size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    train_faces = sum((folder / f["file"]).stat().st_size for f in full["faces"] if f["split"] == "train")
    budget = (whole_size - train_faces / 2) / 1024 / 1024  # room for about half the training faces
    manifest = make_bundle([workspace / "source.yaml"], workspace / "small", budget, say=lambda _: None)
    folder = workspace / "small"
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) <= budget * 1024 * 1024
    kept = {face["group"] for face in manifest["faces"] if face["split"] == "train"}
    dropped = set(manifest["selection"]["dropped_train_groups"]["faces"])
    every_train = {face["group"] for face in full["faces"] if face["split"] == "train"}
    assert dropped and kept and kept | dropped == every_train and not kept & dropped
    for group in kept:  # kept whole: both of a person's faces
        assert sum(face["group"] == group for face in manifest["faces"]) == 2
    assert [f for f in manifest["faces"] if f["split"] == "val"] == [f for f in full["faces"] if f["split"] == "val"]


def test_the_same_share_of_every_source_s_groups_is_kept():
    def item(source, group):
        candidate = Candidate(Path(f"{source}-{group}.png"), np.zeros((6, 2)), 0, group, "train", source)
        return Encoded(candidate, b"x", "0" * 64, np.zeros((6, 2)))

    encoded = [item("big", f"g{i}") for i in range(40)] + [item("small", f"h{i}") for i in range(10)]
    kept, dropped = keep_share(encoded, 0.3, seed=0)
    assert sum(e.candidate.source == "big" for e in kept) == 12
    assert sum(e.candidate.source == "small" for e in kept) == 3
    assert len(dropped["big"]) == 28 and len(dropped["small"]) == 7
    assert keep_share(encoded, 0.3, seed=0)[1] == dropped != keep_share(encoded, 0.3, seed=1)[1]


def test_a_budget_too_small_for_the_validation_faces_is_one_line(workspace, whole):
    with pytest.raises(BundleError, match="raise --max-mib") as error:
        make_bundle([workspace / "source.yaml"], workspace / "tiny", 0.001, say=lambda _: None)
    assert "\n" not in str(error.value)


def test_an_existing_folder_that_is_no_bundle_is_left_alone(workspace, whole):
    other = workspace / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="is not a face bundle"):
        make_bundle([workspace / "source.yaml"], other, 50, say=lambda _: None)
    assert (other / "notes.txt").read_text() == "mine"


def test_a_bundle_lists_its_faces_for_a_recipe(whole):
    folder, manifest = whole
    train = list_bundle(BundleSource(kind="bundle", path=folder, split="train", sources=["faces"]))
    assert len(train) == sum(face["split"] == "train" for face in manifest["faces"])
    assert all(face.kind == "face" and face.keypoints.shape == (6, 2) for face in train)
    with pytest.raises(DataError, match="has no source 'dfdc'"):
        list_bundle(BundleSource(kind="bundle", path=folder, split="train", sources=["dfdc"]))


@pytest.fixture
def copy_of(whole, tmp_path):
    import shutil

    shutil.copytree(whole[0], tmp_path / "bundle")
    return tmp_path / "bundle"


def test_an_altered_face_file_is_refused(copy_of):
    face = read_manifest(copy_of).faces[0]
    (copy_of / face["file"]).write_bytes((copy_of / face["file"]).read_bytes() + b"\0")
    with pytest.raises(DataError, match="fails its sha256 check") as error:
        check_bundle(copy_of)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("path", ["../outside.jpg", "/etc/hostname", "faces/../../x.jpg"])
def test_a_manifest_naming_a_file_outside_the_bundle_is_refused(copy_of, path):
    manifest = json.loads((copy_of / MANIFEST_NAME).read_text())
    manifest["faces"][0]["file"] = path
    (copy_of / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="not a path inside the bundle; refused"):
        check_bundle(copy_of)


def test_a_bundle_split_other_than_train_or_val_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(BUNDLE_RECIPE.format(margin=1.8, epochs=1).replace("split: val", "split: test"))
    with pytest.raises(RecipeError, match=r"data\.val\.0\.split"):
        load_recipe(recipe)


def _bundle_recipe(workspace: Path, margin: float = 1.8, epochs: int = 1) -> Path:
    path = workspace / f"from-bundle-{margin}-{epochs}.yaml"
    path.write_text(BUNDLE_RECIPE.format(margin=margin, epochs=epochs))
    return path


def test_a_recipe_s_cache_margin_must_be_the_bundle_s(workspace, whole, tmp_path):
    with pytest.raises(DataError, match="set data.face.cache_margin: 1.8"):
        train(load_recipe(_bundle_recipe(workspace, margin=1.6)), TrainOptions(output=tmp_path / "run"))


def test_training_from_a_bundle_imports_neither_pyav_nor_mediapipe(workspace, whole):
    # A fresh interpreter in which both are missing, as on the lent GPU machine.
    script = textwrap.dedent(f"""
        import sys
        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("av", "mediapipe"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Absent())
        from pathlib import Path
        from deepscan.detectors import get_config
        from deepscan.train.distributed import init_distributed
        from deepscan.train.recipe import load_recipe
        from deepscan.train.trainer import Trainer, TrainOptions
        trainer = Trainer(load_recipe({str(_bundle_recipe(workspace))!r}), TrainOptions(output=Path("unused")),
                          init_distributed("cpu"))
        trainer.detector_config = get_config("pel")
        trainer.prepare_data()
        image, label = trainer.train_set[(len(trainer.train_set) - 1, 7)]  # an SBI pseudo-fake, made here
        assert image.shape == (3, 32, 32) and float(label) == 1.0
        print(len(trainer.train_set), len(trainer.val_set), "av" in sys.modules, "mediapipe" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    train_entries, val_entries, av_loaded, mediapipe_loaded = done.stdout.split()
    assert int(train_entries) > 0 and int(val_entries) > 0
    assert (av_loaded, mediapipe_loaded) == ("False", "False")


def test_a_bundle_run_writes_sharded_float16_weights_and_says_how_it_ran(workspace, whole, tmp_path):
    result = train(load_recipe(_bundle_recipe(workspace)), TrainOptions(output=tmp_path / "run", shard_mib=4))
    index = tmp_path / "run" / "pel.safetensors.index.json"
    assert result.weights == index and not (tmp_path / "run" / "pel.safetensors").exists()
    card = json.loads(result.model_card.read_text())
    assert card["weights"]["file"] == index.name and card["weights"]["dtype"] == "float16"
    assert card["training"]["precision"] == "bf16" and card["training"]["autocast"] == "bfloat16"
    resolved = resolve_weights(None, index)  # the card beside the index pins it
    assert resolved.card is not None and resolved.sha256 == card["weights"]["sha256"]
    from deepscan.detectors import create_detector

    detector = create_detector("pel", backbone="efficientnet_b0")
    load_weights(detector, resolved)
    from safetensors.torch import load_file

    fp32 = load_file(str(tmp_path / "run" / "best.safetensors"))
    name = "frequency_input.band_conv.weight"
    assert torch.equal(detector.state_dict()[name], fp32[name].half().float())


def test_the_time_budget_ends_the_run_after_validating_the_epoch_it_cut(workspace, whole, tmp_path, monkeypatch):
    from deepscan.train import epoch as epoch_module

    from types import SimpleNamespace

    clock = iter(range(0, 10**6, 40))  # every reading of the trainer's clock: 40 s later than the last
    monkeypatch.setattr(epoch_module, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    recipe = load_recipe(_bundle_recipe(workspace, epochs=5), ["max_minutes=1.5", "steps_per_epoch=50"])
    result = train(recipe, TrainOptions(output=tmp_path / "run"))
    assert len(result.history) < 5 and result.history[0]["cut_by_time_budget"] is True
    assert result.history[0]["train"]["steps"] < 50 and result.history[0]["val"]["faces"] > 0
    card = json.loads(result.model_card.read_text())
    assert card["training"]["stopped_by_time_budget"] is True and card["training"]["max_minutes"] == 1.5


def test_new_recipe_keys_at_their_defaults_leave_a_recipe_s_hash_as_it_was(workspace):
    recipe = load_recipe(workspace / "source.yaml")
    later_keys = ("precision", "max_minutes", "channels_last")
    data = {key: value for key, value in recipe_to_dict(recipe).items() if key not in later_keys}
    import hashlib

    before = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert recipe_hash(recipe) == before  # a run started before the keys existed still resumes
    assert recipe_hash(load_recipe(workspace / "source.yaml", ["precision=bf16"])) != before
    assert recipe_hash(load_recipe(workspace / "source.yaml", ["channels_last=true"])) != before


def test_precision_bf16_with_amp_off_is_refused(workspace):
    with pytest.raises(RecipeError, match="amp: false"):
        load_recipe(workspace / "source.yaml", ["amp=false", "precision=bf16"])


def test_the_bundle_command_says_what_it_made(workspace, whole, capsys):
    assert bundle_module.main(["check", str(whole[0])]) == 0
    out = capsys.readouterr().out
    assert "crops 46 px at 1.8 x the face box, JPEG q95" in out and "faces" in out
    assert bundle_module.main(["check", str(workspace / "nowhere")]) == 2
    assert "not a face bundle" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["ralf", "pel", "mclcr"])
def test_the_gpu_recipes_need_nothing_the_gpu_machine_lacks(name):
    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "gpu" / f"{name}.yaml")
    sources = [*recipe.data.train, *recipe.data.val]
    assert all(source.kind == "bundle" for source in sources)  # no media: neither PyAV nor MediaPipe
    assert recipe.augment.h264 == 0  # an H.264 round trip needs PyAV
    assert recipe.precision == "bf16" and recipe.max_minutes is not None
    bundle = sources[0].path
    assert recipe.pretrained.path.parent.parent == bundle  # the ImageNet trunk travels inside the bundle
    assert recipe.pretrained.path.suffix == ".safetensors" and recipe.pretrained.format == "timm"
