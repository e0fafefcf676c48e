"""An evaluation from request to results: faces found, every method scored and measured, files written.

:func:`evaluate` is what ``deepscan evaluate`` runs (the command in ``deepscan/cli/evaluate.py`` builds the
:class:`~deepscan.evaluate.request.EvaluateRequest` and shows the events), in small steps: the request checked and
its weights resolved (``request``), the test and validation faces collected (``samples``), each method or the
ensemble scored and measured (``runner``, through the logit cache of ``scores``), and the results written
(``report``). Progress, warnings and notes go to an :class:`~deepscan.evaluate.progress.EvaluationProgress`
(none: a quiet evaluation); what was measured comes back as an :class:`Evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deepscan.evaluate.progress import EnsembleScoring, EvaluationProgress, FacesFound, phase
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
               "video_mean": "mean of a video's frame scores (a video: a media file, or the frame files its "
                             "labels CSV names as one in its video column)",
               "video_median": "median of all of a video's face scores (per video, without the reliable "
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
    progress: EvaluationProgress

    def total(self) -> int:
        """Faces one detector scores: the validation faces, and the test faces under every condition."""
        return len(self.val_samples or []) + len(self.test.samples) * (1 + len(self.conditions))


@dataclass
class Evaluation:
    """What an evaluation measured: every method's run, its results as results.json holds them (``methods``), the
    notes results.json keeps, and the files written (none without ``out_dir``)."""

    runs: list
    summaries: list[dict]
    notes: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


# --- faces ---------------------------------------------------------------------------------------------------


def collect_parts(request: EvaluateRequest, progress: EvaluationProgress) -> dict[str, SampleSet]:
    """The faces of the test data and (with ``--val``) of the validation data, extracted into the face cache."""
    from deepscan.evaluate.samples import collect_samples
    from deepscan.runtime import face_cache_dir

    face_dir = face_cache_dir(request.cache_dir)
    input_size = extraction_input_size()
    parts = {}
    for part, data in (("test", request.data), ("val", request.val)):
        if not data:
            continue
        with phase(progress, f"finding faces ({part})", None):
            parts[part] = collect_samples(
                data, part, input_size=input_size, frames_per_video=request.frames_per_video, cache_dir=face_dir,
                compression=request.compression, on_total=progress.on_phase_total, on_item=progress.on_advance,
            )
    return parts


def faces_found(parts: dict[str, SampleSet]) -> list[FacesFound]:
    """What each part's search found, in the order searched: its files, and how many were unreadable or faceless."""
    return [FacesFound(part, found.media_files, found.unreadable, len(found.faceless))
            for part, found in parts.items()]


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

    progress = scoring.progress
    for line in plan.skipped:
        progress.on_member_left_out(line)
    members, weights, threshold = ensemble_members(plan, scoring.device)
    progress.on_ensemble(EnsembleScoring(tuple(m.name for m in members), plan.threshold, plan.threshold_source))
    request = scoring.request
    with phase(progress, "scoring the ensemble's members", scoring.total() * len(members)):
        return evaluate_ensemble(
            members, threshold, weights,
            scoring.test.samples, scoring.conditions, scoring.cache, method=method, val_samples=scoring.val_samples,
            batch_size=request.batch_size, bootstrap=request.bootstrap, seed=request.seed,
            on_batch=progress.on_advance,
        )


# --- one detector --------------------------------------------------------------------------------------------


def calibration_note(method: str, calibration, trained: bool) -> str | None:
    """Whether the scores are calibrated by a model card, or (trained weights without one) plain sigmoid(logit)."""
    if calibration.calibrated:
        return (f"{method}: scores are P(fake) calibrated by its model card ({calibration.method}); "
                f"the card's threshold {calibration.threshold:.4g} is the scan's verdict threshold")
    if trained:
        return (f"{method}'s weights have no calibration in a model card: scores are sigmoid(logit) "
                "and the scan's verdict threshold is 0.5")
    return None


def score_method(scoring: Scoring, method: str, resolved):
    from deepscan.evaluate.runner import evaluate_method
    from deepscan.weights import build_detector, untrained_warning

    detector, resolved = build_detector(method, resolved=resolved)
    calibration = resolved.calibration
    cache_key = logit_cache_key(resolved.sha256, detector.config.input_size, weights_architecture(resolved))
    progress = scoring.progress
    if not resolved.trained:
        progress.on_untrained(method, untrained_warning(method, "scores and metrics"))
    detector = detector.to(scoring.device).eval()
    note = calibration_note(method, calibration, resolved.trained)
    if note is not None:
        progress.on_note(note)
    weights = {**resolved.custody(), "model_card": resolved.card_custody()}
    request = scoring.request
    with phase(progress, f"scoring with {method}", scoring.total()):
        return evaluate_method(
            detector, method, weights, scoring.test.samples, scoring.conditions, scoring.cache,
            calibration=calibration, cache_key=cache_key, val_samples=scoring.val_samples,
            batch_size=request.batch_size, bootstrap=request.bootstrap, seed=request.seed,
            on_batch=progress.on_advance,
        )


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


NO_VAL_NOTE = ("no --val data, so accuracy is at 0.5 only, besides the rates at each model card's threshold "
               "(a threshold is never chosen on the test data)")


def report_results(request: EvaluateRequest, runs: list, scoring: Scoring) -> Evaluation:
    """The results to the progress (``on_measured``) and its notes; with ``--out``, results.json, scores.csv and
    PNGs."""
    from deepscan.evaluate.report import write_outputs

    progress = scoring.progress
    summaries = [run.to_dict() for run in runs]
    progress.on_measured(summaries)
    if scoring.val_samples is None:
        progress.on_note(NO_VAL_NOTE)
    notes = one_class_notes(summaries)
    for note in notes:
        progress.on_note(note)
    evaluation = Evaluation(runs, summaries, notes)
    if request.out_dir is not None:
        evaluation.written = write_outputs(request.out_dir, runs, scoring.test.samples,
                                           results_meta(request, scoring.test, notes))
        progress.on_written(request.out_dir, evaluation.written)
    return evaluation


def evaluate(request: EvaluateRequest, progress: EvaluationProgress | None = None) -> Evaluation:
    """Evaluate ``request``: every method scored on its faces and measured, files under ``request.out_dir``; the
    events to ``progress`` (None: none). Mistakes are :class:`EvaluationError` (or another one-line
    DeepscanError), raised before heavy work where they can be."""
    from deepscan.runtime import score_cache_path, select_device

    progress = progress or EvaluationProgress()
    conditions = perturb_conditions(request.perturb)
    methods = resolve_methods(request)
    check_data_exists(request)
    device = select_device(request.device)
    parts = collect_parts(request, progress)
    for found in faces_found(parts):
        progress.on_faces_found(found)
    test, val_samples = samples_of(parts)
    # Untrained runs are never cached. Without the file, logits are still kept for this run: a detector evaluated
    # alone and as an ensemble member scores each face once.
    cache = ScoreCache(score_cache_path(request.cache_dir) if request.use_score_cache else None)
    scoring = Scoring(request, conditions, test, val_samples, cache, device, progress)
    runs = score_all(scoring, methods)
    return report_results(request, runs, scoring)
