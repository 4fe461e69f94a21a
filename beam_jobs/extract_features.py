"""Extracts the multi-level transfer features of every track of a catalogue with an exported model.

Usage:

    python -m beam_jobs.extract_features --input 'music/**/*.flac' --model exports/samplecnn/1 \\
        --output results/features [--format tfrecord|parquet|npz] [--per-segment] [--tracks-per-shard 500] \\
        [--batch-size 8] [--skip-existing | --overwrite] [beam options]

Every file is decoded, mixed to mono, resampled to the model's rate and cut to
whole model segments (at most the export's ``max_seconds``). The ``features``
signature gives one vector per track: the last three conv layers, each max- and
mean-pooled over all positions of all segments (Lee et al. 2018's multi-level
features), concatenated as ``level1_max, level1_mean, level2_max, ...``; the
layout is in ``job.json`` (``feature_layout``). With ``--per-segment`` the same
signature also runs on every segment alone (``segment_features``).

The output folder receives:

    features-SSSSS-of-NNNNN.<format>  one record (row) per track, sorted by track id within a shard:
        tfrecord  tf.train.Example: track_id, path (bytes), seconds (float), features (float [D]),
                  num_segments (int64), and with --per-segment segment_features (float [num_segments * D])
        parquet   columns track_id, path, seconds, features (list<float>), num_segments,
                  and with --per-segment segment_features (list<list<float>>)
        npz       arrays track_id [N], path [N], seconds [N], features [N, D], num_segments [N], and with
                  --per-segment segment_features [S, D] and segment_track [S] (row of the track)
    tracks/<name>.npz    the same per track (what --skip-existing keeps; shards are rebuilt from them)
    manifest.jsonl       every input exactly once: ok with its outputs, or failed with the reason
    job.json             the settings, the feature layout and the model's metadata.json

A track's shard is given by a hash of its id, so reruns write the same shards.
Without --runner the job uses every core (DirectRunner, multi-processing).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from beam_jobs import io as beam_io
from beam_jobs.catalogue_io import (
    FAILED,
    JOB_FILENAME,
    MANIFEST_FILENAME,
    OK,
    AccountForTracks,
    InferenceSettings,
    TrackInput,
    TrackResult,
    configure_runner,
    decode_track,
    execute,
    failed_result,
    guarded,
    infer,
    keep,
    list_tracks,
    main_for,
    prepare_output,
    write_job_file,
)
from beam_jobs.inference import InferenceFailure, SignatureModelHandler
from beam_jobs.options import (
    CatalogueJobOptions,
    ExtractFeaturesOptions,
    InferenceJobOptions,
    parse_job_args,
)
from beam_jobs.tag import whole_segments
from tfaural.errors import AudioError, DataError, ParameterError

__all__ = [
    "FORMATS",
    "PARTS_FOLDER",
    "Settings",
    "FeatureRecord",
    "PartKey",
    "feature_layout",
    "shard_name",
    "encode_shard",
    "read_part",
    "PrepareTrack",
    "AssembleTrack",
    "WriteShard",
    "build_pipeline",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

FORMATS = ("tfrecord", "parquet", "npz")
PARTS_FOLDER = "tracks"
SIGNATURE = "features"
SHARD_PREFIX = "features"
_RESERVED = (MANIFEST_FILENAME, JOB_FILENAME)


def feature_layout(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Where each pooled level sits in the ``features`` vector.

    Returns:
        ``[{"name": "level1_max", "layer": "pool8", "offset": 0, "size": 512}, ...]`` in vector order.
    """
    layout, offset = [], 0
    for level in metadata["feature_levels"]:
        for pool in ("max", "mean"):
            size = int(level["channels"])
            layout.append({"name": f"{level['name']}_{pool}", "layer": level["layer"], "offset": offset, "size": size})
            offset += size
    return layout


@dataclasses.dataclass(frozen=True)
class Settings:
    """The job's settings, validated.

    Attributes:
        common: The flags every inference job has (``format`` is one of :data:`FORMATS`).
        per_segment: Also compute the features of every segment.
        num_shards: Output shards.
        segment_length: The model's segment length in samples.
        segment_hop: Hop between the model's segments in samples.
        max_samples: Longest input the export accepts (longer tracks are cut).
        dim: Length ``D`` of a feature vector.
        tracks_per_shard: ``--tracks-per-shard``.
    """

    common: InferenceSettings
    per_segment: bool
    num_shards: int
    segment_length: int
    segment_hop: int
    max_samples: int
    dim: int

    tracks_per_shard: int = 500

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Settings:
        """Validates the flags and reads the model's metadata (one shard until :meth:`with_tracks`).

        Raises:
            ParameterError: On a missing or invalid flag.
            ModelError: If ``--model`` is not a tfaural export.
        """
        common = InferenceSettings.from_options(options, signature=SIGNATURE, default_batch_size=8, formats=FORMATS)
        job = options.view_as(ExtractFeaturesOptions)
        if job.tracks_per_shard < 1:
            raise ParameterError(f"--tracks-per-shard {job.tracks_per_shard} is invalid: expected a positive integer")
        meta = common.metadata
        return cls(
            common=common, per_segment=bool(job.per_segment), num_shards=1, tracks_per_shard=job.tracks_per_shard,
            segment_length=int(meta["segment_length"]),
            segment_hop=int(meta.get("segment_hop") or meta["segment_length"]),
            max_samples=int(meta["max_samples"]), dim=sum(entry["size"] for entry in feature_layout(meta)),
        )

    def with_tracks(self, num_tracks: int) -> Settings:
        """The settings for ``num_tracks`` input tracks (one shard per ``tracks_per_shard``)."""
        return dataclasses.replace(self, num_shards=max(1, math.ceil(num_tracks / self.tracks_per_shard)))

    def job_settings(self) -> dict[str, Any]:
        """What determines the per-track results (compared by ``--skip-existing``)."""
        return {"signature": SIGNATURE, "per_segment": self.per_segment, "max_samples": self.max_samples}

    def part_file(self, track: TrackInput) -> str:
        """The track's result file, relative to the output folder."""
        return f"{PARTS_FOLDER}/{track.name}.npz"


def shard_name(index: int, num_shards: int, fmt: str) -> str:
    """``features-SSSSS-of-NNNNN.<fmt>``."""
    return f"{SHARD_PREFIX}-{index:05d}-of-{num_shards:05d}.{fmt}"


@dataclasses.dataclass(frozen=True)
class FeatureRecord:
    """The features of one track.

    Attributes:
        track_id: The track's id.
        path: Its audio file.
        seconds: Seconds of audio analysed.
        features: float32 ``[D]``, pooled over all segments.
        segment_features: float32 ``[num_segments, D]``, or ``None`` without ``--per-segment``.
        num_segments: Number of model segments of the track.
    """

    track_id: str
    path: str
    seconds: float
    features: np.ndarray
    segment_features: np.ndarray | None
    num_segments: int


@dataclasses.dataclass(frozen=True)
class PartKey:
    """Which part of a track an example is: the whole track (``index`` -1) or one segment.

    Attributes:
        track: The track.
        index: -1 for the whole track, else the segment's index.
        count: Number of parts of the track.
        seconds: Seconds of audio of the track that are analysed.
    """

    track: TrackInput
    index: int
    count: int
    seconds: float


def _part_bytes(record: FeatureRecord) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"track_id": np.array(record.track_id), "path": np.array(record.path),
                              "seconds": np.float64(record.seconds), "features": record.features,
                              "num_segments": np.int64(record.num_segments)}
    if record.segment_features is not None:
        arrays["segment_features"] = record.segment_features
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_part(path: str) -> FeatureRecord:
    """Reads a ``tracks/<name>.npz`` file.

    Raises:
        DataError: If the file is not a feature part.
    """
    try:
        with np.load(io.BytesIO(beam_io.read_bytes(path)), allow_pickle=False) as data:
            return FeatureRecord(
                track_id=str(data["track_id"]), path=str(data["path"]), seconds=float(data["seconds"]),
                features=np.asarray(data["features"], np.float32),
                segment_features=(np.asarray(data["segment_features"], np.float32)
                                  if "segment_features" in data else None),
                num_segments=int(data["num_segments"]),
            )
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: not a feature file of extract_features ({err})") from None


class PrepareTrack(beam.DoFn):
    """Track → its examples ``(PartKey, {"waveform": ...})``, or a :class:`TrackResult`
    (kept from an earlier run with ``--skip-existing``, or failed to decode)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, track: TrackInput) -> Iterator[tuple[PartKey, dict[str, np.ndarray]] | TrackResult]:
        s = self._settings
        part = s.common.path(s.part_file(track))
        if s.common.skip_existing and beam_io.exists(part):
            yield TrackResult(track, OK, outputs=(s.part_file(track),), reused=True, data=read_part(part))
            return
        try:
            y = decode_track(track, sample_rate=s.common.sample_rate, min_samples=s.segment_length,
                             duration=s.max_samples / s.common.sample_rate)
        except AudioError as err:
            yield failed_result(track, err, stage="decode")
            return
        y = np.ascontiguousarray(y[: whole_segments(len(y), length=s.segment_length, hop=s.segment_hop)])
        starts = range(0, len(y) - s.segment_length + 1, s.segment_hop) if s.per_segment else range(0)
        count = 1 + len(starts)
        seconds = len(y) / s.common.sample_rate
        yield PartKey(track, -1, count, seconds), {"waveform": y}
        for index, start in enumerate(starts):
            yield PartKey(track, index, count, seconds), {"waveform": y[start : start + s.segment_length].copy()}


def _key_part(element: tuple[PartKey, PredictionResult]) -> tuple[str, tuple[PartKey, Any]]:
    key, prediction = element
    return key.track.track_id, (key, prediction.inference)


class AssembleTrack(beam.DoFn):
    """All parts of a track → ``tracks/<name>.npz`` and an ``ok`` :class:`TrackResult` carrying the
    :class:`FeatureRecord`, or a failed one if a part failed or is missing."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[str, Iterable[Any]]) -> Iterator[TrackResult]:
        s = self._settings
        _, values = element
        values = list(values)
        failures = [v for v in values if isinstance(v, TrackResult)]
        parts = sorted((v for v in values if not isinstance(v, TrackResult)), key=lambda p: p[0].index)
        if failures:
            yield failures[0]
            return
        key = parts[0][0]
        for _, inference in parts:
            if isinstance(inference, InferenceFailure):
                yield failed_result(key.track, inference, stage="inference")
                return
        if len(parts) != key.count:
            yield TrackResult(key.track, FAILED, stage="inference", error_type="IncompletePrediction",
                              error=f"{len(parts)} of {key.count} parts of the track came back from the model")
            return
        whole = np.asarray(parts[0][1]["features"], np.float32)
        segments = None
        if s.per_segment:
            segments = np.stack([np.asarray(p[1]["features"], np.float32) for p in parts[1:]])
        record = FeatureRecord(track_id=key.track.track_id, path=key.track.path, seconds=key.seconds,
                               features=whole, segment_features=segments, num_segments=key.count - 1
                               if s.per_segment else _count_segments(key.seconds, s))
        beam_io.write_bytes(s.common.path(s.part_file(key.track)), _part_bytes(record))
        yield TrackResult(key.track, OK, outputs=(s.part_file(key.track),), data=record)


def _count_segments(seconds: float, settings: Settings) -> int:
    samples = int(round(seconds * settings.common.sample_rate))
    return 1 + (samples - settings.segment_length) // settings.segment_hop


def encode_shard(records: Sequence[FeatureRecord], *, fmt: str, dim: int, per_segment: bool) -> bytes | list[bytes]:
    """Serialises a shard's records (sorted by the caller).

    Returns:
        The file's bytes (parquet, npz) or the serialised ``tf.train.Example`` s (tfrecord).
    """
    if fmt == "tfrecord":
        import tensorflow as tf

        examples = []
        for r in records:
            feature = {
                "track_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[r.track_id.encode("utf-8")])),
                "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[r.path.encode("utf-8")])),
                "seconds": tf.train.Feature(float_list=tf.train.FloatList(value=[r.seconds])),
                "features": tf.train.Feature(float_list=tf.train.FloatList(value=r.features.tolist())),
                "num_segments": tf.train.Feature(int64_list=tf.train.Int64List(value=[r.num_segments])),
            }
            if per_segment and r.segment_features is not None:
                feature["segment_features"] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=r.segment_features.ravel().tolist()))
            examples.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        return examples
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: dict[str, Any] = {
            "track_id": pa.array([r.track_id for r in records], pa.string()),
            "path": pa.array([r.path for r in records], pa.string()),
            "seconds": pa.array([r.seconds for r in records], pa.float64()),
            "features": pa.array([r.features.tolist() for r in records], pa.list_(pa.float32(), dim)),
            "num_segments": pa.array([r.num_segments for r in records], pa.int32()),
        }
        if per_segment:
            columns["segment_features"] = pa.array(
                [[] if r.segment_features is None else r.segment_features.tolist() for r in records],
                pa.list_(pa.list_(pa.float32(), dim)))
        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer)
        return buffer.getvalue()
    arrays: dict[str, Any] = {
        "track_id": np.array([r.track_id for r in records], dtype=str),
        "path": np.array([r.path for r in records], dtype=str),
        "seconds": np.array([r.seconds for r in records], np.float64),
        "features": np.stack([r.features for r in records]) if records else np.zeros((0, dim), np.float32),
        "num_segments": np.array([r.num_segments for r in records], np.int64),
    }
    if per_segment:
        segments = [r.segment_features for r in records if r.segment_features is not None]
        arrays["segment_features"] = np.concatenate(segments) if segments else np.zeros((0, dim), np.float32)
        arrays["segment_track"] = np.concatenate(
            [np.full(len(r.segment_features), row, np.int64) for row, r in enumerate(records)
             if r.segment_features is not None] or [np.zeros(0, np.int64)])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class WriteShard(beam.DoFn):
    """``(shard index, [ok TrackResult with a FeatureRecord, ...])`` → the shard file; re-emits the results
    with the shard among their outputs (without the arrays)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[int, Iterable[TrackResult | None]]) -> Iterator[TrackResult]:
        s = self._settings
        index, values = element
        results = sorted((v for v in values if v is not None), key=lambda r: r.track_id)
        name = shard_name(index, s.num_shards, s.common.format or FORMATS[0])
        payload = encode_shard([r.data for r in results], fmt=s.common.format or FORMATS[0], dim=s.dim,
                               per_segment=s.per_segment)
        path = s.common.path(name)
        if isinstance(payload, list):
            beam_io.write_tfrecords(path, payload)
        else:
            beam_io.write_bytes(path, payload)
        beam.metrics.Metrics.counter("extract_features", "shards_written").inc()
        for r in results:
            yield dataclasses.replace(r, outputs=(name, *r.outputs), data=None)


def build_pipeline(pipeline: beam.Pipeline, tracks: Sequence[TrackInput], settings: Settings) -> None:
    """Adds the job's labelled stages to ``pipeline`` (see the module docstring)."""
    s = settings
    handler = SignatureModelHandler(s.common.model, signature=SIGNATURE, max_batch_size=s.common.batch_size,
                                    outputs=["features"], intra_op_threads=s.common.intra_op_threads,
                                    share_across_processes=s.common.share_model)
    listed = pipeline | "ListTracks" >> beam.Create(list(tracks))
    spread = listed | "SpreadTracks" >> beam.Reshuffle()
    prepared, decode_failures = guarded(spread, "Decode", PrepareTrack(s), stage="decode")
    early = keep(prepared, "EarlyResults", TrackResult)
    examples = keep(prepared, "Examples", tuple)
    predicted, inference_failures = infer(examples, "Features", handler, prebatched=s.common.prebatched)
    parts = (
        (predicted | "KeyPartsByTrack" >> beam.Map(_key_part),
         inference_failures | "KeyFailuresByTrack" >> beam.Map(lambda r: (r.track_id, r)))
        | "PartsAndFailures" >> beam.Flatten()
        | "PartsByTrack" >> beam.GroupByKey()
    )
    assembled, assemble_failures = guarded(parts, "Assemble", AssembleTrack(s), stage="write")
    tracks_done = (
        (early, keep(assembled, "Assembled", TrackResult), decode_failures, assemble_failures)
        | "TrackResults" >> beam.Flatten()
    )
    ok = tracks_done | "WithFeatures" >> beam.Filter(lambda r: r.status == OK)
    failed = tracks_done | "WithoutFeatures" >> beam.Filter(lambda r: r.status != OK)
    n = s.num_shards
    sharded = (
        (ok | "AssignShard" >> beam.Map(lambda r: (beam_io.shard_index(r.track_id, n), r)),
         pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)]))
        | "ShardsAndTracks" >> beam.Flatten()
        | "ByShard" >> beam.GroupByKey()
    )
    written, shard_failures = guarded(sharded, "WriteShards", WriteShard(s), stage="write")
    results = (
        (keep(written, "InShards", TrackResult), shard_failures, failed)
        | "AllResults" >> beam.Flatten()
    )
    _ = (listed, results) | "Account" >> AccountForTracks(s.common.output)


def run(
    argv: Sequence[str] | None = None,
    save_main_session: bool = False,
    test_pipeline: beam.Pipeline | None = None,
) -> PipelineResult:
    """Runs the job and waits for it to finish.

    Args:
        argv: Command-line arguments (job flags and Beam flags); ``None``: ``sys.argv[1:]``.
        save_main_session: Pickle the caller's ``__main__`` for the workers (not needed:
            every DoFn of the job lives in an importable module).
        test_pipeline: A pipeline to use instead of creating one (tests).

    Returns:
        The finished ``PipelineResult``; :func:`beam_jobs.catalogue_io.summarize` of the
        output folder says what happened to every track.

    Raises:
        TfauralError: On invalid flags, a missing or invalid model, no input files, or
            an output folder holding an earlier run (without --skip-existing/--overwrite).
    """
    options = parse_job_args(argv, prog="python -m beam_jobs.extract_features", description=__doc__,
                             option_classes=[CatalogueJobOptions, InferenceJobOptions, ExtractFeaturesOptions])
    settings = Settings.from_options(options)
    tracks = list_tracks(input_glob=settings.common.input_glob, manifest=settings.common.manifest,
                         reserved=_RESERVED)
    settings = settings.with_tracks(len(tracks))
    settings = configure_runner(
        "extract_features", options, settings, n_tracks=len(tracks), local_defaults=test_pipeline is None,
        save_main_session=save_main_session,
    )
    prepare_output(settings.common, job="extract_features", job_settings=settings.job_settings(),
                   derived=[f"{SHARD_PREFIX}-*-of-*.{fmt}" for fmt in FORMATS])
    write_job_file(settings.common, job="extract_features", job_settings=settings.job_settings(), extra={
        "format": settings.common.format, "num_shards": settings.num_shards, "feature_dim": settings.dim,
        "feature_layout": feature_layout(settings.common.metadata),
        "shards": [shard_name(i, settings.num_shards, settings.common.format or FORMATS[0])
                   for i in range(settings.num_shards)],
    })
    logger.info("extract_features: %d track(s) -> %s (%s, %d shard(s)) with %s", len(tracks),
                settings.common.output, settings.common.format, settings.num_shards, settings.common.model)
    result = execute("extract_features", options, build_pipeline, tracks, settings, test_pipeline=test_pipeline)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2 on a usage or setup error)."""
    return main_for("extract_features", run, argv)


if __name__ == "__main__":
    # Run the importable module, not __main__: Beam pickles the DoFns by module path, and the
    # worker processes of the multi-processing DirectRunner can import this module but not __main__.
    from beam_jobs import extract_features

    sys.exit(extract_features.main())
