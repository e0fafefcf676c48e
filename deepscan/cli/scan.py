"""`deepscan scan`: files in, a verdict per face track and per file, the report on disk after each file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer
from rich.markup import escape

from deepscan.catalog import DEFAULT_METHOD
from deepscan.cli.app import app
from deepscan.cli.console import err, fail
from deepscan.cli.summary import print_file_line, print_summary
from deepscan.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from deepscan.media.checksums import Checksums
    from deepscan.scan import ScanOptions

# --- the command's arguments and options, as `deepscan scan --help` shows them -------------------------------------

Inputs = Annotated[List[Path], typer.Argument(help="Videos, images or folders (searched recursively).")]
Method = Annotated[str, typer.Option(
    "--method", "-m",
    help="Detector to use (see `deepscan models`), or 'ensemble': every detector with trained weights.",
)]
Weights = Annotated[Optional[str], typer.Option(
    help="Weights: a .safetensors path or hf://OWNER/REPO/FILE (a sibling <name>.card.json calibrates "
    "them). Default: the detector's own (bundled, Hugging Face cache, or fetched from the hub).",
)]
Fps = Annotated[float, typer.Option(min=0.01, help="Frames per second sampled from videos.")]
EveryFrame = Annotated[bool, typer.Option("--every-frame", help="Scan every frame instead of sampling.")]
BatchSize = Annotated[Optional[int], typer.Option(
    min=1, help="Faces per inference batch. Default: 16 on the CPU; on CUDA, the largest power of two "
    "(at most 256) whose faces fit in half the free GPU memory, measured at the start.",
)]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Runtime = Annotated[str, typer.Option(
    "--runtime", help="auto, eager, compile, onnx or openvino. auto: on the CPU the fastest runtime "
    "measured to keep every P(fake) within 1e-3 of PyTorch's (ONNX Runtime for FAClue, SFIConv and RALF), "
    "exported once per weights and cached; PyTorch on CUDA and for weights that are not a file.",
)]
Precision = Annotated[str, typer.Option(
    help="auto (bf16 autocast on a CUDA GPU that has it, else fp32), fp32, bf16 or fp16. Frequency "
    "transforms always run in fp32.",
)]
Threshold = Annotated[Optional[float], typer.Option(
    min=0.0, max=1.0, help="Calibrated P(fake) at or above which a track is fake. Default: the threshold "
    "in the weights' model card, else 0.5.",
)]
MinFaceScore = Annotated[float, typer.Option(min=0.0, max=1.0, help="Face detector confidence to keep a face.")]
FaceSearch = Annotated[str, typer.Option(
    "--face-search", help="How video frames are searched for faces. guided: the whole frame and a "
    "crop round each face already found, with the full tile search every 8th sampled frame, on a scene cut and "
    "when a face is lost; tiles: the whole frame and overlapping tiles on every frame; whole: the whole frame "
    "only, blind to faces under about 1/8 of the frame. Images always get the full search.",
)]
Tile = Annotated[bool, typer.Option(
    "--tile/--no-tile", hidden=True, help="Deprecated: --no-tile is --face-search whole.",
)]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Write the full JSON report here.")]
ReportDir = Annotated[Optional[Path], typer.Option(
    "--report",
    help="Write report.html (self-contained: verdicts, score timeline, heat maps and spectra of the most "
    "suspicious faces, chain of custody) and report.json into this folder.",
)]
Pdf = Annotated[bool, typer.Option("--pdf", help="With --report: also write report.pdf.")]
Without = Annotated[Optional[List[str]], typer.Option(
    "--without", metavar="NAME", help="With --method ensemble: leave this member out (repeatable), "
    "e.g. --without ralf to skip the slowest.",
)]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray", metavar="auto|ADDRESS", help="Spread the files over a Ray cluster: 'auto' (the cluster this "
    "machine belongs to, else a local Ray instance) or the head's HOST:PORT or ray://HOST:PORT. Needs "
    'pip install "deepscan[ray]".',
)]


@dataclass(frozen=True)
class ScanRequest:
    """What `deepscan scan` was asked for, its options checked: the files, how to scan them, where reports go."""

    inputs: list[Path]
    options: ScanOptions
    json_out: Path | None = None
    report_dir: Path | None = None
    pdf: bool = False
    without: tuple[str, ...] = ()  # ensemble members left out
    ray_address: str | None = None


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
    inputs: Inputs, method: Method = DEFAULT_METHOD, weights: Weights = None, fps: Fps = 2.0,
    every_frame: EveryFrame = False,
    batch_size: BatchSize = None, device: Device = "auto", runtime: Runtime = "auto", precision: Precision = "auto",
    threshold: Threshold = None, min_face_score: MinFaceScore = 0.5, face_search: FaceSearch = "guided",
    tile: Tile = True, json_out: JsonOut = None, report_dir: ReportDir = None, pdf: Pdf = False,
    without: Without = None, ray_address: RayAddress = None,
) -> None:
    """Scan videos and images for forged faces: a verdict per face track and per file."""
    request = _scan_request(
        inputs, method=method, weights=weights, fps=fps, every_frame=every_frame, batch_size=batch_size,
        device=device, runtime=runtime, precision=precision, threshold=threshold, min_face_score=min_face_score,
        face_search=face_search, tile=tile, json_out=json_out, report_dir=report_dir, pdf=pdf, without=without,
        ray_address=ray_address,
    )
    raise typer.Exit(_run_scan(request))


def _scan_request(inputs: list[Path], *, method: str, weights: str | None, fps: float, every_frame: bool,
                  batch_size: int | None, device: str, runtime: str, precision: str, threshold: float | None,
                  min_face_score: float, face_search: str, tile: bool, json_out: Path | None,
                  report_dir: Path | None, pdf: bool, without: list[str] | None,
                  ray_address: str | None) -> ScanRequest:
    """The command's options checked (a bad one fails in one line) and gathered."""
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
    if without and method != "ensemble":
        fail("--without leaves members out of the ensemble: it needs --method ensemble")
    if precision not in PRECISIONS:
        fail(f"unknown --precision {precision!r} ({', '.join(PRECISIONS)})")
    options = ScanOptions(
        method=method, weights=weights, fps=fps, every_frame=every_frame, batch_size=batch_size, device=device,
        precision=precision, runtime=runtime, min_face_score=min_face_score,
        face_search=face_search if tile else "whole", threshold=threshold,
    )
    return ScanRequest(list(inputs), options, json_out, report_dir, pdf, tuple(without or ()), ray_address)


def _run_scan(request: ScanRequest) -> int:
    from deepscan.media.checksums import Checksums
    from deepscan.media.images import discover_media
    from deepscan.weights import untrained_warning

    options = request.options
    judge, config, resolved = _judge_for(options, request.without)
    files = discover_media(request.inputs)
    if not files:
        fail("no image or video found in the given folders")
    if not judge.trained:
        err.print(f"[bold magenta]warning:[/] {escape(untrained_warning(config.name))}", highlight=False)
    engine = _cluster(judge, options, request.ray_address) if request.ray_address is not None else None
    record = _scan_record(request, files, judge, config, resolved, engine)
    checksums = Checksums()  # each file hashed once: by the scan, not again for the report's heat maps
    _collect(record, _scanned(files, options, judge, engine, checksums, _kept_for_report(request, judge)))
    print_summary(record.results, judge.trained, ensemble=judge.is_ensemble)
    _write_final_reports(record, request, judge, config, checksums)
    if record.interrupted:
        return EXIT_INTERRUPTED
    return 0 if record.complete else EXIT_INCOMPLETE


def _scan_record(request: ScanRequest, files: list[Path], judge, config, resolved, engine):
    """The scan's record, its report written once before the scan starts: better to stop now than scan for
    nothing."""
    from deepscan.report.html import REPORT_JSON
    from deepscan.report.scan_record import ScanRecord

    report_dir = request.report_dir
    paths = [path for path in (request.json_out, report_dir and report_dir / REPORT_JSON) if path is not None]
    record = ScanRecord(files, paths, options=request.options, judge=judge, detector_config=config,
                        weights=resolved,
                        custody=(lambda: {"cluster": engine.custody()}) if engine is not None else None)
    for path, error in record.checkpoint(force=True):
        fail(f"cannot write the report to {path}: {error.strerror or error}")
    return record


def _collect(record, scanned) -> None:
    """Each file's result into the record as it comes, the report so far rewritten after it; Ctrl-C keeps what was
    done. ``scanned`` is closed however the loop ends."""
    from deepscan.scan import ScanInterrupted

    warned = False
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


def _kept_for_report(request: ScanRequest, judge):
    """What the scan keeps of the faces the HTML report's heat maps explain, so that it decodes no file again
    (None: no heat maps, or a cluster scan, whose reports decode the files again)."""
    from deepscan.kept_faces import KeepFaces

    if request.report_dir is None or judge.is_ensemble or request.ray_address is not None:
        return None
    return KeepFaces(max_tracks=REPORT_TRACKS_EXPLAINED)


def _cluster(judge, options, address: str):
    from deepscan.cluster import ClusterOptions, ClusterScan

    return ClusterScan(judge, options, ClusterOptions(address=address),
                       notice=lambda line: err.print(f"[cyan]cluster:[/] {escape(line)}", highlight=False))


def _scanned(files: list[Path], options, judge, cluster, checksums: Checksums, keep_faces=None):
    """Each file's result as it is done, with progress bars: on this machine in the planned order (several files in
    flight, a bar each, sized by the frames the scan expects), or from the cluster in the order they finish (one bar
    counting files). Closing the iterators stops the scan's threads, or cancels what is in flight, whichever way
    the caller's loop ends. ``keep_faces``: what the local scan keeps for the report (``deepscan.kept_faces``)."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deepscan.media.errors import shown_path
    from deepscan.scan import Scanner

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)
    engine = cluster if cluster is not None else Scanner(None, options, judge=judge, checksums=checksums,
                                                         keep_faces=keep_faces)
    with engine, progress:  # each enters as itself
        if cluster is not None:
            task = progress.add_task("scanning on the cluster", total=len(files), rate="")
            with contextlib.closing(engine.scan(files)) as outcomes:
                for outcome in outcomes:
                    progress.advance(task)
                    yield outcome.result
            return
        bars: dict[Path, tuple] = {}  # a progress bar per file in flight: (its tick, its task)

        def on_start(path: Path, expected_frames: int | None) -> None:
            # A file name is text, not markup, and a newline in it must not break the bar's line.
            task = progress.add_task(escape(shown_path(path.name)), total=expected_frames, rate="")
            bars[path] = _rate_ticker(progress, task), task

        def on_frame(path: Path) -> None:
            bars[path][0]()

        with contextlib.closing(engine.scan_files(files, on_frame=on_frame, on_start=on_start)) as scanned:
            for result in scanned:
                if (bar := bars.pop(Path(result.path), None)) is not None:
                    progress.remove_task(bar[1])
                yield result


def _write_final_reports(record, request: ScanRequest, judge, config, checksums: Checksums) -> None:
    from deepscan.report.json_report import write_report

    json_out, report_dir = request.json_out, request.report_dir
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
        _write_scan_report(final, report_dir, judge.members[0], config, pdf=request.pdf,
                           explain_faces=not record.interrupted and not judge.is_ensemble, checksums=checksums,
                           kept=_handed_over_kept_faces(record.results))


def _handed_over_kept_faces(results: list) -> list:
    """Each result's kept faces, taken from it: the report's heat maps let each go once drawn from it."""
    kept = [result.kept_faces for result in results]
    for result in results:
        result.kept_faces = None
    return kept


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


def _write_scan_report(report: dict, folder: Path, member, config, *, pdf: bool, explain_faces: bool,
                       checksums: Checksums | None = None, kept: list | None = None) -> None:
    """``member``: the scan's detector with its calibration, so that heat-map figures state the P(fake) the scan
    recorded; ``checksums``: the scan's, so that the files are not hashed again; ``kept``: per file of the report,
    the faces the scan kept for its heat maps (``FileResult.kept_faces``), so that the files are not decoded
    again: each let go once its file is explained."""
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
                            checksums=checksums,
                            kept=kept[index] if kept is not None else None,
                        )
                    )
                except ExplainError as error:
                    err.print(f"[yellow]warning:[/] no heat maps for {escape(str(error))}", highlight=False)
                finally:
                    if kept is not None:
                        kept[index] = None
    written = write_scan_report(report, folder, explanations, pdf=pdf, detector_summary=config.summary)
    err.print(f"HTML report written to {written[1]}" + (f" (and {written[2].name})" if pdf else ""))
