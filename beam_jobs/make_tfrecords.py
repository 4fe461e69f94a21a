"""Decodes a catalogue of audio files into sharded TFRecords plus ``dataset.json``.

Usage:

    python -m beam_jobs.make_tfrecords --manifest data/mtat/manifest.csv --output data/mtat/tfrecords \\
        --sample-rate 22050 [--segment-length 59049 --max-segments 10] [--shards K] [beam options]

Every file of the manifest (any format :mod:`tfaural.audio` reads, local or on a
Beam filesystem such as ``gs://``) is decoded, mixed to mono, resampled to
``--sample-rate`` and written as one record per track, or one per segment with
``--segment-length`` (schema: tfaural.data.tfrecord). The output folder
receives:

    <split>-SSSSS-of-NNNNN.tfrecord   per split of the manifest ("unsplit" for tracks without one)
    dataset.json                      label vocabulary, sample rate, segmentation, counts per split
    failures.jsonl                    one JSON object per file that could not be used:
                                      path, track_id, split, error (type), reason

Nothing is silently dropped: every manifest track is either in the shards or in
``failures.jsonl`` (the job fails if the counts do not add up), and the counts are
also Beam counters (``make_tfrecords/tracks_written``, ``tracks_failed``, ...).
Shard assignment and order are derived from the track ids, so rerunning on the
same input writes byte-identical shards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.runners.runner import PipelineResult

from beam_jobs import io as beam_io
from beam_jobs.options import (
    CatalogueJobOptions,
    MakeTFRecordsOptions,
    apply_runner_defaults,
    parse_job_args,
    require,
)
from tfaural import __version__, audio
from tfaural.config import SegmentConfig
from tfaural.data.catalogue import Catalogue, Track, read_manifest
from tfaural.data.tfrecord import (
    DATASET_INFO_FILENAME,
    FAILURES_FILENAME,
    SHARD_SUFFIX,
    WHOLE_TRACK,
    DatasetInfo,
    encode_example,
)
from tfaural.errors import AudioError, DataError, ParameterError, TfauralError

__all__ = [
    "UNSPLIT",
    "TRACKS_PER_SHARD",
    "Settings",
    "Failure",
    "EncodedTrack",
    "encode_track",
    "EncodeTrack",
    "build_pipeline",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

UNSPLIT = "unsplit"
"""Shard name of tracks that have no split in the manifest."""

TRACKS_PER_SHARD = 200
"""Default shard size in tracks (~250 MB for 30 s clips at 22,050 Hz int16)."""

_METRICS = "make_tfrecords"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the job does, validated from the command line.

    Attributes:
        manifest: The catalogue manifest.
        output: The output folder.
        sample_rate: Target sample rate in Hz.
        segment: Segmentation, or ``None`` for one record per whole track.
        min_samples: Fewest samples (after resampling) a track needs.
        shards: Shards per split (``None``: one per :data:`TRACKS_PER_SHARD` tracks).
        overwrite: Replace an earlier run's files in ``output``.
    """

    manifest: str
    output: str
    sample_rate: int
    segment: SegmentConfig | None = None
    min_samples: int = 1
    shards: int | None = None
    overwrite: bool = False

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Settings:
        """Validates the job's flags.

        Raises:
            ParameterError: On a missing or invalid flag, naming it.
        """
        common = options.view_as(CatalogueJobOptions)
        job = options.view_as(MakeTFRecordsOptions)
        sample_rate = require(common.sample_rate, "--sample-rate", "the target sample rate in Hz, e.g. 22050")
        if sample_rate <= 0:
            raise ParameterError(f"--sample-rate {sample_rate} is invalid: expected a positive number of Hz")
        segment = None
        if job.segment_length is not None:
            segment = SegmentConfig(length=job.segment_length, hop=job.segment_hop, n_segments=job.max_segments,
                                    pad=job.pad)
        else:
            for flag, value, default in (("--segment-hop", job.segment_hop, None),
                                         ("--max-segments", job.max_segments, None), ("--pad", job.pad, "none")):
                if value != default:
                    raise ParameterError(f"{flag} {value} needs --segment-length (it only applies to segments)")
        if job.min_duration is None or job.min_duration < 0:
            raise ParameterError(f"--min-duration {job.min_duration} is invalid: expected seconds >= 0")
        if job.shards is not None and job.shards < 1:
            raise ParameterError(f"--shards {job.shards} is invalid: expected a positive integer")
        return cls(
            manifest=require(common.manifest, "--manifest", "a manifest file (.csv, .tsv or .jsonl)"),
            output=require(common.output, "--output", "an output folder").rstrip("/") or "/",
            sample_rate=sample_rate,
            segment=segment,
            min_samples=max(1, math.ceil(job.min_duration * sample_rate)),
            shards=job.shards,
            overwrite=bool(common.overwrite),
        )


@dataclasses.dataclass(frozen=True)
class Failure:
    """A manifest track that is not in the shards, and why.

    Attributes:
        path: The audio file.
        track_id: Its track id.
        split: Its split name (``"unsplit"`` when none).
        error: The error type, e.g. ``"AudioDecodeError"``.
        reason: What was wrong.
    """

    path: str
    track_id: str
    split: str
    error: str
    reason: str

    def to_json(self) -> str:
        """One line of ``failures.jsonl``."""
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class EncodedTrack:
    """The serialised records of one track.

    Attributes:
        split: Split name (``"unsplit"`` when none).
        track_id: The track id.
        records: Serialised ``tf.train.Example`` records, in segment order.
        num_samples: Samples stored in the records (all segments together).
    """

    split: str
    track_id: str
    records: tuple[bytes, ...]
    num_samples: int


def split_name(split: str | None) -> str:
    """The shard name of a manifest split (``None`` → :data:`UNSPLIT`)."""
    return split or UNSPLIT


def encode_track(
    track: Track,
    *,
    labels: np.ndarray,
    sample_rate: int,
    segment: SegmentConfig | None,
    min_samples: int = 1,
) -> tuple[tuple[bytes, ...], int]:
    """Decodes, resamples and serialises one track.

    Args:
        track: The track (local path or URI).
        labels: Its multi-hot labels, float32 ``[num_labels]``.
        sample_rate: Target sample rate in Hz.
        segment: Segmentation, or ``None`` for a single whole-track record.
        min_samples: Fewest samples the track needs after resampling.

    Returns:
        ``(records, num_samples)``: the serialised records (one, or one per segment
        in time order) and the number of samples they hold.

    Raises:
        AudioError: The file is missing, unreadable, not audio, empty, too short or
            holds NaN/Inf samples.
    """
    y, _ = beam_io.load_audio(track.path, sample_rate=sample_rate, min_samples=min_samples)
    if segment is None:
        pieces, index = y[np.newaxis], [WHOLE_TRACK]
    else:
        pieces = audio.segment(y, length=segment.length, hop=segment.hop, pad=segment.pad,
                               max_segments=segment.n_segments, source=track.path)
        index = list(range(len(pieces)))
    records = tuple(
        encode_example(audio=piece, sample_rate=sample_rate, track_id=track.track_id, labels=labels,
                       segment_index=i, num_segments=len(pieces), source_path=track.path)
        for i, piece in zip(index, pieces)
    )
    return records, int(pieces.size)


class EncodeTrack(beam.DoFn):
    """Track → :class:`EncodedTrack`, or a :class:`Failure` for audio that cannot be used."""

    def __init__(self, *, label_names: Sequence[str], sample_rate: int, segment: SegmentConfig | None,
                 min_samples: int) -> None:
        self._label_names = tuple(label_names)
        self._sample_rate = sample_rate
        self._segment = segment
        self._min_samples = min_samples

    def setup(self) -> None:
        self._index = {name: i for i, name in enumerate(self._label_names)}
        self._written = beam.metrics.Metrics.counter(_METRICS, "tracks_written")
        self._failed = beam.metrics.Metrics.counter(_METRICS, "tracks_failed")
        self._records = beam.metrics.Metrics.counter(_METRICS, "records")

    def process(self, track: Track) -> Iterator[EncodedTrack | Failure]:
        labels = np.zeros(len(self._label_names), np.float32)
        for label in track.labels:
            labels[self._index[label]] = 1.0
        split = split_name(track.split)
        try:
            records, num_samples = encode_track(track, labels=labels, sample_rate=self._sample_rate,
                                                segment=self._segment, min_samples=self._min_samples)
        except AudioError as err:
            self._failed.inc()
            yield Failure(path=track.path, track_id=track.track_id, split=split, error=type(err).__name__,
                          reason=err.reason)
            return
        except TfauralError as err:
            self._failed.inc()
            yield Failure(path=track.path, track_id=track.track_id, split=split, error=type(err).__name__,
                          reason=str(err))
            return
        self._written.inc()
        self._records.inc(len(records))
        yield EncodedTrack(split=split, track_id=track.track_id, records=records, num_samples=num_samples)


def _unexpected_failure(bad: tuple[Track, tuple[Any, str, Any]]) -> Failure:
    """A dead letter of ``with_exception_handling`` (an exception we did not anticipate) as a Failure."""
    track, (error_type, error_repr, _traceback) = bad
    name = getattr(error_type, "__name__", str(error_type))
    logger.error("%s: unexpected %s while encoding: %s", track.path, name, error_repr)
    beam.metrics.Metrics.counter(_METRICS, "tracks_failed_unexpectedly").inc()
    return Failure(path=track.path, track_id=track.track_id, split=split_name(track.split), error=name,
                   reason=f"unexpected error: {error_repr}")


def _write_failures(failures: list[Failure], *, path: str) -> int:
    lines = [f.to_json() + "\n" for f in sorted(failures, key=lambda f: (f.split, f.track_id))]
    beam_io.write_text(path, "".join(lines))
    return len(lines)


def _write_dataset_info(
    stats: list[tuple[str, beam_io.ShardStats]],
    failures: list[Failure],
    samples: dict[str, int],
    *,
    catalogue_counts: dict[str, int],
    label_names: tuple[str, ...],
    multi_label: bool,
    settings: Settings,
) -> DatasetInfo:
    splits: dict[str, dict[str, int]] = {}
    for split, expected in catalogue_counts.items():
        shard_stats = [s for name, s in stats if name == split]
        counts = {
            "manifest_tracks": expected,
            "tracks": sum(s.num_keys for s in shard_stats),
            "records": sum(s.num_records for s in shard_stats),
            "failed": sum(1 for f in failures if f.split == split),
            "shards": len(shard_stats),
            "samples": int(samples.get(split, 0)),
            "bytes": sum(s.num_bytes for s in shard_stats),
        }
        if counts["tracks"] + counts["failed"] != expected:
            raise DataError(f"split {split!r}: {counts['tracks']} tracks written + {counts['failed']} failed != "
                            f"{expected} tracks in the manifest; refusing to write an incomplete dataset.json")
        splits[split] = counts
    segment = settings.segment
    info = DatasetInfo(
        sample_rate=settings.sample_rate,
        label_names=label_names,
        multi_label=multi_label,
        segment_length=segment.length if segment else None,
        segment_hop=segment.hop if segment else None,
        max_segments=segment.n_segments if segment else None,
        pad=segment.pad if segment else "none",
        max_segments_per_track=max([s.max_records_per_key for _, s in stats] + [1]),
        splits=splits,
        manifest=settings.manifest,
        created_by=f"beam_jobs.make_tfrecords (tfaural {__version__})",
    )
    beam_io.write_text(beam_io.join(settings.output, DATASET_INFO_FILENAME), info.to_json(indent=2) + "\n")
    return info


def _shards_for(n_tracks: int, settings: Settings) -> int:
    return settings.shards if settings.shards is not None else max(1, math.ceil(n_tracks / TRACKS_PER_SHARD))


def build_pipeline(pipeline: beam.Pipeline, catalogue: Catalogue, settings: Settings) -> None:
    """Adds the job's transforms to ``pipeline`` (labelled stages; see the module docstring).

    Args:
        pipeline: The pipeline to extend.
        catalogue: The tracks to encode.
        settings: Validated job settings.
    """
    counts: dict[str, int] = {}
    for track in catalogue:
        counts[split_name(track.split)] = counts.get(split_name(track.split), 0) + 1
    splits = list(counts)
    encoded, unexpected = (
        pipeline
        | "ReadManifest" >> beam.Create(list(catalogue.tracks))
        | "SpreadTracks" >> beam.Reshuffle()
        | "DecodeAndEncode" >> beam.ParDo(EncodeTrack(
            label_names=catalogue.label_names, sample_rate=settings.sample_rate, segment=settings.segment,
            min_samples=settings.min_samples,
        )).with_exception_handling()
    )
    records, expected_failures = encoded | "SeparateFailures" >> beam.Partition(
        lambda e, _: 1 if isinstance(e, Failure) else 0, 2
    )
    failures = (
        (expected_failures, unexpected | "DescribeUnexpected" >> beam.Map(_unexpected_failure))
        | "AllFailures" >> beam.Flatten()
    )
    failure_list = failures | "CollectFailures" >> beam.combiners.ToList()
    _ = failure_list | "WriteFailures" >> beam.Map(
        _write_failures, path=beam_io.join(settings.output, FAILURES_FILENAME)
    )
    samples = (
        records
        | "SamplesBySplit" >> beam.Map(lambda e: (e.split, e.num_samples))
        | "SumSamples" >> beam.CombinePerKey(sum)
    )
    per_split = records | "BySplit" >> beam.Partition(lambda e, _: splits.index(e.split), len(splits))
    stats = []
    for split, split_records in zip(splits, per_split):
        stats.append(
            split_records
            | f"KeyByTrack[{split}]" >> beam.Map(lambda e: (e.track_id, e.records))
            | f"WriteShards[{split}]" >> beam_io.WriteShardedTFRecords(
                beam_io.join(settings.output, split), num_shards=_shards_for(counts[split], settings),
                suffix=SHARD_SUFFIX,
            )
            | f"TagSplit[{split}]" >> beam.Map(lambda s, name=split: (name, s))
        )
    _ = (
        stats
        | "AllShardStats" >> beam.Flatten()
        | "CollectShardStats" >> beam.combiners.ToList()
        | "WriteDatasetJson" >> beam.Map(
            _write_dataset_info,
            beam.pvalue.AsSingleton(failure_list),
            beam.pvalue.AsDict(samples),
            catalogue_counts=counts,
            label_names=catalogue.label_names,
            multi_label=catalogue.multi_label,
            settings=settings,
        )
    )


def _prepare_output(settings: Settings) -> None:
    patterns = [beam_io.join(settings.output, f"*{SHARD_SUFFIX}"),
                beam_io.join(settings.output, DATASET_INFO_FILENAME),
                beam_io.join(settings.output, FAILURES_FILENAME)]
    if settings.overwrite:
        deleted = beam_io.delete_matching(patterns)
        if deleted:
            logger.info("--overwrite: deleted %d file(s) of an earlier run in %s", len(deleted), settings.output)
        return
    existing = [m.path for r in beam.io.filesystems.FileSystems.match(patterns) for m in r.metadata_list]
    if existing:
        raise ParameterError(f"--output {settings.output} already holds a dataset ({sorted(existing)[0]}, ...); "
                             "pass --overwrite to replace it or choose another folder")


def run(
    argv: Sequence[str] | None = None,
    save_main_session: bool = True,
    test_pipeline: beam.Pipeline | None = None,
) -> PipelineResult:
    """Runs the job and waits for it to finish.

    Args:
        argv: Command-line arguments (job flags and Beam flags); ``None``: ``sys.argv[1:]``.
        save_main_session: Pickle the main module's globals for remote workers.
        test_pipeline: A pipeline to use instead of creating one (tests).

    Returns:
        The finished ``PipelineResult`` (its metrics hold the counters).

    Raises:
        TfauralError: On invalid flags, an unreadable or invalid manifest, or an
            output folder that already holds a dataset (without ``--overwrite``).
    """
    options = parse_job_args(
        argv, prog="python -m beam_jobs.make_tfrecords", description=__doc__,
        option_classes=[CatalogueJobOptions, MakeTFRecordsOptions],
    )
    settings = Settings.from_options(options)
    options.view_as(SetupOptions).save_main_session = save_main_session
    catalogue = read_manifest(settings.manifest, check_files=False)  # missing files go to failures.jsonl
    if test_pipeline is None:
        for note in apply_runner_defaults(options, num_items=len(catalogue)):  # every core, like the other jobs
            logger.info("make_tfrecords: %s", note)
    _prepare_output(settings)
    logger.info("make_tfrecords: %d tracks of %s -> %s at %d Hz", len(catalogue), settings.manifest, settings.output,
                settings.sample_rate)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    build_pipeline(pipeline, catalogue, settings)
    result = pipeline.run()
    result.wait_until_finish()
    info = DatasetInfo.read(beam_io.join(settings.output, DATASET_INFO_FILENAME))
    logger.info("make_tfrecords: wrote %d records of %d tracks; %d track(s) failed (see %s)", info.total("records"),
                info.total("tracks"), info.total("failed"), beam_io.join(settings.output, FAILURES_FILENAME))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2 on a usage or data error)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # worker chatter; our own logger stays at INFO
    try:
        run(argv)
    except TfauralError as err:
        print(f"make_tfrecords: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run the importable module, not __main__: Beam pickles the DoFns and element classes by
    # module path, and worker processes can import beam_jobs.make_tfrecords but not this __main__.
    from beam_jobs import make_tfrecords

    sys.exit(make_tfrecords.main())
