"""Tags every track of a catalogue with an exported model: label scores and the top-k labels.

Usage:

    python -m beam_jobs.tag --input 'music/**/*.flac' --model exports/samplecnn/1 --output results/tags \\
        [--top-k 5] [--batch-size 8] [--skip-existing | --overwrite] [beam options]
    python -m beam_jobs.tag --manifest catalogue.csv --model ... --output ...

Every file is decoded with tfaural.audio (any format libsndfile reads, local or on
a Beam filesystem such as gs://), mixed to mono, resampled to the model's rate and
cut to whole model segments (the trailing partial segment, which the model ignores
anyway, is dropped so that tracks with equal segment counts share a batch). At most
the export's ``max_seconds`` (10 minutes by default) of a track are read. The
``serving_default`` signature gives the segment-averaged scores.

The output folder receives:

    tags.jsonl          one JSON object per tagged track, sorted by track id:
                        {"track_id", "path", "seconds", "scores": {label: score}, "top_k": [[label, score], ...]}
    tags.csv            track_id, path, top_labels (best first, ';'-separated), one score column per label
    tracks/<name>.json  the same object per track (what --skip-existing keeps)
    manifest.jsonl      every input exactly once: {"path", "track_id", "name", "status": "ok", "outputs"}
                        or {..., "status": "failed", "error", "error_type", "stage"}
    job.json            the settings and the model's metadata.json

Without --runner the job uses every core (DirectRunner, multi-processing). Exit
status 2 with a one-line message on a setup error (bad --model, no input files).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from beam_jobs import io as beam_io
from beam_jobs.catalogue_io import (
    JOB_FILENAME,
    MANIFEST_FILENAME,
    OK,
    AccountForTracks,
    Decoded,
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
    InferenceJobOptions,
    TagOptions,
    parse_job_args,
)
from tfaural.errors import AudioError, ParameterError

__all__ = [
    "TAGS_JSONL",
    "TAGS_CSV",
    "PARTS_FOLDER",
    "Settings",
    "tag_record",
    "PrepareTrack",
    "WriteTrackTags",
    "write_tag_tables",
    "build_pipeline",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

TAGS_JSONL = "tags.jsonl"
TAGS_CSV = "tags.csv"
PARTS_FOLDER = "tracks"
SIGNATURE = "serving_default"
_RESERVED = (TAGS_JSONL, TAGS_CSV, MANIFEST_FILENAME, JOB_FILENAME)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The tag job's settings, validated.

    Attributes:
        common: The flags every inference job has.
        top_k: Number of best labels listed per track.
        labels: The model's label names, in score order.
        segment_length: The model's segment length in samples (shortest usable track).
        segment_hop: Hop between the model's segments in samples.
        max_samples: Longest input the export accepts, in samples (longer tracks are cut).
    """

    common: InferenceSettings
    top_k: int
    labels: tuple[str, ...]
    segment_length: int
    segment_hop: int
    max_samples: int

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Settings:
        """Validates the flags and reads the model's metadata.

        Raises:
            ParameterError: On a missing or invalid flag.
            ModelError: If ``--model`` is not a tfaural export.
        """
        common = InferenceSettings.from_options(options, signature=SIGNATURE, default_batch_size=8)
        meta = common.metadata
        labels = tuple(meta["labels"])
        top_k = options.view_as(TagOptions).top_k
        top_k = int(meta.get("top_k", 5)) if top_k is None else top_k
        if not 1 <= top_k <= len(labels):
            raise ParameterError(f"--top-k {top_k} is invalid: the model has {len(labels)} labels")
        return cls(common=common, top_k=top_k, labels=labels, segment_length=int(meta["segment_length"]),
                   segment_hop=int(meta.get("segment_hop") or meta["segment_length"]),
                   max_samples=int(meta["max_samples"]))

    def job_settings(self) -> dict[str, Any]:
        """What determines the outputs (compared by ``--skip-existing``)."""
        return {"signature": SIGNATURE, "top_k": self.top_k, "max_samples": self.max_samples}

    def part_file(self, track: TrackInput) -> str:
        """The track's result file, relative to the output folder."""
        return f"{PARTS_FOLDER}/{track.name}.json"


def whole_segments(n_samples: int, *, length: int, hop: int) -> int:
    """Samples covered by the whole segments of an ``n_samples`` input (``0`` if shorter than one)."""
    if n_samples < length:
        return 0
    return length + (n_samples - length) // hop * hop


def tag_record(track: TrackInput, scores: np.ndarray, *, labels: Sequence[str], top_k: int,
               seconds: float) -> dict[str, Any]:
    """One line of ``tags.jsonl``.

    Args:
        track: The track.
        scores: float32 ``[n_labels]`` segment-averaged scores, in label order.
        labels: Label names.
        top_k: Number of best labels to list.
        seconds: Seconds of audio that were analysed.

    Returns:
        ``{"track_id", "path", "seconds", "scores": {label: score}, "top_k": [[label, score], ...]}``;
        ties are broken by label order.
    """
    values = [float(v) for v in np.asarray(scores, np.float32)]
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:top_k]
    return {
        "track_id": track.track_id,
        "path": track.path,
        "seconds": round(seconds, 6),
        "scores": {label: value for label, value in zip(labels, values)},
        "top_k": [[labels[i], values[i]] for i in order],
    }


class PrepareTrack(beam.DoFn):
    """Track → :class:`Decoded` (whole segments at the model's rate), or a :class:`TrackResult`
    (kept from an earlier run with ``--skip-existing``, or failed to decode)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, track: TrackInput) -> Iterator[Decoded | TrackResult]:
        s = self._settings
        part = s.common.path(s.part_file(track))
        if s.common.skip_existing and beam_io.exists(part):
            record = json.loads(beam_io.read_text(part))
            yield TrackResult(track, OK, outputs=_outputs(s, track), reused=True, data=record)
            return
        try:
            y = decode_track(track, sample_rate=s.common.sample_rate, min_samples=s.segment_length,
                             duration=s.max_samples / s.common.sample_rate)
        except AudioError as err:
            yield failed_result(track, err, stage="decode")
            return
        used = whole_segments(len(y), length=s.segment_length, hop=s.segment_hop)
        yield Decoded(track, np.ascontiguousarray(y[:used]))


def _outputs(settings: Settings, track: TrackInput) -> tuple[str, ...]:
    return (TAGS_JSONL, TAGS_CSV, settings.part_file(track))


class WriteTrackTags(beam.DoFn):
    """``(track, prediction)`` → ``tracks/<name>.json`` and an ``ok`` :class:`TrackResult` carrying the record."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[TrackInput, PredictionResult]) -> Iterator[TrackResult]:
        s = self._settings
        track, prediction = element
        if isinstance(prediction.inference, InferenceFailure):
            yield failed_result(track, prediction.inference, stage="inference")
            return
        seconds = len(prediction.example["waveform"]) / s.common.sample_rate
        record = tag_record(track, prediction.inference["scores"], labels=s.labels, top_k=s.top_k, seconds=seconds)
        beam_io.write_text(s.common.path(s.part_file(track)), json.dumps(record, ensure_ascii=False) + "\n")
        yield TrackResult(track, OK, outputs=_outputs(s, track), data=record)


def write_tag_tables(results: list[TrackResult], *, output: str, labels: Sequence[str]) -> None:
    """Writes ``tags.jsonl`` and ``tags.csv`` from the ``ok`` results (sorted by track id)."""
    records = [r.data for r in results if r.status == OK]
    jsonl = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["track_id", "path", "top_labels", *labels])
    for rec in records:
        writer.writerow([rec["track_id"], rec["path"], ";".join(label for label, _ in rec["top_k"]),
                         *(f"{rec['scores'][label]:.6g}" for label in labels)])
    beam_io.write_text(beam_io.join(output, TAGS_JSONL), jsonl)
    beam_io.write_text(beam_io.join(output, TAGS_CSV), buffer.getvalue())


def build_pipeline(pipeline: beam.Pipeline, tracks: Sequence[TrackInput], settings: Settings) -> None:
    """Adds the job's labelled stages to ``pipeline`` (see the module docstring)."""
    s = settings
    handler = SignatureModelHandler(s.common.model, signature=SIGNATURE, max_batch_size=s.common.batch_size,
                                    outputs=["scores"], intra_op_threads=s.common.intra_op_threads,
                                    share_across_processes=s.common.share_model)
    listed = pipeline | "ListTracks" >> beam.Create(list(tracks))
    spread = listed | "SpreadTracks" >> beam.Reshuffle()
    prepared, decode_failures = guarded(spread, "Decode", PrepareTrack(s), stage="decode")
    early = keep(prepared, "EarlyResults", TrackResult)
    examples = (
        keep(prepared, "DecodedTracks", Decoded)
        | "ToExamples" >> beam.Map(lambda d: (d.track, {"waveform": d.waveform}))
    )
    predicted, inference_failures = infer(examples, "Tag", handler, prebatched=s.common.prebatched)
    written, write_failures = guarded(predicted, "WriteTags", WriteTrackTags(s), stage="write")
    results = (
        (early, decode_failures, inference_failures, keep(written, "Written", TrackResult), write_failures)
        | "AllResults" >> beam.Flatten()
    )
    _ = (listed, results) | "Account" >> AccountForTracks(
        s.common.output, finalise=functools.partial(write_tag_tables, output=s.common.output, labels=s.labels)
    )


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
    options = parse_job_args(argv, prog="python -m beam_jobs.tag", description=__doc__,
                             option_classes=[CatalogueJobOptions, InferenceJobOptions, TagOptions])
    settings = Settings.from_options(options)
    tracks = list_tracks(input_glob=settings.common.input_glob, manifest=settings.common.manifest,
                         reserved=_RESERVED)
    settings = configure_runner(
        "tag", options, settings, n_tracks=len(tracks), local_defaults=test_pipeline is None,
        save_main_session=save_main_session,
    )
    prepare_output(settings.common, job="tag", job_settings=settings.job_settings(), derived=[TAGS_JSONL, TAGS_CSV])
    write_job_file(settings.common, job="tag", job_settings=settings.job_settings())
    logger.info("tag: %d track(s) -> %s with %s", len(tracks), settings.common.output, settings.common.model)
    result = execute("tag", options, build_pipeline, tracks, settings, test_pipeline=test_pipeline)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2 on a usage or setup error)."""
    return main_for("tag", run, argv)


if __name__ == "__main__":
    # Run the importable module, not __main__: Beam pickles the DoFns by module path, and the
    # worker processes of the multi-processing DirectRunner can import beam_jobs.tag but not __main__.
    from beam_jobs import tag

    sys.exit(tag.main())
