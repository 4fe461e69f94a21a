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
    failures.jsonl                    one JSON object per file that could not be used (corrupt, too short,
                                      silent, ...):
                                      path, track_id, split, error (type), reason

Nothing is silently dropped: every manifest track is either in the shards or in
``failures.jsonl`` (the job fails if the counts do not add up), and the counts are
also Beam counters (``make_tfrecords/tracks_written``, ``tracks_failed``, ...).
Shard assignment and order are derived from the track ids, so rerunning on the
same input writes byte-identical shards.

Memory grows neither with the length of a track nor with the size of the catalogue.
Each file is decoded, resampled and quantised in blocks of 10 s (bit-identical to
decoding it whole); the int16 PCM of its records goes to an anonymous temporary file
(local disk: 2 bytes per stored sample), from which the records are serialised one at
a time, straight into the track's part file in ``OUTPUT/.parts/`` (a whole-track
record streams there without ever being whole in memory: a 3-hour record at 22,050 Hz
is ~480 MB). Records never travel through the pipeline: only a reference to each
track's part file does (a grouping of the records themselves is held in memory by the
local runner, the whole catalogue at once), and each shard copies its tracks' parts
block by block, then deletes them. So the job needs, while it runs, local disk for the
parts besides the shards (the parts of the shards not yet written). With
``--max-segments`` decoding stops once the segments are in.

While it runs, the launcher counts the tracks encoded (their part files; at the end,
``dataset.json``'s count) for a local output folder: a bar on a terminal, else a log
line every 30 s (:mod:`beam_jobs.progress`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from beam_jobs import io as beam_io
from beam_jobs.job import Job, Timings
from beam_jobs.options import (
    CatalogueJobOptions,
    MakeTFRecordsOptions,
    require,
)
from beam_jobs.progress import TrackProgress
from beam_jobs.tracks import INPUTS_FOLDER, ListInputs
from tfaural import __version__, audio
from tfaural.cli import check_output_folder
from tfaural.config import SegmentConfig
from tfaural.data.catalogue import Catalogue, Track, read_manifest
from tfaural.data.tfrecord import (
    DATASET_INFO_FILENAME,
    FAILURES_FILENAME,
    SHARD_SUFFIX,
    ClipCounter,
    DatasetInfo,
    encode_example,
    quantize,
    stream_example,
)
from tfaural.errors import AudioError, DataError, EmptyAudioError, ParameterError, TfauralError

__all__ = [
    "UNSPLIT",
    "TRACKS_PER_SHARD",
    "BLOCK_SECONDS",
    "PARTS_FOLDER",
    "Settings",
    "Failure",
    "EncodedTrack",
    "Segmenter",
    "encode_track",
    "EncodeTrack",
    "build_pipeline",
    "MakeTFRecordsJob",
    "JOB",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

UNSPLIT = "unsplit"
"""Shard name of tracks that have no split in the manifest."""

TRACKS_PER_SHARD = 200
"""Default shard size in tracks (~250 MB for 30 s clips at 22,050 Hz int16)."""
FAILURES_SHOWN = 5
"""Failed tracks named in the end-of-run summary (as the other jobs do; every one is in ``failures.jsonl``)."""

BLOCK_SECONDS = 10.0
"""Tracks are decoded and resampled in blocks this long (bit-identical to decoding them whole)."""

PARTS_FOLDER = ".parts"
"""Folder of the output holding the tracks' part files while the job runs (deleted as they are copied)."""

_READ_BYTES = 1 << 20

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
        spill_bytes: Record bytes of a track that may travel through the pipeline in memory instead of its part
            file: 0 (every track's records go through a part file; tests give more, to mix the two).
    """

    manifest: str
    output: str
    sample_rate: int
    segment: SegmentConfig | None = None
    min_samples: int = 1
    shards: int | None = None
    overwrite: bool = False
    spill_bytes: int = 0

    @property
    def parts_folder(self) -> str:
        """Where the tracks' records wait for their shard."""
        return beam_io.join(self.output, PARTS_FOLDER)

    def part_file(self, track: Track) -> str:
        """The part file of ``track``'s records: ``.parts/<split>-<SHA-1 of the track id>.tfrecord``."""
        return part_path(self.parts_folder, split=split_name(track.split), track_id=track.track_id)

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
            output=check_output_folder(require(common.output, "--output", "an output folder").rstrip("/") or "/",
                                       remote=True),
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
        records: The part file holding the serialised ``tf.train.Example`` records (framed), in segment
            order; or the records themselves when they are at most ``Settings.spill_bytes``.
        num_samples: Samples stored in the records (all segments together).
    """

    split: str
    track_id: str
    records: tuple[bytes, ...] | beam_io.RecordFile
    num_samples: int

    @property
    def num_records(self) -> int:
        """Number of records."""
        return self.records.num_records if isinstance(self.records, beam_io.RecordFile) else len(self.records)


def split_name(split: str | None) -> str:
    """The shard name of a manifest split (``None`` → :data:`UNSPLIT`)."""
    return split or UNSPLIT


def part_path(parts_folder: str, *, split: str, track_id: str) -> str:
    """The part file of a track's records in ``parts_folder``: ``<split>-<SHA-1 of the track id>.tfrecord``."""
    name = hashlib.sha1(track_id.encode("utf-8")).hexdigest()
    return beam_io.join(parts_folder, f"{split}-{name}{SHARD_SUFFIX}")


class Segmenter:
    """Cuts a waveform that arrives block by block into the segments :func:`tfaural.audio.segment` cuts.

    ``feed`` each block in order, then ``finish`` with nothing left to feed; the segments
    come out in order, each as soon as its samples (or, at the end, its padding) are in, and
    together they equal ``audio.segment(whole, length=..., hop=..., pad=..., max_segments=...)``.
    At most one segment plus one block are held (and, for ``pad="wrap"``, the track's first
    ``max(length, hop)`` samples, which the padding repeats).

    Args:
        length: Segment length in samples.
        hop: Hop between segment starts (``None``: ``length``).
        pad: ``"none"``, ``"constant"`` or ``"wrap"`` (see :func:`tfaural.audio.segment`).
        max_segments: Most segments (``None``: all).
        source: Name of the audio, for errors.
    """

    def __init__(self, *, length: int, hop: int | None, pad: str, max_segments: int | None, source: str) -> None:
        self.length, self.step, self.pad = length, hop or length, pad
        self.cap = max_segments
        self.source = source
        self.total = 0  # samples fed
        self.emitted = 0  # segments given out
        self._start = 0  # absolute index of self._buffer[0]
        self._buffer: np.ndarray | None = None
        self._head: np.ndarray | None = None

    @property
    def full(self) -> bool:
        """``max_segments`` segments are out: the rest of the waveform does not matter."""
        return self.cap is not None and self.emitted >= self.cap

    def feed(self, block: np.ndarray) -> Iterator[np.ndarray]:
        """Takes the next block; yields the segments it completes."""
        if self.pad == "wrap":
            keep = max(self.length, self.step)
            if self._head is None or len(self._head) < keep:
                self._head = block[:keep] if self._head is None else np.concatenate([self._head, block])[:keep]
        self._buffer = block if self._buffer is None else np.concatenate([self._buffer, block])
        self.total += len(block)
        while not self.full:
            begin = self.emitted * self.step - self._start
            if begin + self.length > len(self._buffer):
                break
            yield self._buffer[begin : begin + self.length].copy()
            self.emitted += 1
        drop = min(len(self._buffer), max(0, self.emitted * self.step - self._start))
        self._buffer, self._start = self._buffer[drop:], self._start + drop

    def finish(self) -> Iterator[np.ndarray]:
        """Yields the last segments (padded ones) once the whole waveform was fed.

        Raises:
            EmptyAudioError: With ``pad="none"``, a waveform shorter than one segment.
        """
        n = self.total
        count = audio.n_segments(n, length=self.length, hop=self.step, pad=self.pad)
        if count == 0:
            raise EmptyAudioError(self.source, f"too short: {n} samples, need at least one segment of "
                                               f"{self.length} samples")
        count = count if self.cap is None else min(count, self.cap)
        buffer = self._buffer if self._buffer is not None else np.zeros(0, np.float32)
        for index in range(self.emitted, count):
            begin = index * self.step - self._start
            piece = buffer[max(0, begin) : begin + self.length]
            missing = self.length - len(piece)
            if missing > 0:
                past = max(0, index * self.step - n)  # samples of padding before this segment starts
                if self.pad == "wrap":
                    assert self._head is not None
                    cycle = self._head[: min(n, len(self._head))]
                    fill = np.resize(cycle, past + missing)[past:]
                else:
                    fill = np.zeros(missing, buffer.dtype)
                piece = np.concatenate([piece, fill.astype(buffer.dtype)])
            yield piece
            self.emitted += 1


def encode_track(
    track: Track,
    *,
    labels: np.ndarray,
    sample_rate: int,
    segment: SegmentConfig | None,
    min_samples: int = 1,
    part_path: str | None = None,
    spill_bytes: int = 0,
) -> tuple[tuple[bytes, ...] | beam_io.RecordFile, int]:
    """Decodes, resamples and serialises one track, block by block.

    The file is decoded and resampled in blocks of :data:`BLOCK_SECONDS` (bit-identical
    to decoding it whole) and quantised to int16 as it comes; the PCM of the records
    (the segments, or the whole track) goes to an anonymous temporary file, never to
    memory, and the records are serialised from there one at a time once their count is
    known. Records of more than ``spill_bytes`` in all are written to ``part_path`` (a
    whole-track record is streamed there without ever being whole in memory) instead of
    being returned. With ``segment.n_segments``, decoding stops as soon as that many
    segments (and ``min_samples`` samples) are in: the rest of the file is not read.

    Args:
        track: The track (local path or URI).
        labels: Its multi-hot labels, float32 ``[num_labels]``.
        sample_rate: Target sample rate in Hz.
        segment: Segmentation, or ``None`` for a single whole-track record.
        min_samples: Fewest samples the track needs after resampling.
        part_path: Where records that do not fit in ``spill_bytes`` go (``None``: always returned).
        spill_bytes: Most record bytes returned in memory when ``part_path`` is given.

    Returns:
        ``(records, num_samples)``: the serialised records (one, or one per segment in
        time order), or the :class:`~beam_jobs.io.RecordFile` holding them, and the number
        of samples they hold.

    Raises:
        AudioError: The file is missing, unreadable, not audio, empty, too short or
            holds NaN/Inf samples (also when found halfway: nothing is returned then).
    """
    limit = spill_bytes if part_path is not None else float("inf")
    sink = beam_io.RecordSink(part_path or "", spill_bytes=int(min(limit, 2**62)))
    try:
        with tempfile.TemporaryFile(prefix="tfaural-pcm-") as spool:
            if segment is None:
                n = _spool_whole(track, spool, sample_rate=sample_rate, min_samples=min_samples)
                spool.seek(0)
                length, pieces = stream_example(
                    num_samples=n, pcm=iter(lambda: spool.read(_READ_BYTES), b""), sample_rate=sample_rate,
                    track_id=track.track_id, labels=labels, source_path=track.path)
                sink.add_stream(length, pieces)
                num_samples = n
            else:
                count = _spool_segments(track, spool, segment, sample_rate=sample_rate, min_samples=min_samples)
                spool.seek(0)
                for index in range(count):
                    pcm = np.frombuffer(spool.read(2 * segment.length), "<i2").astype(np.int16)
                    sink.add(encode_example(audio=pcm, sample_rate=sample_rate, track_id=track.track_id,
                                            labels=labels, segment_index=index, num_segments=count,
                                            source_path=track.path))
                num_samples = count * segment.length
        return sink.finish(), num_samples
    except BaseException:
        sink.abort()
        raise


def _blocks(track: Track, *, sample_rate: int) -> Iterator[np.ndarray]:
    return beam_io.iter_audio_blocks(track.path, sample_rate=sample_rate, block_seconds=BLOCK_SECONDS)


def _too_short(track: Track, n: int, *, sample_rate: int, min_samples: int) -> None:
    if n < min_samples:  # as tfaural.audio.load says it; more than one sample only by --min-duration
        raise audio.too_short(track.path, samples=n, sample_rate=sample_rate, needed=min_samples,
                              why="--min-duration" if min_samples > 1 else "")


def _not_silent(track: Track, peak: float) -> None:
    if audio.is_silent(peak):  # a silent example teaches its labels nothing
        raise audio.silent(track.path, peak=peak)


def _spool_whole(track: Track, spool: IO[bytes], *, sample_rate: int, min_samples: int) -> int:
    """Writes the track's int16 PCM to ``spool``; returns its number of samples."""
    n, clipping = 0, ClipCounter()  # and the peak
    for block in _blocks(track, sample_rate=sample_rate):
        spool.write(quantize(clipping.count(block)).astype("<i2", copy=False).tobytes())
        n += len(block)
    _too_short(track, n, sample_rate=sample_rate, min_samples=min_samples)
    _not_silent(track, clipping.peak)
    clipping.check(track.path)
    return n


def _spool_segments(track: Track, spool: IO[bytes], segment: SegmentConfig, *, sample_rate: int,
                    min_samples: int) -> int:
    """Writes the int16 PCM of the track's segments to ``spool``, one after another; returns how many."""
    cutter = Segmenter(length=segment.length, hop=segment.hop, pad=segment.pad, max_segments=segment.n_segments,
                       source=track.path)
    blocks = _blocks(track, sample_rate=sample_rate)
    clipping = ClipCounter()  # and the peak
    try:
        for block in blocks:
            for piece in cutter.feed(quantize(clipping.count(block))):
                spool.write(piece.astype("<i2", copy=False).tobytes())
            if cutter.full and cutter.total >= min_samples:
                break  # the first max_segments segments are in: the rest of the file does not matter
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()  # closes the file now, not when the generator is collected
    _too_short(track, cutter.total, sample_rate=sample_rate, min_samples=min_samples)
    _not_silent(track, clipping.peak)
    clipping.check(track.path)
    for piece in cutter.finish():
        spool.write(piece.astype("<i2", copy=False).tobytes())
    return cutter.emitted


class EncodeTrack(beam.DoFn):
    """Track → :class:`EncodedTrack`, or a :class:`Failure` for audio that cannot be used.

    A track's records are written to its part file in ``parts_folder`` (which the shard
    writer copies and deletes) instead of travelling through the pipeline in memory
    (beyond ``spill_bytes``: 0 in the job).
    """

    def __init__(self, *, label_names: Sequence[str], sample_rate: int, segment: SegmentConfig | None,
                 min_samples: int, parts_folder: str | None = None, spill_bytes: int = 0) -> None:
        self._label_names = tuple(label_names)
        self._sample_rate = sample_rate
        self._segment = segment
        self._min_samples = min_samples
        self._parts_folder = parts_folder
        self._spill_bytes = spill_bytes

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
        part = None
        if self._parts_folder is not None:
            part = part_path(self._parts_folder, split=split, track_id=track.track_id)
        try:
            records, num_samples = encode_track(track, labels=labels, sample_rate=self._sample_rate,
                                                segment=self._segment, min_samples=self._min_samples,
                                                part_path=part, spill_bytes=self._spill_bytes)
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
        encoded = EncodedTrack(split=split, track_id=track.track_id, records=records, num_samples=num_samples)
        self._written.inc()
        self._records.inc(encoded.num_records)
        yield encoded


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
        | "ReadManifest" >> ListInputs(catalogue.tracks, folder=beam_io.join(settings.output, INPUTS_FOLDER))
        | "SpreadTracks" >> beam.Reshuffle()
        | "DecodeAndEncode" >> beam.ParDo(EncodeTrack(
            label_names=catalogue.label_names, sample_rate=settings.sample_rate, segment=settings.segment,
            min_samples=settings.min_samples, parts_folder=settings.parts_folder, spill_bytes=settings.spill_bytes,
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


class MakeTFRecordsJob(Job):
    """``python -m beam_jobs.make_tfrecords``: see the module docstring."""

    name = "make_tfrecords"
    option_classes = (CatalogueJobOptions, MakeTFRecordsOptions)
    save_main_session = True

    def settings(self, options: PipelineOptions) -> Settings:
        """See :meth:`Settings.from_options`."""
        return Settings.from_options(options)

    def inputs(self, settings: Settings) -> Catalogue:
        """The manifest's tracks (missing files go to ``failures.jsonl``).

        Raises:
            DataError: If the manifest is unreadable or invalid.
        """
        return read_manifest(settings.manifest, check_files=False, read_text=beam_io.read_text)

    def prepare(self, settings: Settings, inputs: Catalogue) -> None:
        """Refuses an earlier dataset without ``--overwrite``; deletes it with it."""
        folder = beam_io.escape(settings.output)
        patterns = [beam_io.join(folder, f"*{SHARD_SUFFIX}"), beam_io.join(folder, DATASET_INFO_FILENAME),
                    beam_io.join(folder, FAILURES_FILENAME)]
        if settings.overwrite:
            deleted = beam_io.delete_matching(patterns)
            if deleted:
                logger.info("--overwrite: deleted %d file(s) of an earlier run in %s", len(deleted), settings.output)
        else:
            existing = [path for pattern in patterns for path in beam_io.list_files(pattern)]
            if existing:
                raise ParameterError(f"--output {settings.output} already holds a dataset ({sorted(existing)[0]}, "
                                     "...); pass --overwrite to replace it or choose another folder")
        logger.info("make_tfrecords: %d tracks of %s -> %s at %d Hz", len(inputs), settings.manifest,
                    settings.output, settings.sample_rate)

    def progress(self, settings: Settings, inputs: Catalogue) -> contextlib.AbstractContextManager[Any]:
        """The count of tracks encoded, from their part files (:mod:`beam_jobs.progress`; a local output folder
        only). A part is deleted once its shard is written, perhaps before a look sees it: the final count is
        ``dataset.json``'s."""
        if not beam_io.is_local(settings.output):
            return contextlib.nullcontext()

        def tracks_written() -> int:
            path = beam_io.join(settings.output, DATASET_INFO_FILENAME)
            return DatasetInfo.from_text(beam_io.read_text(path), path).total("tracks")

        return TrackProgress(self.name, [settings.part_file(track) for track in inputs], keep_existing=False,
                             final_count=tracks_written)

    def scratch_folders(self, settings: Settings) -> tuple[str, ...]:
        """``.inputs/`` (:class:`beam_jobs.tracks.ListInputs`) and ``.parts/`` (each track's records until its
        shard is written; what a failed shard write left too)."""
        return (beam_io.join(settings.output, INPUTS_FOLDER), settings.parts_folder)

    def build(self, pipeline: beam.Pipeline, inputs: Catalogue, settings: Settings) -> None:
        """See :func:`build_pipeline`."""
        build_pipeline(pipeline, inputs, settings)

    def finish(self, settings: Settings, result: PipelineResult, timings: Timings) -> None:
        """Logs the numbers of records, tracks and failures."""
        path = beam_io.join(settings.output, DATASET_INFO_FILENAME)
        info = DatasetInfo.from_text(beam_io.read_text(path), path)  # Beam's filesystems: no TensorFlow here
        failures = beam_io.join(settings.output, FAILURES_FILENAME)
        logger.info("make_tfrecords: wrote %d records of %d tracks; %d track(s) failed (see %s)",
                    info.total("records"), info.total("tracks"), info.total("failed"), failures)
        shown = 0
        if info.total("failed") and beam_io.exists(failures):
            with beam_io.open_text(failures) as lines:
                for line in itertools.islice(lines, FAILURES_SHOWN):
                    row = json.loads(line)
                    logger.info("  %s: %s", row.get("path"), row.get("reason"))
                    shown += 1
        if info.total("failed") > shown:
            logger.info("  ... and %d more in %s", info.total("failed") - shown, failures)
        if info.total("failed") and not info.total("tracks"):
            self.nothing_done = f"every one of the {info.total('failed')} track(s) failed (listed in {failures})"


JOB = MakeTFRecordsJob()

run = JOB.run  # run(argv, save_main_session=None, test_pipeline=None): see Job.run
main = JOB.main  # main(argv) -> exit status: see Job.main


if __name__ == "__main__":
    # Run the importable module, not __main__: Beam pickles the DoFns and element classes by
    # module path, and worker processes can import beam_jobs.make_tfrecords but not this __main__.
    from beam_jobs import make_tfrecords
    from tfaural.cli import exit_promptly

    exit_promptly(make_tfrecords.main())
