"""Recipes: the schema refuses bad keys and types with one line naming file and key; every shipped recipe is valid."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.detectors import list_detectors
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


def test_every_shipped_recipe_validates_and_names_a_registered_detector(monkeypatch):
    # The demo recipes keep their face cache in the repository's local/ (../local/cache/faces): inside the working
    # folder when run from the repository's root, as the README runs them.
    monkeypatch.chdir(RECIPES[0].parents[1])
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


SHIPPED_RECIPES = sorted((RECIPES[0].parent / "shipped").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_RECIPES, ids=lambda path: path.stem)
def test_every_recipe_behind_shipped_weights_validates_and_builds_its_detector(path):
    # The recipes the model cards cite (recipes/shipped/): a misspelt option would only show when someone re-trains.
    from deepscan.detectors import create_detector

    recipe = load_recipe(path)
    detector = create_detector(recipe.detector.name, **recipe.detector.kwargs)
    assert detector.config.name == recipe.detector.name


def test_cli_reports_a_bad_recipe_in_one_line_and_exits_2(tmp_path):
    path = write(tmp_path, MINIMAL + "optim: {lr: fast}\n")
    result = CliRunner().invoke(app, ["train", str(path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optim.lr" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "run").exists()


# --- recipes from strangers: plain data, no code, no writing outside their folder --------------------------------


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['touch pwned']", "!!python/name:os.system",
                                 "!!python/module:os", "!!python/object/new:subprocess.Popen [['touch', 'pwned']]"])
def test_a_python_tag_is_refused_in_one_line_in_the_file_and_in_set(tmp_path, monkeypatch, tag):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, MINIMAL + f"epochs: {tag}\n")
    message = refusal(path)
    shown = tag.split()[0]
    assert message.startswith(f"{path}: not valid YAML at line 6 (the tag {shown} is refused"), message
    message = refusal(write(tmp_path, MINIMAL, "clean.yaml"), [f"epochs={tag}"])
    assert message.startswith(f"--set epochs={tag}: the tag {shown} is refused"), message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("cache_dir", ["/tmp/deepscan-elsewhere", "~/.ssh", "../../elsewhere", "inside/../../out"])
def test_an_output_path_outside_the_recipes_folder_is_refused(tmp_path, monkeypatch, cache_dir):
    work, recipes = tmp_path / "work", tmp_path / "shared" / "recipes"
    work.mkdir()
    recipes.mkdir(parents=True)
    monkeypatch.chdir(work)
    path = write(recipes, MINIMAL + f"  face: {{cache_dir: '{cache_dir}'}}\n")
    message = refusal(path)
    assert message.startswith(f"{path}: data.face.cache_dir: {cache_dir!r} "), message
    assert "--set data.face.cache_dir=PATH" in message
    # The user's own --set is the user's choice, like -o.
    assert load_recipe(path, [f"data.face.cache_dir={tmp_path / 'mine'}"]).data.face.cache_dir == tmp_path / "mine"


def test_an_output_path_that_a_symbolic_link_leads_outside_is_refused(tmp_path, monkeypatch):
    work, recipes = tmp_path / "work", tmp_path / "recipes"
    work.mkdir()
    recipes.mkdir()
    (recipes / "cache").symlink_to(tmp_path / "outside", target_is_directory=True)
    monkeypatch.chdir(work)
    message = refusal(write(recipes, MINIMAL + "  face: {cache_dir: cache/faces}\n"))
    assert "leads outside the recipe's folder and the working folder" in message


def test_output_paths_inside_the_recipes_folder_or_the_working_folder_are_fine(tmp_path, monkeypatch):
    (tmp_path / "project" / "recipes").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    inside = load_recipe(write(tmp_path / "project" / "recipes", MINIMAL + "  face: {cache_dir: cache}\n"))
    assert inside.data.face.cache_dir == tmp_path / "project" / "recipes" / "cache"
    # As the demo recipes do: beside the recipes' folder, inside the project the run is started from.
    beside = load_recipe(write(tmp_path / "project" / "recipes", MINIMAL + "  face: {cache_dir: ../local/cache}\n"))
    assert beside.data.face.cache_dir == tmp_path / "project" / "local" / "cache"


def test_the_data_read_is_only_what_the_recipe_lists(tmp_path):
    from PIL import Image

    from deepscan.train.datasets import list_sources

    for folder in ("listed/real", "listed/fake", "unlisted/real", "unlisted/fake", "listed-too/real"):
        (tmp_path / folder).mkdir(parents=True)
    for index, folder in enumerate(("listed/real", "listed/fake", "unlisted/real", "unlisted/fake", "listed-too/real")):
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(tmp_path / folder / "a.png")
    text = MINIMAL.replace("{kind: real_images, path: faces}", "{kind: folder, path: listed}")
    text += "  val:\n    - {kind: real_images, path: listed-too}\n"
    listed = list_sources(load_recipe(write(tmp_path, text)).data)
    read = {item.path.relative_to(tmp_path).as_posix() for sources in listed.values() for _, items in sources
            for item in items}
    assert read == {"listed/real/a.png", "listed/fake/a.png", "listed-too/real/a.png"}
