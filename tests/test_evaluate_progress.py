"""How an evaluation is shown: the evaluate library reports events and imports no terminal library; a library caller
gets the events (or nothing, quietly) without a terminal, and `deepscan evaluate` says them as it always has."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

import deepscan
from deepscan.cli.evaluate import ConsoleEvaluationProgress
from deepscan.evaluate.evaluation import NO_VAL_NOTE, evaluate
from deepscan.evaluate.progress import EnsembleScoring, EvaluationProgress, FacesFound
from deepscan.evaluate.request import EvaluateRequest
from deepscan.media.synthetic import portrait, second_portrait

EVALUATE_PACKAGE = Path(deepscan.__file__).resolve().parent / "evaluate"


def imported_top_names(path: Path):
    """(line, top-level package name) of every import in ``path``, at module level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, (node.module or "").split(".")[0]


def test_the_evaluate_package_imports_no_terminal_library():
    for path in sorted(EVALUATE_PACKAGE.rglob("*.py")):
        for line, name in imported_top_names(path):
            assert name not in {"rich", "typer", "click"}, f"{path.name}:{line} imports {name}"


class Recorder(EvaluationProgress):
    def __init__(self):
        self.events: list[tuple] = []

    def on_phase_start(self, description, total):
        self.events.append(("start", description, total))

    def on_phase_total(self, total):
        self.events.append(("total", total))

    def on_advance(self, count=1):
        self.events.append(("advance", count))

    def on_phase_end(self):
        self.events.append(("end",))

    def on_faces_found(self, found):
        self.events.append(("faces", found))

    def on_untrained(self, method, text):
        self.events.append(("untrained", method))

    def on_note(self, text):
        self.events.append(("note", text))

    def on_measured(self, summaries):
        self.events.append(("measured", [summary["method"] for summary in summaries]))

    def on_written(self, folder, files):
        self.events.append(("written", folder, len(files)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two real and two fake portraits, a faceless real image and an unreadable fake one."""
    root = tmp_path_factory.mktemp("progress-data")
    for label in ("real", "fake"):
        (root / label).mkdir()
        for name, image in (("hopper", portrait()), ("second", second_portrait())):
            Image.fromarray(image if label == "real" else image[:, ::-1].copy()).save(root / label / f"{name}.png")
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(root / "real" / "blank.png")
    (root / "fake" / "broken.png").write_bytes(b"not a png")
    return root


def test_a_library_caller_gets_the_events_without_a_terminal(tmp_path, data, shipped, calibration_card, capsys):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)  # tiny_b has no weights: untrained
    out = tmp_path / "out"
    request = EvaluateRequest(data=[data], methods=["tiny_a", "tiny_b"], out_dir=out, bootstrap=0,
                              cache_dir=tmp_path / "cache")
    recorder = Recorder()
    evaluation = evaluate(request, recorder)
    events = recorder.events

    # Finding faces: a phase whose total comes once the files are listed, advanced once per file.
    assert events[:2] == [("start", "finding faces (test)", None), ("total", 6)]
    assert events[2:8] == [("advance", 1)] * 6 and events[8] == ("end",)
    found = FacesFound("test", media_files=6, unreadable=1, faceless=1)
    assert events[9] == ("faces", found)
    assert found.warnings() == [
        "1 unreadable file(s) in the test data were skipped",
        "no face in 1 of 6 test file(s): they get no score and are left out of every metric (listed in results.json)",
    ]
    # Scoring: one phase per method, every face counted, the notes and warnings before it.
    rest = events[10:]
    assert rest[0][0] == "note" and rest[0][1].startswith("tiny_a: scores are P(fake) calibrated by its model card")
    assert rest[1] == ("start", "scoring with tiny_a", 4)
    ends = [index for index, event in enumerate(rest) if event == ("end",)]
    assert sum(event[1] for event in rest[2:ends[0]]) == 4
    assert rest[ends[0] + 1] == ("untrained", "tiny_b")
    assert rest[ends[0] + 2] == ("start", "scoring with tiny_b", 4)
    assert rest[ends[1] + 1:] == [("measured", ["tiny_a", "tiny_b"]), ("note", NO_VAL_NOTE),
                                  ("written", out, len(evaluation.written))]
    # What was measured comes back, as results.json has it; nothing went to the terminal.
    assert json.loads((out / "results.json").read_text())["methods"][0]["method"] == "tiny_a"
    assert [summary["method"] for summary in evaluation.summaries] == ["tiny_a", "tiny_b"]
    assert (out / "results.json") in evaluation.written and evaluation.notes == []
    assert capsys.readouterr() == ("", "")


def test_a_caller_that_passes_nothing_gets_a_quiet_evaluation(tmp_path, data, shipped, calibration_card, capsys):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    (tmp_path / "reals" / "real").mkdir(parents=True)
    Image.fromarray(portrait()).save(tmp_path / "reals" / "real" / "hopper.png")
    request = EvaluateRequest(data=[tmp_path / "reals"], methods=["tiny_a"], bootstrap=0, cache_dir=tmp_path / "cache")
    evaluation = evaluate(request)
    assert evaluation.written == [] and evaluation.notes and "fpr_at_card_threshold" in evaluation.notes[0]
    assert evaluation.summaries[0]["conditions"]["clean"]["frame"]["n_fake"] == 0
    assert capsys.readouterr() == ("", "")


def test_the_console_says_the_events_in_the_lines_of_deepscan_evaluate():
    buffer = io.StringIO()
    err = Console(file=buffer, soft_wrap=True, width=100)  # not a terminal: no bar, plain lines
    progress = ConsoleEvaluationProgress(Console(file=io.StringIO()), err)
    progress.on_phase_start("scoring with tiny_a", 4)
    progress.on_advance(4)
    progress.on_phase_end()
    progress.on_faces_found(FacesFound("val", media_files=3, unreadable=2, faceless=0))
    progress.on_member_left_out("tiny_b: no trained weights [shipped]")
    progress.on_ensemble(EnsembleScoring(("tiny_a", "tiny_b"), 0.1, "ensemble card"))
    progress.on_untrained("tiny_b", "tiny_b has no trained weights: [its] scores and metrics mean nothing")
    progress.on_note("the test data holds real samples only")
    progress.on_written(Path("results"), [Path("a"), Path("b")])
    assert buffer.getvalue().splitlines() == [
        "warning: 2 unreadable file(s) in the val data were skipped",
        "ensemble: left out tiny_b: no trained weights [shipped]",
        "note: ensemble of tiny_a, tiny_b: scores are the mean of the members' calibrated P(fake), each scoring its "
        "own input size, as a scan's; the threshold 0.1 (ensemble card) is the scan's verdict threshold",
        "warning: tiny_b has no trained weights: [its] scores and metrics mean nothing",
        "note: the test data holds real samples only",
        "wrote 2 files to results (results.json, scores.csv, PNGs)",
    ]


def test_a_terminal_gets_a_bar_per_phase_that_ends_with_it():
    buffer = io.StringIO()
    progress = ConsoleEvaluationProgress(Console(file=io.StringIO()), Console(file=buffer, force_terminal=True,
                                                                             width=100))
    progress.on_phase_start("finding faces (test)", None)
    assert progress._bar is not None and progress._bar.tasks[0].total is None
    progress.on_phase_total(3)
    for _ in range(3):
        progress.on_advance()
    assert progress._bar.tasks[0].total == 3 and progress._bar.tasks[0].completed == 3
    progress.on_phase_end()
    assert progress._bar is None
    progress.on_phase_start("scoring with tiny_a", 8)
    progress.on_advance(8)
    assert progress._bar.tasks[0].completed == 8
    progress.on_phase_end()
    assert progress._bar is None
