"""`deepscan explain`: where, and in which frequencies, a detector sees a forgery."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from deepscan.catalog import DEFAULT_METHOD
from deepscan.cli.app import app
from deepscan.cli.console import err, fail, out
from deepscan.errors import EXIT_INCOMPLETE


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
        None, "--method", "-m", help=f"Detector (see `deepscan models`). Default: the report's, else {DEFAULT_METHOD}."
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
    seconds = _checked_input(input_path, from_report, at, cam)
    report, report_path = _report_to_explain(input_path, from_report, method)
    if report is not None:
        method, weights = _method_and_weights_of(report, report_path, method, weights)
    method = method or DEFAULT_METHOD
    if method == "ensemble":
        fail("explain works on one detector: pass --method NAME (`deepscan models` lists the ensemble's members)")
    raise typer.Exit(_run_explain(input_path, method, weights, out_dir, cam, seconds, report, report_path,
                                  reference or [], per_track, fps, device))


def _checked_input(input_path: Path | None, from_report: Path | None, at: str | None, cam: str) -> float | None:
    """What to explain, checked before anything is loaded (one line each); the ``--at`` time in seconds."""
    from deepscan.explain import CAM_METHODS, parse_timestamp

    if cam not in CAM_METHODS:
        fail(f"unknown --cam {cam!r} (choose from {', '.join(CAM_METHODS)})")
    if input_path is not None and from_report is not None:
        fail("give an INPUT or --from REPORT, not both")
    if at is not None and input_path is None:
        fail("--at needs a video INPUT")
    if input_path is not None and not input_path.is_file():
        fail(f"{input_path}: no such file")
    if at is None:
        return None
    seconds = parse_timestamp(at)
    _require_video(input_path)
    return seconds


def _report_to_explain(input_path: Path | None, from_report: Path | None, method: str | None):
    """The report whose faces to explain, and its path: ``--from``'s, else without an INPUT the newest in this
    folder, unless it was made with another ``--method`` than the one asked for (then the user is told how)."""
    from deepscan.report.json_report import find_recent_report, load_report

    if from_report is not None:
        return load_report(from_report), from_report
    if input_path is not None:
        return None, None
    report_path = find_recent_report(Path.cwd())
    report = load_report(report_path) if report_path is not None else None
    if report is not None and method is not None:
        scanned_with = report["custody"]["detector"]["name"]
        if scanned_with != method:
            err.print(
                f"found {escape(str(report_path))}, a scan made with [bold]{escape(scanned_with)}[/]: "
                f"run `deepscan explain --method {escape(scanned_with)}` to explain its faces",
                highlight=False,
            )
            return None, report_path
    return report, report_path


def _method_and_weights_of(report: dict, report_path: Path, method: str | None, weights: str | None):
    """The method (the report's unless given) and weights (the report's for its own method, unless given); a report
    naming files or weights it may not is refused before any file is opened (a report may come from anyone)."""
    from deepscan.explain import check_report_paths, report_weights

    scanned_with = report["custody"]["detector"]["name"]
    method = method or scanned_with
    check_report_paths(report, report_path)
    if weights is None and method == scanned_with:
        weights = report_weights(report, report_path)
    return method, weights


def _require_video(path: Path) -> None:
    from deepscan.explain import ExplainError
    from deepscan.media import open_media
    from deepscan.media.errors import MediaError

    try:
        kind = open_media(path).kind  # by the extension, else by opening it
    except MediaError as error:
        raise ExplainError(str(error)) from None
    if kind != "video":
        raise ExplainError(f"{path}: --at applies to videos only, and this is an image")


def _load_detector_for(method: str, weights: str | None, device: str):
    import torch

    from deepscan.runtime import select_device
    from deepscan.weights import build_detector, untrained_warning

    detector, resolved = build_detector(method, weights)
    config = detector.config
    target = torch.device(select_device(device))
    if not resolved.trained:
        err.print(f"[bold magenta]warning:[/] {escape(untrained_warning(config.name, 'scores and heat maps'))}",
                  highlight=False)
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
    from deepscan.kept_faces import KeepFaces
    from deepscan.media.checksums import Checksums
    from deepscan.scan import ScanOptions, Scanner

    options = ScanOptions(method=method, weights=weights, fps=fps, device=device)
    checksums = Checksums()  # the file hashed once: by the scan, not again to recover its frames
    with err.status(f"finding the faces in {escape(str(path))}..."):
        # Calibrated, as a scan records it; the faces to explain kept, so that the file is decoded once.
        with Scanner(detector, options, weights=resolved, checksums=checksums,
                     keep_faces=KeepFaces(per_track=per_track)) as scanner:
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
        reference=reference, calibration=resolved.calibration, checksums=checksums, kept=result.kept_faces,
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
    from deepscan.media import open_media
    from deepscan.media.errors import MediaError
    from deepscan.media.faces import FaceDetector, crop_face
    from deepscan.media.images import discover_media

    faces = []
    with err.status("reading the reference faces..."), FaceDetector() as finder:
        for path in discover_media(paths):
            try:
                with open_media(path) as media:
                    if media.kind != "image":
                        continue
                    [frame] = media.frames()
                image = frame.image
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
