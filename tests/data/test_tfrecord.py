"""The TFRecord schema: int16 quantisation, bit-exact round trips, strict parsing, dataset.json."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tfaural.data import tfrecord as rec
from tfaural.errors import DataError


def _encode(audio: np.ndarray, **overrides: object) -> bytes:
    kwargs: dict = {"sample_rate": 8000, "track_id": "rock/a", "labels": np.array([0, 1, 1], np.float32),
                    "source_path": "/data/rock/a.wav"}
    kwargs.update(overrides)
    return rec.encode_example(audio=audio, **kwargs)


def _parse_in_graph(serialized: list[bytes], **kwargs: object) -> list[dict]:
    ds = tf.data.Dataset.from_tensor_slices(serialized).map(lambda s: rec.parse_example(s, **kwargs))
    return [{k: v.numpy() for k, v in x.items()} for x in ds]


def test_quantize_matches_the_numpy_formula(rng: np.random.Generator) -> None:
    y = rng.uniform(-1.2, 1.2, 10_000).astype(np.float32)
    expected = np.round(np.clip(y.astype(np.float64), -1, 1) * 32767).astype(np.int16)
    np.testing.assert_array_equal(rec.quantize(y), expected)
    assert rec.quantize(np.array([1.0, -1.0, 0.5 / 32767 * 0.99]))[:3].tolist() == [32767, -32767, 0]
    with pytest.raises(DataError, match="NaN or Inf"):
        rec.quantize(np.array([0.0, np.nan]))


def test_float_round_trip_is_within_half_a_step(rng: np.random.Generator) -> None:
    y = rng.uniform(-1, 1, 4000).astype(np.float32)
    record = rec.decode_example(_encode(y))
    assert np.max(np.abs(record.waveform - y)) <= 0.5 / 32767 + 1e-7
    (parsed,) = _parse_in_graph([_encode(y)], sample_rate=8000, num_labels=3)
    np.testing.assert_array_equal(parsed["audio"], rec.quantize(y))


def test_int16_round_trip_is_bit_exact_in_python_and_in_the_graph(rng: np.random.Generator) -> None:
    q = rng.integers(-32768, 32768, 5000).astype(np.int16)
    q[:4] = [-32768, 32767, 0, -1]
    serialized = _encode(q, segment_index=2, num_segments=5)
    record = rec.decode_example(serialized, sample_rate=8000, num_labels=3, num_samples=5000)
    np.testing.assert_array_equal(record.audio, q)
    assert record.audio.dtype == np.int16
    assert (record.sample_rate, record.track_id, record.segment_index, record.num_segments, record.source_path) == (
        8000, "rock/a", 2, 5, "/data/rock/a.wav")
    np.testing.assert_array_equal(record.labels, [0, 1, 1])
    (parsed,) = _parse_in_graph([serialized], sample_rate=8000, num_labels=3, num_samples=5000)
    np.testing.assert_array_equal(parsed["audio"], q)
    assert parsed["track_id"] == b"rock/a" and parsed["segment_index"] == 2 and parsed["num_segments"] == 5
    np.testing.assert_array_equal(parsed["labels"], [0, 1, 1])


def test_audio_bytes_are_little_endian_int16() -> None:
    q = np.array([1, -2, 256, 32767], np.int16)
    example = tf.train.Example.FromString(_encode(q))
    raw = example.features.feature["audio"].bytes_list.value[0]
    assert raw == b"\x01\x00\xfe\xff\x00\x01\xff\x7f"
    assert example.features.feature["num_samples"].int64_list.value[0] == 4
    assert example.features.feature["segment_index"].int64_list.value[0] == rec.WHOLE_TRACK


@pytest.mark.parametrize("n", [1, 300, 70000])
def test_records_are_tensorflows_example_bytes(n: int, rng: np.random.Generator) -> None:
    """tfaural writes records without TensorFlow (its own copy of the Example messages): the bytes are those
    TensorFlow's generated tf.train.Example serialises for the same features, and either reads the other's."""
    y = rng.uniform(-1, 1, n).astype(np.float32)
    ours = _encode(y, labels=np.array([0.0, 1.0, 0.25, 1e-7], np.float32), segment_index=2, num_segments=5,
                   track_id="jazz/é 1", source_path="gs://b/é.flac")
    q = rec.quantize(y).astype("<i2").tobytes()
    ints = {"num_samples": n, "sample_rate": 8000, "segment_index": 2, "num_segments": 5}
    features = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) for name, v in ints.items()}
    features.update({name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for name, v in (
        ("audio", q), ("track_id", "jazz/é 1".encode()), ("source_path", "gs://b/é.flac".encode()))})
    features["labels"] = tf.train.Feature(float_list=tf.train.FloatList(value=[0.0, 1.0, 0.25, 1e-7]))
    theirs = tf.train.Example(features=tf.train.Features(feature=features))
    assert ours == theirs.SerializeToString(deterministic=True)
    assert tf.train.Example.FromString(ours) == theirs
    back = rec.decode_example(theirs.SerializeToString(deterministic=True), sample_rate=8000, num_samples=n)
    assert back.track_id == "jazz/é 1" and back.segment_index == 2 and back.audio.tobytes() == q
    assert set(rec.FEATURE_NAMES) == set(rec.feature_spec())


@pytest.mark.parametrize("shape", [(0,), (1,), (31,), (40, 512)])
def test_a_float_list_from_an_arrays_bytes_is_tensorflows(shape: tuple[int, ...], rng: np.random.Generator) -> None:
    """float_list parses the packed field from the array's bytes: the message TensorFlow's FloatList makes from
    the values, serialised to the same bytes (NaN, infinities and -0.0 included)."""
    values = rng.standard_normal(shape).astype(np.float32)
    if values.size > 3:
        values.flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    ours = rec.float_list(values)
    theirs = tf.train.FloatList(value=values.ravel().tolist())
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    np.testing.assert_array_equal(np.array(ours.value, np.float32), values.ravel())


def test_encoding_is_deterministic() -> None:
    y = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert _encode(y) == _encode(y.copy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 16000}, r"sample rate 8000 Hz, expected 16000"),
        ({"num_labels": 50}, r"has 3 labels, expected 50"),
        ({"num_samples": 59049}, r"has 100 samples, expected 59049"),
    ],
)
def test_decode_rejects_records_that_do_not_fit(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        rec.decode_example(_encode(np.zeros(100, np.int16)), **kwargs)


def test_decode_rejects_garbage_and_foreign_examples() -> None:
    with pytest.raises(DataError, match=r"not a tf\.train\.Example"):
        rec.decode_example(b"\xff\xff\xff garbage")
    foreign = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))})).SerializeToString()
    with pytest.raises(DataError, match="missing feature"):
        rec.decode_example(foreign)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 16000}, "wrong sample rate"),
        ({"num_labels": 50}, "wrong number of labels"),
        ({"num_samples": 64}, "wrong shape"),
    ],
)
def test_graph_parser_rejects_records_that_do_not_fit(kwargs: dict, message: str) -> None:
    args = {"sample_rate": 8000, "num_labels": 3, **kwargs}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as info:
        _parse_in_graph([_encode(np.zeros(100, np.int16))], **args)
    assert "rock/a" in str(info.value)  # the message names the track


@pytest.mark.parametrize(
    ("audio", "kwargs", "message"),
    [
        (np.zeros((2, 10)), {}, "expected mono"),
        (np.zeros(0), {}, "at least one sample"),
        (np.full(4, np.inf), {}, "NaN or Inf"),
        (np.zeros(4), {"sample_rate": 0}, "sample_rate=0"),
        (np.zeros(4), {"track_id": ""}, "track_id"),
        (np.zeros(4), {"segment_index": 3, "num_segments": 3}, "inconsistent"),
        (np.zeros(4), {"labels": np.zeros((2, 2))}, "labels of shape"),
    ],
)
def test_encode_rejects_bad_input(audio: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _encode(audio, **kwargs)


def test_shard_names() -> None:
    assert rec.shard_path("/out", "train", 3, 16) == "/out/train-00003-of-00016.tfrecord"
    assert rec.shard_path("gs://b/x", "test", 0, 1) == "gs://b/x/test-00000-of-00001.tfrecord"
    assert rec.shard_pattern("/out", "validation") == "/out/validation-*-of-*.tfrecord"
    with pytest.raises(DataError):
        rec.shard_path("/out", "train", 16, 16)
    with pytest.raises(DataError, match="split name"):
        rec.shard_pattern("/out", "a/b")


def test_dataset_info_round_trip_and_lookup(tmp_path: pathlib.Path) -> None:
    info = rec.DatasetInfo(sample_rate=22050, label_names=("guitar", "slow"), segment_length=59049, max_segments=10,
                           max_segments_per_track=10, splits={"train": {"tracks": 3, "records": 30, "failed": 1}})
    path = info.write(str(tmp_path))
    assert path.endswith("dataset.json")
    assert json.loads(pathlib.Path(path).read_text())["schema_version"] == rec.SCHEMA_VERSION
    for where in (str(tmp_path), str(tmp_path / "train-*.tfrecord"), path):
        assert rec.DatasetInfo.read(where) == info
    assert info.num_labels == 2 and info.count("train") == 30 and info.count("test") == 0
    assert info.total("failed") == 1


def test_dataset_info_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.json not found"):
        rec.read_dataset_info(str(tmp_path / "train-*.tfrecord"))
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        rec.read_dataset_info(str(tmp_path))
    (tmp_path / "dataset.json").write_text(json.dumps({"schema_version": 99, "sample_rate": 1, "label_names": []}))
    with pytest.raises(DataError, match="schema_version 99 is not supported"):
        rec.read_dataset_info(str(tmp_path))
    (tmp_path / "dataset.json").write_text(json.dumps({"sample_rate": -5, "label_names": ["a"]}))
    with pytest.raises(DataError, match="sample_rate=-5"):
        rec.read_dataset_info(str(tmp_path))


@pytest.mark.parametrize("n", [1, 63, 64, 8191, 8192, 1 << 20])
def test_stream_example_equals_encode_example(n: int, rng: np.random.Generator) -> None:
    """The record of PCM given in pieces is encode_example's, byte for byte (whatever the varint lengths)."""
    y = rng.uniform(-1, 1, n).astype(np.float32)
    fields = {"sample_rate": 22050, "track_id": "rock/ünï x", "labels": np.array([1.0, 0, 1]),
              "source_path": "gs://bucket/ä.flac"}
    pcm = rec.quantize(y).astype("<i2").tobytes()
    length, pieces = rec.stream_example(num_samples=n, pcm=(pcm[i : i + 999] for i in range(0, len(pcm), 999)),
                                        **fields)
    expected = rec.encode_example(audio=y, **fields)
    assert b"".join(pieces) == expected and length == len(expected)
    assert rec.decode_example(expected, sample_rate=22050).audio.size == n
    _, short = rec.stream_example(num_samples=n + 1, pcm=[pcm], **fields)
    with pytest.raises(DataError, match="bytes of PCM"):
        b"".join(short)
