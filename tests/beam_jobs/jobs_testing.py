"""What the Beam job tests share: tiny exports, a generated catalogue and manifest checks.

The session's exports are the fixtures ``choi_export`` and ``samplecnn_export`` of this folder's
``conftest.py``; the helpers here are imported by the test modules.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
import shutil
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import ffmpeg_files
import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from signal_makers import chirp, clicks, sine

from export import exporter
from tfaural import audio
from tfaural.config import AudioConfig, SegmentConfig
from tfaural.models import choi_cnn, config_from_model
from tfaural.models.samplecnn import samplecnn_model
from tfaural.training.run import RunInfo

#: A ``sitecustomize`` that records, for every Python process of a run, its arguments at its start and whether it
#: had imported TensorFlow when it ended (into the folder ``$TFAURAL_IMPORT_RECORDS``): see :func:`import_records`.
SITECUSTOMIZE = '''
import atexit, json, os, sys

_FOLDER = os.environ.get("TFAURAL_IMPORT_RECORDS")


def _record(kind):
    with open(os.path.join(_FOLDER, f"{os.getpid()}.{kind}.json"), "w") as handle:
        json.dump({"argv": sys.orig_argv, "tensorflow": "tensorflow" in sys.modules}, handle)


if _FOLDER:
    _record("start")  # every Python process of the run, at its start ...
    atexit.register(_record, "exit")  # ... and whether it had imported TensorFlow when it ended
'''

REPO = pathlib.Path(__file__).resolve().parents[2]


def discard(pipeline: Any) -> None:
    """Deletes the temporary folder of a ``beam.Pipeline`` a test built and never ran (Beam deletes it only in
    ``run()``; ``beam_jobs.job.Job.run_pipeline`` does the same for its own)."""
    shutil.rmtree(pipeline.local_tempdir)


def recording_env(folder: pathlib.Path) -> dict[str, str]:
    """The environment of a command whose Python processes :data:`SITECUSTOMIZE` records (into ``folder``)."""
    site, records = folder / "site", folder / "records"
    site.mkdir(parents=True)
    records.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFAURAL_IMPORT_RECORDS": str(records),
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])}


def import_records(folder: pathlib.Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What :func:`recording_env`'s processes recorded: ``(started, exited)``, each ``{"argv", "tensorflow"}``."""
    records = folder / "records"
    return ([json.loads(p.read_text()) for p in records.glob("*.start.json")],
            [json.loads(p.read_text()) for p in records.glob("*.exit.json")])


CHOI_SR = 2048
CHOI_SEGMENT = 992  # 32 STFT frames of hop 32
SAMPLECNN_SR = 2000
SAMPLECNN_SEGMENT = 243  # 3^5


@functools.cache
def tiny_export(family: str, root: str) -> str:
    """One tiny export per family per session (exporting takes seconds), random weights."""
    keras.utils.set_random_seed(7)
    if family == "choi":
        model = choi_cnn(n_outputs=3, n_freq=33, n_frames=32, n_fft=64, hop_length=32, n_filters=4, fc_units=(8,),
                         sample_rate=CHOI_SR)
        info = RunInfo(model=config_from_model(model), labels=("calm", "dense", "bright"), task="multi-label",
                       audio=AudioConfig(sample_rate=CHOI_SR), segment=SegmentConfig(length=CHOI_SEGMENT))
    else:
        model = samplecnn_model(filter_sizes=(3, 3, 3, 3, 3), channels=(8, 8, 8, 16), front_filters=8, top_filters=16,
                          n_outputs=4, sample_rate=SAMPLECNN_SR)
        info = RunInfo(model=config_from_model(model), labels=("guitar", "piano", "drums", "voice"),
                       task="multi-label", audio=AudioConfig(sample_rate=SAMPLECNN_SR),
                       segment=SegmentConfig(length=SAMPLECNN_SEGMENT))
    model.save(os.path.join(root, f"model-{family}.keras"))  # the exported model as a file (tiny_model_file)
    return exporter.export_model(model, info, os.path.join(root, f"export-{family}"), verify=False)


def broken_copy(export: str, root: pathlib.Path) -> pathlib.Path:
    """A copy of ``export`` (under ``root/broken/1``) whose metadata reads but whose graphs do not load."""
    broken = root / "broken" / "1"
    shutil.copytree(export, broken)
    for graph in broken.rglob("saved_model.pb"):  # the whole export's and the one-signature SavedModels'
        graph.write_bytes(b"not a SavedModel")
    return broken


def tiny_model_file(family: str, root: str) -> str:
    """The ``.keras`` file of :func:`tiny_export`'s model (call that first)."""
    return os.path.join(root, f"model-{family}.keras")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file of a generated catalogue.

    Attributes:
        relative: Path relative to the catalogue folder (as a glob reports it).
        error: The expected failure (error type), or ``None`` for a good file.
        reason: A fragment of the expected failure reason.
    """

    relative: str
    error: str | None = None
    reason: str = ""


def write_catalogue(root: pathlib.Path) -> list[Entry]:
    """Good files in several formats and rates, broken ones, and hostile names, under ``root``.

    Every good file is 1.2 s long (long enough for either tiny model).
    """

    def write(relative: str, y: np.ndarray, rate: int, subtype: str | None = None) -> Entry:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y if y.ndim == 1 else y.T, rate, subtype=subtype)
        return Entry(relative)

    def encode(relative: str, y: np.ndarray, rate: int, kind: str) -> Entry:
        ffmpeg_files.write(root / relative, y, sample_rate=rate, kind=kind)
        return Entry(relative)

    entries = [
        write("rock/Song One.wav", np.stack([sine(330, 1.2, sample_rate=44100), chirp(200, 900, 1.2,
                                                                                      sample_rate=44100)]), 44100),
        write("rock/song one.flac", chirp(100, 800, 1.2, sample_rate=16000), 16000, "PCM_24"),
        write("jazz/ünïcødé trâck.ogg", sine(440, 1.2, sample_rate=22050), 22050, "VORBIS"),
        write("jazz/take five.mp3", sine(550, 1.2, sample_rate=22050, amplitude=0.7), 22050, "MPEG_LAYER_III"),
        write("pop/a.wav", clicks(1.2, sample_rate=8000), 8000, "PCM_16"),
        write("pop/a.flac", chirp(300, 1500, 1.2, sample_rate=8000), 8000, "PCM_16"),
        write("..dots..wav", sine(250, 1.2, sample_rate=8000), 8000, "FLOAT"),
        dataclasses.replace(write("silence.wav", np.zeros(9600, np.float32), 8000, "PCM_16"),
                            error="InvalidAudioError", reason="digital silence (every sample is 0)"),
        # containers libsndfile does not read, decoded through FFmpeg (tfaural.ffmpeg_audio)
        encode("pop/b.m4a", np.stack([sine(660, 1.2, sample_rate=44100), chirp(300, 3000, 1.2, sample_rate=44100)]),
               44100, "aac-m4a"),
        encode("jazz/live take.webm", chirp(150, 1200, 1.2, sample_rate=48000), 48000, "opus-webm"),
    ]
    (root / "bad").mkdir(exist_ok=True)
    ffmpeg_files.video_only_mp4(root / "bad" / "clip.mp4")
    (root / "bad" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(256)) * 4)
    (root / "bad" / "empty.flac").write_bytes(b"")
    (root / "bad" / "notes.mp3").write_text("not audio\n")
    write("bad/short.wav", sine(440, 0.01, sample_rate=8000, fade=0), 8000)
    entries += [
        Entry("bad/corrupt.wav", "AudioDecodeError", "not a readable audio file"),
        Entry("bad/empty.flac", "AudioDecodeError", "empty file"),
        Entry("bad/notes.mp3", "AudioDecodeError", "not a readable audio file"),
        Entry("bad/short.wav", "EmptyAudioError", "too short"),
        Entry("bad/clip.mp4", "AudioDecodeError", "the MP4 container has no audio stream (video)"),
    ]
    return entries


def read_manifest_rows(output: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of ``output/manifest.jsonl``."""
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


def check_manifest(output: pathlib.Path, root: pathlib.Path, entries: list[Entry]) -> dict[str, dict[str, Any]]:
    """Every entry appears exactly once with the expected status and reason; returns rows by relative path."""
    rows = read_manifest_rows(output)
    paths = [os.path.relpath(r["path"], root) for r in rows]
    assert sorted(paths) == sorted(e.relative for e in entries), "the manifest must list every input exactly once"
    by_path = dict(zip(paths, rows))
    for entry in entries:
        row = by_path[entry.relative]
        if entry.error is None:
            assert row["status"] == "ok", row
            assert row["outputs"], row
            for output_file in row["outputs"]:
                assert (output / output_file).is_file(), output_file
        else:
            assert row["status"] == "failed", row
            assert row["error_type"] == entry.error and entry.reason in row["error"], row
            assert row["stage"] == "decode"
    names = [r["name"] for r in rows]
    assert len({n.casefold() for n in names}) == len(names), "output names must be unique"
    assert all("/" not in n and not n.startswith(".") for n in names)
    return by_path


@functools.cache
def _loaded(export_dir: str) -> Any:
    return tf.saved_model.load(export_dir)


def signature(export_dir: str, name: str) -> Callable[..., dict[str, tf.Tensor]]:
    """A signature of an export, loaded independently of the jobs' handler (once per session)."""
    return _loaded(export_dir).signatures[name]


def decode(path: pathlib.Path, rate: int, **kwargs: Any) -> np.ndarray:
    """The reference decoding: tfaural.audio.load, mono, at ``rate``."""
    return audio.load(str(path), sample_rate=rate, **kwargs)[0]


_T = TypeVar("_T")
_C = TypeVar("_C")


def traced_peak(action: Callable[..., _T], *args: Any, **kwargs: Any) -> tuple[_T, int]:
    """``action(*args, **kwargs)``'s result, and the peak in bytes of the Python and NumPy allocations while it ran
    (tracemalloc).

    What a job's in-process runner holds (Beam's buffers and groupings, decoded audio, model outputs), not
    TensorFlow's own allocations.
    """
    tracemalloc.start()
    try:
        result = action(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peak_after_warm_up(run: Callable[[_C], _T], catalogue: Callable[[pathlib.Path, int], _C], root: pathlib.Path,
                       tracks: int) -> tuple[_T, int]:
    """A job's :func:`traced_peak` on a catalogue of ``tracks``, after a first run on 2 tracks, so that the
    modules a run imports are not counted. ``catalogue(folder, n)`` writes one into ``folder`` (under ``root``)."""
    run(catalogue(root / "warm", 2))
    measured = catalogue(root / "catalogue", tracks)
    return traced_peak(run, measured)


def capture_progress(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, *,
                     seconds: float) -> Callable[[], list[str]]:
    """Makes the jobs log their progress (:mod:`beam_jobs.progress`) every ``seconds`` and captures it.

    Returns:
        What gives the progress lines logged so far.
    """
    from beam_jobs.progress import PROGRESS_ENV

    monkeypatch.setenv(PROGRESS_ENV, str(seconds))
    caplog.set_level(logging.INFO, logger="beam_jobs.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "beam_jobs.progress"]
