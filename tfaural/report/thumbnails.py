"""Spectrogram thumbnails of the audio the job drew no picture of, with a cache.

When ``beam_jobs.auralise`` ran with ``--spectrograms`` the report shows its PNGs and draws
nothing. Otherwise each audio file is decoded once (:mod:`tfaural.audio`) and drawn with the one
renderer, :mod:`tfaural.spectrogram_images`, with the model's STFT settings: power in dB relative
to a full-scale sine (dBFS), resampled to the thumbnail box (``width`` x ``height``, the 2:1 box
the pages show every spectrogram in), magma colour map, low frequencies at the bottom.

Every image of one layer (and all originals) shares one colour scale: its top is the loudest
pixel of that layer over all tracks, rounded up to 5 dB, and it spans ``dynamic_range_db`` below.
``thumbs/cache.json`` remembers each source's size, modification time, loudest pixel and the scale
it was drawn with; an entry is reused only when the source's size and modification time still
match and its PNG is still there, so a rerun draws only what changed.

Never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfaural import files
from tfaural.errors import DataError, ParameterError, TfauralError
from tfaural.formats import ExportMetadata
from tfaural.report.reading import AuraliseOutput, read_json
from tfaural.spectrogram_images import full_scale_db, render_spectrogram, resize_power, stft_magnitude

__all__ = [
    "THUMBS_DIR",
    "CACHE_FILE",
    "ORIGINAL_GROUP",
    "THUMBNAIL_WIDTH",
    "THUMBNAIL_HEIGHT",
    "ThumbnailSettings",
    "thumbnail_settings",
    "spectrogram_image",
    "thumbnail_png",
    "render_thumbnails",
]

logger = logging.getLogger("tfaural.report")

THUMBS_DIR = "thumbs"
CACHE_FILE = "cache.json"
CACHE_FORMAT = 2
ORIGINAL_GROUP = "original"
THUMBNAIL_WIDTH = 320
"""Width of a thumbnail in pixels; with :data:`THUMBNAIL_HEIGHT` the 2:1 box of ``.thumb`` in style.css."""
THUMBNAIL_HEIGHT = 160
"""Height of a thumbnail in pixels."""
_DB_FLOOR = -120.0
_SCALE_STEP_DB = 5.0
_IMAGE_MEMORY_BYTES = 256 * 2**20  # images kept in memory between measuring and drawing (float16)
_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class ThumbnailSettings:
    """How thumbnails are drawn (changing any of these redraws every thumbnail).

    Attributes:
        n_fft: FFT size in samples.
        hop_length: Hop in samples.
        dynamic_range_db: Span of the colour scale below its top, in dB.
        width: Width of every thumbnail in pixels (frames are averaged or repeated to fit).
        height: Height of every thumbnail in pixels (frequency bins are averaged or repeated to fit).
        colormap: Matplotlib colour map.
    """

    n_fft: int = 512
    hop_length: int = 128
    dynamic_range_db: float = 80.0
    width: int = THUMBNAIL_WIDTH
    height: int = THUMBNAIL_HEIGHT
    colormap: str = "magma"

    def __post_init__(self) -> None:
        if self.n_fft < 2 or self.hop_length < 1 or self.dynamic_range_db <= 0:
            raise ParameterError(
                f"n_fft={self.n_fft}, hop_length={self.hop_length}, dynamic_range_db={self.dynamic_range_db}: "
                "expected n_fft >= 2, hop_length >= 1 and a positive dynamic range"
            )
        if self.width < 8 or self.height < 8:
            raise ParameterError(f"width={self.width}, height={self.height}: expected >= 8 pixels")

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


def spectrogram_image(waveforms: np.ndarray, settings: ThumbnailSettings) -> np.ndarray:
    """The thumbnail images of waveforms, in dBFS, sized to the thumbnail box.

    Args:
        waveforms: float32 ``[batch, samples]`` in [-1, 1].
        settings: STFT and image size.

    Returns:
        float32 ``[batch, height, width]``: power in dB relative to the loudest bin of a
        full-scale sine (:func:`tfaural.spectrogram_images.full_scale_db`), floored at
        -120 dB, row 0 the lowest frequency; the STFT's bins and frames resampled by area
        averaging of power (:func:`tfaural.spectrogram_images.resize_power`).
    """
    reference = full_scale_db(settings.n_fft)
    images = []
    for y in np.asarray(waveforms, np.float32).reshape(-1, np.shape(waveforms)[-1]):
        magnitude = stft_magnitude(y, n_fft=settings.n_fft, hop_length=settings.hop_length).astype(np.float64)
        power = resize_power(np.square(magnitude), height=settings.height, width=settings.width)
        db = 10.0 * np.log10(np.maximum(power, 1e-30)) - reference
        images.append(np.maximum(db, _DB_FLOOR).astype(np.float32))
    return np.stack(images)


def thumbnail_png(image: np.ndarray, scale: Sequence[float], settings: ThumbnailSettings) -> bytes:
    """An 8-bit palette PNG of a dB image (row 0 = lowest frequency, drawn at the bottom).

    :func:`tfaural.spectrogram_images.render_spectrogram` with ``palette=True``: the colours
    ``matplotlib.pyplot.imsave`` draws, at about a quarter of the size of its RGBA file.
    """
    return render_spectrogram(image, vmin=float(scale[0]), vmax=float(scale[1]), colormap=settings.colormap,
                              palette=True)


@dataclasses.dataclass(frozen=True)
class _Thumb:
    group: str  # colour-scale group: "original" or "layer<L>"
    source: str  # absolute audio path
    key: str  # source path relative to the auralisation folder (cache key)
    target: str  # absolute PNG path


def _relative_key(path: str, start: str) -> str:
    return pathlib.PurePath(os.path.relpath(path, start)).as_posix()


def _thumb_jobs(output: AuraliseOutput, thumbs_dir: str) -> list[_Thumb]:
    """One job per audio file the auralisation job drew no PNG of."""
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
        data = read_json(path)
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
    """``{key: image or error message}``: each source decoded once and drawn."""
    from tfaural import audio

    results: dict[str, np.ndarray | str] = {}
    for job in jobs:
        try:
            y, _ = audio.load(job.source, sample_rate=None)
        except TfauralError as err:
            results[job.key] = str(err)
            continue
        results[job.key] = spectrogram_image(y[np.newaxis], settings)[0]
    return results


def _colour_scale(max_db: float, settings: ThumbnailSettings) -> list[float]:
    top = math.ceil(max_db / _SCALE_STEP_DB) * _SCALE_STEP_DB
    return [top - settings.dynamic_range_db, top]


class _ImageStore:
    """Images between measuring and drawing: in memory up to a budget, then in a temporary folder."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._memory: dict[str, np.ndarray] = {}
        self._spilled: dict[str, str] = {}
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def put(self, key: str, image: np.ndarray) -> None:
        small = image.astype(np.float16)
        if small.nbytes <= self._budget:
            self._memory[key] = small
            self._budget -= small.nbytes
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="tfaural-thumbs-")
        path = os.path.join(self._folder.name, f"{len(self._spilled)}.npy")
        np.save(path, small)
        self._spilled[key] = path

    def pop(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            return self._memory.pop(key)
        path = self._spilled.pop(key, None)
        return None if path is None else np.load(path)

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()


def render_thumbnails(
    output: AuraliseOutput,
    report_dir: str | os.PathLike[str],
    *,
    settings: ThumbnailSettings | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[dict[str, str], dict[str, list[float]]]:
    """Draws the spectrogram thumbnails the job did not write, reusing those still valid.

    Each new or changed source is decoded and drawn once: its image is measured (its loudest
    pixel, cached), which fixes each group's colour scale, and kept until every scale is
    known; then every thumbnail whose source, scale or file changed is written. A source
    measured by an earlier run is decoded again only when its group's scale has changed.

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

    store = _ImageStore(_IMAGE_MEMORY_BYTES)
    try:
        with tqdm(total=len(measure), desc="drawing spectrograms", unit="file", disable=not progress) as bar:
            for chunk in _chunks(measure, _CHUNK):
                for key, measured in _images(chunk, settings).items():
                    if isinstance(measured, str):
                        logger.warning("no thumbnail for %s: %s", key, measured)
                        entries[key]["error"] = measured
                        continue
                    entries[key]["max_db"] = float(measured.max())
                    store.put(key, measured)
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
        with tqdm(total=len(draw), desc="writing thumbnails", unit="file", disable=not progress) as bar:
            for chunk in _chunks(draw, _CHUNK):
                kept = {job.key: store.pop(job.key) for job in chunk}
                redo = [job for job in chunk if kept[job.key] is None]  # measured by an earlier run
                fresh = _images(redo, settings) if redo else {}
                for job in chunk:
                    image = kept[job.key]
                    if image is None:
                        recomputed = fresh.get(job.key)
                        if not isinstance(recomputed, np.ndarray):
                            logger.warning("no thumbnail for %s: %s", job.key, recomputed)
                            continue
                        image = recomputed
                    files.write_bytes(job.target, thumbnail_png(image, scales[job.group], settings))
                    entries[job.key]["scale"] = scales[job.group]
                    entries[job.key]["thumb"] = _relative_key(job.target, thumbs_dir)
                bar.update(len(chunk))
    finally:
        store.close()
    if jobs or os.path.isdir(thumbs_dir):
        document = {"format": CACHE_FORMAT, "settings": settings.to_dict(), "entries": entries}
        files.write_text(cache_path, json.dumps(document, indent=1, sort_keys=True) + "\n")
    if jobs:
        logger.info("thumbnails: %d decoded, %d drawn, %d reused", len(measure), len(draw), len(jobs) - len(draw))
    else:
        logger.info("thumbnails: none needed (the job wrote every spectrogram the pages show)")
    thumbs = {job.source: job.target for job in jobs if "scale" in entries[job.key] and os.path.isfile(job.target)}
    return thumbs, scales
