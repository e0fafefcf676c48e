"""One way in to a media file (``deepscan.media.open_media``), and each file's checksum read once per command."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from deepscan.media import open_media
from deepscan.media.checksums import RECENT_CHANGE_S, Checksums
from deepscan.media.errors import MediaError
from deepscan.media.source import ImageInfo
from deepscan.media.synthetic import moving_portrait_clip
from deepscan.media.video import VideoInfo, iter_frames, probe_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return moving_portrait_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=1.0, fps=10, size=(96, 64))


def counting_av_open(monkeypatch) -> list:
    opened, real_open = [], av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: (opened.append(args[0]), real_open(*args, **kwargs))[1])
    return opened


def test_a_video_is_probed_by_the_decoder_that_reads_its_frames(clip, monkeypatch):
    opened = counting_av_open(monkeypatch)
    with open_media(clip) as media:
        assert media.kind == "video"
        info = media.info
        frames = list(media.frames(fps=None))
    assert len(opened) == 1
    assert info == probe_video(clip) and isinstance(info, VideoInfo)
    alone = list(iter_frames(clip, fps=None))
    assert [frame.time_s for frame in frames] == [frame.time_s for frame in alone]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, alone))  # the probe's frame is the first


def test_a_video_sampled_through_the_source_is_sampled_as_before(clip):
    with open_media(clip) as media:
        _ = media.info
        sampled = [frame.index for frame in media.frames(fps=3)]
    assert sampled == [frame.index for frame in iter_frames(clip, fps=3)]


def test_the_frames_are_read_once_per_source(clip):
    with open_media(clip) as media:
        list(media.frames())
        with pytest.raises(RuntimeError, match="read once"):
            list(media.frames())


def test_an_image_is_one_frame_and_its_size(tmp_path, portrait_image):
    path = tmp_path / "face.png"
    Image.fromarray(portrait_image).save(path)
    with open_media(path) as media:
        assert media.kind == "image" and media.info == ImageInfo(path, width=512, height=600)
        [frame] = media.frames(fps=2.0)
    assert (frame.index, frame.time_s) == (0, 0.0) and np.array_equal(frame.image, portrait_image)


def test_a_file_that_is_neither_is_one_line_when_opened_or_read(tmp_path):
    notes = tmp_path / "notes.xyz"
    notes.write_text("nothing to see\n")
    with pytest.raises(MediaError, match="unknown format"):
        open_media(notes)
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video\n")
    media = open_media(fake)  # by its extension: nothing is opened yet
    with pytest.raises(MediaError) as refused:
        media.info
    assert "\n" not in str(refused.value) and str(fake) in str(refused.value)


def aged(path: Path) -> Path:
    """Wait until ``path`` was last changed long enough ago to be trusted unchanged (see Checksums)."""
    time.sleep(max(0.0, RECENT_CHANGE_S + 0.3 - (time.time() - path.stat().st_ctime)))
    return path


def counting_reads(monkeypatch) -> list:
    import deepscan.media.checksums as checksums_module

    reads, real = [], checksums_module.handle_sha256
    monkeypatch.setattr(checksums_module, "handle_sha256",
                        lambda handle, path, *args: (reads.append(path), real(handle, path, *args))[1])
    return reads


def test_a_file_is_hashed_once_while_it_stays_the_same(tmp_path, monkeypatch):
    path = tmp_path / "evidence.bin"
    path.write_bytes(b"x" * 5000)
    aged(path)
    reads = counting_reads(monkeypatch)
    checksums = Checksums()
    expected = (hashlib.sha256(b"x" * 5000).hexdigest(), 5000)
    assert checksums.sha256(path) == expected
    assert checksums.sha256(Path(os.path.relpath(path))) == expected  # the same file by any name
    assert open_media(path, kind="image", checksums=checksums).sha256() == expected
    assert len(reads) == 1
    assert Checksums().sha256(path) == expected and len(reads) == 2  # another command reads it again


def test_a_changed_file_is_hashed_again(tmp_path, monkeypatch):
    path = tmp_path / "evidence.bin"
    path.write_bytes(b"a" * 100)
    aged(path)
    reads = counting_reads(monkeypatch)
    checksums = Checksums()
    first, _ = checksums.sha256(path)
    with open(path, "r+b") as handle:  # same size, and its modification time put back: the status change shows
        handle.write(b"b")
    stamp = path.stat()
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    second, _ = checksums.sha256(path)
    assert second != first and second == hashlib.sha256(b"b" + b"a" * 99).hexdigest() and len(reads) == 2


def test_a_file_changed_moments_ago_is_not_trusted_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "evidence.bin"
    path.write_bytes(b"a" * 100)  # a further write within the file system's clock tick could leave no trace
    reads = counting_reads(monkeypatch)
    checksums = Checksums()
    checksums.sha256(path)
    checksums.sha256(path)
    assert len(reads) == 2


def test_a_checksum_refuses_a_pipe_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(MediaError, match="named pipe"):
        Checksums().sha256(tmp_path / "pipe.mp4")
