"""The work behind `deepscan evaluate`, kept out of the thin command in ``deepscan/cli/evaluate.py``: options in, tables printed, files written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from deepscan.evaluate.samples import EvaluationError


@dataclass
class EvaluateOptions:
    data: list[Path]
    methods: list[str]
    weights: list[str] = field(default_factory=list)  # one per method, in order; "shipped" for the default
    val: list[Path] = field(default_factory=list)
    perturb: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    frames_per_video: int = 8
    batch_size: int = 16
    device: str = "auto"
    bootstrap: int = 1000
    seed: int = 0
    cache_dir: Path | None = None  # faces and scores; default: $DEEPSCAN_CACHE or ~/.cache/deepscan
    use_score_cache: bool = True
    compression: str = "c23"
    without: list[str] = field(default_factory=list)  # ensemble members the user leaves out


def _conditions(specs: list[str]) -> list[tuple[str, float]]:
    from deepscan.evaluate.perturb import parse_perturb_spec

    conditions: list[tuple[str, float]] = []
    for spec in specs:
        for condition in parse_perturb_spec(spec):
            if condition not in conditions:
                conditions.append(condition)
    return conditions


ENSEMBLE_WEIGHTS_ERROR = ("--weights picks one detector's weights; the ensemble uses each member's own (see "
                          "`deepscan models`): give --weights shipped in its place")


def _detectors(options: EvaluateOptions):
    """(method, config, resolved weights) per method, and for the ensemble (method, None, its plan: members and
    threshold, as the scan forms it); every error found before any heavy work starts."""
    from deepscan.detectors import get_config
    from deepscan.ensemble import ENSEMBLE, plan_ensemble
    from deepscan.weights import resolve_detector_weights

    if len(set(options.methods)) != len(options.methods):
        raise EvaluationError("each --method may be given once")
    if options.weights and len(options.weights) != len(options.methods):
        raise EvaluationError(
            f"give one --weights per --method, in the same order (got {len(options.weights)} for "
            f"{len(options.methods)}); use --weights shipped for a method's default weights"
        )
    if options.without and ENSEMBLE not in options.methods:
        raise EvaluationError("--without leaves members out of the ensemble: it needs --method ensemble")
    specs = options.weights or ["shipped"] * len(options.methods)
    found = []
    for method, spec in zip(options.methods, specs):
        if method == ENSEMBLE:
            if spec != "shipped":
                raise EvaluationError(ENSEMBLE_WEIGHTS_ERROR)
            found.append((method, None, plan_ensemble(options.without)))
            continue
        config = get_config(method)
        found.append((method, config, resolve_detector_weights(config, None if spec == "shipped" else spec)))
    return found


def _extraction_input_size() -> int:
    from deepscan.detectors import get_config, list_detectors

    # One face cache for every method (the largest input any detector takes), so that a sample, and its
    # cached scores, are the same whichever methods are evaluated together.
    return max(get_config(name).input_size for name in list_detectors())


def _architecture(resolved) -> str | dict | None:
    """The architecture settings ``build_detector`` takes (the weights' metadata, else the model card's), for the
    logit cache's key: a card that changes them must not meet logits of the old build."""
    from deepscan.weights import weights_metadata

    metadata = weights_metadata(resolved)
    if "detector_kwargs" in metadata:
        return metadata["detector_kwargs"]
    return resolved.card.detector.architecture_kwargs if resolved.card else None


def _ensemble_members(plan, device: str):
    """The plan's members built as the scan builds them (``Judge.ensemble``), each on ``device``, with its
    calibration and logit cache key; the ensemble's custody for results.json; and its threshold."""
    from deepscan.calibration import CalibrationError
    from deepscan.ensemble import ENSEMBLE_CARD, ensemble_card
    from deepscan.evaluate.runner import EnsembleMember, EnsembleThreshold
    from deepscan.evaluate.scores import logit_cache_key
    from deepscan.runtime import sha256_file
    from deepscan.scan import Judge
    from deepscan.weights import WeightsError, shipped_weights_dir

    try:
        judge = Judge.ensemble(plan)
    except (WeightsError, CalibrationError) as error:
        raise EvaluationError(f"ensemble: {error}") from None
    members = []
    for member in judge.members:
        resolved = member.weights
        members.append(EnsembleMember(
            name=member.name,
            detector=member.detector.to(device).eval(),
            calibration=member.calibration,
            cache_key=logit_cache_key(resolved.sha256, member.input_size, _architecture(resolved)),
            weights={"method": member.name, "input_size": member.input_size, **resolved.custody(),
                     "model_card": resolved.card_custody()},
        ))
    custody, rule = None, "0.5 (no ensemble card)"
    if plan.threshold_source == "ensemble card":
        path = shipped_weights_dir() / ENSEMBLE_CARD
        rule = ensemble_card().calibration.threshold_rule or "as stated in the ensemble card"
        custody = {"path": str(path), "sha256": sha256_file(path)}
    weights = {
        "source": f"ensemble of {len(members)}", "path": None, "sha256": None, "trained": True,
        "model_card": custody,
        "members": [member.weights for member in members],
        "left_out": list(plan.skipped),
    }
    return members, weights, EnsembleThreshold(plan.threshold, plan.threshold_source, rule)


def one_class_notes(summaries: list[dict]) -> list[str]:
    """What to say when the test data holds reals only or fakes only (measuring false alarms on authentic
    footage, or misses on forgeries): which metrics are left out, and which one answers the question."""
    if not summaries:
        return []
    frame = summaries[0]["conditions"]["clean"]["frame"]
    video = summaries[0]["conditions"]["clean"]["video_median"]
    if frame["n_fake"] == 0:
        present, rate = "real", "fpr_at_card_threshold: the share of real faces / files called fake (false alarms)"
    elif frame["n_real"] == 0:
        present, rate = "fake", "tpr_at_card_threshold: the share of fake faces / files caught"
    else:
        return []
    return [
        f"the test data holds {present} samples only ({frame['n']} faces in {video['n']} videos/images): AUC, AP, "
        f"EER, TPR at FPR and balanced accuracy need real and fake samples and are left out (null); the rate that "
        f"is measured is {rate}, at each model card's threshold"
    ]


def run_evaluate(options: EvaluateOptions, out: Console, err: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deepscan.ensemble import ENSEMBLE
    from deepscan.evaluate.report import tables, write_outputs
    from deepscan.evaluate.runner import evaluate_ensemble, evaluate_method
    from deepscan.evaluate.samples import collect_samples
    from deepscan.evaluate.scores import ScoreCache, logit_cache_key
    from deepscan.runtime import face_cache_dir, score_cache_path, select_device

    conditions = _conditions(options.perturb)
    detectors = _detectors(options)
    for path in [*options.data, *options.val]:
        if not path.exists():
            raise EvaluationError(f"{path}: no such file or folder")
    device = select_device(options.device)

    def progress_bar() -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)

    face_dir = face_cache_dir(options.cache_dir)
    score_path = score_cache_path(options.cache_dir)
    input_size = _extraction_input_size()
    with progress_bar() as progress:
        parts = {}
        for part, data in (("test", options.data), ("val", options.val)):
            if not data:
                continue
            task = progress.add_task(f"finding faces ({part})", total=None)
            parts[part] = collect_samples(
                data, part, input_size=input_size, frames_per_video=options.frames_per_video, cache_dir=face_dir,
                compression=options.compression,
                on_total=lambda total, task=task: progress.update(task, total=total),
                on_item=lambda task=task: progress.advance(task),
            )
            progress.remove_task(task)
    test = parts["test"]
    for part, found in parts.items():
        if found.unreadable:
            err.print(f"[yellow]warning:[/] {found.unreadable} unreadable file(s) in the {part} data were skipped")
        if found.faceless:
            err.print(f"[yellow]warning:[/] no face in {len(found.faceless)} of {found.media_files} {part} file(s): "
                      "they get no score and are left out of every metric (listed in results.json)")
    if not test.samples:
        raise EvaluationError("no face found in the test data: nothing to evaluate")
    val_samples = parts["val"].samples if "val" in parts else None
    if "val" in parts and not val_samples:
        raise EvaluationError("no face found in the --val data: no threshold can be chosen")

    # Untrained runs are never cached. Without the file, logits are still kept for this run: a detector evaluated
    # alone and as an ensemble member scores each face once.
    cache = ScoreCache(score_path if options.use_score_cache else None)
    runs = []
    try:
        for method, config, resolved in detectors:
            from deepscan.weights import build_detector, untrained_warning

            if method == ENSEMBLE:
                plan = resolved
                for line in plan.skipped:
                    err.print(f"[yellow]ensemble: left out[/] {escape(line)}", highlight=False)
                members, weights, threshold = _ensemble_members(plan, device)
                err.print(f"note: ensemble of {', '.join(m.name for m in members)}: scores are the mean of the "
                          f"members' calibrated P(fake), each scoring its own input size, as a scan's; the "
                          f"threshold {plan.threshold:.4g} ({plan.threshold_source}) is the scan's verdict "
                          "threshold", highlight=False)
                total = sum(len(val_samples or []) + len(test.samples) * (1 + len(conditions)) for _ in members)
                with progress_bar() as progress:
                    task = progress.add_task("scoring the ensemble's members", total=total)
                    runs.append(evaluate_ensemble(
                        members, threshold, weights,
                        test.samples, conditions, cache, method=method, val_samples=val_samples,
                        batch_size=options.batch_size, bootstrap=options.bootstrap, seed=options.seed,
                        on_batch=lambda count, task=task: progress.advance(task, count),
                    ))
                    progress.remove_task(task)
                continue

            detector, resolved = build_detector(method, resolved=resolved)
            calibration = resolved.calibration
            cache_key = logit_cache_key(resolved.sha256, detector.config.input_size, _architecture(resolved))
            if not resolved.trained:
                err.print(f"[bold magenta]warning:[/] {escape(untrained_warning(method, 'scores and metrics'))}",
                          highlight=False)
            detector = detector.to(device).eval()
            if calibration.calibrated:
                err.print(f"note: {method}: scores are P(fake) calibrated by its model card ({calibration.method}); "
                          f"the card's threshold {calibration.threshold:.4g} is the scan's verdict threshold")
            elif resolved.trained:
                err.print(f"note: {method}'s weights have no calibration in a model card: scores are sigmoid(logit) "
                          "and the scan's verdict threshold is 0.5")
            weights = {**resolved.custody(), "model_card": resolved.card_custody()}
            total = (len(val_samples or []) + len(test.samples) * (1 + len(conditions)))
            with progress_bar() as progress:
                task = progress.add_task(f"scoring with {method}", total=total)
                runs.append(evaluate_method(
                    detector, method, weights, test.samples, conditions, cache, calibration=calibration,
                    cache_key=cache_key, val_samples=val_samples,
                    batch_size=options.batch_size, bootstrap=options.bootstrap, seed=options.seed,
                    on_batch=lambda count, task=task: progress.advance(task, count),
                ))
                progress.remove_task(task)
    finally:
        cache.close()

    summaries = [run.to_dict() for run in runs]
    for table in tables(summaries):
        out.print(table)
    if val_samples is None:
        err.print("note: no --val data, so accuracy is at 0.5 only, besides the rates at each model card's threshold "
                  "(a threshold is never chosen on the test data)")
    notes = one_class_notes(summaries)
    for note in notes:
        err.print(f"note: {escape(note)}")
    if options.out_dir is not None:
        meta = {
            "data": [str(p) for p in options.data],
            "val": [str(p) for p in options.val],
            "levels": {"frame": "one score per face crop",
                       "video_mean": "mean of a video's frame scores",
                       "video_median": "median of all of a file's face scores (per file, without the reliable "
                                       "range: not the scan's per-track verdict)"},
            "frames_per_video": options.frames_per_video,
            "bootstrap_resamples": options.bootstrap,
            "seed": options.seed,
            "media_files": test.media_files,
            "faceless_media": test.faceless,
            "scores": "calibrated P(fake): each method's raw logit through its model card's calibration "
                      "(methods[].calibration; the ensemble's: the mean of its members' calibrated P(fake), at the "
                      "ensemble card's threshold); *_at_card_threshold metrics use that card's threshold, at frame "
                      "level (per face) and video_median level (per file, median of all its faces, without the "
                      "reliable range: not the scan's verdict rate, which is per track and counts only faces "
                      "inside the reliable range)",
            "notes": notes,
        }
        written = write_outputs(options.out_dir, runs, test.samples, meta)
        err.print(f"wrote {len(written)} files to {escape(str(options.out_dir))} (results.json, scores.csv, PNGs)")
    return 0
