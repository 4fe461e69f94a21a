"""Reruns of ``tag`` and ``extract_features`` write byte-identical files, and leave nothing in the temp folder.

The jobs run as a user runs them (``python -m``, no ``--runner``: the multi-processing
DirectRunner with a model shared between the worker processes) twice, and once in-process with
``--batch-size 1``. RunInference batches whatever examples happen to arrive together, and
TensorFlow's kernels may sum in another order for another batch size (scores used to differ by up
to 2.8e-6 relative between runs); the model is now called on every example alone, so the batch
size is no longer part of the result.

The worker processes used to leave Beam's ``<uuid>.lock`` / ``<uuid>.address`` files (of the
model shared between them) in the system's temporary folder after every run; each run now gets
a folder of its own there, deleted at the end, and removes the folders of runs that were killed.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from jobs_testing import SAMPLECNN_SR

from beam_jobs import extract_features, scratch, tag

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOBS = {"tag": (tag, []), "extract_features": (extract_features, ["--format=npz", "--per-segment"])}


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Clips of equal lengths (so that RunInference batches them together) and one of several chunks."""
    root = tmp_path_factory.mktemp("rerun-music")
    rng = np.random.default_rng(6)
    for index in range(10):
        seconds = (1.2, 2.6)[index % 2]
        y = rng.standard_normal(int(seconds * SAMPLECNN_SR)).astype(np.float32) * 0.2
        sf.write(root / f"clip{index}.wav", y, SAMPLECNN_SR, subtype="FLOAT")
    sf.write(root / "long.wav", rng.standard_normal(75 * SAMPLECNN_SR).astype(np.float32) * 0.2, SAMPLECNN_SR,
             subtype="FLOAT")
    return root


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _run_as_a_user(job: str, argv: list[str], temp: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp)}
    done = subprocess.run([sys.executable, "-m", f"beam_jobs.{job}", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    """Every output file but job.json (which records when the run started)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "job.json"}


@pytest.mark.slow
@pytest.mark.parametrize("job", sorted(JOBS))
def test_reruns_are_byte_identical_and_leave_no_litter(
    job: str, music: pathlib.Path, samplecnn_export: str, tmp_path: pathlib.Path,
) -> None:
    module, flags = JOBS[job]
    temp = tmp_path / "temp"  # the system's temporary folder of the runs
    temp.mkdir()
    stale = temp / f"{scratch.PREFIX}{_dead_pid()}-x1y2z3"  # left by a run that was killed
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "abc0.lock").write_text("")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    live = temp / f"{scratch.PREFIX}{os.getpid()}-a1b2c3"  # a run that is still going: this process
    live.mkdir()
    outputs = []
    for attempt in range(2):
        output = tmp_path / f"run{attempt}"
        _run_as_a_user(job, [f"--input={music}/*.wav", f"--model={samplecnn_export}", f"--output={output}",
                             "--chunk-seconds=20", *flags], temp)
        assert sorted(p.name for p in temp.iterdir()) == [live.name], "the run left files in the temp folder"
        outputs.append(_files(output))
    alone = tmp_path / "alone"
    module.run([f"--input={music}/*.wav", f"--model={samplecnn_export}", f"--output={alone}", "--chunk-seconds=20",
                "--batch-size=1", "--runner=DirectRunner", *flags])
    outputs.append(_files(alone))
    rows = [json.loads(line) for line in outputs[0]["manifest.jsonl"].decode().splitlines()]
    assert len(rows) == 11 and all(row["status"] == "ok" for row in rows)
    for other in outputs[1:]:
        assert sorted(other) == sorted(outputs[0])
        different = [name for name in outputs[0] if outputs[0][name] != other[name]]
        assert not different, f"files differ between runs: {different}"


def test_stale_run_folders_are_removed_and_live_ones_kept(tmp_path: pathlib.Path) -> None:
    dead = tmp_path / f"{scratch.PREFIX}{_dead_pid()}-abc"
    dead.mkdir()
    live = tmp_path / f"{scratch.PREFIX}{os.getpid()}-def"
    live.mkdir()
    reused = tmp_path / f"{scratch.PREFIX}1-ghi"  # a folder of 1970: pid 1 now belongs to a later process
    reused.mkdir()
    os.utime(reused, (0, 0))
    other = tmp_path / "tfaural-something-else"
    other.mkdir()
    assert sorted(scratch.remove_stale_folders(str(tmp_path))) == sorted([str(dead), str(reused)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    before = os.environ.get("TMPDIR")
    with scratch.run_folder("test") as folder:
        assert os.environ["TMPDIR"] == folder and os.path.isdir(folder)
        pathlib.Path(folder, "left.lock").write_text("")
    assert not os.path.exists(folder) and os.environ.get("TMPDIR") == before


def test_a_job_stopped_between_making_its_run_folder_and_guarding_it_leaves_nothing(tmp_path: pathlib.Path) -> None:
    """SIGTERM between ``mkdtemp`` and :func:`scratch.run_folder`'s ``try`` (the window a signal can hit, as one
    did in an export's ``tempfile.TemporaryDirectory``): the command line still deletes the folder on its way out,
    and says how to go on; the folder of a run still going (this process's) stays."""
    live = tmp_path / f"{scratch.PREFIX}{os.getpid()}-a1b2c3"
    live.mkdir()
    code = """
import os, signal, sys, tempfile, time
from beam_jobs import scratch
from beam_jobs.tag import JOB

def stopped_in_the_window(argv, **kwargs):
    tempfile.mkdtemp(prefix=f"{scratch.PREFIX}{os.getpid()}-")  # made, and its removal not set up yet
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

JOB.run = stopped_in_the_window
sys.exit(JOB.main([]))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)})
    assert done.returncode == 128 + 15, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("tag: SIGTERM: ")
    assert [p.name for p in tmp_path.iterdir()] == [live.name]
