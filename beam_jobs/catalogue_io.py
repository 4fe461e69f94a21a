"""What the inference jobs share: which tracks, where their outputs go, and an account of every track.

The three jobs (``auralise``, ``extract_features``, ``tag``) have the same shape::

    ListTracks ─ SpreadTracks ─ Decode ─┬─ RunInference(signature) ─ Write ─┐
                                        └─ (failed / reused tracks) ────────┴─ Account ─▶ manifest.jsonl

(``tag`` and ``extract_features`` decode each track in chunks that RunInference sees as
separate examples, and group them back by track before writing: :mod:`beam_jobs.chunking`.)

* **Inputs.** ``--input GLOB`` or ``--manifest``. The tracks are listed when the
  job starts (:func:`list_tracks`): ids must be unique over the whole catalogue and
  the job must know every track it has to account for. Glob track ids are the
  paths relative to the glob's fixed prefix without extension
  (:func:`tfaural.data.catalogue.default_track_ids`); manifest ids come from its
  ``track_id`` column. The glob is matched with ``FileSystems.match`` (what
  ``fileio.MatchFiles`` calls) in the launcher rather than by ``MatchFiles`` →
  ``ReadMatches`` inside the pipeline, for three reasons: collision suffixes need
  the whole list of paths, the final accounting needs the list of inputs, and on
  the Dask runner a one-element ``Create`` cannot be spread out (``Reshuffle`` is a
  no-op there). The workers open the files through Beam's filesystems.
* **Output names.** A track's outputs are named after :attr:`TrackInput.name`, a
  single path component derived from its id (``/`` becomes ``__``; see
  :func:`output_names`): no ``..``, no absolute path, no separator can escape the
  output folder, and two ids that would share a name (``a/b`` and ``a__b``, or
  names differing only in case) get a hash suffix, deterministically.
* **Nothing lost.** Every stage that can fail runs inside
  ``with_exception_handling``; expected failures (undecodable, empty, too short,
  a failed in-graph check) become :class:`TrackResult` s with ``status="failed"``.
  :class:`AccountForTracks` joins the results with the list of inputs, so that
  ``manifest.jsonl`` lists every input exactly once, ``ok`` with its outputs or
  ``failed`` with the reason (a track that lost its result on the way is listed
  as failed too), and counts them in Beam metrics.
* **Any runner.** Branches are told apart by element type, never only by output
  tag, and nothing is emitted from ``finish_bundle``: Beam's Dask runner merges
  tagged outputs into one collection and drops ``finish_bundle`` output, and
  computes only the last transform of the pipeline, which is the manifest writer.

Files in the output folder that every job writes: ``job.json`` (settings, the
model's metadata; written when the job starts) and ``manifest.jsonl`` (written
last: its presence means the run finished).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from beam_jobs import io as beam_io
from beam_jobs import model_process as model_processes
from beam_jobs.inference import InferenceFailure, read_metadata
from beam_jobs.model_process import ModelServerAddress
from beam_jobs.options import CatalogueJobOptions, InferenceJobOptions, _given, is_dask_runner, require
from beam_jobs.scratch import run_folder
from tfaural import __version__
from tfaural.cli import check_output_folder, is_verbose
from tfaural.errors import AudioError, DataError, ModelError, ParameterError, TfauralError
from tfaural.formats import (
    FAILED,
    JOB_FILE,
    MANIFEST_FILE,
    OK,
    ExportMetadata,
    JobRecord,
    ManifestRow,
    manifest_text,
    parse_job_record,
    parse_manifest,
)

__all__ = [
    "MANIFEST_FILENAME",
    "JOB_FILENAME",
    "OK",
    "FAILED",
    "TrackInput",
    "TrackResult",
    "InferenceSettings",
    "glob_prefix",
    "list_tracks",
    "output_names",
    "decode_track",
    "failed_result",
    "is_dead_letter",
    "find_tracks",
    "dead_letter_results",
    "keep",
    "guarded",
    "is_prediction",
    "infer",
    "AccountForTracks",
    "prepare_output",
    "write_job_file",
    "Summary",
    "summarize",
    "wait",
    "main_for",
]

logger = logging.getLogger(__name__)

MANIFEST_FILENAME = MANIFEST_FILE
JOB_FILENAME = JOB_FILE

MAX_NAME_LENGTH = 150
"""Longest output name (a file or folder name; file systems allow 255 bytes)."""

_WILDCARD = re.compile(r"[*?\[]")


# ---------------------------------------------------------------------------
# Tracks and their output names
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrackInput:
    """One input file of a job.

    Attributes:
        path: The audio file (local path or URI).
        track_id: Its id (safe ``/``-separated components; see ``validate_track_id``).
        name: Its output name: one safe path component, unique in the job (:func:`output_names`).
    """

    path: str
    track_id: str
    name: str


@dataclasses.dataclass(frozen=True)
class TrackResult:
    """The outcome for one track: one line of ``manifest.jsonl``.

    Attributes:
        track: The track.
        status: :data:`OK` or :data:`FAILED`.
        outputs: Files written for the track, relative to the output folder (``ok`` only).
        stage: Where it failed: ``"decode"``, ``"inference"``, ``"write"`` or ``"pipeline"``.
        error_type: The error's type, e.g. ``"AudioDecodeError"``.
        error: Why it failed, for people ("too short: 120 samples ...").
        reused: The result of an earlier run was kept (``--skip-existing``).
        data: Job-specific results travelling to the final stage (not written to the manifest).
    """

    track: TrackInput
    status: str
    outputs: tuple[str, ...] = ()
    stage: str | None = None
    error_type: str | None = None
    error: str | None = None
    reused: bool = False
    data: Any = None

    @property
    def track_id(self) -> str:
        """The track's id."""
        return self.track.track_id

    def manifest_row(self) -> ManifestRow:
        """The track's line of ``manifest.jsonl``."""
        if self.status == OK:
            return ManifestRow(self.track.path, self.track.track_id, self.track.name, self.status,
                               outputs=self.outputs, reused=self.reused)
        return ManifestRow(self.track.path, self.track.track_id, self.track.name, self.status, error=self.error,
                           error_type=self.error_type, stage=self.stage)


def glob_prefix(pattern: str) -> str:
    """The fixed folder part of a glob: everything up to the last ``/`` before the first wildcard.

    >>> glob_prefix("/data/music/**/*.flac")
    '/data/music/'
    """
    match = _WILDCARD.search(pattern)
    head = pattern if match is None else pattern[: match.start()]
    return head[: head.rfind("/") + 1]


def _name_of(track_id: str) -> str:
    return track_id.replace("/", "__")


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def output_names(track_ids: Sequence[str], *, reserved: Iterable[str] = ()) -> list[str]:
    """One output name per track id: a single safe path component, unique case-insensitively.

    The name is the id with ``/`` replaced by ``__``. Names longer than
    :data:`MAX_NAME_LENGTH`, names equal to a ``reserved`` name (the job's own
    files such as ``manifest.jsonl``) and names shared by several ids (``a/b`` and
    ``a__b``; ``Song`` and ``song``) get ``-`` and 8 hex digits of the SHA-1 of the
    id appended. The result depends only on the set of ids.

    Args:
        track_ids: Valid track ids (unique).
        reserved: Names the outputs must not take (compared case-insensitively).

    Returns:
        The names, in the order of ``track_ids``.
    """
    taboo = {name.casefold() for name in reserved}
    names = [_name_of(track_id) for track_id in track_ids]
    counts = collections.Counter(name.casefold() for name in names)
    out = []
    for track_id, name in zip(track_ids, names):
        if counts[name.casefold()] > 1 or name.casefold() in taboo or len(name) > MAX_NAME_LENGTH:
            name = f"{name[: MAX_NAME_LENGTH - 9]}-{_hash(track_id)}"
        out.append(name)
    return out


def _located_in(path: str, folder: str) -> bool:
    """True if the entry ``path`` (not what a symbolic link points to) lies in ``folder`` or below."""
    if beam_io.is_local(path) and beam_io.is_local(folder):
        where = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
        top = os.path.realpath(folder)
        return where.startswith(top.rstrip(os.sep) + os.sep)
    return path.startswith(folder.rstrip("/") + "/")


def list_tracks(
    *, input_glob: str | None, manifest: str | None, reserved: Iterable[str] = (), output: str | None = None
) -> list[TrackInput]:
    """The tracks of a job, from a glob or a manifest (exactly one), sorted by id.

    Every entry the glob matches is a track (a broken symbolic link, a link loop or an
    unreadable entry fails at decoding, with the reason, in ``manifest.jsonl``), except
    folders and what lies inside ``output``: a glob such as ``'music/**'`` with
    ``--output music/tags`` would otherwise take the job's own results (and its
    ``manifest.jsonl``) as inputs on the next run. Those are left out, with a warning.

    Args:
        input_glob: A glob of audio files (local or URI).
        manifest: A catalogue manifest (labels are not needed).
        reserved: Names the outputs must not take (see :func:`output_names`).
        output: The job's output folder, whose files are never inputs.

    Returns:
        The tracks.

    Raises:
        ParameterError: If both or neither are given, or the glob matches no file (outside ``output``).
        DataError: If the manifest is missing or invalid.
    """
    # Imported here, in the launcher only: tfaural.data imports TensorFlow, which the worker processes
    # that decode audio do not need (the model runs in a process of its own; see InferenceSettings).
    from tfaural.data.catalogue import default_track_ids, read_manifest

    if (input_glob is None) == (manifest is None):
        raise ParameterError("give the audio files either as --input GLOB or as --manifest FILE (exactly one)")
    if manifest is not None:
        catalogue = read_manifest(manifest, require_labels=False, check_files=False)  # missing files: failed rows
        pairs = [(t.path, t.track_id) for t in catalogue.tracks]
        if not pairs:
            raise ParameterError(f"--manifest {manifest} lists no tracks")
    else:
        assert input_glob is not None
        paths = beam_io.list_files(input_glob)
        if not paths:
            raise ParameterError(f"--input {input_glob!r} matched no files (quote the glob so that the shell does "
                                 "not expand it; '**' matches across folders)")
        if output is not None:
            own = [p for p in paths if _located_in(p, output)]
            if own:
                logger.warning("--input %r: %d matched file(s) inside --output %s are left out (the job's own "
                               "outputs, e.g. %s)", input_glob, len(own), output, own[0])
                paths = [p for p in paths if p not in set(own)]
            if not paths:
                raise ParameterError(f"--input {input_glob!r} matched only files inside --output {output}; give the "
                                     "audio files and the output folder separate places")
        prefix = glob_prefix(input_glob)
        relative = [p[len(prefix):] if prefix and p.startswith(prefix) else p for p in paths]
        pairs = list(zip(paths, default_track_ids(relative)))
    names = output_names([track_id for _, track_id in pairs], reserved=reserved)
    tracks = [TrackInput(path=path, track_id=track_id, name=name) for (path, track_id), name in zip(pairs, names)]
    return sorted(tracks, key=lambda t: t.track_id)


# ---------------------------------------------------------------------------
# Settings shared by the jobs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """The flags every inference job has, validated.

    Attributes:
        input_glob: ``--input``.
        manifest: ``--manifest``.
        model: ``--model``, the export version directory.
        metadata: The export's ``metadata.json``.
        output: ``--output``, without a trailing ``/``.
        sample_rate: The model's sample rate in Hz.
        batch_size: Largest batch RunInference forms.
        format: The output format (validated by the job).
        skip_existing: ``--skip-existing``.
        overwrite: ``--overwrite``.
        intra_op_threads: TensorFlow threads per worker process (``None``: TensorFlow's default).
        prebatched: Hand RunInference ready-made batches of one example instead of letting it
            batch (for runners that drop what ``BatchElements`` emits from ``finish_bundle``).
        share_model: Load the model once per machine in a process of its own that the worker
            processes call, instead of once per worker process.
        model_process: Run the model in a model process that the launcher starts
            (:mod:`beam_jobs.model_process`; local DirectRunner, jobs that support it).
        model_server: The running model process's address (set by :func:`execute`).
    """

    input_glob: str | None
    manifest: str | None
    model: str
    metadata: ExportMetadata
    output: str
    sample_rate: int
    batch_size: int
    format: str | None
    skip_existing: bool
    overwrite: bool
    intra_op_threads: int | None = None
    prebatched: bool = False
    share_model: bool = False
    model_process: bool = False
    model_server: ModelServerAddress | None = None

    @classmethod
    def from_options(
        cls,
        options: PipelineOptions,
        *,
        signature: str,
        default_batch_size: int,
        formats: Sequence[str] | None = None,
    ) -> InferenceSettings:
        """Validates the shared flags and reads the model's metadata.

        Args:
            options: The parsed options.
            signature: The signature the job calls (checked against the export).
            default_batch_size: ``--batch-size`` when not given.
            formats: Allowed ``--format`` values, the first being the default (``None``: none allowed).

        Raises:
            ParameterError: On a missing or invalid flag, naming it.
            ModelError: If ``--model`` is not a tfaural export with that signature.
        """
        common = options.view_as(CatalogueJobOptions)
        job = options.view_as(InferenceJobOptions)
        if (job.input is None) == (common.manifest is None):
            raise ParameterError("give the audio files either as --input GLOB or as --manifest FILE (exactly one)")
        output = check_output_folder(require(common.output, "--output", "an output folder").rstrip("/") or "/")
        model = require(job.model, "--model", "an export version directory (EXPORT_BASE/<N>)").rstrip("/")
        metadata = read_metadata(model)
        metadata.signature(signature, export_dir=model)
        rate = metadata.sample_rate
        if common.sample_rate is not None and common.sample_rate != rate:
            raise ParameterError(f"--sample-rate {common.sample_rate} differs from the model's {rate} Hz; leave it out "
                                 "(audio is resampled to the model's rate)")
        batch_size = default_batch_size if job.batch_size is None else job.batch_size
        if batch_size < 1:
            raise ParameterError(f"--batch-size {batch_size} is invalid: expected a positive integer")
        fmt = job.format
        if formats is None and fmt is not None:
            raise ParameterError(f"--format {fmt!r}: this job has no --format")
        if formats is not None:
            fmt = (fmt or formats[0]).lower()
            if fmt not in formats:
                raise ParameterError(f"--format {job.format!r} is invalid: expected one of {'|'.join(formats)}")
        if job.skip_existing and common.overwrite:
            raise ParameterError("--skip-existing and --overwrite contradict each other: choose one")
        return cls(input_glob=job.input, manifest=common.manifest, model=model, metadata=metadata, output=output,
                   sample_rate=rate, batch_size=batch_size, format=fmt, skip_existing=bool(job.skip_existing),
                   overwrite=bool(common.overwrite))

    def for_runner(self, options: PipelineOptions, *, model_process: bool = False) -> InferenceSettings:
        """Adjusts batching and threading to the runner (call after ``apply_runner_defaults``).

        * Dask: batches of one, handed to RunInference ready-made, because Beam's Dask
          runner drops what ``BatchElements`` emits from ``finish_bundle`` (the last batch
          of every bundle, whatever the batch size).
        * Local multi-processing DirectRunner: the model is loaded once, in a process
          of its own that the worker processes call with NumPy arrays (Beam's
          ``share_model_across_processes``). The workers decode in parallel while
          TensorFlow uses every core for the model; one model load instead of one per
          worker (a 3^9-SampleCNN export takes ~7 s to load, and as much memory again).
        * Local DirectRunner, any mode, when the job supports it (``model_process``) and this
          process has not imported TensorFlow: the model runs in a model process that the
          launcher starts as early as it can (:mod:`beam_jobs.model_process`), so that neither
          the launcher nor the workers import TensorFlow and its start-up overlaps Beam's. With
          a single worker (one track), the launcher decodes itself (``in_memory``, unless the
          mode was chosen): no worker process to start and to stop; with several, it decodes
          in that many threads (``multi_threading``, unless the mode was chosen), which spares
          the worker processes' own imports of Beam (decoding releases the GIL). A process that already
          holds TensorFlow (a notebook, a test) keeps the model in-process as before.
        """
        settings = self
        if is_dask_runner(options):
            logger.info("Dask runner: batches of one example (the runner drops what BatchElements holds back)")
            settings = dataclasses.replace(settings, batch_size=1, prebatched=True)
        runner = options.view_as(StandardOptions).runner
        direct = options.view_as(DirectOptions)
        direct_runner = isinstance(runner, str) and runner.endswith("DirectRunner")
        if direct_runner and model_process and "tensorflow" not in sys.modules:
            if direct.direct_running_mode == "multi_processing" and not _given(options, "direct_running_mode"):
                workers = direct.direct_num_workers or 1
                # The workers only decode and resample (soundfile, soxr and FFmpeg release the
                # GIL): threads of the launcher do that as fast as processes, without starting
                # worker processes that each import Beam (~2 CPU-s apiece on a 2-core machine).
                direct.direct_running_mode = "in_memory" if workers == 1 else "multi_threading"
                logger.info("the launcher decodes the audio itself (%s)", "in_memory" if workers == 1
                            else f"multi_threading, {workers} threads")
            return dataclasses.replace(settings, model_process=True)
        if (direct_runner and direct.direct_running_mode == "multi_processing"
                and (direct.direct_num_workers or 1) > 1):
            settings = dataclasses.replace(settings, share_model=True)
        return settings

    def model_identity(self) -> dict[str, Any]:
        """What identifies the model of a run (for ``--skip-existing``)."""
        return {"model_dir": self.model, "run_id": self.metadata.run_id, "exported": self.metadata.exported}

    def path(self, *names: str) -> str:
        """A path inside the output folder."""
        return beam_io.join(self.output, *names)


# ---------------------------------------------------------------------------
# Decoding and failures
# ---------------------------------------------------------------------------


def decode_track(
    track: TrackInput,
    *,
    sample_rate: int,
    min_samples: int,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decodes (an excerpt of) a track, mono, at ``sample_rate``.

    Returns:
        float32 ``[samples]``.

    Raises:
        AudioError: Missing, undecodable, empty, too short, or NaN/Inf samples.
    """
    y, _ = beam_io.load_audio(track.path, sample_rate=sample_rate, min_samples=min_samples, offset=offset,
                              duration=duration)
    return y


def failed_result(track: TrackInput, err: BaseException | InferenceFailure, *, stage: str) -> TrackResult:
    """A failed :class:`TrackResult` from an exception or an :class:`InferenceFailure`."""
    if isinstance(err, InferenceFailure):
        return TrackResult(track, FAILED, stage=stage, error_type=err.error, error=err.reason)
    reason = err.reason if isinstance(err, AudioError) else str(err) or repr(err)
    return TrackResult(track, FAILED, stage=stage, error_type=type(err).__name__, error=reason)


def is_dead_letter(element: Any) -> bool:
    """True for a dead letter of ``with_exception_handling``: ``(element, (type, repr, traceback))``."""
    if not (isinstance(element, tuple) and len(element) == 2):
        return False
    info = element[1]
    return (isinstance(info, tuple) and len(info) == 3 and isinstance(info[0], type)
            and issubclass(info[0], BaseException))


def find_tracks(element: Any) -> list[TrackInput]:
    """The tracks an element (or a batch of elements) of any stage belongs to, without duplicates."""
    found: dict[str, TrackInput] = {}

    def visit(item: Any, depth: int) -> None:
        if depth > 4:
            return
        if isinstance(item, TrackInput):
            found.setdefault(item.track_id, item)
        elif hasattr(item, "track") and isinstance(item.track, TrackInput):
            found.setdefault(item.track.track_id, item.track)
        elif isinstance(item, (tuple, list)):
            for part in item:
                visit(part, depth + 1)

    visit(element, 0)
    return list(found.values())


def dead_letter_results(dead_letter: tuple[Any, tuple[Any, str, Any]], *, stage: str) -> list[TrackResult]:
    """A dead letter (an exception nobody anticipated) as a failed result for each track it holds."""
    element, (error_type, error_repr, _traceback) = dead_letter
    name = getattr(error_type, "__name__", str(error_type))
    tracks = find_tracks(element)
    if not tracks:
        logger.error("%s: an element without a track failed with %s: %s", stage, name, error_repr)
    for track in tracks:
        logger.error("%s: %s failed with %s: %s", stage, track.path, name, error_repr)
    beam.metrics.Metrics.counter("tfaural_jobs", f"unexpected_errors_{stage}").inc()
    return [TrackResult(track, FAILED, stage=stage, error_type=name, error=f"unexpected error: {error_repr}"[:1000])
            for track in tracks]


def keep(pcoll: beam.PCollection, label: str, kind: type | tuple[type, ...]) -> beam.PCollection:
    """The elements of ``pcoll`` that are instances of ``kind`` (branches are split by type, see module doc)."""
    return pcoll | label >> beam.Filter(lambda element, k=kind: isinstance(element, k))


def guarded(
    pcoll: beam.PCollection, label: str, dofn: beam.DoFn, *, stage: str, partial: bool = False
) -> tuple[beam.PCollection, beam.PCollection]:
    """Applies ``dofn`` with ``with_exception_handling``.

    Args:
        pcoll: The input.
        label: The stage's label.
        dofn: The DoFn.
        stage: The stage named in the failed results.
        partial: Pass on what ``dofn`` yields as it yields it. By default Beam collects
            all outputs of an element first (so that an element that raises emits nothing),
            which holds them all in memory; a DoFn that streams a long track in chunks
            needs ``True`` and must make its consumers discard the outputs of an element
            that failed halfway (see :mod:`beam_jobs.chunking`).

    Returns:
        ``(outputs, failures)``: what ``dofn`` emitted, and one failed
        :class:`TrackResult` per track of every element on which it raised.
    """
    main, dead = pcoll | label >> beam.ParDo(dofn).with_exception_handling(partial=partial)
    outputs = main | f"{label}Outputs" >> beam.Filter(lambda element: not is_dead_letter(element))
    failures = (
        dead
        | f"{label}DeadLetters" >> beam.Filter(is_dead_letter)
        | f"{label}Failures" >> beam.FlatMap(dead_letter_results, stage=stage)
    )
    return outputs, failures


def is_prediction(element: Any) -> bool:
    """True for an output of a keyed RunInference: ``(key, PredictionResult)``."""
    return isinstance(element, tuple) and len(element) == 2 and isinstance(element[1], PredictionResult)


def infer(
    examples: beam.PCollection, label: str, handler: ModelHandler, *, prebatched: bool = False
) -> tuple[beam.PCollection, beam.PCollection]:
    """RunInference with exception handling on ``(key, example)`` elements.

    Args:
        examples: ``(key, example)`` elements; keys hold their tracks (see :func:`find_tracks`).
        label: The stage's label.
        handler: An unkeyed model handler (e.g. ``SignatureModelHandler``).
        prebatched: Skip RunInference's batching and send every example alone (Dask).

    Returns:
        ``(predictions, failures)``: ``(key, PredictionResult)`` elements, and one failed
        :class:`TrackResult` per track of every batch that raised.
    """
    keyed: ModelHandler = KeyedModelHandler(handler)
    if prebatched:
        examples = examples | f"{label}Singletons" >> beam.Map(lambda example: [example])
        keyed = keyed.with_no_batching()
    predictions, errors = examples | label >> RunInference(keyed).with_exception_handling()
    predicted = predictions | f"{label}Predictions" >> beam.Filter(is_prediction)
    failures = (
        errors.failed_inferences
        | f"{label}FailedBatches" >> beam.Filter(is_dead_letter)
        | f"{label}Failures" >> beam.FlatMap(dead_letter_results, stage="inference")
    )
    return predicted, failures


# ---------------------------------------------------------------------------
# Accounting: manifest.jsonl
# ---------------------------------------------------------------------------


def _preference(result: TrackResult) -> tuple[Any, ...]:
    return (result.status != OK, result.reused, result.manifest_row().to_line())


def reconcile(element: tuple[str, Iterable[Any]]) -> Iterator[TrackResult]:
    """Exactly one result for a track: its best result, or a failure if none arrived."""
    track_id, values = element
    values = list(values)
    inputs = [v for v in values if isinstance(v, TrackInput)]
    results = sorted((v for v in values if isinstance(v, TrackResult)), key=_preference)
    if not inputs:
        logger.error("a result for %r, which is not an input of this job, was dropped", track_id)
        return
    if len(results) > 1:
        logger.warning("%s: %d results; keeping one (%s)", track_id, len(results), results[0].status)
    if results:
        chosen = results[0]
    else:
        chosen = TrackResult(inputs[0], FAILED, stage="pipeline", error_type="LostResult",
                             error="no result reached the manifest (internal error; see the worker logs)")
    beam.metrics.Metrics.counter("tfaural_jobs", f"tracks_{chosen.status}").inc()
    if chosen.reused:
        beam.metrics.Metrics.counter("tfaural_jobs", "tracks_reused").inc()
    if chosen.status == FAILED:
        beam.metrics.Metrics.counter("tfaural_jobs", f"failed_{chosen.stage}").inc()
    yield chosen


class _WriteManifest(beam.DoFn):
    """All results → the job's summary files (``finalise``), then ``manifest.jsonl``, sorted by track id."""

    def __init__(self, output: str, finalise: Callable[[list[TrackResult]], None] | None) -> None:
        self._output = output
        self._finalise = finalise

    def process(self, element: tuple[str, Iterable[TrackResult]]) -> Iterator[dict[str, int]]:
        results = sorted(element[1], key=lambda r: r.track_id)
        if self._finalise is not None:
            self._finalise(results)
        beam_io.write_text(beam_io.join(self._output, MANIFEST_FILENAME),
                           manifest_text(r.manifest_row() for r in results))
        yield {"ok": sum(r.status == OK for r in results), "failed": sum(r.status == FAILED for r in results)}


class AccountForTracks(beam.PTransform):
    """``(inputs, results)`` → exactly one manifest row per input; writes ``manifest.jsonl``.

    Apply it last: Beam's Dask runner computes only the last transform and what it depends on.

    Args:
        output: The output folder.
        finalise: Called in the final stage with all results (sorted by id) before the
            manifest is written, e.g. to write ``tags.jsonl``; must be picklable.
    """

    def __init__(self, output: str, *, finalise: Callable[[list[TrackResult]], None] | None = None) -> None:
        super().__init__()
        self._output = output
        self._finalise = finalise

    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        inputs, results = pcolls
        expected = inputs | "KeyInputs" >> beam.Map(lambda t: (t.track_id, t))
        received = results | "KeyResults" >> beam.Map(lambda r: (r.track_id, r))
        return (
            (expected, received)
            | "InputsAndResults" >> beam.Flatten()
            | "ByTrack" >> beam.GroupByKey()
            | "OneResultPerTrack" >> beam.FlatMap(reconcile)
            | "KeyAll" >> beam.Map(lambda r: ("manifest", r))
            | "AllResults" >> beam.GroupByKey()
            | "WriteManifest" >> beam.ParDo(_WriteManifest(self._output, self._finalise))
        )


# ---------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------


def prepare_output(
    settings: InferenceSettings,
    *,
    job: str,
    job_settings: dict[str, Any],
    derived: Sequence[str] = (),
) -> None:
    """Checks the output folder against an earlier run and removes files every run rebuilds.

    * An earlier run's ``manifest.jsonl`` or ``job.json`` needs ``--skip-existing``
      (same settings: its complete tracks are kept) or ``--overwrite`` (every track is
      recomputed); without either the job refuses to start.
    * ``derived`` files (globs relative to the folder, e.g. shards) are deleted: the
      job rebuilds them from all tracks.

    Raises:
        ParameterError: If the folder holds another run and neither flag allows it, or
            ``--skip-existing`` is given for a run with other settings or another model.
    """
    job_path = settings.path(JOB_FILENAME)
    manifest_path = settings.path(MANIFEST_FILENAME)
    earlier = beam_io.exists(job_path) or beam_io.exists(manifest_path)
    if earlier and not (settings.skip_existing or settings.overwrite):
        raise ParameterError(f"--output {settings.output} holds the results of an earlier run; pass --skip-existing "
                             "to keep its complete tracks, --overwrite to recompute everything, or choose another "
                             "folder")
    if settings.skip_existing and beam_io.exists(job_path):
        try:
            before = parse_job_record(beam_io.read_text(job_path), path=job_path)
            was: dict[str, Any] = {"job": before.job, "model": before.model, "settings": before.settings}
        except (DataError, OSError, UnicodeDecodeError):
            was = {"job": None, "model": None, "settings": None}
        now = {"job": job, "model": settings.model_identity(), "settings": job_settings}
        if json.loads(json.dumps(now)) != was:
            changed = sorted(k for k in now if json.loads(json.dumps(now[k])) != was[k])
            raise ParameterError(f"--skip-existing: the earlier run in {settings.output} used other {changed} "
                                 f"(see its {JOB_FILENAME}); pass --overwrite to recompute everything")
    stale = [manifest_path] if beam_io.exists(manifest_path) else []
    for pattern in derived:
        stale += beam_io.list_files(settings.path(pattern))
    beam_io.delete(stale)


def write_job_file(settings: InferenceSettings, *, job: str, job_settings: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> str:
    """Writes ``job.json``: the job, its settings, the model (directory and ``metadata.json``), the inputs."""
    record = JobRecord(
        job=job, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        tfaural_version=__version__, input=settings.input_glob, manifest=settings.manifest, model_dir=settings.model,
        model=settings.model_identity(), metadata=settings.metadata.data, settings=job_settings, extra=extra or {},
    )
    return beam_io.write_text(settings.path(JOB_FILENAME), record.to_text())


# ---------------------------------------------------------------------------
# After the run
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a finished run did, read back from its ``manifest.jsonl``.

    Attributes:
        output: The output folder.
        ok: Tracks with results.
        failed: Tracks without.
        reused: Of the ``ok`` tracks, those kept from an earlier run.
        failures: Number of failures by ``"stage: error type"``.
        examples: Up to five failed rows (path and error), for the log.
    """

    output: str
    ok: int
    failed: int
    reused: int
    failures: dict[str, int]
    examples: tuple[tuple[str, str], ...]

    @property
    def total(self) -> int:
        """Tracks in the manifest."""
        return self.ok + self.failed

    def describe(self, job: str) -> str:
        """A few lines for the end of a run."""
        lines = [f"{job}: {self.ok} of {self.total} track(s) ok"
                 + (f" ({self.reused} kept from an earlier run)" if self.reused else "")
                 + f", {self.failed} failed; results in {self.output} "
                 f"(every track is listed in {MANIFEST_FILENAME})"]
        if self.failures:
            lines.append("  failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.failures.items())))
        lines += [f"  {path}: {error}" for path, error in self.examples]
        return "\n".join(lines)


def summarize(output: str) -> Summary:
    """Reads ``OUTPUT/manifest.jsonl`` into a :class:`Summary`.

    Raises:
        TfauralError: If the manifest is missing (the run did not finish).
    """
    path = beam_io.join(output, MANIFEST_FILENAME)
    if not beam_io.exists(path):
        raise TfauralError(f"{path} is missing: the run did not finish (see the log above)")
    rows = parse_manifest(beam_io.read_text(path), path=path)
    failed = [r for r in rows if r.status != OK]
    failures = collections.Counter(f"{r.stage}: {r.error_type}" for r in failed)
    return Summary(
        output=output,
        ok=len(rows) - len(failed),
        failed=len(failed),
        reused=sum(r.reused for r in rows),
        failures=dict(failures),
        examples=tuple((r.path, str(r.error)) for r in failed[:5]),
    )


def wait(result: Any) -> None:
    """Waits for a pipeline result and releases the Dask client the Dask runner leaves open."""
    result.wait_until_finish()
    client = getattr(result, "client", None)
    if client is not None and hasattr(client, "close"):
        client.close()


def configure_runner(
    job: str,
    options: PipelineOptions,
    settings: Any,
    *,
    n_tracks: int,
    local_defaults: bool,
    save_main_session: bool,
    model_process: bool = False,
) -> Any:
    """Runner defaults (every local core unless the user chose) and the runner-adjusted settings.

    Args:
        job: The job's name, for log messages.
        options: The parsed pipeline options (modified in place).
        settings: The job's frozen settings; its ``common`` field is adjusted to the runner.
        n_tracks: Number of tracks, which bounds the useful parallelism.
        local_defaults: Apply :func:`beam_jobs.options.apply_runner_defaults` (not for test pipelines).
        save_main_session: Pickle the caller's ``__main__`` for the workers.
        model_process: The job can run its model in a model process (see
            :meth:`InferenceSettings.for_runner`; :func:`execute` starts it).

    Returns:
        ``settings`` with ``common`` replaced by ``common.for_runner(options)``.
    """
    from apache_beam.options.pipeline_options import SetupOptions

    from beam_jobs.options import apply_runner_defaults, check_runner

    check_runner(options)
    if local_defaults:
        for note in apply_runner_defaults(options, num_items=n_tracks):
            logger.info("%s: %s", job, note)
    options.view_as(SetupOptions).save_main_session = save_main_session
    return dataclasses.replace(settings, common=settings.common.for_runner(options, model_process=model_process))


_MODEL_ERROR_LINE = re.compile(r"^(?:tfaural\.errors\.)?ModelError: (.+)$", re.MULTILINE)


def _model_load_failure(err: BaseException) -> str | None:
    """The message of a :class:`ModelError` that stopped a pipeline (Beam re-raises it as text), if it was one."""
    if isinstance(err, ModelError):
        return str(err)
    found = _MODEL_ERROR_LINE.findall(str(err))
    return found[-1] if found else None


def execute(
    job: str,
    options: PipelineOptions,
    build: Callable[[beam.Pipeline, Any, Any], None],
    tracks: Any,
    settings: Any,
    *,
    test_pipeline: beam.Pipeline | None = None,
    model_signature: str | None = None,
) -> Any:
    """Builds the job's pipeline, runs it to the end and logs what happened to every track.

    Args:
        model_signature: The signature the job calls; when ``settings.common.model_process``
            is set, the model process serving it is started here (or the one ``python -m``
            started before importing Beam is adopted) and ended when the run ends.

    Returns:
        The finished ``PipelineResult``.

    Raises:
        ModelError: If the model process could not load the model (after the run, whose manifest
            lists every track, those that needed the model as failed).
    """
    process = None
    common = settings.common
    if common.model_process and model_signature is not None:
        threads = common.intra_op_threads
        process = (model_processes.take_prestarted(common.model, model_signature, threads)
                   or model_processes.ModelProcess(common.model, model_signature, threads=threads))
        settings = dataclasses.replace(settings, common=dataclasses.replace(common, model_server=process.address))
    try:
        pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
        build(pipeline, tracks, settings)
        with run_folder(job):  # what the worker processes leave in their temporary folder is deleted with it
            try:
                result = pipeline.run()
                wait(result)
            except Exception as err:  # a model loaded in-process (TensorFlow already imported) that failed to
                failure = _model_load_failure(err)  # load stops the pipeline; say so in one line
                if failure is None:
                    raise
                raise ModelError(failure) from None
        load_error = process.load_error() if process is not None else None
    finally:
        if process is not None:
            process.close()
    logger.info("%s", summarize(settings.common.output).describe(job))
    if load_error is not None:  # every track that needed the model failed with it: a setup error, not theirs
        raise ModelError(f"the model {common.model!r} could not be loaded: {load_error}; the tracks that needed it "
                         f"are listed as failed in {common.output}/manifest.jsonl")
    return result


def main_for(job: str, run: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    """The command-line entry point of a job: logging, the run (which logs its summary); exit 2 on a setup error.

    Args:
        job: The job's name, for messages.
        run: The job's ``run(argv)``.
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 when the job ran (failed tracks are listed in the
        manifest and the summary), 2 with a one-line error for a usage or setup error.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not is_verbose(sys.argv[1:] if argv is None else argv):
        logging.getLogger("apache_beam").setLevel(logging.WARNING)  # worker chatter; our own loggers stay at INFO
    try:
        run(argv)
    except TfauralError as err:
        print(f"{job}: error: {err}", file=sys.stderr)
        return 2
    finally:
        model_processes.close_prestarted()  # started by python -m before the flags were checked
    return 0
