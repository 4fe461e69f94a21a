"""Auralises the learnt features of an exported model on every track of a catalogue (Choi et al. 2015).

Usage:

    python -m beam_jobs.auralise --input 'music/*.flac' --model exports/choi/1 --output results/auralised \\
        [--layers all|1,5|1-5] [--features all|0-7,12] [--clip-seconds 4 --offset-seconds 30] \\
        [--mode phase|mask] [--format wav|flac] [--spectrograms] [--features-per-call 16] [--batch-size 1] \\
        [--tags 3] [--report] [--pad-short] [--skip-existing | --overwrite] [beam options]

For each track, the excerpt ``[offset, offset + clip)`` is decoded (nothing else of
the file is read), mixed to mono and resampled to the model's rate; the
``auralise`` signature deconvolves each chosen feature map of each chosen layer
back to the input and turns it into sound (the deconvolved magnitude with the
excerpt's phase, or as a soft mask), peak-normalised to 0.9. Feature maps are
deconvolved ``--features-per-call`` at a time and RunInference batches at most
``--batch-size`` excerpts (default 1): 64 features of a 4-s clip of the Choi CNN
hold ~1 GB.

The output folder (read by the HTML listening report) receives:

    job.json                          the settings: model_dir, metadata (the export's metadata.json), layers,
                                      features ({layer: [indices]}), mode, clip_seconds, offset_seconds, format,
                                      spectrograms, created
    manifest.jsonl                    every input exactly once: ok with its outputs, or failed with the reason
    <name>/original.wav               the excerpt that was auralised, at the model's rate
    <name>/original.png               its spectrogram (with --spectrograms)
    <name>/layer<L>/feature<K>.wav    the auralised feature (.flac with --format flac)
    <name>/layer<L>/feature<K>.png    its spectrogram (with --spectrograms; one dB colour scale per layer)
    report/index.html                 the HTML listening report (with --report; tfaural.report)
    <name>/track.json                 written last (its presence means the track is complete):
        {"track_id", "path", "sample_rate", "offset_seconds", "clip_seconds", "original": "original.wav",
         "original_spectrogram": "original.png" or null,
         "layers": {"<L>": [{"feature": K, "file": "layer<L>/feature<K>.wav", "spectrogram": ... or null,
                             "activation": float or null, "peak": float, "silent": bool}, ...]},
         "checksums": {"original.wav": SHA-256 hex, "layer<L>/feature<K>.wav": ..., ...},
         "tags": [{"label": name, "score": s}, ...] (with --tags N > 0: the excerpt's N best, best first),
         "attribution": {"<label>": {"<L>": [{"feature": K, "contribution": c}, ...], ...}, ...},
         "padded_seconds": s (with --pad-short, for an excerpt zero-padded to the shortest the model needs)}
                                      (the TOP_CONTRIBUTORS features of each layer contributing most to each
                                      of those tags, largest first: the export's attribute signature)
                                      (every file listed, relative to <name>/: --skip-existing reuses a track
                                      only if its track.json is complete and every file has its checksum;
                                      anything else is recomputed, with the reason in the log)

``<name>`` is the track id with ``/`` replaced by ``__`` (see beam_jobs.tracks).
A feature whose deconvolution is all zero (or at most −144 dB under the excerpt's
peak) is written as a silent file with ``"silent": true`` and ``"peak": 0``; the
track is still ``ok``. An excerpt that is itself silent (peak at most −120 dBFS,
:data:`tfaural.audio.SILENCE_PEAK`) fails: there is nothing to hear.
``activation`` is the feature map's largest activation on the excerpt when the
export provides it. An excerpt needs only the export's ``min_deconv_seconds``
(the shortest clip whose maps at its deepest layer are not empty, often well
under a tagging segment), or one model segment with ``--tags`` (attribution
scores the excerpt; a ``--clip-seconds`` shorter than a segment turns ``--tags``
off, as ``job.json`` records). Without ``--clip-seconds`` the excerpt is 4 s (the
paper's), or what the export needs if that is longer (an imported 29.1-s tagger built
for one input length needs 29.1 s). A track shorter than ``offset + clip`` is
auralised on what there is, if that is long enough (``clip_seconds`` in
``track.json`` is the actual length); a shorter one fails as too short, or with
``--pad-short`` is zero-padded to the shortest excerpt the model needs (``track.json``
says how much: ``padded_seconds``). Without --runner the job uses every core.
While it runs it shows how many tracks are written: a progress bar on a terminal, else a log
line every 30 s (TFAURAL_PROGRESS_SECONDS); local output folders only (beam_jobs.progress).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from beam_jobs import io as beam_io
from beam_jobs.accounting import AccountForTracks
from beam_jobs.failures import failed_result, guarded, infer, keep
from beam_jobs.inference import InferenceFailure, SignatureModelHandler
from beam_jobs.job import CatalogueJob, Timings
from beam_jobs.options import (
    DEFAULT_CLIP_SECONDS,
    DEFAULT_FEATURES_PER_CALL,
    AuraliseOptions,
    CatalogueJobOptions,
    InferenceJobOptions,
    LayerOptions,
    ShortTrackOptions,
    parse_index_list,
)
from beam_jobs.settings import InferenceSettings, excerpt_seconds
from beam_jobs.tracks import INPUTS_FOLDER, ListInputs, TrackInput, TrackResult, check_source, decode_track
from tfaural.audio import is_silent, silent, too_short
from tfaural.errors import AudioError, DataError, ParameterError
from tfaural.formats import FAILED, OK, TRACK_FILE, FeatureRecord, TrackRecord, parse_track_record
from tfaural.spectrogram_images import render_spectrogram, spectrogram_db

__all__ = [
    "FORMATS",
    "TRACK_FILE",
    "ORIGINAL",
    "Settings",
    "ChunkKey",
    "ChunkDone",
    "AttributeKey",
    "Attribution",
    "attribution_of",
    "Plan",
    "feature_file",
    "spectrogram_db",
    "render_spectrogram",
    "PrepareTrack",
    "read_track_info",
    "WriteFeatureAudio",
    "FinishTrack",
    "write_listening_report",
    "build_pipeline",
    "AuraliseJob",
    "JOB",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

FORMATS = ("wav", "flac")
SIGNATURE = "auralise"
ATTRIBUTE = "attribute"
#: Features listed per tag and layer in ``track.json``'s ``attribution``.
TOP_CONTRIBUTORS = 8
ORIGINAL = "original.wav"
ORIGINAL_PNG = "original.png"
DYNAMIC_RANGE_DB = 80.0
"""Colour range of the spectrograms: from the layer's (or the original's) peak down by this many dB."""
REPORT_FOLDER = "report"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The auralise job's settings, validated.

    Attributes:
        common: The flags every inference job has (``format`` is ``wav`` or ``flac``).
        layers: The layers to auralise, ascending.
        features: The feature maps of each layer, ascending.
        mode: ``"phase"`` or ``"mask"``.
        clip_seconds: Length of the excerpt.
        offset_seconds: Start of the excerpt in the file.
        spectrograms: Write PNG spectrograms.
        features_per_call: Feature maps per signature call.
        shortest: Shortest usable excerpt in samples: the export's ``min_deconv_samples``, or one model
            segment with ``tags`` (attribution scores the excerpt).
        stft: ``(n_fft, hop_length)`` of the spectrograms.
        report: Write the HTML listening report when the run has finished.
        tags: How many of each excerpt's best tags to explain (0: none; needs the ``attribute`` signature).
        pad_short: Zero-pad an excerpt shorter than ``shortest`` to it (``--pad-short``), instead of
            failing the track as too short.
    """

    common: InferenceSettings
    layers: tuple[int, ...]
    features: dict[int, tuple[int, ...]]
    mode: str
    clip_seconds: float
    offset_seconds: float
    spectrograms: bool
    features_per_call: int
    shortest: int
    stft: tuple[int, int]
    report: bool = False
    tags: int = 0
    pad_short: bool = False

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Settings:
        """Validates the flags against the model's metadata.

        Raises:
            ParameterError: On a missing or invalid flag (a layer or feature the model lacks,
                a clip shorter than the export deconvolves or longer than it accepts).
            ModelError: If ``--model`` is not a tfaural export with an ``auralise`` signature.
        """
        common = InferenceSettings.from_options(options, signature=SIGNATURE, default_batch_size=1, formats=FORMATS)
        job = options.view_as(AuraliseOptions)
        meta = common.metadata
        rate = common.sample_rate
        widths = meta.features_per_layer
        layers = parse_index_list(options.view_as(LayerOptions).layers, flag="--layers",
                                  valid=list(meta.deconvolvable_layers))
        features = {}
        for layer in layers:
            try:
                features[layer] = parse_index_list(job.features, flag="--features", valid=range(widths[layer]))
            except ParameterError as err:
                raise ParameterError(f"{err} (layer {layer} has {widths[layer]} feature maps)") from None
        shortest = meta.min_deconv_samples
        longest = math.inf if meta.max_deconv_seconds is None else meta.max_deconv_seconds
        if job.tags < 0:
            raise ParameterError(f"--tags {job.tags} is invalid: expected a number of tags >= 0")
        tags = min(int(job.tags), 10, len(meta.labels))
        if tags and ATTRIBUTE not in meta.signatures:
            logger.info("auralise: the export has no %s signature (exported before it existed): --tags is off",
                        ATTRIBUTE)
            tags = 0
        clip_seconds = job.clip_seconds
        if clip_seconds is None:  # the paper's 4 s, or what the export needs (one segment with --tags)
            needed = max(shortest, meta.segment_length if tags else 0)
            clip_seconds = excerpt_seconds(meta, needed_samples=needed, default=DEFAULT_CLIP_SECONDS)
            if clip_seconds > DEFAULT_CLIP_SECONDS:
                logger.info("auralise: excerpts of %g s (the export's %s is %.4g s; --clip-seconds to change)",
                            clip_seconds, "segment" if tags and meta.segment_length >= shortest else
                            "min_deconv_seconds", needed / rate)
        if not clip_seconds > 0 or clip_seconds * rate < shortest:
            raise ParameterError(
                f"--clip-seconds {clip_seconds} is invalid: the export deconvolves clips of at least "
                f"{shortest / rate:.4g} s (its min_deconv_seconds: the model's input length, or the shortest clip "
                "whose maps at its deepest exported layer are not empty)")
        if clip_seconds > longest:
            raise ParameterError(f"--clip-seconds {clip_seconds} is longer than the export's max_deconv_seconds "
                                 f"({longest:g} s)")
        if job.offset_seconds < 0:
            raise ParameterError(f"--offset-seconds {job.offset_seconds} is invalid: expected seconds >= 0")
        budget = meta.max_deconv_feature_samples
        clip = clip_seconds * rate
        # the most features per call that the export's per-call budget allows (at least one)
        most = None if budget is None else max(1, int(float(budget) // (common.batch_size * clip)))
        features_per_call = job.features_per_call
        if features_per_call is None:
            features_per_call = DEFAULT_FEATURES_PER_CALL if most is None else min(DEFAULT_FEATURES_PER_CALL, most)
        if features_per_call < 1:
            raise ParameterError(f"--features-per-call {features_per_call} is invalid: expected a positive integer")
        if budget is not None and features_per_call * common.batch_size * clip > float(budget):
            raise ParameterError(
                f"--features-per-call {features_per_call} x --batch-size {common.batch_size} x "
                f"--clip-seconds {clip_seconds:g} is more than the export deconvolves per call "
                f"({float(budget) / rate:g} feature-seconds): use --features-per-call {most} or less")
        if budget is not None and tags * clip > float(budget):
            tags = max(1, int(float(budget) // clip))
        if tags and clip_seconds * rate < meta.segment_length:
            logger.warning("auralise: --clip-seconds %g is shorter than one model segment (%.4g s), which "
                           "attribution scores: --tags is off", clip_seconds, meta.segment_seconds)
            tags = 0
        stft = meta.stft or {}
        n_fft = int(stft.get("n_fft") or 2 ** max(6, round(math.log2(rate * 0.046))))  # ~46 ms windows
        hop = int(stft.get("hop_length") or n_fft // 4)
        return cls(common=common, layers=layers, features=features, mode=job.mode, clip_seconds=float(clip_seconds),
                   offset_seconds=float(job.offset_seconds), spectrograms=bool(job.spectrograms),
                   features_per_call=int(features_per_call), shortest=meta.segment_length if tags else shortest,
                   stft=(n_fft, hop), report=bool(job.report), tags=tags,
                   pad_short=bool(options.view_as(ShortTrackOptions).pad_short))

    def part_file(self, track: TrackInput) -> str:
        """The track's record, relative to the output folder: ``<name>/track.json``, written last."""
        return f"{track.name}/{TRACK_FILE}"

    def job_settings(self) -> dict[str, Any]:
        """What determines the outputs (compared by ``--skip-existing``)."""
        return {"signature": SIGNATURE, "layers": list(self.layers),
                "features": {str(k): list(v) for k, v in self.features.items()}, "mode": self.mode,
                "clip_seconds": self.clip_seconds, "offset_seconds": self.offset_seconds,
                "format": self.common.format, "spectrograms": self.spectrograms, "tags": self.tags,
                **({"pad_short": True} if self.pad_short else {})}  # only when on: runs before it have no such key

    def chunks(self) -> list[tuple[int, tuple[int, ...]]]:
        """``(layer, features)`` of every signature call per track, in order."""
        k = self.features_per_call
        return [(layer, feats[i : i + k]) for layer in self.layers for feats in [self.features[layer]]
                for i in range(0, len(feats), k)]


def feature_file(layer: int, feature: int, ext: str) -> str:
    """``layer<L>/feature<K>.<ext>``, relative to the track's folder."""
    return f"layer{layer}/feature{feature}.{ext}"


@dataclasses.dataclass(frozen=True)
class ChunkKey:
    """The RunInference key of one signature call: a track and some feature maps of one layer.

    Attributes:
        track: The track.
        layer: The layer.
        features: The feature-map indices.
    """

    track: TrackInput
    layer: int
    features: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class AttributeKey:
    """The RunInference key of one ``attribute`` call: a track and one layer.

    Attributes:
        track: The track.
        layer: The layer.
    """

    track: TrackInput
    layer: int


@dataclasses.dataclass(frozen=True)
class Attribution:
    """What one ``attribute`` call said: the excerpt's best tags and, per tag, the layer's top contributors.

    Attributes:
        track: The track.
        layer: The layer.
        tags: ``(label, score)`` of the excerpt's best tags, best first.
        contributors: ``{label: ((feature, contribution), ...)}``, largest contribution first.
    """

    track: TrackInput
    layer: int
    tags: tuple[tuple[str, float], ...]
    contributors: dict[str, tuple[tuple[int, float], ...]]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a track expects: one :class:`ChunkDone` per call.

    Attributes:
        track: The track.
        calls: Number of ``auralise`` calls.
        clip_seconds: Actual length of the excerpt (with its padding).
        original_sha256: SHA-256 of the ``original.wav`` written.
        attribute_calls: Number of ``attribute`` calls (one per layer with ``--tags``).
        padded_seconds: Zeros at the end of the excerpt (``--pad-short``), in seconds.
        source: The audio file's :func:`~beam_jobs.io.source_stamp` when it was decoded.
    """

    track: TrackInput
    calls: int
    clip_seconds: float
    original_sha256: str = ""
    attribute_calls: int = 0
    padded_seconds: float = 0.0
    source: str | None = None


@dataclasses.dataclass(frozen=True)
class ChunkDone:
    """The files written for one call.

    Attributes:
        track: The track.
        layer: The layer.
        entries: One ``track.json`` entry per feature (without ``spectrogram``) and the SHA-256 of its file
            (for ``checksums`` in ``track.json``).
    """

    track: TrackInput
    layer: int
    entries: tuple[tuple[FeatureRecord, str], ...]


class PrepareTrack(beam.DoFn):
    """Track → ``original.wav``, a :class:`Plan` and one example per call; or a :class:`TrackResult`
    (kept from an earlier run with ``--skip-existing``, or failed to decode)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, track: TrackInput) -> Iterator[Any]:
        s = self._settings
        marker = s.common.path(s.part_file(track))
        if beam_io.exists(marker):
            if s.common.skip_existing:
                try:
                    info = read_track_info(s, track)
                except DataError as err:
                    logger.warning("--skip-existing: recomputing %s: %s", track.track_id, err)
                    beam.metrics.Metrics.counter("tfaural_jobs", "invalid_results_recomputed").inc()
                else:
                    yield TrackResult(track, OK, outputs=_outputs(track, info), reused=True)
                    return
            beam_io.delete([marker])  # the track is incomplete until it is written again
        rate = s.common.sample_rate
        source = beam_io.source_stamp(track.path)  # before decoding: a change while it is read shows on a rerun
        try:
            clip = decode_track(track, sample_rate=rate, min_samples=1, offset=s.offset_seconds,
                                duration=s.clip_seconds)
            if len(clip) < s.shortest and not s.pad_short:
                what = "one model segment, which --tags scores" if s.tags else "the export's min_deconv_seconds"
                raise too_short(track.path, samples=len(clip), sample_rate=rate, needed=s.shortest,
                                why=f"{what}; from {s.offset_seconds:g} s on; --pad-short zero-pads a shorter excerpt")
            peak = float(np.max(np.abs(clip)))
            if is_silent(peak):
                end = s.offset_seconds + len(clip) / rate
                raise silent(track.path, peak=peak, what=f"the excerpt {s.offset_seconds:g} s – {end:g} s",
                             hint="nothing to hear (--offset-seconds picks another part)")
        except AudioError as err:
            yield failed_result(track, err, stage="decode")
            return
        padding = max(0, s.shortest - len(clip))
        if padding:
            clip = np.concatenate([clip, np.zeros(padding, np.float32)])
        digest = beam_io.write_audio(s.common.path(track.name, ORIGINAL), clip, sample_rate=rate,
                                     normalize=peak > 1.0)
        calls = s.chunks()
        yield Plan(track, len(calls), len(clip) / rate, digest, attribute_calls=len(s.layers) if s.tags else 0,
                   padded_seconds=padding / rate, source=source)
        for layer, feats in calls:
            example = {"waveform": clip, "layer": np.int32(layer), "features": np.asarray(feats, np.int32),
                       "mode": s.mode}
            yield ChunkKey(track, layer, feats), example
        if s.tags:
            for layer in s.layers:
                yield AttributeKey(track, layer), {"waveform": clip, "layer": np.int32(layer),
                                                    "top_tags": np.int32(s.tags)}


def _outputs(track: TrackInput, record: TrackRecord) -> tuple[str, ...]:
    """The files of a complete track (from its ``track.json``), relative to the output folder."""
    return tuple(f"{track.name}/{f}" for f in [*record.files(), TRACK_FILE])


def read_track_info(settings: Settings, track: TrackInput) -> TrackRecord:
    """Reads and checks the ``track.json`` of an earlier run and the files it lists (what ``--skip-existing`` reuses).

    It must describe this track, made from its file as it is now (:func:`~beam_jobs.tracks.check_source`),
    with this run's layers, features, format and spectrograms,
    and every file it lists must be there with the SHA-256 recorded in its ``checksums``
    (``track.json`` of runs made before checksums were recorded: every audio file must
    decode and every PNG must be a PNG).

    Returns:
        The content of ``track.json``.

    Raises:
        DataError: Naming the file and what is wrong (unreadable or truncated JSON, another track or other
            settings, a missing file, a file whose content is not what the run wrote).
    """
    s = settings
    path = s.common.path(s.part_file(track))
    try:
        info = parse_track_record(beam_io.read_text(path), path=path)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if info.track_id != track.track_id or info.path != track.path:
        raise DataError(f"{path}: does not describe this track (its track_id and path differ)")
    check_source(info.source, track, result=path)
    ext = s.common.format or FORMATS[0]
    if info.original != ORIGINAL or set(info.layers) != set(s.layers):
        raise DataError(f"{path}: does not list the layers {list(s.layers)} of this run")
    for layer in s.layers:
        entries = info.layers[layer]
        wanted = [feature_file(layer, f, ext) for f in s.features[layer]]
        if [e.file for e in entries] != wanted or [e.feature for e in entries] != list(s.features[layer]):
            raise DataError(f"{path}: layer {layer} does not list the features {list(s.features[layer])} as "
                            f"{ext} files")
        if any(bool(e.spectrogram) != s.spectrograms for e in entries):
            raise DataError(f"{path}: its spectrograms do not match --spectrograms of this run")
    if bool(info.original_spectrogram) != s.spectrograms:
        raise DataError(f"{path}: its spectrograms do not match --spectrograms of this run")
    attribution = info.attribution or {}
    if len(info.tags) != s.tags or set(attribution) != {label for label, _ in info.tags} or any(
            set(per_layer) != set(s.layers) for per_layer in attribution.values()):
        raise DataError(f"{path}: its tags and attribution do not match --tags {s.tags} and the layers of this run")
    checksums = info.checksums
    for relative in info.files():
        file = s.common.path(track.name, relative)
        if not beam_io.exists(file):
            raise DataError(f"{file}, listed in {path}, is missing")
        if checksums is not None:
            if checksums.get(relative) != beam_io.file_sha256(file):
                raise DataError(f"{file} is not the file the run wrote (its SHA-256 differs from {path})")
        elif relative.endswith(".png"):
            if beam_io.read_bytes(file)[:8] != b"\x89PNG\r\n\x1a\n":
                raise DataError(f"{file}, listed in {path}, is not a PNG image")
        else:
            try:
                beam_io.load_audio(file, sample_rate=None)
            except AudioError as err:
                raise DataError(f"{file}, listed in {path}, does not decode: {err.reason}") from None
    return info


def _scalar(outputs: dict[str, np.ndarray], name: str, index: int) -> Any:
    value = outputs.get(name)
    return None if value is None else np.asarray(value)[index].item()


class WriteFeatureAudio(beam.DoFn):
    """``(ChunkKey, prediction)`` → ``layer<L>/feature<K>.<ext>`` files and a :class:`ChunkDone`,
    or a failed :class:`TrackResult`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[ChunkKey, PredictionResult]) -> Iterator[ChunkDone | TrackResult]:
        s = self._settings
        key, prediction = element
        outputs = prediction.inference
        if isinstance(outputs, InferenceFailure):
            yield failed_result(key.track, outputs, stage="inference")
            return
        ext = s.common.format or FORMATS[0]
        audio = np.asarray(outputs["audio"], np.float32)  # [k, samples], peak 0.9 or silent
        entries = []
        for index, feature in enumerate(key.features):
            name = feature_file(key.layer, feature, ext)
            signal = np.nan_to_num(audio[index], nan=0.0, posinf=0.0, neginf=0.0)
            digest = beam_io.write_audio(s.common.path(key.track.name, name), signal,
                                         sample_rate=s.common.sample_rate, format=ext,
                                         normalize=bool(np.max(np.abs(signal), initial=0.0) > 1.0))
            peak = _scalar(outputs, "peak", index)
            silent = _scalar(outputs, "silent", index)
            activation = _scalar(outputs, "activation", index)
            entries.append((FeatureRecord(
                feature=int(feature), file=name, spectrogram=None,
                activation=None if activation is None else float(activation),
                peak=float(peak) if peak is not None else float(np.max(np.abs(signal), initial=0.0)),
                silent=bool(silent) if silent is not None else not bool(np.any(signal)),
            ), digest))
        beam.metrics.Metrics.counter("auralise", "features_written").inc(len(entries))
        yield ChunkDone(key.track, key.layer, tuple(entries))


def attribution_of(key: AttributeKey, outputs: dict[str, np.ndarray], *, top: int = TOP_CONTRIBUTORS) -> Attribution:
    """An :class:`Attribution` from the ``attribute`` signature's outputs for one excerpt.

    Args:
        key: The call's key.
        outputs: ``labels`` ``[t]`` (bytes or str), ``scores`` ``[n_labels]``, ``tags`` ``[t]`` and
            ``contributions`` ``[t, features]``.
        top: Features kept per tag.
    """
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(outputs["labels"]).reshape(-1)]
    scores = np.asarray(outputs["scores"], np.float64).reshape(-1)
    indices = np.asarray(outputs["tags"]).reshape(-1)
    contributions = np.asarray(outputs["contributions"], np.float64).reshape(len(labels), -1)
    tags = tuple((label, round(float(scores[int(i)]), 6)) for label, i in zip(labels, indices))
    contributors = {}
    for label, row in zip(labels, contributions):
        order = np.argsort(-row, kind="stable")[:top]
        contributors[label] = tuple((int(f), round(float(row[f]), 7)) for f in order)
    return Attribution(key.track, key.layer, tags, contributors)


class ReadAttribution(beam.DoFn):
    """``(AttributeKey, prediction)`` → an :class:`Attribution`, or a failed :class:`TrackResult`."""

    def process(self, element: tuple[AttributeKey, PredictionResult]) -> Iterator[Attribution | TrackResult]:
        key, prediction = element
        outputs = prediction.inference
        if isinstance(outputs, InferenceFailure):
            yield failed_result(key.track, outputs, stage="inference")
            return
        yield attribution_of(key, outputs)


class FinishTrack(beam.DoFn):
    """``(track_id, [Plan, ChunkDone..., failures])`` → spectrograms, ``track.json`` (last) and the
    track's :class:`TrackResult`; removes files an earlier run left in the track's folder."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def process(self, element: tuple[str, Iterable[Any]]) -> Iterator[TrackResult]:
        s = self._settings
        values = list(element[1])
        plans = [v for v in values if isinstance(v, Plan)]
        done = [v for v in values if isinstance(v, ChunkDone)]
        attributions = sorted((v for v in values if isinstance(v, Attribution)), key=lambda a: a.layer)
        failures = [v for v in values if isinstance(v, TrackResult)]
        if failures:
            yield failures[0]
            return
        if not plans:
            # Cannot happen (a plan precedes every call); AccountForTracks would report the track as lost.
            return
        plan = plans[0]
        track = plan.track
        if len(done) != plan.calls or len(attributions) != plan.attribute_calls:
            yield TrackResult(track, FAILED, stage="inference", error_type="IncompletePrediction",
                              error=f"{len(done) + len(attributions)} of {plan.calls + plan.attribute_calls} "
                                    "signature calls came back")
            return
        layers: dict[int, list[FeatureRecord]] = {}
        checksums = {ORIGINAL: plan.original_sha256}
        for chunk in sorted(done, key=lambda c: (c.layer, c.entries[0][0].feature if c.entries else -1)):
            for entry, digest in chunk.entries:
                checksums[entry.file] = digest
                layers.setdefault(chunk.layer, []).append(entry)
        info = TrackRecord(
            track_id=track.track_id, path=track.path, sample_rate=s.common.sample_rate,
            offset_seconds=s.offset_seconds, clip_seconds=plan.clip_seconds, original=ORIGINAL,
            original_spectrogram=None, layers={layer: tuple(entries) for layer, entries in layers.items()},
            checksums=checksums, padded_seconds=plan.padded_seconds, source=plan.source,
        )
        if attributions:
            info = dataclasses.replace(info, tags=attributions[0].tags, attribution={
                label: {a.layer: a.contributors[label] for a in attributions} for label, _ in attributions[0].tags
            })
        if s.spectrograms:
            info = self._spectrograms(track, info, checksums)
        outputs = _outputs(track, info)
        self._remove_stale(track, keep={*outputs})
        beam_io.write_text(s.common.path(s.part_file(track)), info.to_text())
        yield TrackResult(track, OK, outputs=outputs)

    def _spectrograms(self, track: TrackInput, info: TrackRecord, checksums: dict[str, str]) -> TrackRecord:
        """Draws the PNGs, adds their checksums; returns ``info`` naming them."""
        s = self._settings
        n_fft, hop = s.stft

        def load(name: str) -> np.ndarray:
            y, _ = beam_io.load_audio(s.common.path(track.name, name), sample_rate=None)
            return y

        def write_png(name: str, image: np.ndarray, top: float) -> None:
            data = render_spectrogram(image, vmin=top - DYNAMIC_RANGE_DB, vmax=top)
            beam_io.write_bytes(s.common.path(track.name, name), data)
            checksums[name] = beam_io.sha256(data)

        original = spectrogram_db(load(ORIGINAL), n_fft=n_fft, hop_length=hop)
        write_png(ORIGINAL_PNG, original, float(original.max()))
        layers = {}
        for layer, entries in info.layers.items():
            images = [spectrogram_db(load(e.file), n_fft=n_fft, hop_length=hop) for e in entries]
            top = max(float(image.max()) for image in images)  # one colour scale for the layer
            drawn = []
            for entry, image in zip(entries, images):
                name = entry.file.rsplit(".", 1)[0] + ".png"
                write_png(name, image, top)
                drawn.append(dataclasses.replace(entry, spectrogram=name))
            layers[layer] = tuple(drawn)
        return dataclasses.replace(info, original_spectrogram=ORIGINAL_PNG, layers=layers)

    def _remove_stale(self, track: TrackInput, *, keep: set[str]) -> None:
        folder = self._settings.common.path(track.name)
        present = beam_io.list_files(beam_io.join(beam_io.escape(folder), "**"))
        prefix = folder.rstrip("/") + "/"
        stale = [p for p in present if p.startswith(prefix) and f"{track.name}/{p[len(prefix):]}" not in keep
                 and ".tmp-" not in p]
        if stale:
            logger.info("%s: removing %d file(s) of an earlier run", track.track_id, len(stale))
            beam_io.delete(stale)


def _track_of(element: Any) -> str:
    return str(element.track.track_id)


def build_pipeline(pipeline: beam.Pipeline, tracks: Sequence[TrackInput], settings: Settings) -> None:
    """Adds the job's labelled stages to ``pipeline`` (see the module docstring)."""
    s = settings
    handler = SignatureModelHandler(s.common.model, signature=SIGNATURE, max_batch_size=s.common.batch_size,
                                    intra_op_threads=s.common.intra_op_threads,
                                    share_across_processes=s.common.share_model, one_example_per_call=True)
    listed = pipeline | "ListTracks" >> ListInputs(tracks, folder=s.common.path(INPUTS_FOLDER))
    spread = listed | "SpreadTracks" >> beam.Reshuffle()
    prepared, decode_failures = guarded(spread, "DecodeExcerpt", PrepareTrack(s), stage="decode")
    early = keep(prepared, "EarlyResults", TrackResult)
    plans = keep(prepared, "Plans", Plan)
    examples = keep(prepared, "Examples", tuple)
    auralise_examples = examples | "AuraliseExamples" >> beam.Filter(lambda e: isinstance(e[0], ChunkKey))
    predicted, inference_failures = infer(auralise_examples, "Auralise", handler, prebatched=s.common.prebatched)
    written, write_failures = guarded(predicted, "WriteFeatureAudio", WriteFeatureAudio(s), stage="write")
    pieces = [plans, keep(written, "ChunksAndFailures", (ChunkDone, TrackResult)), inference_failures, write_failures]
    if s.tags:
        attribute = SignatureModelHandler(s.common.model, signature=ATTRIBUTE, max_batch_size=1,
                                          intra_op_threads=s.common.intra_op_threads,
                                          share_across_processes=s.common.share_model, one_example_per_call=True)
        attribute_examples = examples | "AttributeExamples" >> beam.Filter(lambda e: isinstance(e[0], AttributeKey))
        explained, attribute_failures = infer(attribute_examples, "Attribute", attribute,
                                              prebatched=s.common.prebatched)
        read, read_failures = guarded(explained, "ReadAttribution", ReadAttribution(), stage="inference")
        pieces += [keep(read, "AttributionsAndFailures", (Attribution, TrackResult)), attribute_failures,
                   read_failures]
    per_track = (
        tuple(pieces)
        | "TrackPieces" >> beam.Flatten()
        | "KeyByTrack" >> beam.Map(lambda e: (_track_of(e), e))
        | "ByTrack" >> beam.GroupByKey()
    )
    finished, finish_failures = guarded(per_track, "FinishTrack", FinishTrack(s), stage="write")
    results = (
        (early, decode_failures, keep(finished, "Finished", TrackResult), finish_failures)
        | "AllResults" >> beam.Flatten()
    )
    _ = (listed, results) | "Account" >> AccountForTracks(s.common.output)


class AuraliseJob(CatalogueJob):
    """``python -m beam_jobs.auralise``: see the module docstring."""

    name = "auralise"
    option_classes = (CatalogueJobOptions, InferenceJobOptions, AuraliseOptions, LayerOptions, ShortTrackOptions)
    hidden_flags = ("precision",)
    signature = SIGNATURE
    reserved = (REPORT_FOLDER,)
    model_process = False

    def settings(self, options: PipelineOptions) -> Settings:
        """See :meth:`Settings.from_options`."""
        return Settings.from_options(options)

    def remove_track_results(self, settings: Any, name: str, files: list[str]) -> None:
        """Deletes the track's folder, ``<name>/``, whole (its ``track.json`` and every file beside it)."""
        beam_io.remove_folder(settings.common.path(name), recursive=True)

    def job_extra(self, settings: Settings) -> dict[str, Any]:
        """What a reader of the output needs without parsing the settings: layers, features, clip, format."""
        job_settings = settings.job_settings()
        return {key: job_settings[key] for key in ("layers", "features", "mode", "clip_seconds", "offset_seconds",
                                                   "format", "spectrograms")}

    def describe(self, settings: Settings, tracks: Sequence[TrackInput]) -> str:
        """The log line that says what the run is about to do."""
        return (f"auralise: {len(tracks)} track(s), layers {list(settings.layers)}, {len(settings.chunks())} call(s) "
                f"per track -> {settings.common.output}")

    def build(self, pipeline: beam.Pipeline, inputs: Sequence[TrackInput], settings: Settings) -> None:
        """See :func:`build_pipeline`."""
        build_pipeline(pipeline, inputs, settings)

    def finish(self, settings: Settings, result: PipelineResult, timings: Timings) -> None:
        """The summary, then the listening report (``--report``)."""
        super().finish(settings, result, timings)
        if settings.report:
            write_listening_report(settings.common.output)


def write_listening_report(output: str) -> str:
    """Writes ``OUTPUT/report/`` with :func:`tfaural.report.write_report`; returns its index.html.

    A remote ``output`` (``gs://...``) is copied to this machine for it, and the report is uploaded
    into it (:mod:`tfaural.report.remote`).
    """
    from tfaural.report import write_report

    index = write_report(output, progress=False)
    logger.info("auralise: listening report: %s", index)
    return index


JOB = AuraliseJob()

run = JOB.run  # run(argv, save_main_session=None, test_pipeline=None): see Job.run
main = JOB.main  # main(argv) -> exit status: see Job.main


if __name__ == "__main__":
    # Run the importable module, not __main__: Beam pickles the DoFns by module path, and the
    # worker processes of the multi-processing DirectRunner can import this module but not __main__.
    from beam_jobs import auralise
    from tfaural.cli import exit_promptly

    exit_promptly(auralise.main())
