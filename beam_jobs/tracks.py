"""The tracks of a job: listing them from a glob or a manifest, their output names, decoding them.

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
* **Into the pipeline.** :class:`ListInputs` puts the listed inputs into the pipeline:
  inside it (``beam.Create``) while they are few, else through files in the output
  folder's ``.inputs/``, because a runner receives the pipeline, inline values and all, in
  one request, and Dataflow refuses a job graph over 10 MB (some tens of thousands of tracks).
* **Outcomes.** A :class:`TrackResult` is what became of a track: one line of
  ``manifest.jsonl`` (:mod:`beam_jobs.accounting`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np

from beam_jobs import io as beam_io
from beam_jobs.options import DASK_PARTITIONS
from tfaural.data.catalogue import MAX_NAME_LENGTH, output_names
from tfaural.errors import AudioDecodeError, DataError, ParameterError
from tfaural.formats import OK, ManifestRow, json_lines

__all__ = [
    "MAX_NAME_LENGTH",
    "TrackInput",
    "TrackResult",
    "glob_prefix",
    "output_names",
    "list_tracks",
    "decode_track",
    "check_source",
    "INPUTS_FOLDER",
    "ListInputs",
]

logger = logging.getLogger(__name__)


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
        problem: Why it cannot be read, known from listing it (a local file name that is not UTF-8,
            given in ``path`` with its bytes escaped): it fails at decoding with this reason.
    """

    path: str
    track_id: str
    name: str
    problem: str | None = None

    def check_listed(self) -> None:
        """Raises the :attr:`problem` found while listing the track, if any.

        Raises:
            AudioDecodeError: Naming the file and the problem.
        """
        if self.problem is not None:
            raise AudioDecodeError(self.path, self.problem)


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
    >>> glob_prefix("/data/{rock,jazz}/*.flac")
    '/data/'
    """
    heads = [head[: head.rfind("/") + 1]  # braces: the folder their alternatives share
             for head in map(beam_io.literal_prefix, beam_io.glob_variants(pattern))]
    common = os.path.commonprefix(heads)  # noqa: RUF071 (characters, then cut at a "/": URIs too)
    return common[: common.rfind("/") + 1]


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
    problems: dict[str, str] = {}
    if manifest is not None:
        catalogue = read_manifest(manifest, require_labels=False, check_files=False,  # missing files: failed rows
                                  read_text=beam_io.read_text)
        pairs = [(t.path, t.track_id) for t in catalogue.tracks]
        if not pairs:
            raise ParameterError(f"--manifest {manifest} lists no tracks")
    else:
        assert input_glob is not None
        paths = beam_io.list_files(input_glob)
        if not paths and beam_io.is_local(input_glob) and os.path.isdir(input_glob):
            folder = input_glob.rstrip("/" + os.sep) or input_glob
            raise ParameterError(f"--input {input_glob!r} is a folder and matches no file; give a glob of its audio "
                                 f"files, e.g. --input '{folder}/**' (every file below it) or '{folder}/*.flac'")
        if not paths and "[" in input_glob and "[[]" not in input_glob:
            escaped = input_glob.replace("[", "[[]")  # every "[" literal
            if beam_io.list_files(escaped):
                raise ParameterError(f"--input {input_glob!r} matched no files: '[...]' is a set of characters in a "
                                     f"glob; for names with brackets, write '[' as '[[]': --input '{escaped}'")
        if not paths:
            raise ParameterError(f"--input {input_glob!r} matched no files (quote the glob so that the shell does "
                                 "not expand it; '**/' matches any number of folders, '{mp3,flac}' either extension)")
        if output is not None:
            own = [p for p in paths if _located_in(p, output)]
            if own:
                logger.warning("--input %r: %d matched file(s) inside --output %s are left out (the job's own "
                               "outputs, e.g. %s)", input_glob, len(own), output, own[0])
                left_out = set(own)
                paths = [p for p in paths if p not in left_out]
            if not paths:
                raise ParameterError(f"--input {input_glob!r} matched only files inside --output {output}; give the "
                                     "audio files and the output folder separate places")
        paths, problems = _utf8_names(paths)
        prefix = glob_prefix(input_glob)
        relative = [p[len(prefix):] if prefix and p.startswith(prefix) else p for p in paths]
        relative = [p.replace("\\x", "_x") if path in problems else p for p, path in zip(relative, paths)]
        pairs = list(zip(paths, default_track_ids(relative)))
    names = output_names([track_id for _, track_id in pairs], reserved=reserved)
    tracks = [TrackInput(path=path, track_id=track_id, name=name, problem=problems.get(path))
              for (path, track_id), name in zip(pairs, names)]
    return sorted(tracks, key=lambda t: t.track_id)


def _utf8_names(paths: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``paths`` as UTF-8 text, and the problem of each that was not.

    A local file name need not be UTF-8 (Python gives its other bytes as lone surrogates,
    ``'caf\\udce9.wav'``), but a job's manifest, records and pipeline elements are UTF-8 text:
    such a path is given with its bytes escaped (``'caf\\\\xe9.wav'``) and fails as a track of its own.
    """
    shown, problems = [], {}
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(path)
            path = raw.decode("utf-8", "backslashreplace")
            problems[path] = (f"its name is not UTF-8 (the bytes {os.path.basename(raw)!r}), which the job's "
                              "manifest and outputs cannot hold; rename the file to UTF-8 (e.g. with convmv, "
                              "or from a system whose encoding it is)")
        shown.append(path)
    return shown, problems


def check_source(recorded: str | None, track: TrackInput, *, result: str) -> None:
    """Checks that a result of an earlier run was made from ``track``'s file as it is now (``--skip-existing``).

    Args:
        recorded: The :func:`beam_jobs.io.source_stamp` the result records (``None``: none, as results
            of runs before stamps were recorded).
        track: The track.
        result: The result's file, for the message.

    Raises:
        DataError: If the file's stamp is not the recorded one, naming both.
    """
    if recorded is None:
        raise DataError(f"{result}: records no size and time of {track.path} (made before tfaural recorded them), "
                        "so whether the file changed since is unknown")
    now = beam_io.source_stamp(track.path)
    if now != recorded:
        raise DataError(f"{result}: was made from {track.path} as it was then ({recorded}); it is now "
                        f"{now or 'not readable'}")


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
    track.check_listed()
    y, _ = beam_io.load_audio(track.path, sample_rate=sample_rate, min_samples=min_samples, offset=offset,
                              duration=duration)
    return y


# ---------------------------------------------------------------------------
# Inputs into the pipeline
# ---------------------------------------------------------------------------

INPUTS_FOLDER = ".inputs"
"""Where, in a job's output folder, :class:`ListInputs` writes inputs too many to travel inside the pipeline;
the job deletes it when the run ends (:meth:`beam_jobs.job.Job.scratch_folders`)."""

INLINE_INPUTS_BYTES = 1 << 20
"""The most a job's inputs (as JSON lines) may take inside the pipeline itself. A runner receives the whole
pipeline, ``beam.Create``'s values included, in one request; Dataflow refuses a job graph over 10 MB, which a
catalogue of some tens of thousands of tracks reaches (tests/beam_jobs/test_runners.py: 20,000 tracks with
varied paths take over 4 MB inline)."""

INPUTS_PER_FILE = 5_000
"""The most inputs per file of ``.inputs/`` (~1 MiB of JSON): each file is one element of the pipeline's
``Create``, read by one worker."""

INPUT_FILES_AT_LEAST = DASK_PARTITIONS
"""Fewest files in ``.inputs/`` (fewer only for fewer inputs): on the Dask runner, where ``Reshuffle`` does
nothing, a file's inputs stay in one partition, so there are as many files as the runner's default partitions."""


def _input_line(item: Any) -> str:
    return json.dumps(dataclasses.asdict(item), ensure_ascii=False, sort_keys=True)


class _ReadInputs:
    """One file of ``.inputs/`` -> its inputs, rebuilt as ``kind`` (a frozen dataclass of str, None, tuples)."""

    def __init__(self, kind: type) -> None:
        self._kind = kind

    def __call__(self, path: str) -> Iterator[Any]:
        for line in json_lines(beam_io.read_text(path)):
            if not line:
                continue
            fields = json.loads(line)
            yield self._kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


class ListInputs(beam.PTransform):
    """A job's inputs (frozen dataclasses of one type, e.g. :class:`TrackInput`) as the pipeline's first
    PCollection, whatever their number.

    Up to :data:`INLINE_INPUTS_BYTES` (as JSON lines) they are a ``beam.Create``. Beyond it the launcher
    writes them to ``folder`` (``inputs-NNNNN.jsonl``: at most :data:`INPUTS_PER_FILE` each, at least
    :data:`INPUT_FILES_AT_LEAST` files) and the pipeline creates only those files' names, which the workers
    read: the pipeline's size no longer grows with the catalogue.
    The folder must be one the workers reach (the job's output folder) and deleted after the run.

    Args:
        items: The inputs (at least one).
        folder: Where to write them if they are too many to go inline.
    """

    def __init__(self, items: Sequence[Any], *, folder: str) -> None:
        super().__init__()
        if not items:
            raise ParameterError("ListInputs: no inputs")
        self._items = list(items)
        self._folder = folder

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        kind = type(self._items[0])
        lines = [_input_line(item) for item in self._items]
        if sum(len(line.encode("utf-8")) + 1 for line in lines) <= INLINE_INPUTS_BYTES:
            return pbegin | "Inline" >> beam.Create(self._items).with_output_types(kind)
        n_files = min(len(lines), max(INPUT_FILES_AT_LEAST, -(-len(lines) // INPUTS_PER_FILE)))
        bounds = [len(lines) * index // n_files for index in range(n_files + 1)]  # sizes differ by one at most
        paths = []
        for index in range(n_files):
            path = beam_io.join(self._folder, f"inputs-{index:05d}.jsonl")
            beam_io.write_text(path, "".join(line + "\n" for line in lines[bounds[index]:bounds[index + 1]]))
            paths.append(path)
        logger.info("%d inputs travel through %d file(s) in %s", len(lines), len(paths), self._folder)
        return (pbegin
                | "InputFiles" >> beam.Create(paths)
                | "ReadInputs" >> beam.FlatMap(_ReadInputs(kind)).with_output_types(kind))
