"""Tracks shorter than the model needs: ``--pad-short`` in ``tag``, ``extract_features`` and ``auralise``.

Without the flag such a track fails as too short, and the reason names the flag; with it the track is
zero-padded to one model segment (``tag``, ``extract_features``) or to the export's shortest excerpt
(``auralise``), the results are those of the signatures called directly on the zero-padded audio, and every
result says how much of it is padding (``padded_seconds``). Tracks long enough are not touched, and an empty
file still fails. The jobs run on the in-process DirectRunner with the tiny 3^5-SampleCNN export (2000 Hz,
segments of 243 samples: a model built for one input length).
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import tensorflow as tf
from jobs_testing import SAMPLECNN_SEGMENT, SAMPLECNN_SR, decode, read_manifest_rows, signature
from signal_makers import chirp, sine

from beam_jobs import auralise, chunking, extract_features, tag
from beam_jobs.chunking import ChunkPlan
from tfaural.errors import ParameterError
from tfaural.formats import parse_track_record

SHORT = "short.flac"  # 0.05 s at 8 kHz: 100 samples at the model's 2000 Hz, under its 243
LONG = "long.wav"  # 1.2 s: 9 whole segments
EMPTY = "empty.wav"  # a WAV header and no samples


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("short-catalogue")
    sf.write(root / SHORT, chirp(300, 900, 0.05, sample_rate=8000, amplitude=0.5), 8000, subtype="PCM_16")
    sf.write(root / LONG, sine(330, 1.2, sample_rate=16000), 16000, subtype="PCM_16")
    sf.write(root / EMPTY, np.zeros(0, np.float32), 8000, subtype="PCM_16")
    return root


def _padded(path: pathlib.Path, length: int) -> np.ndarray:
    """The reference: the decoded track and zeros up to ``length`` samples, ``[1, length]``."""
    y = decode(path, SAMPLECNN_SR)
    assert 0 < len(y) < length
    return np.pad(y, (0, length - len(y)))[np.newaxis].astype(np.float32)


def _rows(output: pathlib.Path) -> dict[str, dict]:
    return {pathlib.Path(r["path"]).name: r for r in read_manifest_rows(output)}


def test_chunks_pad_only_a_waveform_shorter_than_one_segment(rng: np.random.Generator) -> None:
    plan = ChunkPlan(sample_rate=1000, segment_length=243, segment_hop=100, max_segments=4, pad_short=True)
    y = rng.standard_normal(100).astype(np.float32)
    (chunk,) = chunking.chunk_blocks([y[:60], y[60:]], plan)
    assert (chunk.index, chunk.first_segment, chunk.num_segments, chunk.padding) == (0, 0, 1, 143)
    np.testing.assert_array_equal(chunk.waveform, np.concatenate([y, np.zeros(143, np.float32)]))
    assert list(chunking.chunk_blocks([], plan)) == []  # nothing to pad: the track is empty
    long = rng.standard_normal(243 + 150).astype(np.float32)  # two whole segments and a partial third
    chunks = list(chunking.chunk_blocks([long], plan))
    assert [(c.num_segments, c.padding) for c in chunks] == [(2, 0)]  # a trailing partial segment is not padded
    assert list(chunking.chunk_blocks([y], ChunkPlan(sample_rate=1000, segment_length=243, segment_hop=100,
                                                     max_segments=4))) == []


def test_tag_pads_short_tracks_only_when_asked(catalogue: pathlib.Path, samplecnn_export: str,
                                               tmp_path: pathlib.Path) -> None:
    argv = [f"--input={catalogue}/*", f"--model={samplecnn_export}", "--runner=DirectRunner"]
    tag.run([*argv, f"--output={tmp_path / 'refused'}"])
    rows = _rows(tmp_path / "refused")
    assert rows[SHORT]["status"] == "failed" and rows[SHORT]["error_type"] == "EmptyAudioError"
    assert "too short: 100 samples" in rows[SHORT]["error"] and "--pad-short" in rows[SHORT]["error"]
    assert rows[LONG]["status"] == "ok"

    output = tmp_path / "padded"
    tag.run([*argv, f"--output={output}", "--pad-short"])
    rows = _rows(output)
    assert [rows[name]["status"] for name in (SHORT, LONG, EMPTY)] == ["ok", "ok", "failed"]
    assert "--pad-short" not in rows[EMPTY]["error"]
    lines = (output / "tags.jsonl").read_text().splitlines()
    records = {pathlib.Path(r["path"]).name: r for r in map(json.loads, lines)}
    serving = signature(samplecnn_export, "serving_default")
    expected = serving(waveform=tf.constant(_padded(catalogue / SHORT, SAMPLECNN_SEGMENT)))["scores"].numpy()[0]
    short = records[SHORT]
    np.testing.assert_allclose(list(short["scores"].values()), expected, rtol=1e-5, atol=1e-6)
    assert short["seconds"] == pytest.approx(100 / SAMPLECNN_SR)
    assert short["padded_seconds"] == pytest.approx(143 / SAMPLECNN_SR)
    assert "padded_seconds" not in records[LONG]
    with open(output / "tags.csv", newline="") as handle:
        table = {pathlib.Path(row["path"]).name: row for row in csv.DictReader(handle)}
    assert float(table[SHORT]["padded_seconds"]) == pytest.approx(0.0715) and table[LONG]["padded_seconds"] == "0"
    assert json.loads((output / "job.json").read_text())["settings"]["pad_short"] is True

    (output / "manifest.jsonl").unlink()
    tag.run([*argv, f"--output={output}", "--pad-short", "--skip-existing"])  # the padded record is reused
    assert _rows(output)[SHORT].get("reused") is True
    with pytest.raises(ParameterError, match=r"differs: settings.pad_short true, now none"):  # another run
        tag.run([*argv, f"--output={output}", "--skip-existing"])


def test_extract_features_pads_short_tracks_and_says_so(catalogue: pathlib.Path, samplecnn_export: str,
                                                        tmp_path: pathlib.Path) -> None:
    extract_features.run([f"--input={catalogue}/*", f"--model={samplecnn_export}", f"--output={tmp_path}",
                          "--runner=DirectRunner", "--pad-short", "--format=parquet"])
    rows = _rows(tmp_path)
    assert [rows[name]["status"] for name in (SHORT, LONG, EMPTY)] == ["ok", "ok", "failed"]
    spec = json.loads((tmp_path / "job.json").read_text())
    table = {pathlib.Path(r["path"]).name: r
             for name in spec["shards"] for r in pq.read_table(tmp_path / name).to_pylist()}
    features = signature(samplecnn_export, "features")
    expected = features(waveform=tf.constant(_padded(catalogue / SHORT, SAMPLECNN_SEGMENT)))["features"].numpy()[0]
    np.testing.assert_allclose(table[SHORT]["features"], expected, rtol=1e-5, atol=1e-6)
    assert (table[SHORT]["padded_seconds"], table[SHORT]["num_segments"]) == (pytest.approx(0.0715), 1)
    assert table[LONG]["padded_seconds"] == 0.0
    part = extract_features.read_part(str(tmp_path / "tracks" / f"{rows[SHORT]['name']}.npz"))
    assert part.padded_seconds == pytest.approx(0.0715)


def test_auralise_pads_a_short_excerpt_to_what_the_model_needs(catalogue: pathlib.Path, samplecnn_export: str,
                                                               tmp_path: pathlib.Path) -> None:
    argv = [f"--input={catalogue}/*", f"--model={samplecnn_export}", "--runner=DirectRunner", "--layers=1",
            "--features=0-1", "--tags=0"]
    auralise.run([*argv, f"--output={tmp_path / 'refused'}"])
    rows = _rows(tmp_path / "refused")
    assert rows[SHORT]["status"] == "failed" and "--pad-short" in rows[SHORT]["error"]
    assert "min_deconv_seconds" in rows[SHORT]["error"]

    output = tmp_path / "padded"
    auralise.run([*argv, f"--output={output}", "--pad-short", "--report"])
    rows = _rows(output)
    assert [rows[name]["status"] for name in (SHORT, LONG, EMPTY)] == ["ok", "ok", "failed"]
    track = output / rows[SHORT]["name"]
    record = parse_track_record((track / "track.json").read_text(), path="track.json")
    assert record.padded_seconds == pytest.approx(143 / SAMPLECNN_SR)
    assert record.clip_seconds == pytest.approx(SAMPLECNN_SEGMENT / SAMPLECNN_SR)
    original, rate = sf.read(track / "original.wav", dtype="float32")
    assert (rate, len(original)) == (SAMPLECNN_SR, SAMPLECNN_SEGMENT)
    np.testing.assert_allclose(original, _padded(catalogue / SHORT, SAMPLECNN_SEGMENT)[0], atol=1.5 / 2**15)
    heard = signature(samplecnn_export, "auralise")(
        waveform=tf.constant(_padded(catalogue / SHORT, SAMPLECNN_SEGMENT)), layer=tf.constant(1),
        features=tf.constant([0, 1]), mode=tf.constant("phase"))["audio"].numpy()[0]
    written = np.stack([sf.read(track / "layer1" / f"feature{k}.wav", dtype="float32")[0] for k in (0, 1)])
    np.testing.assert_allclose(written, heard, atol=1.5 / 2**15)
    long = parse_track_record((output / rows[LONG]["name"] / "track.json").read_text(), path="track.json")
    assert long.padded_seconds == 0.0 and "padded_seconds" not in long.to_dict()
    # the listening report says what the model heard: 0.05 s of the track, then silence
    page = (output / "report" / "tracks" / f"{rows[SHORT]['name']}.html").read_text()
    assert "excerpt 0 s – 0.05 s and 0.071 s of silence (zero-padded to the 0.121 s the model needs)" in page
    assert "zero-padded" not in (output / "report" / "tracks" / f"{rows[LONG]['name']}.html").read_text()
