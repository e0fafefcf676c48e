"""The command line: thin Typer commands over the library, rendered with rich.

Heavy imports (torch, timm, mediapipe) happen inside the commands so that ``deepscan --help`` is quick. A problem
the user can fix is a ``DeepscanError`` wherever it is raised: the commands let it through, and it ends here, in
one place, as one line and its exit code (``deepscan.errors``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from deepscan.errors import EXIT_INCOMPLETE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, DeepscanError

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one message, one line: never wrapped


def fail(message: str, code: int = EXIT_USAGE) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


class _Commands(TyperGroup):
    """Every command runs through here: a :class:`DeepscanError` from any of them ends as one line on stderr and
    the error's exit code (for ``main()``, ``python -m deepscan`` and a test's ``CliRunner`` alike)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeepscanError as error:
            fail(str(error), error.exit_code)


app = typer.Typer(
    name="deepscan",
    help="Tell whether the faces in a video or image were forged, and show why.",
    cls=_Commands,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


VERDICT_STYLE = {
    "fake": "bold red",
    "real": "bold green",
    "inconclusive": "bold dark_orange",
    "no face": "yellow",
    "untrained": "magenta",
}


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan scan suspect.mp4\n\n"
        "  deepscan scan case-42/ --json case-42.json --fps 4\n\n"
        "  deepscan scan clip.mp4 --method faclue --weights my-detector.safetensors --every-frame\n\n"
        "  deepscan scan suspect.mp4 --method ensemble\n\n"
        "  deepscan scan suspect.mp4 --report case-42-report/ --pdf"
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
    batch_size: int = typer.Option(16, min=1, help="Faces per inference batch."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threshold: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="Calibrated P(fake) at or above which a track is fake. Default: the threshold "
        "in the weights' model card, else 0.5."
    ),
    min_face_score: float = typer.Option(0.5, min=0.0, max=1.0, help="Face detector confidence to keep a face."),
    tile: bool = typer.Option(True, "--tile/--no-tile", help="Also look for small faces on overlapping tiles."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full JSON report here."),
    report_dir: Optional[Path] = typer.Option(
        None,
        "--report",
        help="Write report.html (self-contained: verdicts, score timeline, heat maps and spectra of the most "
        "suspicious faces, chain of custody) and report.json into this folder.",
    ),
    pdf: bool = typer.Option(False, "--pdf", help="With --report: also write report.pdf."),
) -> None:
    """Scan videos and images for forged faces: a verdict per face track and per file."""
    from deepscan.scan import ScanOptions

    if pdf and report_dir is None:
        fail("--pdf needs --report DIR (the PDF is written beside the HTML report)")
    if method == "ensemble" and weights is not None:
        fail("--weights picks one detector's weights; the ensemble uses each member's own (see `deepscan models`)")

    options = ScanOptions(
        method=method,
        weights=weights,
        fps=fps,
        every_frame=every_frame,
        batch_size=batch_size,
        device=device,
        min_face_score=min_face_score,
        tile=tile,
        threshold=threshold,
    )
    raise typer.Exit(_run_scan(inputs, options, json_out, report_dir=report_dir, pdf=pdf))


def _run_scan(
    inputs: list[Path], options, json_out: Path | None, *, report_dir: Path | None = None, pdf: bool = False
) -> int:
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deepscan.media.errors import shown_path
    from deepscan.media.images import discover_media
    from deepscan.report.html import REPORT_JSON
    from deepscan.report.json_report import build_report, utc_now, write_report
    from deepscan.scan import ScanInterrupted, Scanner

    started_at = utc_now()
    judge, config, resolved = _judge_for(options)
    files = discover_media(inputs)
    if not files:
        fail("no image or video found in the given folders")
    if not judge.trained:
        err.print(
            f"[bold magenta]warning:[/] detector [bold]{config.name}[/] has no trained weights: "
            "its scores are random and mean nothing. Pass --weights, or train one with `deepscan train`."
        )
    results, interrupted = [], False

    def report(finished: bool) -> dict:
        return build_report(
            results,
            options=options,
            detector_config=config,
            weights=resolved,
            started_at=started_at,
            finished_at=utc_now() if finished else None,
            interrupted=interrupted,
            decision=judge.custody(),
            files_planned=len(files),
        )

    # The report so far is on disk after each file, marked partial, so that a scan killed outright (SIGKILL, a
    # crash, the machine going down) still leaves the results of the files it finished. Once rewriting a
    # report grown large costs more than a tenth of the scan's time, it is rewritten less often.
    checkpoints = [path for path in (json_out, report_dir and report_dir / REPORT_JSON) if path is not None]
    written_at, write_s, warned = 0.0, 0.0, False

    def checkpoint(force: bool = False) -> None:
        nonlocal written_at, write_s, warned
        start = time.perf_counter()
        if not checkpoints or (not force and start - written_at < 10 * write_s):
            return
        snapshot = report(finished=False)
        for path in checkpoints:
            try:
                write_report(snapshot, path)
            except OSError as error:
                if force:  # before the scan: better to stop now than to scan for nothing
                    fail(f"cannot write the report to {path}: {error.strerror or error}")
                if not warned:
                    err.print(f"[yellow]warning:[/] the report so far could not be written to {escape(str(path))} "
                              f"({escape(error.strerror or str(error))}); trying again after each file",
                              highlight=False)
                    warned = True
        written_at = time.perf_counter()
        write_s = written_at - start

    checkpoint(force=True)
    with Scanner(None, options, judge=judge) as scanner, Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        try:
            for path in files:
                # A file name is text, not markup, and a newline in it must not break the bar's line.
                task = progress.add_task(escape(shown_path(path.name)), total=_expected_frames(path, options),
                                         rate="")
                tick = _rate_ticker(progress, task)
                results.append(scanner.scan_file(path, on_frame=tick))
                progress.remove_task(task)
                _print_file_line(results[-1])
                checkpoint()
        except ScanInterrupted as stop:
            results.append(stop.result)
            interrupted = True
        except KeyboardInterrupt:
            interrupted = True
            err.print("[yellow]interrupted: keeping the results so far[/]")
    _print_summary(results, judge.trained, ensemble=judge.is_ensemble)
    if json_out is not None or report_dir is not None:
        final = report(finished=True)
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
                           explain_faces=not interrupted and not judge.is_ensemble)
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if all(result.status == "complete" for result in results) and len(results) == len(files) else EXIT_INCOMPLETE


def _judge_for(options):
    """The scan's judge (one calibrated detector, or the ensemble), its config and weights for the report."""
    from deepscan.ensemble import ENSEMBLE, EnsembleConfig, EnsembleWeights, plan_ensemble
    from deepscan.scan import Judge
    from deepscan.weights import build_detector

    if options.method != ENSEMBLE:
        detector, resolved = build_detector(options.method, options.weights)
        return Judge.single(detector, resolved, options.threshold), detector.config, resolved
    plan = plan_ensemble()
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


def _print_file_line(result) -> None:
    if result.status == "error":
        err.print(f"[red]error:[/] {escape(result.message)}", highlight=False)
    elif result.status == "partial":
        err.print(f"[yellow]partial:[/] {escape(result.message)} (results so far are kept)", highlight=False)


def _print_summary(results, trained: bool, *, ensemble: bool = False) -> None:
    from deepscan.media.errors import shown_path

    table = Table(title="deepscan verdicts", title_justify="left")
    for column in ("file", "verdict", "score", "faces", "tracks", "status"):
        # The verdict is never cut short ("inconclusive" is the longest); file names give way first.
        table.add_column(column, justify="right" if column in {"score", "faces", "tracks"} else "left",
                         no_wrap=column == "verdict", min_width=12 if column == "verdict" else None)
    if ensemble:
        table.add_column("agree", justify="right")  # share of members whose own verdict is the ensemble's
    notes = []
    for result in results:
        verdict = result.verdict
        label = verdict.label if verdict else "-"
        score = f"{verdict.score:.3f}" if verdict and verdict.score is not None else "-"
        table.add_row(
            Text(shown_path(Path(result.path).name)),  # a name is text, escaped like the errors show it
            Text(label, style=VERDICT_STYLE.get(label, "")),
            score,
            str(len(result.faces)),
            str(len(result.tracks)),
            result.status,
            *([""] if ensemble else []),
        )
        for track in result.tracks:
            table.add_row(
                f"  track {track.track_id}",
                Text(track.label, style=VERDICT_STYLE.get(track.label, "")) if trained else "-",
                f"{track.score:.3f}",
                str(track.faces),
                f"{track.start_s:.1f}-{track.end_s:.1f} s",
                "",
                *([f"{track.agreement:.0%}" if track.agreement is not None else "-"] if ensemble else []),
                style="dim",
            )
            where = f"{shown_path(Path(result.path).name)}, track {track.track_id}"
            if track.members:
                notes.append(f"[bold]members[/] {escape(where)}: {escape(_members_detail(track))}")
            if track.reason and trained:
                style = VERDICT_STYLE["inconclusive"]
                notes.append(f"[{style}]inconclusive[/] {escape(where)}: {escape(track.reason)}")
            elif track.share_outside_range and trained:
                notes.append(f"[bold]partly outside the reliable range[/] {escape(where)}: scored on the "
                             f"{track.judged_faces} of its {track.faces} faces inside it "
                             f"({track.share_outside_range:.0%} of its faces are outside)")
    out.print(table)
    for note in notes:  # below the table, at the full width of the terminal: a narrow column would shred them
        out.print(note, highlight=False)


def _members_detail(track) -> str:
    """Each ensemble member's track score and own label, and the share of members that agree with the ensemble."""
    scores = ", ".join(f"{name} {member['score']:.3f} ({member['label']})" for name, member in track.members.items())
    return f"{scores}; agreement {track.agreement:.0%}"


# --- explain and the HTML report -----------------------------------------------------------------------------

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


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan explain --method ralf\n\n"
        "  deepscan explain --method faclue suspect.mp4\n\n"
        "  deepscan explain -m pel suspect.mp4 --at 12.5s\n\n"
        "  deepscan explain --from case-42/report.json --cam gradcam++ --out case-42/explain\n\n"
        "  deepscan explain -m faclue face.jpg --reference real-faces/"
    )
)
def explain(
    input_path: Optional[Path] = typer.Argument(
        None,
        metavar="[INPUT]",
        help="Image or video. Without it: what the method looks at, and the faces of the newest scan report "
        "in this folder (or --from).",
    ),
    method: Optional[str] = typer.Option(
        None, "--method", "-m", help="Detector (see `deepscan models`). Default: the report's, else faclue."
    ),
    out_dir: Path = typer.Option(Path("deepscan-explain"), "--out", help="Folder for the PNGs."),
    cam: str = typer.Option("gradcam", "--cam", help="gradcam, gradcam++, hirescam or layercam."),
    at: Optional[str] = typer.Option(None, "--at", help="Video only: explain the faces of the frame at this time "
                                     "(12.5s, 12.5 or 1:02.5) instead of each track's most suspicious face."),
    from_report: Optional[Path] = typer.Option(
        None, "--from", help="Explain the most suspicious faces of this scan report (from `scan --json/--report`)."
    ),
    weights: Optional[str] = typer.Option(
        None, help="Weights: a .safetensors path or hf://OWNER/REPO/FILE. Default: the report's, else shipped."
    ),
    reference: Optional[List[Path]] = typer.Option(
        None, "--reference", metavar="PATH",
        help="Images or folders of REAL faces (repeatable): the power spectrum is compared with theirs."
    ),
    per_track: int = typer.Option(1, "--per-track", min=1, help="Faces explained per track, most suspicious first."),
    fps: float = typer.Option(2.0, min=0.01, help="Frames per second sampled from a video to find its faces."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Show where, and in which frequencies, a detector sees a forgery: heat maps, spectra, the method's views."""
    from deepscan.explain import CAM_METHODS, check_report_paths, parse_timestamp, report_weights
    from deepscan.report.json_report import find_recent_report, load_report

    if cam not in CAM_METHODS:
        fail(f"unknown --cam {cam!r} (choose from {', '.join(CAM_METHODS)})")
    if input_path is not None and from_report is not None:
        fail("give an INPUT or --from REPORT, not both")
    if at is not None and input_path is None:
        fail("--at needs a video INPUT")
    if input_path is not None and not input_path.is_file():
        fail(f"{input_path}: no such file")
    report, report_path, seconds = None, None, None
    if at is not None:
        seconds = parse_timestamp(at)
        _require_video(input_path)
    if from_report is not None:
        report, report_path = load_report(from_report), from_report
    elif input_path is None:
        report_path = find_recent_report(Path.cwd())
        report = load_report(report_path) if report_path is not None else None
    if report is not None and from_report is None and method is not None:
        scanned_with = report["custody"]["detector"]["name"]
        if scanned_with != method:
            err.print(
                f"found {escape(str(report_path))}, a scan made with [bold]{escape(scanned_with)}[/]: "
                f"run `deepscan explain --method {escape(scanned_with)}` to explain its faces",
                highlight=False,
            )
            report = None
    if report is not None:
        method = method or report["custody"]["detector"]["name"]
        check_report_paths(report, report_path)  # a report may come from anyone: refused before any file is opened
        if weights is None and method == report["custody"]["detector"]["name"]:
            weights = report_weights(report, report_path)
    method = method or "faclue"
    if method == "ensemble":
        fail("explain works on one detector: pass --method NAME (`deepscan models` lists the ensemble's members)")
    raise typer.Exit(_run_explain(input_path, method, weights, out_dir, cam, seconds, report, report_path,
                                  reference or [], per_track, fps, device))


def _require_video(path: Path) -> None:
    from deepscan.explain import ExplainError
    from deepscan.media.errors import MediaError
    from deepscan.media.images import media_kind

    try:
        kind = media_kind(path)
    except MediaError as error:
        raise ExplainError(str(error)) from None
    if kind != "video":
        raise ExplainError(f"{path}: --at applies to videos only, and this is an image")


def _load_detector_for(method: str, weights: str | None, device: str):
    import torch

    from deepscan.runtime import select_device
    from deepscan.weights import build_detector

    detector, resolved = build_detector(method, weights)
    config = detector.config
    target = torch.device(select_device(device))
    if not resolved.trained:
        err.print(
            f"[bold magenta]warning:[/] detector [bold]{config.name}[/] has no trained weights: its scores and heat "
            "maps are random and mean nothing. Pass --weights, or train one with `deepscan train`."
        )
    return detector.to(target).eval(), resolved


def _run_explain(input_path, method, weights, out_dir, cam, seconds, report, report_path, reference_paths, per_track,
                 fps, device) -> int:
    from deepscan.explain import method_views
    from deepscan.report.figures import save_method_views

    detector, resolved = _load_detector_for(method, weights, device)
    reference = _reference_spectrum(reference_paths, detector.config.input_size) if reference_paths else None
    explained: list[tuple[object, list[Path]]] = []
    skipped = 0
    if input_path is None:
        with err.status(f"finding what {method} looks at..."):
            views = method_views(detector)
            written = save_method_views(views, out_dir, resolved.trained)
        _print_method(views, written[-1])
        if report is not None:
            err.print(f"explaining the most suspicious faces of {escape(str(report_path))}", highlight=False)
            explained, skipped = _explain_report(detector, report, report_path, cam, per_track, reference,
                                                 resolved, out_dir)
    elif seconds is not None:
        explained = _explain_frame_at(detector, input_path, seconds, cam, reference, resolved, out_dir)
    else:
        explained = _explain_input(detector, input_path, method, weights, fps, device, cam, per_track, reference,
                                   resolved, out_dir)
    if explained:
        _print_explained(explained)
    elif input_path is not None:
        err.print(f"[yellow]no face found in {escape(str(input_path))}: nothing to explain[/]", highlight=False)
    return EXIT_INCOMPLETE if skipped else 0


def _save(explanation, out_dir: Path, stem: str) -> list[Path]:
    from deepscan.report.figures import save_explanation

    with err.status(f"drawing {escape(explanation.label)}..."):
        return save_explanation(explanation, out_dir, stem)


def _face_stem(path: Path, kind: str, face: dict) -> str:
    from deepscan.report.figures import safe_name

    if kind == "image":
        return safe_name(f"{path.stem}_face{face['track_id']}")
    return safe_name(f"{path.stem}_track{face['track_id']}_{face['time_s']:.2f}s")


def _explain_report(detector, report, report_path, cam, per_track, reference, resolved, out_dir):
    from deepscan.explain import ExplainError, explain_recorded_faces

    explained, skipped = [], 0
    for entry in report["files"]:
        try:
            for face, explanation in explain_recorded_faces(
                detector, entry, report["custody"]["parameters"], per_track=per_track, cam_method=cam,
                trained=resolved.trained, reference=reference, report_path=report_path,
                calibration=resolved.calibration,
            ):
                stem = _face_stem(Path(entry["path"]), entry["kind"], face)
                explained.append((explanation, _save(explanation, out_dir, stem)))
        except ExplainError as error:
            skipped += 1
            err.print(f"[yellow]skipped:[/] {escape(str(error))}", highlight=False)
    return explained, skipped


def _explain_input(detector, path, method, weights, fps, device, cam, per_track, reference, resolved, out_dir):
    from dataclasses import asdict

    from deepscan.explain import explain_recorded_faces
    from deepscan.scan import ScanOptions, Scanner

    options = ScanOptions(method=method, weights=weights, fps=fps, device=device)
    with err.status(f"finding the faces in {escape(str(path))}..."):
        with Scanner(detector, options, weights=resolved) as scanner:  # calibrated, as a scan records it
            result = scanner.scan_file(path)
    if result.status == "error":
        fail(result.message or f"{path}: cannot be read")
    if result.status == "partial":
        err.print(f"[yellow]partial:[/] {escape(result.message or '')} (explaining the faces found so far)",
                  highlight=False)
    entry = result.to_dict()
    explained = []
    for face, explanation in explain_recorded_faces(
        detector, entry, asdict(options), per_track=per_track, cam_method=cam, trained=resolved.trained,
        reference=reference, calibration=resolved.calibration,
    ):
        explained.append((explanation, _save(explanation, out_dir, _face_stem(path, entry["kind"], face))))
    return explained


def _explain_frame_at(detector, path, seconds, cam, reference, resolved, out_dir):
    from deepscan.explain import explain_face, frame_at
    from deepscan.media.errors import shown_path
    from deepscan.media.faces import FaceDetector, crop_face, face_square
    from deepscan.report.figures import safe_name

    index, time_s, frame = frame_at(path, seconds)
    with FaceDetector() as finder:
        faces = finder.detect(frame)
    explained = []
    size = detector.config.input_size
    for number, face in enumerate(faces, start=1):
        explanation = explain_face(
            detector, crop_face(frame, face, size),
            label=f"{shown_path(path.name)}, face {number} at {time_s:.2f} s (frame {index})",  # drawn in figures
            cam_method=cam, trained=resolved.trained, frame=frame, square=face_square(face), box=face.box,
            reference=reference, calibration=resolved.calibration,
        )
        stem = safe_name(f"{path.stem}_{time_s:.2f}s_face{number}")
        explained.append((explanation, _save(explanation, out_dir, stem)))
    return explained


def _reference_spectrum(paths: list[Path], size: int):
    """Real faces for the spectrum comparison: the largest face of each image, or the whole image when it is
    already a face crop (no face found in it)."""
    import numpy as np
    from PIL import Image

    from deepscan.explain import ExplainError, crop_tensor, reference_spectrum
    from deepscan.media.errors import MediaError
    from deepscan.media.faces import FaceDetector, crop_face
    from deepscan.media.images import discover_media, load_image, media_kind

    faces = []
    with err.status("reading the reference faces..."), FaceDetector() as finder:
        for path in discover_media(paths):
            try:
                if media_kind(path) != "image":
                    continue
                image = load_image(path)
            except MediaError as error:
                err.print(f"[yellow]reference skipped:[/] {escape(str(error))}", highlight=False)
                continue
            found = finder.detect(image)
            if found:
                crop = crop_face(image, max(found, key=lambda face: face.size), size)
            else:
                crop = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
            faces.append(crop_tensor(crop))
    if not faces:
        raise ExplainError("--reference: no readable image of a real face was found")
    return reference_spectrum(faces, ", ".join(str(path) for path in paths))


def _print_method(views, figure: Path) -> None:
    from rich.panel import Panel

    lines = [f"[bold]{escape(views.method)}[/]: {escape(views.paper)}", "", escape(views.summary), ""]
    if views.fixed:
        lines.append("What it looks at, whatever the face: " + ", ".join(escape(v.title) for v in views.fixed.values()))
    elif views.example:
        lines.append(f"Its views all depend on the face; shown on {escape(views.example_source)}.")
    lines.append(f"Figure: {escape(str(figure))}")
    out.print(Panel("\n".join(lines), title="method", title_align="left"))


def _print_explained(explained) -> None:
    table = Table(title="explained faces", title_justify="left")
    # P(fake) is calibrated by the weights' model card, as the scan records it.
    for column in ("face", "P(fake)", "figure", "PNGs"):
        # Paths fold rather than end in "...": the user needs all of it to open the figure.
        table.add_column(column, justify="right" if column in {"P(fake)", "PNGs"} else "left", overflow="fold")
    for explanation, written in explained:
        table.add_row(escape(explanation.label), f"{explanation.fake_probability:.3f}", escape(str(written[-1])),
                      str(len(written)))
    out.print(table)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan train recipes/demo-faclue.yaml\n\n"
        "  deepscan train recipes/demo-faclue.yaml --set optim.lr=1e-4 --set epochs=3 -o runs/quick\n\n"
        "  deepscan train my-cameras.yaml --init shipped   (fine-tune the shipped detector)\n\n"
        "  deepscan train recipes/faclue.yaml -o runs/ff --resume\n\n"
        "  torchrun --nproc_per_node=4 -m deepscan train recipes/faclue.yaml"
    )
)
def train(
    recipe: Path = typer.Argument(..., help="Training recipe (YAML), e.g. recipes/demo-faclue.yaml."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe key: --set optim.lr=1e-4 (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder. Default: runs/<recipe name>."),
    init: Optional[str] = typer.Option(
        None, help="Start from these weights: a .safetensors path, hf://OWNER/REPO/FILE, or 'shipped'."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last checkpoint."),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="Only extract the faces into the cache."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda (default: the recipe's)."),
) -> None:
    """Train a detector from a recipe: weights (safetensors) and a model card that `scan --weights` loads."""
    from deepscan.train.command import run_train

    raise typer.Exit(run_train(recipe, overrides, output, init, resume, prepare_only, device, err))


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan evaluate --method faclue --weights faclue.safetensors data/celebdf/\n\n"
        "  deepscan evaluate -m faclue -m pel data/FaceForensics++/ --val data/FaceForensics++/ --out results/\n\n"
        "  deepscan evaluate -m ralf test-set/ --perturb all --out robustness/\n\n"
        "  deepscan evaluate -m faclue labels.csv --perturb gaussian_blur:1,2,3 --perturb h264"
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
) -> None:
    """Measure detectors on labelled data: AUC, AP, EER, accuracy, TPR at low FPR, and false alarms and fakes
    caught at the model card's threshold, per frame and per video, on calibrated P(fake)."""
    from deepscan.evaluate.command import EvaluateOptions, run_evaluate

    if compression not in {"raw", "c23", "c40"}:
        fail(f"unknown --compression {compression!r} (raw, c23 or c40)")
    options = EvaluateOptions(
        data=data, methods=methods, weights=weights or [], val=val or [], perturb=perturb or [], out_dir=out_dir,
        frames_per_video=frames_per_video, batch_size=batch_size, device=device, bootstrap=bootstrap, seed=seed,
        cache_dir=cache_dir, use_score_cache=score_cache, compression=compression,
    )
    raise typer.Exit(run_evaluate(options, out, err))


@app.command(epilog="Examples:\n\n  deepscan models\n\n  deepscan models --json")
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered detectors (and the ensemble): paper, input size, parameters, where trained weights are."""
    import torch

    from deepscan.detectors import create_detector, get_config, list_detectors
    from deepscan.ensemble import ENSEMBLE, ENSEMBLE_PAPER, likely_members
    from deepscan.weights import WEIGHTS_AT_HAND, shipped_build, weights_status

    rows = []
    for name in list_detectors():
        config = get_config(name)
        status = weights_status(config)  # never downloads: listing must stay quick and offline
        # Shipped weights may be of another build than the paper default (backbone, input size): list that build.
        built = shipped_build(config) if status == "shipped" else {}
        with torch.device("meta"):  # shapes only: counting needs no memory and no initialisation
            parameters = create_detector(name, **built.get("kwargs", {})).count_parameters()
        rows.append(
            {
                "name": name,
                "paper": config.paper,
                "input_size": built.get("input_size", config.input_size),
                "parameters": parameters,
                "weights_available": status in WEIGHTS_AT_HAND,
                "weights": status,
            }
        )
    members = likely_members({row["name"]: row["weights"] for row in rows})
    rows.append(
        {
            "name": ENSEMBLE,
            "paper": ENSEMBLE_PAPER,
            "input_size": None,  # each member at its own
            "parameters": sum(row["parameters"] for row in rows if row["name"] in members),
            "weights_available": bool(members),
            "weights": f"members: {', '.join(members)}" if members else "no member: no detector has trained weights",
            "members": members,
        }
    )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="registered detectors", title_justify="left")
    # Every column but the paper keeps its full width; the paper's title gives way (full titles: `--json`).
    table.add_column("name", no_wrap=True, min_width=max(len(row["name"]) for row in rows))
    table.add_column("paper", overflow="ellipsis", ratio=1)
    table.add_column("input", justify="right", no_wrap=True, min_width=7)
    table.add_column("parameters", justify="right", no_wrap=True, min_width=10)
    table.add_column("weights", overflow="fold", min_width=9)
    for row in rows:
        status = row["weights"]
        colour = "green" if row["weights_available"] else "yellow" if status == "on the hub" else "magenta"
        table.add_row(
            row["name"],
            Text(row["paper"], no_wrap=True, overflow="ellipsis"),
            f"{row['input_size']}x{row['input_size']}" if row["input_size"] else "per member",
            f"{row['parameters'] / 1e6:.2f} M",
            Text(status, style=colour),
        )
    out.print(table)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from deepscan import __version__

        print(f"deepscan {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console entry point: one-line errors instead of tracebacks (DEEPSCAN_DEBUG=1 shows them)."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the last line of defence for the user
        if os.environ.get("DEEPSCAN_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {type(error).__name__}: {error} (DEEPSCAN_DEBUG=1 for details)")
        sys.exit(EXIT_INTERNAL)
