"""The command line: thin Typer commands over the library, rendered with rich.

Heavy imports (torch, timm, mediapipe) happen inside the commands so that ``deepscan --help`` is quick.
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

app = typer.Typer(
    name="deepscan",
    help="Tell whether the faces in a video or image were forged, and show why.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # one message, one line: never wrapped

EXIT_INCOMPLETE = 1  # some input could not be read in full
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def fail(message: str, code: int = EXIT_USAGE) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


VERDICT_STYLE = {"fake": "bold red", "real": "bold green", "no face": "yellow", "untrained": "magenta"}


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan scan suspect.mp4\n\n"
        "  deepscan scan case-42/ --json case-42.json --fps 4\n\n"
        "  deepscan scan clip.mp4 --method faclue --weights my-detector.safetensors --every-frame"
    )
)
def scan(
    inputs: List[Path] = typer.Argument(..., help="Videos, images or folders (searched recursively)."),
    method: str = typer.Option("faclue", "--method", "-m", help="Detector to use (see `deepscan models`)."),
    weights: Optional[str] = typer.Option(
        None, help="Weights: a .safetensors path or hf://OWNER/REPO/FILE. Default: the detector's shipped weights."
    ),
    fps: float = typer.Option(2.0, min=0.01, help="Frames per second sampled from videos."),
    every_frame: bool = typer.Option(False, "--every-frame", help="Scan every frame instead of sampling."),
    batch_size: int = typer.Option(16, min=1, help="Faces per inference batch."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="P(fake) at or above which a track is fake."),
    min_face_score: float = typer.Option(0.5, min=0.0, max=1.0, help="Face detector confidence to keep a face."),
    tile: bool = typer.Option(True, "--tile/--no-tile", help="Also look for small faces on overlapping tiles."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full JSON report here."),
) -> None:
    """Scan videos and images for forged faces: a verdict per face track and per file."""
    from deepscan.scan import ScanOptions

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
    raise typer.Exit(_run_scan(inputs, options, json_out))


def _run_scan(inputs: list[Path], options, json_out: Path | None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deepscan.media.images import discover_media
    from deepscan.registry import UnknownDetectorError, create_detector, get_config
    from deepscan.report.json_report import build_report, utc_now, write_report
    from deepscan.scan import Scanner
    from deepscan.weights import WeightsError, load_weights, resolve_weights

    started_at = utc_now()
    try:
        config = get_config(options.method)
        resolved = resolve_weights(config.weights, options.weights)
        detector = create_detector(options.method)
        load_weights(detector, resolved)
    except (UnknownDetectorError, WeightsError) as error:
        fail(str(error))
    files = discover_media(inputs)
    if not files:
        fail("no image or video found in the given folders")
    if not resolved.trained:
        err.print(
            f"[bold magenta]warning:[/] detector [bold]{config.name}[/] has no trained weights: "
            "its scores are random and mean nothing. Pass --weights, or train one with `deepscan train`."
        )
    results, interrupted = [], False
    try:
        scanner = Scanner(detector, options, trained=resolved.trained)
    except ValueError as error:
        fail(str(error))
    with scanner, Progress(
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
                task = progress.add_task(path.name, total=_expected_frames(path, options), rate="")
                tick = _rate_ticker(progress, task)
                results.append(scanner.scan_file(path, on_frame=tick))
                progress.remove_task(task)
                _print_file_line(results[-1])
        except KeyboardInterrupt:
            interrupted = True
            err.print("[yellow]interrupted: keeping the results so far[/]")
    _print_summary(results, resolved.trained)
    if json_out is not None:
        report = build_report(
            results,
            options=options,
            detector_config=config,
            weights=resolved,
            started_at=started_at,
            finished_at=utc_now(),
            interrupted=interrupted,
        )
        write_report(report, json_out)
        err.print(f"report written to {json_out}")
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if all(result.status == "complete" for result in results) and len(results) == len(files) else EXIT_INCOMPLETE


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


def _print_summary(results, trained: bool) -> None:
    table = Table(title="deepscan verdicts", title_justify="left")
    for column in ("file", "verdict", "score", "faces", "tracks", "status"):
        table.add_column(column, justify="right" if column in {"score", "faces", "tracks"} else "left")
    for result in results:
        verdict = result.verdict
        label = verdict.label if verdict else "-"
        score = f"{verdict.score:.3f}" if verdict and verdict.score is not None else "-"
        table.add_row(
            Text(Path(result.path).name),
            Text(label, style=VERDICT_STYLE.get(label, "")),
            score,
            str(len(result.faces)),
            str(len(result.tracks)),
            result.status,
        )
        for track in result.tracks:
            table.add_row(
                f"  track {track.track_id}",
                track.label if trained else "-",
                f"{track.score:.3f}",
                str(track.faces),
                f"{track.start_s:.1f}-{track.end_s:.1f} s",
                "",
                style="dim",
            )
    out.print(table)


@app.command(epilog="Examples:\n\n  deepscan models\n\n  deepscan models --json")
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered detectors: paper, input size, parameters, whether trained weights are available."""
    from deepscan.registry import create_detector, get_config, list_detectors
    from deepscan.weights import WeightsError, resolve_weights

    rows = []
    for name in list_detectors():
        config = get_config(name)
        try:
            available = resolve_weights(config.weights).trained
        except WeightsError:
            available = False
        rows.append(
            {
                "name": name,
                "paper": config.paper,
                "input_size": config.input_size,
                "parameters": create_detector(name).count_parameters(),
                "weights_available": available,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="registered detectors", title_justify="left")
    for column in ("name", "paper", "input", "parameters", "weights"):
        table.add_column(column, justify="right" if column in {"input", "parameters"} else "left")
    for row in rows:
        table.add_row(
            row["name"],
            row["paper"],
            f"{row['input_size']}x{row['input_size']}",
            f"{row['parameters'] / 1e6:.2f} M",
            "[green]yes[/]" if row["weights_available"] else "[magenta]untrained[/]",
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
        sys.exit(3)
