"""`deepscan evaluate`: a thin command over the evaluate library (``deepscan.evaluate.evaluation``), and how an
evaluation looks on the console.

The evaluation reports through an ``EvaluationProgress`` (``deepscan.evaluate.progress``) and imports no terminal
library; this module shows its reports: a transient bar per phase on a terminal, warnings and notes on stderr, the
tables (``deepscan.cli.evaluate_tables``) on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.markup import escape

from deepscan.cli.app import app
from deepscan.cli.console import err, out
from deepscan.errors import EXIT_OK
from deepscan.evaluate.progress import EnsembleScoring, EvaluationProgress, FacesFound, written_line

if TYPE_CHECKING:
    from deepscan.evaluate.request import EvaluateRequest


class ConsoleEvaluationProgress(EvaluationProgress):
    """An evaluation on two rich consoles: the tables on ``out``; a transient bar per phase on ``err`` when it is a
    terminal (nothing elsewhere), and every warning and note on ``err``, one line each."""

    def __init__(self, out, err):
        self.out = out
        self.err = err
        self._bar = None  # the rich Progress of the phase in progress, on a terminal
        self._task = None

    def on_phase_start(self, description: str, total: int | None) -> None:
        if not getattr(self.err, "is_terminal", False):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=self.err, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def on_phase_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def on_advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)

    def on_phase_end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None

    def on_faces_found(self, found: FacesFound) -> None:
        for line in found.warnings():
            self.err.print(f"[yellow]warning:[/] {escape(line)}")

    def on_member_left_out(self, text: str) -> None:
        self.err.print(f"[yellow]ensemble: left out[/] {escape(text)}", highlight=False)

    def on_ensemble(self, scoring: EnsembleScoring) -> None:
        self.err.print(f"note: {escape(scoring.line())}", highlight=False)

    def on_untrained(self, method: str, text: str) -> None:
        self.err.print(f"[bold magenta]warning:[/] {escape(text)}", highlight=False)

    def on_note(self, text: str) -> None:
        self.err.print(f"note: {escape(text)}")

    def on_measured(self, summaries: list[dict]) -> None:
        from deepscan.cli.evaluate_tables import tables

        for table in tables(summaries):
            self.out.print(table)

    def on_written(self, folder: Path, files: list[Path]) -> None:
        self.err.print(escape(written_line(folder, len(files))))


def run_evaluate(request: EvaluateRequest, out, err) -> int:
    """Evaluate ``request``, the tables on ``out`` and progress, warnings and notes on ``err`` (rich Consoles); the
    exit code (0). Mistakes are raised as one-line ``DeepscanError``s."""
    from deepscan.evaluate.evaluation import evaluate

    evaluate(request, ConsoleEvaluationProgress(out, err))
    return EXIT_OK


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan evaluate --method faclue --weights faclue.safetensors data/celebdf/\n\n"
        "  deepscan evaluate -m faclue -m pel data/FaceForensics++/ --val data/FaceForensics++/ --out results/\n\n"
        "  deepscan evaluate -m ralf test-set/ --perturb all --out robustness/\n\n"
        "  deepscan evaluate -m faclue labels.csv --perturb gaussian_blur:1,2,3 --perturb h264\n\n"
        "  deepscan evaluate -m faclue data/celebdf/ --ray auto --cache-dir /shared/deepscan-cache"
    )
)
def evaluate(
    data: List[Path] = typer.Argument(
        ..., help="Test data: folders with real/ and fake/ sub-folders, an FF++ root (its test split), a Celeb-DF "
        "root (its test list), or a labels CSV (path,label[,split,group]). Real faces only (a real/ folder, or a CSV "
        "of label 0) measure false alarms."
    ),
    methods: List[str] = typer.Option(..., "--method", "-m", help="Detector (repeat for a side-by-side table)."),
    weights: Optional[List[str]] = typer.Option(
        None, "--weights", help="One per --method, same order: a .safetensors path, hf://OWNER/REPO/FILE, or "
        "'shipped'. Default: each detector's shipped weights."
    ),
    val: Optional[List[Path]] = typer.Option(
        None, "--val", metavar="DATA", help="Separate validation data (FF++: its val split) on which the accuracy "
        "threshold is chosen. Without it accuracy is at 0.5 only."
    ),
    perturb: Optional[List[str]] = typer.Option(
        None, "--perturb", metavar="SPEC", help="Robustness suite: 'all', a name (its default strengths) or "
        "NAME:S1,S2. Names: gaussian_noise, salt_pepper, gaussian_blur, jpeg, contrast, pixelation, h264."
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Write results.json, scores.csv (every sample's score) and ROC/histogram PNGs here."
    ),
    frames_per_video: int = typer.Option(8, min=1, help="Frames taken evenly from each video."),
    batch_size: int = typer.Option(16, min=1, help="Faces per inference batch."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    bootstrap: int = typer.Option(1000, min=0, help="Bootstrap resamples for the AUC's 95% interval (0: none)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    cache_dir: Optional[Path] = typer.Option(
        None, help="Cache of faces and scores. Default: $DEEPSCAN_CACHE or ~/.cache/deepscan."
    ),
    score_cache: bool = typer.Option(True, "--score-cache/--no-score-cache", help="Reuse and keep scores."),
    compression: str = typer.Option("c23", help="FF++ compression folder: raw, c23 or c40."),
    without: Optional[List[str]] = typer.Option(
        None, "--without", metavar="NAME", help="With --method ensemble: leave this member out (repeatable)."
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray", metavar="auto|ADDRESS", help="Find the faces and score them on a Ray cluster ('auto' or the "
        "head's HOST:PORT), into --cache-dir, which every node must mount; the metrics are then computed here. "
        'Needs pip install "deepscan[ray]".'
    ),
) -> None:
    """Measure detectors on labelled data: AUC, AP, EER, accuracy, TPR at low FPR, and false alarms and fakes
    caught at the model card's threshold, per frame and per video, on calibrated P(fake)."""
    from deepscan.evaluate.request import EvaluateRequest

    request = EvaluateRequest(
        data=data, methods=methods, weights=weights or [], val=val or [], perturb=perturb or [], out_dir=out_dir,
        frames_per_video=frames_per_video, batch_size=batch_size, device=device, bootstrap=bootstrap, seed=seed,
        cache_dir=cache_dir, use_score_cache=score_cache, compression=compression, without=without or [],
    )
    if ray_address is not None:
        _warm_on_cluster(request, ray_address)
    raise typer.Exit(run_evaluate(request, out, err))


def _warm_on_cluster(request: EvaluateRequest, address: str) -> None:
    """``--ray``: the cluster fills the face and score caches the evaluation then reads (deepscan.cluster.evaluate)."""
    from deepscan.cluster import ClusterOptions
    from deepscan.cluster.evaluate import warm_evaluation

    warmed = warm_evaluation(request, ClusterOptions(address=address),
                             notice=lambda line: err.print(f"[cyan]cluster:[/] {escape(line)}", highlight=False))
    err.print(f"cluster: faces of {warmed.media_files} file(s) ({warmed.unreadable} unreadable) and "
              f"{warmed.logits} score(s) computed on the cluster"
              + (f"; {warmed.lost_calls} call(s) lost with their actor, left to this machine"
                 if warmed.lost_calls else ""), highlight=False)
