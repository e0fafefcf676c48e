"""What an evaluation is asked to do (:class:`EvaluateRequest`), and what follows from it before any heavy work: the
perturbation conditions, every method's weights (or the ensemble's plan), the face size extracted for all of them.

Every mistake in a request is found here, as one line (:class:`EvaluationError`), before faces are searched for.
Shared by the evaluation itself (``deepscan.evaluate.evaluation``) and the cluster that fills its caches
(``deepscan.cluster.evaluate``), so that both take the same methods, keys and conditions from a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deepscan.evaluate.samples import EvaluationError

COMPRESSIONS = ("raw", "c23", "c40")  # FF++ compression folders
SHIPPED = "shipped"  # the --weights that stands for a method's own weights

ENSEMBLE_WEIGHTS_ERROR = ("--weights picks one detector's weights; the ensemble uses each member's own (see "
                          "`deepscan models`): give --weights shipped in its place")


@dataclass
class EvaluateRequest:
    """``deepscan evaluate``'s options, as the command line takes them; the compression folder is checked here."""

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

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise EvaluationError(f"unknown --compression {self.compression!r} (raw, c23 or c40)")


def perturb_conditions(specs: list[str]) -> list[tuple[str, float]]:
    """The (perturbation, strength) conditions the ``--perturb`` specs name, each once, in order."""
    from deepscan.evaluate.perturb import parse_perturb_spec

    conditions: list[tuple[str, float]] = []
    for spec in specs:
        for condition in parse_perturb_spec(spec):
            if condition not in conditions:
                conditions.append(condition)
    return conditions


def _check_methods(request: EvaluateRequest) -> None:
    from deepscan.ensemble import ENSEMBLE

    if len(set(request.methods)) != len(request.methods):
        raise EvaluationError("each --method may be given once")
    if request.weights and len(request.weights) != len(request.methods):
        raise EvaluationError(
            f"give one --weights per --method, in the same order (got {len(request.weights)} for "
            f"{len(request.methods)}); use --weights shipped for a method's default weights"
        )
    if request.without and ENSEMBLE not in request.methods:
        raise EvaluationError("--without leaves members out of the ensemble: it needs --method ensemble")


def resolve_methods(request: EvaluateRequest) -> list[tuple]:
    """(method, config, resolved weights) per method, and for the ensemble (method, None, its plan: members and
    threshold, as the scan forms it); every error found before any heavy work starts."""
    from deepscan.detectors import get_config
    from deepscan.ensemble import ENSEMBLE, plan_ensemble
    from deepscan.weights import resolve_detector_weights

    _check_methods(request)
    specs = request.weights or [SHIPPED] * len(request.methods)
    found = []
    for method, spec in zip(request.methods, specs):
        if method == ENSEMBLE:
            if spec != SHIPPED:
                raise EvaluationError(ENSEMBLE_WEIGHTS_ERROR)
            found.append((method, None, plan_ensemble(request.without)))
            continue
        config = get_config(method)
        found.append((method, config, resolve_detector_weights(config, None if spec == SHIPPED else spec)))
    return found


def check_data_exists(request: EvaluateRequest) -> None:
    for path in [*request.data, *request.val]:
        if not path.exists():
            raise EvaluationError(f"{path}: no such file or folder")


def extraction_input_size() -> int:
    """The face size extracted for every method: the largest input any detector takes. One face cache for every
    method, so that a sample, and its cached scores, are the same whichever methods are evaluated together."""
    from deepscan.detectors import get_config, list_detectors

    return max(get_config(name).input_size for name in list_detectors())
