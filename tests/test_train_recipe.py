"""Recipes: the schema refuses bad keys and types with one line naming file and key; every shipped recipe is valid."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.registry import list_detectors
from deepscan.train.recipe import RecipeError, load_recipe, recipe_hash

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))

MINIMAL = """\
detector: {name: sficonv}
data:
  train:
    - {kind: real_images, path: faces}
  sbi: {}
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(path: Path, overrides=()) -> str:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, list(overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_minimal_recipe_gets_defaults_and_paths_relative_to_its_folder(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.data.train[0].path == tmp_path / "faces"
    assert recipe.optim.name == "adam" and recipe.batch_size == 32 and recipe.input_size is None
    assert recipe.data.sbi is not None and recipe.data.sbi.blend_ratios == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        (MINIMAL + "optim: {lr: fast}\n", "optim.lr", "valid number"),
        (MINIMAL + "optim: {name: adam, learning_rate: 0.1}\n", "optim.learning_rate", "unknown key"),
        (MINIMAL + "epochs: -1\n", "epochs", "greater than or equal to 1"),
        (MINIMAL + "batchsize: 8\n", "batchsize", "unknown key"),
        (MINIMAL.replace("real_images", "webcam"), "data.train.0", "unknown source kind 'webcam'"),
        (MINIMAL.replace("{kind: real_images, path: faces}", "{kind: real_images}"), "data.train.0.path", "required"),
        (MINIMAL + "augment: {crop_scale: [1.45, 1.15]}\n", "augment.crop_scale", "low <= high"),
        (MINIMAL + "sampler: balanced\nbatch_size: 7\n", "batch_size", "even"),
        ("detector: {name: sficonv}\n", "data", "required"),
    ],
)
def test_the_schema_names_the_file_and_the_key(tmp_path, text, key, why):
    path = write(tmp_path, text)
    message = refusal(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert why in message


def test_validation_never_uses_a_test_split(tmp_path):
    text = MINIMAL + "  val:\n    - {kind: faceforensics, root: ff, split: test}\n"
    message = refusal(write(tmp_path, text))
    assert "data.val.0:" in message and "test split" in message


def test_overrides_are_parsed_as_yaml_and_validated_like_the_file(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["optim.lr=1e-3", "augment.crop_scale=[1.2, 1.4]", "data.train.0.weight=2"])
    assert recipe.optim.lr == pytest.approx(1e-3)
    assert recipe.augment.crop_scale == (1.2, 1.4)
    assert recipe.data.train[0].weight == 2.0
    assert "optim.lr: " in refusal(path, ["optim.lr=abc"])
    assert "optim.lrr: unknown key" in refusal(path, ["optim.lrr=1"])
    assert "expected KEY=VALUE" in refusal(path, ["optim.lr"])
    assert "data.train.3 is not an item" in refusal(path, ["data.train.3.weight=1"])


def test_unreadable_recipes_are_one_line_errors(tmp_path):
    assert "recipe not found" in refusal(tmp_path / "missing.yaml")
    assert "not valid YAML at line 2" in refusal(write(tmp_path, "detector: {name: x}\n  data: [1]\n"))
    assert "a recipe is a mapping" in refusal(write(tmp_path, "- just\n- a list\n"))


def test_the_recipe_hash_follows_the_content(tmp_path):
    path = write(tmp_path, MINIMAL)
    first, again = load_recipe(path), load_recipe(path)
    assert recipe_hash(first) == recipe_hash(again)
    assert recipe_hash(load_recipe(path, ["optim.lr=0.5"])) != recipe_hash(first)
    assert recipe_hash(load_recipe(path, ["epochs=3"]), ignore=("epochs",)) == recipe_hash(first, ignore=("epochs",))


def test_every_shipped_recipe_validates_and_names_a_registered_detector():
    assert len(RECIPES) >= 10
    detectors = set(list_detectors())
    trained = set()
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe.detector.name in detectors, path
        trained.add(recipe.detector.name)
        # Paper recipes cite the paper's section for their settings.
        if not path.name.startswith("demo-"):
            assert "sec. " in path.read_text(), path
    methods = {"faclue", "pel", "sficonv", "mclcr", "ralf"} & detectors
    assert methods <= trained
    assert {p.stem for p in RECIPES} >= methods | {f"demo-{m}" for m in methods}


def test_cli_reports_a_bad_recipe_in_one_line_and_exits_2(tmp_path):
    path = write(tmp_path, MINIMAL + "optim: {lr: fast}\n")
    result = CliRunner().invoke(app, ["train", str(path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optim.lr" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "run").exists()
