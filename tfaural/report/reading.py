"""Reading what the report shows: the auralisation job's output folder and the correlation results.

Everything shared with the jobs (``job.json``, ``manifest.jsonl``, ``<track>/track.json``) is
read with the typed readers of :mod:`tfaural.formats`; this module only resolves the paths those
name (never outside the output folder) and lists what is missing or failed. Never imports
TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from tfaural.errors import DataError, ModelError, ParameterError
from tfaural.formats import (
    JOB_FILE,
    MANIFEST_FILE,
    OK,
    TRACK_FILE,
    ExportMetadata,
    JobRecord,
    finite_or_none,
    parse_job_record,
    parse_manifest,
    parse_track_record,
)

__all__ = [
    "FeatureOutput",
    "TrackOutput",
    "FailedTrack",
    "AuraliseOutput",
    "CorrelationResults",
    "CORRELATION_FILES",
    "load_auralise_output",
    "load_correlation",
    "local_directory",
    "read_json",
]

logger = logging.getLogger("tfaural.report")

CORRELATION_FILES = ("correlations.csv", "summary.json", "figure10.png")


@dataclasses.dataclass(frozen=True)
class FeatureOutput:
    """One auralised feature of one track.

    Attributes:
        layer: Layer number (Choi CNN: 1-5).
        feature: Feature index within the layer, as the job numbered it.
        audio: Absolute path of the auralisation (``None`` when the file is missing).
        spectrogram: Absolute path of the job's spectrogram PNG, if it wrote one.
        activation: The feature's activation strength for this track (``None``: not given).
        peak: Peak amplitude of the auralisation before peak normalisation.
        silent: The deconvolution was all zero.
    """

    layer: int
    feature: int
    audio: str | None
    spectrogram: str | None
    activation: float | None
    peak: float | None
    silent: bool

    @property
    def name(self) -> str:
        """The paper's name, ``"<layer>-<feature>"`` (as in "Feature 2-48")."""
        return f"{self.layer}-{self.feature}"


@dataclasses.dataclass(frozen=True)
class TrackOutput:
    """Everything the job wrote for one track (its ``track.json``, paths made absolute).

    Attributes:
        track_id: The catalogue's track id.
        folder: Name of the track's folder in the output (the job's file-system-safe id).
        directory: Absolute path of that folder.
        source: The input audio path, as the manifest named it.
        sample_rate: Sample rate of the written audio in Hz.
        offset_seconds: Start of the excerpt in the source, in seconds.
        clip_seconds: Length of the excerpt in seconds.
        original: Absolute path of the original excerpt (``None`` when missing).
        original_spectrogram: Absolute path of the job's PNG of the original, if any.
        layers: ``{layer: features sorted by feature index}``.
        tags: ``(label, score)`` of the excerpt's best tags, best first (the job's ``--tags``).
        attribution: ``{label: {layer: ((feature, contribution), ...)}}``: the features contributing
            most to each of those tags, largest first.
        padded_seconds: Zeros at the end of the excerpt, in seconds (a track shorter than the model needs,
            zero-padded by ``--pad-short``).
    """

    track_id: str
    folder: str
    directory: str
    source: str
    sample_rate: int | None
    offset_seconds: float | None
    clip_seconds: float | None
    original: str | None
    original_spectrogram: str | None
    layers: Mapping[int, tuple[FeatureOutput, ...]]
    tags: tuple[tuple[str, float], ...] = ()
    attribution: Mapping[str, Mapping[int, tuple[tuple[int, float], ...]]] = dataclasses.field(default_factory=dict)
    padded_seconds: float = 0.0

    def feature(self, layer: int, feature: int) -> FeatureOutput | None:
        """The given feature, or ``None`` if it was not auralised for this track."""
        for item in self.layers.get(layer, ()):
            if item.feature == feature:
                return item
        return None


@dataclasses.dataclass(frozen=True)
class FailedTrack:
    """A manifest entry without a usable result, or a problem with a track's result (a file it names outside the
    output folder)."""

    track_id: str
    path: str
    error: str


@dataclasses.dataclass(frozen=True)
class AuraliseOutput:
    """An auralisation job's output folder, read by :func:`load_auralise_output`.

    Attributes:
        directory: Absolute path of the folder.
        job: The content of ``job.json`` (``{}`` if absent).
        tracks: Tracks with results, sorted by track id.
        failed: Manifest entries that failed, or whose results are missing, and tracks whose
            ``track.json`` names files outside the folder (not linked).
    """

    directory: str
    job: JobRecord | None
    tracks: tuple[TrackOutput, ...]
    failed: tuple[FailedTrack, ...]

    @functools.cached_property
    def metadata(self) -> ExportMetadata | None:
        """The export's ``metadata.json`` as recorded in ``job.json`` (``None`` if absent or not readable)."""
        if self.job is None or self.job.metadata is None:
            return None
        try:
            return ExportMetadata.from_dict(self.job.metadata,
                                            path=os.path.join(self.directory, JOB_FILE) + " (metadata)")
        except ModelError as err:
            logger.warning("%s; the report shows no model card", err)
            return None

    @functools.cached_property
    def layer_names(self) -> dict[int, str]:
        """The model's name of each layer (e.g. ``{3: "res1b"}``), as ``job.json`` records them: its own
        ``layer_names`` (``python -m tfaural.listen``) or the export's metadata's (the Beam job); ``{}`` if
        neither does. The report heads each layer with its number and this name: a level numbered past the
        model's conv blocks (``--extra-levels``, e.g. a transformer block) says little by its number alone."""
        recorded = self.job.extra.get("layer_names") if self.job is not None else None
        if not isinstance(recorded, Mapping):
            recorded = self.metadata.layer_names if self.metadata is not None else None
        names: dict[int, str] = {}
        for layer, name in (recorded or {}).items():
            try:
                names[int(layer)] = str(name)
            except (TypeError, ValueError):
                logger.warning("%s: layer_names has a layer %r that is not a number; the report leaves it out",
                               os.path.join(self.directory, JOB_FILE), layer)
        return names

    def layers(self) -> list[int]:
        """Every layer auralised for at least one track, ascending."""
        return sorted({layer for track in self.tracks for layer in track.layers})

    def features(self, layer: int) -> list[int]:
        """Every feature of ``layer`` auralised for at least one track, ascending."""
        return sorted({item.feature for track in self.tracks for item in track.layers.get(layer, ())})


def local_directory(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if "://" in text:
        raise ParameterError(
            f"{what} {text!r} is a URI: expected a local folder (python -m tfaural.report and write_report take "
            "a URI: they copy the folder to this machine first)"
        )
    if not os.path.isdir(text):
        raise ParameterError(f"{what} {text!r} does not exist or is not a folder")
    return os.path.abspath(text)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None


def _inside(path: str, root: str) -> bool:
    """True if ``path`` (symbolic links resolved) is ``root`` or lies below it."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _existing_file(folder: str, relative: Any, *, what: str, required: bool, root: str,
                   problems: list[str]) -> str | None:
    """The file ``relative`` to ``folder`` if it exists and lies inside ``root`` (the output folder).

    A name that leads out of ``root`` (an absolute path, ``../..``, a symbolic link pointing
    elsewhere) is never linked: it is added to ``problems`` for the page to report.
    """
    if not relative:
        return None
    path = os.path.normpath(os.path.join(folder, str(relative)))
    if not _inside(path, root):
        problems.append(f"track.json names {str(relative)!r} as the {what}, a file outside the auralisation output "
                        "folder: not linked")
        logger.warning("%s: %s %r lies outside %s; not linked", os.path.join(folder, "track.json"), what,
                       str(relative), root)
        return None
    if os.path.isfile(path):
        return path
    if required:
        logger.warning("%s is missing: %s", what, path)
    return None


def _read_track(directory: str, folder: str, problems: list[str]) -> TrackOutput:
    """Reads ``directory/folder/track.json``; files it names outside ``directory`` are left out and described
    in ``problems``."""
    track_dir = os.path.join(directory, folder)
    path = os.path.join(track_dir, TRACK_FILE)
    existing = functools.partial(_existing_file, root=directory, problems=problems)
    record = parse_track_record(_read_text(path), path=path)
    layers = {
        layer: tuple(sorted((
            FeatureOutput(
                layer=layer, feature=item.feature,
                audio=existing(track_dir, item.file, what=f"audio of feature {layer}-{item.feature}", required=True),
                spectrogram=existing(track_dir, item.spectrogram,
                                     what=f"spectrogram of feature {layer}-{item.feature}", required=True),
                activation=item.activation, peak=item.peak, silent=item.silent,
            ) for item in items), key=lambda f: f.feature))
        for layer, items in sorted(record.layers.items())
    }
    attribution = {label: dict(sorted(per_layer.items())) for label, per_layer in (record.attribution or {}).items()}
    return TrackOutput(
        track_id=record.track_id or folder,
        folder=folder,
        directory=track_dir,
        source=record.path,
        sample_rate=record.sample_rate,
        offset_seconds=record.offset_seconds,
        clip_seconds=record.clip_seconds,
        original=existing(track_dir, record.original, what="original excerpt", required=True),
        original_spectrogram=existing(track_dir, record.original_spectrogram,
                                      what="spectrogram of the original", required=True),
        layers=layers,
        padded_seconds=record.padded_seconds,
        tags=record.tags,
        attribution=attribution,
    )


def load_auralise_output(directory: str | os.PathLike[str]) -> AuraliseOutput:
    """Reads an auralisation job's output folder.

    Args:
        directory: The folder ``beam_jobs.auralise`` wrote (``--output``).

    Returns:
        An :class:`AuraliseOutput`. Missing audio or PNG files are logged and left out; a
        ``track.json`` that names files outside ``directory`` is listed among the failures
        (those files are never linked).

    Raises:
        ParameterError: If the folder does not exist or is a URI.
        DataError: If it holds no auralisation output (nothing of one, or the output of another
            job such as ``beam_jobs.tag``), or a JSON file is malformed.
    """
    directory = local_directory(directory, "auralisation output")
    job_path = os.path.join(directory, JOB_FILE)
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    job = parse_job_record(_read_text(job_path), path=job_path) if os.path.isfile(job_path) else None
    if job is not None and job.job != "auralise":
        raise DataError(f"{directory} is the output of beam_jobs.{job.job}, not an auralisation output (the report "
                        "shows what python -m beam_jobs.auralise wrote)")
    manifest = parse_manifest(_read_text(manifest_path), path=manifest_path) if os.path.isfile(manifest_path) else []
    problems: dict[str, list[str]] = {}
    tracks = [
        _read_track(directory, name, problems.setdefault(name, []))
        for name in sorted(os.listdir(directory))
        if os.path.isfile(os.path.join(directory, name, TRACK_FILE))
    ]
    if job is None and not manifest and not tracks:
        raise DataError(
            f"{directory} is not an auralisation output: it has no job.json, manifest.jsonl or */track.json "
            "(write one with python -m beam_jobs.auralise)"
        )
    listed = [output for entry in manifest if entry.status == OK for output in entry.outputs]
    if not tracks and listed and not any(str(output).endswith("/track.json") for output in listed):
        raise DataError(f"{directory} is not an auralisation output: its manifest.jsonl lists no track.json among "
                        "the outputs of its tracks (the report shows what python -m beam_jobs.auralise wrote)")
    have_ids = {track.track_id for track in tracks}
    have_folders = {track.folder for track in tracks}
    failed = []
    for entry in manifest:
        if entry.status == OK:
            if (entry.name not in have_folders) if entry.name else (entry.track_id not in have_ids):
                failed.append(FailedTrack(entry.track_id, entry.path, "listed as done but its track.json is missing"))
        else:
            failed.append(FailedTrack(entry.track_id, entry.path, entry.describe_failure()))
    for track in tracks:
        failed += [FailedTrack(track.track_id, track.source, problem) for problem in problems.get(track.folder, [])]
    tracks.sort(key=lambda t: (t.track_id.casefold(), t.folder))
    failed.sort(key=lambda f: (f.track_id.casefold(), f.path))
    return AuraliseOutput(directory=directory, job=job, tracks=tuple(tracks), failed=tuple(failed))


@dataclasses.dataclass(frozen=True)
class CorrelationResults:
    """The correlation analysis' output folder.

    Attributes:
        directory: Absolute path of the folder.
        columns: Column names of ``correlations.csv``.
        rows: Its rows, sorted by layer and attribute.
        summary: The content of ``summary.json`` (``None`` if absent).
        figure: Absolute path of ``figure10.png`` (``None`` if absent).
    """

    directory: str
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    summary: Any
    figure: str | None


def _row_order(row: Mapping[str, str]) -> tuple[float, str]:
    layer = finite_or_none(row.get("layer"))
    return (layer if layer is not None else math.inf, str(row.get("attribute", "")))


def load_correlation(directory: str | os.PathLike[str]) -> CorrelationResults:
    """Reads ``correlations.csv``, ``summary.json`` and ``figure10.png`` (each optional, not all absent).

    Raises:
        ParameterError: If the folder does not exist.
        DataError: If it holds none of the three files, or one is malformed.
    """
    directory = local_directory(directory, "correlation results")
    table = os.path.join(directory, "correlations.csv")
    columns: tuple[str, ...] = ()
    rows: list[dict[str, str]] = []
    if os.path.isfile(table):
        with open(table, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = tuple(reader.fieldnames or ())
            rows = [dict(row) for row in reader]
        if not columns:
            raise DataError(f"{table}: no header row (expected layer, attribute, mean, std, n_pairs, n_undefined)")
    summary_path = os.path.join(directory, "summary.json")
    summary = read_json(summary_path) if os.path.isfile(summary_path) else None
    figure = os.path.join(directory, "figure10.png")
    if not columns and summary is None and not os.path.isfile(figure):
        raise DataError(f"{directory} holds no correlation results (none of {', '.join(CORRELATION_FILES)})")
    return CorrelationResults(
        directory=directory,
        columns=columns,
        rows=tuple(sorted(rows, key=_row_order)),
        summary=summary,
        figure=figure if os.path.isfile(figure) else None,
    )
