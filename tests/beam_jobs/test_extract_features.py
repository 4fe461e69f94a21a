"""beam_jobs.extract_features end to end (in-process DirectRunner) from a manifest, and its shard formats.

Features are checked against the SavedModel's ``features`` signature called directly on the same
decoded audio (whole track and every segment alone).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import tensorflow as tf
from jobs_testing import (
    SAMPLECNN_SEGMENT,
    SAMPLECNN_SR,
    Entry,
    capture_progress,
    check_manifest,
    decode,
    peak_after_warm_up,
    read_manifest_rows,
    signature,
    traced_peak,
    write_catalogue,
)

from beam_jobs import extract_features as job
from beam_jobs.io import shard_index
from beam_jobs.tracks import INPUTS_FOLDER
from tfaural.errors import DataError


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[Entry], pathlib.Path]:
    root = tmp_path_factory.mktemp("features-catalogue")
    entries = write_catalogue(root)
    entries.append(Entry("bad/missing.wav", "AudioDecodeError", "file not found"))
    manifest = root / "catalogue.csv"
    ids = {"rock/Song One.wav": "rock/song-1", "..dots..wav": "dots"}  # the others: derived from the path
    manifest.write_text("path,track_id\n" + "".join(f'"{e.relative}",{ids.get(e.relative, "")}\n' for e in entries))
    return root, entries, manifest


@pytest.fixture(scope="module")
def extracted(catalogue: tuple[pathlib.Path, list[Entry], pathlib.Path], samplecnn_export: str,
              tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    _, _, manifest = catalogue
    output = tmp_path_factory.mktemp("features")
    job.run([f"--manifest={manifest}", f"--model={samplecnn_export}", f"--output={output}", "--format=parquet",
             "--per-segment", "--tracks-per-shard=3", "--batch-size=4", "--runner=DirectRunner"])
    return output


@pytest.mark.slow
def test_features_of_every_track_match_the_signature(
    catalogue: tuple[pathlib.Path, list[Entry], pathlib.Path], extracted: pathlib.Path,
    samplecnn_export: str,
) -> None:
    root, entries, _ = catalogue
    rows = check_manifest(extracted, root, entries)
    assert (rows["rock/Song One.wav"]["track_id"], rows["rock/Song One.wav"]["name"]) == ("rock/song-1", "rock__song-1")
    spec = json.loads((extracted / "job.json").read_text())
    shards = -(-len(entries) // 3)
    assert spec["num_shards"] == shards and spec["format"] == "parquet"
    dim = spec["feature_dim"]
    assert dim == sum(level["size"] for level in spec["feature_layout"]) == 2 * (8 + 16 + 16)
    tables = {name: pq.read_table(extracted / name).to_pylist() for name in spec["shards"]}
    records = {r["track_id"]: (name, r) for name, table in tables.items() for r in table}
    for table in tables.values():
        assert [r["track_id"] for r in table] == sorted(r["track_id"] for r in table)
    features = signature(samplecnn_export, "features")
    good = [e for e in entries if e.error is None]
    assert sorted(records) == sorted(rows[e.relative]["track_id"] for e in good)
    for entry in good:
        row = rows[entry.relative]
        shard, record = records[row["track_id"]]
        assert shard == job.shard_name(shard_index(row["track_id"], shards), shards, "parquet")
        assert row["outputs"] == [shard, f"tracks/{row['name']}.npz"]
        y = decode(root / entry.relative, SAMPLECNN_SR)
        n = len(y) // SAMPLECNN_SEGMENT
        whole = features(waveform=tf.constant(y[np.newaxis, : n * SAMPLECNN_SEGMENT]))["features"].numpy()[0]
        segments = features(waveform=tf.constant(y[: n * SAMPLECNN_SEGMENT].reshape(n, SAMPLECNN_SEGMENT)))
        np.testing.assert_allclose(record["features"], whole, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(record["segment_features"], segments["features"].numpy(), rtol=1e-5, atol=1e-6)
        assert record["num_segments"] == n and record["path"] == str(root / entry.relative)
        part = job.read_part(str(extracted / "tracks" / f"{row['name']}.npz"))
        np.testing.assert_array_equal(part.features, np.asarray(record["features"], np.float32))


@pytest.mark.slow
def test_skip_existing_rebuilds_the_same_shards(
    catalogue: tuple[pathlib.Path, list[Entry], pathlib.Path], extracted: pathlib.Path,
    samplecnn_export: str,
) -> None:
    _, _, manifest = catalogue
    shards = {p.name: p.read_bytes() for p in extracted.glob("features-*")}
    before = read_manifest_rows(extracted)
    job.run([f"--manifest={manifest}", f"--model={samplecnn_export}", f"--output={extracted}", "--format=parquet",
             "--per-segment", "--tracks-per-shard=3", "--runner=DirectRunner", "--skip-existing"])
    after = read_manifest_rows(extracted)
    assert [{k: v for k, v in r.items() if k != "reused"} for r in after] == before
    assert all(r.get("reused") for r in after if r["status"] == "ok")
    assert {p.name: p.read_bytes() for p in extracted.glob("features-*")} == shards


def _records(per_segment: bool) -> list[job.FeatureRecord]:
    rng = np.random.default_rng(3)
    return [job.FeatureRecord(track_id=f"t/{i}", path=f"/m/t {i}.wav", seconds=1.0 + i,
                              features=rng.random(6, np.float32),
                              segment_features=rng.random((i + 1, 6), np.float32) if per_segment else None,
                              num_segments=i + 1) for i in range(3)]


@pytest.mark.parametrize("per_segment", [False, True])
def test_tfrecord_and_npz_shards_read_back(per_segment: bool, tmp_path: pathlib.Path) -> None:
    records = _records(per_segment)
    examples = job.encode_shard(records, fmt="tfrecord", dim=6, per_segment=per_segment)
    assert isinstance(examples, list)
    for record, serialized in zip(records, examples):
        parsed = tf.train.Example.FromString(serialized).features.feature
        assert parsed["track_id"].bytes_list.value[0].decode() == record.track_id
        np.testing.assert_array_equal(parsed["features"].float_list.value, record.features)
        assert parsed["num_segments"].int64_list.value[0] == record.num_segments
        if per_segment:
            assert record.segment_features is not None
            np.testing.assert_array_equal(np.reshape(parsed["segment_features"].float_list.value, (-1, 6)),
                                          record.segment_features)
        else:
            assert "segment_features" not in parsed
    payload = job.encode_shard(records, fmt="npz", dim=6, per_segment=per_segment)
    assert isinstance(payload, bytes)
    with np.load(io.BytesIO(payload)) as data:
        assert list(data["track_id"]) == [r.track_id for r in records]
        np.testing.assert_array_equal(data["features"], np.stack([r.features for r in records]))
        if per_segment:
            np.testing.assert_array_equal(data["segment_track"], [0, 1, 1, 2, 2, 2])
            np.testing.assert_array_equal(data["segment_features"][1:3], records[1].segment_features)
    empty = job.encode_shard([], fmt="npz", dim=6, per_segment=per_segment)
    assert isinstance(empty, bytes)
    with np.load(io.BytesIO(empty)) as data:
        assert data["features"].shape == (0, 6)
    table = pq.read_table(io.BytesIO(job.encode_shard([], fmt="parquet", dim=6, per_segment=per_segment)))
    assert table.num_rows == 0 and "features" in table.column_names


@pytest.mark.parametrize("fmt", job.FORMATS)
def test_a_shard_is_written_a_track_at_a_time(fmt: str, tmp_path: pathlib.Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard of 40 tracks with 1 MiB of segment features each, made one at a time as the writer asks for them
    (as WriteShard reads the tracks' files): the writer's allocations stay below a quarter of the shard's
    features (parquet: row groups of at most 3 MiB here, two tracks), the file reads back as the records, and
    its bytes are those of encode_shard (the whole shard in memory; parquet: the same row groups)."""
    monkeypatch.setattr(job, "PARQUET_GROUP_BYTES", 3 * 2**20)
    dim, rows = 512, 512

    def record(i: int) -> job.FeatureRecord:
        rng = np.random.default_rng(i)
        return job.FeatureRecord(track_id=f"t{i:02d}", path=f"/m/{i}.wav", seconds=30.0, num_segments=rows,
                                 features=rng.random(dim, np.float32), segment_features=rng.random((rows, dim),
                                                                                                   np.float32))

    def records() -> Iterator[job.FeatureRecord]:
        return (record(i) for i in range(40))

    path = tmp_path / f"shard.{fmt}"
    _, peak = traced_peak(job.write_shard, str(path), records, fmt=fmt, dim=dim, per_segment=True)
    total = 40 * rows * dim * 4
    assert peak < total / 4, (peak, total)
    expected = list(records())
    encoded = job.encode_shard(expected, fmt=fmt, dim=dim, per_segment=True)
    if fmt == "tfrecord":
        back = [tf.train.Example.FromString(r.numpy()).features.feature for r in tf.data.TFRecordDataset(str(path))]
        assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == encoded
        segments = [np.reshape(f["segment_features"].float_list.value, (rows, dim)) for f in back]
    elif fmt == "parquet":
        assert path.read_bytes() == encoded
        table = pq.read_table(path)
        assert pq.ParquetFile(path).num_row_groups == 20 and table.num_rows == 40
        segments = [np.asarray(v, np.float32) for v in table.column("segment_features").to_pylist()]
    else:
        assert path.read_bytes() == encoded
        with np.load(path) as data:
            assert list(data["track_id"]) == [r.track_id for r in expected]
            segments = np.split(data["segment_features"], 40)
            np.testing.assert_array_equal(data["segment_track"], np.repeat(np.arange(40), rows))
    for got, want in zip(segments, expected, strict=True):
        np.testing.assert_array_equal(got, want.segment_features)


@pytest.mark.parametrize("fmt", job.FORMATS)
def test_a_shard_streams_to_gcs(fmt: str, gcs_bucket: str, tmp_path: pathlib.Path) -> None:
    """The same writer through Beam's gs:// filesystem, whose files cannot seek: the shard reads back as the
    records (parquet and TFRecord byte for byte; npz with zip data descriptors), and no temporary file is left."""
    from beam_jobs import io as beam_io

    records = _records(True) * 5
    path = f"{gcs_bucket}/features/shard.{fmt}"
    job.write_shard(path, lambda: records, fmt=fmt, dim=6, per_segment=True)
    assert beam_io.list_files(f"{gcs_bucket}/features/*") == [path]
    data = beam_io.read_bytes(path)
    encoded = job.encode_shard(records, fmt=fmt, dim=6, per_segment=True)
    if fmt == "tfrecord":
        (tmp_path / "shard.tfrecord").write_bytes(data)
        assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "shard.tfrecord"))] == encoded
    elif fmt == "parquet":
        assert data == encoded
    else:
        assert isinstance(encoded, bytes)
        with np.load(io.BytesIO(data)) as got, np.load(io.BytesIO(encoded)) as want:
            assert sorted(got.files) == sorted(want.files)
            for name in want.files:
                np.testing.assert_array_equal(got[name], want[name])


_SHARD_DIGEST = """
import hashlib, numpy as np
from beam_jobs import extract_features as job
records = [job.FeatureRecord(track_id=f"t/{i}", path=f"/m/{i}.wav", seconds=1.0,
                             features=np.arange(6, dtype=np.float32), segment_features=None, num_segments=1)
           for i in range(3)]
print(hashlib.sha256(b"".join(job.encode_shard(records, fmt="tfrecord", dim=6, per_segment=False))).hexdigest())
"""


def test_tfrecord_shards_are_the_same_bytes_in_every_process() -> None:
    """A tf.train.Example's feature map is serialised in hash order unless asked not to: without
    deterministic serialisation the shards' bytes changed with PYTHONHASHSEED, i.e. from run to run."""
    root = pathlib.Path(job.__file__).resolve().parent.parent
    digests = {subprocess.run([sys.executable, "-c", _SHARD_DIGEST], cwd=root, capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
               for seed in ("1", "2", "3")}
    assert len(digests) == 1, digests


def test_feature_parts_round_trip(tmp_path: pathlib.Path) -> None:
    record = dataclasses.replace(_records(True)[1], path="gs://bucket/ünï.flac")
    path = tmp_path / "part.npz"
    path.write_bytes(job._part_bytes(record))
    back = job.read_part(str(path))
    assert (back.track_id, back.path, back.seconds, back.num_segments) == (record.track_id, record.path, 2.0, 2)
    np.testing.assert_array_equal(back.segment_features, record.segment_features)


def test_a_stored_output_reads_back_and_a_damaged_one_is_named(tmp_path: pathlib.Path) -> None:
    """What the track's grouping carries instead of the model's output: a file that must hold exactly that."""
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    buffer = io.BytesIO()
    np.save(buffer, values)
    path = tmp_path / "t-segments-000000.npy"
    path.write_bytes(buffer.getvalue())
    np.testing.assert_array_equal(job.StoredOutput(str(path), (3, 4)).load(), values)
    with pytest.raises(DataError, match=r"t-segments-000000.npy: holds float32 \[3, 4\]; expected .* \[2, 4\]"):
        job.StoredOutput(str(path), (2, 4)).load()
    path.write_bytes(buffer.getvalue()[:-5])
    with pytest.raises(DataError, match=r"t-segments-000000\.npy: a stored model output could not be read back"):
        job.StoredOutput(str(path), (3, 4)).load()
    with pytest.raises(DataError, match=r"missing\.npy: a stored model output could not be read back"):
        job.StoredOutput(str(tmp_path / "missing.npy"), (3, 4)).load()


def test_a_killed_runs_stored_outputs_are_deleted_and_a_run_leaves_none(
    samplecnn_export: str, tmp_path: pathlib.Path,
) -> None:
    """``.features/`` and ``.inputs/`` of a run that was killed are deleted by the next run, which leaves none of
    its own (nor reads the stale inputs)."""
    folder = tmp_path / "music"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        sf.write(folder / f"t{i}.wav", rng.uniform(-0.5, 0.5, 3 * SAMPLECNN_SR).astype(np.float32), SAMPLECNN_SR)
    output = tmp_path / "out"
    (output / job.OUTPUTS_FOLDER).mkdir(parents=True)
    (output / job.OUTPUTS_FOLDER / "t0-chunk-000000.npy").write_bytes(b"left by a killed run")
    (output / INPUTS_FOLDER).mkdir()
    (output / INPUTS_FOLDER / "inputs-00000.jsonl").write_text('{"path": "gone.wav", "track_id": "gone"}\n')
    job.run([f"--input={folder}/*.wav", f"--model={samplecnn_export}", f"--output={output}", "--format=npz",
             "--per-segment", "--runner=DirectRunner"])
    assert not (output / job.OUTPUTS_FOLDER).exists() and not (output / INPUTS_FOLDER).exists()
    assert [(r["track_id"], r["status"]) for r in read_manifest_rows(output)] == [("t0", "ok"), ("t1", "ok")]
    with np.load(output / "features-00000-of-00001.npz") as data:
        assert data["segment_features"].shape == (2 * (3 * SAMPLECNN_SR // SAMPLECNN_SEGMENT), 80)


def test_precision_is_a_setting_recorded_with_the_model(samplecnn_export: str, tmp_path: pathlib.Path) -> None:
    """``--precision bfloat16`` is a setting of the job, recorded with the model's identity (so --skip-existing
    does not mix precisions); float32 is the default and leaves the model's identity as before."""
    from beam_jobs.options import parse_job_args

    def settings(*flags: str) -> job.Settings:
        options = parse_job_args([f"--model={samplecnn_export}", f"--output={tmp_path}", "--input=x/*.wav", *flags],
                                 prog="extract_features", description="", option_classes=list(job.JOB.option_classes))
        return job.Settings.from_options(options)

    half, full = settings("--precision=BFloat16"), settings()
    assert half.common.precision == "bfloat16" and full.common.precision == "float32"
    assert half.common.model_identity() == {**full.common.model_identity(), "precision": "bfloat16"}
    assert "precision" not in full.common.model_identity()


@pytest.mark.slow
def test_the_jobs_memory_does_not_grow_with_the_catalogue(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No features travel through the pipeline: the model's output for every chunk and batch of segments goes to
    ``.features/`` at once, a track's file is assembled from them and each shard from its tracks' files. On 60
    one-minute tracks of a 3^5-SampleCNN with 2,048 features per segment (242 MB of ``--per-segment``
    features, one shard) the job's Python and NumPy allocations (tracemalloc: the in-process runner with Beam's
    buffers, decoding, the model's outputs, the shard's writer) peak below a quarter of them, where groupings
    of the outputs themselves held all of them at once, twice, and the shard's writer all of them again.
    Measured after a first, 2-track run, so that the modules a run imports are not counted. Every track's
    features are those of the signature on its segments, and ``.features/`` is gone."""
    import keras

    from export import exporter
    from tfaural.config import AudioConfig, SegmentConfig
    from tfaural.models import config_from_model
    from tfaural.models.samplecnn import samplecnn_model
    from tfaural.training.run import RunInfo

    keras.utils.set_random_seed(5)
    model = samplecnn_model(filter_sizes=(3, 3, 3, 3, 3), channels=(8, 8, 256, 256), front_filters=8,
                            top_filters=512, n_outputs=2, sample_rate=SAMPLECNN_SR)
    info = RunInfo(model=config_from_model(model), labels=("a", "b"), task="multi-label",
                   audio=AudioConfig(sample_rate=SAMPLECNN_SR), segment=SegmentConfig(length=SAMPLECNN_SEGMENT))
    # Its tagging signatures only: the job calls ``features`` (the deconvolution graphs would add 13 s of tracing).
    export = exporter.export_model(model, info, str(tmp_path / "export"), verify=False, signatures="tagging")
    dim = 2 * (256 + 256 + 512)

    def catalogue(folder: pathlib.Path, n: int) -> pathlib.Path:
        folder.mkdir()
        rng = np.random.default_rng(n)
        for i in range(n):
            sf.write(folder / f"t{i:02d}.wav", rng.uniform(-0.5, 0.5, 60 * SAMPLECNN_SR).astype(np.float32),
                     SAMPLECNN_SR, subtype="FLOAT")
        return folder

    def run(folder: pathlib.Path) -> pathlib.Path:
        output = folder.parent / f"{folder.name}-features"
        job.run([f"--input={folder}/*.wav", f"--model={export}", f"--output={output}", "--format=npz",
                 "--per-segment", "--runner=DirectRunner"])
        return output

    progress = capture_progress(monkeypatch, caplog, seconds=0.2)
    output, peak = peak_after_warm_up(run, catalogue, tmp_path, 60)
    n = 60 * SAMPLECNN_SR // SAMPLECNN_SEGMENT
    segment_bytes = 60 * n * dim * 4
    assert segment_bytes > 240e6 and peak < segment_bytes / 4, (peak, segment_bytes)
    assert not (output / job.OUTPUTS_FOLDER).exists()
    rows = read_manifest_rows(output)
    assert len(rows) == 60 and all(r["status"] == "ok" for r in rows)
    features = signature(export, "features")
    checked = 0
    for shard in sorted(output.glob("features-*.npz")):
        with np.load(shard) as data:
            for row, path in enumerate(data["path"]):
                if checked < 3:  # a few tracks against the signature called directly
                    y = decode(pathlib.Path(str(path)), SAMPLECNN_SR)[: n * SAMPLECNN_SEGMENT]
                    alone = features(waveform=tf.constant(y.reshape(n, SAMPLECNN_SEGMENT)))["features"].numpy()
                    np.testing.assert_allclose(data["segment_features"][data["segment_track"] == row], alone,
                                               rtol=1e-5, atol=1e-6)
                    whole = features(waveform=tf.constant(y[np.newaxis]))["features"].numpy()[0]
                    np.testing.assert_allclose(data["features"][row], whole, rtol=1e-5, atol=1e-6)
                    checked += 1
            assert data["segment_features"].shape == (len(data["path"]) * n, dim)
    assert checked == 3
    lines = progress()
    assert lines and lines[-1].startswith("extract_features: 60 of 60 track(s) written (100%)"), lines
