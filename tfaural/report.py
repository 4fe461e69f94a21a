"""The listening report: a static web site of what the auralisation job wrote.

    python -m tfaural.report AURALISE_OUTPUT_DIR [--output REPORT_DIR] [--correlation DIR] [--title TEXT]

People understand learnt features by *listening while looking*; Choi et al.
(2015) published their auralisations as a web page with players next to
spectrograms. This module turns the output folder of ``beam_jobs.auralise``
(``job.json``, ``manifest.jsonl`` and one folder per track with ``track.json``,
``original.wav`` and ``layer<L>/feature<K>.wav``) into such a page, as plain
files (default ``REPORT_DIR = AURALISE_OUTPUT_DIR/report``)::

    index.html                       model card, auralisation settings, tracks (first page), failed
                                     tracks, correlations (with --correlation), feature index
    tracks-<n>.html                  further pages of the track list
    tracks/<track>.html              one track: the original excerpt, then every layer's feature
                                     cards (spectrogram, player, "Feature L-K", activation, or the
                                     auralisation's peak when the job recorded no activations)
    features/layer<L>-feature<K>.html[, ...-page<n>.html]
                                     one feature across all tracks, next to each original
                                     (the layout of the paper's Figures 3 and 5-8)
    correlation/                     copies of figure10.png, correlations.csv, summary.json
    assets/style.css, report.js      no framework, no network; everything is visible without JavaScript
    thumbs/                          spectrogram thumbnails rendered here + cache.json

Audio files (and spectrogram PNGs the job wrote with ``--spectrograms``) are not
copied: pages link to them with relative, URL-quoted paths, so the report works
from ``file://`` and from any static host that serves a folder holding both.

**Thumbnails.** When the job wrote no PNG for an audio file, one is rendered
from the WAV/FLAC (:mod:`tfaural.audio`, :func:`tfaural.spectral.stft` with the
model's STFT settings): power spectrogram in dB relative to a full-scale sine
(dBFS), magma colour map, low frequencies at the bottom. Every image of one
layer (and all originals) shares one colour scale: its top is the loudest bin
of that layer over all tracks, rounded up to 5 dB, and it spans
``dynamic_range_db`` below. ``thumbs/cache.json`` remembers each source's size,
modification time, loudest bin and the scale it was drawn with, so a rerun
renders only what changed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import functools
import html
import io
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from tfaural import files
from tfaural._version import __version__
from tfaural.cli import add_verbose_flag, check_output_folder
from tfaural.errors import DataError, ModelError, ParameterError, TfauralError
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
    "DEFAULT_TRACKS_PER_PAGE",
    "FeatureOutput",
    "TrackOutput",
    "FailedTrack",
    "AuraliseOutput",
    "CorrelationResults",
    "ThumbnailSettings",
    "load_auralise_output",
    "load_correlation",
    "thumbnail_settings",
    "spectrogram_image",
    "render_thumbnails",
    "write_report",
    "main",
]

logger = logging.getLogger("tfaural.report")

DEFAULT_TRACKS_PER_PAGE = 50
DEFAULT_TITLE = "Listening report"
ASSET_FILES = ("style.css", "report.js")
THUMBS_DIR = "thumbs"
CACHE_FILE = "cache.json"
CACHE_FORMAT = 1
ORIGINAL_GROUP = "original"
CORRELATION_FILES = ("correlations.csv", "summary.json", "figure10.png")
_RESERVED = ("index.html", "assets", "tracks", "features", "thumbs", "correlation")
BROWSER_MIN_SAMPLE_RATE = 3000  # Chromium's media pipeline rejects audio sampled below this (in Hz)
_DB_FLOOR = -120.0
_SCALE_STEP_DB = 5.0
_IMAGE_MEMORY_BYTES = 256 * 2**20  # images kept between measuring and drawing (float16)


# ============================================================================ the auralisation output


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

    def layers(self) -> list[int]:
        """Every layer auralised for at least one track, ascending."""
        return sorted({layer for track in self.tracks for layer in track.layers})

    def features(self, layer: int) -> list[int]:
        """Every feature of ``layer`` auralised for at least one track, ascending."""
        return sorted({item.feature for track in self.tracks for item in track.layers.get(layer, ())})


#: Features listed per tag and layer on a track page.
TAG_FEATURES_SHOWN = 5


def _local_directory(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if "://" in text:
        raise ParameterError(
            f"{what} {text!r} is a URI: the report is written from a local folder; copy it first "
            "(e.g. gsutil -m cp -r URI .)"
        )
    if not os.path.isdir(text):
        raise ParameterError(f"{what} {text!r} does not exist or is not a folder")
    return os.path.abspath(text)


def _read_json(path: str) -> Any:
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
    directory = _local_directory(directory, "auralisation output")
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


# ============================================================================ correlation results


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
    directory = _local_directory(directory, "correlation results")
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
    summary = _read_json(summary_path) if os.path.isfile(summary_path) else None
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


# ============================================================================ thumbnails


@dataclasses.dataclass(frozen=True)
class ThumbnailSettings:
    """How thumbnails are drawn (changing any of these redraws every thumbnail).

    Attributes:
        n_fft: FFT size in samples.
        hop_length: Hop in samples.
        dynamic_range_db: Span of the colour scale below its top, in dB.
        max_width: Widest image in pixels (longer excerpts are averaged over frames).
        max_height: Tallest image in pixels (finer STFTs are averaged over bins).
        colormap: Matplotlib colour map.
    """

    n_fft: int = 512
    hop_length: int = 128
    dynamic_range_db: float = 80.0
    max_width: int = 480
    max_height: int = 320
    colormap: str = "magma"

    def __post_init__(self) -> None:
        if self.n_fft < 2 or self.hop_length < 1 or self.dynamic_range_db <= 0:
            raise ParameterError(
                f"n_fft={self.n_fft}, hop_length={self.hop_length}, dynamic_range_db={self.dynamic_range_db}: "
                "expected n_fft >= 2, hop_length >= 1 and a positive dynamic range"
            )
        if self.max_width < 8 or self.max_height < 8:
            raise ParameterError(f"max_width={self.max_width}, max_height={self.max_height}: expected >= 8 pixels")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def thumbnail_settings(metadata: ExportMetadata | None, *, dynamic_range_db: float = 80.0) -> ThumbnailSettings:
    """Thumbnail settings for a model: its own STFT, or ~46 ms frames for waveform models.

    Args:
        metadata: The export's ``metadata.json`` (``sample_rate`` and ``stft`` are used; ``None``: unknown model).
        dynamic_range_db: Span of the colour scale in dB.
    """
    stft = metadata.stft if metadata is not None else None
    n_fft = int(stft.get("n_fft") or 0) if stft else 0
    hop = int(stft.get("hop_length") or 0) if stft else 0
    if n_fft < 2:
        sample_rate = metadata.sample_rate if metadata is not None else 22050
        n_fft = 2 ** max(3, round(math.log2(sample_rate * 0.046)))
        hop = 0
    return ThumbnailSettings(n_fft=n_fft, hop_length=hop if hop > 0 else max(1, n_fft // 4),
                             dynamic_range_db=dynamic_range_db)


def _pool(power: np.ndarray, axis: int, limit: int) -> np.ndarray:
    """Averages groups of neighbouring rows/columns so that at most ``limit`` remain."""
    size = power.shape[axis]
    if size <= limit:
        return power
    factor = math.ceil(size / limit)
    starts = np.arange(0, size, factor)
    sums = np.add.reduceat(power, starts, axis=axis)
    counts = np.diff(np.append(starts, size)).astype(power.dtype)
    shape = [1, 1]
    shape[axis] = -1
    return sums / counts.reshape(shape)


def _power_to_image(power: np.ndarray, settings: ThumbnailSettings) -> np.ndarray:
    reference = (settings.n_fft / 4.0) ** 2  # peak-bin power of a full-scale sine (periodic Hann window)
    pooled = _pool(_pool(power, 0, settings.max_height), 1, settings.max_width)
    return np.maximum(10.0 * np.log10(np.maximum(pooled / reference, 1e-30)), _DB_FLOOR).astype(np.float32)


def spectrogram_image(waveforms: np.ndarray, settings: ThumbnailSettings) -> np.ndarray:
    """The thumbnail images of equally long waveforms, in dBFS.

    Args:
        waveforms: float32 ``[batch, samples]`` in [-1, 1].
        settings: STFT and image size.

    Returns:
        float32 ``[batch, rows, columns]``: power in dB relative to a full-scale sine
        (floored at -120 dB), row 0 the lowest frequency, at most ``max_height`` x
        ``max_width`` (bins and frames averaged in power).
    """
    from tfaural import spectral  # TensorFlow is imported only when something must be drawn

    stft = spectral.stft(np.asarray(waveforms, np.float32), n_fft=settings.n_fft, hop_length=settings.hop_length)
    power = np.square(np.abs(stft.numpy())).astype(np.float64)
    return np.stack([_power_to_image(p, settings) for p in power])


@dataclasses.dataclass(frozen=True)
class _Thumb:
    group: str  # colour-scale group: "original" or "layer<L>"
    source: str  # absolute audio path
    key: str  # source path relative to the auralisation folder (cache key)
    target: str  # absolute PNG path


def _relative_key(path: str, start: str) -> str:
    return pathlib.PurePath(os.path.relpath(path, start)).as_posix()


def _thumb_jobs(output: AuraliseOutput, thumbs_dir: str) -> list[_Thumb]:
    jobs = []
    for track in output.tracks:
        target_dir = os.path.join(thumbs_dir, track.folder)
        if track.original and not track.original_spectrogram:
            jobs.append(_Thumb(ORIGINAL_GROUP, track.original, _relative_key(track.original, output.directory),
                               os.path.join(target_dir, "original.png")))
        for layer, items in track.layers.items():
            for item in items:
                if item.audio and not item.spectrogram:
                    jobs.append(_Thumb(f"layer{layer}", item.audio, _relative_key(item.audio, output.directory),
                                       os.path.join(target_dir, f"layer{layer}", f"feature{item.feature}.png")))
    return jobs


def _stat(path: str) -> dict[str, int]:
    info = os.stat(path)
    return {"mtime_ns": int(info.st_mtime_ns), "size": int(info.st_size)}


def _load_cache(path: str, settings: ThumbnailSettings) -> dict[str, dict[str, Any]]:
    if not os.path.isfile(path):
        return {}
    try:
        data = _read_json(path)
    except DataError as err:
        logger.warning("ignoring the thumbnail cache: %s", err)
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("settings") != settings.to_dict():
        return {}
    entries = data.get("entries")
    return {k: v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}


def _chunks(items: Sequence[_Thumb], size: int) -> Iterator[Sequence[_Thumb]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _images(jobs: Sequence[_Thumb], settings: ThumbnailSettings) -> dict[str, np.ndarray | str]:
    """``{key: image or error message}``; waveforms of equal length share one STFT call."""
    from tfaural import audio

    results: dict[str, np.ndarray | str] = {}
    by_length: dict[int, list[tuple[str, np.ndarray]]] = {}
    for job in jobs:
        try:
            y, _ = audio.load(job.source, sample_rate=None)
        except TfauralError as err:
            results[job.key] = str(err)
            continue
        by_length.setdefault(y.shape[-1], []).append((job.key, y))
    for group in by_length.values():
        images = spectrogram_image(np.stack([y for _, y in group]), settings)
        for (key, _), image in zip(group, images):
            results[key] = image
    return results


def _colour_scale(max_db: float, settings: ThumbnailSettings) -> list[float]:
    top = math.ceil(max_db / _SCALE_STEP_DB) * _SCALE_STEP_DB
    return [top - settings.dynamic_range_db, top]


@functools.lru_cache(maxsize=4)
def _palette(colormap: str) -> bytes:
    """The 256 RGB entries of a matplotlib colour map, as a PNG palette."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap].resampled(256)
    except KeyError:
        raise ParameterError(f"colormap={colormap!r} is not a matplotlib colour map") from None
    rgb = np.asarray(cmap(np.arange(256), bytes=True))[:, :3].astype(np.uint8)  # as matplotlib quantises
    return rgb.tobytes()


def _png_bytes(image: np.ndarray, scale: Sequence[float], settings: ThumbnailSettings) -> bytes:
    """An 8-bit palette PNG of a dB image (row 0 = lowest frequency, drawn at the bottom).

    The colour map's 256 entries are the palette, so this is what ``matplotlib.pyplot.imsave``
    draws, at about a quarter of the size of its RGBA file.
    """
    from PIL import Image

    low, high = float(scale[0]), float(scale[1])
    index = np.clip(np.floor((np.asarray(image, np.float64) - low) / (high - low) * 256.0), 0, 255).astype(np.uint8)
    picture = Image.fromarray(np.ascontiguousarray(index[::-1]))  # mode "L" ...
    picture.putpalette(_palette(settings.colormap))  # ... becomes "P": the indices are kept as they are
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _save_png(path: str, image: np.ndarray, scale: Sequence[float], settings: ThumbnailSettings) -> None:
    files.write_bytes(path, _png_bytes(image, scale, settings))


def render_thumbnails(
    output: AuraliseOutput,
    report_dir: str | os.PathLike[str],
    *,
    settings: ThumbnailSettings | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[dict[str, str], dict[str, list[float]]]:
    """Draws the spectrogram thumbnails the job did not write, reusing those still valid.

    Two passes: the loudest bin of every new or changed source is measured (and
    cached), which fixes each group's colour scale; then every thumbnail whose
    source, scale or file changed is drawn.

    Args:
        output: The auralisation output.
        report_dir: The report folder (thumbnails go to ``report_dir/thumbs``).
        settings: Drawing settings (default: from the export's metadata).
        force: Redraw everything.
        progress: Show tqdm progress bars.

    Returns:
        ``({audio path: thumbnail path}, {group: [vmin, vmax] in dBFS})`` with groups
        ``"original"`` and ``"layer<L>"``. Sources that cannot be decoded are logged
        and have no thumbnail.
    """
    from tqdm.auto import tqdm

    settings = settings or thumbnail_settings(output.metadata)
    thumbs_dir = os.path.join(os.path.abspath(os.fspath(report_dir)), THUMBS_DIR)
    cache_path = os.path.join(thumbs_dir, CACHE_FILE)
    old = {} if force else _load_cache(cache_path, settings)
    jobs = _thumb_jobs(output, thumbs_dir)
    entries: dict[str, dict[str, Any]] = {}
    measure = []
    for job in jobs:
        stat = _stat(job.source)
        entry = old.get(job.key)
        if entry and all(entry.get(k) == v for k, v in stat.items()) and ("max_db" in entry or "error" in entry):
            entries[job.key] = entry
        else:
            entries[job.key] = stat
            measure.append(job)

    kept: dict[str, np.ndarray] = {}
    budget = _IMAGE_MEMORY_BYTES
    with tqdm(total=len(measure), desc="measuring spectrograms", unit="file", disable=not progress) as bar:
        for chunk in _chunks(measure, 64):
            for key, measured in _images(chunk, settings).items():
                if isinstance(measured, str):
                    logger.warning("no thumbnail for %s: %s", key, measured)
                    entries[key]["error"] = measured
                    continue
                entries[key]["max_db"] = float(measured.max())
                if measured.nbytes // 2 <= budget:
                    kept[key] = measured.astype(np.float16)
                    budget -= measured.nbytes // 2
            bar.update(len(chunk))

    loudest: dict[str, float] = {}
    for job in jobs:
        if "max_db" in entries[job.key]:
            loudest[job.group] = max(loudest.get(job.group, _DB_FLOOR), entries[job.key]["max_db"])
    scales = {group: _colour_scale(value, settings) for group, value in loudest.items()}

    draw = [
        job for job in jobs
        if "max_db" in entries[job.key]
        and (entries[job.key].get("scale") != scales[job.group] or not os.path.isfile(job.target)
             or entries[job.key].get("thumb") != _relative_key(job.target, thumbs_dir))
    ]
    with tqdm(total=len(draw), desc="drawing thumbnails", unit="file", disable=not progress) as bar:
        for chunk in _chunks(draw, 64):
            missing = [job for job in chunk if job.key not in kept]
            fresh = _images(missing, settings) if missing else {}
            for job in chunk:
                image = kept.pop(job.key, None)
                if image is None:
                    recomputed = fresh.get(job.key)
                    if not isinstance(recomputed, np.ndarray):
                        logger.warning("no thumbnail for %s: %s", job.key, recomputed)
                        continue
                    image = recomputed
                _save_png(job.target, image, scales[job.group], settings)
                entries[job.key]["scale"] = scales[job.group]
                entries[job.key]["thumb"] = _relative_key(job.target, thumbs_dir)
            bar.update(len(chunk))
    if jobs or os.path.isdir(thumbs_dir):
        document = {"format": CACHE_FORMAT, "settings": settings.to_dict(), "entries": entries}
        files.write_text(cache_path, json.dumps(document, indent=1, sort_keys=True) + "\n")
    logger.info("thumbnails: %d measured, %d drawn, %d reused", len(measure), len(draw), len(jobs) - len(draw))
    thumbs = {job.source: job.target for job in jobs if "scale" in entries[job.key] and os.path.isfile(job.target)}
    return thumbs, scales


# ============================================================================ HTML helpers


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _url(target: str, page_dir: str) -> str:
    """A relative, URL-quoted link from a page in ``page_dir`` to the file ``target``."""
    try:
        relative = os.path.relpath(target, page_dir)
    except ValueError:  # another drive (Windows): only an absolute URL can reach it
        return pathlib.Path(target).as_uri()
    return urllib.parse.quote(pathlib.PurePath(relative).as_posix(), safe="/")


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{_short(value)} s"


def _short(value: float) -> str:
    """At most three decimals, no trailing zeros: 5.99383 -> "5.994", 2.0 -> "2"."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _audio_type(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}.get(ext, "")


def _player(path: str | None, page_dir: str, label: str) -> str:
    if path is None:
        return '<p class="muted">Audio file missing.</p>'
    src = _url(path, page_dir)
    kind = _audio_type(path)
    type_attr = f' type="{kind}"' if kind else ""
    return (
        f'<audio controls preload="none" aria-label="{_esc(label)}">'
        f'<source src="{_esc(src)}"{type_attr}>'
        f'<a href="{_esc(src)}">Download: {_esc(label)}</a></audio>'
    )


def _image(path: str | None, page_dir: str, alt: str, *, external: bool, extra_class: str = "") -> str:
    if path is None:
        return '<p class="muted">No spectrogram.</p>'
    classes = " ".join(c for c in ("thumb", "external" if external else "", extra_class) if c)
    src = _esc(_url(path, page_dir))
    return f'<img class="{classes}" src="{src}" alt="{_esc(alt)}" loading="lazy" decoding="async">'


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    """A ``<dl>`` of ``(label, html)`` rows (labels are escaped, values are not)."""
    body = "".join(f"<dt>{_esc(label)}</dt><dd>{value}</dd>" for label, value in rows)
    return f'<dl class="facts">{body}</dl>'


def _page_numbers(current: int, total: int, window: int = 3) -> list[int | None]:
    """Page numbers to link (``None`` is a gap): the first, the last and ``window`` either side of ``current``."""
    shown = sorted({1, total, *range(max(1, current - window), min(total, current + window) + 1)})
    numbers: list[int | None] = []
    for number in shown:
        if numbers and number - (numbers[-1] or 0) > 1:
            numbers.append(None)
        numbers.append(number)
    return numbers


def _pager(current: int, total: int, href: Any, label: str) -> str:
    """Pagination links; ``href(n)`` is the URL of page ``n``."""
    if total <= 1:
        return ""
    items = []
    if current > 1:
        items.append(f'<li><a href="{_esc(href(current - 1))}" rel="prev">‹ Previous</a></li>')
    for number in _page_numbers(current, total):
        if number is None:
            items.append('<li><span aria-hidden="true">…</span></li>')
        elif number == current:
            items.append(f'<li><span aria-current="page">{number}</span></li>')
        else:
            items.append(f'<li><a href="{_esc(href(number))}" aria-label="Page {number}">{number}</a></li>')
    if current < total:
        items.append(f'<li><a href="{_esc(href(current + 1))}" rel="next">Next ›</a></li>')
    return f'<nav class="pager" aria-label="{_esc(label)}"><ul>{"".join(items)}</ul></nav>'


def _breadcrumbs(items: Sequence[tuple[str, str | None]]) -> str:
    parts = []
    for text, href in items:
        if href is None:
            parts.append(f'<li aria-current="page">{_esc(text)}</li>')
        else:
            parts.append(f'<li><a href="{_esc(href)}">{_esc(text)}</a></li>')
    return f'<nav class="breadcrumbs" aria-label="Breadcrumbs"><ol>{"".join(parts)}</ol></nav>'


def _layer_filter(layers: Sequence[int], *, scope: str, noun: str, extra: str = "", order: str | None = None) -> str:
    """The filter form of feature cards/links; ``order`` names the strength measure to offer sorting by."""
    boxes = "".join(
        f'<label><input type="checkbox" name="layer" value="{layer}" checked> Layer {layer}</label>' for layer in layers
    )
    order_field = (
        '<div class="field"><label for="order">Order</label><select id="order" name="order">'
        '<option value="feature">Feature number</option>'
        f'<option value="strength">{_esc(order.capitalize())} (strongest first)</option></select></div>'
        if order else ""
    )
    return (
        f'<form class="filters js-only" data-filter-scope="{_esc(scope)}" data-filter-noun="{_esc(noun)}" '
        f'aria-label="Filter {_esc(noun)}">'
        f"<fieldset><legend>Layers</legend>{boxes}</fieldset>"
        '<div class="field"><label for="feature-filter">Feature numbers</label>'
        '<input id="feature-filter" name="feature" type="text" inputmode="numeric" autocomplete="off" '
        'placeholder="e.g. 9, 12-15" aria-describedby="feature-hint feature-error">'
        '<span id="feature-hint" class="hint">Numbers and ranges, e.g. 9, 12-15</span>'
        '<span id="feature-error" class="hint" data-feature-error hidden>Not understood: use numbers and '
        "ranges such as 9, 12-15</span></div>"
        f"{extra}{order_field}"
        '<button type="reset">Show all</button>'
        '<p class="filter-count" data-filter-count role="status" aria-live="polite"></p>'
        "</form>"
    )


def _track_filter(*, scope: str, order: str | None) -> str:
    """The filter form of track lists; ``order`` names the strength measure to offer sorting by."""
    order_field = (
        '<div class="field"><label for="order">Order</label><select id="order" name="order">'
        f'<option value="track">Track</option><option value="strength">{_esc(order.capitalize())} '
        "(strongest first)</option></select></div>"
        if order else ""
    )
    return (
        f'<form class="filters js-only" data-filter-scope="{_esc(scope)}" data-filter-noun="tracks" '
        'aria-label="Filter tracks">'
        '<div class="field"><label for="track-filter">Track name contains</label>'
        '<input id="track-filter" name="q" type="search" autocomplete="off"></div>'
        f"{order_field}"
        '<button type="reset">Show all</button>'
        '<p class="filter-count" data-filter-count role="status" aria-live="polite"></p>'
        "</form>"
    )


# ============================================================================ the site


def _json_block(value: Any) -> str:
    return f"<pre>{_esc(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"


def _describe_stft(stft: Mapping[str, Any], sample_rate: Any) -> str:
    parts = []
    first = ("n_fft", "hop_length", "win_length")
    for key, value in sorted(stft.items(), key=lambda kv: (first.index(kv[0]) if kv[0] in first else 3, kv[0])):
        if value is None:
            continue
        text = f"{key} {value}"
        if key in ("n_fft", "hop_length", "win_length") and isinstance(value, int) and isinstance(sample_rate, int):
            text += f" ({1000.0 * value / sample_rate:.1f} ms)"
        parts.append(text)
    return _esc(", ".join(parts))


def _describe_scaling(scaling: Any) -> str:
    if isinstance(scaling, Mapping):
        mode = scaling.get("mode")
        if mode == "log":
            return f"log(1 + C·|X|), C = {_esc(scaling.get('log_c'))}"
        if mode == "linear":
            return "linear STFT magnitude"
        return _esc(json.dumps(dict(scaling), sort_keys=True))
    return _esc(scaling)


def _compact(value: Any, limit: int = 240) -> str | None:
    """A one-line rendering of a scalar or a small container, ``None`` if it is too long."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else None


def _summary_facts(summary: Any) -> list[tuple[str, str]]:
    """The short entries of the correlation ``summary.json`` (the table is shown separately)."""
    if not isinstance(summary, Mapping):
        return []
    rows = []
    for key, value in sorted(summary.items()):
        if key in ("table", "signal_ids"):
            continue
        if isinstance(value, Mapping) and "count" in value and key == "zero_features":
            value = {"count": value["count"], "by_layer": value.get("by_layer")}
        text = _compact(value)
        if text is not None:
            rows.append((key.replace("_", " ").capitalize(), _esc(text)))
    return rows


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0–3, 7"``."""
    numbers = sorted({int(v) for v in values})
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs)


def _describe_features(value: Any) -> str:
    """The job's ``features``: ``{layer: [indices]}``, a list, or ``None``/``"all"``."""
    try:
        if isinstance(value, Mapping):
            described = {str(layer): _ranges(indices) for layer, indices in value.items()}
            if len(set(described.values())) == 1 and len(described) > 1:
                return _esc(f"{next(iter(described.values()))} in every layer")
            return _esc("; ".join(f"layer {layer}: {text}" for layer, text in described.items()))
        if isinstance(value, (list, tuple)):
            return _esc(_ranges(value))
    except (TypeError, ValueError):
        return f"<code>{_esc(json.dumps(value, default=str))}</code>"
    return _esc(value if value not in (None, "") else "all")


def _describe_list(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return _esc(", ".join(str(v) for v in values)) if values else "—"
    return _esc(values if values not in (None, "") else "all")


class _Site:
    """Writes the pages of one report (see the module docstring for the layout)."""

    def __init__(
        self,
        output: AuraliseOutput,
        report_dir: str,
        *,
        title: str,
        thumbs: Mapping[str, str],
        scales: Mapping[str, Sequence[float]],
        correlation: CorrelationResults | None,
        tracks_per_page: int,
    ) -> None:
        self.output = output
        self.dir = report_dir
        self.title = title
        self.thumbs = thumbs
        self.scales = scales
        self.correlation = correlation
        self.per_page = tracks_per_page
        self.layers = output.layers()
        self.features = {layer: output.features(layer) for layer in self.layers}
        self.n_track_pages = max(1, math.ceil(len(output.tracks) / tracks_per_page))
        self.created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        rates: set[Any] = {t.sample_rate for t in output.tracks if t.sample_rate}
        rates = rates or {output.metadata.sample_rate if output.metadata is not None else None}
        low = sorted(r for r in rates if isinstance(r, (int, float)) and r < BROWSER_MIN_SAMPLE_RATE)
        self.rate_note = ""
        if low:
            logger.warning("audio at %s Hz: Chromium-based browsers cannot play audio sampled below %d Hz",
                           low[0], BROWSER_MIN_SAMPLE_RATE)
            self.rate_note = (
                f'<p class="failed" role="note">The audio is sampled at {_esc(low[0])} Hz: Chromium-based browsers '
                f"cannot play audio sampled below {BROWSER_MIN_SAMPLE_RATE} Hz. Use the download links in the "
                "players, or another player.</p>"
            )
        self.written: set[str] = set()

    # ------------------------------------------------------------------ paths

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def track_page(self, track: TrackOutput) -> str:
        return self.path("tracks", f"{track.folder}.html")

    def feature_page(self, layer: int, feature: int, page: int = 1) -> str:
        suffix = "" if page == 1 else f"-page{page}"
        return self.path("features", f"layer{layer}-feature{feature}{suffix}.html")

    def track_list_page(self, page: int) -> str:
        return self.path("index.html" if page == 1 else f"tracks-{page}.html")

    def visual(self, audio: str | None, job_png: str | None) -> tuple[str | None, bool]:
        """``(image path, drawn by the job)`` for an audio file."""
        if job_png:
            return job_png, True
        return (self.thumbs.get(audio) if audio else None), False

    def scale_text(self, group: str) -> str:
        scale = self.scales.get(group)
        if not scale:
            return ""
        return f"colour scale {scale[0]:g} to {scale[1]:g} dBFS"

    # ------------------------------------------------------------------ document

    def write(self, path: str, *, page_title: str, body: str, crumbs: Sequence[tuple[str, str | None]] = ()) -> None:
        page_dir = os.path.dirname(path)
        root = _url(self.dir, page_dir)
        root = "" if root == "." else root + "/"
        nav = [("Model", "index.html#model"), ("Tracks", "index.html#tracks")]
        if self.output.failed:
            nav.append(("Failed", "index.html#failed"))
        if self.correlation:
            nav.append(("Correlations", "index.html#correlations"))
        nav.append(("Features", "index.html#features"))
        nav_html = "".join(f'<li><a href="{_esc(root + href)}">{_esc(text)}</a></li>' for text, href in nav)
        full_title = page_title if page_title == self.title else f"{page_title} · {self.title}"
        document = (
            "<!doctype html>\n"
            '<html lang="en" class="no-js">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="tfaural {_esc(__version__)}">\n'
            f"<title>{_esc(full_title)}</title>\n"
            '<link rel="icon" href="data:,">\n'
            f'<link rel="stylesheet" href="{_esc(root)}assets/style.css">\n'
            f'<script src="{_esc(root)}assets/report.js" defer></script>\n'
            "</head>\n<body>\n"
            '<a class="skip-link" href="#main">Skip to main content</a>\n'
            f'<header class="site-header"><a class="site-title" href="{_esc(root)}index.html">{_esc(self.title)}</a>'
            f'<nav aria-label="Report sections"><ul>{nav_html}</ul></nav></header>\n'
            '<main id="main" tabindex="-1">\n'
            f"{_breadcrumbs(crumbs) if crumbs else ''}{body}\n</main>\n"
            f'<footer class="site-footer">Written by tfaural {_esc(__version__)} on {_esc(self.created)} from '
            f"<code>{_esc(os.path.basename(self.output.directory))}</code>.</footer>\n"
            "</body>\n</html>\n"
        )
        files.write_text(path, document)
        self.written.add(os.path.abspath(path))

    # ------------------------------------------------------------------ index and track lists

    def model_card(self) -> str:
        meta = self.output.metadata
        if meta is None:
            return (
                '<section class="panel" id="model" aria-labelledby="model-heading">'
                '<h2 id="model-heading">Model</h2><p class="muted">job.json records no model metadata.</p></section>'
            )
        rate = meta.sample_rate
        rows: list[tuple[str, str]] = [("Family", _esc(meta.family))]
        if meta.run_id:
            created = f" (created {_esc(meta.run_created)})" if meta.run_created else ""
            rows.append(("Training run", f"<code>{_esc(meta.run_id)}</code>{created}"))
        if meta.task:
            rows.append(("Task", _esc(meta.task)))
        rows.append(("Sample rate", f"{_esc(rate)} Hz"))
        if meta.stft is not None:
            rows.append(("STFT", _describe_stft(meta.stft, rate)))
        if meta.input_scaling is not None:
            rows.append(("Input scaling", _describe_scaling(meta.input_scaling)))
        if meta.segment_seconds:
            rows.append(("Input segment", f"{meta.segment_seconds:.3g} s"))
        if meta.labels:
            chips = "".join(f"<li>{_esc(label)}</li>" for label in meta.labels)
            rows.append((f"Labels ({len(meta.labels)})", f'<ul class="labels">{chips}</ul>'))
        if meta.features_per_layer:
            rows.append(("Features per layer",
                         _esc(", ".join(f"{k}: {v}" for k, v in meta.features_per_layer.items()))))
        versions = [f"tfaural {meta.tfaural_version}" if meta.tfaural_version else "",
                    f"TensorFlow {meta.tensorflow_version}" if meta.tensorflow_version else ""]
        if any(versions):
            rows.append(("Trained/exported with", _esc(", ".join(v for v in versions if v))))
        details = ""
        if meta.model_config:
            details += f"<details><summary>Architecture (model_config)</summary>{_json_block(meta.model_config)}"
            details += "</details>"
        if meta.run_extra:
            details += f"<details><summary>Training details (run_extra)</summary>{_json_block(meta.run_extra)}"
            details += "</details>"
        return (
            '<section class="panel" id="model" aria-labelledby="model-heading">'
            f'<h2 id="model-heading">Model</h2>{_facts(rows)}{details}</section>'
        )

    def settings_card(self) -> str:
        job = self.output.job.to_dict() if self.output.job is not None else {}
        labels = {
            "job": "Job", "model_dir": "Model export", "mode": "Auralisation mode", "layers": "Layers",
            "features": "Features", "offset_seconds": "Excerpt offset", "clip_seconds": "Excerpt length",
            "format": "Audio format", "created": "Created", "spectrograms": "Spectrograms by the job",
            "input": "Input files", "manifest": "Input manifest", "tfaural_version": "tfaural version",
        }
        skip = {"metadata", "settings"}  # the model card; "settings" repeats the keys below
        if "model_dir" in job:
            skip.add("model")  # its identity: the directory (shown), run id (model card), export time
        rows: list[tuple[str, str]] = []
        for key, value in sorted(job.items(), key=lambda kv: (list(labels).index(kv[0]) if kv[0] in labels
                                                              else len(labels), kv[0])):
            if key in skip or value is None:
                continue
            label = labels.get(key, "Model export" if key == "model" else key.replace("_", " ").capitalize())
            if key == "layers":
                text = _describe_list(value)
            elif key == "features":
                text = _describe_features(value)
            elif key in ("offset_seconds", "clip_seconds"):
                text = _esc(_seconds(finite_or_none(value)))
            elif isinstance(value, bool):
                text = "yes" if value else "no"
            elif isinstance(value, (Mapping, list)):
                text = f"<code>{_esc(json.dumps(value, sort_keys=True, default=str))}</code>"
            else:
                text = _esc(value)
            rows.append((label, text))
        rows.append(("Tracks", f"{len(self.output.tracks)} auralised, {len(self.output.failed)} failed"))
        return (
            '<section class="panel" id="settings" aria-labelledby="settings-heading">'
            f'<h2 id="settings-heading">Auralisation</h2>{_facts(rows)}</section>'
        )

    def track_table(self, tracks: Sequence[TrackOutput], page_dir: str) -> str:
        rows = []
        for track in tracks:
            image, external = self.visual(track.original, track.original_spectrogram)
            thumb = _image(image, page_dir, f"Spectrogram of the original excerpt of {track.track_id}",
                           external=external, extra_class="thumb-small")
            n_features = sum(len(items) for items in track.layers.values())
            link = _esc(_url(self.track_page(track), page_dir))
            rows.append(
                f'<tr data-filter-item data-name="{_esc(track.track_id.casefold())}">'
                f'<th scope="row"><a href="{link}">{_esc(track.track_id)}</a></th>'
                f"<td>{thumb}</td>"
                f"<td>{_player(track.original, page_dir, f'Original excerpt of {track.track_id}')}</td>"
                f'<td class="num">{n_features}</td>'
                f'<td><span class="error-text">{_esc(track.source)}</span></td></tr>'
            )
        return (
            '<div class="table-wrap" id="track-table"><table>'
            "<caption>Tracks with their original excerpt; open a track to hear its features.</caption>"
            '<thead><tr><th scope="col">Track</th><th scope="col">Original spectrogram</th>'
            '<th scope="col">Listen</th><th scope="col" class="num">Features</th>'
            '<th scope="col">Source</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )

    def track_list(self, page: int, page_dir: str) -> str:
        tracks = self.output.tracks[(page - 1) * self.per_page : page * self.per_page]
        if not tracks:
            return '<p class="muted">No track was auralised.</p>'
        first = (page - 1) * self.per_page + 1
        summary = f"Tracks {first}–{first + len(tracks) - 1} of {len(self.output.tracks)}"
        pager = _pager(page, self.n_track_pages, lambda n: _url(self.track_list_page(n), page_dir), "Track list pages")
        search = _track_filter(scope="track-table", order=None) if len(tracks) > 1 else ""
        return f'<p class="muted">{_esc(summary)}</p>{search}{self.track_table(tracks, page_dir)}{pager}'

    def failed_section(self) -> str:
        if not self.output.failed:
            return ""
        rows = "".join(
            f'<tr><th scope="row">{_esc(f.track_id)}</th><td><span class="error-text">{_esc(f.path)}</span></td>'
            f'<td><span class="error-text">{_esc(f.error)}</span></td></tr>'
            for f in self.output.failed
        )
        return (
            '<section class="failed" id="failed" aria-labelledby="failed-heading">'
            f'<h2 id="failed-heading">Failed tracks ({len(self.output.failed)})</h2>'
            '<div class="table-wrap"><table><thead><tr><th scope="col">Track</th><th scope="col">Path</th>'
            f'<th scope="col">Error</th></tr></thead><tbody>{rows}</tbody></table></div></section>'
        )

    def correlation_section(self) -> str:
        results = self.correlation
        if results is None:
            return ""
        page_dir = self.dir
        parts = [
            '<section id="correlations" aria-labelledby="correlations-heading">'
            '<h2 id="correlations-heading">Correlations</h2>'
            '<p class="lede">How much each layer\'s feature responses change when only the key, the chord or the '
            "instrument of the input changes (Choi et al. 2015, Figure 10): mean pairwise correlation per layer.</p>"
        ]
        if results.figure:
            figure = _esc(_url(self.path("correlation", "figure10.png"), page_dir))
            parts.append(
                f'<figure><img class="correlation-figure" src="{figure}" '
                'alt="Figure 10: mean correlation of the feature responses per layer for key, chord and instrument '
                'changes" loading="lazy"><figcaption>Feature-response correlation per layer and attribute.</figcaption>'
                "</figure>"
            )
        if results.columns:
            head = "".join(
                f'<th scope="col"{" class=num" if c not in ("layer", "attribute") else ""}>{_esc(c)}</th>'
                for c in results.columns
            )
            body = []
            for row in results.rows:
                cells = []
                for column in results.columns:
                    value = row.get(column, "")
                    number = finite_or_none(value)
                    if column in ("layer", "attribute"):
                        cells.append(f"<td>{_esc(value)}</td>")
                    elif number is not None and column in ("mean", "std"):
                        cells.append(f'<td class="num">{number:.3f}</td>')
                    else:
                        cells.append(f'<td class="num">{_esc(value)}</td>')
                body.append(f"<tr>{''.join(cells)}</tr>")
            csv_link = _url(self.path("correlation", "correlations.csv"), page_dir)
            parts.append(
                '<div class="table-wrap"><table id="correlation-table"><caption>Correlations per layer and attribute '
                f'(<a href="{_esc(csv_link)}">correlations.csv</a>)</caption><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table></div>"
            )
        if results.summary is not None:
            facts = _summary_facts(results.summary)
            parts.append(f"{_facts(facts) if facts else ''}<details><summary>Everything in summary.json</summary>"
                         f"{_json_block(results.summary)}</details>")
        parts.append("</section>")
        return "".join(parts)

    def feature_index(self) -> str:
        if not self.layers:
            return ""
        groups = []
        for layer in self.layers:
            links = "".join(
                f'<li data-filter-item data-layer="{layer}" data-feature="{feature}">'
                f'<a href="{_esc(_url(self.feature_page(layer, feature), self.dir))}" '
                f'aria-label="Feature {layer}-{feature} across tracks">{layer}-{feature}</a></li>'
                for feature in self.features[layer]
            )
            groups.append(
                f'<section data-filter-group aria-labelledby="index-layer{layer}">'
                f'<h3 id="index-layer{layer}">Layer {layer} <span class="muted">({len(self.features[layer])} features)'
                f'</span></h3><ul class="feature-index">{links}</ul></section>'
            )
        return (
            '<section id="features" aria-labelledby="features-heading"><h2 id="features-heading">Features</h2>'
            '<p class="lede">Each link plays one feature across all tracks, next to the originals.</p>'
            f'{_layer_filter(self.layers, scope="feature-index", noun="features")}'
            f'<div id="feature-index">{"".join(groups)}</div></section>'
        )

    def write_index(self) -> None:
        meta = self.output.metadata
        model = " ".join(str(v) for v in ((meta.family, meta.run_id) if meta is not None else ()) if v)
        layers = f"layers {self.layers[0]}–{self.layers[-1]}" if self.layers else "no layers"
        lede = (
            f"Listen to what {('the ' + model + ' model') if model else 'the model'} has learnt: "
            f"{len(self.output.tracks)} tracks, {layers}, "
            f"{sum(len(f) for f in self.features.values())} features. Each feature is deconvolved back to a "
            "spectrogram and auralised with the phase of the original excerpt (Choi et al. 2015)."
        )
        body = (
            f"<h1>{_esc(self.title)}</h1><p class=\"lede\">{_esc(lede)}</p>{self.rate_note}"
            f'<div class="card-grid">{self.model_card()}{self.settings_card()}</div>'
            '<section id="tracks" aria-labelledby="tracks-heading"><h2 id="tracks-heading">Tracks</h2>'
            f"{self.track_list(1, self.dir)}</section>"
            f"{self.failed_section()}{self.correlation_section()}{self.feature_index()}"
        )
        self.write(self.track_list_page(1), page_title=self.title, body=body)
        for page in range(2, self.n_track_pages + 1):
            path = self.track_list_page(page)
            body = (
                f"<h1>Tracks, page {page} of {self.n_track_pages}</h1>"
                f'<section id="tracks">{self.track_list(page, os.path.dirname(path))}</section>'
            )
            crumbs = [("Overview", "index.html"), (f"Tracks, page {page}", None)]
            self.write(path, page_title=f"Tracks, page {page}", body=body, crumbs=crumbs)

    # ------------------------------------------------------------------ one track

    def feature_card(self, track: TrackOutput, item: FeatureOutput, position: int, *, measure: str,
                     strongest: float | None, page_dir: str) -> str:
        image, external = self.visual(item.audio, item.spectrogram)
        name = item.name
        value = _strength(item, measure)
        meter = ""
        if value is not None and strongest:
            meter = (
                f'<meter min="0" max="{strongest:.6g}" value="{max(value, 0.0):.6g}" '
                f'aria-label="{_esc(measure.capitalize())} of feature {name} relative to the strongest of layer '
                f'{item.layer}">{_number(value)}</meter>'
            )
        badge = ' <span class="badge">silent</span>' if item.silent else ""
        compare = _url(self.feature_page(item.layer, item.feature), page_dir)
        alt = f"Deconvolved spectrogram of feature {name} for {track.track_id}"
        activation = f"<span>activation {_esc(_number(item.activation))}</span>" if measure == ACTIVATION else ""
        return (
            f'<li class="card" id="layer{item.layer}-feature{item.feature}" data-filter-item data-layer="{item.layer}" '
            f'data-feature="{item.feature}" data-strength="{"" if value is None else f"{value:.6g}"}" '
            f'data-silent="{"true" if item.silent else "false"}" data-position="{position}">'
            f"<figure>{_image(image, page_dir, alt, external=external)}</figure>"
            f"<h3>Feature {_esc(name)}</h3>"
            f'<div class="meta">{activation}'
            f"<span>peak {_esc(_number(item.peak))}{badge}</span></div>{meter}"
            f"{_player(item.audio, page_dir, f'Feature {name} of {track.track_id}')}"
            f'<a class="compare" href="{_esc(compare)}">Feature {_esc(name)} across tracks</a></li>'
        )

    def tags_section(self, track: TrackOutput, page_dir: str) -> str:
        """The excerpt's best tags with their scores and, per tag, the features behind it (``--tags``)."""
        if not track.tags:
            return ""
        chips = " · ".join(f"<strong>{_esc(label)}</strong> {_number(score, 2)}" for label, score in track.tags)
        blocks = []
        for position, (label, _) in enumerate(track.tags):
            rows = []
            for layer, contributors in (track.attribution.get(label) or {}).items():
                items = []
                for feature, contribution in contributors[:TAG_FEATURES_SHOWN]:
                    found = track.feature(layer, feature)
                    name = f"{layer}-{feature}"
                    if found is None:
                        items.append(f'<li><span class="muted">{_esc(name)}</span> {_number(contribution)} '
                                     '<span class="muted">(not auralised in this run)</span></li>')
                        continue
                    link = f"#layer{layer}-feature{feature}"
                    player = _player(found.audio, page_dir, f"Feature {name} of {track.track_id}")
                    silent = ' <span class="muted">(silent)</span>' if found.silent else ""
                    items.append(f'<li><a href="{_esc(link)}">{_esc(name)}</a> {_number(contribution)}{silent}'
                                 f"{player}</li>")
                rows.append(f"<h4>Layer {layer}</h4><ol class=\"contributors\">{''.join(items)}</ol>")
            blocks.append(
                f"<details{' open' if position == 0 else ''}><summary>Features behind "
                f"<strong>{_esc(label)}</strong></summary><div class=\"attribution\">"
                f"{''.join(f'<div>{row}</div>' for row in rows) or '<p>No layer explained.</p>'}</div></details>"
            )
        return (
            '<section aria-labelledby="tags-heading"><h2 id="tags-heading">What the model says</h2>'
            f'<p class="lede">Top tags of this excerpt: {chips}</p>'
            '<p class="muted">For each tag, the features of each layer that contribute most to its score '
            "(activation × gradient of the tag's score, summed over the feature map: the part of the score that "
            "flows through the feature), largest first; play them here or jump to their cards.</p>"
            f"{''.join(blocks)}</section>"
        )

    def write_track(self, index: int) -> None:
        track = self.output.tracks[index]
        path = self.track_page(track)
        page_dir = os.path.dirname(path)
        image, external = self.visual(track.original, track.original_spectrogram)
        rate = track.sample_rate or (self.output.metadata.sample_rate if self.output.metadata is not None else None)
        duration = track.clip_seconds
        caption = "Spectrogram of the original excerpt (time →, frequency ↑"
        caption += f", 0–{rate / 2:g} Hz" if isinstance(rate, (int, float)) else ""
        caption += f"; {self.scale_text(ORIGINAL_GROUP)})" if not external and self.scale_text(ORIGINAL_GROUP) else ")"
        excerpt = ""
        if track.offset_seconds is not None or duration is not None:
            start = track.offset_seconds or 0.0
            end = f"{_short(start + duration)} s" if duration is not None else "the end"
            excerpt = f"excerpt {_short(start)} s – {end}"
        facts = " · ".join(x for x in (f"source {track.source}" if track.source else "", excerpt,
                                         f"{rate} Hz" if rate else "") if x)
        neighbours = []
        if index > 0:
            prev = self.output.tracks[index - 1]
            link = _esc(_url(self.track_page(prev), page_dir))
            neighbours.append(f'<a href="{link}" rel="prev">‹ {_esc(prev.track_id)}</a>')
        else:
            neighbours.append("<span></span>")
        if index + 1 < len(self.output.tracks):
            nxt = self.output.tracks[index + 1]
            link = _esc(_url(self.track_page(nxt), page_dir))
            neighbours.append(f'<a href="{link}" rel="next">{_esc(nxt.track_id)} ›</a>')
        sections = []
        measures = set()
        for layer, items in track.layers.items():
            measure = _measure(items)
            measures.add(measure)
            values = [v for v in (_strength(i, measure) for i in items) if v is not None]
            strongest = max(values) if values and max(values) > 0 else None
            cards = "".join(
                self.feature_card(track, item, pos, measure=measure, strongest=strongest, page_dir=page_dir)
                for pos, item in enumerate(items)
            )
            scale = self.scale_text(f"layer{layer}")
            sections.append(
                f'<section class="layer-section" id="layer{layer}" data-filter-group '
                f'aria-labelledby="layer{layer}-heading">'
                f'<h2 id="layer{layer}-heading">Layer {layer} <span class="muted">{len(items)} features'
                f"{(' · ' + _esc(scale)) if scale else ''}</span></h2>"
                f'<ul class="cards" data-sort-container>{cards}</ul></section>'
            )
        explained = self.tags_section(track, page_dir)
        page_measure = ACTIVATION if ACTIVATION in measures else PEAK
        filters = _layer_filter(list(track.layers), scope="features", noun="features", extra=_SILENT_FIELD,
                                order=page_measure)
        body = (
            f"<h1>Track {_esc(track.track_id)}</h1><p class=\"lede\">{_esc(facts)}</p>"
            f'<nav class="prev-next" aria-label="Neighbouring tracks">{"".join(neighbours)}</nav>{self.rate_note}'
            '<section aria-labelledby="original-heading"><h2 id="original-heading">Original excerpt</h2>'
            '<div class="original"><figure>'
            f"{_image(image, page_dir, f'Spectrogram of the original excerpt of {track.track_id}', external=external)}"
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
            f"<div>{_player(track.original, page_dir, f'Original excerpt of {track.track_id}')}"
            '<p class="muted">Every card below is one learnt feature: its deconvolution (what in this excerpt '
            "the feature responds to) drawn as a spectrogram and played back with the phase of the original. "
            f"{_MEASURE_NOTE[page_measure]}</p></div></div></section>"
            f"{explained}{filters}"
            f'<div id="features">{"".join(sections) or "<p>No feature was auralised for this track.</p>"}</div>'
        )
        crumbs = [("Overview", _url(self.path("index.html"), page_dir)),
                  ("Tracks", _url(self.path("index.html"), page_dir) + "#tracks"), (track.track_id, None)]
        self.write(path, page_title=f"Track {track.track_id}", body=body, crumbs=crumbs)

    # ------------------------------------------------------------------ one feature across tracks

    def write_feature(self, layer: int, feature: int) -> None:
        tracks = self.output.tracks
        n_pages = max(1, math.ceil(len(tracks) / self.per_page))
        features = self.features[layer]
        position = features.index(feature)
        measure = _measure([i for t in tracks for i in [t.feature(layer, feature)] if i is not None])
        for page in range(1, n_pages + 1):
            path = self.feature_page(layer, feature, page)
            page_dir = os.path.dirname(path)
            rows = []
            chunk = tracks[(page - 1) * self.per_page : page * self.per_page]
            for pos, track in enumerate(chunk):
                item = track.feature(layer, feature)
                original, original_external = self.visual(track.original, track.original_spectrogram)
                link = _url(self.track_page(track), page_dir) + f"#layer{layer}-feature{feature}"
                original_alt = f"Spectrogram of the original excerpt of {track.track_id}"
                if item is None:
                    feature_html = '<p class="muted">This feature was not auralised for this track.</p>'
                    note, strength = "", ""
                else:
                    image, external = self.visual(item.audio, item.spectrogram)
                    alt = f"Deconvolved spectrogram of feature {item.name} for {track.track_id}"
                    feature_html = (
                        f"{_image(image, page_dir, alt, external=external)}"
                        f"{_player(item.audio, page_dir, f'Feature {item.name} of {track.track_id}')}"
                    )
                    value = _strength(item, measure)
                    note = f"{measure} {_number(value)}" + (" · silent" if item.silent else "")
                    strength = "" if value is None else f"{value:.6g}"
                rows.append(
                    f'<li data-filter-item data-name="{_esc(track.track_id.casefold())}" '
                    f'data-strength="{strength}" data-position="{pos}">'
                    f'<div><h2><a href="{_esc(link)}">{_esc(track.track_id)}</a></h2>'
                    f'<p class="muted">{_esc(note)}</p></div>'
                    '<figure><p class="column-head">Original</p>'
                    f"{_image(original, page_dir, original_alt, external=original_external)}"
                    f"{_player(track.original, page_dir, f'Original excerpt of {track.track_id}')}</figure>"
                    f'<figure><p class="column-head">Feature {layer}-{feature}</p>{feature_html}</figure></li>'
                )
            neighbours = []
            if position > 0:
                before = features[position - 1]
                neighbours.append(f'<a href="{_esc(_url(self.feature_page(layer, before), page_dir))}" rel="prev">'
                                  f"‹ Feature {layer}-{before}</a>")
            else:
                neighbours.append("<span></span>")
            if position + 1 < len(features):
                after = features[position + 1]
                neighbours.append(f'<a href="{_esc(_url(self.feature_page(layer, after), page_dir))}" rel="next">'
                                  f"Feature {layer}-{after} ›</a>")
            scale = self.scale_text(f"layer{layer}")

            def page_url(number: int, directory: str = page_dir) -> str:
                return _url(self.feature_page(layer, feature, number), directory)

            count = f"{len(tracks)} tracks" + (f", page {page} of {n_pages}" if n_pages > 1 else "")
            body = (
                f"<h1>Feature {layer}-{feature} across tracks</h1>"
                f'<p class="lede">Layer {layer}, feature {feature}: each track\'s original excerpt next to what this '
                f"feature responds to in it (deconvolved, auralised with the original's phase). {_esc(count)}"
                f"{('; ' + _esc(scale)) if scale else ''}.</p>"
                f'<nav class="prev-next" aria-label="Neighbouring features">{"".join(neighbours)}</nav>'
                f'{_track_filter(scope="compare-list", order=measure) if len(chunk) > 1 else ""}'
                f'<ol class="compare" id="compare-list" data-sort-container>{"".join(rows)}</ol>'
                f"{_pager(page, n_pages, page_url, 'Pages of tracks')}"
            )
            crumbs = [("Overview", _url(self.path("index.html"), page_dir)),
                      ("Features", _url(self.path("index.html"), page_dir) + "#features"),
                      (f"Feature {layer}-{feature}", None)]
            self.write(path, page_title=f"Feature {layer}-{feature}", body=body, crumbs=crumbs)

    # ------------------------------------------------------------------ everything

    def write_all(self, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.write_index()
        n_pages = len(self.output.tracks) + sum(len(f) for f in self.features.values())
        with tqdm(total=n_pages, desc="writing pages", unit="page", disable=not progress) as bar:
            for index in range(len(self.output.tracks)):
                self.write_track(index)
                bar.update(1)
            for layer in self.layers:
                for feature in self.features[layer]:
                    self.write_feature(layer, feature)
                    bar.update(1)
        self.remove_stale_pages()

    def remove_stale_pages(self) -> None:
        """Deletes pages of an earlier run that this run did not write (removed tracks, fewer pages)."""
        candidates = [os.path.join(self.dir, name) for name in os.listdir(self.dir)
                      if name.startswith("tracks-") and name.endswith(".html")]
        for folder in ("tracks", "features"):
            folder_path = self.path(folder)
            if os.path.isdir(folder_path):
                candidates += [os.path.join(folder_path, n) for n in os.listdir(folder_path) if n.endswith(".html")]
        for path in candidates:
            if os.path.abspath(path) not in self.written:
                os.unlink(path)


ACTIVATION = "activation"
PEAK = "peak"
_MEASURE_NOTE = {
    ACTIVATION: "Activation is the feature map's strongest response to this excerpt.",
    PEAK: "The export records no activations: peak is the auralisation's amplitude before it was normalised to "
          "0.9, a measure of how much of the excerpt the feature passes.",
}


def _measure(items: Sequence[FeatureOutput]) -> str:
    """How features are ranked: by activation when the job recorded any, else by peak."""
    return ACTIVATION if any(item.activation is not None for item in items) else PEAK


def _strength(item: FeatureOutput, measure: str) -> float | None:
    return item.activation if measure == ACTIVATION else item.peak


_SILENT_FIELD = (
    '<div class="field"><span class="hint">&nbsp;</span>'
    '<label><input type="checkbox" name="hide-silent"> Hide silent features</label></div>'
)


def _copy_assets(report_dir: str) -> None:
    target = os.path.join(report_dir, "assets")
    os.makedirs(target, exist_ok=True)
    folder = resources.files("tfaural.report_assets")  # package data: setup.py's package_data lists them
    for name in ASSET_FILES:
        data = folder.joinpath(name).read_bytes()
        path = os.path.join(target, name)
        if not os.path.isfile(path) or pathlib.Path(path).read_bytes() != data:
            pathlib.Path(path).write_bytes(data)


def _copy_correlation(results: CorrelationResults, report_dir: str) -> None:
    target = os.path.join(report_dir, "correlation")
    os.makedirs(target, exist_ok=True)
    for name in CORRELATION_FILES:
        source = os.path.join(results.directory, name)
        if os.path.isfile(source) and os.path.abspath(source) != os.path.abspath(os.path.join(target, name)):
            shutil.copyfile(source, os.path.join(target, name))


def _check_output_location(output: AuraliseOutput, report_dir: str) -> None:
    real = os.path.realpath(report_dir)
    for track in output.tracks:
        track_dir = os.path.realpath(track.directory)
        if real == track_dir or real.startswith(track_dir + os.sep):
            raise ParameterError(
                f"the report folder {report_dir} would be inside the output of track {track.track_id!r} "
                f"({track.directory}); choose another --output"
            )
    if real == os.path.realpath(output.directory):
        clashes = sorted({t.folder for t in output.tracks} & set(_RESERVED))
        if clashes:
            raise ParameterError(
                f"cannot write the report into {report_dir} itself: track folders {clashes} would clash with the "
                "report's own folders; use the default (AURALISE_OUTPUT_DIR/report) or another --output"
            )


def write_report(
    auralise_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    correlation: str | os.PathLike[str] | None = None,
    title: str | None = None,
    tracks_per_page: int = DEFAULT_TRACKS_PER_PAGE,
    rebuild_thumbnails: bool = False,
    progress: bool = True,
) -> str:
    """Writes the listening report of an auralisation job's output (see the module docstring).

    Args:
        auralise_dir: The folder ``beam_jobs.auralise`` wrote.
        output: The report folder (default ``auralise_dir/report``); created if needed,
            rewritten in place on reruns (thumbnails are reused when still valid).
        correlation: A folder with the correlation analysis (``correlations.csv``,
            ``summary.json``, ``figure10.png``) to include.
        title: Title of the report (default "Listening report").
        tracks_per_page: Tracks per page of the track list and of each feature page.
        rebuild_thumbnails: Redraw every thumbnail even if the cache says it is current.
        progress: Show tqdm progress bars.

    Returns:
        The path of ``index.html``.

    Raises:
        ParameterError: Missing folders, a bad ``tracks_per_page``, or an output location
            that cannot be written (a file, a read-only folder) or would clash with the auralisation output.
        DataError: The folder holds no auralisation output, or its JSON is malformed.
    """
    if isinstance(tracks_per_page, bool) or not isinstance(tracks_per_page, int) or tracks_per_page < 1:
        raise ParameterError(f"tracks_per_page={tracks_per_page!r} is invalid: expected a positive integer")
    if output is not None and "://" in os.fspath(output):
        raise ParameterError(f"--output {os.fspath(output)!r} is a URI: write the report to a local folder")
    results = load_auralise_output(auralise_dir)
    report_dir = os.path.abspath(os.fspath(output) if output is not None else os.path.join(results.directory, "report"))
    check_output_folder(report_dir, flag="--output")
    _check_output_location(results, report_dir)
    correlation_results = load_correlation(correlation) if correlation is not None else None
    os.makedirs(report_dir, exist_ok=True)
    logger.info("writing the report of %d tracks to %s", len(results.tracks), report_dir)
    thumbs, scales = render_thumbnails(results, report_dir, force=rebuild_thumbnails, progress=progress)
    _copy_assets(report_dir)
    if correlation_results is not None:
        _copy_correlation(correlation_results, report_dir)
    site = _Site(
        results, report_dir, title=title or DEFAULT_TITLE, thumbs=thumbs, scales=scales,
        correlation=correlation_results, tracks_per_page=tracks_per_page,
    )
    site.write_all(progress)
    index = os.path.join(report_dir, "index.html")
    logger.info("report written: %s", index)
    return index


# ============================================================================ command line


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line of ``python -m tfaural.report``."""
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.report",
        description=(
            "Write the listening report of an auralisation: a static web site (index.html + assets) with, per "
            "track, the original excerpt and a grid of feature cards (spectrogram, audio player, 'Feature L-K', "
            "activation), filters by layer and feature, one page per feature comparing it across all tracks, the "
            "model card and, with --correlation, the correlation figure and table. No network is needed to view "
            "it; it works from file:// and from any static web server."
        ),
        epilog=(
            "Example: python -m beam_jobs.auralise --manifest tracks.csv --model exports/choi/1 --output auralised; "
            "python -m tfaural.report auralised; then open auralised/report/index.html, or run "
            "'python -m http.server -d auralised --bind 127.0.0.1' and visit http://127.0.0.1:8000/report/. "
            "Audio is linked, not copied: keep the report next to the auralisation output."
        ),
    )
    parser.add_argument("auralise_dir", metavar="AURALISE_OUTPUT_DIR",
                        help="the folder written by beam_jobs.auralise (job.json, manifest.jsonl, <track>/track.json)")
    parser.add_argument("-o", "--output", metavar="REPORT_DIR", default=None,
                        help="where to write the report (default: AURALISE_OUTPUT_DIR/report); rerunning updates it "
                             "and reuses the thumbnails whose audio has not changed")
    parser.add_argument("--correlation", metavar="DIR", default=None,
                        help="folder of the correlation analysis (correlations.csv, summary.json, figure10.png) "
                             "to include")
    parser.add_argument("--title", default=None, help=f"title of the report (default: {DEFAULT_TITLE!r})")
    parser.add_argument("--tracks-per-page", type=_positive_int, default=DEFAULT_TRACKS_PER_PAGE, metavar="N",
                        help=f"tracks per page of the track list and of each feature page "
                             f"(default: {DEFAULT_TRACKS_PER_PAGE})")
    parser.add_argument("--rebuild-thumbnails", action="store_true",
                        help="redraw every spectrogram thumbnail instead of reusing the cached ones")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: written, 2: bad input)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        index = write_report(
            args.auralise_dir, args.output, correlation=args.correlation, title=args.title,
            tracks_per_page=args.tracks_per_page, rebuild_thumbnails=args.rebuild_thumbnails, progress=not args.quiet,
        )
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
