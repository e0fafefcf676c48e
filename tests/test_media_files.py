"""Only regular files are opened: pipes, sockets, devices, link loops and unreadable paths are refused in one line."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from deepscan.media.errors import MediaError, shown_path
from deepscan.media.files import check_regular, file_sha256
from deepscan.media.images import discover_media, load_image, media_kind
from deepscan.media.video import probe_video


def refused(call, path: Path) -> str:
    """The one-line message ``call(path)`` refuses ``path`` with; fails, instead of hanging, if it blocks."""
    outcome: list = []

    def attempt() -> None:
        try:
            call(path)
        except MediaError as error:
            outcome.append(str(error))
        else:
            outcome.append(None)

    worker = threading.Thread(target=attempt, daemon=True)  # daemon: a blocked read must not hold pytest
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), f"{call.__name__}({path}) blocked"
    [message] = outcome
    assert message is not None, f"{call.__name__}({path}) accepted it"
    assert "\n" not in message and shown_path(path) in message
    return message


READERS = [check_regular, file_sha256, load_image, probe_video]


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: reader.__name__)
def test_a_named_pipe_is_refused_without_being_opened(tmp_path, reader):
    pipe = tmp_path / "pipe.mp4"
    os.mkfifo(pipe)
    assert "named pipe (FIFO)" in refused(reader, pipe)


def test_sockets_devices_and_pipes_without_an_extension(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fspath(tmp_path / "listening.mp4"))
    try:
        assert "a socket" in refused(check_regular, tmp_path / "listening.mp4")
    finally:
        server.close()
    assert "character device" in refused(check_regular, Path("/dev/zero"))  # would never end
    os.mkfifo(tmp_path / "pipe")
    assert "named pipe" in refused(media_kind, tmp_path / "pipe")  # no extension: settled by content, not opened


def test_links_folders_and_empty_files(tmp_path):
    os.symlink("self.mp4", tmp_path / "self.mp4")
    os.symlink("b.jpg", tmp_path / "a.jpg")
    os.symlink("a.jpg", tmp_path / "b.jpg")
    os.symlink("gone.mp4", tmp_path / "dangling.mp4")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "symbolic link loop" in refused(check_regular, tmp_path / "self.mp4")
    assert "symbolic link loop" in refused(load_image, tmp_path / "a.jpg")
    assert "broken symbolic link" in refused(probe_video, tmp_path / "dangling.mp4")
    assert "file not found" in refused(check_regular, tmp_path / "missing.mp4")
    assert "is a folder" in refused(check_regular, tmp_path)
    assert "empty file (0 bytes)" in refused(load_image, tmp_path / "empty.png")


def test_a_file_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(b"\xff\xd8 some bytes")
    locked.chmod(0)
    if os.geteuid() == 0:
        # Root reads a file whatever its mode: make opening it fail as it does for everyone else.
        real_open = os.open

        def denied(path, *args, **kwargs):
            if os.fspath(path) == os.fspath(locked):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", denied)
    assert "permission denied" in refused(check_regular, locked)
    assert "permission denied" in refused(load_image, locked)


def test_a_folder_the_walk_cannot_read_is_listed_for_the_caller_to_report(tmp_path, monkeypatch):
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.jpg").write_bytes(b"x")
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "b.jpg").write_bytes(b"x")
    closed.chmod(0)
    if os.geteuid() == 0:
        # Root lists any folder: make listing it fail as it does for everyone else.
        real_scandir = os.scandir

        def denied(path="."):
            if os.fspath(path) == os.fspath(closed):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", denied)
    try:
        assert discover_media([tmp_path]) == [closed, tmp_path / "open" / "a.jpg"]
        message = refused(check_regular, closed)
        assert "folder cannot be read (permission denied)" in message and "not scanned" in message
    finally:
        closed.chmod(0o700)


def test_sha256_and_size_are_read_through_the_same_checks(tmp_path):
    data = os.urandom(3 << 20 | 5)  # more than one read
    (tmp_path / "clip.mp4").write_bytes(data)
    assert file_sha256(tmp_path / "clip.mp4") == (hashlib.sha256(data).hexdigest(), len(data))


def test_names_are_shown_on_one_line_whatever_they_hold():
    assert shown_path("/case 42/ü 证据 $(x) 'q'.mp4") == "/case 42/ü 证据 $(x) 'q'.mp4"  # printable: as it is
    assert shown_path("a\nb\x1b[2J\u202e.mp4") == "a\\nb\\x1b[2J\\u202e.mp4"
    assert shown_path(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"  # the byte that is not UTF-8
    error = MediaError("two\nlines.mp4", "empty file\n(0 bytes)")
    assert str(error) == "two\\nlines.mp4: empty file (0 bytes)"
