"""A running job's progress: the count of tracks written, from the files its workers write last."""

from __future__ import annotations

import io
import logging
import os
import pathlib
import time

import numpy as np
import pytest
import soundfile as sf
from jobs_testing import SAMPLECNN_SR

from beam_jobs import tag
from beam_jobs.options import parse_job_args
from beam_jobs.progress import TrackProgress


def _touch(path: pathlib.Path, *, age: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))


def test_the_count_takes_files_written_since_the_start_and_logs_when_it_moves(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = [tmp_path / "tracks" / f"t{i}.json" for i in range(4)]
    _touch(paths[0], age=3600)  # an earlier run's file (--overwrite): not written by this run
    caplog.set_level(logging.INFO, logger="beam_jobs.progress")
    with TrackProgress("tag", [str(p) for p in paths], keep_existing=False, bar=False, interval=3600) as progress:
        assert progress.written == 0
        _touch(paths[1])
        progress.update()
        assert progress.written == 1
        progress.update()  # nothing moved: no second line
        _touch(paths[0])  # rewritten by this run
        _touch(paths[2])
        progress.update()
        assert progress.written == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "beam_jobs.progress"]
    assert lines[0].startswith("tag: 1 of 4 track(s) written (25%), ") and "left at that rate" in lines[0]
    assert lines[1].startswith("tag: 3 of 4 track(s) written (75%)") and len(lines) == 2

    # --skip-existing: what is there counts from the start; a long run ends on its count, a short one says nothing
    caplog.clear()
    with TrackProgress("tag", [str(p) for p in paths], keep_existing=True, bar=False, interval=3600) as progress:
        assert progress.written == 3
        progress.update()
    assert not caplog.records
    with TrackProgress("tag", [str(p) for p in paths], keep_existing=True, bar=False, interval=0.05) as progress:
        time.sleep(0.2)
        _touch(paths[3])
        deadline = time.monotonic() + 60
        while progress.written < 4 and time.monotonic() < deadline:  # the watching thread sees it
            time.sleep(0.05)
        assert progress.written == 4
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["tag: 4 of 4 track(s) written"]


def test_a_final_count_stands_for_files_gone_before_a_look_saw_them(tmp_path: pathlib.Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """make_tfrecords' part files are deleted once copied into their shard: the count ends on the job's own."""
    paths = [tmp_path / ".parts" / f"p{i}.tfrecord" for i in range(3)]
    caplog.set_level(logging.INFO, logger="beam_jobs.progress")
    with TrackProgress("make_tfrecords", [str(p) for p in paths], keep_existing=False, bar=False, interval=3600,
                       final_count=lambda: 3) as progress:
        _touch(paths[0])
        progress.update()
    assert progress.written == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("make_tfrecords: 1 of 3 track(s) written (33%)")
    assert lines[-1].startswith("make_tfrecords: 3 of 3 track(s) written (100%)")
    with pytest.raises(RuntimeError), TrackProgress("correlation", [str(paths[1])], keep_existing=False, bar=False,
                                                    interval=3600, unit="deconvolution",
                                                    final_count=lambda: 1) as progress:
        raise RuntimeError("the pipeline failed")  # no final count then
    assert progress.written == 0 and progress.unit == "deconvolution"
    buffer = io.StringIO()
    with TrackProgress("correlation", [str(p) for p in paths], keep_existing=False, bar=True, stream=buffer,
                       unit="deconvolution") as progress:
        pass
    assert "correlation: deconvolutions written" in buffer.getvalue()


def test_on_a_terminal_a_bar_counts_the_tracks(tmp_path: pathlib.Path) -> None:
    paths = [tmp_path / f"t{i}" / "track.json" for i in range(3)]
    stream = io.StringIO()
    with TrackProgress("auralise", [str(p) for p in paths], keep_existing=False, stream=stream, bar=True,
                       interval=3600) as progress:
        for path in paths[:2]:
            _touch(path)
        progress.update()
    drawn = stream.getvalue().replace("\r", "\n").splitlines()
    assert drawn[-1].startswith("auralise: tracks written:  67%") and "2/3" in drawn[-1]


def _options(argv: list[str]) -> object:
    return parse_job_args(argv, prog="tag", description="", option_classes=list(tag.JOB.option_classes))


@pytest.mark.slow
def test_the_tag_job_watches_the_files_its_workers_write(tmp_path: pathlib.Path, samplecnn_export: str) -> None:
    music = tmp_path / "music"
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.flac", "sub/c.wav"):
        (music / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(music / name, 0.3 * rng.standard_normal(SAMPLECNN_SR * 2).astype(np.float32), SAMPLECNN_SR)
    (music / "bad.wav").write_bytes(b"not audio")
    output = tmp_path / "tags"
    argv = [f"--input={music}/**", f"--model={samplecnn_export}", f"--output={output}", "--runner=DirectRunner"]
    tag.run(argv)
    settings = tag.JOB.settings(_options(argv))
    tracks = tag.JOB.inputs(settings)
    with tag.JOB.progress(settings, tracks) as progress:
        assert isinstance(progress, TrackProgress)
        assert progress.total == 4
    # Files written before this watcher started do not count (as after --overwrite); the three good tracks' do
    # with --skip-existing, and the one that failed wrote none.
    assert progress.written == 0
    settings = tag.JOB.settings(_options([*argv, "--skip-existing"]))
    with tag.JOB.progress(settings, tracks) as progress:
        assert progress.written == 3
