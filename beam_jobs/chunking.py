"""Whole tracks in bounded memory: decode block by block, cut into chunks of whole model segments, recombine.

``tag`` and ``extract_features`` analyse every model segment of a track, however
long the track is, without ever holding the whole track in memory and without
sending an input longer than the export accepts (its ``max_seconds``):

1. **Decode** (:func:`stream_examples`): the file is decoded, mixed to mono and
   resampled block by block (:func:`beam_jobs.io.iter_audio_blocks`, streaming
   soxr), and the samples are regrouped into *chunks* of at most ``K`` whole model
   segments (:class:`ChunkPlan`; ``K`` from ``--chunk-seconds``, 30 s by default).
   Chunk ``i`` holds segments ``iK .. iK + K - 1`` of the track: exactly the windows
   the signature would cut from the whole track (start ``j * hop``, length
   ``segment_length``), so consecutive chunks overlap by ``length - hop`` samples
   when segments overlap. The trailing partial segment is dropped, as the
   signatures do; with ``--cover-end`` (:attr:`ChunkPlan.cover_end`) one more segment,
   ending at the track's end, is sent as a chunk of its own when the whole segments
   leave samples after the last of them unheard. A track shorter than one segment
   fails as too short, or with ``--pad-short`` is zero-padded to one segment (its :class:`TrackEnd` says how
   much: ``padded_seconds``); a silent track (peak at most −120 dBFS,
   :data:`tfaural.audio.SILENCE_PEAK`) fails once its end shows it. Each chunk is
   emitted as soon as it is complete, as one
   RunInference example ``(PartKey, {"waveform": float32 [samples]})`` (the decode
   stage runs with ``guarded(..., partial=True)``: Beam's default exception handling
   would hold all outputs of a track until its last one); after the last chunk
   comes a :class:`TrackEnd` with the track's totals.
2. **Infer**: RunInference calls the signature on the chunks, one chunk per call
   (``one_example_per_call`` of the handler: a chunk's outputs never depend on which
   other chunks RunInference batched it with, so reruns are byte-identical), so a call
   holds at most one chunk of audio. The model's memory grows with the audio of a call,
   so this bounds the peak whatever the track's length.
3. **Recombine** (:class:`GroupTrackParts`, :func:`collect_parts`): the chunks'
   outputs, the :class:`TrackEnd` and any failure are grouped by track; the job
   combines the per-chunk outputs exactly (:func:`weighted_mean`,
   :func:`combine_pooled`): a mean over all segments of the track is the mean of
   the chunk means weighted by their numbers of segments, a maximum is the maximum
   of the chunk maxima.

A file that stops decoding halfway (truncated or corrupt), or is silent to its end, yields a failed
:class:`~beam_jobs.tracks.TrackResult` instead of a :class:`TrackEnd`; the
chunks already sent are then discarded by :func:`collect_parts` (no
:class:`TrackEnd`: nothing of the track is written) and the track is listed as
failed. Peak memory is the model plus the activations of one chunk, and a few
chunks of audio per track being decoded, whatever the track's length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.typehints.decorators import no_annotations

from beam_jobs import io as beam_io
from beam_jobs.failures import failed_result
from beam_jobs.inference import InferenceFailure
from beam_jobs.options import DEFAULT_CHUNK_SECONDS
from beam_jobs.tracks import TrackInput, TrackResult
from tfaural.audio import is_silent, silent, too_short
from tfaural.errors import AudioError, ModelError, ParameterError
from tfaural.formats import FAILED, ExportMetadata

__all__ = [
    "CHUNK",
    "SEGMENTS",
    "DEFAULT_CHUNK_SECONDS",
    "ChunkPlan",
    "Chunk",
    "PartKey",
    "TrackEnd",
    "TrackParts",
    "whole_segments",
    "chunk_blocks",
    "decode_chunks",
    "stream_examples",
    "GroupTrackParts",
    "collect_parts",
    "weighted_mean",
    "combine_pooled",
]

CHUNK = "chunk"
SEGMENTS = "segments"


def whole_segments(n_samples: int, *, length: int, hop: int) -> int:
    """Samples covered by the whole segments of an ``n_samples`` input (``0`` if shorter than one)."""
    if n_samples < length:
        return 0
    return length + (n_samples - length) // hop * hop


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """How a track is cut into chunks of whole model segments.

    Attributes:
        sample_rate: The model's sample rate in Hz.
        segment_length: Model segment length in samples.
        segment_hop: Hop between segment starts in samples.
        max_segments: Most segments per chunk (``K``).
        pad_short: Zero-pad a track shorter than one segment to one segment (``--pad-short``), instead of
            refusing it as too short.
        cover_end: When the whole segments end before the track does, also analyse the segment that ends at
            the track's end (``--cover-end``): the last ``segment_length`` samples, overlapping the segment
            before it. It counts as one more segment of the track.
        max_request_samples: Most samples of one call in all (the export's ``max_request_samples``), which
            bounds a batch of segments (:attr:`max_segment_batch`); ``None``: no bound beyond a chunk's.
    """

    sample_rate: int
    segment_length: int
    segment_hop: int
    max_segments: int
    pad_short: bool = False
    cover_end: bool = False
    max_request_samples: int | None = None

    @classmethod
    def from_seconds(
        cls,
        chunk_seconds: float,
        *,
        sample_rate: int,
        segment_length: int,
        segment_hop: int,
        max_samples: int,
        pad_short: bool = False,
        cover_end: bool = False,
        max_request_samples: int | None = None,
    ) -> ChunkPlan:
        """The plan whose chunks are at most ``chunk_seconds`` long (and at least one segment).

        Args:
            chunk_seconds: ``--chunk-seconds``: longest chunk in seconds.
            sample_rate: The model's sample rate in Hz.
            segment_length: Model segment length in samples.
            segment_hop: Hop between segment starts in samples.
            max_samples: Longest input the export accepts, in samples.
            pad_short: Zero-pad a track shorter than one segment to one segment.
            cover_end: Also analyse the segment that ends at the track's end.
            max_request_samples: Most samples of one call in all (``None``: no such bound).

        Raises:
            ParameterError: If ``chunk_seconds`` is not positive or longer than the export accepts.
        """
        if not chunk_seconds > 0:
            raise ParameterError(f"--chunk-seconds {chunk_seconds} is invalid: expected a positive number of seconds")
        samples = int(round(chunk_seconds * sample_rate))
        if samples > max_samples:
            raise ParameterError(f"--chunk-seconds {chunk_seconds:g} is longer than the export accepts "
                                 f"({max_samples / sample_rate:g} s, its max_seconds); choose a shorter chunk")
        segments = 1 if samples < segment_length else 1 + (samples - segment_length) // segment_hop
        return cls(sample_rate=sample_rate, segment_length=segment_length, segment_hop=segment_hop,
                   max_segments=segments, pad_short=bool(pad_short), cover_end=bool(cover_end),
                   max_request_samples=max_request_samples)

    @classmethod
    def for_export(cls, metadata: ExportMetadata, *, chunk_seconds: float, pad_short: bool = False,
                   cover_end: bool = False) -> ChunkPlan:
        """:meth:`from_seconds` with the segment geometry and limit of an export's ``metadata.json``."""
        if not metadata.segment_length or metadata.max_samples is None:
            raise ModelError(f"{metadata.path or 'metadata.json'}: segment_length or max_samples is missing")
        rate, request = metadata.sample_rate, metadata.max_request_seconds
        return cls.from_seconds(chunk_seconds, sample_rate=rate, segment_length=metadata.segment_length,
                                segment_hop=metadata.segment_hop, max_samples=metadata.max_samples, pad_short=pad_short,
                                cover_end=cover_end,
                                max_request_samples=None if request is None else int(round(request * rate)))

    @property
    def chunk_samples(self) -> int:
        """Samples of a full chunk (``K`` segments)."""
        return self.covered_samples(self.max_segments)

    @property
    def max_segment_batch(self) -> int:
        """Most segments of one batch of segments each pooled alone (``[n, segment_length]``, ``--per-segment``):
        a chunk's, and no more than ``max_request_samples`` allows (at least one)."""
        if self.max_request_samples is None:
            return self.max_segments
        return max(1, min(self.max_segments, self.max_request_samples // self.segment_length))

    def covered_samples(self, n_segments: int) -> int:
        """Samples from the start of the first to the end of the last of ``n_segments`` consecutive segments."""
        return 0 if n_segments <= 0 else (n_segments - 1) * self.segment_hop + self.segment_length

    def seconds(self, n_segments: int) -> float:
        """Seconds of audio covered by ``n_segments`` consecutive segments."""
        return self.covered_samples(n_segments) / self.sample_rate

    def describe(self) -> dict[str, Any]:
        """For ``job.json``: the chunk length in segments and seconds."""
        return {"chunk_segments": self.max_segments, "chunk_seconds": self.chunk_samples / self.sample_rate}


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Consecutive whole segments of a track.

    Attributes:
        index: Position of the chunk in the track (0, 1, ...).
        first_segment: Index of its first segment in the track.
        num_segments: Number of segments it holds.
        waveform: float32 ``[samples]`` mono at the model's rate,
            ``(num_segments - 1) * hop + segment_length`` samples.
        padding: Zeros at the end of ``waveform`` that are not the track's (a short track's one
            segment with ``pad_short``), in samples.
        start: Where ``waveform`` starts in the track, in samples: ``first_segment * hop``, except for the
            segment ending at the track's end (``cover_end``), which starts ``segment_length`` samples
            before it.
    """

    index: int
    first_segment: int
    num_segments: int
    waveform: np.ndarray
    padding: int = 0
    start: int = 0

    @property
    def end(self) -> int:
        """Where the track's own samples in ``waveform`` end, in samples from the track's start."""
        return self.start + len(self.waveform) - self.padding


@dataclasses.dataclass(frozen=True)
class PartKey:
    """Which part of a track a RunInference example is.

    Attributes:
        track: The track.
        kind: :data:`CHUNK` (a chunk of segments, pooled together) or :data:`SEGMENTS` (segments of a chunk,
            each pooled alone: a batch ``[num_segments, segment_length]``).
        index: The chunk's index, or the index in the track of the first of the segments.
        num_segments: Number of model segments in the part.
    """

    track: TrackInput
    kind: str
    index: int
    num_segments: int


@dataclasses.dataclass(frozen=True)
class TrackEnd:
    """Emitted after the last chunk of a track that decoded to its end.

    Attributes:
        track: The track.
        num_chunks: Number of chunks sent.
        num_segments: Number of model segments of the whole track.
        seconds: Seconds of audio analysed (from the first to the end of the last whole segment; with
            ``cover_end`` and of a zero-padded track, its own length).
        padded_seconds: Seconds of zeros the track was padded with to make one segment (``pad_short``).
        source: The file's :func:`~beam_jobs.io.source_stamp` when its decoding began (``None``: unknown).
    """

    track: TrackInput
    num_chunks: int
    num_segments: int
    seconds: float
    padded_seconds: float = 0.0
    source: str | None = None


@dataclasses.dataclass(frozen=True)
class TrackParts:
    """Everything that came back for a track, complete and without failures.

    Attributes:
        end: The track's :class:`TrackEnd`.
        chunks: ``(key, outputs)`` of every chunk, in track order: the signature's outputs (a dict of arrays,
            what :meth:`chunk_outputs` reads), or what the job put in their place
            before the grouping (``extract_features``: a reference to a file).
        segments: ``(key, outputs)`` of every batch of segments each pooled alone, in track order (``()`` unless
            asked for).
    """

    end: TrackEnd
    chunks: tuple[tuple[PartKey, Any], ...]
    segments: tuple[tuple[PartKey, Any], ...]

    @property
    def chunk_weights(self) -> np.ndarray:
        """int64 ``[num_chunks]``: the number of segments of every chunk."""
        return np.array([key.num_segments for key, _ in self.chunks], np.int64)

    def chunk_outputs(self, name: str) -> np.ndarray:
        """float32 ``[num_chunks, ...]``: output ``name`` of every chunk."""
        return np.stack([np.asarray(outputs[name], np.float32) for _, outputs in self.chunks])


def chunk_blocks(blocks: Iterable[np.ndarray], plan: ChunkPlan) -> Iterator[Chunk]:
    """Regroups consecutive blocks of a waveform into chunks of at most ``K`` whole segments.

    Holds at most one chunk plus one block at a time.

    Args:
        blocks: float32 ``[samples]`` pieces of one waveform, in order (any lengths).
        plan: The segment geometry and ``K``.

    Yields:
        The :class:`Chunk` s, each as soon as its samples are in; all but the last of the whole
        segments hold ``K`` segments. For a waveform shorter than one segment: nothing, or with the
        plan's ``pad_short`` (if it has any samples) one segment of it and zeros. With the plan's
        ``cover_end``, a waveform whose last whole segment ends before it does gets one more chunk: its
        last ``segment_length`` samples, one segment (then up to one more segment of samples is held).
    """
    span, advance, length = plan.chunk_samples, plan.max_segments * plan.segment_hop, plan.segment_length
    pending: list[np.ndarray] = []
    pending_len = skip = index = first = seen = 0
    recent = np.zeros(0, np.float32)  # the last segment_length samples seen (cover_end)
    for block in blocks:
        seen += len(block)
        if plan.cover_end and len(block):
            recent = np.array(block[-length:] if len(block) >= length
                              else np.concatenate([recent, block])[-length:], np.float32)
        if skip:
            dropped = min(skip, len(block))
            block, skip = block[dropped:], skip - dropped
        if not len(block):
            continue
        pending.append(block)
        pending_len += len(block)
        while pending_len >= span:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield Chunk(index, first, plan.max_segments, np.array(joined[:span], np.float32),
                        start=first * plan.segment_hop)
            index, first = index + 1, first + plan.max_segments
            rest = np.array(joined[advance:], np.float32)  # a copy: the chunk's samples are released
            skip = max(0, advance - len(joined))  # segments further apart than long (hop > length)
            pending, pending_len = ([rest] if len(rest) else []), len(rest)
    tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    if len(tail) >= length:
        count = 1 + (len(tail) - length) // plan.segment_hop
        yield Chunk(index, first, count, np.array(tail[: plan.covered_samples(count)], np.float32),
                    start=first * plan.segment_hop)
        index, first = index + 1, first + count
    elif plan.pad_short and index == 0 and len(tail):  # the whole track is shorter than one segment
        padding = length - len(tail)
        yield Chunk(0, 0, 1, np.concatenate([tail, np.zeros(padding, np.float32)]).astype(np.float32), padding)
        return
    if plan.cover_end and first and seen > plan.covered_samples(first):  # samples after the last segment
        yield Chunk(index, first, 1, recent, start=seen - length)


def decode_chunks(track: TrackInput, plan: ChunkPlan) -> Iterator[Chunk]:
    """Decodes a track block by block (mono, at the plan's rate) and yields its chunks as they fill.

    Raises:
        AudioError: Missing, undecodable, empty or NaN/Inf samples (also after some chunks
            were yielded, for a file corrupt or truncated halfway), shorter than one segment
            (without the plan's ``pad_short``), or silent (:func:`tfaural.audio.silent`: known
            only at its end, so after its chunks).
    """
    total, peak = 0, 0.0

    def counted(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal total, peak
        for block in blocks:
            total += len(block)
            if len(block):
                peak = max(peak, float(np.max(np.abs(block))))
            yield block

    track.check_listed()
    blocks = beam_io.iter_audio_blocks(track.path, sample_rate=plan.sample_rate,
                                       block_seconds=plan.chunk_samples / plan.sample_rate)
    chunks = 0
    for chunk in chunk_blocks(counted(blocks), plan):
        chunks += 1
        yield chunk
    if not chunks:
        hint = "" if total == 0 or plan.pad_short else "; --pad-short zero-pads a shorter track to one"
        raise too_short(track.path, samples=total, sample_rate=plan.sample_rate, needed=plan.segment_length,
                        why=f"one model segment{hint}")
    if is_silent(peak):  # the chunks already sent are discarded with the track (collect_parts)
        raise silent(track.path, peak=peak)


def stream_examples(
    track: TrackInput, plan: ChunkPlan, *, per_segment: bool = False
) -> Iterator[tuple[PartKey, dict[str, np.ndarray]] | TrackEnd | TrackResult]:
    """What a job's decode stage emits for a track, as the file is decoded.

    Args:
        track: The track.
        plan: How to cut it.
        per_segment: After each chunk, also emit its segments as a batch to be pooled each alone
            (``PartKey.kind == SEGMENTS``, ``{"waveform": float32 [n, segment_length]}``), in batches of at
            most the plan's ``max_segment_batch`` segments.

    Yields:
        ``(PartKey, {"waveform": float32 [samples]})`` per chunk (and its segment batches), then a
        :class:`TrackEnd`; or, if decoding fails (possibly after some chunks), a failed
        :class:`TrackResult` (stage ``decode``) and no :class:`TrackEnd`.
    """
    chunks = segments = padding = end = 0
    length, hop = plan.segment_length, plan.segment_hop
    source = beam_io.source_stamp(track.path)  # before decoding: a change while it is read shows on a rerun
    try:
        for chunk in decode_chunks(track, plan):
            yield PartKey(track, CHUNK, chunk.index, chunk.num_segments), {"waveform": chunk.waveform}
            if per_segment:
                for first in range(0, chunk.num_segments, plan.max_segment_batch):
                    n = min(plan.max_segment_batch, chunk.num_segments - first)
                    batch = np.stack([chunk.waveform[j * hop : j * hop + length]
                                      for j in range(first, first + n)]).astype(np.float32, copy=False)
                    yield PartKey(track, SEGMENTS, chunk.first_segment + first, n), {"waveform": batch}
            chunks += 1
            segments += chunk.num_segments
            padding += chunk.padding
            end = max(end, chunk.end)
    except AudioError as err:
        yield failed_result(track, err, stage="decode")
        return
    beam.metrics.Metrics.counter("tfaural_jobs", "chunks").inc(chunks)
    rate = plan.sample_rate
    yield TrackEnd(track, num_chunks=chunks, num_segments=segments, seconds=end / rate, padded_seconds=padding / rate,
                   source=source)


def _key_part(element: tuple[PartKey, PredictionResult]) -> tuple[str, tuple[PartKey, Any]]:
    key, prediction = element
    return key.track.track_id, (key, prediction.inference)


class GroupTrackParts(beam.PTransform):
    """``(predictions, failures, track ends)`` → ``(track_id, [part, ...])``.

    ``predictions`` are RunInference's ``(PartKey, PredictionResult)``, ``failures``
    failed :class:`TrackResult` s of the inference stage, ``ends`` the
    :class:`TrackEnd` s of the decode stage. A group's parts are ``(PartKey, outputs)``
    tuples, :class:`TrackResult` s and :class:`TrackEnd` s; read them with :func:`collect_parts`.
    """

    @no_annotations  # a tuple of PCollections: Beam would warn that it ignores the hint, on every run
    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection, beam.PCollection]) -> beam.PCollection:
        predictions, failures, ends = pcolls
        return (
            (predictions | "KeyParts" >> beam.Map(_key_part),
             failures | "KeyFailures" >> beam.Map(lambda r: (r.track_id, r)),
             ends | "KeyEnds" >> beam.Map(lambda e: (e.track.track_id, e)))
            | "Merge" >> beam.Flatten()
            | "ByTrack" >> beam.GroupByKey()
        )


def collect_parts(values: Iterable[Any], *, per_segment: bool = False) -> TrackParts | TrackResult | None:
    """Checks what came back for one track (a group of :class:`GroupTrackParts`).

    Args:
        values: The group's parts.
        per_segment: The segments were also sent, in batches, each to be pooled alone.

    Returns:
        The complete :class:`TrackParts`; or a failed :class:`TrackResult` (a failure of
        the inference stage, a part the model could not process, a part missing); or
        ``None`` when no :class:`TrackEnd` arrived: decoding stopped early, and the decode
        stage reports that failure itself. Nothing of a track that is not complete may be written.
    """
    values = list(values)
    failures = sorted((v for v in values if isinstance(v, TrackResult)), key=lambda r: (str(r.stage), str(r.error)))
    if failures:
        return failures[0]
    ends = [v for v in values if isinstance(v, TrackEnd)]
    parts = [v for v in values if isinstance(v, tuple)]
    if not ends:
        return None
    end = ends[0]
    for _, inference in parts:
        if isinstance(inference, InferenceFailure):
            return failed_result(end.track, inference, stage="inference")
    chunks = tuple(sorted((p for p in parts if p[0].kind == CHUNK), key=lambda p: p[0].index))
    segments = tuple(sorted((p for p in parts if p[0].kind == SEGMENTS), key=lambda p: p[0].index))
    expected_segments = end.num_segments if per_segment else 0
    starts = np.cumsum([0] + [k.num_segments for k, _ in segments])
    if ([k.index for k, _ in chunks] != list(range(end.num_chunks))
            or [k.index for k, _ in segments] != starts[:-1].tolist() or starts[-1] != expected_segments
            or sum(k.num_segments for k, _ in chunks) != end.num_segments):
        return TrackResult(end.track, FAILED, stage="inference", error_type="IncompletePrediction",
                           error=f"{len(chunks)} of {end.num_chunks} chunks and {int(starts[-1])} of "
                                 f"{expected_segments} segments of the track came back from the model")
    return TrackParts(end, chunks, segments)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean of per-chunk means, each weighted by its chunk's number of segments.

    Equals the mean over all segments when every chunk's value is the mean over its
    segments (accumulated in float64; a single chunk comes back unchanged).

    Args:
        values: float32 ``[num_chunks, D]`` chunk means.
        weights: ``[num_chunks]`` segments per chunk (positive).

    Returns:
        float32 ``[D]``.
    """
    w = np.asarray(weights, np.float64)
    total = np.tensordot(w, np.asarray(values, np.float64), axes=1)
    return (total / w.sum()).astype(np.float32)


def combine_pooled(values: np.ndarray, weights: np.ndarray, *, is_max: np.ndarray) -> np.ndarray:
    """Per-chunk pooled features → the track's: maximum of the maxima, weighted mean of the means.

    Args:
        values: float32 ``[num_chunks, D]`` pooled features of every chunk.
        weights: ``[num_chunks]`` segments per chunk.
        is_max: bool ``[D]``: the column is a maximum (else a mean over segments x positions).

    Returns:
        float32 ``[D]``.
    """
    values = np.asarray(values, np.float32)
    return np.where(is_max, values.max(axis=0), weighted_mean(values, weights)).astype(np.float32)
