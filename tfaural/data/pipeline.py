"""tf.data input pipelines: from TFRecord shards to ``(inputs, labels)`` batches.

Two model families are fed:

* ``"samplecnn"``: raw waveform segments, float32 ``[batch, segment_length, 1]``
  (59,049 samples = 3^10 for the 3^9 SampleCNN at 22,050 Hz).
* ``"choi"``: STFT magnitudes of 4 s clips at 11,025 Hz (44,100 samples),
  float32 ``[batch, 257, 173, 1]``, computed in the graph with
  :func:`tfaural.spectral.magnitude` (``n_fft`` 512, hop 256, centred frames).
* ``"musicnn"``: mel power spectrograms of 187-frame patches at 16 kHz (47,616
  samples), float32 ``[batch, 96, 187, 1]`` (:func:`tfaural.spectral.melspectrogram`,
  librosa's defaults: the front end of the imported musicnn taggers; they compress it
  themselves).

Labels are the records' multi-hot vectors, float32 ``[batch, num_labels]``.

Which segments a track gives:

* ``crop="random"`` (training): one random crop of ``segment_length`` samples
  per record per epoch (a new crop every epoch).
* ``crop="contiguous"`` (and every evaluation dataset): the first
  ``segments_per_track`` contiguous, non-overlapping segments (10 in the
  SampleCNN recipe); a last partial segment is dropped.

A track (or record) shorter than ``segment_length`` is zero-padded at its end to
one segment, in every mode, so short clips are used rather than dropped or
crashing the pipeline. Records of segment datasets (``make_tfrecords
--segment-length``) may be longer than ``segment_length`` (they are cropped or
split) but not shorter.

Segments are kept as int16 through the shuffle buffer (half the memory of
float32) and converted to float after batching. ``shuffle_buffer`` counts
segments. Shards are read interleaved with ``AUTOTUNE`` parallelism;
``deterministic=True`` (with a ``seed``) makes the element order and the random
crops reproducible.

:func:`make_track_dataset` keeps all segments of a track together for
segment-averaged evaluation: it yields ``(track_id, inputs, labels)`` with
``inputs`` ``[n_segments, ...]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from tfaural import spectral
from tfaural.config import ChoiConfig, MusicnnConfig, STFTConfig
from tfaural.data.tfrecord import PCM_SCALE, DatasetInfo, parse_example, verify_shards
from tfaural.errors import DataError, ParameterError

__all__ = [
    "FAMILIES",
    "CROPS",
    "SAMPLECNN_SEGMENT_LENGTH",
    "CHOI_CLIP_LENGTH",
    "CHOI_STFT",
    "list_shards",
    "input_shape",
    "make_dataset",
    "make_track_dataset",
    "waveform_to_inputs",
    "model_family",
]

FAMILIES = ("samplecnn", "choi", "musicnn")
CROPS = ("random", "contiguous")

SAMPLECNN_SEGMENT_LENGTH = 59049
"""Input length of the 3^9 SampleCNN: 3^10 samples, 2.68 s at 22,050 Hz."""

CHOI_CLIP_LENGTH = 44100
"""Input length of the Choi et al. CNN: 4 s at 11,025 Hz."""

CHOI_STFT = STFTConfig(n_fft=512, hop_length=256)
"""STFT of the Choi et al. CNN: 257 bins x 173 frames for a 44,100-sample clip."""

MUSICNN_PATCH_LENGTH = 47616
"""Input length of the musicnn taggers: 186 hops of 256 samples, 187 centred frames at 16 kHz."""

MUSICNN_MELS = 96
"""Mel bands of the musicnn taggers' front end."""

_MAX_GROUP = 4096  # segment records per track that make_track_dataset can regroup


def list_shards(pattern: str) -> list[str]:
    """The files matching a shard glob, sorted.

    Raises:
        DataError: If nothing matches.
    """
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise DataError(f"{pattern}: no files match; expected TFRecord shards such as out/train-*.tfrecord "
                        "(written by python -m beam_jobs.make_tfrecords)")
    return files


def model_family(config: Any) -> str:
    """The input family of a model config: ``"choi"``, ``"musicnn"`` or ``"samplecnn"`` (waveform models)."""
    if isinstance(config, ChoiConfig):
        return "choi"
    if isinstance(config, MusicnnConfig):
        return "musicnn"
    return "samplecnn"


def _default_length(family: str) -> int:
    return {"samplecnn": SAMPLECNN_SEGMENT_LENGTH, "musicnn": MUSICNN_PATCH_LENGTH}.get(family, CHOI_CLIP_LENGTH)


def input_shape(*, family: str, segment_length: int | None = None, stft: STFTConfig | None = None) -> tuple[int, ...]:
    """Shape of one model input (without the batch axis).

    Args:
        family: ``"samplecnn"`` or ``"choi"``.
        segment_length: Samples per segment (default 59,049 or 44,100).
        stft: STFT settings of the ``"choi"`` family (default :data:`CHOI_STFT`).

    Returns:
        ``(segment_length, 1)`` or ``(n_freq, n_frames, 1)``.
    """
    if family not in FAMILIES:
        raise ParameterError(f"family={family!r} is invalid: expected one of {FAMILIES}")
    length = _default_length(family) if segment_length is None else segment_length
    if family == "samplecnn":
        return (length, 1)
    stft = stft or CHOI_STFT
    frames = spectral.n_frames(length, n_fft=stft.n_fft, hop_length=stft.hop_length)
    return (MUSICNN_MELS if family == "musicnn" else stft.n_freq, frames, 1)


def waveform_to_inputs(
    pcm: tf.Tensor, *, family: str, stft: STFTConfig | None = None, sample_rate: int | None = None
) -> tf.Tensor:
    """Turns int16 segments into model inputs (in the graph).

    Args:
        pcm: int16 ``[..., segment_length]`` PCM segments.
        family: ``"samplecnn"``, ``"choi"`` or ``"musicnn"``.
        stft: STFT settings of the spectrogram families (default :data:`CHOI_STFT`).
        sample_rate: Sample rate in Hz (the ``"musicnn"`` family's mel filterbank).

    Returns:
        float32 ``[..., segment_length, 1]`` waveforms in [-1, 1] (``samplecnn``),
        ``[..., n_freq, n_frames, 1]`` linear STFT magnitudes (``choi``) or
        ``[..., 96, n_frames, 1]`` mel power (``musicnn``).
    """
    waveform = tf.cast(pcm, tf.float32) / PCM_SCALE
    if family == "samplecnn":
        return waveform[..., tf.newaxis]
    stft = stft or CHOI_STFT
    if family == "musicnn":
        if sample_rate is None:
            raise ParameterError("family='musicnn' needs the sample_rate of its mel filterbank")
        mel = spectral.melspectrogram(waveform, sample_rate=sample_rate, n_fft=stft.n_fft,
                                      hop_length=stft.hop_length, n_mels=MUSICNN_MELS, power=2.0)
        return mel[..., tf.newaxis]
    mag = spectral.magnitude(waveform, n_fft=stft.n_fft, hop_length=stft.hop_length)
    return mag[..., tf.newaxis]


# ---------------------------------------------------------------------------
# Graph helpers on int16 audio
# ---------------------------------------------------------------------------


def _pad_to(audio: tf.Tensor, length: tf.Tensor | int) -> tf.Tensor:
    """Zero-pads the last axis of ``audio`` to at least ``length`` samples."""
    missing = tf.maximum(length - tf.shape(audio)[-1], 0)
    paddings = tf.concat([tf.zeros([tf.rank(audio) - 1, 2], tf.int32), [[0, missing]]], axis=0)
    return tf.pad(audio, paddings)


def _random_crop(audio: tf.Tensor, *, length: int, seed: tf.Tensor) -> tf.Tensor:
    """One random ``length``-sample crop of int16 ``[n]`` (zero-padded if ``n < length``)."""
    n = tf.shape(audio)[0]
    start = tf.random.stateless_uniform(
        [], seed=seed, minval=0, maxval=tf.maximum(n - length, 0) + 1, dtype=tf.int32
    )
    return tf.ensure_shape(_pad_to(audio, length)[start : start + length], [length])


def _contiguous(audio: tf.Tensor, *, length: int, first: tf.Tensor, limit: int | None) -> tf.Tensor:
    """Contiguous segments of int16 ``[n]``: ``[k, length]``, numbered from ``first``, kept below ``limit``.

    ``k = max(1, n // length)`` before the limit (a short record gives one padded segment).
    """
    n = tf.shape(audio)[0]
    count = tf.maximum(n // length, 1)
    segments = tf.reshape(_pad_to(audio, length)[: count * length], [count, length])
    if limit is not None:
        keep = tf.maximum(tf.minimum(count, limit - first), 0)
        segments = segments[:keep]
    return segments


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    info: DatasetInfo
    files: tuple[str, ...]
    family: str
    length: int
    stft: STFTConfig | None
    per_record: int  # segments of ``length`` in one record (1 for whole tracks)


def _positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        alternative = " or None" if allow_none else ""
        raise ParameterError(f"{name}={value!r} is invalid: expected a positive integer{alternative}")


def _plan(
    pattern: str,
    *,
    family: str,
    segment_length: int | None,
    stft: STFTConfig | None,
    sample_rate: int | None,
    info: DatasetInfo | None,
) -> _Plan:
    if family not in FAMILIES:
        raise ParameterError(f"family={family!r} is invalid: expected one of {FAMILIES}")
    length = _default_length(family) if segment_length is None else segment_length
    _positive("segment_length", length)
    if stft is not None and family == "samplecnn":
        raise ParameterError("stft= is only used by the spectrogram families ('choi', 'musicnn')")
    stft = (stft or CHOI_STFT) if family != "samplecnn" else None
    files = tuple(list_shards(pattern))
    info = info if info is not None else DatasetInfo.read(pattern)
    verify_shards(files, info, where=pattern)
    if sample_rate is not None and info.sample_rate != sample_rate:
        raise DataError(f"{pattern}: the shards hold {info.sample_rate} Hz audio but {sample_rate} Hz is expected; "
                        f"rebuild them with make_tfrecords --sample-rate {sample_rate}")
    per_record = 1
    if info.segment_length is not None:
        if info.segment_length < length:
            raise DataError(f"{pattern}: records are {info.segment_length}-sample segments, shorter than "
                            f"segment_length={length}; rebuild with --segment-length {length} (or larger) or "
                            "without --segment-length (whole tracks)")
        per_record = info.segment_length // length
    return _Plan(info=info, files=files, family=family, length=length, stft=stft, per_record=per_record)


def _parser(plan: _Plan) -> Any:
    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return parse_example(serialized, sample_rate=plan.info.sample_rate, num_labels=plan.info.num_labels,
                             num_samples=plan.info.segment_length)

    return parse


def _records(plan: _Plan, *, shuffle_files: bool, seed: int | None, cycle_length: int | None) -> tf.data.Dataset:
    files = tf.data.Dataset.from_tensor_slices(list(plan.files))
    if shuffle_files and len(plan.files) > 1:
        files = files.shuffle(len(plan.files), seed=seed, reshuffle_each_iteration=True)
    cycle = min(len(plan.files), cycle_length or 16)
    return files.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=4 << 20),
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def make_dataset(
    pattern: str,
    *,
    family: str = "samplecnn",
    segment_length: int | None = None,
    batch_size: int,
    training: bool,
    crop: str = "random",
    segments_per_track: int | None = 10,
    shuffle_buffer: int = 2048,
    deterministic: bool = False,
    seed: int | None = None,
    stft: STFTConfig | None = None,
    sample_rate: int | None = None,
    info: DatasetInfo | None = None,
    cycle_length: int | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Builds the ``(inputs, labels)`` dataset of one split for training or evaluation.

    Args:
        pattern: Shard glob, e.g. ``"data/mtat/train-*.tfrecord"``; ``dataset.json``
            is read from its folder.
        family: ``"samplecnn"`` (waveform) or ``"choi"`` (STFT magnitude).
        segment_length: Samples per model input (default 59,049 for SampleCNN,
            44,100 for Choi).
        batch_size: Segments per batch.
        training: Shuffle files and segments, random crops (with
            ``crop="random"``) and drop the last partial batch. ``False``: every
            contiguous segment in file order, no shuffling.
        crop: ``"random"`` (one random crop per record and epoch) or
            ``"contiguous"`` (the first ``segments_per_track`` segments); only
            used when training.
        segments_per_track: Most contiguous segments per track (``None``: all).
        shuffle_buffer: Shuffle buffer size in segments (training only).
        deterministic: Keep the element order reproducible (slower); with a
            ``seed`` the crops and shuffles are reproducible too.
        seed: Seed of the file shuffle, the crops and the segment shuffle.
        stft: STFT of the ``"choi"`` family (default ``n_fft`` 512, hop 256).
        sample_rate: The rate the model expects; a ``DataError`` if the shards differ.
        info: The dataset description (default: read ``dataset.json``).
        cycle_length: Shards read concurrently (default ``min(16, shards)``).
        drop_remainder: Drop a last partial batch (default: ``training``).

    Returns:
        A ``tf.data.Dataset`` of ``(inputs, labels)``: inputs float32
        ``[batch, segment_length, 1]`` (samplecnn) or ``[batch, n_freq, n_frames,
        1]`` (choi), labels float32 ``[batch, num_labels]``.

    Raises:
        DataError: No shards, a missing or invalid ``dataset.json``, a sample-rate
            mismatch, or records shorter than ``segment_length``.
        ParameterError: Invalid arguments.
    """
    _positive("batch_size", batch_size)
    _positive("shuffle_buffer", shuffle_buffer)
    _positive("segments_per_track", segments_per_track, allow_none=True)
    if crop not in CROPS:
        raise ParameterError(f"crop={crop!r} is invalid: expected one of {CROPS}")
    plan = _plan(pattern, family=family, segment_length=segment_length, stft=stft, sample_rate=sample_rate, info=info)
    length = plan.length
    ds = _records(plan, shuffle_files=training, seed=seed, cycle_length=cycle_length)
    ds = ds.map(_parser(plan), num_parallel_calls=tf.data.AUTOTUNE)
    if training and crop == "random":
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda r, s: (_random_crop(r["audio"], length=length, seed=s), r["labels"]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        per_record = plan.per_record

        def split(r: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            first = tf.maximum(r["segment_index"], 0) * per_record
            segments = _contiguous(r["audio"], length=length, first=first, limit=segments_per_track)
            labels = tf.repeat(r["labels"][tf.newaxis], tf.shape(segments)[0], axis=0)
            return segments, labels

        ds = ds.map(split, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    ds = ds.map(
        lambda pcm, labels: (
            waveform_to_inputs(pcm, family=family, stft=plan.stft, sample_rate=plan.info.sample_rate), labels
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_track_dataset(
    pattern: str,
    *,
    family: str = "samplecnn",
    segment_length: int | None = None,
    segments_per_track: int | None = 10,
    stft: STFTConfig | None = None,
    sample_rate: int | None = None,
    info: DatasetInfo | None = None,
) -> tf.data.Dataset:
    """Builds an evaluation dataset that keeps all segments of a track together.

    Each element is one track: predict on ``inputs`` (a batch of its segments)
    and average the segment scores for track-level metrics. Tracks come in shard
    order (sorted file names); within a track, segments are in time order.

    For segment datasets (one record per segment) the records of a track are
    regrouped by track id as they arrive (``group_by_window``, with the
    ``num_segments`` field telling when a track is complete), so memory stays
    small when, as ``make_tfrecords`` writes them, a track's records are
    contiguous in one shard.

    Args:
        pattern: Shard glob of one split; ``dataset.json`` is read from its folder.
        family: ``"samplecnn"`` or ``"choi"``.
        segment_length: Samples per model input (defaults as in :func:`make_dataset`).
        segments_per_track: Most contiguous segments per track (``None``: all).
        stft: STFT of the ``"choi"`` family.
        sample_rate: The rate the model expects (``DataError`` if the shards differ).
        info: The dataset description (default: read ``dataset.json``).

    Returns:
        A ``tf.data.Dataset`` of ``(track_id, inputs, labels)``: string ``[]``,
        float32 ``[n_segments, *input_shape]`` with ``1 <= n_segments <=
        segments_per_track``, float32 ``[num_labels]``.

    Raises:
        DataError: As :func:`make_dataset`, or a segment dataset with more than
            4,095 records for one track.
    """
    _positive("segments_per_track", segments_per_track, allow_none=True)
    plan = _plan(pattern, family=family, segment_length=segment_length, stft=stft, sample_rate=sample_rate, info=info)
    length, per_record = plan.length, plan.per_record
    ds = tf.data.TFRecordDataset(list(plan.files), buffer_size=4 << 20)  # sequential: keeps a track's records together
    ds = ds.map(_parser(plan), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def to_inputs(pcm: tf.Tensor) -> tf.Tensor:
        return waveform_to_inputs(pcm, family=family, stft=plan.stft, sample_rate=plan.info.sample_rate)

    if plan.info.segment_length is None:
        def whole(r: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            segments = _contiguous(r["audio"], length=length, first=tf.constant(0), limit=segments_per_track)
            return r["track_id"], to_inputs(segments), r["labels"]

        return ds.map(whole, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

    if plan.info.max_segments_per_track >= _MAX_GROUP:
        raise DataError(f"{pattern}: tracks have up to {plan.info.max_segments_per_track} segment records; "
                        f"make_track_dataset regroups at most {_MAX_GROUP - 1}. Use whole-track records instead.")

    def key(r: dict[str, tf.Tensor]) -> tf.Tensor:
        # The window size must be a function of the key: pack the track's record count into it.
        bucket = tf.strings.to_hash_bucket_fast(r["track_id"], 1 << 50)
        return bucket * _MAX_GROUP + tf.cast(tf.clip_by_value(r["num_segments"], 1, _MAX_GROUP - 1), tf.int64)

    grouped = ds.group_by_window(
        key_func=key,
        reduce_func=lambda _, window: window.batch(_MAX_GROUP),
        window_size_func=lambda k: k % _MAX_GROUP,
    )

    def merge(r: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        order = tf.argsort(r["segment_index"], stable=True)
        audio = tf.gather(r["audio"], order)  # [records, record_length]
        ids = r["track_id"]
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(ids, ids[0])),
            ["make_track_dataset: records of different tracks were grouped together (hash collision):", ids],
        )
        with tf.control_dependencies([check]):
            segments = tf.reshape(audio[:, : per_record * length], [-1, length])
        if segments_per_track is not None:
            segments = segments[:segments_per_track]
        return ids[0], to_inputs(segments), r["labels"][0]

    return grouped.map(merge, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
