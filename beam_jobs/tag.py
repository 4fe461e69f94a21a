"""Tags every track of a catalogue with an exported model: label scores and the top-k labels.

Usage:

    python -m beam_jobs.tag --input 'music/**/*.flac' --model exports/samplecnn/1 --output results/tags \\
        [--top-k 5] [--chunk-seconds 30] [--batch-size 8] [--precision bfloat16] [--pad-short] \\
        [--cover-end] [--skip-existing | --overwrite] [beam options]
    python -m beam_jobs.tag --manifest catalogue.csv --model ... --output ...

Every file is analysed whole, however long: it is decoded with tfaural.audio (any
format libsndfile reads, local or on a Beam filesystem such as gs://) block by
block, mixed to mono, resampled to the model's rate and cut to whole model segments
(the trailing partial segment, which the model ignores anyway, is dropped; with
``--cover-end`` one more segment, ending at the track's end, is analysed instead, so
that the whole track is heard; a track
shorter than one segment fails as too short, or with ``--pad-short`` is zero-padded to
one, as the preprocessing of Choi et al.'s 29.1-s taggers did). The
track goes to the model in chunks of at most ``--chunk-seconds`` of whole segments
(30 s by default; at most the export's ``max_seconds``; also the most audio of one
model call, which bounds the model's memory), so it is never one tensor. ``serving_default`` gives each chunk the
mean of its segments' scores (the model's outputs, e.g. sigmoid probabilities), and
a track's scores are the mean of its chunks' scores weighted by their numbers of
segments: exactly the mean over all its segments, what the signature would return
for the whole track (see :mod:`beam_jobs.chunking`; with ``--cover-end``, the segment
ending at the track's end is one more segment of that mean). A file that becomes
undecodable halfway (truncated, corrupt) fails as a whole: nothing of it is written.

The output folder receives:

    tags.jsonl          one JSON object per tagged track, sorted by track id:
                        {"track_id", "path", "seconds", "scores": {label: score}, "top_k": [[label, score], ...]}
                        (and "padded_seconds", the zeros added, for a track --pad-short padded)
    tags.csv            track_id, path, top_labels (best first, ';'-separated), one score column per label
                        (with --pad-short, a padded_seconds column after top_labels: 0 for whole tracks)
    tracks/<name>.json  the same object per track (what --skip-existing keeps, if it parses and holds this
                        track's scores for every label and the top-k that follows; otherwise the track
                        is recomputed, with the reason in the log)
    manifest.jsonl      every input exactly once: {"path", "track_id", "name", "status": "ok", "outputs"}
                        or {..., "status": "failed", "error", "error_type", "stage"}
    job.json            the settings and the model's metadata.json

While it runs it shows how many tracks are written: a progress bar on a terminal, else a log
line every 30 s (TFAURAL_PROGRESS_SECONDS); local output folders only (beam_jobs.progress).
Without --runner the job uses every core (DirectRunner, multi-processing). Exit
status 2 with a one-line message on a setup error (bad --model, no input files).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # The model starts loading in a process of its own while this process imports Beam (~2 s):
    # see beam_jobs.model_process.
    from beam_jobs.model_process import prestart

    prestart(sys.argv[1:], signature="serving_default")

import csv
import dataclasses
import functools
import io
import json
import logging
import math
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
    stream_examples,
    weighted_mean,
    whole_segments,
)
from beam_jobs.failures import guarded, infer, keep
from beam_jobs.inference import SignatureModelHandler
from beam_jobs.job import CatalogueJob
from beam_jobs.options import (
    CatalogueJobOptions,
    ChunkOptions,
    InferenceJobOptions,
    ShortTrackOptions,
    TagOptions,
)
from beam_jobs.settings import InferenceSettings
from beam_jobs.tracks import INPUTS_FOLDER, ListInputs, TrackInput, TrackResult, check_source
from tfaural.errors import DataError, ParameterError
from tfaural.formats import OK

__all__ = [
    "TAGS_JSONL",
    "TAGS_CSV",
    "PARTS_FOLDER",
    "Settings",
    "tag_record",
    "read_tag_record",
    "whole_segments",
    "PrepareTrack",
    "AssembleTags",
    "write_tag_tables",
    "TagScores",
    "build_pipeline",
    "TagJob",
    "JOB",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

TAGS_JSONL = "tags.jsonl"
TAGS_CSV = "tags.csv"
PARTS_FOLDER = "tracks"
SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The tag job's settings, validated.

    Attributes:
        common: The flags every inference job has.
        top_k: Number of best labels listed per track.
        labels: The model's label names, in score order.
        plan: How tracks are cut into chunks for the model (``--chunk-seconds``).
    """

    common: InferenceSettings
    top_k: int
    labels: tuple[str, ...]
    plan: ChunkPlan

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Settings:
        """Validates the flags and reads the model's metadata.

        Raises:
            ParameterError: On a missing or invalid flag.
            ModelError: If ``--model`` is not a tfaural export.
        """
        common = InferenceSettings.from_options(options, signature=SIGNATURE, default_batch_size=8,
                                                 precision=True)
        meta = common.metadata
        labels = meta.labels
        top_k = options.view_as(TagOptions).top_k
        top_k = meta.top_k if top_k is None else top_k
        if not 1 <= top_k <= len(labels):
            raise ParameterError(f"--top-k {top_k} is invalid: the model has {len(labels)} labels")
        chunk_options = options.view_as(ChunkOptions)
        plan = ChunkPlan.for_export(meta, chunk_seconds=chunk_options.chunk_seconds,
                                    pad_short=options.view_as(ShortTrackOptions).pad_short,
                                    cover_end=chunk_options.cover_end)
        return cls(common=common, top_k=top_k, labels=labels, plan=plan)

    def job_settings(self) -> dict[str, Any]:
        """What determines the outputs (compared by ``--skip-existing``).

        ``max_samples`` is ``None``: whole tracks are analysed (runs before chunking read at
        most the export's ``max_samples``). The chunk length does not change the results.
        ``pad_short`` and ``cover_end`` are listed only when on (as runs before them have no such keys).
        """
        return {"signature": SIGNATURE, "top_k": self.top_k, "max_samples": None,
                **({"pad_short": True} if self.plan.pad_short else {}),
                **({"cover_end": True} if self.plan.cover_end else {})}

    def part_file(self, track: TrackInput) -> str:
        """The track's result file, relative to the output folder."""
        return f"{PARTS_FOLDER}/{track.name}.json"


def tag_record(track: TrackInput, scores: np.ndarray, *, labels: Sequence[str], top_k: int,
               seconds: float, padded_seconds: float = 0.0) -> dict[str, Any]:
    """One line of ``tags.jsonl``.

    Args:
        track: The track.
        scores: float32 ``[n_labels]`` segment-averaged scores, in label order.
        labels: Label names.
        top_k: Number of best labels to list.
        seconds: Seconds of audio that were analysed.
        padded_seconds: Seconds of zeros the track was padded with to one segment (``--pad-short``).

    Returns:
        ``{"track_id", "path", "seconds", "scores": {label: score}, "top_k": [[label, score], ...]}``, and
        ``"padded_seconds"`` if it is not 0; ties are broken by label order.
    """
    values = [float(v) for v in np.asarray(scores, np.float32)]
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:top_k]
    return {
        "track_id": track.track_id,
        "path": track.path,
        "seconds": round(seconds, 6),
        "scores": {label: value for label, value in zip(labels, values)},
        "top_k": [[labels[i], values[i]] for i in order],
        **({"padded_seconds": round(padded_seconds, 6)} if padded_seconds > 0 else {}),
    }


@dataclasses.dataclass(frozen=True)
class TagScores:
    """What a tagged track carries to ``tags.jsonl``/``tags.csv`` (:func:`write_tag_tables` makes its record
    again with :func:`tag_record`): a few hundred bytes, where the record itself (a dict of every label's
    score and the top-k lists) takes kilobytes, for every track of the catalogue at once.

    Attributes:
        scores: float32 ``[n_labels]``, in label order.
        seconds: Seconds of audio analysed.
        padded_seconds: Seconds of zeros added (``--pad-short``).
    """

    scores: np.ndarray
    seconds: float
    padded_seconds: float = 0.0

    def record(self, track: TrackInput, *, labels: Sequence[str], top_k: int) -> dict[str, Any]:
        """The track's line of ``tags.jsonl`` (:func:`tag_record`)."""
        return tag_record(track, self.scores, labels=labels, top_k=top_k, seconds=self.seconds,
                          padded_seconds=self.padded_seconds)


class PrepareTrack(beam.DoFn):
    """Track → its chunks ``(PartKey, {"waveform": ...})`` as the file is decoded, then a
    :class:`~beam_jobs.chunking.TrackEnd`; or a :class:`TrackResult` (kept from an earlier run with
    ``--skip-existing``, or failed to decode, possibly after some chunks: then no ``TrackEnd`` follows
    and nothing of the track is written)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, track: TrackInput) -> Iterator[tuple[PartKey, dict[str, np.ndarray]] | TrackEnd | TrackResult]:
        s = self._settings
        part = s.common.path(s.part_file(track))
        if s.common.skip_existing and beam_io.exists(part):
            try:
                record = read_tag_record(part, track, labels=s.labels, top_k=s.top_k)
                check_source(record.get("source"), track, result=part)
            except DataError as err:
                logger.warning("--skip-existing: recomputing %s: %s", track.track_id, err)
                beam.metrics.Metrics.counter("tfaural_jobs", "invalid_results_recomputed").inc()
            else:
                kept = TagScores(np.array([record["scores"][label] for label in s.labels], np.float32),
                                 float(record["seconds"]), float(record.get("padded_seconds", 0.0)))
                yield TrackResult(track, OK, outputs=_outputs(s, track), reused=True, data=kept)
                return
        yield from stream_examples(track, s.plan)


def read_tag_record(path: str, track: TrackInput, *, labels: Sequence[str], top_k: int) -> dict[str, Any]:
    """Reads and checks a ``tracks/<name>.json`` of an earlier run (what ``--skip-existing`` reuses).

    The record must be what :func:`tag_record` would write for ``track`` with these labels
    and ``top_k``: the track's id and path, finite seconds (and padded seconds, if any), a finite
    score for every label and nothing else, and the top-k list that follows from the scores; and
    perhaps the ``source`` stamp of the file it was made from (:func:`~beam_jobs.tracks.check_source`
    compares it with the file's).

    Returns:
        The record.

    Raises:
        DataError: Naming ``path`` and what is wrong (unreadable, truncated, not JSON, other keys or values).
    """
    try:
        record = json.loads(beam_io.read_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: unreadable or not JSON ({type(err).__name__}: {err})") from None

    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}")

    keys = {"track_id", "path", "seconds", "scores", "top_k"}
    if not isinstance(record, dict) or set(record) - {"padded_seconds", "source"} != keys:
        raise bad("not a tag record (expected the keys track_id, path, seconds, scores, top_k and perhaps "
                  "padded_seconds and source)")
    if not isinstance(record.get("source"), (str, type(None))):
        raise bad("its source is not a text")
    if record["track_id"] != track.track_id or record["path"] != track.path:
        raise bad(f"holds the tags of {record['track_id']!r} ({record['path']}), not of this track")
    scores = record["scores"]
    if not isinstance(scores, dict) or list(scores) != list(labels):
        raise bad("its scores are not those of the model's labels")
    values = [scores[label] for label in labels]
    seconds, padded = record["seconds"], record.get("padded_seconds", 0.0)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in [*values, seconds, padded]) or seconds < 0 or padded < 0:
        raise bad("holds a score or a duration that is not a finite number")
    expected = tag_record(track, np.asarray(values, np.float32), labels=labels, top_k=top_k, seconds=float(seconds))
    if record["top_k"] != expected["top_k"] or values != list(expected["scores"].values()):
        raise bad("its top_k list does not follow from its scores (or its scores are not float32 values)")
    return record


def _outputs(settings: Settings, track: TrackInput) -> tuple[str, ...]:
    return (TAGS_JSONL, TAGS_CSV, settings.part_file(track))


class AssembleTags(beam.DoFn):
    """All chunks of a track → ``tracks/<name>.json`` and an ``ok`` :class:`TrackResult` carrying its
    :class:`TagScores`; a failed one if a chunk failed or is missing; nothing if the track did not decode
    to its end (the decode stage reports that)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[str, Iterable[Any]]) -> Iterator[TrackResult]:
        s = self._settings
        parts = collect_parts(element[1])
        if parts is None:
            return
        if isinstance(parts, TrackResult):
            yield parts
            return
        track = parts.end.track
        scores = TagScores(weighted_mean(parts.chunk_outputs("scores"), parts.chunk_weights), parts.end.seconds,
                           parts.end.padded_seconds)
        record = {**scores.record(track, labels=s.labels, top_k=s.top_k), "source": parts.end.source}
        beam_io.write_text(s.common.path(s.part_file(track)), json.dumps(record, ensure_ascii=False) + "\n")
        yield TrackResult(track, OK, outputs=_outputs(s, track), data=scores)


def write_tag_tables(results: Iterable[TrackResult], *, output: str, labels: Sequence[str], top_k: int,
                     padded: bool = False) -> None:
    """Writes ``tags.jsonl`` and ``tags.csv`` from the ``ok`` results (sorted by track id, each with its
    :class:`TagScores`), a track at a time: a table is never a string in memory; ``padded``: the CSV has a
    ``padded_seconds`` column (``--pad-short``)."""
    row = io.StringIO()
    writer = csv.writer(row, lineterminator="\n")

    def csv_line(values: Sequence[Any]) -> bytes:
        row.seek(0)
        row.truncate()
        writer.writerow(values)
        return row.getvalue().encode("utf-8")

    with beam_io.created_atomically(beam_io.join(output, TAGS_JSONL)) as jsonl, \
            beam_io.created_atomically(beam_io.join(output, TAGS_CSV)) as table:
        table.write(csv_line(["track_id", "path", "top_labels", *(["padded_seconds"] if padded else []), *labels]))
        for result in results:
            if result.status != OK:
                continue
            rec = result.data.record(result.track, labels=labels, top_k=top_k)
            jsonl.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
            table.write(csv_line([rec["track_id"], rec["path"], ";".join(label for label, _ in rec["top_k"]),
                                  *([f"{rec.get('padded_seconds', 0.0):g}"] if padded else []),
                                  *(f"{rec['scores'][label]:.6g}" for label in labels)]))


def build_pipeline(pipeline: beam.Pipeline, tracks: Sequence[TrackInput], settings: Settings) -> None:
    """Adds the job's labelled stages to ``pipeline`` (see the module docstring)."""
    s = settings
    handler = SignatureModelHandler(s.common.model, signature=SIGNATURE, max_batch_size=s.common.batch_size,
                                    outputs=["scores"], intra_op_threads=s.common.intra_op_threads,
                                    precision=s.common.precision,
                                    share_across_processes=s.common.share_model, one_example_per_call=True,
                                    model_server=s.common.model_server)
    listed = pipeline | "ListTracks" >> ListInputs(tracks, folder=s.common.path(INPUTS_FOLDER))
    spread = listed | "SpreadTracks" >> beam.Reshuffle()
    prepared, decode_failures = guarded(spread, "Decode", PrepareTrack(s), stage="decode", partial=True)
    early = keep(prepared, "EarlyResults", TrackResult)
    examples = keep(prepared, "Chunks", tuple)
    ends = keep(prepared, "TrackEnds", TrackEnd)
    predicted, inference_failures = infer(examples, "Tag", handler, prebatched=s.common.prebatched)
    parts = (predicted, inference_failures, ends) | "ChunksByTrack" >> GroupTrackParts()
    written, write_failures = guarded(parts, "WriteTags", AssembleTags(s), stage="write")
    results = (
        (early, decode_failures, keep(written, "Written", TrackResult), write_failures)
        | "AllResults" >> beam.Flatten()
    )
    _ = (listed, results) | "Account" >> AccountForTracks(
        s.common.output,
        finalise=functools.partial(write_tag_tables, output=s.common.output, labels=s.labels, top_k=s.top_k,
                                   padded=s.plan.pad_short),
    )


class TagJob(CatalogueJob):
    """``python -m beam_jobs.tag``: see the module docstring."""

    name = "tag"
    option_classes = (CatalogueJobOptions, InferenceJobOptions, TagOptions, ChunkOptions, ShortTrackOptions)
    hidden_flags = ("format",)
    signature = SIGNATURE
    reserved = (TAGS_JSONL, TAGS_CSV)
    derived = (TAGS_JSONL, TAGS_CSV)

    def settings(self, options: PipelineOptions) -> Settings:
        """See :meth:`Settings.from_options`."""
        return Settings.from_options(options)

    def job_extra(self, settings: Settings) -> dict[str, Any]:
        """The chunking plan."""
        return settings.plan.describe()

    def build(self, pipeline: beam.Pipeline, inputs: Sequence[TrackInput], settings: Settings) -> None:
        """See :func:`build_pipeline`."""
        build_pipeline(pipeline, inputs, settings)


JOB = TagJob()

run = JOB.run  # run(argv, save_main_session=None, test_pipeline=None): see Job.run
main = JOB.main  # main(argv) -> exit status: see Job.main


if __name__ == "__main__":
    # Run the importable module, not __main__: Beam pickles the DoFns by module path, and the
    # worker processes of the multi-processing DirectRunner can import beam_jobs.tag but not __main__.
    from beam_jobs import tag
    from tfaural.cli import exit_promptly

    exit_promptly(tag.main())
