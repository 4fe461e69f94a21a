"""Feature responses by attribute (Choi et al. 2015, §4.2 and Figure 10) as a Beam job over an exported model.

Usage:

    python -m beam_jobs.correlation --model exports/choi/1 --output out/correlation \\
        [--signals cache/signals] [--soundfont FluidR3_GM.sf2] \\
        [--timbres sine,piano,...] [--chords major,minor,...] [--keys Eb2,A3,...] \\
        [--layers 1,5] [beam options]

1. The model signals (:func:`tfaural.signals.model_signals`: every timbre plays
   every chord type in several positions at every key; by default the paper's
   7 × 8 × 4 = 224 signals of 4 s) are rendered with FluidSynth at the export's
   sample rate, or read from the ``--signals`` cache folder.
2. Every feature of every layer (or of the ``--layers`` chosen) is deconvolved for every signal by the export's
   ``deconvolve`` signature through the shared RunInference handler: one call per
   (signal, layer) with ``features`` = all maps of the layer, or per (signal, layer,
   chunk of features) when the export's per-call budget (``max_deconv_feature_samples``)
   does not take them all at the signal length (e.g. musicnn's ``MTT_vgg``, 128 maps per
   layer: all of them up to 15 s).
3. Each deconvolved map is centred and scaled to unit norm (float64, stored as float32 in
   ``.maps/``: see Memory below), and a reference to it is keyed by (layer, feature), with its
   signal's attributes. A GroupByKey brings together every signal's map of one feature; within
   it, for each attribute, the signals that differ only in that attribute form a group, and the
   Pearson correlation of every pair is a dot product (float64). CombinePerKey reduces the
   pairs to mean / std per feature and per layer.

The output folder receives:

    correlations.csv       layer, attribute, mean, std, n_pairs, n_undefined (the Figure 10 data)
    per_feature.parquet    layer, feature, attribute, mean, std, n_pairs, n_undefined
    summary.json           grid, model metadata, timings, the table, constant (all-zero) maps
    figure10.png           mean ± std per layer, one line per attribute
    signals.npz            the model signals analysed: audio float32 [n, samples], signal_ids [n]
                           (the workers read them from here, so the pipeline graph stays small)
    .maps/                 while the job runs: the normalised maps (deleted at the end)

A feature whose deconvolution is constant (all zero) for a signal has no
correlation: its pairs are counted in ``n_undefined`` and left out of the
statistics, never NaN (see :mod:`tfaural.correlation`). The numbers equal those
of :func:`tfaural.correlation.analyse` on the same signals to float32 precision.

Any export with a ``deconvolve`` signature works: the Choi CNN (maps are linear-STFT
spectrograms ``[freq, frames]``), SampleCNN models (waveforms ``[samples]``) and the
imported musicnn taggers (16 kHz; log-mel maps ``[96 mels, frames]``); the signals are
rendered at the export's own sample rate. See ``docs/correlation.md``.

Memory: the maps are the job's bulk (signals × features × the model's input representation
× 4 bytes: 11.9 GiB for the paper's full grid on the demo's Choi CNN, :func:`map_bytes`), so
they never travel through the pipeline. Each deconvolution's normalised maps are written once,
as float32, to ``.maps/`` in the output folder (:class:`MapStore`), and only a reference to
each map (file, row) is grouped; :class:`CorrelateFeature` reads one feature's maps back, one
feature at a time. The job's memory is that of one deconvolution and one feature's maps,
whatever the grid, and it needs the maps' bytes of disk space in the output folder while it
runs (checked before it starts for a local folder; ``.maps/`` is deleted when the run ends,
and by the next run if it was killed). Locally the job runs in one process
(``--direct_running_mode=in_memory`` unless chosen): TensorFlow uses every core for the
deconvolutions.

While it runs, the launcher counts the deconvolutions done (their files in ``.maps/``) for a
local output folder: a bar on a terminal, else a log line every 30 s (:mod:`beam_jobs.progress`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from beam_jobs import io as beam_io
from beam_jobs.inference import InferenceFailure, SignatureModelHandler, read_metadata, resolve_model_dir
from beam_jobs.job import Job, Timings
from beam_jobs.options import (
    DEFAULT_SIGNAL_SECONDS,
    CatalogueJobOptions,
    CorrelationOptions,
    InferenceJobOptions,
    LayerOptions,
    require,
)
from beam_jobs.progress import TrackProgress
from beam_jobs.settings import excerpt_seconds
from tfaural import __version__, correlation
from tfaural.cli import check_output_folder, parse_index_list
from tfaural.correlation import ATTRIBUTES, ConstantMap, FeatureRow, Moments, TableRow
from tfaural.errors import ModelError, ModelLoadError, ParameterError, TfauralError
from tfaural.formats import ExportMetadata
from tfaural.signals import ModelSignal, SignalGrid, model_signals

if __name__ == "__main__":
    # ``python -m beam_jobs.correlation``: run the importable module instead of this __main__ copy,
    # before the rest of it is defined. Beam builds one argument parser from every PipelineOptions
    # subclass in the process, so CorrelationOptions must exist once (a second copy's flags clash),
    # and Beam pickles DoFns by module path (worker processes can import beam_jobs.correlation only).
    from beam_jobs import correlation as _job
    from tfaural.cli import exit_promptly

    exit_promptly(_job.JOB.main())

__all__ = [
    "OUTPUT_FILES",
    "MAPS_FOLDER",
    "map_elements",
    "map_bytes",
    "check_map_space",
    "GIB",
    "MapRef",
    "MapStore",
    "SIGNALS_FILE",
    "signals_npz",
    "LoadSignal",
    "CorrelationOptions",
    "Settings",
    "NormaliseDeconvolution",
    "CorrelateFeature",
    "correlate_group",
    "MomentsCombineFn",
    "build_pipeline",
    "RenderedSignals",
    "CorrelationJob",
    "JOB",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

_METRICS = "correlation"
#: The files the job writes into ``--output``.
OUTPUT_FILES = ("correlations.csv", "per_feature.parquet", "summary.json", "figure10.png", "signals.npz")
#: The analysed signals, written by the launcher and read by the workers (keeps the pipeline graph small).
SIGNALS_FILE = "signals.npz"


def _split_list(text: str, *, flag: str) -> tuple[str, ...]:
    # "name=0,4,7" chords contain commas: a list holding one uses ';' as the separator.
    separator = ";" if "=" in text else ","
    items = tuple(item.strip() for item in text.split(separator) if item.strip())
    if not items:
        raise ParameterError(f"{flag} {text!r} is empty: expected a comma-separated list")
    return items


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the job does, validated from the command line.

    Attributes:
        model: The export version directory.
        output: The output folder.
        grid: The model-signal grid.
        signals_dir: Local cache folder of rendered signals (``None``: no cache).
        soundfont: GM soundfont (``None``: found automatically).
        batch_size: Largest RunInference batch of (signal, layer) deconvolutions.
        overwrite: Replace an earlier run's files.
        metadata: The export's ``metadata.json`` (read by the job after the flags are valid).
        intra_op_threads: TensorFlow threads per worker process (``None``: TensorFlow's default).
        layer_spec: ``--layers`` as given (``'all'``, ``'1,5'``, ``'1-3'``).
        layers: The levels analysed, ascending (resolved by :meth:`with_metadata`; ``None``: every
            deconvolvable layer).
        default_duration: ``--signal-seconds`` was not given: :meth:`with_metadata` lengthens the grid's
            signals to what the export needs, if that is more than the default.
    """

    model: str
    output: str
    grid: SignalGrid
    signals_dir: str | None = None
    soundfont: str | None = None
    batch_size: int = 1
    overwrite: bool = False
    metadata: ExportMetadata | None = None
    intra_op_threads: int | None = None
    layer_spec: str = "all"
    layers: tuple[int, ...] | None = None
    default_duration: bool = False

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Settings:
        """Validates the job's flags.

        Raises:
            ParameterError: On a missing or invalid flag, naming it.
        """
        common = options.view_as(CatalogueJobOptions)
        inference = options.view_as(InferenceJobOptions)
        job = options.view_as(CorrelationOptions)
        batch_size = 1 if inference.batch_size is None else inference.batch_size
        if batch_size < 1:
            raise ParameterError(f"--batch-size {batch_size} is invalid: expected a positive integer")
        if job.signal_seconds is not None and not job.signal_seconds > 0:
            raise ParameterError(f"--signal-seconds {job.signal_seconds} is invalid: expected seconds > 0")
        if job.chord_positions is None or job.chord_positions < 1:
            raise ParameterError(f"--chord-positions {job.chord_positions} is invalid: expected a positive integer")
        grid = SignalGrid(
            timbres=_split_list(job.timbres, flag="--timbres"),
            chords=_split_list(job.chords, flag="--chords"),
            keys=_split_list(job.keys, flag="--keys"),
            duration=DEFAULT_SIGNAL_SECONDS if job.signal_seconds is None else float(job.signal_seconds),
            positions=int(job.chord_positions),
        )
        return cls(
            model=resolve_model_dir(require(inference.model, "--model", "an export (EXPORT_BASE or EXPORT_BASE/<N>)")),
            output=check_output_folder(require(common.output, "--output", "an output folder").rstrip("/") or "/",
                                       remote=True),
            grid=grid,
            signals_dir=None if job.signals is None else check_output_folder(job.signals, flag="--signals"),
            soundfont=job.soundfont,
            batch_size=batch_size,
            overwrite=bool(common.overwrite),
            layer_spec=str(options.view_as(LayerOptions).layers),
            default_duration=job.signal_seconds is None,
        )

    def with_metadata(self, metadata: ExportMetadata) -> Settings:
        """These settings with the export's metadata and ``--layers`` resolved against it (``layers``), and
        without ``--signal-seconds`` signals as long as the export needs if that is more than the default.

        Raises:
            ParameterError: If ``--layers`` is malformed or names a layer the export cannot deconvolve.
        """
        layers = parse_index_list(self.layer_spec, flag="--layers", valid=list(metadata.deconvolvable_layers))
        grid = self.grid
        if self.default_duration and metadata.min_deconv_samples:
            seconds = excerpt_seconds(metadata, needed_samples=metadata.min_deconv_samples,
                                      default=DEFAULT_SIGNAL_SECONDS)
            if seconds != grid.duration:
                logger.info("correlation: signals of %g s (the export's min_deconv_seconds is %.4g s; "
                            "--signal-seconds to change)", seconds, metadata.min_deconv_samples / metadata.sample_rate)
                grid = dataclasses.replace(grid, duration=seconds)
        return dataclasses.replace(self, metadata=metadata, layers=layers, grid=grid)


# ---------------------------------------------------------------------------------------------
# Transforms


@dataclasses.dataclass(frozen=True)
class _Signal:
    """A model signal as a pipeline element: id, index in the grid order, audio float32 ``[samples]``."""

    signal_id: str
    index: int
    audio: np.ndarray


def signals_npz(signals: Sequence[ModelSignal]) -> bytes:
    """``signals.npz`` bytes: ``audio`` float32 ``[n, samples]``, ``signal_ids`` ``[n]``, ``sample_rate``."""
    buffer = io.BytesIO()
    np.savez(buffer, audio=np.stack([np.asarray(s.audio, np.float32) for s in signals]),
             signal_ids=np.array([s.signal_id for s in signals]), sample_rate=np.int64(signals[0].sample_rate))
    return buffer.getvalue()


class LoadSignal(beam.DoFn):
    """``(index, signal_id)`` → :class:`_Signal`, reading ``signals.npz`` once per worker."""

    def __init__(self, path: str) -> None:
        self._path = path

    def setup(self) -> None:
        with FileSystems.open(self._path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            content = handle.read()
        with np.load(io.BytesIO(content), allow_pickle=False) as data:
            self._audio = data["audio"]
            self._ids = [str(i) for i in data["signal_ids"]]

    def process(self, element: tuple[int, str]) -> Iterator[_Signal]:
        index, signal_id = element
        if self._ids[index] != signal_id:
            raise TfauralError(f"{self._path}: signal {index} is {self._ids[index]!r}, expected {signal_id!r}; "
                               "was the file replaced during the run?")
        yield _Signal(signal_id, index, self._audio[index])


def _calls(widths: dict[int, int], per_call: dict[int, int]) -> Iterator[tuple[int, int, int]]:
    """The ``deconvolve`` calls of one signal, ``(layer, first feature, end)``: every feature of every layer,
    ``per_call[layer]`` features per call (all of them when the export's budget allows)."""
    for layer, width in widths.items():
        for start in range(0, width, per_call[layer]):
            yield layer, start, min(width, start + per_call[layer])


def _examples(
    signal: _Signal, *, widths: dict[int, int], per_call: dict[int, int]
) -> Iterator[tuple[tuple[str, int, int], dict[str, Any]]]:
    """``deconvolve`` examples keyed by ``(signal_id, layer, first feature)``, one per :func:`_calls` call."""
    for layer, start, end in _calls(widths, per_call):
        yield (signal.signal_id, layer, start), {
            "waveform": signal.audio,
            "layer": np.int32(layer),
            "features": np.arange(start, end, dtype=np.int32),
        }


MAPS_FOLDER = ".maps"
"""The folder, in ``--output``, that holds the run's normalised maps while it runs (:class:`MapStore`)."""


@dataclasses.dataclass(frozen=True)
class MapRef:
    """Where one normalised map is stored: row ``row`` of ``path``, ``size`` float32 values per row."""

    path: str
    row: int
    size: int


class MapStore:
    """The run's normalised maps, in ``<output>/.maps/`` on any filesystem Beam reaches.

    One file per deconvolution call, ``layer-<L>/<signal index>-<first feature>.f32``: its maps as float32
    rows ``[features, size]`` with no header (written atomically, so a retried bundle rewrites the same
    bytes). The pipeline carries :class:`MapRef` s instead of the maps, and a feature's maps are read back
    one row per signal when that feature is correlated.

    Args:
        output: The job's output folder.
    """

    def __init__(self, output: str) -> None:
        self.folder = beam_io.join(output, MAPS_FOLDER)

    def path(self, *, layer: int, index: int, start: int) -> str:
        """The file of one call's maps: layer ``layer``, signal ``index``, features from ``start``."""
        return beam_io.join(self.folder, f"layer-{layer}", f"{index:05d}-{start:05d}.f32")

    def write(self, z: np.ndarray, *, layer: int, index: int, start: int) -> list[MapRef]:
        """Stores the maps of one call: float32 ``[features, size]`` of signal ``index``, features from ``start``."""
        z = np.ascontiguousarray(z, np.float32)
        path = self.path(layer=layer, index=index, start=start)
        beam_io.write_bytes(path, z.tobytes())
        return [MapRef(path, row, int(z.shape[1])) for row in range(z.shape[0])]

    @staticmethod
    def read(ref: MapRef) -> np.ndarray:
        """One stored map, float32 ``[size]``.

        Raises:
            TfauralError: If the file is missing or shorter than the row needs (changed during the run).
        """
        n_bytes = 4 * ref.size
        try:
            with FileSystems.open(ref.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                handle.seek(ref.row * n_bytes)
                data = handle.read(n_bytes)
        except OSError as err:  # Beam's BeamIOError is an IOError
            raise TfauralError(f"{ref.path}: cannot read the stored feature maps ({err}); was {MAPS_FOLDER}/ in the "
                               "output folder removed during the run?") from err
        if len(data) != n_bytes:
            start = ref.row * n_bytes
            raise TfauralError(f"{ref.path}: too short for map {ref.row} (bytes {start:,} to {start + n_bytes:,}; "
                               f"{len(data):,} of them there); was it changed during the run?")
        return np.frombuffer(data, np.float32)

    def remove(self) -> None:
        """Deletes the folder and every map in it (nothing if it is not there)."""
        if beam_io.is_local(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        try:
            FileSystems.delete([self.folder.rstrip("/") + "/"])
        except OSError as err:  # nothing there, or the filesystem refused: say so, the outputs are written
            logger.warning("correlation: could not delete %s: %s", self.folder, err)


_GroupKey = tuple[int, str, tuple[str, ...], int]  # (layer, attribute, other attribute values, feature)
_Member = tuple[int, str, np.ndarray, bool]  # (signal index, attribute value, z [size], constant)
_FeatureKey = tuple[int, int]  # (layer, feature)
_FeatureMap = tuple[int, tuple[str, ...], MapRef, bool]  # (signal index, attribute values, stored z, constant)


class NormaliseDeconvolution(beam.DoFn):
    """``((signal_id, layer, first feature), PredictionResult)`` → stored normalised maps keyed by (layer, feature).

    Main output: ``((layer, feature), (index, values, ref, constant))`` for every map, once: the signal's
    index in the grid, its attribute values (in ``names`` order), where the map centred and scaled to unit
    norm is stored (:class:`MapStore`), and whether it is constant. Tagged output ``"constant"``: a
    :class:`~tfaural.correlation.ConstantMap` for every all-zero (constant) map.
    """

    CONSTANT = "constant"

    def __init__(self, signals: dict[str, tuple[int, dict[str, str]]], names: Sequence[str], *, output: str) -> None:
        self._signals = signals
        self._names = tuple(names)
        self._output = output

    def setup(self) -> None:
        self._maps = beam.metrics.Metrics.counter(_METRICS, "deconvolutions")
        self._constant = beam.metrics.Metrics.counter(_METRICS, "constant_maps")
        self._store = MapStore(self._output)

    def process(self, element: tuple[tuple[str, int, int], PredictionResult]) -> Iterator[Any]:
        (signal_id, layer, start), result = element
        inference = result.inference
        if isinstance(inference, InferenceFailure):
            if inference.error == ModelLoadError.__name__:  # the model's fault, not this signal's
                raise ModelError(inference.reason)
            raise ModelError(f"deconvolution of signal {signal_id!r}, layer {layer} failed: "
                             f"{inference.error}: {inference.reason}")
        maps = np.asarray(inference["deconvolved"], np.float32)
        z, constant = correlation.normalise_maps(maps[np.newaxis])
        self._maps.inc()
        index, attributes = self._signals[signal_id]
        values = tuple(attributes[name] for name in self._names)
        for zero in np.flatnonzero(constant[0]):
            self._constant.inc()
            yield beam.pvalue.TaggedOutput(self.CONSTANT, ConstantMap(layer, start + int(zero), signal_id))
        refs = self._store.write(z[0], layer=layer, index=index, start=start)
        for offset, ref in enumerate(refs):
            yield (layer, start + offset), (index, values, ref, bool(constant[0, offset]))


class CorrelateFeature(beam.DoFn):
    """Every signal's map of one feature → the pair correlations of each attribute group.

    The feature's maps are read from the :class:`MapStore` (one feature's at a time in memory). For each
    attribute, the signals sharing the values of the other two attributes form a group (those of
    ``groups``: the groups with pairs); :func:`correlate_group` gives its moments.

    Output: ``((layer, attribute, feature), moments)`` per attribute group.
    """

    def __init__(self, groups: dict[str, set[tuple[str, ...]]], names: Sequence[str]) -> None:
        self._groups = groups
        self._names = tuple(names)

    def process(self, element: tuple[_FeatureKey, Iterable[_FeatureMap]]) -> Iterator[tuple[tuple[int, str, int],
                                                                                           Moments]]:
        (layer, feature), members = element
        ordered = [(index, values, _ZERO if constant else MapStore.read(ref), constant)
                   for index, values, ref, constant in sorted(members, key=lambda member: member[0])]
        for position, attribute in enumerate(self._names):
            by_others: dict[tuple[str, ...], list[_Member]] = {}
            for index, values, z, constant in ordered:
                others = values[:position] + values[position + 1:]
                if others in self._groups[attribute]:
                    by_others.setdefault(others, []).append((index, values[position], z, constant))
            for others, group in by_others.items():
                yield correlate_group(((layer, attribute, others, feature), group))


_ZERO = np.zeros(0, np.float32)  # a constant map: no correlation is computed with it (not read)


def correlate_group(element: tuple[_GroupKey, Iterable[_Member]]) -> tuple[tuple[int, str, int], Moments]:
    """The pair correlations of one group (signals differing only in one attribute) for one feature.

    Args:
        element: ``((layer, attribute, others, feature), members)``.

    Returns:
        ``((layer, attribute, feature), moments)`` of the group's defined correlations, with
        its pair count and the number of undefined pairs.
    """
    (layer, attribute, _, feature), members = element
    ordered = sorted(members, key=lambda member: member[0])  # the grid order: pairs (a, b) with a before b
    values = []
    n_pairs = n_undefined = 0
    for a in range(len(ordered)):
        for b in range(a + 1, len(ordered)):
            _, value_a, z_a, constant_a = ordered[a]
            _, value_b, z_b, constant_b = ordered[b]
            if value_a == value_b:  # identical attributes: not a pair that differs in ``attribute``
                continue
            n_pairs += 1
            if constant_a or constant_b:
                n_undefined += 1
                continue
            r = float(np.dot(z_a.astype(np.float64), z_b.astype(np.float64)))
            values.append(min(1.0, max(-1.0, r)))
    beam.metrics.Metrics.counter(_METRICS, "pair_correlations").inc(n_pairs)
    return (layer, attribute, feature), Moments.of(np.asarray(values), n_undefined=n_undefined, n_pairs=n_pairs)


class MomentsCombineFn(beam.CombineFn):
    """Merges :class:`~tfaural.correlation.Moments`, in the same order whatever order they arrive in.

    Floating-point merging is not associative: merged as they arrive (an order the runner
    chooses), the last digits of a mean or std changed from run to run. The accumulator keeps
    the inputs (one per attribute group, or one per feature of a layer: a few hundred at most)
    and :meth:`extract_output` merges them sorted, so a rerun writes the same bytes.

    Args:
        add_pairs: Sum the pair counts (merging groups); False keeps the largest (merging the
            features of one layer, which share their pairs).
    """

    def __init__(self, *, add_pairs: bool) -> None:
        self._add_pairs = add_pairs

    def create_accumulator(self) -> list[Moments]:
        return []

    def add_input(self, accumulator: list[Moments], element: Moments) -> list[Moments]:
        accumulator.append(element)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[Moments]]) -> list[Moments]:
        return [moments for accumulator in accumulators for moments in accumulator]

    def extract_output(self, accumulator: list[Moments]) -> Moments:
        result = Moments()
        for moments in sorted(accumulator, key=dataclasses.astuple):
            result = result.merge(moments, add_pairs=self._add_pairs)
        return result


def _feature_row(element: tuple[tuple[int, str, int], Moments]) -> FeatureRow:
    (layer, attribute, feature), m = element
    return FeatureRow(layer, feature, attribute, m.mean_or_none, m.std, m.n_pairs, m.n_undefined)


def _table_row(element: tuple[tuple[int, str], Moments]) -> TableRow:
    (layer, attribute), m = element
    return TableRow(layer, attribute, m.mean_or_none, m.std, m.n_pairs, m.n_undefined)


def _order(attribute: str) -> int:
    return ATTRIBUTES.index(attribute) if attribute in ATTRIBUTES else len(ATTRIBUTES)


def _write_outputs(
    table: list[TableRow],
    per_feature: list[FeatureRow],
    constant: list[ConstantMap],
    *,
    output: str,
    summary: dict[str, Any],
    title: str,
    widths: dict[int, int],
    layer_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    # Attributes without pairs (e.g. a single timbre) have no groups: give them empty rows, as the library does.
    have = {(r.layer, r.attribute) for r in table}
    table = table + [TableRow(layer, a, None, None, 0, 0) for layer in widths for a in ATTRIBUTES
                     if (layer, a) not in have]
    have_features = {(r.layer, r.feature, r.attribute) for r in per_feature}
    per_feature = per_feature + [FeatureRow(layer, f, a, None, None, 0, 0) for layer, width in widths.items()
                                 for f in range(width) for a in ATTRIBUTES if (layer, f, a) not in have_features]
    table = sorted(table, key=lambda r: (r.layer, _order(r.attribute)))
    per_feature = sorted(per_feature, key=lambda r: (r.layer, r.feature, _order(r.attribute)))
    order = {signal_id: i for i, signal_id in enumerate(summary["signal_ids"])}
    constant = sorted(constant, key=lambda c: (c.layer, c.feature, order.get(c.signal_id, -1)))
    beam_io.write_bytes(beam_io.join(output, "correlations.csv"), correlation.table_csv(table).encode("utf-8"))
    beam_io.write_bytes(beam_io.join(output, "per_feature.parquet"), correlation.per_feature_parquet(per_feature))
    beam_io.write_bytes(beam_io.join(output, "figure10.png"), correlation.figure10_png(table, title=title,
                                                                                   layer_names=layer_names))
    full = {
        **summary,
        "table": [row.to_dict() for row in table],
        "zero_features": correlation.zero_feature_summary(constant, n_signals=len(summary["signal_ids"])),
        "std": "population standard deviation (ddof=0) over every (pair, feature) correlation",
    }
    beam_io.write_text(beam_io.join(output, "summary.json"), json.dumps(full, indent=2, sort_keys=True) + "\n")
    return full


def build_pipeline(
    pipeline: beam.Pipeline,
    signals: Sequence[ModelSignal],
    settings: Settings,
    metadata: ExportMetadata,
    *,
    summary: dict[str, Any],
    intra_op_threads: int | None = None,
) -> None:
    """Adds the job's transforms to ``pipeline`` (labelled stages; see the module docstring).

    Args:
        pipeline: The pipeline to extend.
        signals: The model signals (all analysable, equal length, at the export's sample rate), in the
            order of ``signals.npz`` in the output folder (the workers read the audio from there).
        settings: Validated job settings.
        metadata: The export's ``metadata.json``.
        summary: What ``summary.json`` records besides the results (grid, model, timings so far).
        intra_op_threads: TensorFlow threads per worker process (``None``: TensorFlow's default).
    """
    names = ATTRIBUTES
    attributes = [s.attributes() for s in signals]
    groups = {name: set(correlation.attribute_groups(attributes, name, names=names)) for name in names}
    by_id = {s.signal_id: (i, s.attributes()) for i, s in enumerate(signals)}
    widths = _widths(metadata, settings.layers)
    per_call = _features_per_call(metadata, widths, samples=int(np.shape(signals[0].audio)[-1]))
    handler = KeyedModelHandler(SignatureModelHandler(
        settings.model, signature="deconvolve", max_batch_size=settings.batch_size, outputs=["deconvolved"],
        intra_op_threads=intra_op_threads, one_example_per_call=True,
    ))
    normalised = (
        pipeline
        | "ListSignals" >> beam.Create([(i, s.signal_id) for i, s in enumerate(signals)])
        | "SpreadSignals" >> beam.Reshuffle()
        | "LoadSignals" >> beam.ParDo(LoadSignal(beam_io.join(settings.output, SIGNALS_FILE)))
        | "OneExamplePerLayer" >> beam.FlatMap(_examples, widths=widths, per_call=per_call)
        | "Deconvolve" >> RunInference(handler)
        | "NormaliseAndKeyByFeature" >> beam.ParDo(NormaliseDeconvolution(
            by_id, names, output=settings.output)).with_outputs(
            NormaliseDeconvolution.CONSTANT, main="maps")
    )
    feature_moments = (
        normalised.maps
        | "GroupByFeature" >> beam.GroupByKey()
        | "CorrelatePairs" >> beam.ParDo(CorrelateFeature(groups, names))
        | "PerFeature" >> beam.CombinePerKey(MomentsCombineFn(add_pairs=True))
    )
    per_feature = (
        feature_moments
        | "FeatureRows" >> beam.Map(_feature_row)
        | "CollectFeatureRows" >> beam.combiners.ToList()
    )
    table = (
        feature_moments
        | "KeyByLayer" >> beam.Map(lambda kv: ((kv[0][0], kv[0][1]), kv[1]))
        | "PerLayer" >> beam.CombinePerKey(MomentsCombineFn(add_pairs=False))
        | "TableRows" >> beam.Map(_table_row)
        | "CollectTableRows" >> beam.combiners.ToList()
    )
    constant = normalised[NormaliseDeconvolution.CONSTANT] | "CollectConstantMaps" >> beam.combiners.ToList()
    _ = table | "WriteOutputs" >> beam.Map(
        _write_outputs,
        beam.pvalue.AsSingleton(per_feature),
        beam.pvalue.AsSingleton(constant),
        output=settings.output,
        summary=summary,
        title=_title(metadata),
        widths=widths,
        layer_names=_layer_names(metadata),
    )


def _widths(metadata: ExportMetadata, layers: Sequence[int] | None) -> dict[int, int]:
    """Features per analysed layer (``layers``; ``None``: every deconvolvable layer)."""
    chosen = metadata.deconvolvable_layers if layers is None else layers
    return {layer: metadata.features_per_layer[layer] for layer in chosen}


def _features_per_call(metadata: ExportMetadata, widths: dict[int, int], *, samples: int) -> dict[int, int]:
    """Per layer: the features one ``deconvolve`` call asks for (the export's per-call budget)."""
    return {layer: correlation.features_per_call(metadata, n_features=width, samples=samples)
            for layer, width in widths.items()}


#: Bytes in a GiB.
GIB = 1 << 30


def map_elements(metadata: ExportMetadata, samples: int) -> int:
    """Elements of one deconvolved map of a signal of ``samples`` samples: the model's input representation,
    ``[bins, frames]`` of its STFT (``n_fft // 2 + 1`` bins, or its mel bands) or the waveform itself."""
    stft = metadata.stft
    if not stft:
        return samples
    hop, n_fft = int(stft["hop_length"]), int(stft["n_fft"])
    frames = 1 + samples // hop if stft.get("center", True) else 1 + max(samples - n_fft, 0) // hop
    bins = int(metadata.mel["n_mels"]) if metadata.mel else n_fft // 2 + 1
    return bins * frames


def map_bytes(metadata: ExportMetadata, layers: Sequence[int] | None, *, signals: int, samples: int) -> int:
    """Bytes of float32 maps the job shuffles: every feature of every analysed layer, for every signal."""
    return 4 * signals * sum(_widths(metadata, layers).values()) * map_elements(metadata, samples)


def check_map_space(needed: int, *, folder: str, free: int) -> None:
    """Refuses a run whose maps (``needed`` bytes, :func:`map_bytes`) need more than the ``free`` bytes of disk
    space in the output ``folder``, naming both (minutes of deconvolution would otherwise end on a full disk).

    Raises:
        ParameterError: If ``needed`` and a 5 % margin exceed ``free``.
    """
    if needed * 1.05 > free:
        raise ParameterError(
            f"the grid's feature maps take {needed / GIB:.2f} GiB, which the job keeps in {folder}/{MAPS_FOLDER} "
            f"while it runs, and {free / GIB:.2f} GiB is free there: free some space, choose an --output on a "
            "larger disk, or analyse a smaller grid (--timbres, --chords, --keys, --signal-seconds, --layers)")


def _free_bytes(folder: str) -> int:
    """Free bytes on the disk of local ``folder`` (or of its nearest existing parent)."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return int(shutil.disk_usage(path).free)


def _layer_names(metadata: ExportMetadata) -> dict[int, str] | None:
    """Level -> the model's layer name (``metadata.json``'s ``layer_names``, e.g. musicnn's pool1..pool5)."""
    return dict(metadata.layer_names) if metadata.layer_names is not None else None


def _title(metadata: ExportMetadata) -> str:
    labels = metadata.labels
    source = metadata.model_config.get("source") if metadata.family == "keras" else None
    if metadata.pretrained:  # an imported tagger: its name says more than four of its 50 tags
        what = f"{metadata.pretrained} ({len(labels)} tags)"
    elif source:  # an imported Keras file (whose labels may be output0, output1, ...)
        what = f"{source} ({len(labels)} outputs)"
    else:
        what = f"{metadata.family} model" + (f" ({', '.join(labels[:4])})" if labels else "")
    return f"Average correlation of every pair in each layer\n{what}; error bars: ±1 std"


# ---------------------------------------------------------------------------------------------
# Launcher


def _existing_outputs(settings: Settings) -> list[str]:
    """The output files of an earlier run in ``--output``; refuses them without ``--overwrite``."""
    paths = [beam_io.join(settings.output, name) for name in OUTPUT_FILES]
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing and not settings.overwrite:
        raise ParameterError(f"--output {settings.output} already holds results ({existing[0]}, ...); "
                             "pass --overwrite to replace them or choose another folder")
    return existing


def _check_signals(signals: Sequence[ModelSignal], metadata: ExportMetadata, settings: Settings) -> None:
    n = int(np.shape(signals[0].audio)[-1])
    rate = metadata.sample_rate
    shortest = metadata.min_deconv_samples or 1
    longest = metadata.max_deconv_samples or n
    if not shortest <= n <= longest:
        raise ParameterError(
            f"--signal-seconds {settings.grid.duration}: the signals have {n} samples but the export's deconvolve "
            f"signature takes {shortest}-{longest} samples ({shortest / rate:g}-{longest / rate:g} s at {rate} Hz)"
        )
    try:
        _features_per_call(metadata, _widths(metadata, settings.layers), samples=n)
    except ParameterError as err:
        raise ParameterError(f"--signal-seconds {settings.grid.duration}: {err}") from None


def _intra_op_threads(options: PipelineOptions) -> int | None:
    direct = options.view_as(DirectOptions)
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner") and direct.direct_running_mode == "multi_processing":
        return max(1, (os.cpu_count() or 1) // max(1, int(direct.direct_num_workers or 1)))
    return None


@dataclasses.dataclass(frozen=True)
class RenderedSignals:
    """The job's inputs: the analysable model signals of the grid and the seconds rendering them took.

    Attributes:
        signals: Equal-length signals at the export's sample rate, in grid order.
        seconds: Wall-clock seconds of rendering (or reading them from the ``--signals`` cache).
    """

    signals: tuple[ModelSignal, ...]
    seconds: float

    def __len__(self) -> int:
        return len(self.signals)


def _summary(settings: Settings, inputs: RenderedSignals) -> dict[str, Any]:
    """What ``summary.json`` records besides the results: the grid, the model, the timings so far."""
    metadata = settings.metadata
    assert metadata is not None
    signals = inputs.signals
    grid = dataclasses.asdict(settings.grid)
    per_call = _features_per_call(metadata, _widths(metadata, settings.layers),
                                  samples=int(np.shape(signals[0].audio)[-1]))
    return {
        "grid": {**grid, "sample_rate": metadata.sample_rate, "n_signals": len(signals)},
        "signal_ids": [s.signal_id for s in signals],
        "model": {
            "export_dir": settings.model,
            # these fields as the export's metadata.json spells them (a summary reader needs no tfaural)
            **{key: metadata.data.get(key) for key in ("family", "sample_rate", "labels", "run_id", "stft", "mel",
                                                       "input_scaling", "deconvolvable_layers", "features_per_layer",
                                                       "layer_names", "max_deconv_feature_samples")},
            "pretrained": metadata.pretrained,
        },
        "features_per_call": {str(layer): n for layer, n in per_call.items()},
        "layers": list(per_call),
        "created_by": f"beam_jobs.correlation (tfaural {__version__})",
        "timings_seconds": {"render_signals": round(inputs.seconds, 3)},
    }


class CorrelationJob(Job):
    """``python -m beam_jobs.correlation``: see the module docstring."""

    name = "correlation"
    option_classes = (CatalogueJobOptions, InferenceJobOptions, CorrelationOptions, LayerOptions)
    hidden_flags = ("input", "manifest", "sample_rate", "format", "precision", "skip_existing")
    save_main_session = True
    # One local process: the work is TensorFlow's, which uses every core in one process.
    local_mode = "in_memory"

    def settings(self, options: PipelineOptions) -> Settings:
        """Validates the flags, reads the export's metadata and refuses an occupied ``--output`` early.

        Raises:
            ParameterError: On an invalid flag, or results in ``--output`` without ``--overwrite``.
            ModelError: If ``--model`` is not a tfaural export with a ``deconvolve`` signature.
        """
        settings = Settings.from_options(options)
        metadata = read_metadata(settings.model)
        metadata.signature("deconvolve", export_dir=settings.model)
        settings = settings.with_metadata(metadata)
        _existing_outputs(settings)  # before minutes of rendering
        return settings

    def inputs(self, settings: Settings) -> RenderedSignals:
        """Renders the grid's signals (FluidSynth) at the model's rate and keeps the analysable ones.

        Raises:
            ParameterError: If fewer than two signals remain, or they do not fit the export.
            SoundfontError: If no soundfont is found.
        """
        metadata = settings.metadata
        assert metadata is not None
        start = time.perf_counter()
        rendered = model_signals(settings.grid, sample_rate=metadata.sample_rate, soundfont=settings.soundfont,
                                 cache_dir=settings.signals_dir)
        seconds = time.perf_counter() - start
        signals = [s for s in rendered if correlation.analysable(s.attributes())]
        if len(signals) < 2:
            raise ParameterError("the grid has fewer than two signals: give several --timbres, --chords or --keys")
        _check_signals(signals, metadata, settings)
        return RenderedSignals(tuple(signals), seconds)

    def configure(self, options: PipelineOptions, settings: Settings, *, n_inputs: int,
                  local_defaults: bool) -> Settings:
        """Runner defaults, then TensorFlow threads per worker process (the cores shared by the workers)."""
        settings = super().configure(options, settings, n_inputs=n_inputs, local_defaults=local_defaults)
        threads = _intra_op_threads(options) if local_defaults else None
        return dataclasses.replace(settings, intra_op_threads=threads)

    def prepare(self, settings: Settings, inputs: RenderedSignals) -> None:
        """Deletes an earlier run's outputs (``--overwrite``) and the maps a killed run left; checks that the maps
        fit on the output folder's disk (:func:`check_map_space`); writes ``signals.npz``, which the workers read.

        Raises:
            ParameterError: If the maps do not fit on a local output folder's disk.
        """
        existing = _existing_outputs(settings)
        if existing:
            FileSystems.delete(existing)
        store = MapStore(settings.output)
        store.remove()
        metadata = settings.metadata
        assert metadata is not None
        samples = int(np.shape(inputs.signals[0].audio)[-1])
        needed = map_bytes(metadata, settings.layers, signals=len(inputs), samples=samples)
        logger.info("correlation: %.2f GiB of feature maps, kept in %s while the job runs", needed / GIB,
                    store.folder)
        if beam_io.is_local(settings.output):
            check_map_space(needed, folder=settings.output, free=_free_bytes(settings.output))
            os.makedirs(settings.output, exist_ok=True)
        assert settings.metadata is not None
        logger.info("correlation: %d signals x %d layers -> %s", len(inputs),
                    len(_widths(settings.metadata, settings.layers)), settings.output)
        beam_io.write_bytes(beam_io.join(settings.output, SIGNALS_FILE), signals_npz(inputs.signals))

    @contextlib.contextmanager
    def serving(self, settings: Settings) -> Iterator[Settings]:
        """Around the pipeline: deletes the stored maps (:class:`MapStore`) when it ends, however it ends."""
        try:
            yield settings
        finally:
            MapStore(settings.output).remove()

    def progress(self, settings: Settings, inputs: RenderedSignals) -> contextlib.AbstractContextManager[Any]:
        """The count of deconvolutions done, from their files in ``.maps/`` (:mod:`beam_jobs.progress`; a local
        output folder only): the bulk of the job's time; the correlation of the stored maps follows."""
        if not beam_io.is_local(settings.output):
            return contextlib.nullcontext()
        metadata = settings.metadata
        assert metadata is not None
        widths = _widths(metadata, settings.layers)
        per_call = _features_per_call(metadata, widths, samples=int(np.shape(inputs.signals[0].audio)[-1]))
        store = MapStore(settings.output)
        paths = [store.path(layer=layer, index=index, start=start) for index in range(len(inputs))
                 for layer, start, _ in _calls(widths, per_call)]
        return TrackProgress(self.name, paths, keep_existing=False, unit="deconvolution")

    def build(self, pipeline: beam.Pipeline, inputs: RenderedSignals, settings: Settings) -> None:
        """See :func:`build_pipeline`."""
        assert settings.metadata is not None
        build_pipeline(pipeline, inputs.signals, settings, settings.metadata, summary=_summary(settings, inputs),
                       intra_op_threads=settings.intra_op_threads)

    def finish(self, settings: Settings, result: PipelineResult, timings: Timings) -> None:
        """Adds the run's timings to ``summary.json``; logs the table."""
        _add_timings(settings.output, {  # render_signals is already there (see _summary)
            "pipeline": round(timings.pipeline, 3),
            "total": round(timings.total, 3),
        })


def _add_timings(output: str, timings: dict[str, float]) -> None:
    path = beam_io.join(output, "summary.json")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        summary = json.loads(handle.read().decode("utf-8"))
    summary["timings_seconds"] = {**summary.get("timings_seconds", {}), **timings}
    beam_io.write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    table = summary["table"]
    logger.info("correlation: done in %.0f s; wrote %s", timings["total"], ", ".join(OUTPUT_FILES))
    for row in table:
        mean = "n/a" if row["mean"] is None else f"{row['mean']:.3f}"
        std = "n/a" if row["std"] is None else f"{row['std']:.3f}"
        logger.info("  layer %d %-10s mean %s std %s (%d pairs)", row["layer"], row["attribute"], mean, std,
                    row["n_pairs"])


JOB: CorrelationJob = CorrelationJob()

run = JOB.run  # run(argv, save_main_session=None, test_pipeline=None): see Job.run
main = JOB.main  # main(argv) -> exit status: see Job.main

