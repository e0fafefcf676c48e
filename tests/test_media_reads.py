"""How often one command reads a media file: each file is hashed once, and decoded once (probed by the decoder that
goes on to its frames; the faces a report or explain shows kept by the scan, not decoded again).

Counted at the three doors a file goes through: ``os.open`` (``deepscan.media.files``: the regular-file check,
and the checksum, which reads the whole file), ``builtins.open`` (any other whole-file read) and ``av.open`` (a
decoder: probing, decoding). A read is a checksum when the handle it opened is read to its end.
"""

from __future__ import annotations

import builtins
import os
import time
from collections import Counter
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.media.synthetic import moving_portrait_clip

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture
def clip(tmp_path) -> Path:
    path = moving_portrait_clip(tmp_path / "clip.mp4", seconds=1.0, fps=10, size=(160, 120), faces=1)
    # A file changed in the last moments may change again unseen by its timestamps: only an older one is trusted
    # to be the file already hashed (deepscan.media.checksums). Evidence is seldom seconds old.
    time.sleep(max(0.0, 2.5 - (time.time() - path.stat().st_ctime)))
    return path


class Reads:
    """Every open of one file, by door, and the checksums among them (handles read to their end)."""

    def __init__(self, monkeypatch, path: Path):
        self.path = os.path.realpath(path)
        self.opens: Counter[str] = Counter()
        self.checksums = 0
        real_os_open, real_open, real_av_open, real_fdopen = os.open, builtins.open, av.open, os.fdopen
        descriptors: set[int] = set()

        def counted_os_open(file, flags, *args, **kwargs):
            descriptor = real_os_open(file, flags, *args, **kwargs)
            if self._is_it(file):
                self.opens["os.open"] += 1
                descriptors.add(descriptor)
            return descriptor

        def counted_fdopen(descriptor, *args, **kwargs):
            handle = real_fdopen(descriptor, *args, **kwargs)
            return self._watched(handle) if descriptor in descriptors else handle

        def counted_open(file, *args, **kwargs):
            handle = real_open(file, *args, **kwargs)
            if isinstance(file, (str, bytes, os.PathLike)) and self._is_it(file):
                self.opens["open"] += 1
                return self._watched(handle)
            return handle

        def counted_av_open(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and self._is_it(file):
                self.opens["av.open"] += 1
            return real_av_open(file, *args, **kwargs)

        monkeypatch.setattr(os, "open", counted_os_open)
        monkeypatch.setattr(os, "fdopen", counted_fdopen)
        monkeypatch.setattr(builtins, "open", counted_open)
        monkeypatch.setattr(av, "open", counted_av_open)

    def _is_it(self, file) -> bool:
        try:
            return os.path.realpath(os.fsdecode(file)) == self.path
        except (TypeError, ValueError):
            return False

    def _watched(self, handle):
        reads = self

        class Watched:
            def __init__(self):
                self.at_end = False

            def read(self, *args):
                chunk = handle.read(*args)
                if not chunk and not self.at_end:
                    self.at_end = True
                    reads.checksums += 1
                return chunk

            def __getattr__(self, name):
                return getattr(handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

        return Watched()

    @property
    def decoders(self) -> int:
        return self.opens["av.open"]


def test_scan_with_a_report_hashes_a_clip_once_and_decodes_it_once(tmp_path, clip, tiny_cam, untrained, monkeypatch):
    reads = Reads(monkeypatch, clip)
    result = CliRunner().invoke(app, ["scan", str(clip), "--method", tiny_cam, "--fps", "4",
                                      "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "no heat maps" not in result.stderr and (tmp_path / "report" / "report.html").is_file()
    assert reads.checksums == 1, reads.opens
    # One decoder for the scan, its probe included: the scan keeps the frames of the faces the report's heat maps
    # explain (at display size, one per track), so that the report does not decode them again.
    assert reads.decoders == 1, reads.opens


def test_a_scan_alone_opens_a_clip_for_one_checksum_and_one_decoder(tmp_path, clip, tiny_cam, untrained, monkeypatch):
    reads = Reads(monkeypatch, clip)
    result = CliRunner().invoke(app, ["scan", str(clip), "--method", tiny_cam, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert (reads.checksums, reads.decoders) == (1, 1), reads.opens


def test_explain_of_a_clip_hashes_it_once_and_decodes_it_once(tmp_path, clip, tiny_cam, untrained, monkeypatch):
    reads = Reads(monkeypatch, clip)
    result = CliRunner().invoke(app, ["explain", str(clip), "--method", tiny_cam, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert reads.checksums == 1, reads.opens
    assert reads.decoders == 1, reads.opens  # finding the faces, their frames kept for the figures (as for a report)
