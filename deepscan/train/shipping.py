"""From a finished training run to shipped weights: fp16 safetensors, calibration, reliable range, model card.

    python -m deepscan.train.shipping ship RUN_DIR RECIPE [--into weights]
    python -m deepscan.train.shipping evaluate NAME        (NAME: a shipped detector, or ensemble)
    python -m deepscan.train.shipping ensemble
    python -m deepscan.train.shipping recalibrate NAME     (refit a shipped card's calibration by the current rules)
    python -m deepscan.train.shipping h264 NAME            (validation reals called fake after H.264 re-encoding)
    python -m deepscan.train.shipping validate NAME        (AUC on the validation split every build is compared on)
    python -m deepscan.train.shipping compare FIRST SECOND (paired AUC differences on the evaluations both ran)

1. the run's selected weights are written as fp16 safetensors (half the size; the scanner computes in float32);
2. the validation faces of the recipe (the split the checkpoint was chosen on, never test data) are scored by
   exactly those fp16 weights, and Platt calibration and the verdict threshold are fitted on them
   (``deepscan.calibration.fit_calibration``);
3. the reliable range: the validation faces are degraded as a scan meets them, as if the face had been N pixels
   wide in the frame (down-scaled to N x margin pixels and back up to the input size) and as if out of focus
   (Gaussian blur); AUC and false alarms are measured at each step. The smallest face size and the lowest
   sharpness at which the detector still holds up (AUC within ``AUC_DROP`` of its clean AUC and at most
   ``MAX_FPR`` of real faces called fake) become the card's ``reliability`` section, below which a scan says
   "inconclusive" instead of accusing anyone;
4. the model card (JSON) is written beside the weights and ``SHA256SUMS`` is updated.

The in-domain, cross-source, robustness and false-alarm figures come afterwards, one ``deepscan evaluate`` run
each (``EVALUATION_PLAN``); ``evaluate`` runs them and copies each results.json into the card with its command.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deepscan.runtime import atomic_write, sha256_file
from deepscan.train.card_markdown import card_markdown, ensemble_markdown, readme_table

# What "still holds up" means for the reliable range (stated in the card).
AUC_DROP = 0.05
MAX_FPR = 0.10
FACE_SIZES = (24, 32, 40, 48, 64, 80, 96, 128)
BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
# Validation faces degraded for the reliable range (a seeded subset: 14 degradations of every face would take
# the CPU longer than the training's own validation).
RELIABILITY_FACES = 400
# The validation faces every build of every detector is compared on (which build ships, which checkpoint of a run
# is kept): the forged and real faces of the DFDC and FairFace validation groups, without pseudo-fakes (this recipe
# trains without SBI, so its validation split has none), framed as the shipped recipes frame them.
COMPARISON_RECIPE = Path("recipes/shipped/sficonv.yaml")
# H.264 from light to heavy (x264's default is 23), for the false alarms of real faces re-encoded: most footage an
# investigator brings is H.264, and a detector that reads its artefacts as forgery accuses real people. The
# threshold's false-alarm budget holds on the validation reals re-encoded at each of them as well as clean.
H264_CRFS = (18, 23, 28, 33)


def to_fp16_safetensors(source: Path, target: Path) -> None:
    """Floating-point tensors in half precision, integer buffers (BN's batch counters) as they are."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata() or {})
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    state = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    metadata["dtype"] = "float16"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, save({key: value.contiguous() for key, value in state.items()}, metadata=metadata))


class ValidationFaces(NamedTuple):
    crops: np.ndarray  # (N, size, size, 3) uint8
    labels: np.ndarray  # 1 = fake (a forged face or an SBI pseudo-fake), 0 = real
    described: str  # where they come from, for the card's readers
    sources: np.ndarray  # each face's source name (its pseudo-fakes: their real face's)


def validation_faces(recipe_path: Path, input_size: int | None = None) -> ValidationFaces:
    """The recipe's validation faces as the trainer validates on them: uint8 crops at the input size (or at
    ``input_size``), labels, a description of where they come from, and each face's source."""
    from deepscan.detectors import get_config
    from deepscan.train.distributed import init_distributed
    from deepscan.train.recipe import load_recipe, with_changes
    from deepscan.train.trainer import Trainer, TrainOptions

    recipe = load_recipe(recipe_path)
    if input_size is not None:
        recipe = with_changes(recipe, input_size=input_size)
    trainer = Trainer(recipe, TrainOptions(output=Path("unused")), init_distributed("cpu"))
    trainer.detector_config = get_config(recipe.detector.name)
    trainer.prepare_data()
    val = trainer.val_set
    crops = np.stack([val.make(index, 0)[0] for index in range(len(val))])
    labels = np.asarray(val.labels)
    # The recipe's validation sources, or (with val_fraction) held-out groups of its training sources.
    part = "val" if "val" in trainer.summaries else "train"
    names = [summary.name for summary in trainer.summaries[part]]
    pseudo = sum(entry.pseudo_fake for entry in val.entries)
    held_out = "" if part == "val" else ", held-out groups"
    described = (
        f"{len(labels)} validation faces ({', '.join(names)}{held_out}; {int((labels == 0).sum())} real, "
        f"{int((labels == 1).sum()) - pseudo} forged, {pseudo} SBI pseudo-fakes of the validation reals)"
    )
    sources = np.asarray([names[val.faces[entry.face].source] for entry in val.entries])
    return ValidationFaces(crops, labels, described, sources)


def h264_encoder(crf: int):
    """``(crop, index) -> crop`` encoded alone as a one-frame H.264 video at ``crf``, as ``deepscan evaluate
    --perturb h264:CRF`` encodes a face (seeded by its position, so that every call encodes a face the same way)."""
    from deepscan.evaluate.perturb import apply_perturbation

    return lambda crop, index: apply_perturbation(crop, "h264", crf, index)


def h264_encoded(crops: np.ndarray, crf: int) -> np.ndarray:
    """Each crop through :func:`h264_encoder`."""
    encode = h264_encoder(crf)
    return np.stack([encode(crop, index) for index, crop in enumerate(crops)])


def score(detector, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    from deepscan.scan import face_logits

    return np.concatenate([face_logits(detector, crops[start : start + batch]) for start in range(0, len(crops), batch)])


def as_if_face_px(crops: np.ndarray, face_px: int, margin: float) -> np.ndarray:
    """The crops as a scan would see a face ``face_px`` wide: the crop side is ``margin`` x the face box."""
    from PIL import Image

    size = crops.shape[1]
    side = max(4, round(face_px * margin))
    out = [
        np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BOX).resize((size, size), Image.Resampling.BILINEAR))
        for crop in crops
    ]
    return np.stack(out)


def blurred(crops: np.ndarray, sigma: float) -> np.ndarray:
    from deepscan.evaluate.perturb import gaussian_blur

    return np.stack([gaussian_blur(crop, sigma, None) for crop in crops])


def _holds_up(auc: float | None, fpr: float, clean_auc: float) -> bool:
    return auc is not None and auc >= clean_auc - AUC_DROP and fpr <= MAX_FPR


def last_reliable(rows: list[dict], clean_auc: float, key: str, none_reliable: float) -> float:
    """``rows`` ordered from the mildest degradation to the worst: ``key`` of the last row before the first one
    that does not hold up (a range has no holes: a worse face is never trusted past a failing one)."""
    bound = none_reliable
    for row in rows:
        if not _holds_up(row["auc"], row["fpr"], clean_auc):
            break
        bound = row[key]
    return float(bound)


def reliable_range(detector, calibration, crops: np.ndarray, labels: np.ndarray, margin: float) -> dict:
    from sklearn.metrics import roc_auc_score

    from deepscan.reliability import face_sharpness

    def measure(images: np.ndarray) -> dict:
        probabilities = calibration.probability(score(detector, images))
        reals = probabilities[labels == 0]
        return {
            "auc": round(float(roc_auc_score(labels, probabilities)), 4),
            "fpr": round(float((reals >= calibration.threshold).mean()), 4),
            "median_sharpness": round(float(np.median([face_sharpness(image) for image in images])), 2),
        }

    clean = measure(crops)
    by_size = [{"face_px": size, **measure(as_if_face_px(crops, size, margin))} for size in FACE_SIZES]
    by_blur = [{"blur_sigma": sigma, **measure(blurred(crops, sigma))} for sigma in BLUR_SIGMAS]
    min_face_px = last_reliable(sorted(by_size, key=lambda row: -row["face_px"]), clean["auc"], "face_px", FACE_SIZES[-1] * 2)
    min_sharpness = last_reliable(sorted(by_blur, key=lambda row: row["blur_sigma"]), clean["auc"], "median_sharpness", clean["median_sharpness"])
    return {
        "min_face_px": min_face_px,
        "min_sharpness": min_sharpness,
        "text": (
            f"Measured on the validation faces degraded as a scan meets them: a face counts as reliably judged "
            f"while AUC stays within {AUC_DROP} of the clean {clean['auc']:.3f} and at most {MAX_FPR:.0%} of real "
            f"faces are called fake. Below {min_face_px:g} px (face box in the frame) or a sharpness of "
            f"{min_sharpness:g} (variance of the Laplacian at the input size) that no longer holds."
        ),
        "clean": clean,
        "by_face_size": by_size,
        "by_blur": by_blur,
    }


def update_checksums(folder: Path) -> None:
    names = sorted(path.name for path in folder.iterdir() if path.suffix in (".safetensors", ".json", ".md") and path.name != "README.md")
    lines = [f"{sha256_file(folder / name)}  {name}" for name in names]
    atomic_write(folder / "SHA256SUMS", "\n".join(lines) + "\n")


def calibrate(card: dict, weights: Path, recipe_path: Path) -> None:
    """Fit ``card``'s calibration, threshold and reliable range for ``weights`` on the validation faces of
    ``recipe_path`` (at the card's input size, framed with its face margin; the threshold's false-alarm budget
    holds on each validation source's real faces, and on all of them re-encoded with H.264 at each CRF of
    ``H264_CRFS``)."""
    from deepscan.calibration import Calibration, fit_calibration
    from deepscan.model_card import CalibrationSection
    from deepscan.train.recipe import load_recipe
    from deepscan.weights import ResolvedWeights, build_detector

    # Built from the file alone: a card left beside it by an earlier shipping describes other weights.
    resolved = ResolvedWeights(weights, "file", sha256_file(weights))
    detector, _ = build_detector(card["detector"]["name"], resolved=resolved)
    detector.eval()
    faces = validation_faces(recipe_path, card["detector"]["input_size"])
    logits = score(detector, faces.crops)
    reals = faces.crops[faces.labels == 0]
    degraded = {f"h264@{crf}": score(detector, h264_encoded(reals, crf)) for crf in H264_CRFS}
    card["calibration"] = fit_calibration(logits, faces.labels, fitted_on=faces.described, sources=faces.sources,
                                          degraded_reals=degraded)
    calibration = Calibration.from_card(CalibrationSection.model_validate(card["calibration"]))
    subset = np.sort(np.random.default_rng(0).permutation(len(faces.labels))[:RELIABILITY_FACES])
    margin = load_recipe(recipe_path).data.face.margin
    card["reliability"] = reliable_range(detector, calibration, faces.crops[subset], faces.labels[subset], margin)


def recalibrate(name: str, into: Path) -> Path:
    """Refit a shipped card's calibration, threshold and reliable range by the current rules, on the faces it was
    calibrated on, from its shipped weights (unchanged); its metrics depend on the threshold and are dropped until
    ``evaluate`` runs again."""
    from datetime import date

    card_path = into / f"{name}.card.json"
    card = json.loads(card_path.read_text())
    shipped_from = card["shipped_from"]
    recipe_path = Path(shipped_from.get("calibrated_on") or shipped_from["recipe"])
    calibrate(card, into / card["weights"]["file"], recipe_path)
    shipped_from["recalibrated"] = {"on": date.today().isoformat(), "recipe": str(recipe_path),
                                    "threshold_rule": card["calibration"]["threshold_rule"]}
    card["metrics"] = {}
    card.pop("h264_false_alarms", None)
    _write_card(card_path, card)
    print(f"{name}'s threshold changed: measure it again (shipping evaluate {name}; shipping h264 {name}) and "
          "update the known failures that quote the old figures (shipping failures)")
    if (into / "ensemble.card.json").is_file():
        print(f"{name}'s calibration changed: re-make the ensemble card (shipping ensemble), then evaluate both")
    return card_path


def ship(run: Path, recipe_path: Path, into: Path, calibrate_on: Path | None = None) -> Path:
    """``calibrate_on``: another recipe whose validation faces (at this detector's input size) fit the calibration,
    threshold and reliable range, where the training recipe validated on a subset of them (a GPU run's face-crop
    bundle holds a share of the validation faces, re-encoded as JPEG), so that every card fits them on the same faces."""
    from deepscan.train.protocol import describe
    from deepscan.train.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    name = recipe.detector.name
    card = json.loads((run / f"{name}.card.json").read_text())
    weights = into / f"{name}.safetensors"
    to_fp16_safetensors(run / f"{name}.safetensors", weights)
    calibrate(card, weights, calibrate_on or recipe_path)
    card["weights"] = {"file": weights.name, "sha256": sha256_file(weights), "format": "safetensors", "dtype": "float16"}
    card["protocol"] = describe()
    card["shipped_from"] = {"run": run.name, "recipe": str(recipe_path), "selected_epoch": card["validation"]["epoch"]}
    if calibrate_on is not None:
        card["shipped_from"]["calibrated_on"] = str(calibrate_on)
    card.setdefault("metrics", {})
    card_path = into / f"{name}.card.json"
    _write_card(card_path, card)
    return card_path


def ship_ensemble(into: Path, target_fpr: float = 0.05) -> Path:
    """``ensemble.card.json``: the shipped detectors as members and the threshold on their mean calibrated P(fake),
    chosen on validation faces by the members' own rule (each member scores its own resize of the same crop, and
    encodes that resize for the H.264 copies of the real faces)."""
    from deepscan.calibration import choose_threshold_with_degraded, false_positive_rates_with_degraded, threshold_rule

    cards = {path.name.removesuffix(".card.json"): json.loads(path.read_text()) for path in sorted(into.glob("*.card.json"))}
    members = sorted(name for name, card in cards.items() if card.get("schema") == "deepscan.model-card")
    if not members:
        raise SystemExit(f"{into}: no shipped detector to form an ensemble from")
    first = cards[members[0]]["shipped_from"]
    crops, labels, described, sources = validation_faces(Path(first.get("calibrated_on") or first["recipe"]),
                                                         max(cards[name]["detector"]["input_size"] for name in members))
    probability = _members_probability(into, {name: cards[name] for name in members})
    mean = probability(crops)
    degraded = {f"h264@{crf}": probability(crops[labels == 0], h264_encoder(crf)) for crf in H264_CRFS}
    threshold, val_fpr, val_tpr = choose_threshold_with_degraded(mean, labels, target_fpr, sources, degraded)
    rule = threshold_rule(int((labels == 0).sum()), target_fpr, len(set(sources[labels == 0].tolist())),
                          list(degraded))
    card = {
        "schema": "deepscan.ensemble-card",
        "members": members,
        "calibration": {
            "threshold": threshold,
            "threshold_rule": rule.replace("calibrated", "mean calibrated"),
            "fitted_on": described,
            "val_fpr": val_fpr,
            "val_fpr_by_source": false_positive_rates_with_degraded(mean, labels, sources, threshold, degraded),
            "val_tpr": val_tpr,
        },
    }
    path = into / "ensemble.card.json"
    _write_card(path, card)
    return path


def _members_probability(into: Path, cards: dict[str, dict]):
    """A function ``(crops, degrade=None) -> P(fake)``: the mean calibrated P(fake) of the shipped detectors
    ``cards`` (name -> card; one member: its own P(fake)), each scoring its own resize of the uint8 crops, degraded
    after resizing by ``degrade(crop, index)`` if given, as ``deepscan evaluate --perturb`` degrades each member's
    face at that member's input size."""
    from PIL import Image

    from deepscan.calibration import Calibration
    from deepscan.model_card import CalibrationSection
    from deepscan.weights import ResolvedWeights, build_detector

    members = []
    for name, card in cards.items():
        weights = into / f"{name}.safetensors"
        if not weights.is_file():
            raise SystemExit(f"{weights}: no such weights file (a card without its weights)")
        detector, _ = build_detector(name, resolved=ResolvedWeights(weights, "file", sha256_file(weights)))
        calibration = Calibration.from_card(CalibrationSection.model_validate(card["calibration"]))
        members.append((detector.eval(), calibration, card["detector"]["input_size"]))

    def probability(crops: np.ndarray, degrade=None) -> np.ndarray:
        found = []
        for detector, calibration, size in members:
            resized = [crop if crop.shape[0] == size else
                       np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BOX)) for crop in crops]
            if degrade is not None:
                resized = [degrade(crop, index) for index, crop in enumerate(resized)]
            found.append(calibration.probability(score(detector, np.stack(resized))))
        return np.mean(found, axis=0)

    return probability


def h264_false_alarms(name: str, into: Path, crfs: tuple[int, ...] = H264_CRFS) -> Path:
    """Record in the card of shipped detector ``name`` (or ``ensemble``) the share of its validation real faces it
    calls fake at its threshold, clean and re-encoded with H.264 at each of ``crfs``, source by source. Each face is
    encoded alone at each detector's input size, as ``deepscan evaluate --perturb h264:CRF`` encodes it (the
    ensemble: each member's own resize, encoded). Validation faces only: the threshold's budget holds on these
    same faces at each CRF, all sources together (``calibrate``), so at a threshold fitted by that rule each row
    stays within it overall; the rows show how each source fares."""
    from deepscan.calibration import false_positive_rates_by_source
    from deepscan.ensemble import ENSEMBLE, ENSEMBLE_CARD

    card_path = into / (ENSEMBLE_CARD if name == ENSEMBLE else f"{name}.card.json")
    card = _read_card(card_path)
    members = {member: _read_card(into / f"{member}.card.json")
               for member in (card.get("members", []) if name == ENSEMBLE else [name])}
    if not members or any("shipped_from" not in member for member in members.values()):
        raise SystemExit(f"{card_path}: not a shipped card (no members, or a member card without shipped_from)")
    first = next(iter(members.values()))["shipped_from"]
    size = max(member["detector"]["input_size"] for member in members.values())
    faces = validation_faces(Path(first.get("calibrated_on") or first["recipe"]), size)
    reals, sources = faces.crops[faces.labels == 0], faces.sources[faces.labels == 0]
    probability, threshold = _members_probability(into, members), card["calibration"]["threshold"]

    rows = []
    for crf in (None, *crfs):
        p = probability(reals, None if crf is None else h264_encoder(crf))
        rows.append({"crf": crf, "false_alarms": round(float((p >= threshold).mean()), 4),
                     "by_source": {source: round(rate, 4) for source, rate in
                                   false_positive_rates_by_source(p, np.zeros(len(p)), sources, threshold).items()}})
    card["h264_false_alarms"] = {
        "command": f"python -m deepscan.train.shipping h264 {name}",
        "faces": f"the {len(reals)} real faces of the {faces.described}",
        "encoding": "each face crop encoded alone as a one-frame H.264 video (libx264, preset medium) at each CRF",
        "threshold": threshold,
        "rows": rows,
    }
    _write_card(card_path, card)
    return card_path


def validation_auc(name: str, weights: Path, input_size: int, recipe: Path = COMPARISON_RECIPE) -> dict:
    """Frame AUC of detector ``name`` with ``weights`` (a file or a shard index) on the validation faces of
    ``recipe`` at ``input_size``: the figure that decides between builds, never a held-out one."""
    from sklearn.metrics import roc_auc_score

    from deepscan.weights import ResolvedWeights, build_detector

    if not weights.is_file():
        raise SystemExit(f"{weights}: no such weights file")
    faces = validation_faces(recipe, input_size)
    detector, _ = build_detector(name, resolved=ResolvedWeights(weights, "file", sha256_file(weights)))
    logits = score(detector.eval(), faces.crops)
    return {"auc": round(float(roc_auc_score(faces.labels, logits)), 4), "faces": faces.described,
            "recipe": str(recipe), "input_size": input_size}


def validate_shipped(name: str, into: Path, recipe: Path = COMPARISON_RECIPE) -> Path:
    """:func:`validation_auc` of a shipped detector, recorded in its card with the command that made it."""
    card_path = into / f"{name}.card.json"
    card = _read_card(card_path)
    measured = validation_auc(name, into / f"{name}.safetensors", card["detector"]["input_size"], recipe)
    command = f"python -m deepscan.train.shipping validate {name}"
    card["validation_auc"] = {**measured, "command": command if recipe == COMPARISON_RECIPE else
                              f"{command} --recipe {recipe}"}
    _write_card(card_path, card)
    return card_path


def _write_card(card_path: Path, card: dict) -> None:
    """The card, its Markdown half and the folder's SHA256SUMS together: a scan refuses a card whose sum is stale."""
    atomic_write(card_path, json.dumps(card, indent=2, default=str, allow_nan=False) + "\n")
    write_markdown(card_path)
    update_checksums(card_path.parent)


def _read_card(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path}: no such card")
    return json.loads(path.read_text())


# The model card's figures: one `deepscan evaluate` run each, on the protocol's held-out data
# (deepscan/train/protocol.py). Key -> (split CSVs, extra options).
EVALUATION_PLAN: dict[str, tuple[list[str], list[str]]] = {
    "in_domain_dfdc_test": (["dfdc_faces.csv"], []),
    "cross_source_deepfacelive": (["deepfacelive_demos.csv"], []),
    "cross_source_photoshop_ciplab": (["ciplab_real_fake_160.csv"], []),
    "cross_source_stylegan2": (["hardfakevsreal_stylegan2.csv"], []),
    "robustness_dfdc_test": (["dfdc_faces.csv"], ["--perturb", "jpeg:75", "--perturb", "h264:28"]),
    "robustness_deepfacelive": (["deepfacelive_demos.csv"], ["--perturb", "jpeg:75", "--perturb", "h264:28"]),
    "false_alarms_fairface_test": (["fairface_subset.csv"], []),
    "false_alarms_celeba_photos_and_videos": (["deepfacelive_samples.csv"], []),
    "false_alarms_talking_heads": (["guide_videos.csv"], []),
    "false_alarms_carphone": (["guide_carphone.csv"], []),
}


def add_metrics(card_path: Path, key: str, results: Path, command: list[str]) -> None:
    """Copy one ``deepscan evaluate`` run's results.json into the card under ``metrics[key]``, with its command."""
    card = json.loads(card_path.read_text())
    card.setdefault("metrics", {})[key] = {"command": shlex.join(command), "results": json.loads(results.read_text())}
    _write_card(card_path, card)


def evaluate_shipped(name: str, into: Path, splits: Path, out: Path, only: list[str] | None = None) -> None:
    """Run the evaluation plan for shipped detector ``name`` and record every result in its card.

    ``name`` ``ensemble``: the plan for the ensemble as a scan forms it (``-m ensemble``: the members and threshold
    of ``ensemble.card.json``, each member's own shipped weights), recorded under the ensemble card's
    ``metrics``. The ensemble takes no ``--weights``, so ``into`` must be the shipped weights folder deepscan
    loads."""
    import subprocess
    import sys

    from deepscan.ensemble import ENSEMBLE, ENSEMBLE_CARD

    ensemble = name == ENSEMBLE
    card_path = into / (ENSEMBLE_CARD if ensemble else f"{name}.card.json")
    if ensemble:
        from deepscan.weights import shipped_weights_dir

        if into.resolve() != shipped_weights_dir().resolve():
            raise SystemExit(f"{into}: the ensemble is evaluated from the shipped weights deepscan loads "
                             f"({shipped_weights_dir()}); pass that folder as --into")
        if not card_path.is_file():
            raise SystemExit(f"{card_path}: no ensemble card (python -m deepscan.train.shipping ensemble)")
    for key, (files, options) in EVALUATION_PLAN.items():
        if only and key not in only:
            continue
        data = [str(splits / file) for file in files]
        if not all(Path(path).is_file() for path in data):
            print(f"skipping {key}: {', '.join(data)} missing (python -m deepscan.train.protocol)")
            continue
        chosen = ["-m", name] if ensemble else ["-m", name, "--weights", str(into / f"{name}.safetensors")]
        command = ["deepscan", "evaluate", *data, *chosen, "--out", str(out / name / key), *options]
        print("$", shlex.join(command), flush=True)
        subprocess.run([sys.executable, "-m", *command], check=True)  # the same deepscan as this process
        add_metrics(card_path, key, out / name / key / "results.json", command)


def _groups_by_path(splits: Path) -> dict[str, str]:
    """Each media path of the protocol's split CSVs with its group (a video, an original and its fakes)."""
    import csv

    groups = {}
    for table in sorted(splits.glob("*.csv")):
        with table.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("path") and row.get("group"):
                    groups[row["path"]] = f"{table.stem}:{row['group']}"
    return groups


def _scores_by_condition(path: Path) -> dict[str, dict[tuple[str, str], tuple[int, float, str]]]:
    """An evaluation's scores.csv: per condition ("clean", "h264@28"), each face's (label, score, group); the group
    is empty in a scores.csv written before it had the column."""
    import csv

    conditions: dict[str, dict] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            condition = "clean" if row["condition"] == "clean" else f"{row['perturbation']}@{row['strength']}"
            face = (row["media"], row["frame"])  # the file and the frame in it: frame files of one clip stay apart
            conditions.setdefault(condition, {})[face] = (int(row["label"]), float(row["score"]), row.get("group", ""))
    return conditions


def compare(first: str, second: str, out: Path, splits: Path, resamples: int = 1000) -> list[str]:
    """AUC of ``first`` minus ``second`` on each evaluation of the plan that both ran (``evaluate``'s outputs under
    ``out``), on the faces both scored, with a paired bootstrap interval that resamples whole groups (the frames of one
    video together): scores.csv's group column, or for an older scores.csv the split CSVs' group."""
    from deepscan.evaluate.metrics import has_both_classes, paired_auc_difference

    groups = _groups_by_path(splits)
    lines = []
    for key, (_files, options) in EVALUATION_PLAN.items():
        paths = [out / name / key / "scores.csv" for name in (first, second)]
        if not all(path.is_file() for path in paths):
            continue
        first_scores, second_scores = (_scores_by_condition(path) for path in paths)
        for condition, a in first_scores.items():
            if condition == "clean" and options:  # a robustness run's clean half repeats its clean evaluation
                continue
            b = second_scores.get(condition, {})
            faces = sorted(set(a) & set(b))
            if not faces:  # e.g. one scores.csv older than the other's way of naming a frame's file
                lines.append(f"{key} {condition}: no face scored by both; re-run the older evaluation")
                continue
            labels = [a[face][0] for face in faces]
            if not has_both_classes(labels):
                continue
            units = [a[face][2] or groups.get(face[0], face[0]) for face in faces]
            difference = paired_auc_difference(labels, [a[f][1] for f in faces], [b[f][1] for f in faces], units,
                                               resamples=resamples)
            if difference is None:
                continue
            value, low, high = difference
            lines.append(f"{key} {condition}: AUC {first} - {second} = {value:+.3f} [{low:+.3f}, {high:+.3f}] "
                         f"({len(faces)} faces, {len(set(units))} groups resampled whole)")
    return lines


def write_markdown(card_path: Path) -> None:
    """``<name>.md`` beside ``<name>.card.json``; the ensemble's compares it with its members' cards. The caller
    re-sums the folder (``_write_card`` does)."""
    card = json.loads(card_path.read_text())
    if card.get("schema") == "deepscan.ensemble-card":
        members = {name: json.loads(path.read_text()) for name in card["members"]
                   if (path := card_path.with_name(f"{name}.card.json")).is_file()}
        text = ensemble_markdown(card, members)
    else:
        text = card_markdown(card)
    atomic_write(card_path.with_name(card_path.name.replace(".card.json", ".md")), text)


# The README table's columns, in the issues' order, under the names the README gives them.
README_COLUMNS = {"faclue": "FAClue", "sficonv": "SFIConv", "pel": "PEL", "mclcr": "MC-LCR", "ralf": "RALF",
                  "ensemble": "ensemble"}


def shipped_table(into: Path) -> str:
    """The README's table of held-out figures ("What the shipped detectors measured"), from every card in ``into``."""
    cards = {name: json.loads(path.read_text()) for name in README_COLUMNS
             if (path := into / f"{name}.card.json").is_file()}
    return readme_table(cards, README_COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ship_parser = commands.add_parser("ship", help="fp16 weights, calibration, reliable range and card from a run")
    ship_parser.add_argument("run", type=Path, help="finished training run folder (holds <name>.safetensors and its card)")
    ship_parser.add_argument("recipe", type=Path, help="the recipe it was trained with (its validation split calibrates)")
    ship_parser.add_argument("--into", type=Path, default=Path("weights"), help="folder of shipped weights")
    ship_parser.add_argument("--calibrate-on", type=Path, help="a recipe whose validation faces calibrate instead")
    evaluate_parser = commands.add_parser("evaluate", help="run the evaluation plan and record it in the card")
    evaluate_parser.add_argument("name", help="shipped detector, or 'ensemble' (recorded in ensemble.card.json)")
    evaluate_parser.add_argument("--into", type=Path, default=Path("weights"), help="folder of shipped weights")
    evaluate_parser.add_argument("--splits", type=Path, default=Path("local/splits"), help="the protocol's split CSVs")
    evaluate_parser.add_argument("--out", type=Path, default=Path("local/eval"), help="evaluation outputs")
    evaluate_parser.add_argument("--only", action="append", help="run only this plan entry (repeatable)")
    ensemble_parser = commands.add_parser("ensemble", help="ensemble card: members and threshold chosen on validation")
    ensemble_parser.add_argument("--into", type=Path, default=Path("weights"), help="folder of shipped weights")
    failures_parser = commands.add_parser("failures", help="record what the detector fails on (read off the results)")
    failures_parser.add_argument("card", type=Path)
    failures_parser.add_argument("text", nargs="+", help="one failure mode each")
    compare_parser = commands.add_parser("compare", help="paired AUC differences of two detectors (95 %% bootstrap)")
    compare_parser.add_argument("first")
    compare_parser.add_argument("second")
    compare_parser.add_argument("--splits", type=Path, default=Path("local/splits"), help="the protocol's split CSVs")
    compare_parser.add_argument("--out", type=Path, default=Path("local/eval"), help="evaluation outputs")
    recalibrate_parser = commands.add_parser(
        "recalibrate", help="refit a shipped card's calibration, threshold and reliable range (weights unchanged)")
    recalibrate_parser.add_argument("name", help="shipped detector")
    recalibrate_parser.add_argument("--into", type=Path, default=Path("weights"), help="folder of shipped weights")
    h264_parser = commands.add_parser(
        "h264", help="record the validation real faces called fake after H.264 re-encoding, CRF by CRF")
    h264_parser.add_argument("name", help="shipped detector, or 'ensemble'")
    h264_parser.add_argument("--into", type=Path, default=Path("weights"), help="folder of shipped weights")
    validate_parser = commands.add_parser(
        "validate", help="AUC on the validation split every build is compared on (recorded in a shipped card)")
    validate_parser.add_argument("name", help="detector")
    validate_parser.add_argument("--weights", type=Path,
                                 help="a build that is not shipped (a file or shard index): print its AUC only")
    validate_parser.add_argument("--input-size", type=int, help="with --weights: its input size (default: the config's)")
    validate_parser.add_argument("--recipe", type=Path, default=COMPARISON_RECIPE, help="whose validation faces")
    validate_parser.add_argument("--into", type=Path, default=Path("weights"), help="folder of shipped weights")
    table_parser = commands.add_parser("table", help="the README's table of held-out figures, from the cards")
    table_parser.add_argument("--into", type=Path, default=Path("weights"), help="folder of shipped weights")
    markdown_parser = commands.add_parser("markdown", help="write <name>.md from <name>.card.json")
    markdown_parser.add_argument("card", type=Path)
    args = parser.parse_args()
    if args.command == "ship":
        print(ship(args.run, args.recipe, args.into, args.calibrate_on))
    elif args.command == "failures":
        card = json.loads(args.card.read_text())
        card["known_failures"] = list(args.text)
        _write_card(args.card, card)
    elif args.command == "ensemble":
        print(ship_ensemble(args.into))
    elif args.command == "recalibrate":
        print(recalibrate(args.name, args.into))
    elif args.command == "h264":
        print(h264_false_alarms(args.name, args.into))
    elif args.command == "validate" and args.weights is not None:
        from deepscan.detectors import get_config

        size = args.input_size or get_config(args.name).input_size
        print(json.dumps(validation_auc(args.name, args.weights, size, args.recipe), indent=2))
    elif args.command == "validate":
        print(validate_shipped(args.name, args.into, args.recipe))
    elif args.command == "evaluate":
        evaluate_shipped(args.name, args.into, args.splits, args.out, args.only)
    elif args.command == "table":
        print(shipped_table(args.into))
    elif args.command == "compare":
        print("\n".join(compare(args.first, args.second, args.out, args.splits))
              or f"no evaluation that both {args.first} and {args.second} ran under {args.out}")
    else:
        write_markdown(args.card)
        update_checksums(args.card.parent)


if __name__ == "__main__":
    main()
