"""tf.data pipelines over shards written here with tf.io.TFRecordWriter (no Beam)."""

from __future__ import annotations

import collections
import pathlib

import librosa
import numpy as np
import pytest
import tensorflow as tf

from tfaural.config import STFTConfig
from tfaural.data import pipeline as pl
from tfaural.data import tfrecord
from tfaural.data.tfrecord import DatasetInfo, encode_example
from tfaural.errors import DataError, ParameterError

SR = 8000
LABELS = ("a", "b", "c")
# Track k is an int16 ramp k * 4000 + [0, n): every sample tells its track and position.
LENGTHS = (3500, 2500, 300, 2000, 1200)
STEP = 4000


def ramp(k: int) -> np.ndarray:
    return (k * STEP + np.arange(LENGTHS[k])).astype(np.int16)


def labels_of(k: int) -> np.ndarray:
    out = np.zeros(len(LABELS), np.float32)
    out[k % 3] = 1
    if k == 1:
        out[2] = 1
    return out


def write_dataset(
    folder: pathlib.Path,
    *,
    segment_length: int | None = None,
    shards: int = 2,
    sample_rate: int = SR,
    record_rate: int | None = None,
    rng: np.random.Generator | None = None,
) -> str:
    """Writes the five ramps as whole-track or (zero-padded) segment records; returns the shard glob."""
    records: list[bytes] = []
    max_per_track = 1
    for k in range(len(LENGTHS)):
        q = ramp(k)
        common = {"sample_rate": record_rate or sample_rate, "track_id": f"t{k}", "labels": labels_of(k)}
        if segment_length is None:
            records.append(encode_example(audio=q, **common))
            continue
        count = -(-len(q) // segment_length)
        padded = np.pad(q, (0, count * segment_length - len(q)))
        max_per_track = max(max_per_track, count)
        for i in range(count):
            piece = padded[i * segment_length : (i + 1) * segment_length]
            records.append(encode_example(audio=piece, segment_index=i, num_segments=count, **common))
    if rng is not None:
        records = [records[i] for i in rng.permutation(len(records))]
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tf.io.TFRecordWriter(str(folder / f"train-{s:05d}-of-{shards:05d}.tfrecord")) as writer:
            for record in records[s::shards]:
                writer.write(record)
    DatasetInfo(sample_rate=sample_rate, label_names=LABELS, segment_length=segment_length, pad="constant",
                max_segments_per_track=max_per_track).write(str(folder))
    return str(folder / "train-*.tfrecord")


def to_pcm(x: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x)[..., 0] * 32767).astype(np.int64)


def identify(segment: np.ndarray) -> tuple[int, int]:
    """(track, start offset) of a segment cut from a ramp."""
    k = int(segment[0]) // STEP
    return k, int(segment[0]) - k * STEP


def expected_segment(k: int, start: int, length: int) -> np.ndarray:
    q = ramp(k).astype(np.int64)
    return np.pad(q, (0, max(0, start + length - len(q))))[start : start + length]


def contiguous_starts(k: int, length: int, limit: int | None) -> list[int]:
    count = max(LENGTHS[k] // length, 1)
    return [i * length for i in range(count if limit is None else min(count, limit))]


@pytest.fixture
def whole(tmp_path: pathlib.Path) -> str:
    return write_dataset(tmp_path / "whole")


def test_random_crops_are_slices_of_their_track_with_its_labels(whole: str) -> None:
    ds = pl.make_dataset(whole, segment_length=1000, batch_size=2, training=True, shuffle_buffer=8,
                         drop_remainder=False)
    starts = collections.defaultdict(set)
    for _ in range(4):  # epochs
        seen = []
        for inputs, labels in ds:
            assert inputs.shape[1:] == (1000, 1) and inputs.dtype == tf.float32
            for segment, label in zip(to_pcm(inputs), labels.numpy()):
                k, start = identify(segment)
                np.testing.assert_array_equal(segment, expected_segment(k, start, 1000))
                np.testing.assert_array_equal(label, labels_of(k))
                assert 0 <= start <= max(LENGTHS[k] - 1000, 0)
                seen.append(k)
                starts[k].add(start)
        assert sorted(seen) == list(range(5))  # one crop per track and epoch
    assert len(starts[0]) > 1  # a new crop every epoch
    assert starts[2] == {0}  # the 300-sample track is zero-padded, never dropped


def test_training_batches_drop_the_remainder(whole: str) -> None:
    batches = [x.shape[0] for x, _ in pl.make_dataset(whole, segment_length=1000, batch_size=2, training=True)]
    assert batches == [2, 2]


def test_deterministic_with_a_seed_and_different_across_seeds(whole: str) -> None:
    def first_epoch(seed: int) -> list[tuple[int, int]]:
        ds = pl.make_dataset(whole, segment_length=1000, batch_size=5, training=True, deterministic=True, seed=seed)
        return [identify(s) for x, _ in ds for s in to_pcm(x)]

    assert first_epoch(7) == first_epoch(7)
    assert first_epoch(7) != first_epoch(8)


@pytest.mark.parametrize("limit", [2, None])
def test_evaluation_yields_every_contiguous_segment_once(whole: str, limit: int | None) -> None:
    ds = pl.make_dataset(whole, segment_length=1000, batch_size=3, training=False, segments_per_track=limit)
    got = sorted(identify(s) for x, _ in ds for s in to_pcm(x))
    expected = sorted((k, s) for k in range(5) for s in contiguous_starts(k, 1000, limit))
    assert got == expected
    again = [identify(s) for x, _ in ds for s in to_pcm(x)]
    assert sorted(again) == expected


def test_contiguous_training_crops_shuffle_the_same_segments(whole: str) -> None:
    ds = pl.make_dataset(whole, segment_length=1000, batch_size=4, training=True, crop="contiguous",
                         segments_per_track=None, drop_remainder=False)
    got = sorted(identify(s) for x, _ in ds for s in to_pcm(x))
    assert got == sorted((k, s) for k in range(5) for s in contiguous_starts(k, 1000, None))


def test_choi_inputs_are_stft_magnitudes(tmp_path: pathlib.Path, rng: np.random.Generator) -> None:
    y = rng.uniform(-0.5, 0.5, 50_000).astype(np.float32)
    q = np.round(y * 32767).astype(np.int16)
    (tmp_path / "c").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "c" / "train-00000-of-00001.tfrecord")) as writer:
        writer.write(encode_example(audio=q, sample_rate=11025, track_id="n", labels=np.ones(3, np.float32)))
    DatasetInfo(sample_rate=11025, label_names=LABELS).write(str(tmp_path / "c"))
    pattern = str(tmp_path / "c" / "train-*.tfrecord")
    (inputs, labels), = pl.make_dataset(pattern, family="choi", batch_size=1, training=False, sample_rate=11025)
    assert inputs.shape == (1, 257, 173, 1) == (1, *pl.input_shape(family="choi"))
    reference = np.abs(librosa.stft(q[:44100] / np.float32(32767), n_fft=512, hop_length=256, center=True))
    np.testing.assert_allclose(inputs.numpy()[0, ..., 0], reference, atol=2e-3, rtol=1e-4)
    np.testing.assert_array_equal(labels.numpy(), np.ones((1, 3)))
    custom = STFTConfig(n_fft=256, hop_length=128)
    (inputs, _), = pl.make_dataset(pattern, family="choi", stft=custom, batch_size=1, training=False)
    assert inputs.shape == (1, 129, 345, 1)


def test_track_dataset_from_whole_tracks(whole: str) -> None:
    tracks = list(pl.make_track_dataset(whole, segment_length=1000, segments_per_track=2))
    assert sorted(t.numpy().decode() for t, _, _ in tracks) == [f"t{k}" for k in range(5)]
    for track_id, inputs, labels in tracks:
        k = int(track_id.numpy().decode()[1:])
        pcm = to_pcm(inputs)
        assert pcm.shape == (len(contiguous_starts(k, 1000, 2)), 1000)
        for segment, start in zip(pcm, contiguous_starts(k, 1000, 2)):
            np.testing.assert_array_equal(segment, expected_segment(k, start, 1000))
        np.testing.assert_array_equal(labels.numpy(), labels_of(k))


def test_track_dataset_regroups_scattered_segment_records(tmp_path: pathlib.Path, rng: np.random.Generator) -> None:
    pattern = write_dataset(tmp_path / "seg", segment_length=1000, shards=3, rng=rng)
    tracks = list(pl.make_track_dataset(pattern, segment_length=500, segments_per_track=None))
    assert sorted(t.numpy().decode() for t, _, _ in tracks) == [f"t{k}" for k in range(5)]
    for track_id, inputs, labels in tracks:
        k = int(track_id.numpy().decode()[1:])
        pcm = to_pcm(inputs)
        records = -(-LENGTHS[k] // 1000)
        assert pcm.shape == (2 * records, 500)  # each 1000-sample record splits into two 500-sample segments
        for i, segment in enumerate(pcm):  # in time order, zero-padded at the end
            np.testing.assert_array_equal(segment, expected_segment(k, 500 * i, 500))
        np.testing.assert_array_equal(labels.numpy(), labels_of(k))
    capped = {t.numpy().decode(): x.shape[0] for t, x, _ in pl.make_track_dataset(pattern, segment_length=1000,
                                                                                  segments_per_track=2)}
    assert capped == {"t0": 2, "t1": 2, "t2": 1, "t3": 2, "t4": 2}


def test_segment_records_feed_training(tmp_path: pathlib.Path) -> None:
    pattern = write_dataset(tmp_path / "seg", segment_length=1000)
    ds = pl.make_dataset(pattern, segment_length=1000, batch_size=4, training=True, drop_remainder=False)
    got = sorted(identify(s) for x, _ in ds for s in to_pcm(x))
    assert got == sorted((k, 1000 * i) for k in range(5) for i in range(-(-LENGTHS[k] // 1000)))


def test_errors_are_clear(whole: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataError, match="8000 Hz audio but 22050 Hz is expected"):
        pl.make_dataset(whole, batch_size=2, training=True, sample_rate=22050)
    with pytest.raises(DataError, match="no files match"):
        pl.make_dataset(str(tmp_path / "nothing-*.tfrecord"), batch_size=2, training=True)
    segments = write_dataset(tmp_path / "seg", segment_length=1000)
    with pytest.raises(DataError, match="shorter than segment_length=59049"):
        pl.make_dataset(segments, batch_size=2, training=True)
    with pytest.raises(ParameterError, match="family="):
        pl.make_dataset(whole, family="vgg", batch_size=2, training=True)
    with pytest.raises(ParameterError, match="crop="):
        pl.make_dataset(whole, crop="centre", batch_size=2, training=True)
    with pytest.raises(ParameterError, match="batch_size=0"):
        pl.make_dataset(whole, batch_size=0, training=True)
    with pytest.raises(ParameterError, match="stft="):
        pl.make_dataset(whole, stft=STFTConfig(), batch_size=2, training=True)


def test_shards_that_are_not_what_dataset_json_describes_are_refused_before_reading(tmp_path: pathlib.Path) -> None:
    """dataset.json's counts of a split (as make_tfrecords writes them) against its shard files: payload bytes
    plus 16 bytes of framing per record, exactly; a shard of another run; a subset of the shards is allowed."""
    folder = tmp_path / "data"
    pattern = write_dataset(folder, shards=3)
    shards = sorted(folder.glob("train-*.tfrecord"))
    records = [r.numpy() for r in tf.data.TFRecordDataset([str(p) for p in shards])]
    sizes = sum(p.stat().st_size for p in shards)
    assert sizes == sum(map(len, records)) + tfrecord.RECORD_FRAMING_BYTES * len(records)  # the TFRecord format
    counts = {"tracks": 5, "records": len(records), "bytes": sum(map(len, records)), "shards": 3, "failed": 0,
              "manifest_tracks": 5, "samples": 0}
    DatasetInfo(sample_rate=SR, label_names=LABELS, splits={"train": counts}).write(str(folder))
    assert len(list(pl.make_dataset(pattern, segment_length=1000, batch_size=1, training=False))) > 0
    pl.make_dataset(str(folder / "train-00001-*.tfrecord"), segment_length=1000, batch_size=1, training=False)

    shards[1].write_bytes(shards[1].read_bytes()[:-7])  # cut short, as by a full disk or an interrupted copy
    with pytest.raises(DataError, match=rf"the 3 shard\(s\) of split 'train' hold {sizes - 7:,} bytes but "
                                        rf"dataset.json describes {sizes:,} \(5 records\): a shard was truncated"):
        pl.make_dataset(pattern, segment_length=1000, batch_size=1, training=False)
    (folder / "train-00000-of-00002.tfrecord").write_bytes(b"")
    with pytest.raises(DataError, match=r"train-00000-of-00002.tfrecord: one of 2 shards, but .* has 3 shard\(s\) "
                                        r"of split 'train': a shard of another run\?"):
        pl.make_dataset(pattern, segment_length=1000, batch_size=1, training=False)


def test_a_record_with_the_wrong_rate_fails_when_read(tmp_path: pathlib.Path) -> None:
    pattern = write_dataset(tmp_path / "mixed", record_rate=16000)  # dataset.json says 8000 Hz
    ds = pl.make_dataset(pattern, segment_length=1000, batch_size=2, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="wrong sample rate"):
        list(ds)


def test_input_shape() -> None:
    assert pl.input_shape(family="samplecnn") == (59049, 1)
    assert pl.input_shape(family="choi") == (257, 173, 1)
    assert pl.input_shape(family="samplecnn", segment_length=3**8) == (6561, 1)
