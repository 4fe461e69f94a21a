"""Extracts the multi-level transfer features of every track of a catalogue with an exported model.

Usage:

    python -m beam_jobs.extract_features --input 'music/**/*.flac' --model exports/samplecnn/1 \\
        --output results/features [--format tfrecord|parquet|npz] [--per-segment] [--tracks-per-shard 500] \\
        [--chunk-seconds 30] [--batch-size 8] [--precision bfloat16] [--pad-short] [--cover-end] \\
        [--skip-existing | --overwrite] \\
        [beam options]

Every file is analysed whole, however long: it is decoded, mixed to mono and
resampled to the model's rate block by block, and cut into whole model segments
(the trailing partial segment is dropped, as the signature does; with ``--cover-end``
one more segment, ending at the track's end, is analysed instead: one more segment of
the pooling and the last row of ``segment_features``, which starts ``seconds`` minus
one segment into the track; a track shorter
than one segment fails as too short, or with ``--pad-short`` is zero-padded to one
and its record has ``padded_seconds``, the zeros added). The ``features``
signature gives one vector per track: the last three conv layers, each max- and
mean-pooled over all positions of all segments (Lee et al. 2018's multi-level
features), concatenated as ``level1_max, level1_mean, level2_max, ...``; the
layout is in ``job.json`` (``feature_layout``). With ``--per-segment`` the same
signature also runs on every segment alone (``segment_features``).

The track is never one tensor: it goes to the model in chunks of at most
``--chunk-seconds`` of whole segments (30 s by default; at most the export's
``max_seconds``; also the most audio of one model call, which bounds the model's
memory), each chunk one RunInference example, and the chunks' vectors
are combined exactly (see :mod:`beam_jobs.chunking`): a ``*_max`` entry is the
maximum of the chunks' maxima; a ``*_mean`` entry is the mean of the chunks' means
weighted by their numbers of segments, which is the mean over all positions of all
segments because every segment has the same number of positions. A file that
becomes undecodable halfway (truncated, corrupt) fails as a whole: nothing of it
is written and ``manifest.jsonl`` says why.

The output folder receives:

    features-SSSSS-of-NNNNN.<format>  one record (row) per track, sorted by track id within a shard:
        tfrecord  tf.train.Example: track_id, path (bytes), seconds (float), features (float [D]),
                  num_segments (int64), and with --per-segment segment_features (float [num_segments * D])
        parquet   columns track_id, path, seconds, features (list<float>), num_segments,
                  and with --per-segment segment_features (list<list<float>>)
        npz       arrays track_id [N], path [N], seconds [N], features [N, D], num_segments [N], and with
                  --per-segment segment_features [S, D] and segment_track [S] (row of the track)
        (with --pad-short every format also has padded_seconds: 0 for a track that fills a segment)
    tracks/<name>.npz    the same per track (what --skip-existing keeps if it reads back with this track's id
                         and the expected shapes, otherwise the track is recomputed, with the reason in the
                         log; shards are rebuilt from them)
    manifest.jsonl       every input exactly once: ok with its outputs, or failed with the reason
    job.json             the settings, the feature layout and the model's metadata.json

A track's shard is given by a hash of its id, so reruns write the same shards.
Without --runner the job uses every core (DirectRunner, multi-processing).
While it runs it shows how many tracks are written: a progress bar on a terminal, else a log
line every 30 s (TFAURAL_PROGRESS_SECONDS); local output folders only (beam_jobs.progress).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # The model starts loading in a process of its own while this process imports Beam (~2 s):
    # see beam_jobs.model_process.
    from beam_jobs.model_process import prestart

    prestart(sys.argv[1:], signature="features")

import dataclasses
import io
import logging
import math
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import io as beam_io
from beam_jobs.accounting import AccountForTracks
from beam_jobs.chunking import (
    ChunkPlan,
    GroupTrackParts,
    PartKey,
    TrackEnd,
    collect_parts,
    combine_pooled,
    stream_examples,
)
from beam_jobs.failures import guarded, infer, keep
from beam_jobs.inference import SignatureModelHandler
from beam_jobs.job import CatalogueJob
from beam_jobs.options import (
    CatalogueJobOptions,
    ChunkOptions,
    ExtractFeaturesOptions,
    InferenceJobOptions,
    ShortTrackOptions,
)
from beam_jobs.settings import InferenceSettings
from beam_jobs.tracks import TrackInput, TrackResult
from tfaural.data.tfrecord import example_messages
from tfaural.errors import DataError, ParameterError
from tfaural.formats import OK, ExportMetadata

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
    "check_part",
    "max_columns",
    "PrepareTrack",
    "AssembleTrack",
    "WriteShard",
    "build_pipeline",
    "ExtractFeaturesJob",
    "JOB",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

FORMATS = ("tfrecord", "parquet", "npz")
PARTS_FOLDER = "tracks"
SIGNATURE = "features"
SHARD_PREFIX = "features"


def feature_layout(metadata: ExportMetadata) -> list[dict[str, Any]]:
    """Where each pooled level sits in the ``features`` vector.

    Returns:
        ``[{"name": "level1_max", "layer": "pool8", "offset": 0, "size": 512}, ...]`` in vector order.
    """
    layout, offset = [], 0
    for level in metadata.feature_levels:
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
        plan: How tracks are cut into chunks for the model (``--chunk-seconds``).
        dim: Length ``D`` of a feature vector.
        tracks_per_shard: ``--tracks-per-shard``.
    """

    common: InferenceSettings
    per_segment: bool
    num_shards: int
    plan: ChunkPlan
    dim: int

    tracks_per_shard: int = 500

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Settings:
        """Validates the flags and reads the model's metadata (one shard until :meth:`with_tracks`).

        Raises:
            ParameterError: On a missing or invalid flag.
            ModelError: If ``--model`` is not a tfaural export.
        """
        common = InferenceSettings.from_options(options, signature=SIGNATURE, default_batch_size=8, formats=FORMATS,
                                                 precision=True)
        job = options.view_as(ExtractFeaturesOptions)
        if job.tracks_per_shard < 1:
            raise ParameterError(f"--tracks-per-shard {job.tracks_per_shard} is invalid: expected a positive integer")
        meta = common.metadata
        chunk_options = options.view_as(ChunkOptions)
        plan = ChunkPlan.for_export(meta, chunk_seconds=chunk_options.chunk_seconds,
                                    pad_short=options.view_as(ShortTrackOptions).pad_short,
                                    cover_end=chunk_options.cover_end)
        return cls(common=common, per_segment=bool(job.per_segment), num_shards=1, plan=plan,
                   tracks_per_shard=job.tracks_per_shard, dim=sum(entry["size"] for entry in feature_layout(meta)))

    def with_tracks(self, num_tracks: int) -> Settings:
        """The settings for ``num_tracks`` input tracks (one shard per ``tracks_per_shard``)."""
        return dataclasses.replace(self, num_shards=max(1, math.ceil(num_tracks / self.tracks_per_shard)))

    def job_settings(self) -> dict[str, Any]:
        """What determines the per-track results (compared by ``--skip-existing``).

        ``max_samples`` is ``None``: whole tracks are analysed (runs before chunking read at
        most the export's ``max_samples``, so their results of long tracks differ). The chunk
        length does not change the results and is recorded in ``job.json`` only. ``pad_short`` and
        ``cover_end`` are listed only when on (as runs before them have no such keys).
        """
        return {"signature": SIGNATURE, "per_segment": self.per_segment, "max_samples": None,
                **({"pad_short": True} if self.plan.pad_short else {}),
                **({"cover_end": True} if self.plan.cover_end else {})}

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
        num_segments: Number of model segments of the track (all of them, however long the track).
        padded_seconds: Seconds of zeros the track was padded with to one segment (``--pad-short``).
    """

    track_id: str
    path: str
    seconds: float
    features: np.ndarray
    segment_features: np.ndarray | None
    num_segments: int
    padded_seconds: float = 0.0


def _part_bytes(record: FeatureRecord) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"track_id": np.array(record.track_id), "path": np.array(record.path),
                              "seconds": np.float64(record.seconds), "features": record.features,
                              "num_segments": np.int64(record.num_segments)}
    if record.segment_features is not None:
        arrays["segment_features"] = record.segment_features
    if record.padded_seconds > 0:
        arrays["padded_seconds"] = np.float64(record.padded_seconds)
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
                padded_seconds=float(data["padded_seconds"]) if "padded_seconds" in data else 0.0,
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a feature file of extract_features ({type(err).__name__}: {err})") from None


def check_part(record: FeatureRecord, track: TrackInput, *, dim: int, per_segment: bool, path: str) -> FeatureRecord:
    """Checks that a feature part of an earlier run is what this run would write for ``track``.

    Returns:
        ``record``.

    Raises:
        DataError: Naming ``path`` and what does not fit (another track, shapes, non-finite values).
    """
    if record.track_id != track.track_id or record.path != track.path:
        raise DataError(f"{path}: holds the features of {record.track_id!r} ({record.path}), not of this track")
    if record.features.shape != (dim,) or not np.isfinite(record.features).all():
        raise DataError(f"{path}: its features have shape {record.features.shape} or non-finite values; expected "
                        f"{dim} finite values")
    if (record.num_segments < 1 or not math.isfinite(record.seconds) or record.seconds <= 0
            or not (math.isfinite(record.padded_seconds) and record.padded_seconds >= 0)):
        raise DataError(f"{path}: num_segments {record.num_segments}, seconds {record.seconds}, padded_seconds "
                        f"{record.padded_seconds} are invalid")
    segments = record.segment_features
    if per_segment and (segments is None or segments.shape != (record.num_segments, dim)
                        or not np.isfinite(segments).all()):
        raise DataError(f"{path}: its segment_features are missing or not {record.num_segments} x {dim} finite values")
    if not per_segment and segments is not None:
        raise DataError(f"{path}: holds segment_features, which this run (without --per-segment) does not write")
    return record


class PrepareTrack(beam.DoFn):
    """Track → its examples ``(PartKey, {"waveform": ...})`` as the file is decoded (one per chunk, and with
    ``--per-segment`` one per segment) and then a :class:`~beam_jobs.chunking.TrackEnd`; or a
    :class:`TrackResult` (kept from an earlier run with ``--skip-existing``, or failed to decode, possibly
    after some chunks: then no ``TrackEnd`` follows and nothing of the track is written)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, track: TrackInput) -> Iterator[tuple[PartKey, dict[str, np.ndarray]] | TrackEnd | TrackResult]:
        s = self._settings
        part = s.common.path(s.part_file(track))
        if s.common.skip_existing and beam_io.exists(part):
            try:
                record = check_part(read_part(part), track, dim=s.dim, per_segment=s.per_segment, path=part)
            except DataError as err:
                logger.warning("--skip-existing: recomputing %s: %s", track.track_id, err)
                beam.metrics.Metrics.counter("tfaural_jobs", "invalid_results_recomputed").inc()
            else:
                yield TrackResult(track, OK, outputs=(s.part_file(track),), reused=True, data=record)
                return
        yield from stream_examples(track, s.plan, per_segment=s.per_segment)


def max_columns(metadata: ExportMetadata) -> np.ndarray:
    """bool ``[D]``: which entries of a ``features`` vector are maxima (the others are means)."""
    layout = feature_layout(metadata)
    mask = np.zeros(sum(entry["size"] for entry in layout), bool)
    for entry in layout:
        if entry["name"].endswith("_max"):
            mask[entry["offset"] : entry["offset"] + entry["size"]] = True
    return mask


class AssembleTrack(beam.DoFn):
    """All parts of a track → ``tracks/<name>.npz`` and an ``ok`` :class:`TrackResult` carrying the
    :class:`FeatureRecord`; a failed one if a part failed or is missing; nothing if the track did not
    decode to its end (the decode stage reports that)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._is_max = max_columns(settings.common.metadata)

    def process(self, element: tuple[str, Iterable[Any]]) -> Iterator[TrackResult]:
        s = self._settings
        parts = collect_parts(element[1], per_segment=s.per_segment)
        if parts is None:
            return
        if isinstance(parts, TrackResult):
            yield parts
            return
        end = parts.end
        features = combine_pooled(parts.chunk_outputs("features"), parts.chunk_weights, is_max=self._is_max)
        segments = parts.segment_outputs("features") if s.per_segment else None
        record = FeatureRecord(track_id=end.track.track_id, path=end.track.path, seconds=end.seconds,
                               features=features, segment_features=segments, num_segments=end.num_segments,
                               padded_seconds=end.padded_seconds)
        beam_io.write_bytes(s.common.path(s.part_file(end.track)), _part_bytes(record))
        yield TrackResult(end.track, OK, outputs=(s.part_file(end.track),), data=record)


def encode_shard(records: Sequence[FeatureRecord], *, fmt: str, dim: int, per_segment: bool,
                 padded: bool = False) -> bytes | list[bytes]:
    """Serialises a shard's records (sorted by the caller); ``padded``: with ``padded_seconds`` (``--pad-short``).

    Returns:
        The file's bytes (parquet, npz) or the serialised ``tf.train.Example`` s (tfrecord).
    """
    if fmt == "tfrecord":
        pb = example_messages()  # tf.train.Example's messages, without importing TensorFlow in the workers
        examples = []
        for r in records:
            feature = {
                "track_id": pb.Feature(bytes_list=pb.BytesList(value=[r.track_id.encode("utf-8")])),
                "path": pb.Feature(bytes_list=pb.BytesList(value=[r.path.encode("utf-8")])),
                "seconds": pb.Feature(float_list=pb.FloatList(value=[r.seconds])),
                "features": pb.Feature(float_list=pb.FloatList(value=r.features.tolist())),
                "num_segments": pb.Feature(int64_list=pb.Int64List(value=[r.num_segments])),
            }
            if per_segment and r.segment_features is not None:
                feature["segment_features"] = pb.Feature(
                    float_list=pb.FloatList(value=r.segment_features.ravel().tolist()))
            if padded:
                feature["padded_seconds"] = pb.Feature(float_list=pb.FloatList(value=[r.padded_seconds]))
            example = pb.Example(features=pb.Features(feature=feature))
            examples.append(example.SerializeToString(deterministic=True))  # the same bytes on every run
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
        if padded:
            columns["padded_seconds"] = pa.array([r.padded_seconds for r in records], pa.float64())
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
    if padded:
        arrays["padded_seconds"] = np.array([r.padded_seconds for r in records], np.float64)
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
                               per_segment=s.per_segment, padded=s.plan.pad_short)
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
                                    precision=s.common.precision,
                                    share_across_processes=s.common.share_model, one_example_per_call=True,
                                    model_server=s.common.model_server)
    listed = pipeline | "ListTracks" >> beam.Create(list(tracks))
    spread = listed | "SpreadTracks" >> beam.Reshuffle()
    prepared, decode_failures = guarded(spread, "Decode", PrepareTrack(s), stage="decode", partial=True)
    early = keep(prepared, "EarlyResults", TrackResult)
    examples = keep(prepared, "Examples", tuple)
    ends = keep(prepared, "TrackEnds", TrackEnd)
    predicted, inference_failures = infer(examples, "Features", handler, prebatched=s.common.prebatched)
    parts = (predicted, inference_failures, ends) | "PartsByTrack" >> GroupTrackParts()
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


class ExtractFeaturesJob(CatalogueJob):
    """``python -m beam_jobs.extract_features``: see the module docstring."""

    name = "extract_features"
    option_classes = (CatalogueJobOptions, InferenceJobOptions, ExtractFeaturesOptions, ChunkOptions,
                      ShortTrackOptions)
    signature = SIGNATURE
    derived = tuple(f"{SHARD_PREFIX}-*-of-*.{fmt}" for fmt in FORMATS)

    def settings(self, options: PipelineOptions) -> Settings:
        """See :meth:`Settings.from_options`."""
        return Settings.from_options(options)

    def configure(self, options: PipelineOptions, settings: Settings, *, n_inputs: int,
                  local_defaults: bool) -> Settings:
        """The number of shards follows the number of tracks; then the runner defaults."""
        return super().configure(options, settings.with_tracks(n_inputs), n_inputs=n_inputs,
                                 local_defaults=local_defaults)

    def job_extra(self, settings: Settings) -> dict[str, Any]:
        """The format, the shards, the feature layout and the chunking plan."""
        return {
            "format": settings.common.format, "num_shards": settings.num_shards, "feature_dim": settings.dim,
            "feature_layout": feature_layout(settings.common.metadata),
            "shards": [shard_name(i, settings.num_shards, settings.common.format or FORMATS[0])
                       for i in range(settings.num_shards)],
            **settings.plan.describe(),
        }

    def describe(self, settings: Settings, tracks: Sequence[TrackInput]) -> str:
        """The log line that says what the run is about to do."""
        return (f"extract_features: {len(tracks)} track(s) -> {settings.common.output} ({settings.common.format}, "
                f"{settings.num_shards} shard(s)) with {settings.common.model}")

    def build(self, pipeline: beam.Pipeline, inputs: Sequence[TrackInput], settings: Settings) -> None:
        """See :func:`build_pipeline`."""
        build_pipeline(pipeline, inputs, settings)


JOB = ExtractFeaturesJob()

run = JOB.run  # run(argv, save_main_session=None, test_pipeline=None): see Job.run
main = JOB.main  # main(argv) -> exit status: see Job.main


if __name__ == "__main__":
    # Run the importable module, not __main__: Beam pickles the DoFns by module path, and the
    # worker processes of the multi-processing DirectRunner can import this module but not __main__.
    from beam_jobs import extract_features
    from tfaural.cli import exit_promptly

    exit_promptly(extract_features.main())
