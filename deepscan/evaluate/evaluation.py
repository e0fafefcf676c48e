"""An evaluation from request to report: faces found, every method scored, tables printed, files written.

:func:`run_evaluate` is what ``deepscan evaluate`` runs (the command in ``deepscan/cli/evaluate.py`` only builds
the :class:`~deepscan.evaluate.request.EvaluateRequest`), in small steps: the request checked and its weights
resolved (``request``), the test and validation faces collected (``samples``), each method or the ensemble
scored and measured (``runner``, through the logit cache of ``scores``), and the results tabled and written
(``report``). Progress and notes go to the ``err`` console, tables to ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from deepscan.evaluate.request import (
    EvaluateRequest,
    check_data_exists,
    extraction_input_size,
    perturb_conditions,
    resolve_methods,
)
from deepscan.evaluate.samples import EvaluationError, Sample, SampleSet
from deepscan.evaluate.scores import ScoreCache, logit_cache_key, weights_architecture

LEVELS_META = {"frame": "one score per face crop",
               "video_mean": "mean of a video's frame scores",
               "video_median": "median of all of a file's face scores (per file, without the reliable "
                               "range: not the scan's per-track verdict)"}
SCORES_META = ("calibrated P(fake): each method's raw logit through its model card's calibration "
               "(methods[].calibration; the ensemble's: the mean of its members' calibrated P(fake), at the "
               "ensemble card's threshold); *_at_card_threshold metrics use that card's threshold, at frame "
               "level (per face) and video_median level (per file, median of all its faces, without the "
               "reliable range: not the scan's verdict rate, which is per track and counts only faces "
               "inside the reliable range)")


@dataclass
class Scoring:
    """What scoring every method of one evaluation shares."""

    request: EvaluateRequest
    conditions: list[tuple[str, float]]
    test: SampleSet
    val_samples: list[Sample] | None
    cache: ScoreCache
    device: str
    err: Console

    def progress_bar(self) -> Progress:
        return progress_bar(self.err)

    def total(self) -> int:
        """Faces one detector scores: the validation faces, and the test faces under every condition."""
        return len(self.val_samples or []) + len(self.test.samples) * (1 + len(self.conditions))


def progress_bar(err: Console) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


# --- faces ---------------------------------------------------------------------------------------------------


def collect_parts(request: EvaluateRequest, err: Console) -> dict[str, SampleSet]:
    """The faces of the test data and (with ``--val``) of the validation data, extracted into the face cache."""
    from deepscan.evaluate.samples import collect_samples
    from deepscan.runtime import face_cache_dir

    face_dir = face_cache_dir(request.cache_dir)
    input_size = extraction_input_size()
    parts = {}
    with progress_bar(err) as progress:
        for part, data in (("test", request.data), ("val", request.val)):
            if not data:
                continue
            task = progress.add_task(f"finding faces ({part})", total=None)
            parts[part] = collect_samples(
                data, part, input_size=input_size, frames_per_video=request.frames_per_video, cache_dir=face_dir,
                compression=request.compression,
                on_total=lambda total, task=task: progress.update(task, total=total),
                on_item=lambda task=task: progress.advance(task),
            )
            progress.remove_task(task)
    return parts


def warn_about_parts(parts: dict[str, SampleSet], err: Console) -> None:
    for part, found in parts.items():
        if found.unreadable:
            err.print(f"[yellow]warning:[/] {found.unreadable} unreadable file(s) in the {part} data were skipped")
        if found.faceless:
            err.print(f"[yellow]warning:[/] no face in {len(found.faceless)} of {found.media_files} {part} file(s): "
                      "they get no score and are left out of every metric (listed in results.json)")


def samples_of(parts: dict[str, SampleSet]) -> tuple[SampleSet, list[Sample] | None]:
    """The test faces, and the validation faces (None without ``--val``); an error when either has none."""
    test = parts["test"]
    if not test.samples:
        raise EvaluationError("no face found in the test data: nothing to evaluate")
    val_samples = parts["val"].samples if "val" in parts else None
    if "val" in parts and not val_samples:
        raise EvaluationError("no face found in the --val data: no threshold can be chosen")
    return test, val_samples


# --- the ensemble --------------------------------------------------------------------------------------------


def _ensemble_custody(plan, members: list) -> dict:
    """The ensemble's weights for results.json: its card (when its threshold is the card's), its members' own."""
    from deepscan.ensemble import ENSEMBLE_CARD
    from deepscan.runtime import sha256_file
    from deepscan.weights import shipped_weights_dir

    custody = None
    if plan.threshold_source == "ensemble card":
        path = shipped_weights_dir() / ENSEMBLE_CARD
        custody = {"path": str(path), "sha256": sha256_file(path)}
    return {
        "source": f"ensemble of {len(members)}", "path": None, "sha256": None, "trained": True,
        "model_card": custody,
        "members": [member.weights for member in members],
        "left_out": list(plan.skipped),
    }


def ensemble_members(plan, device: str):
    """The plan's members built as the scan builds them (``Judge.ensemble``), each on ``device``, with its
    calibration and logit cache key; the ensemble's custody for results.json; and its threshold."""
    from deepscan.calibration import CalibrationError
    from deepscan.ensemble import ensemble_card
    from deepscan.evaluate.runner import EnsembleMember, EnsembleThreshold
    from deepscan.scan import Judge
    from deepscan.weights import WeightsError

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
            cache_key=logit_cache_key(resolved.sha256, member.input_size, weights_architecture(resolved)),
            weights={"method": member.name, "input_size": member.input_size, **resolved.custody(),
                     "model_card": resolved.card_custody()},
        ))
    weights = _ensemble_custody(plan, members)
    rule = "0.5 (no ensemble card)"
    if plan.threshold_source == "ensemble card":
        rule = ensemble_card().calibration.threshold_rule or "as stated in the ensemble card"
    return members, weights, EnsembleThreshold(plan.threshold, plan.threshold_source, rule)


def score_ensemble(scoring: Scoring, method: str, plan):
    from deepscan.evaluate.runner import evaluate_ensemble

    err = scoring.err
    for line in plan.skipped:
        err.print(f"[yellow]ensemble: left out[/] {escape(line)}", highlight=False)
    members, weights, threshold = ensemble_members(plan, scoring.device)
    err.print(f"note: ensemble of {', '.join(m.name for m in members)}: scores are the mean of the "
              f"members' calibrated P(fake), each scoring its own input size, as a scan's; the "
              f"threshold {plan.threshold:.4g} ({plan.threshold_source}) is the scan's verdict "
              "threshold", highlight=False)
    request = scoring.request
    with scoring.progress_bar() as progress:
        task = progress.add_task("scoring the ensemble's members", total=scoring.total() * len(members))
        run = evaluate_ensemble(
            members, threshold, weights,
            scoring.test.samples, scoring.conditions, scoring.cache, method=method, val_samples=scoring.val_samples,
            batch_size=request.batch_size, bootstrap=request.bootstrap, seed=request.seed,
            on_batch=lambda count, task=task: progress.advance(task, count),
        )
        progress.remove_task(task)
    return run


# --- one detector --------------------------------------------------------------------------------------------


def _note_calibration(method: str, calibration, trained: bool, err: Console) -> None:
    """Whether the scores are calibrated by a model card, or (trained weights without one) plain sigmoid(logit)."""
    if calibration.calibrated:
        err.print(f"note: {method}: scores are P(fake) calibrated by its model card ({calibration.method}); "
                  f"the card's threshold {calibration.threshold:.4g} is the scan's verdict threshold")
    elif trained:
        err.print(f"note: {method}'s weights have no calibration in a model card: scores are sigmoid(logit) "
                  "and the scan's verdict threshold is 0.5")


def score_method(scoring: Scoring, method: str, resolved):
    from deepscan.evaluate.runner import evaluate_method
    from deepscan.weights import build_detector, untrained_warning

    detector, resolved = build_detector(method, resolved=resolved)
    calibration = resolved.calibration
    cache_key = logit_cache_key(resolved.sha256, detector.config.input_size, weights_architecture(resolved))
    if not resolved.trained:
        scoring.err.print(f"[bold magenta]warning:[/] {escape(untrained_warning(method, 'scores and metrics'))}",
                          highlight=False)
    detector = detector.to(scoring.device).eval()
    _note_calibration(method, calibration, resolved.trained, scoring.err)
    weights = {**resolved.custody(), "model_card": resolved.card_custody()}
    request = scoring.request
    with scoring.progress_bar() as progress:
        task = progress.add_task(f"scoring with {method}", total=scoring.total())
        run = evaluate_method(
            detector, method, weights, scoring.test.samples, scoring.conditions, scoring.cache,
            calibration=calibration, cache_key=cache_key, val_samples=scoring.val_samples,
            batch_size=request.batch_size, bootstrap=request.bootstrap, seed=request.seed,
            on_batch=lambda count, task=task: progress.advance(task, count),
        )
        progress.remove_task(task)
    return run


def score_all(scoring: Scoring, methods: list[tuple]) -> list:
    """Every method's run, in the order asked; the score cache closed whatever happens."""
    from deepscan.ensemble import ENSEMBLE

    runs = []
    try:
        for method, _config, resolved in methods:
            score = score_ensemble if method == ENSEMBLE else score_method
            runs.append(score(scoring, method, resolved))
    finally:
        scoring.cache.close()
    return runs


# --- the report ----------------------------------------------------------------------------------------------


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


def results_meta(request: EvaluateRequest, test: SampleSet, notes: list[str]) -> dict:
    """results.json's description of the evaluation: its data, levels, settings and what its scores are."""
    return {
        "data": [str(p) for p in request.data],
        "val": [str(p) for p in request.val],
        "levels": dict(LEVELS_META),
        "frames_per_video": request.frames_per_video,
        "bootstrap_resamples": request.bootstrap,
        "seed": request.seed,
        "media_files": test.media_files,
        "faceless_media": test.faceless,
        "scores": SCORES_META,
        "notes": notes,
    }


def report_results(request: EvaluateRequest, runs: list, scoring: Scoring, out: Console) -> None:
    """The tables on ``out``; notes on the error console; with ``--out``, results.json, scores.csv and PNGs."""
    from deepscan.evaluate.report import tables, write_outputs

    err = scoring.err
    summaries = [run.to_dict() for run in runs]
    for table in tables(summaries):
        out.print(table)
    if scoring.val_samples is None:
        err.print("note: no --val data, so accuracy is at 0.5 only, besides the rates at each model card's threshold "
                  "(a threshold is never chosen on the test data)")
    notes = one_class_notes(summaries)
    for note in notes:
        err.print(f"note: {escape(note)}")
    if request.out_dir is not None:
        written = write_outputs(request.out_dir, runs, scoring.test.samples, results_meta(request, scoring.test, notes))
        err.print(f"wrote {len(written)} files to {escape(str(request.out_dir))} (results.json, scores.csv, PNGs)")


def run_evaluate(request: EvaluateRequest, out: Console, err: Console) -> int:
    """Evaluate ``request``: every method scored on its faces, tables on ``out``, notes and progress on ``err``,
    files under ``request.out_dir``; the exit code (0). Mistakes are :class:`EvaluationError` (or another
    one-line DeepscanError), raised before heavy work where they can be."""
    from deepscan.runtime import score_cache_path, select_device

    conditions = perturb_conditions(request.perturb)
    methods = resolve_methods(request)
    check_data_exists(request)
    device = select_device(request.device)
    parts = collect_parts(request, err)
    warn_about_parts(parts, err)
    test, val_samples = samples_of(parts)
    # Untrained runs are never cached. Without the file, logits are still kept for this run: a detector evaluated
    # alone and as an ensemble member scores each face once.
    cache = ScoreCache(score_cache_path(request.cache_dir) if request.use_score_cache else None)
    scoring = Scoring(request, conditions, test, val_samples, cache, device, err)
    runs = score_all(scoring, methods)
    report_results(request, runs, scoring, out)
    return 0
