"""The scan's terminal summary: one table of verdicts per file and track, and the notes that explain them."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from deepscan.cli.console import VERDICT_STYLE, err, out


def print_file_line(result) -> None:
    if result.status == "error":
        err.print(f"[red]error:[/] {escape(result.message)}", highlight=False)
    elif result.status == "partial":
        err.print(f"[yellow]partial:[/] {escape(result.message)} (results so far are kept)", highlight=False)


def print_summary(results, trained: bool, *, ensemble: bool = False) -> None:
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
