"""``--cover-end``: ``tag`` and ``extract_features`` hear a track to its last sample.

Whole segments leave a track's last partial segment unheard; with the flag, the segment that ends at the
track's end is analysed too, as one more segment. The references are the export's signatures called
independently on every segment alone (the whole segments, at multiples of the hop, and the track's last
``segment_length`` samples), on the audio ``tfaural.audio.load`` decodes. The jobs run on the in-process
DirectRunner with the tiny 3^5-SampleCNN export (2000 Hz, segments of 243 samples) and ``--chunk-seconds 1``
(8 segments per chunk), so that the tracks span several chunks. The chunks themselves, for every segment
geometry and block size, are checked in test_chunking.py (``test_chunks_hold_exactly_the_segments_...``).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import tensorflow as tf
from jobs_testing import SAMPLECNN_SEGMENT, SAMPLECNN_SR, decode, read_manifest_rows, signature
from signal_makers import chirp, sine

from beam_jobs import chunking, extract_features, tag
from beam_jobs.chunking import ChunkPlan
from tfaural import audio
from tfaural.errors import ParameterError

RAGGED = "ragged.flac"  # 1.3 s at 16 kHz: 2600 samples at the model's 2000 Hz, 10 whole segments and 170 more
EXACT = "exact.wav"  # 9 segments at the model's rate exactly: nothing left to cover
CHUNK_ARGS = ["--runner=DirectRunner", "--chunk-seconds=1"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("cover-end-catalogue")
    music = sine(330, 1.3, sample_rate=16000, amplitude=0.3) + chirp(200, 900, 1.3, sample_rate=16000, amplitude=0.3)
    sf.write(root / RAGGED, music, 16000, subtype="PCM_16")
    n = 9 * SAMPLECNN_SEGMENT
    sf.write(root / EXACT, chirp(100, 700, n / SAMPLECNN_SR, sample_rate=SAMPLECNN_SR, amplitude=0.5)[:n],
             SAMPLECNN_SR, subtype="PCM_16")
    return root


def _segments(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """(decoded track, its segments ``[S, 243]``: the whole ones and, if any samples are left, the last 243)."""
    y = decode(path, SAMPLECNN_SR)
    whole = audio.segment(y, length=SAMPLECNN_SEGMENT, hop=SAMPLECNN_SEGMENT)
    if len(whole) * SAMPLECNN_SEGMENT < len(y):
        whole = np.concatenate([whole, y[np.newaxis, -SAMPLECNN_SEGMENT:]])
    return y, whole.astype(np.float32)


def test_a_short_track_padded_to_one_segment_gets_no_end_segment(rng: np.random.Generator) -> None:
    plan = ChunkPlan(sample_rate=1000, segment_length=243, segment_hop=100, max_segments=4, pad_short=True,
                     cover_end=True)
    y = rng.standard_normal(100).astype(np.float32)
    (chunk,) = chunking.chunk_blocks([y[:60], y[60:]], plan)
    assert (chunk.num_segments, chunk.padding, chunk.end) == (1, 143, 100)


def test_tag_hears_the_end_as_one_more_segment(catalogue: pathlib.Path, samplecnn_export: str,
                                               tmp_path: pathlib.Path) -> None:
    argv = [f"--input={catalogue}/*", f"--model={samplecnn_export}", *CHUNK_ARGS]
    tag.run([*argv, f"--output={tmp_path / 'covered'}", "--cover-end"])
    tag.run([*argv, f"--output={tmp_path / 'plain'}"])
    serving = signature(samplecnn_export, "serving_default")
    covered, plain = ({pathlib.Path(r["path"]).name: r for r in map(json.loads, lines)}
                      for lines in ((tmp_path / name / "tags.jsonl").read_text().splitlines()
                                    for name in ("covered", "plain")))
    for name in (RAGGED, EXACT):
        y, segments = _segments(catalogue / name)
        expected = serving(waveform=tf.constant(segments))["scores"].numpy().mean(axis=0)
        np.testing.assert_allclose(list(covered[name]["scores"].values()), expected, rtol=1e-5, atol=1e-6)
        assert covered[name]["seconds"] == pytest.approx(len(y) / SAMPLECNN_SR)
    # Without the flag the ragged track's last 170 samples are not heard; the exact track is the same either way.
    whole = serving(waveform=tf.constant(_segments(catalogue / RAGGED)[1][:-1]))["scores"].numpy().mean(axis=0)
    np.testing.assert_allclose(list(plain[RAGGED]["scores"].values()), whole, rtol=1e-5, atol=1e-6)
    assert plain[RAGGED]["seconds"] == pytest.approx(10 * SAMPLECNN_SEGMENT / SAMPLECNN_SR)
    assert not np.allclose(list(plain[RAGGED]["scores"].values()), list(covered[RAGGED]["scores"].values()),
                           rtol=1e-5, atol=1e-6)
    assert plain[EXACT]["scores"] == pytest.approx(covered[EXACT]["scores"], rel=1e-6)
    assert json.loads((tmp_path / "covered" / "job.json").read_text())["settings"]["cover_end"] is True
    assert "cover_end" not in json.loads((tmp_path / "plain" / "job.json").read_text())["settings"]
    (tmp_path / "covered" / "manifest.jsonl").unlink()
    tag.run([*argv, f"--output={tmp_path / 'covered'}", "--cover-end", "--skip-existing"])
    assert {r.get("reused") for r in read_manifest_rows(tmp_path / "covered")} == {True}
    with pytest.raises(ParameterError, match=r"differs: settings.cover_end true, now none"):  # another run
        tag.run([*argv, f"--output={tmp_path / 'covered'}", "--skip-existing"])


def test_extract_features_pools_the_end_segment_and_stores_it_last(catalogue: pathlib.Path, samplecnn_export: str,
                                                                   tmp_path: pathlib.Path) -> None:
    extract_features.run([f"--input={catalogue}/*", f"--model={samplecnn_export}", f"--output={tmp_path}",
                          *CHUNK_ARGS, "--cover-end", "--per-segment", "--format=parquet"])
    spec = json.loads((tmp_path / "job.json").read_text())
    table = {pathlib.Path(r["path"]).name: r
             for name in spec["shards"] for r in pq.read_table(tmp_path / name).to_pylist()}
    features = signature(samplecnn_export, "features")
    is_max = np.concatenate([np.full(entry["size"], entry["name"].endswith("_max")) for entry in
                             spec["feature_layout"]])
    for name, count in ((RAGGED, 11), (EXACT, 9)):
        y, segments = _segments(catalogue / name)
        per_segment = features(waveform=tf.constant(segments))["features"].numpy()
        row = table[name]
        assert row["num_segments"] == len(segments) == count
        assert row["seconds"] == pytest.approx(len(y) / SAMPLECNN_SR)
        np.testing.assert_allclose(np.array(row["segment_features"]), per_segment, rtol=1e-5, atol=1e-6)
        pooled = np.where(is_max, per_segment.max(axis=0), per_segment.mean(axis=0))
        np.testing.assert_allclose(row["features"], pooled, rtol=1e-5, atol=1e-6)
