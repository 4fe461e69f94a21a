"""SignatureModelHandler and the shared pieces of the inference jobs, on real (tiny) SavedModel exports.

This module also provides what the job tests share (they import it): one export per model
family per test session and a generated catalogue of good, broken and oddly named files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import chirp, clicks, sine

from beam_jobs import catalogue_io
from beam_jobs.catalogue_io import TrackInput, TrackResult
from beam_jobs.inference import (
    InferenceFailure,
    SignatureModelHandler,
    read_metadata,
    require_signature,
    tf_error_reason,
)
from export import exporter
from tfaural import audio
from tfaural.config import AudioConfig, SegmentConfig, STFTConfig
from tfaural.errors import ModelError, ParameterError
from tfaural.models import choi_cnn, config_from_model
from tfaural.models.samplecnn import samplecnn
from tfaural.run import RunInfo

CHOI_SR = 2048
CHOI_SEGMENT = 992  # 32 STFT frames of hop 32
SAMPLECNN_SR = 2000
SAMPLECNN_SEGMENT = 243  # 3^5


# ---------------------------------------------------------------------------
# Shared by the job tests (imported from this module)
# ---------------------------------------------------------------------------


@functools.cache
def _export(family: str, root: str) -> str:
    """One tiny export per family per session (exporting takes seconds), random weights."""
    keras.utils.set_random_seed(7)
    if family == "choi":
        model = choi_cnn(n_outputs=3, n_freq=33, n_frames=32, n_fft=64, hop_length=32, n_filters=4, fc_units=(8,),
                         sample_rate=CHOI_SR)
        info = RunInfo(model=config_from_model(model), labels=("calm", "dense", "bright"), task="multi-label",
                       audio=AudioConfig(sample_rate=CHOI_SR), segment=SegmentConfig(length=CHOI_SEGMENT),
                       stft=STFTConfig(n_fft=64, hop_length=32))
    else:
        model = samplecnn(filter_sizes=(3, 3, 3, 3, 3), channels=(8, 8, 8, 16), front_filters=8, top_filters=16,
                          n_outputs=4, sample_rate=SAMPLECNN_SR)
        info = RunInfo(model=config_from_model(model), labels=("guitar", "piano", "drums", "voice"),
                       task="multi-label", audio=AudioConfig(sample_rate=SAMPLECNN_SR),
                       segment=SegmentConfig(length=SAMPLECNN_SEGMENT))
    return exporter.export_model(model, info, os.path.join(root, f"export-{family}"), verify=False)


@pytest.fixture(scope="session")
def choi_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Choi CNN export (2048 Hz, 5 layers of 4 feature maps, segments of 992 samples)."""
    return _export("choi", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def samplecnn_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 3^5-SampleCNN export (2000 Hz, segments of 243 samples, 4 labels)."""
    return _export("samplecnn", str(tmp_path_factory.getbasetemp()))


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file of a generated catalogue.

    Attributes:
        relative: Path relative to the catalogue folder (as a glob reports it).
        error: The expected failure (error type), or ``None`` for a good file.
        reason: A fragment of the expected failure reason.
        silent: The file is digital silence.
    """

    relative: str
    error: str | None = None
    reason: str = ""
    silent: bool = False


def write_catalogue(root: pathlib.Path) -> list[Entry]:
    """Good files in several formats and rates, broken ones, and hostile names, under ``root``.

    Every good file is 1.2 s long (long enough for either tiny model).
    """

    def write(relative: str, y: np.ndarray, rate: int, subtype: str | None = None) -> Entry:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y if y.ndim == 1 else y.T, rate, subtype=subtype)
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
        dataclasses.replace(write("silence.wav", np.zeros(9600, np.float32), 8000, "PCM_16"), silent=True),
    ]
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(256)) * 4)
    (root / "bad" / "empty.flac").write_bytes(b"")
    (root / "bad" / "notes.mp3").write_text("not audio\n")
    write("bad/short.wav", sine(440, 0.01, sample_rate=8000, fade=0), 8000)
    entries += [
        Entry("bad/corrupt.wav", "AudioDecodeError", "not a readable audio file"),
        Entry("bad/empty.flac", "AudioDecodeError", "empty file"),
        Entry("bad/notes.mp3", "AudioDecodeError", "not a readable audio file"),
        Entry("bad/short.wav", "EmptyAudioError", "too short"),
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


# ---------------------------------------------------------------------------
# Tests of the handler
# ---------------------------------------------------------------------------


def test_handler_batches_groups_and_isolates_a_bad_example(samplecnn_export: str, rng: np.random.Generator) -> None:
    handler = SignatureModelHandler(samplecnn_export, signature="serving_default", max_batch_size=8)
    model = handler.load_model()
    assert model.batched == frozenset({"waveform"})
    waves = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (486, 729, 486, 10, 486)]
    results = list(handler.run_inference([{"waveform": w} for w in waves], model))
    assert [r.example["waveform"].shape for r in results] == [w.shape for w in waves]
    bad = results[3].inference
    assert isinstance(bad, InferenceFailure) and bad.error == "InvalidArgumentError"
    assert "waveform has 10 samples; need at least 243" in bad.reason
    reference = signature(samplecnn_export, "serving_default")
    for wave, result in zip(waves, results):
        if len(wave) < SAMPLECNN_SEGMENT:
            continue
        expected = reference(waveform=tf.constant(wave[np.newaxis]))["scores"].numpy()[0]
        np.testing.assert_allclose(result.inference["scores"], expected, rtol=1e-5, atol=1e-6)
        assert result.inference["labels"].shape == (4,)


def test_handler_passes_unbatched_inputs_from_examples_and_constants(choi_export: str,
                                                                     rng: np.random.Generator) -> None:
    wave = rng.uniform(-0.5, 0.5, 1500).astype(np.float32)
    handler = SignatureModelHandler(choi_export, signature="auralise", constant_inputs={"mode": "phase"},
                                    outputs=["audio", "silent"])
    model = handler.load_model()
    assert model.batched == frozenset({"waveform"})
    examples = [{"waveform": wave, "layer": np.int32(layer), "features": np.array(feats, np.int32)}
                for layer, feats in ((1, [0, 2]), (2, [1]), (1, [0, 2]), (9, [0]))]
    results = list(handler.run_inference(examples, model))
    assert sorted(results[0].inference) == ["audio", "silent"]
    assert results[0].inference["audio"].shape == (2, 1500) and results[1].inference["audio"].shape == (1, 1500)
    np.testing.assert_array_equal(results[0].inference["audio"], results[2].inference["audio"])
    assert isinstance(results[3].inference, InferenceFailure)
    assert results[3].inference.reason == "layer must be one of [1, 2, 3, 4, 5]; got 9"
    expected = signature(choi_export, "auralise")(waveform=tf.constant(wave[np.newaxis]), layer=tf.constant(2),
                                                 features=tf.constant([1]), mode=tf.constant("phase"))
    np.testing.assert_allclose(results[1].inference["audio"], expected["audio"].numpy()[0], atol=1e-6)


class _Exploding(SignatureModelHandler):
    """Fails the whole batch (not an example error) when it holds the waveform of length 300."""

    def run_inference(self, batch: Any, model: Any, inference_args: Any = None) -> Any:
        if any(len(example["waveform"]) == 300 for example in batch):
            raise RuntimeError("the accelerator caught fire")
        return super().run_inference(batch, model, inference_args)


def test_infer_turns_failed_batches_into_failed_tracks(samplecnn_export: str) -> None:
    tracks = [TrackInput(f"/music/{i}.wav", f"t{i}", f"t{i}") for i in range(3)]
    lengths = {"t0": 243, "t1": 300, "t2": 10}
    handler = _Exploding(samplecnn_export, signature="serving_default", max_batch_size=1)
    with test_pipeline.TestPipeline() as pipeline:
        examples = pipeline | beam.Create(
            [(t, {"waveform": np.full(lengths[t.track_id], 0.1, np.float32)}) for t in tracks])
        predicted, failures = catalogue_io.infer(examples, "Infer", handler)
        kinds = predicted | "Kinds" >> beam.Map(
            lambda e: (e[0].track_id, "failure" if isinstance(e[1].inference, InferenceFailure) else "scores"))
        assert_that(kinds, equal_to([("t0", "scores"), ("t2", "failure")]), label="Predictions")
        described = failures | beam.Map(lambda r: (r.track_id, r.status, r.stage, r.error_type, "fire" in r.error))
        assert_that(described, equal_to([("t1", "failed", "inference", "RuntimeError", True)]), label="Failures")


def test_metadata_errors(tmp_path: pathlib.Path, choi_export: str) -> None:
    with pytest.raises(ModelError, match="not a tfaural SavedModel export"):
        read_metadata(str(tmp_path))
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "metadata.json").write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_metadata(str(tmp_path))
    meta = read_metadata(choi_export)
    assert meta["sample_rate"] == CHOI_SR
    assert require_signature(meta, "auralise", export_dir=choi_export)["inputs"]["mode"]["dtype"] == "string"
    with pytest.raises(ModelError, match="has no signature 'transcribe'"):
        require_signature(meta, "transcribe", export_dir=choi_export)


def test_tf_error_reason_keeps_the_check_message() -> None:
    err = tf.errors.InvalidArgumentError(
        None, None, "Graph execution error:\n\nassertion failed: [layer must be one of [1, 2]; got 9]\n\t "
                    "[[{{node Assert}}]] [Op:__inference_x]")
    assert tf_error_reason(err) == "layer must be one of [1, 2]; got 9"
    assert tf_error_reason(ValueError("plain\nmessage")) == "plain message"


# ---------------------------------------------------------------------------
# Shared pieces: names, listing, accounting
# ---------------------------------------------------------------------------


def test_output_names_are_single_safe_components_and_unique() -> None:
    ids = ["a/b", "a__b", "Song", "song", "x" * 200, "manifest.jsonl", "plain"]
    names = catalogue_io.output_names(ids, reserved=["manifest.jsonl"])
    assert names[-1] == "plain"
    assert len({n.casefold() for n in names}) == len(names)
    assert all("/" not in n and len(n) <= catalogue_io.MAX_NAME_LENGTH for n in names)
    assert names[0].startswith("a__b-") and names[1].startswith("a__b-")
    assert names[5].startswith("manifest.jsonl-")
    assert catalogue_io.output_names(list(reversed(ids)), reserved=["manifest.jsonl"]) == list(reversed(names))


def test_list_tracks_from_a_glob_and_a_manifest(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "music"
    entries = write_catalogue(root)
    tracks = catalogue_io.list_tracks(input_glob=f"{root}/**", manifest=None)
    assert sorted(os.path.relpath(t.path, root) for t in tracks) == sorted(e.relative for e in entries)
    ids = {os.path.relpath(t.path, root): t.track_id for t in tracks}
    assert ids["rock/Song One.wav"] == "rock/Song_One" and ids["jazz/ünïcødé trâck.ogg"] == "jazz/_n_c_d_tr_ck"
    assert ids["pop/a.wav"].startswith("pop/a-") and ids["pop/a.flac"].startswith("pop/a-")
    assert ids["..dots..wav"] == "_.dots."
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,track_id\nmusic/rock/Song One.wav,mine/one\nmissing.wav,\n")
    listed = catalogue_io.list_tracks(input_glob=None, manifest=str(manifest))
    assert [(t.track_id, t.name) for t in listed] == [("mine/one", "mine__one"), ("missing", "missing")]
    with pytest.raises(ParameterError, match="matched no files"):
        catalogue_io.list_tracks(input_glob=f"{root}/*.nothing", manifest=None)
    with pytest.raises(ParameterError, match="exactly one"):
        catalogue_io.list_tracks(input_glob=f"{root}/*", manifest=str(manifest))


def test_account_for_tracks_lists_every_input_once(tmp_path: pathlib.Path) -> None:
    tracks = [TrackInput(f"/m/{i}.wav", f"t{i}", f"t{i}") for i in range(4)]
    results = [
        TrackResult(tracks[0], "ok", outputs=("x",)),
        TrackResult(tracks[1], "failed", stage="decode", error_type="AudioDecodeError", error="bad"),
        TrackResult(tracks[1], "ok", outputs=("y",)),  # a retry that succeeded wins
        TrackResult(tracks[2], "failed", stage="inference", error_type="E", error="boom"),
    ]
    with test_pipeline.TestPipeline() as pipeline:
        listed = pipeline | "Tracks" >> beam.Create(tracks)
        found = pipeline | "Results" >> beam.Create(results)
        _ = (listed, found) | catalogue_io.AccountForTracks(str(tmp_path))
    rows = read_manifest_rows(tmp_path)
    assert [(r["track_id"], r["status"]) for r in rows] == [("t0", "ok"), ("t1", "ok"), ("t2", "failed"),
                                                            ("t3", "failed")]
    assert rows[1]["outputs"] == ["y"] and rows[3]["error_type"] == "LostResult"
    summary = catalogue_io.summarize(str(tmp_path))
    assert (summary.ok, summary.failed, summary.total) == (2, 2, 4)
    assert summary.failures == {"inference: E": 1, "pipeline: LostResult": 1}
    assert "2 of 4 track(s) ok" in summary.describe("job")
