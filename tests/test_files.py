"""tfaural.files: the one atomic-write helper (mode from the umask, all or nothing, no leftovers)."""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Iterator

import numpy as np
import pytest

from tfaural import audio, files


@pytest.fixture
def umask_027() -> Iterator[None]:
    """A umask other than the usual 022, so that a mode that ignores it shows."""
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_mode_open_gives(tmp_path: pathlib.Path, umask_027: None) -> None:
    files.write_text(tmp_path / "page.html", "<p>hi</p>")
    files.write_bytes(tmp_path / "thumb.png", b"\x89PNG")
    audio.write(str(tmp_path / "a.wav"), np.zeros(800, np.float32), sample_rate=8000)
    with open(tmp_path / "plain.txt", "w", encoding="utf-8") as handle:  # what open() gives under this umask
        handle.write("x")
    expected = _mode(tmp_path / "plain.txt")
    assert expected == 0o640
    for name in ("page.html", "thumb.png", "a.wav"):
        assert _mode(tmp_path / name) == expected, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        pathlib.Path(tmp).write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_the_temporary_keeps_the_ending_writers_need(tmp_path: pathlib.Path) -> None:
    with files.atomic_path(tmp_path / "sub" / "model.weights.h5", suffix=".weights.h5") as tmp:
        assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path / "sub")
        assert os.path.getsize(tmp) == 0  # it exists from the start, with its final mode
        pathlib.Path(tmp).write_bytes(b"w")
    with files.atomic_path(tmp_path / "signals.npz") as tmp:
        np.savez(tmp, x=np.arange(3))  # np.savez appends .npz unless the name ends with it
    assert (tmp_path / "sub" / "model.weights.h5").read_bytes() == b"w"
    assert np.load(tmp_path / "signals.npz")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["model.weights.h5", "signals.npz"]


def test_media_types_of_what_a_report_on_a_bucket_serves() -> None:
    """What a browser needs to show a page, draw an image and play audio from a bucket; the rest is bytes."""
    assert files.media_type("report/index.html") == "text/html"
    assert files.media_type("report/assets/style.css") == "text/css"
    assert files.media_type("thumbs/a/layer1/feature0.png") == "image/png"
    assert files.media_type("a/track.json") == "application/json"
    assert files.media_type(pathlib.Path("a/layer1/feature0.wav")).startswith("audio/")
    assert files.media_type("features.tar.gz") == "application/octet-stream"  # compressed: not served as a tar
    assert files.media_type("shard-00000.tfrecord") == "application/octet-stream"
