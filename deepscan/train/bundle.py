"""Make a face-crop bundle (``deepscan.data.bundle``) from recipes and the face cache, within a size budget.

    python -m deepscan.train.bundle make recipes/shipped/faclue.yaml -o local/gpu-bundle --max-mib 20
    python -m deepscan.train.bundle check local/gpu-bundle

``make`` takes the training and validation faces that the recipes' data sections select, exactly as
``deepscan train`` would (face cache, duplicates, validation sources or held-out groups, ``max_val_faces``),
extracting into the face cache whatever it lacks. Each face is stored as a JPEG (quality 95 by default) of the
cached crop: ``cache_margin`` times the face box, ``--crop-size`` pixels square (by default the cache's own size
for the largest input size among the recipes, ``--input-size`` to choose another), with its keypoints for SBI.

The budget (``--max-mib``) covers the whole bundle: faces, manifest and the pretrained trunks. Validation faces
are kept whole (``--max-val-faces`` caps them); when the training faces do not fit, the same share of every
training source's groups is kept (groups ranked by a seeded hash of their name, so a person or a video is kept or
left out whole, and the choice is reproducible), and the manifest records every group left out.

The recipes' ``pretrained:`` checkpoints are converted into the bundle (``pretrained/<architecture>.safetensors``:
timm key names, float16), so that a GPU machine needs neither the original ``.pth`` files nor room for their
float32 copies. The whole network is kept, ImageNet classifier included: RALF's perceptual network loads it
strictly, whole.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from deepscan.data.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST_NAME, read_manifest
from deepscan.data.sources import BundleSource, DataError, describe_source
from deepscan.errors import DeepscanError
from deepscan.runtime import sha256_file

MIB = 1024 * 1024
FACE_KEYS = ("frames_per_video", "faces_per_frame", "margin", "cache_margin", "min_score")


class BundleError(DeepscanError):
    """A bundle that cannot be made as asked; one line."""


@dataclass(frozen=True)
class Candidate:
    """A face the recipes select, before it is encoded: where the cache holds it, and what it is."""

    image: Path  # the cached PNG crop
    keypoints: np.ndarray
    label: int
    group: str
    split: str
    source: str


@dataclass(frozen=True)
class Encoded:
    candidate: Candidate
    jpeg: bytes
    sha256: str
    keypoints: np.ndarray  # in the stored crop's pixels


# --- which faces ---------------------------------------------------------------------------------------------


def load_recipes(paths: list[Path]) -> list[tuple[Path, object]]:
    from deepscan.train.recipe import load_recipe

    if not paths:
        raise BundleError("name at least one recipe whose data section selects the faces")
    recipes = [(Path(path), load_recipe(path)) for path in paths]
    first_path, first = recipes[0]
    for path, recipe in recipes[1:]:
        for key in FACE_KEYS:
            if getattr(recipe.data.face, key) != getattr(first.data.face, key):
                raise BundleError(f"{path}: data.face.{key} differs from {first_path}'s; one bundle has one framing")
    return recipes


def crop_size_for(recipes: list[tuple[Path, object]], input_size: int | None, crop_size: int | None) -> int:
    """The stored crop's side: given, or the cache's size for the largest input size (the cache's own rule)."""
    from deepscan.data.framing import extraction_size
    from deepscan.detectors import get_config

    if crop_size is not None:
        return crop_size
    face = recipes[0][1].data.face
    largest = input_size or max(recipe.input_size or get_config(recipe.detector.name).input_size
                                for _, recipe in recipes)
    return extraction_size(largest, face.margin, face.cache_margin)


def _source_name(spec, part: str, index: int) -> str:
    sources = spec.val if part == "val" and spec.val else spec.train
    return describe_source(sources[index])


def collect_candidates(recipe, crop_size: int, cache, on_progress=None) -> list[Candidate]:
    """The recipe's training and validation faces, as ``deepscan train`` would take them, extracted at
    ``crop_size`` (the face cache fills in what it lacks)."""
    from deepscan.data.framing import extraction_params
    from deepscan.train.datasets import collect_faces, extract_faces, list_sources

    spec = recipe.data
    if any(source.kind == "bundle" for source in [*spec.train, *(spec.val or [])]):
        raise BundleError("a bundle is made from media sources, not from another bundle")

    def params_for(item):
        # extraction_params sizes the cached crop for an input size; here the crop size is chosen outright.
        params = extraction_params(item, input_size=crop_size, margin=spec.face.margin,
                                   cache_margin=spec.face.cache_margin, frames_per_video=spec.face.frames_per_video,
                                   faces_per_frame=spec.face.faces_per_frame, min_score=spec.face.min_score)
        return replace(params, cache_size=crop_size)

    listed = list_sources(spec)
    extract_faces(listed, params_for, cache, on_progress=on_progress)
    prepared = collect_faces(listed, spec, params_for, cache, recipe.seed)
    held_out = "val" if spec.val else "train"  # faces held out of the training sources keep their source's name
    found = []
    for part, records in (("train", prepared.train_faces), ("val", prepared.val_faces)):
        for record in records:
            source = _source_name(spec, held_out if part == "val" else "train", record.source)
            found.append(Candidate(record.image, record.keypoints, record.label, record.group, part, source))
    return found


def union(collections: list[list[Candidate]]) -> list[Candidate]:
    """Faces of several recipes, each once; a face that one recipe trains on and another validates on is refused."""
    chosen: dict[Path, Candidate] = {}
    for candidates in collections:
        for candidate in candidates:
            known = chosen.setdefault(candidate.image, candidate)
            if known.split != candidate.split:
                raise BundleError(f"group {candidate.group!r} is training data in one recipe and validation data in "
                                  "another; give the recipes one split")
    return list(chosen.values())


def cap_validation(candidates: list[Candidate], max_val_faces: int | None, seed: int) -> list[Candidate]:
    val = [c for c in candidates if c.split == "val"]
    if max_val_faces is None or len(val) <= max_val_faces:
        return candidates
    keep = {id(val[i]) for i in np.random.default_rng([seed, 17]).permutation(len(val))[:max_val_faces]}
    return [c for c in candidates if c.split == "train" or id(c) in keep]


# --- encoding ------------------------------------------------------------------------------------------------


def encode(candidate: Candidate, crop_size: int, quality: int) -> Encoded:
    """The cached crop as a JPEG of ``crop_size`` pixels, and its keypoints in the stored crop's pixels."""
    from PIL import Image

    with Image.open(candidate.image) as picture:
        picture = picture.convert("RGB")
        scale = crop_size / picture.width
        if picture.size != (crop_size, crop_size):
            picture = picture.resize((crop_size, crop_size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=quality)
    jpeg = buffer.getvalue()
    return Encoded(candidate, jpeg, hashlib.sha256(jpeg).hexdigest(), candidate.keypoints * scale)


# --- within the budget ---------------------------------------------------------------------------------------


def _group_rank(seed: int, source: str, group: str) -> str:
    return hashlib.sha256(f"{seed}:{source}:{group}".encode()).hexdigest()


def keep_share(encoded: list[Encoded], share: float, seed: int) -> tuple[list[Encoded], dict[str, list[str]]]:
    """Validation faces, and ``share`` of every training source's groups (at least one each while share > 0);
    returns the kept faces and the groups left out, per source."""
    groups: dict[str, set[str]] = {}
    for item in encoded:
        if item.candidate.split == "train":
            groups.setdefault(item.candidate.source, set()).add(item.candidate.group)
    kept_groups, dropped = set(), {}
    for source, names in groups.items():
        ranked = sorted(names, key=lambda group: _group_rank(seed, source, group))
        count = min(len(ranked), math.ceil(share * len(ranked)))
        kept_groups.update((source, group) for group in ranked[:count])
        if ranked[count:]:
            dropped[source] = sorted(ranked[count:])
    kept = [item for item in encoded
            if item.candidate.split == "val" or (item.candidate.source, item.candidate.group) in kept_groups]
    return kept, dropped


def fit_budget(encoded, budget: int, fixed_bytes: int, seed: int, manifest_for) -> tuple[list[Encoded], dict, float]:
    """The largest share of training groups (to 1/1000) whose bundle fits ``budget`` bytes."""
    def size(share: float) -> tuple[int, list, dict]:
        kept, dropped = keep_share(encoded, share, seed)
        manifest = manifest_text(manifest_for(kept, dropped, share)).encode()
        return fixed_bytes + len(manifest) + sum(len(item.jpeg) for item in kept), kept, dropped

    total, kept, dropped = size(1.0)
    if total <= budget:
        return kept, dropped, 1.0
    low, high = 0.0, 1.0
    if size(0.0)[0] > budget:
        raise BundleError(f"the validation faces and pretrained trunks alone take {size(0.0)[0] / MIB:.1f} MiB, over "
                          f"the budget of {budget / MIB:.1f} MiB: raise --max-mib or lower --max-val-faces")
    while high - low > 1e-3:
        middle = (low + high) / 2
        low, high = (middle, high) if size(middle)[0] <= budget else (low, middle)
    _, kept, dropped = size(low)
    return kept, dropped, low


# --- pretrained trunks -----------------------------------------------------------------------------------------


def convert_pretrained(recipes, folder: Path) -> list[dict]:
    """Each distinct ``pretrained:`` checkpoint as float16 timm-keyed safetensors (the whole network)."""
    from safetensors.torch import save

    from deepscan.detectors.pretrained import DEFAULT_ARCHITECTURE, read_checkpoint, to_timm

    done: dict[str, dict] = {}
    for _, recipe in recipes:
        spec = recipe.pretrained
        if spec is None:
            continue
        architecture = spec.architecture or DEFAULT_ARCHITECTURE.get(spec.format)
        if architecture is None or architecture in done:
            continue
        state = to_timm(read_checkpoint(spec.path), spec.format, architecture, str(spec.path))
        trunk = {key: (t.half() if t.is_floating_point() else t).contiguous() for key, t in state.items()}
        target = folder / "pretrained" / f"{architecture}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(save(trunk, metadata={"architecture": architecture, "dtype": "float16"}))
        done[architecture] = {
            "file": target.relative_to(folder).as_posix(), "sha256": sha256_file(target), "format": "timm",
            "architecture": architecture, "dtype": "float16",
            "converted_from": {"path": str(spec.path), "format": spec.format, "sha256": sha256_file(spec.path)},
        }
    return list(done.values())


# --- the manifest and the folder -------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "source"


def manifest_text(manifest: dict) -> str:
    """The manifest as JSON, one top-level key per line and one face per line: readable, and a few hundred
    bytes per face rather than a page (the bundle's budget is counted in bytes)."""
    compact = {"separators": (",", ":")}
    lines = [f" {json.dumps(key)}: {json.dumps(value, **compact)}" for key, value in manifest.items() if key != "faces"]
    faces = ",\n".join(f"  {json.dumps(face, **compact)}" for face in manifest.get("faces", []))
    lines.append(' "faces": [\n' + faces + "\n ]")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def face_files(kept: list[Encoded]) -> list[str]:
    """Each kept face's path in the bundle, numbered per split and source in the order given."""
    counters: dict[tuple[str, str], int] = {}
    names = []
    for item in kept:
        key = (item.candidate.split, _slug(item.candidate.source))
        counters[key] = counters.get(key, 0) + 1
        names.append(f"faces/{key[0]}/{key[1]}/{counters[key]:06d}.jpg")
    return names


def _face_entry(item: Encoded, file: str, cache_root: Path) -> dict:
    candidate = item.candidate
    keypoints = item.keypoints
    try:
        origin = candidate.image.relative_to(cache_root).as_posix()
    except ValueError:
        origin = str(candidate.image)
    return {
        "file": file, "sha256": item.sha256, "label": candidate.label,
        "split": candidate.split, "source": candidate.source, "group": candidate.group,
        "keypoints": np.round(keypoints, 2).tolist() if np.isfinite(keypoints).all() else None,
        "origin": origin,
    }


def summarise(faces: list[dict]) -> dict:
    """Faces (real, fake) and groups per split and source."""
    table: dict = {}
    for face in faces:
        row = table.setdefault(face["split"], {}).setdefault(face["source"], {"real": 0, "fake": 0, "groups": set()})
        row["fake" if face["label"] else "real"] += 1
        row["groups"].add(face["group"])
    return {split: {source: {**row, "groups": len(row["groups"])} for source, row in sorted(rows.items())}
            for split, rows in sorted(table.items())}


def write_folder(output: Path, manifest: dict, kept: list[Encoded], files: list[str], pretrained_dir: Path) -> None:
    """The bundle, written beside ``output`` and then put in its place; an existing bundle there is replaced, any
    other existing folder is left alone."""
    if output.exists() and not (output / MANIFEST_NAME).is_file():
        raise BundleError(f"{output}: exists and is not a face bundle; choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-"))
    try:
        for item, file in zip(kept, files):
            (staging / file).parent.mkdir(parents=True, exist_ok=True)
            (staging / file).write_bytes(item.jpeg)
        if (pretrained_dir / "pretrained").is_dir():
            shutil.copytree(pretrained_dir / "pretrained", staging / "pretrained")
        (staging / MANIFEST_NAME).write_text(manifest_text(manifest))
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def make_bundle(recipe_paths: list[Path], output: Path, max_mib: float, *, crop_size: int | None = None,
                input_size: int | None = None, quality: int = 95, max_val_faces: int | None = None,
                seed: int = 0, say=print) -> dict:
    """Write the bundle (see the module docstring); returns its manifest."""
    from deepscan.data.face_cache import FaceCache

    recipes = load_recipes(recipe_paths)
    size = crop_size_for(recipes, input_size, crop_size)
    cache = FaceCache(recipes[0][1].data.face.cache_dir)
    collections = []
    for path, recipe in recipes:
        say(f"{path}: listing faces (extracting at {size} px into {cache.root} what the cache lacks)")
        collections.append(collect_candidates(recipe, size, cache))
    candidates = cap_validation(union(collections), max_val_faces, seed)
    encoded = [encode(candidate, size, quality) for candidate in candidates]
    with tempfile.TemporaryDirectory() as scratch:
        pretrained = convert_pretrained(recipes, Path(scratch))
        fixed = folder_bytes(Path(scratch))
        face = recipes[0][1].data.face

        def manifest_for(kept, dropped, share):
            files = face_files(kept)
            faces = [_face_entry(item, file, cache.root) for item, file in zip(kept, files)]
            return {
                "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
                "made_by": "python -m deepscan.train.bundle make",
                "recipes": [{"path": str(path), "sha256": sha256_file(path)} for path, _ in recipes],
                "crop": {"size": size, "margin": face.cache_margin, "eval_margin": face.margin,
                         "jpeg_quality": quality},
                "budget_mib": max_mib, "seed": seed,
                "selection": {"train_group_share": round(share, 4),
                              "rule": "per training source, the groups first in sha256(seed:source:group) order",
                              "dropped_train_groups": dropped},
                "summary": summarise(faces), "pretrained": pretrained, "faces": faces,
            }

        kept, dropped, share = fit_budget(encoded, int(max_mib * MIB), fixed, seed, manifest_for)
        manifest = manifest_for(kept, dropped, share)
        write_folder(Path(output), manifest, kept, face_files(kept), Path(scratch))
    return manifest


def check_bundle(folder: Path) -> dict:
    """Every face and pretrained file of the bundle present and matching its sha256; the manifest."""
    from deepscan.data.bundle import list_bundle

    manifest = read_manifest(folder)
    for split in ("train", "val"):
        if manifest.sources(split):
            list_bundle(BundleSource(kind="bundle", path=folder, split=split))
    for entry in manifest.raw.get("pretrained", []):
        path = Path(folder) / entry["file"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise DataError(f"{path}: pretrained trunk of the bundle is missing or fails its sha256 check")
    return manifest.raw


def describe(manifest: dict, folder: Path) -> str:
    lines = [f"{folder}: {folder_bytes(Path(folder)) / MIB:.2f} MiB, crops {manifest['crop']['size']} px at "
             f"{manifest['crop']['margin']:g} x the face box, JPEG q{manifest['crop']['jpeg_quality']}"]
    dropped = manifest["selection"]["dropped_train_groups"]
    for split, rows in manifest["summary"].items():
        for source, row in rows.items():
            left_out = len(dropped.get(source, [])) if split == "train" else 0
            lines.append(f"  {split:5} {source:22} {row['real']:5} real {row['fake']:5} fake {row['groups']:5} groups"
                         + (f" ({left_out} groups left out)" if left_out else ""))
    lines.append(f"  training groups kept: {manifest['selection']['train_group_share']:.1%} of each source's")
    for entry in manifest.get("pretrained", []):
        lines.append(f"  pretrained: {entry['file']} ({entry['architecture']}, {entry['dtype']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepscan.train.bundle", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="make a bundle from recipes and the face cache")
    make.add_argument("recipes", nargs="+", type=Path)
    make.add_argument("-o", "--output", type=Path, required=True)
    make.add_argument("--max-mib", type=float, required=True, help="size budget of the whole bundle")
    make.add_argument("--crop-size", type=int, help="stored crop side in pixels (default: from the input size)")
    make.add_argument("--input-size", type=int, help="input size the crops must serve (default: the recipes')")
    make.add_argument("--quality", type=int, default=95, help="JPEG quality")
    make.add_argument("--max-val-faces", type=int, help="cap on validation faces (a seeded subset)")
    make.add_argument("--seed", type=int, default=0)
    check = commands.add_parser("check", help="verify a bundle and describe it")
    check.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "make":
            manifest = make_bundle(args.recipes, args.output, args.max_mib, crop_size=args.crop_size,
                                   input_size=args.input_size, quality=args.quality,
                                   max_val_faces=args.max_val_faces, seed=args.seed,
                                   say=lambda line: print(line, file=sys.stderr))
            folder = args.output
        else:
            manifest, folder = check_bundle(args.folder), args.folder
    except DeepscanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(describe(manifest, folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
