"""The scan report as one self-contained HTML page (and, optionally, a PDF), written beside its JSON.

The page is rendered from the JSON report itself, never from the live scan objects, so that every number it
shows is the JSON's; the JSON is also embedded in the page (a ``<script type="application/json">`` block,
which browsers do not run) so that the page alone is the whole record. Images are PNGs embedded as data URIs:
the page has no script, no stylesheet and no image outside itself, and opens offline in any browser.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deepscan.media.errors import shown_path
from deepscan.report.json_report import write_report
from deepscan.runtime import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from deepscan.explain import FaceExplanation

REPORT_JSON, REPORT_HTML, REPORT_PDF = "report.json", "report.html", "report.pdf"
VERDICT_CLASS = {
    "fake": "fake",
    "real": "real",
    "inconclusive": "inconclusive",
    "no face": "noface",
    "untrained": "untrained",
}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1b1b1b;
       max-width: 1180px; margin: 2rem auto; padding: 0 1.2rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 2.2rem; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.92rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .hash { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.85rem; }
.hash { word-break: break-all; } td code { overflow-wrap: anywhere; }
details.legend { background: #fafafa; border: 1px solid #e3e3e3; padding: 0.4rem 0.8rem; font-size: 0.9rem; }
.verdict { font-size: 1.15rem; margin: 0.6rem 0; }
.badge { display: inline-block; padding: 0.1rem 0.6rem; border-radius: 0.3rem; font-weight: 700; color: #fff;
         text-transform: uppercase; letter-spacing: 0.04em; margin-right: 0.5rem; }
.badge.fake { background: #b3400a; } .badge.real { background: #006e4f; }
.badge.noface { background: #8a6d00; } .badge.untrained { background: #6a3d9a; } .badge.none { background: #666; }
.badge.inconclusive { background: #a35a00; }
.warning { border-left: 0.4rem solid #6a3d9a; background: #f4effa; padding: 0.6rem 0.9rem; margin: 1rem 0; }
.error { border-left: 0.4rem solid #b3400a; background: #fbefe9; padding: 0.6rem 0.9rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
figcaption { color: #444; font-size: 0.9rem; } figcaption ul { margin: 0.3rem 0; padding-left: 1.2rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; font-size: 0.92rem; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
@media print { body { max-width: none; margin: 0; } section.file { break-before: page; } }
"""


@dataclass
class FileFigures:
    timeline: "Figure | None" = None
    faces: list[tuple[dict, "FaceExplanation", "Figure"]] = field(default_factory=list)


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(value) -> str:
    """Text for the page: HTML-escaped, and with what a file name may hide written out (bytes that are not UTF-8,
    which could not even be written to the page, bidirectional overrides that make a name read backwards, control
    characters) as ``shown_path`` shows it in messages; line breaks stay."""
    text = "" if value is None else str(value)
    if not text.isprintable():
        text = "\n".join(shown_path(line) for line in text.split("\n"))
    return html.escape(text, quote=True)


def _shown_paths(report: dict) -> dict:
    """The report with each file's path as a figure may draw it: matplotlib fails on a byte that is not UTF-8."""
    return dict(report, files=[dict(entry, path=shown_path(entry["path"])) for entry in report["files"]])


def _value(value) -> str:
    """A JSON value as the page shows it: null as "-"."""
    return "-" if value is None else _e(value)


def _score(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _json_for_script(report: dict) -> str:
    # A file name holding "</script>" must not end the element early: "<", ">" and "&" are written as JSON
    # unicode escapes, which HTML leaves alone and every JSON parser reads back as the same characters.
    text = json.dumps(report, indent=1, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def applied_threshold(report: dict) -> float:
    """The threshold verdicts were taken at: the scan's decision (model card or --threshold), else the parameter."""
    decision = report["custody"].get("decision") or {}
    if decision.get("threshold") is not None:
        return float(decision["threshold"])
    threshold = report["custody"]["parameters"].get("threshold")
    return 0.5 if threshold is None else float(threshold)


def make_figures(report: dict, explanations: dict[int, list[tuple[dict, "FaceExplanation"]]]) -> list[FileFigures]:
    """The timeline of every file and the composed figure of every explained face, in file order."""
    from deepscan.report.figures import explanation_figure, literal_text
    from deepscan.report.plots import timeline_figure

    threshold = applied_threshold(report)
    trained = bool(report["custody"]["weights"]["trained"])
    figures = []
    with literal_text():  # titles carry file names: a "$" in one must not start mathtext
        for index, entry in enumerate(_shown_paths(report)["files"]):
            file_figures = FileFigures()
            if entry.get("status") != "error" or entry.get("faces"):
                file_figures.timeline = timeline_figure(entry, threshold, trained=trained)
            for face, explanation in explanations.get(index, []):
                file_figures.faces.append((face, explanation, explanation_figure(explanation)))
            figures.append(file_figures)
    return figures


def render_html(report: dict, figures: list[FileFigures], detector_summary: str = "", dpi: int = 90) -> str:
    """The page, as one string."""
    from deepscan.report.plots import figure_png

    custody, summary = report["custody"], report["summary"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>deepscan report: {_e(custody['detector']['name'])}, {summary['files']} file(s)</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header><h1>deepscan scan report</h1>",
        f'<p class="meta">Scan from {_e(custody["started_at"])} to {_e(custody["finished_at"])} on host '
        f"<code>{_e(custody['host'])}</code> with deepscan {_e(custody['deepscan_version'])}, detector "
        f"<strong>{_e(custody['detector']['name'])}</strong>.</p></header>",
    ]
    if not custody["weights"]["trained"]:
        parts.append(
            '<p class="warning" id="untrained-warning"><strong>Untrained detector.</strong> No trained weights were '
            "loaded: every score and heat map below comes from random weights and means nothing. The verdicts "
            "therefore read <em>untrained</em>.</p>"
        )
    if summary.get("interrupted"):
        parts.append('<p class="warning">The scan was interrupted: this report holds the results up to that point.</p>')
    parts.append(_summary_section(report))
    for index, (entry, file_figures) in enumerate(zip(report["files"], figures)):
        parts.append(_file_section(index, entry, file_figures, report, dpi, figure_png))
    parts.append(_detector_section(custody, detector_summary))
    parts.append(_custody_section(report))
    parts.append(
        '<script type="application/json" id="deepscan-report">' + _json_for_script(report) + "</script>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _badge(label: str | None) -> str:
    css = VERDICT_CLASS.get(label or "", "none")
    return f'<span class="badge {css}">{_e(label or "no verdict")}</span> '


def _summary_section(report: dict) -> str:
    summary = report["summary"]
    rows = []
    for index, entry in enumerate(report["files"]):
        verdict = entry.get("verdict") or {}
        name = _e(Path(entry["path"]).name)
        rows.append(
            f'<tr class="file-row" data-file="{index}"><td><a href="#file-{index}">{name}</a></td>'
            f"<td>{_badge(verdict.get('label'))}</td><td class=\"num\">{_score(verdict.get('score'))}</td>"
            f"<td class=\"num\">{len(entry.get('faces') or [])}</td>"
            f"<td class=\"num\">{len(entry.get('tracks') or [])}</td><td>{_e(entry['status'])}</td></tr>"
        )
    counts = ", ".join(f"{_e(label)}: {count}" for label, count in sorted(summary["verdicts"].items())) or "none"
    return (
        '<section id="summary"><h2>Summary</h2>'
        f"<p>{summary['files']} file(s): {summary['complete']} complete, {summary['partial']} partial, "
        f"{summary['errors']} unreadable. Verdicts: {counts}.</p>"
        "<table><thead><tr><th>file</th><th>verdict</th><th>score (highest track median P(fake))</th><th>faces</th>"
        "<th>tracks</th><th>status</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>"
    )


def _media_facts(entry: dict) -> str:
    media = entry.get("media") or {}
    facts = [
        ("path", f"<code>{_e(entry['path'])}</code>"),
        ("sha256", f'<span class="hash">{_e(entry.get("sha256") or "-")}</span>'),
        ("size", f"{entry['size_bytes']:,} bytes" if entry.get("size_bytes") is not None else "-"),
        ("kind", _e(entry.get("kind"))),
    ]
    if media.get("width"):
        facts.append(("frame size", f"{media['width']} x {media['height']} pixels"))
    if media.get("fps"):
        facts.append(("frame rate", f"{media['fps']:.3f} frames/s"))
    if media.get("duration_s") is not None:
        facts.append(("duration", f"{media['duration_s']:.2f} s"))
    if media.get("codec"):
        facts.append(("codec", _e(media["codec"])))
    if media.get("bits_per_pixel") is not None:
        facts.append(("compression", f"{media['bits_per_pixel']:.3f} bits per pixel per frame "
                                      f"({media['bit_rate'] / 1000:,.0f} kbit/s)"))
    facts.append(("frames scanned", str(entry.get("frames_scanned", 0))))
    facts.append(("scan time", f"{entry.get('seconds', 0.0):.1f} s"))
    return '<dl class="facts">' + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts) + "</dl>"


def _file_section(index: int, entry: dict, figures: FileFigures, report: dict, dpi: int, figure_png) -> str:
    verdict = entry.get("verdict") or {}
    name = Path(entry["path"]).name
    parts = [f'<section class="file" id="file-{index}"><h2>{_e(name)}</h2>']
    reason = verdict.get("reason") or ""
    parts.append(
        f'<p class="verdict" id="verdict-{index}">{_badge(verdict.get("label"))}'
        + (f"score <strong>{_score(verdict.get('score'))}</strong>. " if verdict.get("score") is not None else "")
        + f"{_e(reason[:1].upper() + reason[1:])}{'.' if reason and not reason.endswith('.') else ''}</p>"
    )
    if entry.get("status") != "complete":
        parts.append(f'<p class="error"><strong>{_e(entry["status"])}:</strong> {_e(entry.get("message"))}</p>')
    parts.append(_media_facts(entry))
    if figures.timeline is not None:
        parts.append(
            f'<figure><img id="timeline-{index}" class="timeline" alt="P(fake) over time for {_e(name)}" '
            f'src="{_png_uri(figure_png(figures.timeline, dpi))}"><figcaption>Score timeline: P(fake) of each '
            "scored face, one line per face track; the dashed line is the threshold, the dotted lines each track's "
            "median (the track's score).</figcaption></figure>"
        )
    if entry.get("tracks"):
        parts.append(_tracks_table(index, entry, trained=bool(report["custody"]["weights"]["trained"])))
        if any(track.get("reason") for track in entry["tracks"]):
            parts.append(_inconclusive_note(entry))
    if figures.faces:
        parts.append("<h3>Most suspicious faces</h3>")
        parts.append(_how_to_read([explanation for _, explanation, _ in figures.faces]))
        for rank, (face, explanation, figure) in enumerate(figures.faces):
            parts.append(_face_figure(index, rank, face, explanation, figure, dpi, figure_png))
    parts.append("</section>")
    return "".join(parts)


def _tracks_table(index: int, entry: dict, trained: bool) -> str:
    # Ensemble reports add each member's track score (its label at its own threshold) and the agreement.
    members = list(next((track["members"] for track in entry["tracks"] if track.get("members")), None) or [])
    header = (
        "<tr><th>track</th><th>faces</th><th>from (s)</th><th>to (s)</th><th>median P(fake)</th><th>mean</th>"
        "<th>max</th><th>share at or above threshold</th><th>label</th>"
        + "".join(f"<th>{_e(name)} (median P(fake), label)</th>" for name in members)
        + ("<th>agreement</th>" if members else "")
        + "</tr>"
    )
    rows = []
    for track in sorted(entry["tracks"], key=lambda track: -track["score"]):
        cells = [
            str(track["track_id"]),
            str(track["faces"]),
            _seconds(track["start_s"]),
            _seconds(track["end_s"]),
            _score(track["score"]),
            _score(track["mean"]),
            _score(track["max"]),
            _score(track["share_above_threshold"]),
        ]
        member_cells = "".join(
            f'<td class="num member" data-member="{_e(name)}">{_score(track["members"][name]["score"])} '
            f'({_e(track["members"][name]["label"])})</td>' if track.get("members") and name in track["members"]
            else "<td>-</td>"
            for name in members
        )
        if members:
            agreement = track.get("agreement")
            member_cells += f'<td class="num agreement">{"-" if agreement is None else f"{agreement:.0%}"}</td>'
        rows.append(
            f'<tr class="track" data-track="{track["track_id"]}">'
            + "".join(f'<td class="num">{cell}</td>' for cell in cells)
            + f"<td>{_e(track['label'])}{'' if trained else ' (untrained: meaningless)'}</td>"
            + member_cells
            + "</tr>"
        )
    return f'<table class="tracks" id="tracks-{index}"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'


def _inconclusive_note(entry: dict) -> str:
    items = "".join(
        f"<li>track {track['track_id']}: {_e(track['reason'])}</li>" for track in entry["tracks"] if track.get("reason")
    )
    return (
        '<div class="warning inconclusive-note"><strong>Inconclusive tracks.</strong> Their faces are all smaller '
        "or blurrier than the range the detector was found reliable on, so their scores judge nothing:"
        f"<ul>{items}</ul></div>"
    )


def _how_to_read(explanations: list) -> str:
    """What each panel of the face figures shows, once for all the faces of a file."""
    from deepscan.report.figures import face_panels

    described: dict[str, str] = {}
    for explanation in explanations:
        for panel in face_panels(explanation):
            if panel.description:
                described.setdefault(panel.title, panel.description)
    items = "".join(f"<li><strong>{_e(title)}</strong>: {_e(text)}</li>" for title, text in described.items())
    return f'<details class="legend" open><summary>How to read the face figures</summary><ul>{items}</ul></details>'


def _face_figure(index: int, rank: int, face: dict, explanation, figure, dpi: int, figure_png) -> str:
    return (
        f'<figure class="face" id="face-{index}-{rank}"><img alt="explanation of {_e(explanation.label)}" '
        f'src="{_png_uri(figure_png(figure, dpi))}"><figcaption>'
        f"<strong>{_e(explanation.label)}</strong> (frame {face['frame_index']}, box "
        f"{', '.join(f'{value:.0f}' for value in face['box'])}): recorded P(fake) "
        f'<span class="face-score">{_score(face.get("fake_probability"))}</span>.</figcaption></figure>'
    )


def _detector_section(custody: dict, detector_summary: str) -> str:
    weights = custody["weights"]
    facts = [
        ("detector", f"<strong>{_e(custody['detector']['name'])}</strong>"),
        ("paper", _e(custody["detector"]["paper"])),
        ("weights", f"{_e(weights['source'])}" + ("" if weights["trained"] else " (untrained: random weights)")),
        ("weights file", f"<code>{_e(weights['path'] or '-')}</code>"),
        ("weights sha256", f'<span class="hash">{_e(weights["sha256"] or "-")}</span>'),
    ]
    decision = custody.get("decision")
    if decision:
        facts.append(("threshold", f"{decision['threshold']:.4g} ({_e(decision['threshold_source'])})"))
        facts.append(("reliable range", _range_text(decision["reliable_range"])))
    body = '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    about = f"<p>{_e(detector_summary)}</p>" if detector_summary else ""
    members = _members_table(decision["members"]) if decision and decision.get("members") else ""
    return f'<section id="detector"><h2>Detector and weights</h2>{about}{body}{members}</section>'


def _range_text(limits: dict) -> str:
    parts = []
    if limits.get("min_face_px"):
        parts.append(f"faces of at least {limits['min_face_px']:g} px")
    if limits.get("min_sharpness"):
        parts.append(f"sharpness at least {limits['min_sharpness']:g}")
    at_sizes = limits.get("min_sharpness_at") or {}
    if at_sizes:  # a scan's joint range: each bound holds on the crop at its own input size
        parts.append("sharpness at least " + ", ".join(f"{bound:g} at {size} px" for size, bound in at_sizes.items()))
    return _e(" and ".join(parts)) if parts else "not stated (every face is judged)"


def _members_table(members: list[dict]) -> str:
    """Per detector that scored: its weights, model card and calibration (P(fake) = sigmoid(a * logit + b))."""
    rows = []
    for member in members:
        calibration, card = member["calibration"], member.get("model_card") or {}
        mapping = (
            f"{_e(calibration['method'])}: a = {calibration['scale']:.4g}, b = {calibration['bias']:.4g}"
            if calibration["method"] != "identity" else "none (sigmoid of the logit)"
        )
        rows.append(
            f'<tr class="member" data-member="{_e(member["name"])}"><td>{_e(member["name"])}</td>'
            f"<td class=\"num\">{member['input_size']}</td><td>{_e(member['weights']['source'])}</td>"
            f'<td class="hash">{_e(member["weights"]["sha256"] or "-")}</td>'
            f"<td><code>{_e(card.get('path') or '-')}</code></td><td>{mapping}</td>"
            f"<td class=\"num\">{calibration['threshold']:.4g}</td><td>{_e(calibration['threshold_rule'])}</td>"
            f"<td>{_range_text(member['reliable_range'])}"
            + (f"<br>{_e(member['reliability_note'])}" if member.get("reliability_note") else "")
            + "</td></tr>"
        )
    return (
        '<h3>Scoring detectors</h3><table id="members-table"><thead><tr><th>detector</th><th>input</th>'
        "<th>weights</th><th>weights sha256</th><th>model card</th><th>calibration</th><th>its threshold</th>"
        "<th>threshold rule</th><th>reliable range</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _custody_section(report: dict) -> str:
    custody = report["custody"]
    rows = []
    for key, value in custody.items():
        if key in ("parameters", "decision"):  # their own tables
            continue
        shown = (
            ", ".join(f"{_e(k)}: {_value(v)}" for k, v in value.items()) if isinstance(value, dict) else _value(value)
        )
        rows.append(f"<tr><th>{_e(key)}</th><td><code>{shown}</code></td></tr>")
    parameters = "".join(
        f"<tr><th>{_e(key)}</th><td><code>{_value(value)}</code></td></tr>"
        for key, value in custody["parameters"].items()
    )
    files = "".join(
        f"<tr><td><code>{_e(entry['path'])}</code></td><td class=\"hash\">{_e(entry.get('sha256') or '-')}</td>"
        f"<td class=\"num\">{_e(entry.get('size_bytes'))}</td></tr>"
        for entry in report["files"]
    )
    return (
        '<section id="custody"><h2>Chain of custody</h2>'
        f"<p>Report schema <code>{_e(report['schema'])}</code> version {report['schema_version']}. The full JSON "
        f"report is embedded in this page and saved beside it as <code>{REPORT_JSON}</code>.</p>"
        f'<table id="custody-table"><tbody>{"".join(rows)}</tbody></table>'
        f"<h3>Scan parameters</h3><table id=\"parameters-table\"><tbody>{parameters}</tbody></table>"
        "<h3>Files as scanned</h3><table><thead><tr><th>path</th><th>sha256</th><th>bytes</th></tr></thead>"
        f"<tbody>{files}</tbody></table></section>"
    )


def write_scan_report(
    report: dict,
    folder: Path,
    explanations: dict[int, list[tuple[dict, "FaceExplanation"]]] | None = None,
    *,
    pdf: bool = False,
    detector_summary: str = "",
) -> list[Path]:
    """``folder/report.json``, ``folder/report.html`` and, with ``pdf``, ``folder/report.pdf``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_report(report, folder / REPORT_JSON)
    figures = make_figures(report, explanations or {})
    page = render_html(report, figures, detector_summary)
    atomic_write(folder / REPORT_HTML, page.encode("utf-8"))  # never leave a half-written page behind
    written = [folder / REPORT_JSON, folder / REPORT_HTML]
    if pdf:
        from deepscan.report.figures import literal_text
        from deepscan.report.plots import write_pdf

        shown = _shown_paths(report)
        per_file = [
            (entry["path"], ([f.timeline] if f.timeline is not None else []) + [fig for _, _, fig in f.faces])
            for entry, f in zip(shown["files"], figures)
        ]
        with literal_text():  # its first page lists the files' paths
            written.append(write_pdf(shown, per_file, folder / REPORT_PDF))
    return written
