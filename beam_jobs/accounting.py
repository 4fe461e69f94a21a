"""An account of every track: the output folder's ``job.json`` and ``manifest.jsonl``, and the run's summary.

* :func:`prepare_output` checks the output folder against an earlier run
  (``--skip-existing`` / ``--overwrite``) and :func:`write_job_file` writes
  ``job.json`` (settings, the model's metadata) when the job starts.
* :class:`AccountForTracks` joins the list of inputs with the results, so that
  ``manifest.jsonl`` lists every input exactly once, ``ok`` with its outputs or
  ``failed`` with the reason (a track that lost its result on the way is listed
  as failed too), and counts them in Beam metrics. It is applied last, and writes
  nothing from ``finish_bundle``: Beam's Dask runner computes only the last
  transform of a pipeline and drops ``finish_bundle`` output. ``manifest.jsonl`` is
  written last: its presence means the run finished. Its final stage sees every result
  but holds at most :data:`RESULTS_IN_MEMORY` of them: more are sorted in runs spilled to
  the worker's temporary disk and merged (:class:`SortedResults`), and the manifest (and
  ``finalise``'s tables) are written a line at a time.
* :func:`summarize` reads a finished run's manifest back for the log, a line at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import heapq
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations

from beam_jobs import io as beam_io
from beam_jobs import scratch
from beam_jobs.settings import InferenceSettings
from beam_jobs.tracks import TrackInput, TrackResult
from tfaural import __version__
from tfaural.config import describe_differences
from tfaural.errors import DataError, ParameterError, TfauralError
from tfaural.formats import (
    FAILED,
    JOB_FILE,
    MANIFEST_FILE,
    OK,
    JobRecord,
    iter_manifest,
    parse_job_record,
)

__all__ = [
    "RESULTS_IN_MEMORY",
    "SortedResults",
    "AccountForTracks",
    "reconcile",
    "prepare_output",
    "write_job_file",
    "Summary",
    "summarize",
]

logger = logging.getLogger(__name__)


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


RESULTS_IN_MEMORY = 20_000
"""The most results the final stage holds in memory (a few kB each at most: a track's paths, names and, for
``tag``, its scores); a run with more sorts them in runs of this many, spilled to the worker's temporary disk."""


def _track_id(result: TrackResult) -> str:
    return result.track_id


class SortedResults:
    """A run's results sorted by track id: re-iterable, never all in memory at once.

    Up to ``in_memory`` results are sorted in memory. More are sorted in runs of ``in_memory``,
    each pickled to a file in a temporary folder, and every iteration merges the runs
    (``heapq.merge``: one result per run in memory). Use it as a context manager: the folder is
    deleted on exit.

    Args:
        results: The results, in any order (read once).
        in_memory: The most results held in memory.
    """

    def __init__(self, results: Iterable[TrackResult], *, in_memory: int = RESULTS_IN_MEMORY) -> None:
        self._folder: str | None = None
        self._runs: list[str] = []
        self._held: list[TrackResult] = []
        self.count = 0
        try:
            for result in results:
                self._held.append(result)
                self.count += 1
                if len(self._held) >= in_memory:
                    self._spill()
            if self._runs and self._held:
                self._spill()
            self._held.sort(key=_track_id)
        except BaseException:
            self.close()
            raise

    def _spill(self) -> None:
        self._held.sort(key=_track_id)
        if self._folder is None:
            # Named as the job's run folders (beam_jobs.scratch), so a killed job's spill goes with them.
            self._folder = tempfile.mkdtemp(prefix=f"{scratch.PREFIX}{os.getpid()}-results-")
        path = os.path.join(self._folder, f"run-{len(self._runs):05d}.pickle")
        with open(path, "wb") as handle:
            pickler = pickle.Pickler(handle, protocol=pickle.HIGHEST_PROTOCOL)
            for result in self._held:
                pickler.dump(result)
                pickler.clear_memo()  # the memo would keep every result of the run alive
        self._runs.append(path)
        self._held = []

    @staticmethod
    def _read(path: str) -> Iterator[TrackResult]:
        with open(path, "rb") as handle:
            while True:
                try:
                    yield pickle.load(handle)
                except EOFError:  # the end of the run
                    return

    @property
    def spilled_runs(self) -> int:
        """How many sorted runs went to disk (0: all in memory)."""
        return len(self._runs)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[TrackResult]:
        if not self._runs:
            return iter(self._held)
        return heapq.merge(*(self._read(path) for path in self._runs), key=_track_id)

    def close(self) -> None:
        """Deletes the spilled runs."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> SortedResults:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class _WriteManifest(beam.DoFn):
    """All results → the job's summary files (``finalise``), then ``manifest.jsonl``, sorted by track id, a line
    at a time (:class:`SortedResults`)."""

    def __init__(self, output: str, finalise: Callable[[Iterable[TrackResult]], None] | None,
                 in_memory: int) -> None:
        self._output = output
        self._finalise = finalise
        self._in_memory = in_memory

    def process(self, element: tuple[str, Iterable[TrackResult]]) -> Iterator[dict[str, int]]:
        counts = collections.Counter[str]()
        with SortedResults(element[1], in_memory=self._in_memory) as results:
            if self._finalise is not None:
                self._finalise(results)
            with beam_io.created_atomically(beam_io.join(self._output, MANIFEST_FILE)) as handle:
                for result in results:
                    handle.write(result.manifest_row().to_line().encode("utf-8"))
                    counts[result.status] += 1
        yield {"ok": counts[OK], "failed": counts[FAILED]}


class AccountForTracks(beam.PTransform):
    """``(inputs, results)`` → exactly one manifest row per input; writes ``manifest.jsonl``.

    Apply it last: Beam's Dask runner computes only the last transform and what it depends on.

    Args:
        output: The output folder.
        finalise: Called in the final stage with all results (sorted by id; an iterable that may be
            iterated again but is not a list) before the manifest is written, e.g. to write
            ``tags.jsonl``; must be picklable.
    """

    def __init__(self, output: str, *, finalise: Callable[[Iterable[TrackResult]], None] | None = None) -> None:
        super().__init__()
        self._output = output
        self._finalise = finalise
        self._in_memory = RESULTS_IN_MEMORY  # read now: the workers get the value the launcher had

    @no_annotations  # a tuple of PCollections: Beam would warn that it ignores the hint, on every run
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
            | "WriteManifest" >> beam.ParDo(_WriteManifest(self._output, self._finalise, self._in_memory))
        )


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
    job_path = settings.path(JOB_FILE)
    manifest_path = settings.path(MANIFEST_FILE)
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
        now = json.loads(json.dumps(now))
        if now != was:
            raise ParameterError(f"--skip-existing: the earlier run in {settings.output} differs: "
                                 f"{describe_differences(was, now)} (see its {JOB_FILE}); run it again as it was, or "
                                 "pass --overwrite to recompute everything")
    stale = [manifest_path] if beam_io.exists(manifest_path) else []
    for pattern in derived:
        stale += beam_io.list_files(beam_io.join(beam_io.escape(settings.output), pattern))
    beam_io.delete(stale)


def write_job_file(settings: InferenceSettings, *, job: str, job_settings: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> str:
    """Writes ``job.json``: the job, its settings, the model (directory and ``metadata.json``), the inputs."""
    record = JobRecord(
        job=job, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        tfaural_version=__version__, input=settings.input_glob, manifest=settings.manifest, model_dir=settings.model,
        model=settings.model_identity(), metadata=settings.metadata.data, settings=job_settings, extra=extra or {},
    )
    return beam_io.write_text(settings.path(JOB_FILE), record.to_text())


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
        first_errors: The error of the first failed row of each key of ``failures``.
    """

    output: str
    ok: int
    failed: int
    reused: int
    failures: dict[str, int]
    examples: tuple[tuple[str, str], ...]
    first_errors: dict[str, str]

    @property
    def total(self) -> int:
        """Tracks in the manifest."""
        return self.ok + self.failed

    def describe(self, job: str) -> str:
        """A few lines for the end of a run."""
        lines = [f"{job}: {self.ok} of {self.total} track(s) ok"
                 + (f" ({self.reused} kept from an earlier run)" if self.reused else "")
                 + f", {self.failed} failed; results in {self.output} "
                 f"(every track is listed in {MANIFEST_FILE})"]
        if self.failures:
            lines.append("  failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.failures.items())))
        lines += [f"  {path}: {error}" for path, error in self.examples]
        if self.failed > len(self.examples):
            lines.append(f"  ... and {self.failed - len(self.examples)} more failed track(s): their rows in "
                         f"{MANIFEST_FILE} have \"status\": \"failed\"")
        return "\n".join(lines)


def summarize(output: str) -> Summary:
    """Reads ``OUTPUT/manifest.jsonl`` into a :class:`Summary`, a line at a time.

    Raises:
        TfauralError: If the manifest is missing (the run did not finish).
    """
    path = beam_io.join(output, MANIFEST_FILE)
    if not beam_io.exists(path):
        raise TfauralError(f"{path} is missing: the run did not finish (see the log above)")
    ok = reused = 0
    failures: collections.Counter[str] = collections.Counter()
    examples: list[tuple[str, str]] = []
    first_errors: dict[str, str] = {}
    with beam_io.open_text(path) as lines:
        for row in iter_manifest(lines, path=path):
            if row.status == OK:
                ok += 1
                reused += row.reused
                continue
            kind = f"{row.stage}: {row.error_type}"
            failures[kind] += 1
            first_errors.setdefault(kind, str(row.error))
            if len(examples) < 5:
                examples.append((row.path, str(row.error)))
    return Summary(output=output, ok=ok, failed=sum(failures.values()), reused=reused, failures=dict(failures),
                   examples=tuple(examples), first_errors=first_errors)

