"""`deepscan scan`: files in, a verdict per face track and per file, the report on disk after each file."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from deepscan.cli.app import app
from deepscan.cli.console import err, fail
from deepscan.cli.summary import print_file_line, print_summary
from deepscan.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan scan suspect.mp4\n\n"
        "  deepscan scan case-42/ --json case-42.json --fps 4\n\n"
        "  deepscan scan clip.mp4 --method faclue --weights my-detector.safetensors --every-frame\n\n"
        "  deepscan scan suspect.mp4 --method ensemble\n\n"
        "  deepscan scan suspect.mp4 --method ensemble --without sficonv\n\n"
        "  deepscan scan suspect.mp4 --report case-42-report/ --pdf\n\n"
        "  deepscan scan case-42/ --ray auto --json case-42.json"
    )
)
def scan(
    inputs: List[Path] = typer.Argument(..., help="Videos, images or folders (searched recursively)."),
    method: str = typer.Option(
        "faclue", "--method", "-m",
        help="Detector to use (see `deepscan models`), or 'ensemble': every detector with trained weights.",
    ),
    weights: Optional[str] = typer.Option(
        None, help="Weights: a .safetensors path or hf://OWNER/REPO/FILE (a sibling <name>.card.json calibrates "
        "them). Default: the detector's own (bundled, Hugging Face cache, or fetched from the hub)."
    ),
    fps: float = typer.Option(2.0, min=0.01, help="Frames per second sampled from videos."),
    every_frame: bool = typer.Option(False, "--every-frame", help="Scan every frame instead of sampling."),
    batch_size: Optional[int] = typer.Option(
        None, min=1, help="Faces per inference batch. Default: 16 on the CPU; on CUDA, the largest power of two "
        "(at most 256) whose faces fit in half the free GPU memory, measured at the start."
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    runtime: str = typer.Option(
        "auto", "--runtime", help="auto, eager, compile, onnx or openvino. auto: on the CPU the fastest runtime "
        "measured to keep every P(fake) within 1e-3 of PyTorch's (ONNX Runtime for FAClue, SFIConv and RALF), "
        "exported once per weights and cached; PyTorch on CUDA and for weights that are not a file."
    ),
    precision: str = typer.Option(
        "auto", help="auto (bf16 autocast on a CUDA GPU that has it, else fp32), fp32, bf16 or fp16. Frequency "
        "transforms always run in fp32."
    ),
    threshold: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="Calibrated P(fake) at or above which a track is fake. Default: the threshold "
        "in the weights' model card, else 0.5."
    ),
    min_face_score: float = typer.Option(0.5, min=0.0, max=1.0, help="Face detector confidence to keep a face."),
    face_search: str = typer.Option(
        "guided", "--face-search", help="How video frames are searched for faces. guided: the whole frame and a "
        "crop round each face already found, with the full tile search every 8th sampled frame, on a scene cut and "
        "when a face is lost; tiles: the whole frame and overlapping tiles on every frame; whole: the whole frame "
        "only, blind to faces under about 1/8 of the frame. Images always get the full search."
    ),
    tile: bool = typer.Option(True, "--tile/--no-tile", hidden=True, help="Deprecated: --no-tile is "
                              "--face-search whole."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full JSON report here."),
    report_dir: Optional[Path] = typer.Option(
        None,
        "--report",
        help="Write report.html (self-contained: verdicts, score timeline, heat maps and spectra of the most "
        "suspicious faces, chain of custody) and report.json into this folder.",
    ),
    pdf: bool = typer.Option(False, "--pdf", help="With --report: also write report.pdf."),
    without: Optional[List[str]] = typer.Option(
        None, "--without", metavar="NAME", help="With --method ensemble: leave this member out (repeatable), "
        "e.g. --without ralf to skip the slowest."
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray", metavar="auto|ADDRESS", help="Spread the files over a Ray cluster: 'auto' (the cluster this "
        "machine belongs to, else a local Ray instance) or the head's HOST:PORT or ray://HOST:PORT. Needs "
        'pip install "deepscan[ray]".'
    ),
) -> None:
    """Scan videos and images for forged faces: a verdict per face track and per file."""
    from deepscan.media.face_search import FACE_SEARCH_STRATEGIES
    from deepscan.precision import PRECISIONS
    from deepscan.runtimes import AUTO, RUNTIMES
    from deepscan.scan import ScanOptions

    if pdf and report_dir is None:
        fail("--pdf needs --report DIR (the PDF is written beside the HTML report)")
    if method == "ensemble" and weights is not None:
        fail("--weights picks one detector's weights; the ensemble uses each member's own (see `deepscan models`)")
    if runtime not in (AUTO, *RUNTIMES):
        fail(f"unknown --runtime {runtime!r} ({', '.join((AUTO, *RUNTIMES))})")
    if face_search not in FACE_SEARCH_STRATEGIES:
        fail(f"unknown --face-search {face_search!r} ({', '.join(FACE_SEARCH_STRATEGIES)})")
    if not tile:
        face_search = "whole"
    if without and method != "ensemble":
        fail("--without leaves members out of the ensemble: it needs --method ensemble")
    if precision not in PRECISIONS:
        fail(f"unknown --precision {precision!r} ({', '.join(PRECISIONS)})")

    options = ScanOptions(
        method=method,
        weights=weights,
        fps=fps,
        every_frame=every_frame,
        batch_size=batch_size,
        device=device,
        precision=precision,
        runtime=runtime,
        min_face_score=min_face_score,
        face_search=face_search,
        threshold=threshold,
    )
    raise typer.Exit(_run_scan(inputs, options, json_out, report_dir=report_dir, pdf=pdf, without=without or [],
                               ray_address=ray_address))


def _run_scan(
    inputs: list[Path], options, json_out: Path | None, *, report_dir: Path | None = None, pdf: bool = False,
    without: list[str] | tuple[str, ...] = (), ray_address: str | None = None,
) -> int:
    from deepscan.media.images import discover_media
    from deepscan.report.html import REPORT_JSON
    from deepscan.report.scan_record import ScanRecord
    from deepscan.scan import ScanInterrupted
    from deepscan.weights import untrained_warning

    judge, config, resolved = _judge_for(options, without)
    files = discover_media(inputs)
    if not files:
        fail("no image or video found in the given folders")
    if not judge.trained:
        err.print(f"[bold magenta]warning:[/] {escape(untrained_warning(config.name))}", highlight=False)
    engine = _cluster(judge, options, ray_address) if ray_address is not None else None
    paths = [path for path in (json_out, report_dir and report_dir / REPORT_JSON) if path is not None]
    record = ScanRecord(files, paths, options=options, judge=judge, detector_config=config, weights=resolved,
                        custody=(lambda: {"cluster": engine.custody()}) if engine is not None else None)
    for path, error in record.checkpoint(force=True):  # before the scan: better to stop now than scan for nothing
        fail(f"cannot write the report to {path}: {error.strerror or error}")
    warned = False
    scanned = _scanned(files, options, judge, engine)
    try:
        for result in scanned:
            record.add(result)
            print_file_line(result)
            failed = record.checkpoint()
            if failed and not warned:
                path, error = failed[0]
                err.print(f"[yellow]warning:[/] the report so far could not be written to {escape(str(path))} "
                          f"({escape(error.strerror or str(error))}); trying again after each file", highlight=False)
                warned = True
    except ScanInterrupted as stop:
        record.add(stop.result)
        record.interrupted = True
    except KeyboardInterrupt:
        record.interrupted = True
        err.print("[yellow]interrupted: keeping the results so far[/]")
    finally:
        scanned.close()  # the scan's threads stopped, or the cluster's calls cancelled, however the loop ended
    print_summary(record.results, judge.trained, ensemble=judge.is_ensemble)
    _write_final_reports(record, json_out, report_dir, judge, config, pdf)
    if record.interrupted:
        return EXIT_INTERRUPTED
    return 0 if record.complete else EXIT_INCOMPLETE


def _cluster(judge, options, address: str):
    from deepscan.cluster import ClusterOptions, ClusterScan

    return ClusterScan(judge, options, ClusterOptions(address=address),
                       notice=lambda line: err.print(f"[cyan]cluster:[/] {escape(line)}", highlight=False))


def _scanned(files: list[Path], options, judge, cluster):
    """Each file's result as it is done, with progress bars: on this machine in the planned order (several files in
    flight, a bar each), or from the cluster in the order they finish (one bar counting files). Closing the
    iterators stops the scan's threads, or cancels what is in flight, whichever way the caller's loop ends."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deepscan.media.errors import shown_path
    from deepscan.scan import Scanner

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)
    with (cluster if cluster is not None else Scanner(None, options, judge=judge)) as engine, progress:
        if cluster is not None:
            task = progress.add_task("scanning on the cluster", total=len(files), rate="")
            with contextlib.closing(engine.scan(files)) as outcomes:
                for outcome in outcomes:
                    progress.advance(task)
                    yield outcome.result
            return
        bars: dict[Path, tuple] = {}  # a progress bar per file in flight: (its tick, its task)

        def on_frame(path: Path) -> None:
            if path not in bars:
                # A file name is text, not markup, and a newline in it must not break the bar's line.
                task = progress.add_task(escape(shown_path(path.name)), total=_expected_frames(path, options),
                                         rate="")
                bars[path] = _rate_ticker(progress, task), task
            bars[path][0]()

        with contextlib.closing(engine.scan_files(files, on_frame=on_frame)) as scanned:
            for result in scanned:
                if (bar := bars.pop(Path(result.path), None)) is not None:
                    progress.remove_task(bar[1])
                yield result


def _write_final_reports(record, json_out: Path | None, report_dir: Path | None, judge, config, pdf: bool) -> None:
    from deepscan.report.json_report import write_report

    if json_out is None and report_dir is None:
        return
    final = record.report(finished=True)
    if json_out is not None:
        try:
            write_report(final, json_out)
        except OSError as error:
            fail(f"the report could not be written to {json_out}: {error.strerror or error}", EXIT_INCOMPLETE)
        err.print(f"report written to {escape(str(json_out))}", highlight=False)
    if report_dir is not None:
        if judge.is_ensemble:
            err.print("[yellow]note:[/] heat maps are drawn per detector: the report has none for the ensemble "
                      "(run `deepscan explain --method NAME --from REPORT` with a member)")
        _write_scan_report(final, report_dir, judge.members[0], config, pdf=pdf,
                           explain_faces=not record.interrupted and not judge.is_ensemble)


def _judge_for(options, without: list[str] | tuple[str, ...] = ()):
    """The scan's judge (one calibrated detector, or the ensemble), its config and weights for the report."""
    from deepscan.ensemble import ENSEMBLE, EnsembleConfig, EnsembleWeights, plan_ensemble
    from deepscan.scan import Judge
    from deepscan.weights import build_detector

    if options.method != ENSEMBLE:
        detector, resolved = build_detector(options.method, options.weights)
        return Judge.single(detector, resolved, options.threshold), detector.config, resolved
    plan = plan_ensemble(without)
    for line in plan.skipped:
        err.print(f"[yellow]ensemble: left out[/] {escape(line)}", highlight=False)
    judge = Judge.ensemble(plan, options.threshold)
    err.print(f"ensemble of {', '.join(m.name for m in judge.members)}: mean calibrated P(fake), threshold "
              f"{judge.threshold:g} ({judge.threshold_source})", highlight=False)
    return judge, EnsembleConfig(), EnsembleWeights(len(judge.members))


def _expected_frames(path: Path, options) -> int | None:
    from deepscan.media.errors import MediaError
    from deepscan.media.images import media_kind
    from deepscan.media.video import probe_video

    try:
        if media_kind(path) == "image":
            return 1
        info = probe_video(path)
    except (MediaError, OSError):
        return None
    if options.every_frame:
        return info.frame_count
    return int(info.duration_s * options.fps) + 1 if info.duration_s else None


def _rate_ticker(progress, task):
    import time

    start = time.perf_counter()
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        elapsed = time.perf_counter() - start
        progress.update(task, advance=1, rate=f"{count / elapsed:.1f} frames/s" if elapsed > 0 else "")

    return tick


REPORT_TRACKS_EXPLAINED = 3  # most suspicious tracks per file whose top face the HTML report explains


def _write_scan_report(report: dict, folder: Path, member, config, *, pdf: bool, explain_faces: bool) -> None:
    """``member``: the scan's detector with its calibration, so that heat-map figures state the P(fake) the scan
    recorded."""
    from deepscan.explain import ExplainError, explain_recorded_faces
    from deepscan.report.html import write_scan_report

    explanations: dict[int, list] = {}
    trained = bool(report["custody"]["weights"]["trained"])
    if explain_faces:
        with err.status("explaining the most suspicious faces for the report..."):
            for index, entry in enumerate(report["files"]):
                try:
                    explanations[index] = list(
                        explain_recorded_faces(
                            member.detector,
                            entry,
                            report["custody"]["parameters"],
                            max_tracks=REPORT_TRACKS_EXPLAINED,
                            trained=trained,
                            calibration=member.calibration,
                        )
                    )
                except ExplainError as error:
                    err.print(f"[yellow]warning:[/] no heat maps for {escape(str(error))}", highlight=False)
    written = write_scan_report(report, folder, explanations, pdf=pdf, detector_summary=config.summary)
    err.print(f"HTML report written to {written[1]}" + (f" (and {written[2].name})" if pdf else ""))
