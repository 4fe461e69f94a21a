"""The TFRecord schema of tfaural datasets and the ``dataset.json`` written beside the shards.

A dataset is a folder (local or a URI) holding::

    <split>-00000-of-00004.tfrecord ...   shards, one per split and shard index
    dataset.json                          a DatasetInfo: vocabulary, rate, segmentation, counts
    failures.jsonl                        files that could not be read (path, error, reason)

Every record is one ``tf.train.Example`` for a whole track (``segment_index`` -1)
or for one fixed-length segment of a track. Schema version 1:

==============  ==========  ====================================================
feature         type        meaning
==============  ==========  ====================================================
audio           bytes       Mono PCM, int16 little-endian (``<i2``), ``num_samples``
                            samples: half the bytes of float32. Decode with
                            ``tf.io.decode_raw(audio, tf.int16, little_endian=True)``.
num_samples     int64       Number of samples in ``audio``.
sample_rate     int64       Sample rate in Hz (the same for every record of a dataset).
track_id        bytes       UTF-8 track id (unique per track, see ``catalogue``).
labels          float list  Multi-hot labels, ``len(dataset.json label_names)`` values
                            of 0 or 1, in the order of ``label_names``.
segment_index   int64       Index of the segment within its track; -1 for whole tracks.
num_segments    int64       Number of records of this track (1 for whole tracks), so
                            readers can tell when all segments of a track are in.
source_path     bytes       UTF-8 path or URI of the audio file it was decoded from.
==============  ==========  ====================================================

Quantisation: ``q = round(clip(y, -1, 1) * 32767)`` as int16 and back
``y = q / 32767``, so ``dequantize(quantize(y))`` is within half a step
(``0.5 / 32767``) of ``y`` in [-1, 1] and int16 → record → int16 is bit-exact.
(A 16-bit source file, which soundfile reads as ``q / 32768``, therefore comes
back within one step of its original integers, not bit-identical.)

The label names are stored once per dataset, in ``dataset.json``, not per record.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tfaural.config import PAD_MODES, Config
from tfaural.errors import ConfigError, DataError, InvalidAudioError

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "SCHEMA_VERSION",
    "PCM_SCALE",
    "CLIPPED_SHARE_MAX",
    "ClipCounter",
    "WHOLE_TRACK",
    "DATASET_INFO_FILENAME",
    "FAILURES_FILENAME",
    "SHARD_SUFFIX",
    "FEATURE_NAMES",
    "ExampleMessages",
    "example_messages",
    "float_list",
    "quantize",
    "dequantize",
    "encode_example",
    "stream_example",
    "decode_example",
    "TrackRecord",
    "feature_spec",
    "parse_example",
    "shard_path",
    "shard_pattern",
    "DatasetInfo",
    "read_dataset_info",
    "dataset_folder",
    "RECORD_FRAMING_BYTES",
    "verify_shards",
]

SCHEMA_VERSION = 1
"""Version of the record schema and of ``dataset.json``; readers reject other versions."""

PCM_SCALE = 32767.0
"""Full scale of the int16 PCM: ``q = round(clip(y, -1, 1) * PCM_SCALE)``."""

WHOLE_TRACK = -1
"""``segment_index`` of a record that holds a whole track."""

DATASET_INFO_FILENAME = "dataset.json"
FAILURES_FILENAME = "failures.jsonl"
SHARD_SUFFIX = ".tfrecord"

_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")
_SHARD_NAME = re.compile(r"(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})" + re.escape(SHARD_SUFFIX))

RECORD_FRAMING_BYTES = 16
"""Bytes an uncompressed TFRecord file adds to each record: its length (8), the length's CRC (4), the data's CRC (4)."""


# ---------------------------------------------------------------------------
# PCM
# ---------------------------------------------------------------------------


CLIPPED_SHARE_MAX = 0.01
"""Largest share of a track's samples beyond full scale (a float file's, or a decoder's overshoot) that its int16
records may clip (:class:`ClipCounter`): a loud master's few overshooting samples are clipped, as any 16-bit export
does; a file far louder (e.g. float samples up to 8) is a failure rather than records of mostly clipped audio."""


class ClipCounter:
    """Counts the samples beyond full scale that :func:`quantize` will clip, block by block, and keeps the peak.

    Attributes:
        clipped: Samples counted beyond full scale (``|y| > 1``).
        total: Samples counted.
        peak: The largest absolute sample counted.
    """

    def __init__(self) -> None:
        self.clipped = self.total = 0
        self.peak = 0.0

    def count(self, y: np.ndarray) -> np.ndarray:
        """Counts the float waveform ``y`` (any shape) and returns it."""
        magnitude = np.abs(y)
        self.clipped += int(np.count_nonzero(magnitude > 1.0))
        self.total += int(magnitude.size)
        if magnitude.size:
            self.peak = max(self.peak, float(np.max(magnitude)))
        return y

    def check(self, source: str) -> None:
        """Raises if more than :data:`CLIPPED_SHARE_MAX` of the samples counted would be clipped.

        Raises:
            InvalidAudioError: Naming ``source``, the share clipped and the peak.
        """
        if self.total and self.clipped > CLIPPED_SHARE_MAX * self.total:
            raise InvalidAudioError(
                source, f"{self.clipped} of {self.total} samples ({100 * self.clipped / self.total:.1f}%) are beyond "
                f"full scale (peak {self.peak:.3g}, {20 * np.log10(self.peak):+.1f} dBFS), which its 16-bit records "
                f"would clip (at most {100 * CLIPPED_SHARE_MAX:g}% may be); scale the file down, e.g. to a peak of 1")


def quantize(y: np.ndarray) -> np.ndarray:
    """Float waveform → int16 PCM: ``round(clip(y, -1, 1) * 32767)``.

    Args:
        y: float ``[...]`` waveform, nominally in [-1, 1]; values outside are clipped.

    Returns:
        int16 array of the same shape.

    Raises:
        DataError: If ``y`` holds NaN or Inf.
    """
    y = np.asarray(y, dtype=np.float64)  # float64: exact products, so rounding is the formula's, not float32's
    if not np.isfinite(y).all():
        raise DataError("cannot quantise audio with NaN or Inf samples")
    return np.round(np.clip(y, -1.0, 1.0) * PCM_SCALE).astype(np.int16)


def dequantize(q: np.ndarray) -> np.ndarray:
    """int16 PCM → float32 waveform ``q / 32767`` in [-1.00003, 1]."""
    return (np.asarray(q, dtype=np.int16).astype(np.float32) / np.float32(PCM_SCALE)).astype(np.float32)


# ---------------------------------------------------------------------------
# Encoding (NumPy side, used by the Beam job) and eager decoding
# ---------------------------------------------------------------------------

#: The feature names of schema v1 (``audio`` first: see :func:`stream_example`).
FEATURE_NAMES = ("audio", "num_samples", "sample_rate", "track_id", "labels", "segment_index", "num_segments",
                 "source_path")


class ExampleMessages(NamedTuple):
    """The protobuf message classes of ``tf.train.Example`` (:func:`example_messages`)."""

    Example: Any
    Features: Any
    Feature: Any
    BytesList: Any
    FloatList: Any
    Int64List: Any


@functools.cache
def example_messages() -> ExampleMessages:
    """``tf.train``'s ``Example`` protobuf messages, without TensorFlow.

    ``Example``, ``Features``, ``Feature`` and its three lists, declared as in TensorFlow's
    ``core/example/{example,feature}.proto`` (proto3, packed numbers) in a descriptor pool of
    their own: the same wire format, so the bytes equal ``tf.train.Example``'s and TensorFlow
    reads them (``tests/data/test_tfrecord.py`` checks both). Importing TensorFlow for its
    generated classes cost each process that writes records (``python -m beam_jobs.make_tfrecords``'s
    launcher and every worker) TensorFlow's start-up and ~580 MiB: ~770 MiB per process, ~190 without it
    (``benchmarks/memory.py --make-tfrecords``).
    """
    proto = descriptor_pb2.FileDescriptorProto(name="tfaural/example.proto", package="tensorflow", syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", field.TYPE_BYTES), ("FloatList", field.TYPE_FLOAT),
                       ("Int64List", field.TYPE_INT64)):
        proto.message_type.add(name=name).field.add(name="value", number=1, type=kind, label=field.LABEL_REPEATED)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, kind) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                           ("int64_list", "Int64List")), start=1):
        feature.field.add(name=name, number=number, type=field.TYPE_MESSAGE, type_name=f".tensorflow.{kind}",
                          label=field.LABEL_OPTIONAL, oneof_index=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, type_name=".tensorflow.Feature",
                    label=field.LABEL_OPTIONAL)
    features.field.add(name="feature", number=1, type=field.TYPE_MESSAGE,
                       type_name=".tensorflow.Features.FeatureEntry", label=field.LABEL_REPEATED)
    proto.message_type.add(name="Example").field.add(name="features", number=1, type=field.TYPE_MESSAGE,
                                                     type_name=".tensorflow.Features", label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return ExampleMessages(*(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
                             for name in ExampleMessages._fields))


def _bytes(value: bytes) -> Any:
    pb = example_messages()
    return pb.Feature(bytes_list=pb.BytesList(value=[value]))


def _int(value: int) -> Any:
    pb = example_messages()
    return pb.Feature(int64_list=pb.Int64List(value=[int(value)]))


def encode_example(
    *,
    audio: np.ndarray,
    sample_rate: int,
    track_id: str,
    labels: np.ndarray,
    segment_index: int = WHOLE_TRACK,
    num_segments: int = 1,
    source_path: str = "",
) -> bytes:
    """Serialises one record (see the module docstring for the schema).

    Args:
        audio: Mono waveform ``[samples]``: float (quantised with :func:`quantize`)
            or int16 (stored as is).
        sample_rate: Sample rate of ``audio`` in Hz.
        track_id: The track's id.
        labels: Multi-hot labels, float ``[num_labels]`` of 0/1.
        segment_index: Segment index within the track, or -1 for a whole track.
        num_segments: Number of records of the track (1 for a whole track).
        source_path: Path or URI the audio was decoded from.

    Returns:
        The serialised ``tf.train.Example``.

    Raises:
        DataError: On an empty or multi-dimensional waveform, non-finite samples, a
            bad rate, an empty id or inconsistent segment fields.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise DataError(f"track {track_id!r}: audio of shape {audio.shape} is invalid: expected mono [samples] "
                        "with at least one sample")
    pcm = audio if audio.dtype == np.int16 else quantize(audio)
    features = _other_features(num_samples=pcm.size, sample_rate=sample_rate, track_id=track_id, labels=labels,
                               segment_index=segment_index, num_segments=num_segments, source_path=source_path)
    features["audio"] = _bytes(pcm.astype("<i2", copy=False).tobytes())
    pb = example_messages()
    example = pb.Example(features=pb.Features(feature=features))
    return example.SerializeToString(deterministic=True)  # type: ignore[no-any-return]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def _length_delimited(field: int, length: int) -> bytes:
    """The tag and length of a length-delimited protobuf field (its payload follows)."""
    return _varint(field << 3 | 2) + _varint(length)


def float_list(values: np.ndarray) -> Any:
    """A ``tf.train.FloatList`` of ``values`` (any shape, flattened; as float32), made from their bytes.

    ``FloatList(value=values.tolist())`` builds a Python float object per value first (many times the
    array's bytes), and ``FloatList(value=values)`` iterates NumPy scalars, which is slower still; this
    parses the packed field from the array's little-endian bytes instead. The message, and so its
    serialisation, is the same.
    """
    data = np.ascontiguousarray(values, "<f4").tobytes()
    return example_messages().FloatList.FromString(_length_delimited(1, len(data)) + data if data else b"")


def stream_example(
    *,
    num_samples: int,
    pcm: Iterable[bytes],
    sample_rate: int,
    track_id: str,
    labels: np.ndarray,
    segment_index: int = WHOLE_TRACK,
    num_segments: int = 1,
    source_path: str = "",
) -> tuple[int, Iterator[bytes]]:
    """:func:`encode_example` for PCM that arrives in pieces: the record's length and its bytes in pieces.

    The joined pieces equal ``encode_example(audio=<the joined int16 PCM>, ...)`` byte for
    byte, but the PCM (e.g. a 3-hour whole-track record of ~480 MB) is never held whole:
    ``Example`` is a protobuf whose only field is the ``Features`` map, which deterministic
    serialisation writes sorted by key, so the ``audio`` entry comes first and only its
    length prefixes (known from ``num_samples``) precede the PCM.

    Args:
        num_samples: Number of samples the pieces hold.
        pcm: int16 little-endian PCM bytes (``<i2``), in order, ``2 * num_samples`` bytes in all.
        sample_rate: As :func:`encode_example`; the other arguments too.

    Returns:
        ``(length, pieces)``: the record's length in bytes and an iterator over its bytes.

    Raises:
        DataError: As :func:`encode_example`; also (while iterating) if the PCM is not ``2 * num_samples`` bytes.
    """
    if num_samples < 1:
        raise DataError(f"track {track_id!r}: {num_samples} samples: expected at least one")
    rest = example_messages().Features(feature=_other_features(
        num_samples=num_samples, sample_rate=sample_rate, track_id=track_id, labels=labels,
        segment_index=segment_index, num_segments=num_segments, source_path=source_path,
    )).SerializeToString(deterministic=True)
    pcm_bytes = 2 * num_samples
    bytes_list = _length_delimited(1, pcm_bytes)  # BytesList.value
    feature = _length_delimited(1, len(bytes_list) + pcm_bytes)  # Feature.bytes_list
    value_length = len(feature) + len(bytes_list) + pcm_bytes
    key = _length_delimited(1, len(b"audio")) + b"audio"  # map entry: key ...
    value = _length_delimited(2, value_length)  # ... and value
    entry_length = len(key) + len(value) + value_length
    entry = _length_delimited(1, entry_length)  # Features.feature["audio"]
    features = _length_delimited(1, len(entry) + entry_length + len(rest))  # Example.features
    head = features + entry + key + value + feature + bytes_list

    def pieces() -> Iterator[bytes]:
        yield head
        seen = 0
        for chunk in pcm:
            seen += len(chunk)
            yield chunk
        if seen != pcm_bytes:
            raise DataError(f"track {track_id!r}: {seen} bytes of PCM for {num_samples} samples")
        yield rest

    return len(head) + pcm_bytes + len(rest), pieces()


def _other_features(
    *,
    num_samples: int,
    sample_rate: int,
    track_id: str,
    labels: np.ndarray,
    segment_index: int,
    num_segments: int,
    source_path: str,
) -> dict[str, Any]:
    """Every feature of a record but ``audio`` (``Feature`` messages), validated."""
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim != 1:
        raise DataError(f"track {track_id!r}: labels of shape {labels.shape} are invalid: expected [num_labels]")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise DataError(f"track {track_id!r}: sample_rate={sample_rate!r} is invalid: expected a positive integer")
    if not isinstance(track_id, str) or not track_id:
        raise DataError(f"track_id {track_id!r} is invalid: expected a non-empty string")
    if segment_index < WHOLE_TRACK or num_segments < 1 or (segment_index >= 0 and segment_index >= num_segments):
        raise DataError(f"track {track_id!r}: segment_index={segment_index}, num_segments={num_segments} are "
                        "inconsistent: expected -1 (whole track) or 0 <= segment_index < num_segments")
    pb = example_messages()
    return {
        "num_samples": _int(num_samples),
        "sample_rate": _int(sample_rate),
        "track_id": _bytes(track_id.encode("utf-8")),
        "labels": pb.Feature(float_list=pb.FloatList(value=labels.tolist())),
        "segment_index": _int(segment_index),
        "num_segments": _int(num_segments),
        "source_path": _bytes(source_path.encode("utf-8")),
    }


@dataclasses.dataclass(frozen=True)
class TrackRecord:
    """One decoded record.

    Attributes:
        audio: int16 ``[num_samples]`` PCM.
        sample_rate: Sample rate in Hz.
        track_id: The track's id.
        labels: float32 ``[num_labels]`` multi-hot labels.
        segment_index: Segment index, -1 for a whole track.
        num_segments: Number of records of the track.
        source_path: The audio file it came from.
    """

    audio: np.ndarray
    sample_rate: int
    track_id: str
    labels: np.ndarray
    segment_index: int
    num_segments: int
    source_path: str

    @property
    def waveform(self) -> np.ndarray:
        """float32 ``[num_samples]`` waveform (:func:`dequantize` of ``audio``)."""
        return dequantize(self.audio)


def _one(feature: Any, kind: str, name: str) -> Any:
    values = getattr(feature, kind).value
    if len(values) != 1:
        raise DataError(f"record feature {name!r} has {len(values)} values, expected 1")
    return values[0]


def decode_example(
    serialized: bytes,
    *,
    sample_rate: int | None = None,
    num_labels: int | None = None,
    num_samples: int | None = None,
) -> TrackRecord:
    """Parses one serialised record in Python, checking it against what the caller expects.

    Args:
        serialized: A record written by :func:`encode_example`.
        sample_rate: Expected sample rate in Hz (``None``: not checked).
        num_labels: Expected length of the multi-hot labels (``None``: not checked).
        num_samples: Expected number of samples, e.g. the segment length (``None``: not checked).

    Returns:
        The :class:`TrackRecord`.

    Raises:
        DataError: If the bytes are not an Example of this schema, or the record's
            rate or shapes differ from the expected ones.
    """
    try:
        example = example_messages().Example.FromString(serialized)
    except Exception as err:  # protobuf's DecodeError has no stable import path
        raise DataError(f"not a tf.train.Example ({err})") from None
    feature = example.features.feature
    missing = [name for name in FEATURE_NAMES if name not in feature]
    if missing:
        raise DataError(f"record is missing feature(s) {missing}; expected the tfaural schema v{SCHEMA_VERSION}")
    track_id = _one(feature["track_id"], "bytes_list", "track_id").decode("utf-8")
    raw = _one(feature["audio"], "bytes_list", "audio")
    count = int(_one(feature["num_samples"], "int64_list", "num_samples"))
    if len(raw) != 2 * count:
        raise DataError(f"record {track_id!r}: audio holds {len(raw)} bytes, expected 2 * num_samples = {2 * count}")
    record = TrackRecord(
        audio=np.frombuffer(raw, dtype="<i2").astype(np.int16),
        sample_rate=int(_one(feature["sample_rate"], "int64_list", "sample_rate")),
        track_id=track_id,
        labels=np.asarray(feature["labels"].float_list.value, dtype=np.float32),
        segment_index=int(_one(feature["segment_index"], "int64_list", "segment_index")),
        num_segments=int(_one(feature["num_segments"], "int64_list", "num_segments")),
        source_path=_one(feature["source_path"], "bytes_list", "source_path").decode("utf-8"),
    )
    if sample_rate is not None and record.sample_rate != sample_rate:
        raise DataError(f"record {track_id!r} has sample rate {record.sample_rate} Hz, expected {sample_rate} Hz")
    if num_labels is not None and record.labels.size != num_labels:
        raise DataError(f"record {track_id!r} has {record.labels.size} labels, expected {num_labels}")
    if num_samples is not None and record.audio.size != num_samples:
        raise DataError(f"record {track_id!r} has {record.audio.size} samples, expected {num_samples}")
    return record


# ---------------------------------------------------------------------------
# Parsing in TensorFlow (tf.data)
# ---------------------------------------------------------------------------


def feature_spec() -> dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]:
    """The ``tf.io.parse_single_example`` spec of schema v1 (labels are variable-length, checked after)."""
    import tensorflow as tf
    return {
        "audio": tf.io.FixedLenFeature([], tf.string),
        "num_samples": tf.io.FixedLenFeature([], tf.int64),
        "sample_rate": tf.io.FixedLenFeature([], tf.int64),
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.float32),
        "segment_index": tf.io.FixedLenFeature([], tf.int64),
        "num_segments": tf.io.FixedLenFeature([], tf.int64),
        "source_path": tf.io.FixedLenFeature([], tf.string),
    }


def parse_example(
    serialized: tf.Tensor,
    *,
    sample_rate: int,
    num_labels: int,
    num_samples: int | None = None,
) -> dict[str, tf.Tensor]:
    """Parses one serialised record in a TensorFlow graph (``tf.data`` map function).

    A record whose rate or shapes differ from the expected ones fails with a
    ``tf.errors.InvalidArgumentError`` whose message names the track, the field,
    the record's value and the expected one.

    Args:
        serialized: Scalar string tensor, one record.
        sample_rate: Expected sample rate in Hz (from ``dataset.json``).
        num_labels: Expected number of labels (``len(label_names)``).
        num_samples: Expected samples per record (segment datasets), or ``None``.

    Returns:
        A dict of tensors: ``audio`` int16 ``[num_samples]``, ``track_id`` string
        ``[]``, ``labels`` float32 ``[num_labels]``, ``segment_index`` and
        ``num_segments`` int32 ``[]``, ``source_path`` string ``[]``.
    """
    import tensorflow as tf

    features = tf.io.parse_single_example(serialized, feature_spec())
    track_id = features["track_id"]
    audio = tf.io.decode_raw(features["audio"], tf.int16, little_endian=True)
    labels = tf.sparse.to_dense(features["labels"])
    rate = features["sample_rate"]
    count = tf.shape(audio, out_type=tf.int64)[0]
    checks = [
        tf.debugging.Assert(
            tf.equal(rate, sample_rate),
            ["tfaural record has the wrong sample rate: track_id", track_id, "sample_rate", rate,
             f"expected {sample_rate} Hz (rebuild the shards with --sample-rate {sample_rate})"],
        ),
        tf.debugging.Assert(
            tf.equal(count, features["num_samples"]),
            ["tfaural record is corrupt: track_id", track_id, "audio samples", count, "num_samples",
             features["num_samples"]],
        ),
        tf.debugging.Assert(
            tf.equal(tf.size(labels, out_type=tf.int64), num_labels),
            ["tfaural record has the wrong number of labels: track_id", track_id, "labels", tf.size(labels),
             f"expected {num_labels} (len(label_names) in dataset.json)"],
        ),
    ]
    if num_samples is not None:
        checks.append(tf.debugging.Assert(
            tf.equal(count, num_samples),
            ["tfaural record has the wrong shape: track_id", track_id, "samples", count,
             f"expected {num_samples} (segment_length in dataset.json)"],
        ))
    with tf.control_dependencies(checks):
        audio = tf.identity(audio)
        labels = tf.identity(labels)
    audio = tf.ensure_shape(audio, [num_samples])
    labels = tf.ensure_shape(labels, [num_labels])
    return {
        "audio": audio,
        "track_id": track_id,
        "labels": labels,
        "segment_index": tf.cast(features["segment_index"], tf.int32),
        "num_segments": tf.cast(features["num_segments"], tf.int32),
        "source_path": features["source_path"],
    }


# ---------------------------------------------------------------------------
# Files: shards and dataset.json
# ---------------------------------------------------------------------------


def _join(folder: str, name: str) -> str:
    if "://" in folder:
        return posixpath.join(folder, name)
    return os.path.join(folder, name)


def _check_split_name(split: str) -> str:
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split):
        raise DataError(f"split name {split!r} is invalid in a shard name: expected letters, digits or '_'")
    return split


def shard_path(folder: str, split: str, index: int, num_shards: int) -> str:
    """The path of one shard: ``<folder>/<split>-00003-of-00016.tfrecord``."""
    if not 0 <= index < num_shards:
        raise DataError(f"shard index {index} is invalid: expected 0 <= index < num_shards={num_shards}")
    return _join(folder, f"{_check_split_name(split)}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}")


def shard_pattern(folder: str, split: str) -> str:
    """The glob of a split's shards: ``<folder>/<split>-*-of-*.tfrecord``."""
    return _join(folder, f"{_check_split_name(split)}-*-of-*{SHARD_SUFFIX}")


def dataset_folder(pattern: str) -> str:
    """The dataset folder of a shard glob or a folder (where ``dataset.json`` lives)."""
    import tensorflow as tf  # tf.io.gfile: local paths and URIs (gs://, s3:// ...) alike

    if tf.io.gfile.isdir(pattern) or not any(c in pattern for c in "*?["):
        return pattern  # a folder (which may not exist: the caller says so, naming it)
    head = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    return posixpath.dirname(head) if "://" in head else os.path.dirname(head) or "."


@dataclasses.dataclass(frozen=True)
class DatasetInfo(Config):
    """What ``dataset.json`` says about a folder of shards.

    Attributes:
        sample_rate: Sample rate of every record in Hz.
        label_names: Label vocabulary; ``labels[i]`` of a record is ``label_names[i]``.
        multi_label: True for tagging (tracks may have several labels), False for
            single-label classification (e.g. genres).
        segment_length: Samples per record for segment datasets; ``None`` for
            whole-track records.
        segment_hop: Hop between segment starts in samples (``None``: contiguous).
        max_segments: Cap on segments per track used when writing (``None``: all).
        pad: How a last partial segment was handled (``"none"`` drops it and skips
            tracks shorter than a segment, ``"constant"`` zero-pads, ``"wrap"``).
        max_segments_per_track: Most records any one track has (1 for whole tracks).
        splits: Per split: ``manifest_tracks`` (listed in the manifest), ``tracks``
            (written), ``failed`` (tracks in ``failures.jsonl``), ``records``,
            ``samples`` (total samples stored), ``shards`` and ``bytes`` (record payload).
        schema_version: Version of the record schema (:data:`SCHEMA_VERSION`).
        manifest: The manifest the dataset was built from.
        created_by: Tool and version that wrote it.
    """

    kind: ClassVar[str] = "dataset"
    sample_rate: int
    label_names: tuple[str, ...]
    multi_label: bool = True
    segment_length: int | None = None
    segment_hop: int | None = None
    max_segments: int | None = None
    pad: str = "none"
    max_segments_per_track: int = 1
    splits: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    manifest: str = ""
    created_by: str = ""

    def validate(self) -> None:
        def require(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ConfigError(f"DatasetInfo.{field}={getattr(self, field)!r} is invalid: expected {expected}")

        require(self.schema_version == SCHEMA_VERSION, "schema_version",
                f"{SCHEMA_VERSION} (this tfaural reads schema v{SCHEMA_VERSION}; rebuild the shards or upgrade)")
        require(isinstance(self.sample_rate, int) and self.sample_rate > 0, "sample_rate", "a positive integer (Hz)")
        require(isinstance(self.label_names, tuple) and all(isinstance(n, str) and n for n in self.label_names)
                and len(set(self.label_names)) == len(self.label_names), "label_names", "unique non-empty strings")
        require(self.segment_length is None or (isinstance(self.segment_length, int) and self.segment_length > 0),
                "segment_length", "None or a positive integer")
        require(self.segment_hop is None or (isinstance(self.segment_hop, int) and self.segment_hop > 0),
                "segment_hop", "None or a positive integer")
        require(self.max_segments is None or (isinstance(self.max_segments, int) and self.max_segments > 0),
                "max_segments", "None or a positive integer")
        require(self.pad in PAD_MODES, "pad", f"one of {PAD_MODES}")
        require(isinstance(self.max_segments_per_track, int) and self.max_segments_per_track >= 1,
                "max_segments_per_track", "a positive integer")
        require(isinstance(self.splits, dict) and all(isinstance(v, dict) for v in self.splits.values()),
                "splits", "a mapping of split name to counts")

    @property
    def num_labels(self) -> int:
        """Number of labels (length of the multi-hot vectors)."""
        return len(self.label_names)

    def count(self, split: str, what: str = "records") -> int:
        """A count of one split (``"tracks"``, ``"records"``, ``"failed"``, ``"shards"``, ``"samples"``)."""
        return int(self.splits.get(split, {}).get(what, 0))

    def total(self, what: str = "records") -> int:
        """A count summed over splits."""
        return sum(int(counts.get(what, 0)) for counts in self.splits.values())

    def write(self, folder_or_path: str) -> str:
        """Writes the JSON (indented, sorted keys) to ``folder/dataset.json`` or the given ``.json`` path."""
        import tensorflow as tf

        path = folder_or_path if folder_or_path.endswith(".json") else _join(folder_or_path, DATASET_INFO_FILENAME)
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(self.to_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder_or_path: str) -> DatasetInfo:
        """Reads ``dataset.json`` from a dataset folder, a shard glob, or a ``.json`` path.

        Raises:
            DataError: If the file is missing, not JSON, or not a valid dataset description.
        """
        import tensorflow as tf

        if folder_or_path.endswith(".json"):
            path = folder_or_path
        else:
            folder = dataset_folder(folder_or_path)
            if not tf.io.gfile.exists(folder):
                raise DataError(f"{folder}: no such dataset folder (expected a folder holding dataset.json and the "
                                "shards, written by python -m beam_jobs.make_tfrecords)")
            path = _join(folder, DATASET_INFO_FILENAME)
        if not tf.io.gfile.exists(path):
            raise DataError(f"{path}: dataset.json not found; expected it beside the shards "
                            "(written by python -m beam_jobs.make_tfrecords)")
        with tf.io.gfile.GFile(path, "r") as handle:
            return cls.from_text(handle.read(), path)

    @classmethod
    def from_text(cls, text: str, path: str) -> DatasetInfo:
        """Parses the text of the ``dataset.json`` at ``path`` (named in errors), read by the caller.

        Raises:
            DataError: If it is not JSON, or not a valid dataset description.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise DataError(f"{path}: schema_version {data.get('schema_version')!r} is not supported; this tfaural "
                            f"reads version {SCHEMA_VERSION}")
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise DataError(f"{path}: {err}") from None


def verify_shards(files: Iterable[str], info: DatasetInfo, *, where: str) -> None:
    """Checks shard files against the ``dataset.json`` that describes them, before they are read.

    For each split of ``dataset.json`` with shard counts (``make_tfrecords`` and the TFDS conversion write
    them) whose files ``<split>-NNNNN-of-MMMMM.tfrecord`` are among ``files``: every file is one of its
    ``shards`` (``MMMMM`` is that count: no shard of another run), and when all of them are given, their
    sizes add up to the records' payload ``bytes`` plus :data:`RECORD_FRAMING_BYTES` per record, exactly (a
    truncated, grown or replaced shard changes it). Other files, and splits without counts, are not checked.
    Costs one ``stat`` per shard.

    Args:
        files: Shard paths (local or URI), e.g. a glob's matches (a subset of a split's shards is allowed).
        info: Their ``dataset.json``.
        where: The dataset (folder or glob), for messages.

    Raises:
        DataError: Naming the split, the shard or the sizes, and how to rebuild.
    """
    import tensorflow as tf  # tf.io.gfile: local paths and URIs alike

    by_split: dict[str, list[tuple[str, int, int]]] = {}
    for path in files:
        match = _SHARD_NAME.fullmatch(posixpath.basename(path) if "://" in path else os.path.basename(path))
        if match is not None:
            by_split.setdefault(match["split"], []).append((path, int(match["index"]), int(match["count"])))
    rebuild = "rebuild the dataset (python -m beam_jobs.make_tfrecords ... --overwrite)"
    for split, shards in sorted(by_split.items()):
        counts = info.splits.get(split, {})
        expected = counts.get("shards")
        if not expected:
            continue
        for path, _, count in shards:
            if count != expected:
                raise DataError(f"{path}: one of {count} shards, but {where}'s dataset.json has {expected} shard(s) "
                                f"of split {split!r}: a shard of another run? {rebuild}")
        if len({index for _, index, _ in shards}) < expected or "bytes" not in counts or "records" not in counts:
            continue
        size = sum(int(tf.io.gfile.stat(path).length) for path, _, _ in shards)
        described = int(counts["bytes"]) + RECORD_FRAMING_BYTES * int(counts["records"])
        if size != described:
            raise DataError(f"{where}: the {expected} shard(s) of split {split!r} hold {size:,} bytes but dataset.json "
                            f"describes {described:,} ({counts['records']} records): a shard was truncated, changed "
                            f"or replaced after it was written; {rebuild}")


def read_dataset_info(folder_or_pattern: str) -> DatasetInfo:
    """Reads the ``dataset.json`` of a dataset folder or shard glob (see :meth:`DatasetInfo.read`)."""
    return DatasetInfo.read(folder_or_pattern)

