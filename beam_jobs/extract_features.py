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
signature also runs on every segment alone (``segment_features``): a chunk's
segments go to it as one batch ``[n, segment_length]``, one call, each pooled alone.

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

Memory does not grow with the catalogue: the model's output for every chunk (and
batch of segments) is written at once to ``OUTPUT/.features/`` and only a reference to
it travels to the track's grouping; a track's file in ``tracks/`` is assembled from
them, and each shard is written from its tracks' files read one at a time, so no stage
holds more than one track's features (a parquet row group's: at most 32 MiB, or one
track's if more). ``.features/`` takes as much disk as the features
while the job runs and is deleted when the run ends, however it ends (and by the next
run if one was killed), not track by track: a runner that retries a bundle must find
its outputs again.

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
                         log; shards are written from them)
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult
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
from beam_jobs.inference import InferenceFailure, SignatureModelHandler
from beam_jobs.job import CatalogueJob
from beam_jobs.options import (
    CatalogueJobOptions,
    ChunkOptions,
    ExtractFeaturesOptions,
    InferenceJobOptions,
    ShortTrackOptions,
)
from beam_jobs.settings import InferenceSettings
from beam_jobs.tracks import INPUTS_FOLDER, ListInputs, TrackInput, TrackResult, check_source
from tfaural.data.tfrecord import example_messages, float_list
from tfaural.errors import DataError, ParameterError
from tfaural.formats import OK, ExportMetadata

__all__ = [
    "FORMATS",
    "PARTS_FOLDER",
    "OUTPUTS_FOLDER",
    "StoredOutput",
    "StoreOutputs",
    "Settings",
    "FeatureRecord",
    "PartKey",
    "feature_layout",
    "shard_name",
    "encode_shard",
    "write_shard",
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
OUTPUTS_FOLDER = ".features"
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

    @property
    def outputs_folder(self) -> str:
        """Where the model's outputs wait for their track's assembly: ``OUTPUT/.features``."""
        return self.common.path(OUTPUTS_FOLDER)

    def output_file(self, key: PartKey) -> str:
        """The file of one model output: ``.features/<track name>-<chunk|segments>-<index>.npy``."""
        return beam_io.join(self.outputs_folder, f"{key.track.name}-{key.kind}-{key.index:06d}.npy")


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
        source: The audio file's :func:`~beam_jobs.io.source_stamp` when it was decoded (in the track's part
            file only, for ``--skip-existing``; not in the shards).
    """

    track_id: str
    path: str
    seconds: float
    features: np.ndarray
    segment_features: np.ndarray | None
    num_segments: int
    padded_seconds: float = 0.0
    source: str | None = None


@dataclasses.dataclass(frozen=True)
class StoredOutput:
    """A model output written to ``.features/`` (:class:`StoreOutputs`): what the track's grouping carries.

    Attributes:
        path: The ``.npy`` file.
        shape: The float32 array's shape: ``[D]`` for a chunk, ``[n, D]`` for a batch of segments.
    """

    path: str
    shape: tuple[int, ...]

    def load(self) -> np.ndarray:
        """The array, float32 ``shape``.

        Raises:
            DataError: Naming the file if it is missing, unreadable, or not a finite float32 ``shape`` array.
        """
        try:
            values = np.load(io.BytesIO(beam_io.read_bytes(self.path)), allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{self.path}: a stored model output could not be read back "
                            f"({type(err).__name__}: {err})") from None
        if values.dtype != np.float32 or values.shape != self.shape or not np.isfinite(values).all():
            raise DataError(f"{self.path}: holds {values.dtype} {list(values.shape)}; expected the finite float32 "
                            f"{list(self.shape)} that was written")
        return values


class StoreOutputs(beam.DoFn):
    """``(PartKey, PredictionResult)`` → the same with the ``features`` output written to ``.features/`` and a
    :class:`StoredOutput` in its place (the example's audio dropped), so that the track's grouping holds no
    features; an :class:`~beam_jobs.inference.InferenceFailure` passes unchanged."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[PartKey, PredictionResult]) -> Iterator[tuple[PartKey, PredictionResult]]:
        key, prediction = element
        if isinstance(prediction.inference, InferenceFailure):
            yield key, prediction._replace(example=None)
            return
        values = np.asarray(prediction.inference["features"], np.float32)
        buffer = io.BytesIO()
        np.save(buffer, values)
        path = self._settings.output_file(key)
        beam_io.write_bytes(path, buffer.getvalue())
        yield key, PredictionResult(None, StoredOutput(path, tuple(values.shape)))


def _part_bytes(record: FeatureRecord) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"track_id": np.array(record.track_id), "path": np.array(record.path),
                              "seconds": np.float64(record.seconds), "features": record.features,
                              "num_segments": np.int64(record.num_segments)}
    if record.segment_features is not None:
        arrays["segment_features"] = record.segment_features
    if record.padded_seconds > 0:
        arrays["padded_seconds"] = np.float64(record.padded_seconds)
    if record.source is not None:
        arrays["source"] = np.array(record.source)
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
                source=str(data["source"]) if "source" in data else None,
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
                check_source(record.source, track, result=part)
            except DataError as err:
                logger.warning("--skip-existing: recomputing %s: %s", track.track_id, err)
                beam.metrics.Metrics.counter("tfaural_jobs", "invalid_results_recomputed").inc()
            else:  # its shard reads the file again: no features travel through the pipeline
                yield TrackResult(track, OK, outputs=(s.part_file(track),), reused=True)
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
    """All parts of a track (:class:`StoredOutput` s) → ``tracks/<name>.npz`` and an ``ok`` :class:`TrackResult`;
    a failed one if a part failed or is missing; nothing if the track did not decode to its end (the decode
    stage reports that). The stored outputs are left for the end of the run to delete: a runner that retries
    a bundle must find them again."""

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
        chunks = np.stack([stored.load() for _, stored in parts.chunks])
        features = combine_pooled(chunks, parts.chunk_weights, is_max=self._is_max)
        segments = np.concatenate([stored.load() for _, stored in parts.segments]) if s.per_segment else None
        record = FeatureRecord(track_id=end.track.track_id, path=end.track.path, seconds=end.seconds,
                               features=features, segment_features=segments, num_segments=end.num_segments,
                               padded_seconds=end.padded_seconds, source=end.source)
        beam_io.write_bytes(s.common.path(s.part_file(end.track)), _part_bytes(record))
        yield TrackResult(end.track, OK, outputs=(s.part_file(end.track),))


#: Most bytes of features in one parquet row group (at least one track's): a shard's parquet file is written
#: a row group at a time.
PARQUET_GROUP_BYTES = 32 * 2**20

RecordSource = Callable[[], Iterable[FeatureRecord]]
"""Gives a shard's records in order, one at a time, each time it is called (a shard may need two passes)."""


def encode_shard(records: Sequence[FeatureRecord], *, fmt: str, dim: int, per_segment: bool,
                 padded: bool = False) -> bytes | list[bytes]:
    """Serialises a shard's records (sorted by the caller); ``padded``: with ``padded_seconds`` (``--pad-short``).

    Returns:
        The file's bytes (parquet, npz; what :func:`write_shard` writes) or the serialised
        ``tf.train.Example`` s (tfrecord).
    """
    if fmt == "tfrecord":
        return [_example(r, per_segment=per_segment, padded=padded) for r in records]
    buffer = io.BytesIO()
    _write_table(buffer, lambda: records, fmt=fmt, dim=dim, per_segment=per_segment, padded=padded)
    return buffer.getvalue()


def write_shard(path: str, records: RecordSource, *, fmt: str, dim: int, per_segment: bool,
                padded: bool = False) -> None:
    """Writes a shard to ``path`` atomically, reading its records one at a time as it writes them.

    A tfrecord file takes one pass over ``records()``, a parquet file one (a row group of at most
    :data:`PARQUET_GROUP_BYTES` of features at a time), an npz file two (the per-track columns first, then
    ``segment_features`` track by track). So a shard holds a track's records at a time (a row group's for
    parquet), whatever ``--tracks-per-shard`` is; the bytes are :func:`encode_shard` 's, except an npz file on
    a filesystem that cannot seek (``gs://``): zipfile then writes each member's sizes after it (data
    descriptors), which every zip reader reads.
    """
    if fmt == "tfrecord":
        beam_io.write_tfrecords(path, (_example(r, per_segment=per_segment, padded=padded) for r in records()))
        return
    with beam_io.created_atomically(path) as handle:
        _write_table(handle, records, fmt=fmt, dim=dim, per_segment=per_segment, padded=padded)


def _example(r: FeatureRecord, *, per_segment: bool, padded: bool) -> bytes:
    """A record as a serialised ``tf.train.Example`` (the same bytes on every run)."""
    pb = example_messages()  # tf.train.Example's messages, without importing TensorFlow in the workers
    feature = {
        "track_id": pb.Feature(bytes_list=pb.BytesList(value=[r.track_id.encode("utf-8")])),
        "path": pb.Feature(bytes_list=pb.BytesList(value=[r.path.encode("utf-8")])),
        "seconds": pb.Feature(float_list=pb.FloatList(value=[r.seconds])),
        "features": pb.Feature(float_list=float_list(r.features)),
        "num_segments": pb.Feature(int64_list=pb.Int64List(value=[r.num_segments])),
    }
    if per_segment and r.segment_features is not None:
        feature["segment_features"] = pb.Feature(float_list=float_list(r.segment_features))
    if padded:
        feature["padded_seconds"] = pb.Feature(float_list=pb.FloatList(value=[r.padded_seconds]))
    return pb.Example(features=pb.Features(feature=feature)).SerializeToString(deterministic=True)


def _write_table(handle: Any, records: RecordSource, *, fmt: str, dim: int, per_segment: bool,
                 padded: bool) -> None:
    """Writes the records as one parquet or npz file to a writable binary ``handle`` (see :func:`write_shard`)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = None
        for group in _groups(records(), PARQUET_GROUP_BYTES):
            table = _parquet_table(group, dim=dim, per_segment=per_segment, padded=padded)
            if writer is None:
                writer = pq.ParquetWriter(handle, table.schema)
            writer.write_table(table)
        if writer is None:  # no track: the columns without rows
            pq.write_table(_parquet_table([], dim=dim, per_segment=per_segment, padded=padded), handle)
        else:
            writer.close()
        return
    tracks, counts = [], []  # the per-track columns (first pass), and each track's rows of segment_features
    for r in records():
        counts.append(len(r.segment_features) if per_segment and r.segment_features is not None else 0)
        tracks.append(dataclasses.replace(r, segment_features=None))
    columns: dict[str, Any] = {
        "track_id": np.array([r.track_id for r in tracks], dtype=str),
        "path": np.array([r.path for r in tracks], dtype=str),
        "seconds": np.array([r.seconds for r in tracks], np.float64),
        "features": np.stack([r.features for r in tracks]) if tracks else np.zeros((0, dim), np.float32),
        "num_segments": np.array([r.num_segments for r in tracks], np.int64),
    }
    # As np.savez writes them (the same bytes), but segment_features a track at a time.
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        def member(name: str, values: np.ndarray) -> None:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member_file:
                np.lib.format.write_array(member_file, np.asanyarray(values), allow_pickle=True)

        for name, values in columns.items():
            member(name, values)
        if per_segment:
            with archive.open("segment_features.npy", "w", force_zip64=True) as member_file:
                np.lib.format.write_array_header_1_0(member_file, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                    "shape": (sum(counts), dim)})
                for r, count in zip(records(), counts, strict=True):
                    rows = r.segment_features if r.segment_features is not None else np.zeros((0, dim), np.float32)
                    if rows.shape != (count, dim):
                        raise DataError(f"{r.track_id}: its segment_features changed from {count} to {len(rows)} "
                                        "rows while its shard was written")
                    member_file.write(np.ascontiguousarray(rows, np.float32).tobytes())
            member("segment_track", np.repeat(np.arange(len(tracks), dtype=np.int64), counts))
        if padded:
            member("padded_seconds", np.array([r.padded_seconds for r in tracks], np.float64))


def _groups(records: Iterable[FeatureRecord], most_bytes: int) -> Iterator[list[FeatureRecord]]:
    """Consecutive records in groups of at most ``most_bytes`` of features (a record more is a group of its own)."""
    group: list[FeatureRecord] = []
    size = 0
    for record in records:
        nbytes = record.features.nbytes + (0 if record.segment_features is None else record.segment_features.nbytes)
        if group and size + nbytes > most_bytes:
            yield group
            group, size = [], 0
        group.append(record)
        size += nbytes
    if group:
        yield group


def _parquet_table(records: Sequence[FeatureRecord], *, dim: int, per_segment: bool, padded: bool) -> Any:
    """The records as a ``pyarrow.Table`` (columns built from the arrays, not from Python lists)."""
    import pyarrow as pa

    def rows(values: np.ndarray) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), dim)

    features = np.stack([r.features for r in records]) if records else np.zeros((0, dim), np.float32)
    columns: dict[str, Any] = {
        "track_id": pa.array([r.track_id for r in records], pa.string()),
        "path": pa.array([r.path for r in records], pa.string()),
        "seconds": pa.array([r.seconds for r in records], pa.float64()),
        "features": rows(features),
        "num_segments": pa.array([r.num_segments for r in records], pa.int32()),
    }
    if per_segment:
        segments = [r.segment_features for r in records if r.segment_features is not None]
        counts = [0 if r.segment_features is None else len(r.segment_features) for r in records]
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        columns["segment_features"] = pa.ListArray.from_arrays(
            offsets, rows(np.concatenate(segments) if segments else np.zeros((0, dim), np.float32)))
    if padded:
        columns["padded_seconds"] = pa.array([r.padded_seconds for r in records], pa.float64())
    return pa.table(columns)


class WriteShard(beam.DoFn):
    """``(shard index, [ok TrackResult, ...])`` → the shard file, from the tracks' ``tracks/<name>.npz`` read one
    at a time (:func:`write_shard`); re-emits the results with the shard among their outputs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[int, Iterable[TrackResult | None]]) -> Iterator[TrackResult]:
        s = self._settings
        index, values = element
        results = sorted((v for v in values if v is not None), key=lambda r: r.track_id)
        name = shard_name(index, s.num_shards, s.common.format or FORMATS[0])
        parts = [s.common.path(s.part_file(r.track)) for r in results]
        write_shard(s.common.path(name), lambda: (read_part(part) for part in parts),
                    fmt=s.common.format or FORMATS[0], dim=s.dim, per_segment=s.per_segment, padded=s.plan.pad_short)
        beam.metrics.Metrics.counter("extract_features", "shards_written").inc()
        for r in results:
            yield dataclasses.replace(r, outputs=(name, *r.outputs))


def build_pipeline(pipeline: beam.Pipeline, tracks: Sequence[TrackInput], settings: Settings) -> None:
    """Adds the job's labelled stages to ``pipeline`` (see the module docstring)."""
    s = settings
    handler = SignatureModelHandler(s.common.model, signature=SIGNATURE, max_batch_size=s.common.batch_size,
                                    outputs=["features"], intra_op_threads=s.common.intra_op_threads,
                                    precision=s.common.precision,
                                    share_across_processes=s.common.share_model, one_example_per_call=True,
                                    model_server=s.common.model_server, example_ranks={"waveform": 1})
    listed = pipeline | "ListTracks" >> ListInputs(tracks, folder=s.common.path(INPUTS_FOLDER))
    spread = listed | "SpreadTracks" >> beam.Reshuffle()
    prepared, decode_failures = guarded(spread, "Decode", PrepareTrack(s), stage="decode", partial=True)
    early = keep(prepared, "EarlyResults", TrackResult)
    examples = keep(prepared, "Examples", tuple)
    ends = keep(prepared, "TrackEnds", TrackEnd)
    predicted, inference_failures = infer(examples, "Features", handler, prebatched=s.common.prebatched)
    stored, store_failures = guarded(predicted, "StoreFeatures", StoreOutputs(s), stage="write")
    failures = (inference_failures, store_failures) | "InferenceOrStoreFailures" >> beam.Flatten()
    parts = (stored, failures, ends) | "PartsByTrack" >> GroupTrackParts()
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

    def scratch_folders(self, settings: Settings) -> tuple[str, ...]:
        """``.inputs/`` and ``.features/`` (the model's outputs, stored until their track is assembled)."""
        return (*super().scratch_folders(settings), settings.outputs_folder)

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
