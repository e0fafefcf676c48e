"""`deepscan scan --report`: a self-contained HTML page (and PDF) whose numbers are the JSON's, opened in Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.detectors import get_config
from deepscan.explain import suspicious_faces
from deepscan.report.html import make_figures, render_html
from deepscan.report.json_report import build_report
from deepscan.report.plots import timeline_figure
from deepscan.scan import FaceResult, FileResult, ScanOptions
from deepscan.verdicts import file_verdict, track_verdict
from deepscan.weights import ResolvedWeights

runner = CliRunner()


class Page(HTMLParser):
    """Every element's attributes and the text inside elements with an id or a class, for the assertions."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.rows: list[tuple[dict, list[str]]] = []  # (tr attributes, cell texts)
        self.text_by_id: dict[str, str] = {}
        self.scripts: list[tuple[dict, str]] = []
        self._open: list[tuple[str, dict, list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag not in ("img", "meta", "br"):
            self._open.append((tag, attributes, []))

    def handle_endtag(self, tag):
        while self._open:
            open_tag, attributes, chunks = self._open.pop()
            text = "".join(chunks)
            if self._open:  # the parent collects it, and passes it on when it closes in turn
                self._open[-1][2].append(text)
                if open_tag in ("td", "th") and self._open[-1][0] == "tr":
                    self._open[-1][2].append("\x1f")  # cell separator
            if open_tag == "tr":
                self.rows.append((attributes, [cell.strip() for cell in text.split("\x1f")[:-1]]))
            if open_tag == "script":
                self.scripts.append((attributes, text))
            if "id" in attributes:
                self.text_by_id[attributes["id"]] = " ".join(text.split())
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][2].append(data)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, portrait_clip):
    """One real run of `deepscan scan CLIP --report DIR --pdf --json FILE` (faclue, untrained)."""
    from deepscan import weights

    folder = tmp_path_factory.mktemp("report")
    (folder / "no-weights").mkdir()
    with pytest.MonkeyPatch.context() as patch:  # no shipped weights: the untrained banner is what is tested here
        patch.setattr(weights, "shipped_weights_dir", lambda: folder / "no-weights")
        result = runner.invoke(
            app,
            ["scan", str(portrait_clip), "--fps", "2", "--report", str(folder / "out"), "--pdf", "--json",
             str(folder / "scan.json")],
        )
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "out" / "report.json").read_text())
    html = (folder / "out" / "report.html").read_text(encoding="utf-8")
    return folder, report, html, Page(html)


def _images(page: Page, image_id: str) -> list[dict]:
    return [attributes for tag, attributes in page.elements if tag == "img" and attributes.get("id") == image_id]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def test_scan_report_writes_json_html_and_pdf(scanned):
    folder, report, _, _ = scanned
    assert report["schema"] == "deepscan.scan-report"
    assert json.loads((folder / "scan.json").read_text())["files"] == report["files"]  # --json and --report agree
    pdf = (folder / "out" / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
    explained = len(suspicious_faces(report["files"][0], max_tracks=3))
    assert pages == 1 + 1 + explained  # summary, the file's timeline, one page per explained face


def test_page_is_self_contained(scanned):
    _, _, html, page = scanned
    assert "http://" not in html and "https://" not in html
    for tag, attributes in page.elements:
        assert tag != "link", "no external stylesheet"
        if "src" in attributes:
            assert attributes["src"].startswith("data:image/png;base64,"), attributes["src"][:60]
        if "href" in attributes:
            assert attributes["href"].startswith("#"), attributes["href"]
    scripts = [attributes for tag, attributes in page.elements if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "deepscan-report"}]  # data only, nothing that runs


def test_page_numbers_are_the_json_numbers(scanned):
    _, report, _, page = scanned
    [entry] = report["files"]
    verdict = entry["verdict"]
    assert verdict["label"] == "untrained"
    assert page.text_by_id["verdict-0"].startswith(f"{verdict['label']} score {_fmt(verdict['score'])}.")
    assert "Untrained detector" in page.text_by_id["untrained-warning"]

    tracks = {attributes["data-track"]: cells for attributes, cells in page.rows if attributes.get("class") == "track"}
    assert len(tracks) == len(entry["tracks"]) >= 1
    for track in entry["tracks"]:
        cells = tracks[str(track["track_id"])]
        expected = [str(track["track_id"]), str(track["faces"]), f"{track['start_s']:.2f}", f"{track['end_s']:.2f}",
                    _fmt(track["score"]), _fmt(track["mean"]), _fmt(track["max"]),
                    _fmt(track["share_above_threshold"])]
        assert cells[:8] == expected
        assert cells[8].startswith(track["label"])

    [summary_row] = [cells for attributes, cells in page.rows if attributes.get("class") == "file-row"]
    assert summary_row[1:5] == [verdict["label"], _fmt(verdict["score"]), str(len(entry["faces"])),
                                str(len(entry["tracks"]))]

    explained = suspicious_faces(entry, max_tracks=3)
    assert explained
    for rank, face in enumerate(explained):
        caption = page.text_by_id[f"face-{0}-{rank}"]
        assert f"frame {face['frame_index']}" in caption
        assert caption.endswith(f"recorded P(fake) {_fmt(face['fake_probability'])}.")

    custody = page.text_by_id["custody-table"]
    for key in ("deepscan_version", "started_at", "finished_at", "host", "python", "torch"):
        assert f"{key} {report['custody'][key]}" in custody
    assert report["custody"]["weights"]["source"] in page.text_by_id["detector"]
    parameters = page.text_by_id["parameters-table"]
    for key, value in report["custody"]["parameters"].items():
        assert f"{key} {'-' if value is None else value}" in parameters

    [(_, embedded)] = page.scripts
    assert json.loads(embedded) == report  # the page carries the whole JSON report


def test_timeline_image_is_embedded_and_is_a_plot(scanned):
    _, _, _, page = scanned
    [timeline] = _images(page, "timeline-0")
    png = base64.b64decode(timeline["src"].split(",", 1)[1])
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 300
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # axes, lines and text, not an empty canvas


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("needs Debian's `chromium` (apt-get install chromium) to open the report headless")
    return path


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )


def _open_and_watch(chromium: str, page: Path, work: Path) -> tuple[list[str], list[str]]:
    """Open ``page`` in headless Chromium, offline (every host name fails to resolve); return what the page wrote to
    its console (messages, uncaught errors) and the network requests it made (Chromium's own background requests
    are left out: they are not made for a file:// page)."""
    netlog = work / f"{page.stem}.netlog.json"
    opened = _headless(chromium, work / "profile", "--enable-logging=stderr", "--v=0",
                       "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}",
                       "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert opened.returncode == 0, opened.stderr[-2000:]
    console = [line for line in opened.stderr.splitlines() if ":CONSOLE" in line]
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [event["params"]["url"] for event in log["events"]
                if event["type"] == start_job and "file://" in event["params"].get("network_isolation_key", "")]
    return console, requests


def test_report_opens_in_headless_chromium_and_shows_verdict_and_timeline(scanned, tmp_path):
    chromium = _chromium()
    folder, report, html, _ = scanned
    # A test copy reports, once loaded, whether Chromium decoded the timeline image (the report itself has no
    # script to run).
    probe = (
        '<script>window.addEventListener("load", () => { const image = document.getElementById("timeline-0");'
        'document.body.dataset.timeline = image && image.complete && image.naturalWidth > 0 ?'
        'image.naturalWidth + "x" + image.naturalHeight : "broken"; });</script>'
    )
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", probe + "</body>"), encoding="utf-8")
    dumped = _headless(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Page(dumped.stdout)
    [timeline] = _images(dom, "timeline-0")
    with Image.open(io.BytesIO(base64.b64decode(timeline["src"].split(",", 1)[1]))) as image:
        size = f"{image.size[0]}x{image.size[1]}"
    [body] = [attributes for tag, attributes in dom.elements if tag == "body"]
    assert body.get("data-timeline") == size  # Chromium decoded the embedded PNG at its full size
    assert dom.text_by_id["verdict-0"].startswith(report["files"][0]["verdict"]["label"])

    shot = tmp_path / "report.png"
    taken = _headless(chromium, tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,1600",
                      f"--screenshot={shot}", (folder / "out" / "report.html").as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 100).mean() > 0.01  # text and plots on the page, not a blank tab


# --- hostile evidence: names and metadata that are markup ------------------------------------------------------

HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"
HOSTILE_EXIF = "</textarea><img src=x onerror=alert(2)>"
MATHTEXT_NAME = "a $\\nosuch{$ b.png"  # a "$" pair that matplotlib would read as mathtext, and fail on
# A byte that is not UTF-8 (neither a page nor a figure can hold it as is) and a right-to-left override that
# would show "bad-?-gnp.jpg" as "bad-?-gpj.png".
UNDECODABLE_NAME = os.fsdecode(b"bad-\xff-\xe2\x80\xaegnp.jpg")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A real `deepscan scan --report --pdf` of three portraits: one named as markup, one whose EXIF description
    and user comment are markup, one whose name is broken mathtext."""
    from deepscan import weights
    from deepscan.media.synthetic import portrait

    folder = tmp_path_factory.mktemp("hostile")
    evidence = folder / "evidence"
    evidence.mkdir()
    image = Image.fromarray(portrait())
    image.save(evidence / HOSTILE_NAME)
    image.save(evidence / MATHTEXT_NAME)
    exif = Image.Exif()
    exif[0x010E] = HOSTILE_EXIF  # ImageDescription
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + HOSTILE_EXIF.encode()  # Exif IFD: UserComment
    image.save(evidence / "exif.jpg", exif=exif.tobytes())
    with Image.open(evidence / "exif.jpg") as written:
        assert written.getexif()[0x010E] == HOSTILE_EXIF  # the payload is really in the file
    (folder / "no-weights").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "shipped_weights_dir", lambda: folder / "no-weights")
        result = runner.invoke(app, ["scan", str(evidence), "--report", str(folder / "out"), "--pdf"])
    assert result.exit_code == 0, result.output
    return folder / "out", (folder / "out" / "report.html").read_text(encoding="utf-8")


def test_names_and_metadata_from_the_evidence_are_escaped_everywhere_in_the_page(hostile):
    out, html = hostile
    report = json.loads((out / "report.json").read_text())
    assert sorted(Path(entry["path"]).name for entry in report["files"]) == sorted(
        [HOSTILE_NAME, MATHTEXT_NAME, "exif.jpg"])
    for payload in (HOSTILE_NAME, HOSTILE_EXIF, "<img src=x", "</textarea>"):
        assert payload not in html, payload
    assert html.count("&lt;img src=x onerror=alert(1)&gt;.png") >= 2  # shown, as text: summary, file section
    start = html.index('<script type="application/json" id="deepscan-report">')
    embedded = html[html.index(">", start) + 1:html.index("</script>", start)]
    assert "<" not in embedded and ">" not in embedded  # "</" cannot close the element early
    assert json.loads(embedded) == report  # and every name reads back as it was
    page = Page(html)
    for tag, attributes in page.elements:
        assert not any(name.startswith("on") for name in attributes), (tag, attributes)
        assert tag != "img" or attributes["src"].startswith("data:image/png;base64,"), attributes
    # Every file has its timeline and the most suspicious faces their figures, the broken mathtext name included.
    assert sum(len(_images(page, f"timeline-{index}")) for index in range(3)) == 3
    assert sum(1 for tag, attributes in page.elements if attributes.get("class") == "face") >= 3
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


def test_the_hostile_report_in_headless_chromium_runs_nothing_and_fetches_nothing(hostile, tmp_path):
    chromium = _chromium()
    out, html = hostile
    console, requests = _open_and_watch(chromium, out / "report.html", tmp_path)
    assert console == [] and requests == [], (console, requests)
    # The watch sees what it must: a copy with a script error and an image from the network is caught.
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("</body>", '<img src="http://example.invalid/x.png"><script>'
                                   "not_defined();</script></body>"), encoding="utf-8")
    console, requests = _open_and_watch(chromium, broken, tmp_path)
    assert any("Uncaught ReferenceError: not_defined" in line for line in console), console
    assert requests == ["http://example.invalid/x.png"], requests


# --- pages rendered from reports made here --------------------------------------------------------------------


def _report(files: list[FileResult], trained: bool = True) -> dict:
    weights = ResolvedWeights(Path("weights/x.safetensors"), "file", "ab" * 32)
    if not trained:
        weights = ResolvedWeights(None, "none", None)
    return build_report(files, options=ScanOptions(), detector_config=get_config("faclue"), weights=weights,
                        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:05+00:00")


def _video(path: str, scores: dict[int, list[float]]) -> FileResult:
    result = FileResult(path=path, kind="video", status="complete", sha256="cd" * 32, size_bytes=1234,
                        media={"width": 640, "height": 360, "fps": 25.0, "duration_s": 4.0, "frame_count": 100,
                               "codec": "h264"})
    for track_id, probabilities in scores.items():
        for step, probability in enumerate(probabilities):
            result.faces.append(FaceResult(step * 12, step * 0.5, track_id, (10.0, 10.0, 60.0, 60.0), 0.9, probability))
    result.tracks = [
        track_verdict(track_id, probabilities, [step * 0.5 for step in range(len(probabilities))], 0.5)
        for track_id, probabilities in scores.items()
    ]
    result.verdict = file_verdict(result.tracks, trained=True)
    return result


def test_hostile_names_are_escaped_and_failed_files_are_reported():
    hostile = _video('<script>alert("x")</script>.mp4', {0: [0.9, 0.8, 0.95], 1: [0.1, 0.2, 0.1]})
    broken = FileResult(path="broken.mp4", kind="video", status="error", message="broken.mp4: the video is damaged")
    empty = FileResult(path="empty.jpg", kind="image", status="complete", sha256="ef" * 32, size_bytes=10)
    empty.verdict = file_verdict([], trained=True)
    report = _report([hostile, broken, empty])
    page_text = render_html(report, make_figures(report, {}))
    assert "<script>alert" not in page_text and "&lt;script&gt;alert" in page_text
    page = Page(page_text)
    assert page.text_by_id["verdict-0"].startswith("fake score 0.900.")
    assert "the video is damaged" in page.text_by_id["file-1"]
    assert page.text_by_id["verdict-2"].startswith("no face")
    assert "untrained-warning" not in page.text_by_id
    timelines = [attributes.get("id") for tag, attributes in page.elements if tag == "img"]
    assert timelines == ["timeline-0", "timeline-2"]  # an unreadable file has no timeline


def test_a_name_that_is_not_utf8_or_reads_backwards_is_written_out_in_the_page_figures_and_pdf(tmp_path):
    from deepscan.report.html import write_scan_report

    report = _report([_video(f"case/{UNDECODABLE_NAME}", {0: [0.9, 0.8, 0.95]})])
    written = write_scan_report(report, tmp_path / "out", pdf=True)  # a byte that is not UTF-8 fails neither
    html = written[1].read_text(encoding="utf-8")
    assert "\u202e" not in html  # the override would make the name read "bad-?-gpj.png"
    assert html.count("bad-\\xff-\\u202egnp.jpg") >= 3  # summary, file section, custody: written out
    assert written[2].read_bytes().startswith(b"%PDF")


def test_timeline_plots_each_track_against_time_with_units_and_a_legend():
    report = _report([_video("clip.mp4", {0: [0.9, 0.7, 0.8], 3: [0.2, 0.1, 0.3]})])
    entry = report["files"][0]
    figure = timeline_figure(entry, threshold=0.5)
    [ax] = figure.axes
    assert "(s)" in ax.get_xlabel() and "P(fake)" in ax.get_ylabel()
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "track 0: median 0.800 (fake)" in legend and "track 3: median 0.200 (real)" in legend
    assert "threshold 0.50" in legend
    lines = {line.get_label(): line for line in ax.get_lines()}
    track0 = lines["track 0: median 0.800 (fake)"]
    np.testing.assert_allclose(track0.get_xdata(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(track0.get_ydata(), [0.9, 0.7, 0.8])
    assert ax.get_xlim() == (0.0, 4.0)  # the whole video, from its duration


def test_timeline_of_a_still_image_is_one_bar_per_face():
    image = FileResult(path="photo.jpg", kind="image", status="complete")
    image.faces = [FaceResult(0, 0.0, 0, (0, 0, 10, 10), 0.9, 0.7), FaceResult(0, 0.0, 1, (20, 0, 30, 10), 0.9, 0.2)]
    image.tracks = [track_verdict(0, [0.7], [0.0], 0.5), track_verdict(1, [0.2], [0.0], 0.5)]
    report = _report([image])
    [ax] = timeline_figure(report["files"][0], threshold=0.5).axes
    [bars] = ax.containers
    assert [bar.get_height() for bar in bars] == pytest.approx([0.7, 0.2])
    assert [label.get_text() for label in ax.get_xticklabels()] == ["face 0", "face 1"]


def test_pdf_needs_a_report_folder(portrait_clip):
    result = runner.invoke(app, ["scan", str(portrait_clip), "--pdf"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--pdf needs --report" in lines[0]


# --- calibration, inconclusive tracks, the ensemble ---------------------------------------------------------------


def _decision(threshold=0.7, members=("faclue",)) -> dict:
    return {
        "method": "ensemble" if len(members) > 1 else members[0],
        "threshold": threshold,
        "threshold_source": "model card",
        "reliable_range": {"min_face_px": 64.0, "min_sharpness_at": {"224": 20.0}},
        "sharpness_input_size": 224,
        "members": [
            {"name": name, "paper": "-", "input_size": 224,
             "weights": {"source": "shipped", "path": f"weights/{name}.safetensors", "sha256": "ab" * 32,
                         "trained": True},
             "model_card": {"path": f"weights/{name}.card.json", "sha256": "cd" * 32},
             "calibration": {"method": "platt", "scale": 1.5, "bias": -0.25, "threshold": threshold,
                             "threshold_rule": "FPR at most 0.05 on val reals"},
             "reliable_range": {"min_face_px": 64.0, "min_sharpness": 20.0},
             "reliability_note": "AUC 0.61 on faces under 64 px"}
            for name in members
        ],
    }


def test_inconclusive_tracks_have_their_badge_and_reason_and_the_cards_threshold_draws_the_line():
    video = _video("small.mp4", {0: [0.2, 0.3, 0.2]})
    video.tracks = [track_verdict(0, [0.2, 0.3, 0.2], [0.0, 0.5, 1.0], 0.7,
                                  outside_range=[["too small"]] * 3, reliable_range="faces of at least 64 px")]
    video.verdict = file_verdict(video.tracks, trained=True)
    video.media.update(bit_rate=400_000, bits_per_pixel=400_000 / (640 * 360 * 25))
    report = _report([video])
    report["custody"]["decision"] = _decision()
    page = Page(render_html(report, make_figures(report, {})))
    assert page.text_by_id["verdict-0"].startswith("inconclusive score 0.200.")
    assert ('span', {'class': 'badge inconclusive'}) in page.elements
    [track] = [cells for attributes, cells in page.rows if attributes.get("class") == "track"]
    assert track[8] == "inconclusive"
    assert "all 3 of its faces are outside" in page.text_by_id["file-0"]
    assert "0.069 bits per pixel per frame (400 kbit/s)" in page.text_by_id["file-0"]
    detector = page.text_by_id["detector"]
    assert "threshold0.7 (model card)" in detector and "faces of at least 64 px and sharpness at least 20" in detector
    [member] = [cells for attributes, cells in page.rows if attributes.get("class") == "member"]
    assert member[0] == "faclue" and member[5] == "platt: a = 1.5, b = -0.25" and member[6] == "0.7"
    assert member[8].endswith("AUC 0.61 on faces under 64 px")
    # The timeline's dashed line is the threshold the verdicts used, not the unset --threshold.
    assert report["custody"]["parameters"]["threshold"] is None
    [ax] = make_figures(report, {})[0].timeline.axes
    assert "threshold 0.70" in [text.get_text() for text in ax.get_legend().get_texts()]


def test_ensemble_tracks_show_each_members_score_and_the_agreement():
    from deepscan.verdicts import member_agreement

    video = _video("clip.mp4", {0: [0.8, 0.9, 0.85]})
    [track] = video.tracks
    track.members, track.agreement = member_agreement(
        {"faclue": [0.9, 0.95, 0.9], "pel": [0.3, 0.2, 0.3]}, {"faclue": 0.5, "pel": 0.5}, "fake")
    report = _report([video])
    report["custody"]["decision"] = _decision(0.5, ("faclue", "pel"))
    page = Page(render_html(report, make_figures(report, {})))
    header = next(cells for attributes, cells in page.rows if cells and cells[0] == "track")
    assert header[9:] == ["faclue (median P(fake), label)", "pel (median P(fake), label)", "agreement"]
    [row] = [cells for attributes, cells in page.rows if attributes.get("class") == "track"]
    assert row[9:] == ["0.900 (fake)", "0.300 (real)", "50%"]
    assert [cells[0] for attributes, cells in page.rows if attributes.get("class") == "member"] == ["faclue", "pel"]
