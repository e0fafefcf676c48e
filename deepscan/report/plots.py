"""Figures for explanations, reports, training and evaluation: map panels, the power-spectrum plot, the score
timeline, the PDF, and the one style every deepscan figure is drawn in.

The style lives here, once (the palette, :func:`new_figure`, :func:`save_png` and :func:`figure_png`), and the
training curves (``deepscan.train.run_log``) and the evaluation plots (``deepscan.evaluate.report``) use it too.
Everything is drawn on ``matplotlib.figure.Figure`` objects, never through pyplot: no global figure registry to
leak or share between threads, no backend chosen for the whole process (``matplotlib.use``), and no GUI backend
is ever touched. Colour maps are the perceptually uniform, colour-blind-safe ones (viridis, magma, cividis, and
twilight for angles, which wrap round); lines use the Okabe-Ito palette, which stays distinguishable under every
common colour vision deficiency.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# --- style ------------------------------------------------------------------------------------------------

# Okabe & Ito (2008), "Color Universal Design": black first is left out, it is kept for reference lines.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
REFERENCE_LINE = "#000000"
MUTED_LINE = "#999999"  # what is drawn for context only: chance on a ROC plot, tracks beyond the legend
FAKE_SHADE = "#D55E00"  # vermillion: stays distinct from the blue/orange track lines for colour-blind readers
# Real and fake side by side (histograms): blue and vermillion, the pair that colour-blind readers tell apart best.
REAL_COLOUR = "#0072B2"
FAKE_COLOUR = FAKE_SHADE
# Yellow and sky blue read on faces and dark backgrounds alike, and stay apart for colour-blind readers;
# the second outline is also dashed so that it never depends on colour alone.
OUTLINE_STYLES = (("#F0E442", "-"), ("#56B4E9", "--"), ("#FFFFFF", ":"))

COLUMN_INCHES = 4.3
ROW_INCHES = 4.1
TITLE_CHARACTERS_PER_COLUMN = 34


def line_colour(index: int) -> str:
    """The ``index``-th line's colour (the palette repeats after eight lines)."""
    return OKABE_ITO[index % len(OKABE_ITO)]


def new_figure(width_in: float, height_in: float) -> "Figure":
    """A figure of the given size in inches, laid out by matplotlib's constrained layout (no ``tight_layout``)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def figure_png(figure: "Figure", dpi: int = 100) -> bytes:
    """The figure as PNG bytes, on white."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def save_png(figure: "Figure", path: Path, dpi: int = 100) -> Path:
    """The figure as a PNG file, on white (its folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi, facecolor="white")
    return path


class Drawable(Protocol):
    key: str
    title: str
    description: str

    @property
    def span(self) -> int: ...

    def draw(self, figure: "Figure", ax: "Axes") -> None: ...


def _wrapped(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width=width)) if text else ""


def _wrapped_lines(text: str, width: int) -> str:
    """Each line of ``text`` wrapped on its own, so that deliberate line breaks stay."""
    return "\n".join(_wrapped(line, width) or line for line in text.split("\n")) if text else ""


@dataclass
class Panel:
    """One picture: a map ``(H, W)``, maps side by side ``(K, H, W)`` or a colour image ``(H, W, 3)`` in [0, 1].

    ``overlay`` is a heat map drawn over a colour image (NaN where there is none); ``outlines`` are boxes
    ``(x0, y0, x1, y1)`` in the image's pixels with a legend label each.
    """

    key: str
    title: str
    image: np.ndarray
    cmap: str = "viridis"
    description: str = ""
    colorbar_label: str | None = None
    xlabel: str | None = None
    ylabel: str | None = None
    extent: tuple[float, float, float, float] | None = None
    limits: tuple[float, float] | None = None
    parts: tuple[str, ...] = ()
    overlay: np.ndarray | None = None
    overlay_cmap: str = "magma"
    overlay_label: str = ""
    outlines: tuple[tuple[tuple[float, float, float, float], str], ...] = ()
    columns: int | None = None  # grid cells to take; by default two for wide pictures, else one

    @property
    def is_colour(self) -> bool:
        return self.image.ndim == 3 and self.image.shape[-1] == 3 and not self.parts

    @property
    def is_stack(self) -> bool:
        return self.image.ndim == 3 and not self.is_colour

    @property
    def span(self) -> int:
        """Grid columns the panel takes: wide pictures (maps side by side, band tables) take two."""
        if self.columns is not None:
            return self.columns
        height, width = self.display_image().shape[:2]
        return 2 if width >= 2 * height else 1

    def display_image(self) -> np.ndarray:
        image = np.asarray(self.image, dtype=np.float64)
        if not self.is_stack:
            return image
        # NaN gaps (drawn as background) keep the maps visibly apart.
        gap = max(1, image.shape[-1] // 16)
        columns = []
        for index, part in enumerate(image):
            if index:
                columns.append(np.full((part.shape[0], gap), np.nan))
            columns.append(part)
        return np.concatenate(columns, axis=1)

    def constant_value(self) -> float | None:
        """The map's single value when it holds only one (an untrained mask, say), else None."""
        if self.is_colour:
            return None
        finite = np.asarray(self.image, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return None
        low, high = float(finite.min()), float(finite.max())
        return low if high - low <= 1e-9 * max(1.0, abs(high)) else None

    def _colour_limits(self, image: np.ndarray) -> tuple[float, float]:
        if self.limits is not None:
            return self.limits
        constant = self.constant_value()
        if constant is not None:
            return constant - 1.0, constant + 1.0  # mid-colour, with a readable scale round the value
        finite = image[np.isfinite(image)]
        if finite.size == 0:
            return 0.0, 1.0
        # Spectra have a few extreme coefficients (DC, exact zeros) that would flatten the rest of the range.
        low, high = np.percentile(finite, [0.5, 99.5])
        if high <= low:
            low, high = float(finite.min()), float(finite.max())
        return float(low), float(high)

    def draw(self, figure: "Figure", ax: "Axes") -> None:
        import matplotlib as mpl
        from matplotlib.patches import Rectangle

        image = self.display_image()
        constant = self.constant_value()
        title = self.title + (f" [constant: {constant:.4g} everywhere]" if constant is not None else "")
        ax.set_title(_wrapped(title, TITLE_CHARACTERS_PER_COLUMN * self.span), fontsize=12)
        if self.is_colour:
            ax.imshow(np.clip(image, 0.0, 1.0), extent=self.extent, interpolation="nearest")
        else:
            image = np.where(np.isinf(image), np.nan, image)
            low, high = self._colour_limits(image)
            cmap = mpl.colormaps[self.cmap].with_extremes(bad="white")
            shown = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, extent=self.extent, interpolation="nearest")
            bar = figure.colorbar(shown, ax=ax, shrink=0.82, pad=0.02)
            bar.formatter.set_useOffset(False)  # "1e-13 - 3.01e-1" above a bar reads as noise
            if self.colorbar_label:
                bar.set_label(self.colorbar_label, fontsize=10)
            bar.ax.tick_params(labelsize=9)
        if self.overlay is not None:
            cmap = mpl.colormaps[self.overlay_cmap]
            overlay = np.asarray(self.overlay, dtype=np.float64)
            relevance = np.clip(np.nan_to_num(overlay, nan=0.0), 0.0, 1.0)
            rgba = cmap(relevance)
            # Opacity follows relevance: the face stays visible where the map says nothing.
            rgba[..., 3] = np.where(np.isnan(overlay), 0.0, 0.08 + 0.55 * relevance)
            ax.imshow(rgba, extent=self.extent, interpolation="bilinear")
            scale = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0.0, 1.0), cmap=cmap)
            bar = figure.colorbar(scale, ax=ax, shrink=0.82, pad=0.02)
            bar.set_label(self.overlay_label, fontsize=10)
            bar.ax.tick_params(labelsize=9)
        for index, ((x0, y0, x1, y1), label) in enumerate(self.outlines):
            colour, style = OUTLINE_STYLES[index % len(OUTLINE_STYLES)]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style,
                                   linewidth=1.6, label=label))
        if self.outlines:
            legend = ax.legend(loc="upper left", fontsize=9, framealpha=0.8, facecolor="#333333", edgecolor="none")
            for text in legend.get_texts():
                text.set_color("white")
        if self.parts:
            height, width = np.asarray(self.image).shape[-2:]
            gap = max(1, width // 16)
            ax.set_xticks([index * (width + gap) + width / 2 for index in range(len(self.parts))], self.parts)
            ax.set_yticks([])
        elif self.xlabel is None and self.ylabel is None:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.tick_params(labelsize=9)
        if self.xlabel:
            ax.set_xlabel(self.xlabel, fontsize=10)
        if self.ylabel:
            ax.set_ylabel(self.ylabel, fontsize=10)


@dataclass
class SpectrumPanel:
    """The azimuthally averaged power spectrum of a face, against a reference of real faces when there is one."""

    key: str
    title: str
    frequency: np.ndarray  # cycles per pixel
    power_db: np.ndarray
    reference_mean_db: np.ndarray | None = None
    reference_std_db: np.ndarray | None = None
    reference_label: str = ""
    description: str = ""

    @property
    def span(self) -> int:
        return 1

    def draw(self, figure: "Figure", ax: "Axes") -> None:
        if self.reference_mean_db is not None:
            mean, std = self.reference_mean_db, self.reference_std_db
            if std is not None:
                ax.fill_between(self.frequency, mean - std, mean + std, color=OKABE_ITO[1], alpha=0.25,
                                label="reference ± 1 std", linewidth=0)
            ax.plot(self.frequency, mean, color=OKABE_ITO[1], linestyle="--", linewidth=1.4, label=self.reference_label)
        ax.plot(self.frequency, self.power_db, color=OKABE_ITO[0], linewidth=1.6, label="this face")
        ax.set_title(_wrapped(self.title, TITLE_CHARACTERS_PER_COLUMN), fontsize=12)
        ax.set_xlabel("spatial frequency (cycles/pixel)", fontsize=10)
        ax.set_ylabel("power (dB relative to the total)", fontsize=10)
        ax.set_xlim(0.0, float(self.frequency.max()) if len(self.frequency) else 0.5)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=9)
        ax.legend(fontsize=9, loc="upper right")


# --- figures --------------------------------------------------------------------------------------------


def compose(title: str, subtitle: str, panels: list[Drawable], columns: int = 4, notes: str = "") -> "Figure":
    """Panels packed row by row on a grid of ``columns`` (wide panels take two cells), under a title."""
    # A figure with fewer panels than columns is only as wide as its panels.
    columns = max(1, min(columns, sum(min(panel.span, columns) for panel in panels)))
    rows: list[list[Drawable]] = [[]]
    used = 0
    for panel in panels:
        span = min(panel.span, columns)
        if used + span > columns:
            rows.append([])
            used = 0
        rows[-1].append(panel)
        used += span
    rows = [row for row in rows if row]
    # Characters per line at the font sizes used: about 9 per inch for the title, 15 for the notes.
    title = _wrapped_lines(title, int(columns * COLUMN_INCHES * 7.5))
    subtitle = _wrapped_lines(subtitle, int(columns * COLUMN_INCHES * 8))
    notes = _wrapped_lines(notes, int(columns * COLUMN_INCHES * 12))
    header_in = 0.7 + 0.28 * (subtitle.count("\n") + 1) + (0.2 * (notes.count("\n") + 1) if notes else 0.0)
    figure = new_figure(columns * COLUMN_INCHES, max(1, len(rows)) * ROW_INCHES + header_in)
    figure.suptitle(title + ("\n" + subtitle if subtitle else ""), fontsize=15, x=0.01, ha="left")
    if notes:
        figure.supxlabel(notes, fontsize=10, color="#333333")
    if not rows:
        return figure
    grid = figure.add_gridspec(len(rows), columns)
    for row_index, row in enumerate(rows):
        column = 0
        for panel in row:
            span = min(panel.span, columns)
            panel.draw(figure, figure.add_subplot(grid[row_index, column : column + span]))
            column += span
    return figure


def single_panel_figure(panel: Drawable, caption_width: int = 90) -> "Figure":
    """One panel on its own, with its description underneath: one PNG per view."""
    caption = _wrapped(panel.description, caption_width)
    width = 5.2 * panel.span + 0.8
    figure = new_figure(width, 4.6 + 0.18 * (caption.count("\n") + 1 if caption else 0))
    ax = figure.add_subplot(1, 1, 1)
    panel.draw(figure, ax)
    if caption:
        # supxlabel, unlike free text, is given room by the constrained layout.
        figure.supxlabel(caption, fontsize=9, color="#333333")
    return figure


# --- scan timeline ---------------------------------------------------------------------------------------

MAX_TRACKS_IN_LEGEND = 8


def timeline_figure(entry: dict, threshold: float, *, trained: bool = True) -> "Figure":
    """P(fake) of every scored face over time, one line per track; a bar per face for a still image."""
    figure = new_figure(10.0, 4.2)
    ax = figure.add_subplot(1, 1, 1)
    name = Path(entry["path"]).name
    faces = [face for face in entry.get("faces", []) if face.get("fake_probability") is not None]
    tracks = sorted(entry.get("tracks", []), key=lambda track: -track["score"])
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("P(fake) (score, 0-1)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.axhspan(threshold, 1.0, color=FAKE_SHADE, alpha=0.07, linewidth=0, label="judged fake (at or above threshold)")
    ax.axhline(threshold, color=REFERENCE_LINE, linestyle="--", linewidth=1.0, label=f"threshold {threshold:.2f}")
    if entry.get("kind") == "image" or not faces:
        _per_face_bars(ax, faces)
        ax.set_title(f"{name}: P(fake) per face", loc="left", fontsize=11)
    else:
        _per_track_lines(ax, faces, tracks, entry, trained)
        ax.set_title(f"{name}: P(fake) over time, one line per face track", loc="left", fontsize=11)
    if not trained:
        ax.text(0.99, 0.02, "untrained detector: these scores are random", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8, color="#6a3d9a")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return figure


def _per_track_lines(ax: "Axes", faces: list[dict], tracks: list[dict], entry: dict, trained: bool) -> None:
    by_track: dict[int, list[dict]] = {}
    for face in faces:
        by_track.setdefault(face["track_id"], []).append(face)
    for rank, track in enumerate(tracks):
        points = sorted(by_track.get(track["track_id"], []), key=lambda face: face["time_s"])
        times = [face["time_s"] for face in points]
        scores = [face["fake_probability"] for face in points]
        if rank < MAX_TRACKS_IN_LEGEND:
            colour = line_colour(rank)
            label = f"track {track['track_id']}: median {track['score']:.3f}"
            if trained:  # an untrained detector's labels mean nothing; the legend does not repeat them
                label += f" ({track['label']})"
        else:
            colour, label = MUTED_LINE, ("other tracks" if rank == MAX_TRACKS_IN_LEGEND else None)
        ax.plot(times, scores, marker="o", markersize=3.5, linewidth=1.3, color=colour, label=label)
        # The median is what the verdict reads: drawn over the span of the track it summarises.
        ax.hlines(track["score"], track["start_s"], track["end_s"], colors=colour, linestyles=":", linewidth=1.2)
    duration = (entry.get("media") or {}).get("duration_s")
    last = max((face["time_s"] for face in faces), default=0.0)
    ax.set_xlim(0.0, max(float(duration or 0.0), last) or 1.0)
    ax.set_xlabel("time in the video (s); dotted: each track's median")


def _per_face_bars(ax: "Axes", faces: list[dict]) -> None:
    if not faces:
        ax.text(0.5, 0.5, "no face was found: nothing to score", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks([])
        ax.set_xlabel("face")
        return
    order = sorted(faces, key=lambda face: face["track_id"])
    positions = np.arange(len(order))
    colours = [line_colour(index) for index in range(len(order))]
    scores = [face["fake_probability"] for face in order]
    ax.bar(positions, scores, color=colours, width=0.6, label="P(fake) of the face")
    ax.set_xticks(positions, [f"face {face['track_id']}" for face in order])
    ax.set_xlim(-0.8, len(order) - 0.2)
    ax.set_xlabel("face (track id)")


def write_pdf(report: dict, figures_by_file: list[tuple[str, list["Figure"]]], path: Path) -> Path:
    """A printable copy: a summary page, then for each file its timeline and face figures."""
    from matplotlib.backends.backend_pdf import PdfPages

    path.parent.mkdir(parents=True, exist_ok=True)
    custody = report["custody"]
    metadata = {"Title": "deepscan scan report", "Creator": f"deepscan {custody['deepscan_version']}"}
    with PdfPages(path, metadata=metadata) as pdf:
        pdf.savefig(_summary_page(report))
        for _, figures in figures_by_file:
            for figure in figures:
                pdf.savefig(figure)
    return path


def _summary_page(report: dict) -> "Figure":
    figure = new_figure(8.27, 11.69)  # A4 portrait
    custody, summary = report["custody"], report["summary"]
    weights = custody["weights"]
    lines = [
        f"detector: {custody['detector']['name']} ({custody['detector']['paper']})",
        f"weights: {weights['source']}, trained: {'yes' if weights['trained'] else 'NO (scores are random)'}",
        f"weights sha256: {weights['sha256'] or '-'}",
        f"scan: {custody['started_at']} to {custody['finished_at']} on {custody['host']}",
        f"deepscan {custody['deepscan_version']}, Python {custody['python']}, torch {custody['torch']}",
        "",
        f"files: {summary['files']} (complete {summary['complete']}, partial {summary['partial']}, "
        f"errors {summary['errors']}){', interrupted' if summary['interrupted'] else ''}",
        "",
    ]
    for entry in report["files"]:
        verdict = entry.get("verdict") or {}
        score = verdict.get("score")
        lines.append(
            f"{Path(entry['path']).name}: {verdict.get('label', entry['status'])}"
            + (f", score {score:.3f}" if score is not None else "")
        )
        lines.append(f"    sha256 {entry.get('sha256') or '-'}")
        if verdict.get("reason"):
            lines.append(f"    {verdict['reason']}")
        if entry.get("message"):
            lines.append(f"    {entry['message']}")
    lines += ["", "The pages that follow show each file's score timeline and its most suspicious faces.",
              "report.json beside this file holds every number; report.html shows the same in a browser."]
    # About 88 monospace characters fit the A4 width at 8.5 pt between the margins.
    wrapped = "\n".join(textwrap.fill(line, 88, subsequent_indent="    ") if line else "" for line in lines)
    figure.text(0.07, 0.955, "deepscan scan report", fontsize=16, weight="bold", va="top", ha="left")
    figure.text(0.07, 0.92, wrapped, fontsize=8.5, va="top", ha="left", family="monospace")
    return figure
