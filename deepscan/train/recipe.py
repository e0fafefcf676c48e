"""Training recipes: one YAML file per run, validated by a strict pydantic schema.

A recipe names the detector, where its starting weights come from, the data, the augmentation, the optimiser
and schedule, and the loop's settings. Every key is checked: an unknown key or a value of the wrong type is
refused with one line naming the file and the key (``recipes/faclue.yaml: optim.lr: ...``), before anything
heavy is imported or built.

Relative paths inside a recipe are relative to the recipe file's folder, so a recipe and its data can move
together. Command-line overrides (``--set optim.lr=1e-4``) are applied to the raw YAML before validation, with
values parsed as YAML (numbers, booleans, lists), so they are checked exactly like the file itself.

Recipes may come from strangers. They are read with ``yaml.safe_load`` (a ``!!python/...`` tag is refused), name
detectors and architectures from registries (never a module to import), and the paths the file gives for
deepscan to write to (the face cache) must stay inside the recipe's folder or the working folder
(:func:`check_output_paths`). The data read is only what the recipe's ``data`` sources list.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deepscan.data.sources import RecipePath, Source, Strict, resolve_path
from deepscan.errors import DeepscanError

RECIPE_SCHEMA_VERSION = 1


class RecipeError(DeepscanError, ValueError):
    """A recipe that cannot be used; the message is one line naming the file and the key."""


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Range = tuple[float, float]


def _ordered(value: Range, name: str) -> Range:
    if value[0] > value[1]:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(value)}")
    return value


# --- detector and starting weights --------------------------------------------------------------------------


class DetectorSpec(Strict):
    name: str
    # Keyword arguments of the detector's registry entrypoint (backbone, pretrained, ablation switches, ...).
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PretrainedSpec(Strict):
    """A foreign ImageNet checkpoint mapped onto the detector's timm trunk(s) (see ``deepscan.detectors.pretrained``)."""

    path: RecipePath
    format: Literal["timm", "efficientnet_pytorch", "torchvision_mobilenet_v2"]
    # timm architecture the checkpoint is converted to; by default the one its format implies.
    architecture: str | None = None
    # Each entry lists detector sub-modules (dotted paths) whose tensors, in order, receive the trunk's tensors.
    into: list[list[str]] = Field(min_length=1)


# --- data (the sources are deepscan.data.sources) -----------------------------------------------------------


class FaceSpec(Strict):
    """How faces are extracted (once, into the face cache) and framed."""

    frames_per_video: int = Field(default=8, ge=1)
    faces_per_frame: int = Field(default=1, ge=1)
    # Crop margin at evaluation and in `deepscan scan` (box side x margin); training varies it (augment.crop_scale).
    margin: float = Field(default=1.3, gt=1.0)
    # Margin of the crops kept in the cache: room for crop-scale and rotation augmentation.
    cache_margin: float = Field(default=1.8, gt=1.0)
    min_score: Probability = 0.5
    cache_dir: RecipePath | None = None  # default: $DEEPSCAN_CACHE or ~/.cache/deepscan, then faces/

    @model_validator(mode="after")
    def _cache_holds_the_margin(self) -> "FaceSpec":
        if self.cache_margin < self.margin:
            raise ValueError(f"cache_margin ({self.cache_margin}) must be at least margin ({self.margin})")
        return self


class SBISpec(Strict):
    """Self-blended images (Shiohara and Yamasaki, CVPR 2022): pseudo-fakes made from the real faces."""

    enabled: bool = True
    # Pseudo-fakes per real face in the epoch (1.0: as many SBI fakes as real faces).
    ratio: float = Field(default=1.0, gt=0.0)
    # Sec. 3.2 of the SBI paper: the blend ratio is drawn from {0.25, 0.5, 0.75, 1, 1, 1}.
    blend_ratios: list[Probability] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.0, 1.0], min_length=1)
    # Geometry jitter of the source copy: per-axis scale and translation (share of the face size).
    scale_range: Range = (0.95, 1.05)
    max_shift: float = Field(default=0.03, ge=0.0, le=0.2)
    # Random deformation of the face mask: radial jitter of its outline (share of the radius).
    mask_jitter: float = Field(default=0.08, ge=0.0, le=0.5)
    # Share of the pseudo-fakes blended over facial parts only (eyes, nose, mouth) instead of the whole face
    # (deepscan.train.sbi: a deviation from the paper, off by default).
    parts: Probability = 0.0

    @field_validator("scale_range")
    @classmethod
    def _scale_range(cls, value: Range) -> Range:
        return _ordered(value, "scale_range")


class DataSpec(Strict):
    train: list[Source] = Field(min_length=1)
    # Validation sources; when absent, ``val_fraction`` of the training groups (videos, identities) is held out.
    val: list[Source] | None = None
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    # Cap on validation faces (a fixed, seeded subset), to keep validation quick on a CPU.
    max_val_faces: int | None = Field(default=None, ge=2)
    sbi: SBISpec | None = None
    face: FaceSpec = Field(default_factory=FaceSpec)

    @model_validator(mode="after")
    def _never_the_test_split(self) -> "DataSpec":
        for index, source in enumerate(self.val or []):
            if getattr(source, "split", None) == "test":
                raise ValueError(
                    f"val.{index}: the best checkpoint is chosen on validation data, never on a test split"
                )
        return self


# --- augmentation -------------------------------------------------------------------------------------------


class AugmentSpec(Strict):
    """Training augmentation; each photometric step has its own probability (0 = off).

    Applied to real faces and to their pseudo-fakes alike, so that no augmentation marks a class.
    """

    hflip: Probability = 0.5
    vflip: Probability = 0.0
    # Crop side as a multiple of the face box, drawn per sample (evaluation uses data.face.margin).
    crop_scale: Range = (1.3, 1.3)
    rotation: float = Field(default=0.0, ge=0.0, le=45.0)  # maximum degrees either way
    max_shift: float = Field(default=0.0, ge=0.0, le=0.3)  # share of the face size
    color_cast: Probability = 0.0
    grayscale: Probability = 0.0
    rescale: Probability = 0.0
    rescale_range: Range = (0.3, 0.9)  # down-scale factor before scaling back up
    blur: Probability = 0.0
    blur_sigma: Range = (0.3, 1.5)
    noise: Probability = 0.0
    noise_std: Range = (1.0, 8.0)  # on the 0-255 scale
    jpeg: Probability = 0.0
    jpeg_quality: tuple[int, int] = (40, 95)
    h264: Probability = 0.0
    h264_crf: tuple[int, int] = (18, 38)

    @field_validator("crop_scale", "rescale_range", "blur_sigma", "noise_std", "jpeg_quality", "h264_crf")
    @classmethod
    def _low_high(cls, value: Range, info: ValidationInfo) -> Range:
        return _ordered(value, info.field_name)


# --- optimisation -------------------------------------------------------------------------------------------


class OptimizerSpec(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=1e-4, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)  # SGD only
    nesterov: bool = False  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW only


class OptimizerOverride(Strict):
    """Per parameter group changes to ``optim`` (RALF's discriminator has its own Adam)."""

    name: Literal["sgd", "adam", "adamw"] | None = None
    lr: float | None = Field(default=None, gt=0.0)
    weight_decay: float | None = Field(default=None, ge=0.0)
    momentum: float | None = Field(default=None, ge=0.0, lt=1.0)
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None


class ScheduleSpec(Strict):
    """Learning-rate schedule, stepped once per epoch."""

    name: Literal["constant", "cosine", "step", "plateau"] = "constant"
    min_lr: float = Field(default=0.0, ge=0.0)  # cosine
    step_epochs: int = Field(default=1, ge=1)  # step
    gamma: float = Field(default=0.5, gt=0.0, le=1.0)  # step
    factor: float = Field(default=0.5, gt=0.0, lt=1.0)  # plateau
    patience: int = Field(default=5, ge=0)  # plateau: epochs without improvement of val loss


# --- the recipe ---------------------------------------------------------------------------------------------


class Recipe(Strict):
    detector: DetectorSpec
    # Starting weights for the whole detector (fine-tuning): a .safetensors path, hf://..., or "shipped".
    init: str | None = None
    pretrained: PretrainedSpec | None = None
    # Training face size; default: the detector's own input size (what `deepscan scan` feeds it).
    input_size: int | None = Field(default=None, ge=16)
    data: DataSpec
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    optim: OptimizerSpec = Field(default_factory=OptimizerSpec)
    optim_groups: dict[str, OptimizerOverride] = Field(default_factory=dict)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    batch_size: int = Field(default=32, ge=2)
    epochs: int = Field(default=10, ge=1)
    # Cap on optimisation steps per epoch (None: one pass over the training faces).
    steps_per_epoch: int | None = Field(default=None, ge=1)
    sampler: Literal["random", "balanced"] = "random"
    select_on: Literal["val_auc", "val_loss"] = "val_auc"
    seed: int = Field(default=0, ge=0)
    amp: bool = True  # bfloat16 autocast, CUDA only (the default precision; see ``precision``)
    # Autocast: "auto" is bfloat16 on a CUDA GPU that supports it, float32 elsewhere (what ``amp: true`` means);
    # "bf16" also on the CPU (to rehearse a GPU run's numerics); "fp32" none. Frequency transforms run in float32
    # whatever is chosen (deepscan.frequency). None: from ``amp``.
    precision: Literal["auto", "fp32", "bf16"] | None = None
    # Training-time budget (training and validation, summed over resumptions): when it is spent, the epoch in
    # progress ends at the next step, is validated, and the run finishes with the best weights so far.
    max_minutes: float | None = Field(default=None, gt=0.0)
    num_workers: int = Field(default=2, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Convolutions on channels-last (NHWC) tensors: on a CUDA GPU under bfloat16, cuDNN's tensor-core kernels read
    # that layout without transposing every activation. Same numbers up to rounding, on any device.
    channels_last: bool = False

    @field_validator("init")
    @classmethod
    def _init_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "shipped" or value.startswith("hf://"):
            return value
        return str(resolve_path(Path(value), info))

    @model_validator(mode="after")
    def _one_precision(self) -> "Recipe":
        if self.precision is not None and self.precision != "fp32" and not self.amp:
            raise ValueError(f"precision: {self.precision} asks for autocast, which amp: false turns off")
        return self

    @model_validator(mode="after")
    def _fits_the_sampler(self) -> "Recipe":
        if self.sampler == "balanced" and self.batch_size % 2:
            raise ValueError(f"batch_size: balanced batches need an even size, got {self.batch_size}")
        return self


# --- loading ------------------------------------------------------------------------------------------------


def _format_location(location: tuple) -> str:
    parts = []
    for part in location:
        # Discriminated unions add the tag to the location; it is not a key the user wrote.
        if isinstance(part, str) and part in _SOURCE_KINDS and parts and parts[-1].isdigit():
            continue
        parts.append(str(part))
    return ".".join(parts)


_SOURCE_KINDS = {"folder", "real_images", "real_videos", "faceforensics", "celebdf", "video_csv", "bundle"}


def describe_validation_error(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    location = _format_location(first["loc"])
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif first["type"] == "union_tag_invalid":
        message = f"unknown source kind {first.get('input', {}).get('kind')!r} (known: {', '.join(sorted(_SOURCE_KINDS))})"
    else:
        message = first["msg"].removeprefix("Value error, ")
        # A check across keys names the key it is about first ("batch_size: ..."): fold it into the location.
        named = re.match(r"^([A-Za-z_][\w.]*): (.*)$", message) if first["type"] == "value_error" else None
        if named:
            location = ".".join(part for part in (location, named[1]) if part)
            message = named[2]
        elif "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {first['input']!r})"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{origin}: {location or '(top level)'}: {message}{suffix}".replace("\n", " ")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=1e-4`` -> (["optim", "lr"], 0.0001); the value is read as YAML."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text}: expected KEY=VALUE, e.g. --set optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        refused = _refused_tag(error)
        raise RecipeError(f"--set {text}: " + (refused or "the value is not valid YAML")) from None
    return key.strip().split("."), value


def apply_override(data: dict, keys: list[str], value: Any, text: str) -> None:
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"--set {text}: {'.'.join(keys[: depth + 1])} is not an item of the list")
            node = node[int(key)]
        else:
            node = node.setdefault(key, {})
            if node is None:
                node = {}
        if not isinstance(node, (dict, list)):
            raise RecipeError(f"--set {text}: {'.'.join(keys[: depth + 1])} is a value, not a section")
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise RecipeError(f"--set {text}: {'.'.join(keys)} is not an item of the list")
        node[int(last)] = value
    else:
        node[last] = value


def read_recipe_data(path: Path) -> dict:
    import yaml

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: cannot read the recipe ({error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        refused = _refused_tag(error)
        raise RecipeError(f"{path}: not valid YAML{where}" + (f" ({refused})" if refused else "")) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys (detector, data, optim, ...)")
    return data


def validate_recipe(data: dict, origin: str, base_dir: Path | None) -> Recipe:
    try:
        return Recipe.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        raise RecipeError(describe_validation_error(error, origin)) from None


def _refused_tag(error: Exception) -> str | None:
    """What a YAML tag that safe_load refused (``!!python/object/apply:os.system``, ``!!python/name:...``) is
    told as: recipes come from strangers, and such a tag would have Python import or call something."""
    import yaml

    if not isinstance(error, yaml.constructor.ConstructorError):
        return None
    tag = re.search(r"tag '([^']*)'", str(getattr(error, "problem", "") or ""))
    shown = (tag[1] if tag else "?").replace("tag:yaml.org,2002:", "!!")
    return f"the tag {shown} is refused: a recipe holds plain data, never Python objects"


# Recipe keys that name a place deepscan writes to. The run folder is not one: it is the user's own -o.
OUTPUT_PATH_KEYS = (("data", "face", "cache_dir"),)


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def check_output_paths(data: dict, path: Path, overridden: list[list[str]] = ()) -> None:
    """A recipe from a stranger must not make deepscan write anywhere it likes: each output path the file
    names must be relative and stay, once ``..`` and symbolic links are followed, inside the recipe's folder or
    the working folder (where the run folder goes by default). A value set with ``--set`` is the user's own
    choice and is not checked, nor is one under a section that ``--set`` replaces."""
    recipe_dir = os.path.realpath(Path(path).resolve().parent)
    working = os.path.realpath(os.getcwd())
    for keys in OUTPUT_PATH_KEYS:
        if any(tuple(override) == keys[: len(override)] for override in overridden):
            continue
        node: Any = data
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, str):
            continue  # absent (the default applies), or a wrong type that the schema names
        where = ".".join(keys)
        way_out = f"give another place with --set {where}=PATH"
        if node.startswith("~") or Path(node).is_absolute():
            raise RecipeError(f"{path}: {where}: {node!r} is an absolute path; a recipe's output paths must be "
                              f"relative to it ({way_out})")
        target = os.path.realpath(Path(recipe_dir) / node)
        if not (_inside(target, recipe_dir) or _inside(target, working)):
            raise RecipeError(f"{path}: {where}: {node!r} leads outside the recipe's folder and the working folder; "
                              f"a recipe's output paths must stay inside them ({way_out})")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe file; raises RecipeError (one line) on any problem."""
    path = Path(path)
    data = read_recipe_data(path)
    parsed = [(parse_override(text), text) for text in overrides]
    check_output_paths(data, path, [keys for (keys, _), _ in parsed])
    for (keys, value), text in parsed:
        apply_override(data, keys, value, text)
    origin = f"{path}" + (" (with --set overrides)" if overrides else "")
    return validate_recipe(data, origin, path.resolve().parent)


def recipe_to_dict(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json")


# Top-level keys added after runs were made, with the default that leaves a recipe's hash as it was: a run
# started before a key existed still resumes, and its recipe still hashes the same.
HASH_NEUTRAL_DEFAULTS = {"precision": None, "max_minutes": None, "channels_last": False}


def recipe_hash(recipe: Recipe, ignore: tuple[str, ...] = ()) -> str:
    """sha256 of the recipe's canonical JSON (keys sorted), leaving out the top-level keys in ``ignore`` and the
    later keys of ``HASH_NEUTRAL_DEFAULTS`` at their default."""
    data = {
        key: value for key, value in recipe_to_dict(recipe).items()
        if key not in ignore and not (key in HASH_NEUTRAL_DEFAULTS and value == HASH_NEUTRAL_DEFAULTS[key])
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_changes(recipe: Recipe, **changes: Any) -> Recipe:
    """A validated copy with top-level keys replaced (the CLI's --init, --epochs ...)."""
    data = copy.deepcopy(recipe.model_dump())
    data.update(changes)
    return Recipe.model_validate(data)
