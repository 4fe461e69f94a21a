"""Feature responses by attribute: per-layer pairwise correlations of deconvolved features (Choi et al. 2015, §4.2).

Every learnt feature of every layer is deconvolved for every model signal
(:func:`tfaural.signals.model_signals`: one instrument playing one chord type in
several positions at one key). For an attribute -- ``"key"``, ``"chord"`` or
``"instrument"`` -- the signals are grouped by the *other* two attributes; within
a group every pair of signals differs only in that attribute (for keys with the
paper's grid: 4 keys, so 6 pairs per (instrument, chord) group). For each pair
and feature the Pearson correlation of the two deconvolved maps (flattened
``[freq, frames]`` spectrograms for the Choi CNN, log-mel ``[n_mels, frames]`` for the
imported musicnn taggers, ``[samples]`` waveforms for SampleCNN models) is computed;
the table reports per layer and attribute the mean and standard deviation over all
features and pairs (the paper's Figure 10).

Numerics. Each map is centred and scaled to unit norm once, in float64, and
stored as float32; a correlation is then a dot product of two such vectors,
accumulated in float64 (one batched matmul per group and layer), so the
correlations agree with ``numpy.corrcoef`` on the float32 maps to ~1e-6.

Undefined correlations. A map that is constant (in practice: all zero, a feature
that does not fire on that signal) has no Pearson correlation with anything. It
is reported in :attr:`CorrelationResult.zero_features`, its pairs are counted in
``n_undefined`` and left out of the mean and standard deviation -- never turned
into NaN. A map counts as constant when its centred norm is at most
:data:`CONSTANT_TOLERANCE` × ``max|map|`` × ``sqrt(size)`` (float32 rounding noise
on a constant map; a single non-zero pixel among 44,461 is ~5e-3).

Memory. The deconvolution is done one layer at a time: the normalised maps of all
signals for one layer are held at once (float32 ``[n_signals, n_features, size]``:
224 × 64 × 257 × 173 × 4 bytes = 2.5 GB for the paper's grid), then reduced to
pair correlations before the next layer.

Standard deviations are population standard deviations (``ddof=0``).

Example:
    >>> from tfaural import correlation, signals
    >>> sigs = signals.model_signals(sample_rate=11025)          # 224 signals of 4 s
    >>> result = correlation.analyse(model, sigs)                 # a trained Choi CNN
    >>> correlation.save(result, "out/")                          # csv, parquet, json, png
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from tfaural.errors import ModelError, ParameterError
from tfaural.formats import ExportMetadata, read_export_metadata

__all__ = [
    "ATTRIBUTES",
    "CONSTANT_TOLERANCE",
    "NONE_VALUE",
    "TABLE_COLUMNS",
    "FEATURE_COLUMNS",
    "Deconvolver",
    "ModelDeconvolver",
    "ExportDeconvolver",
    "as_deconvolver",
    "features_per_call",
    "AnalysedSignal",
    "TableRow",
    "FeatureRow",
    "ConstantMap",
    "PairCorrelations",
    "Moments",
    "CorrelationResult",
    "analysable",
    "attribute_groups",
    "attribute_pairs",
    "normalise_maps",
    "group_correlations",
    "deconvolve_signals",
    "pairwise_correlations",
    "correlation_table",
    "per_feature_table",
    "analyse",
    "zero_feature_summary",
    "table_csv",
    "read_table_csv",
    "per_feature_parquet",
    "figure10_png",
    "plot_figure10",
    "save",
]

#: The attributes of the paper's model signals, in the order of its Figure 10.
ATTRIBUTES: tuple[str, ...] = ("key", "chord", "instrument")
#: Attribute value of signals outside the grid (drum patterns have no chord or key).
NONE_VALUE = "none"
#: A map is constant when ``||x - mean(x)|| <= CONSTANT_TOLERANCE * max|x| * sqrt(x.size)``.
CONSTANT_TOLERANCE = 1e-6
#: Columns of ``correlations.csv``.
TABLE_COLUMNS = ("layer", "attribute", "mean", "std", "n_pairs", "n_undefined")
#: Columns of ``per_feature.parquet``.
FEATURE_COLUMNS = ("layer", "feature", "attribute", "mean", "std", "n_pairs", "n_undefined")


# ---------------------------------------------------------------------------------------------
# Deconvolvers: waveforms -> deconvolved maps of one layer


class Deconvolver(Protocol):
    """Anything that deconvolves every feature of one layer for a batch of waveforms.

    Attributes:
        levels: The layers it can deconvolve.
        sample_rate: Sample rate in Hz of the waveforms it expects.
    """

    levels: tuple[int, ...]
    sample_rate: int

    def n_features(self, layer: int) -> int:
        """Number of feature maps of ``layer``."""
        ...

    def __call__(self, waveforms: np.ndarray, *, layer: int) -> np.ndarray:
        """float32 ``[batch, samples]`` -> float32 ``[batch, n_features, *map_shape]`` (all features)."""
        ...


class ModelDeconvolver:
    """Deconvolves a Keras model of :mod:`tfaural.models` with :class:`tfaural.deconv.DeconvNet`.

    The Choi CNN gets the linear STFT magnitude of :mod:`tfaural.spectral` with the
    model's ``n_fft`` / ``hop_length`` (its input scaling is part of the net's front
    end); the imported musicnn taggers (:class:`~tfaural.config.MusicnnConfig`) get
    mel power ``[batch, n_mels, frames, 1]`` (:func:`tfaural.spectral.melspectrogram`,
    as their export's ``deconvolve`` signature computes it) and are deconvolved down to
    their ``log10(1 + C x)`` compression, so the maps are log-mel ``[n_mels, frames]``;
    waveform models (SampleCNN family) get the waveform. One ``tf.function`` per layer.

    Args:
        model: A Choi CNN, musicnn tagger or SampleCNN-family model.

    Raises:
        ModelError: If the model was not built by :mod:`tfaural.models` or cannot be deconvolved.
    """

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        from tfaural import spectral
        from tfaural.config import ChoiConfig, MusicnnConfig
        from tfaural.deconv import DeconvNet
        from tfaural.models import config_from_model

        config = config_from_model(model)
        self.config = config
        self.net = DeconvNet(model)
        self.levels: tuple[int, ...] = tuple(self.net.levels)
        sample_rate = getattr(config, "sample_rate", None)
        if not isinstance(sample_rate, int):
            raise ModelError(f"model {model.name!r}: its config has no sample rate; cannot render signals for it")
        self.sample_rate: int = sample_rate

        if isinstance(config, ChoiConfig):
            n_fft, hop = config.n_fft, config.hop_length

            def model_input(waveforms: tf.Tensor) -> tf.Tensor:
                return spectral.magnitude(waveforms, n_fft=n_fft, hop_length=hop)
        elif isinstance(config, MusicnnConfig):
            rate, n_fft, hop, n_mels = config.sample_rate, config.n_fft, config.hop_length, config.n_mels

            def model_input(waveforms: tf.Tensor) -> tf.Tensor:
                mel = spectral.melspectrogram(waveforms, sample_rate=rate, n_fft=n_fft, hop_length=hop,
                                              n_mels=n_mels, power=2.0)
                return mel[..., tf.newaxis]
        else:

            def model_input(waveforms: tf.Tensor) -> tf.Tensor:
                return waveforms

        self._functions = {
            level: tf.function(lambda w, level=level: self.net(model_input(w), layer=level), autograph=False)
            for level in self.levels
        }

    def n_features(self, layer: int) -> int:
        """Number of feature maps of ``layer``."""
        return self.net.n_features(layer)

    def __call__(self, waveforms: np.ndarray, *, layer: int) -> np.ndarray:
        """float32 ``[batch, samples]`` -> float32 ``[batch, n_features, *map_shape]``."""
        import tensorflow as tf

        if layer not in self._functions:
            raise ParameterError(f"layer={layer!r} is invalid: expected one of {list(self.levels)}")
        return np.asarray(self._functions[layer](tf.constant(waveforms, tf.float32)))


def features_per_call(metadata: ExportMetadata, *, n_features: int, samples: int, batch: int = 1) -> int:
    """How many features of one layer an export's ``deconvolve`` call may ask for.

    An export states ``max_deconv_feature_samples`` (features × batch × samples of one call;
    :mod:`export.budget`): e.g. the musicnn taggers' 960 feature-seconds take all 128 maps of an
    ``MTT_vgg`` layer for clips of up to 7.5 s, but only 64 of a 15-s clip. Exports without the entry (format 1)
    take every feature at once.

    Args:
        metadata: The export's ``metadata.json``.
        n_features: Maps of the layer.
        samples: Samples of each clip.
        batch: Clips per call.

    Returns:
        The features per call, in ``1 .. n_features``.

    Raises:
        ParameterError: If not even one feature of ``batch`` clips of ``samples`` fits the budget.
    """
    limit = metadata.max_deconv_feature_samples
    if limit is None:
        return n_features
    fits = limit // max(1, samples * batch)
    if fits < 1:
        rate = metadata.sample_rate
        raise ParameterError(
            f"{batch} clip(s) of {samples} samples ({samples / rate:g} s at {rate} Hz) exceed the export's "
            f"deconvolution budget of {int(limit)} feature-samples per call even for one feature: use shorter clips"
        )
    return min(n_features, fits)


class ExportDeconvolver:
    """Deconvolves with the ``deconvolve`` signature of a tfaural SavedModel export.

    A layer's features are asked for in as few calls as the export's per-call budget
    allows (:func:`features_per_call`) and concatenated.

    Args:
        export_dir: An export version directory (``EXPORT_BASE/<N>``).

    Raises:
        ModelError: If the directory is not a tfaural export with a ``deconvolve`` signature.
    """

    def __init__(self, export_dir: str | os.PathLike[str]) -> None:
        import tensorflow as tf

        self.export_dir = os.fspath(export_dir)
        self.metadata = read_export_metadata(self.export_dir)
        self.levels = self.metadata.deconvolvable_layers
        self.sample_rate = self.metadata.sample_rate
        self._widths = dict(self.metadata.features_per_layer)
        loaded = tf.saved_model.load(self.export_dir)
        if "deconvolve" not in loaded.signatures:
            raise ModelError(f"{self.export_dir!r} has no 'deconvolve' signature; it has {sorted(loaded.signatures)}")
        self._loaded = loaded  # keeps the variables alive
        self._signature = loaded.signatures["deconvolve"]

    def n_features(self, layer: int) -> int:
        """Number of feature maps of ``layer``."""
        if layer not in self._widths:
            raise ParameterError(f"layer={layer!r} is invalid: expected one of {list(self.levels)}")
        return self._widths[layer]

    def __call__(self, waveforms: np.ndarray, *, layer: int) -> np.ndarray:
        """float32 ``[batch, samples]`` -> float32 ``[batch, n_features, *map_shape]``."""
        import tensorflow as tf

        width = self.n_features(layer)
        waveform = tf.constant(waveforms, tf.float32)
        step = features_per_call(self.metadata, n_features=width, samples=int(waveform.shape[-1]),
                                 batch=int(waveform.shape[0]))
        parts = [
            np.asarray(self._signature(
                waveform=waveform,
                layer=tf.constant(layer, tf.int32),
                features=tf.range(start, min(width, start + step), dtype=tf.int32),
            )["deconvolved"])
            for start in range(0, width, step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


#: The deconvolvers of the most recently used Keras models (their traced tf.functions are reused).
_MODEL_DECONVOLVERS: collections.OrderedDict[int, tuple[Any, ModelDeconvolver]] = collections.OrderedDict()
_CACHED_MODELS = 2


def as_deconvolver(model: Any) -> Deconvolver:
    """A :class:`Deconvolver` for a Keras model, an export directory, or a deconvolver itself.

    The deconvolvers of the last two Keras models are cached, so analysing the same model
    again does not trace its deconvolution graphs again (the cache keeps those models alive).

    Raises:
        ModelError: For anything else.
    """
    if hasattr(model, "tfaural_config"):
        cached = _MODEL_DECONVOLVERS.get(id(model))
        if cached is not None and cached[0] is model:
            _MODEL_DECONVOLVERS.move_to_end(id(model))
            return cached[1]
        deconvolver = ModelDeconvolver(model)
        _MODEL_DECONVOLVERS[id(model)] = (model, deconvolver)
        while len(_MODEL_DECONVOLVERS) > _CACHED_MODELS:
            _MODEL_DECONVOLVERS.popitem(last=False)
        return deconvolver
    if isinstance(model, (str, os.PathLike)):
        return ExportDeconvolver(model)
    if all(hasattr(model, name) for name in ("levels", "sample_rate", "n_features")) and callable(model):
        return model  # type: ignore[no-any-return]
    raise ModelError(
        f"cannot deconvolve {type(model).__name__!r}: expected a tfaural Keras model, an export directory "
        "or an object with levels, sample_rate, n_features(layer) and __call__(waveforms, layer=...)"
    )


# ---------------------------------------------------------------------------------------------
# Result records


class AnalysedSignal(Protocol):
    """What the analysis needs of a signal (:class:`tfaural.signals.ModelSignal` has it)."""

    signal_id: str
    audio: np.ndarray
    sample_rate: int

    def attributes(self) -> dict[str, str]:
        """Attribute name -> value, e.g. ``{"instrument": "piano", "chord": "major", "key": "A3"}``."""
        ...


@dataclasses.dataclass(frozen=True)
class TableRow:
    """One row of the Figure 10 table.

    Attributes:
        layer: Conv block level.
        attribute: ``"key"``, ``"chord"`` or ``"instrument"``.
        mean: Mean correlation over every feature and pair (``None`` if no correlation was defined).
        std: Population standard deviation of the same values (``None`` likewise).
        n_pairs: Signal pairs that differ only in ``attribute``.
        n_undefined: (pair, feature) correlations left out because a map was constant;
            the statistics use ``n_pairs * n_features - n_undefined`` values.
    """

    layer: int
    attribute: str
    mean: float | None
    std: float | None
    n_pairs: int
    n_undefined: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FeatureRow:
    """Statistics of one feature of one layer for one attribute, over the pairs.

    Attributes:
        layer: Conv block level.
        feature: Feature index in the layer.
        attribute: ``"key"``, ``"chord"`` or ``"instrument"``.
        mean: Mean correlation over the pairs (``None`` if none was defined).
        std: Population standard deviation over the pairs (``None`` likewise).
        n_pairs: Signal pairs.
        n_undefined: Pairs left out because one of the two maps was constant.
    """

    layer: int
    feature: int
    attribute: str
    mean: float | None
    std: float | None
    n_pairs: int
    n_undefined: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ConstantMap:
    """A feature whose deconvolution is constant (all zero) for a signal: no correlation is defined.

    Attributes:
        layer: Conv block level.
        feature: Feature index.
        signal_id: The signal.
    """

    layer: int
    feature: int
    signal_id: str


@dataclasses.dataclass(frozen=True)
class PairCorrelations:
    """The correlations of every pair that differs only in one attribute, for one layer.

    Attributes:
        layer: Conv block level.
        attribute: The attribute the pairs differ in.
        pairs: ``(signal_id_a, signal_id_b)`` per pair, ``a`` before ``b`` in the signal order.
        values: float64 ``[n_pairs, n_features]`` Pearson correlations (0 where undefined).
        defined: bool ``[n_pairs, n_features]``: False where a map was constant.
    """

    layer: int
    attribute: str
    pairs: tuple[tuple[str, str], ...]
    values: np.ndarray
    defined: np.ndarray


@dataclasses.dataclass(frozen=True)
class Moments:
    """Mergeable count / mean / sum of squared deviations (Chan et al.) plus undefined and pair counts.

    Attributes:
        n: Number of values.
        mean: Their mean (0 when ``n == 0``).
        m2: Sum of squared deviations from the mean.
        n_undefined: Values left out (undefined correlations).
        n_pairs: Signal pairs the values came from.
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    n_undefined: int = 0
    n_pairs: int = 0

    @classmethod
    def of(cls, values: np.ndarray, *, n_undefined: int = 0, n_pairs: int = 0) -> Moments:
        """The moments of float ``values`` (any shape)."""
        x = np.asarray(values, np.float64).reshape(-1)
        if x.size == 0:
            return cls(0, 0.0, 0.0, n_undefined, n_pairs)
        mean = float(x.mean())
        return cls(int(x.size), mean, float(np.sum((x - mean) ** 2)), n_undefined, n_pairs)

    def merge(self, other: Moments, *, add_pairs: bool = True) -> Moments:
        """The moments of both sets of values (``add_pairs=False``: same pairs, other features)."""
        n = self.n + other.n
        pairs = self.n_pairs + other.n_pairs if add_pairs else max(self.n_pairs, other.n_pairs)
        undefined = self.n_undefined + other.n_undefined
        if n == 0:
            return Moments(0, 0.0, 0.0, undefined, pairs)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(n, mean, m2, undefined, pairs)

    @property
    def std(self) -> float | None:
        """Population standard deviation (``None`` when there are no values)."""
        return math.sqrt(max(self.m2, 0.0) / self.n) if self.n else None

    @property
    def mean_or_none(self) -> float | None:
        """The mean, or ``None`` when there are no values."""
        return self.mean if self.n else None


@dataclasses.dataclass(frozen=True)
class CorrelationResult:
    """Everything :func:`analyse` found.

    Attributes:
        table: Per layer and attribute: mean, std, pair counts (the Figure 10 data).
        per_feature: Per layer, feature and attribute.
        zero_features: The (layer, feature, signal) maps that were constant.
        correlations: The pair correlations themselves, per layer and attribute.
        signal_ids: The signals analysed, in order.
        excluded: Signals left out because they lack an attribute (e.g. drum patterns).
        timings: Seconds spent deconvolving and correlating.
    """

    table: tuple[TableRow, ...]
    per_feature: tuple[FeatureRow, ...]
    zero_features: tuple[ConstantMap, ...]
    correlations: tuple[PairCorrelations, ...] = ()
    signal_ids: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def row(self, layer: int, attribute: str) -> TableRow:
        """The table row of ``layer`` and ``attribute``.

        Raises:
            KeyError: If the table has no such row.
        """
        for row in self.table:
            if row.layer == layer and row.attribute == attribute:
                return row
        raise KeyError((layer, attribute))

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary: the table, constant-map counts, signals and timings."""
        return {
            "table": [row.to_dict() for row in self.table],
            "zero_features": zero_feature_summary(self.zero_features, n_signals=len(self.signal_ids)),
            "n_signals": len(self.signal_ids),
            "excluded_signals": list(self.excluded),
            "timings_seconds": {k: round(v, 3) for k, v in self.timings.items()},
            "std": "population standard deviation (ddof=0) over every (pair, feature) correlation",
        }


def zero_feature_summary(zero: Sequence[ConstantMap], *, n_signals: int) -> dict[str, Any]:
    """Constant maps grouped by (layer, feature): counts and the signals (``"all"`` when every signal).

    Args:
        zero: The constant maps.
        n_signals: Number of analysed signals (to abbreviate "every signal").

    Returns:
        ``{"count", "by_layer": {layer: count}, "features": [{"layer", "feature", "n_signals", "signals"}]}``.
    """
    grouped: dict[tuple[int, int], list[str]] = {}
    for item in zero:
        grouped.setdefault((item.layer, item.feature), []).append(item.signal_id)
    by_layer: dict[str, int] = {}
    for (layer, _), ids in grouped.items():
        by_layer[str(layer)] = by_layer.get(str(layer), 0) + len(ids)
    features = [
        {"layer": layer, "feature": feature, "n_signals": len(ids),
         "signals": "all" if len(ids) == n_signals else sorted(ids)}
        for (layer, feature), ids in sorted(grouped.items())
    ]
    return {"count": len(zero), "by_layer": by_layer, "features": features}


# ---------------------------------------------------------------------------------------------
# Pairs and groups


def analysable(attributes: Mapping[str, str], *, names: Sequence[str] = ATTRIBUTES) -> bool:
    """Whether a signal has a real value for every attribute (drum patterns have ``"none"``)."""
    return all(attributes.get(name, NONE_VALUE) not in ("", NONE_VALUE) for name in names)


def attribute_groups(
    attributes: Sequence[Mapping[str, str]], attribute: str, *, names: Sequence[str] = ATTRIBUTES
) -> dict[tuple[str, ...], list[int]]:
    """Groups signals by the values of every attribute except ``attribute``.

    Args:
        attributes: Per signal, attribute name -> value.
        attribute: The attribute the pairs should differ in.
        names: All attribute names.

    Returns:
        ``{other attribute values: signal indices}`` in order of first appearance, for the
        groups holding at least two different values of ``attribute``. Signals that are not
        :func:`analysable` are left out.

    Raises:
        ParameterError: If ``attribute`` is not one of ``names``.
    """
    if attribute not in names:
        raise ParameterError(f"attribute={attribute!r} is invalid: expected one of {list(names)}")
    others = [name for name in names if name != attribute]
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, attrs in enumerate(attributes):
        if analysable(attrs, names=names):
            groups.setdefault(tuple(attrs[name] for name in others), []).append(index)
    return {key: members for key, members in groups.items()
            if len({attributes[i][attribute] for i in members}) > 1}


def attribute_pairs(
    attributes: Sequence[Mapping[str, str]], attribute: str, *, names: Sequence[str] = ATTRIBUTES
) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of signals that differ in ``attribute`` and in nothing else.

    Two signals with identical attributes (duplicates) are not a pair.
    """
    pairs = []
    for members in attribute_groups(attributes, attribute, names=names).values():
        for i, j in itertools.combinations(members, 2):
            if attributes[i][attribute] != attributes[j][attribute]:
                pairs.append((i, j))
    return sorted(pairs)


# ---------------------------------------------------------------------------------------------
# Numerics


def normalise_maps(maps: np.ndarray, *, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centres every map and scales it to unit norm (float64 arithmetic), flagging constant maps.

    Args:
        maps: float ``[n, k, ...]``: ``k`` maps (any trailing shape) for each of ``n`` signals.
        out: Optional float32 ``[n, k, size]`` output; may share memory with ``maps``
            (each signal is read completely before it is overwritten).

    Returns:
        ``(z, constant)``: float32 ``[n, k, size]`` unit vectors (zeros for constant maps), so
        that the Pearson correlation of maps ``a`` and ``b`` is ``dot(z_a, z_b)``; bool
        ``[n, k]``, True where the map was constant (see :data:`CONSTANT_TOLERANCE`).
    """
    maps = np.asarray(maps)
    if maps.ndim < 3:
        raise ParameterError(f"maps has shape {maps.shape}: expected [n_signals, n_features, ...] (rank >= 3)")
    n, k = maps.shape[:2]
    flat = maps.reshape(n, k, -1)
    size = flat.shape[-1]
    z = np.empty(flat.shape, np.float32) if out is None else out
    constant = np.zeros((n, k), bool)
    for i in range(n):
        x = flat[i].astype(np.float64)
        peak = np.max(np.abs(x), axis=1)
        x -= x.mean(axis=1, keepdims=True)
        norm = np.sqrt(np.einsum("kp,kp->k", x, x))
        const = ~(norm > CONSTANT_TOLERANCE * peak * math.sqrt(size))  # also catches NaN
        x /= np.where(const, 1.0, norm)[:, np.newaxis]
        x[const] = 0.0
        z[i] = x
        constant[i] = const
    return z, constant


def group_correlations(
    z: np.ndarray, constant: np.ndarray, members: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Correlations of every pair of a group's maps, per feature.

    Args:
        z: float32 ``[n, k, size]`` from :func:`normalise_maps`.
        constant: bool ``[n, k]`` from :func:`normalise_maps`.
        members: The group's signal indices into ``z`` (``None``: all ``n``).

    Returns:
        ``(corr, defined)``: float64 ``[k, m, m]`` Pearson correlations between the ``m`` members
        (clipped to [-1, 1], 0 where undefined) and bool ``[k, m, m]``.
    """
    index = np.arange(z.shape[0]) if members is None else np.asarray(members)
    k = z.shape[1]
    corr = np.empty((k, len(index), len(index)), np.float64)
    for feature in range(k):
        # One feature at a time: a small float64 copy (the allocator reuses it) instead of a
        # [k, m, size] one, whose fresh pages cost more than the products themselves.
        zf = z[index, feature].astype(np.float64)
        np.matmul(zf, zf.T, out=corr[feature])
    np.clip(corr, -1.0, 1.0, out=corr)
    ok = ~np.asarray(constant, bool)[index].T  # [k, m]
    defined = ok[:, :, np.newaxis] & ok[:, np.newaxis, :]
    corr[~defined] = 0.0
    return corr, defined


def pairwise_correlations(
    z: np.ndarray,
    constant: np.ndarray,
    attributes: Sequence[Mapping[str, str]],
    *,
    layer: int,
    attribute: str,
    signal_ids: Sequence[str],
    names: Sequence[str] = ATTRIBUTES,
) -> PairCorrelations:
    """Correlations of every pair of signals that differ only in ``attribute``, streaming over groups.

    Args:
        z: float32 ``[n, k, size]`` normalised maps of one layer (:func:`normalise_maps`).
        constant: bool ``[n, k]``.
        attributes: Per signal, attribute name -> value.
        layer: The layer (recorded in the result).
        attribute: The attribute the pairs differ in.
        signal_ids: Per signal, its id.
        names: All attribute names.

    Returns:
        The pairs, sorted by signal index, with their per-feature correlations.
    """
    k = z.shape[1]
    rows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for members in attribute_groups(attributes, attribute, names=names).values():
        corr, defined = group_correlations(z, constant, members)
        for a, b in itertools.combinations(range(len(members)), 2):
            i, j = members[a], members[b]
            if attributes[i][attribute] != attributes[j][attribute]:
                rows[(i, j)] = (corr[:, a, b], defined[:, a, b])
    order = sorted(rows)
    values = np.array([rows[p][0] for p in order], np.float64).reshape(len(order), k)
    ok = np.array([rows[p][1] for p in order], bool).reshape(len(order), k)
    pairs = tuple((signal_ids[i], signal_ids[j]) for i, j in order)
    return PairCorrelations(layer, attribute, pairs, values, ok)


def correlation_table(correlations: Sequence[PairCorrelations]) -> tuple[TableRow, ...]:
    """Per layer and attribute: mean and std over every feature and pair (the Figure 10 data).

    Rows are ordered by layer, then by attribute in :data:`ATTRIBUTES` order (others after).
    """
    rows = []
    for pc in _ordered(correlations):
        values = pc.values[pc.defined]
        moments = Moments.of(values)
        rows.append(TableRow(pc.layer, pc.attribute, moments.mean_or_none, moments.std, len(pc.pairs),
                             int((~pc.defined).sum())))
    return tuple(rows)


def per_feature_table(correlations: Sequence[PairCorrelations]) -> tuple[FeatureRow, ...]:
    """Per layer, feature and attribute: mean and std over the pairs."""
    rows = []
    for pc in _ordered(correlations):
        for feature in range(pc.values.shape[1]):
            ok = pc.defined[:, feature]
            moments = Moments.of(pc.values[ok, feature])
            rows.append(FeatureRow(pc.layer, feature, pc.attribute, moments.mean_or_none, moments.std,
                                   len(pc.pairs), int((~ok).sum())))
    return tuple(sorted(rows, key=lambda r: (r.layer, r.feature, _attribute_rank(r.attribute))))


def _attribute_rank(attribute: str) -> tuple[int, str]:
    return (ATTRIBUTES.index(attribute), "") if attribute in ATTRIBUTES else (len(ATTRIBUTES), attribute)


def _ordered(correlations: Sequence[PairCorrelations]) -> list[PairCorrelations]:
    return sorted(correlations, key=lambda pc: (pc.layer, _attribute_rank(pc.attribute)))


# ---------------------------------------------------------------------------------------------
# The analysis


def _check_signals(signals: Sequence[AnalysedSignal], sample_rate: int) -> int:
    if not signals:
        raise ParameterError("no signals to analyse: expected at least two model signals")
    lengths = {int(np.shape(s.audio)[-1]) for s in signals}
    if len(lengths) != 1:
        raise ParameterError(f"the signals have different lengths {sorted(lengths)}: expected one length")
    rates = {int(s.sample_rate) for s in signals}
    if rates != {sample_rate}:
        found = ", ".join(str(rate) for rate in sorted(rates))
        raise ParameterError(f"the signals are at {found} Hz but the model expects {sample_rate} Hz; "
                             f"render them with model_signals(..., sample_rate={sample_rate})")
    ids = [s.signal_id for s in signals]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ParameterError(f"signal ids must be unique; repeated: {duplicates[:5]}")
    return lengths.pop()


def _iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def _deconvolve_layer(
    deconvolver: Deconvolver,
    signals: Sequence[AnalysedSignal],
    *,
    layer: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """float32 ``[n, k, *map_shape]``: every feature of ``layer`` for every signal (into ``out`` if it fits)."""
    for part in _iter_batches(len(signals), batch_size):
        waveforms = np.stack([np.asarray(s.audio, np.float32) for s in signals[part]])
        maps = np.asarray(deconvolver(waveforms, layer=layer), np.float32)
        if out is None or out.shape != (len(signals), *maps.shape[1:]):
            out = np.empty((len(signals), *maps.shape[1:]), np.float32)
        out[part] = maps
        if on_batch is not None:
            on_batch(part.stop - part.start)
    assert out is not None
    return out


def deconvolve_signals(
    model: Any,
    signals: Sequence[AnalysedSignal],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 1,
) -> dict[int, np.ndarray]:
    """Deconvolves every feature of every layer for every signal (small grids: holds everything).

    Args:
        model: A tfaural Keras model, an export directory or a :class:`Deconvolver`.
        signals: Equal-length signals at the model's sample rate.
        layers: Layers to deconvolve (``None``: all).
        batch_size: Signals per deconvolution call (memory: ~1 GB per 4-s signal for 64 Choi features).

    Returns:
        ``{layer: float32 [n_signals, n_features, *map_shape]}`` (``[freq, frames]`` for the Choi
        CNN, ``[samples]`` for waveform models). For the paper's grid that is 2.5 GB per layer;
        :func:`analyse` streams layer by layer instead.
    """
    deconvolver = as_deconvolver(model)
    _check_signals(signals, deconvolver.sample_rate)
    wanted = list(deconvolver.levels if layers is None else layers)
    return {layer: _deconvolve_layer(deconvolver, signals, layer=layer, batch_size=batch_size) for layer in wanted}


def analyse(
    model: Any,
    signals: Sequence[AnalysedSignal],
    *,
    layers: Sequence[int] | None = None,
    attributes: Sequence[str] = ATTRIBUTES,
    batch_size: int = 1,
    progress: bool = True,
    keep_pairs: bool = True,
) -> CorrelationResult:
    """The paper's §4.2 analysis: per-layer pairwise correlations by attribute.

    Args:
        model: A tfaural Keras model (Choi CNN or SampleCNN family), an export directory
            (its ``deconvolve`` signature) or a :class:`Deconvolver`.
        signals: Model signals (:func:`tfaural.signals.model_signals`), equal length, at the
            model's sample rate. Signals lacking an attribute (drum patterns) are left out.
        layers: Layers to analyse (``None``: all deconvolvable layers).
        attributes: The attributes that define the grid.
        batch_size: Signals per deconvolution call.
        progress: Show a progress bar (tqdm) over layers × signals.
        keep_pairs: Keep the pair correlations in the result (``correlations``).

    Returns:
        The table, per-feature rows, constant maps and timings.

    Raises:
        ParameterError: For fewer than two analysable signals, unequal lengths, a sample
            rate other than the model's, repeated ids or an unknown layer.
    """
    from tqdm.auto import tqdm

    deconvolver = as_deconvolver(model)
    included = [s for s in signals if analysable(s.attributes(), names=attributes)]
    excluded = tuple(s.signal_id for s in signals if not analysable(s.attributes(), names=attributes))
    if len(included) < 2:
        raise ParameterError(f"only {len(included)} signal(s) have all of the attributes {list(attributes)}: "
                             "expected a grid of at least two signals")
    _check_signals(included, deconvolver.sample_rate)
    wanted = list(deconvolver.levels if layers is None else layers)
    for layer in wanted:
        if layer not in deconvolver.levels:
            raise ParameterError(f"layer={layer!r} is invalid: expected one of {list(deconvolver.levels)}")
    attrs = [s.attributes() for s in included]
    ids = [s.signal_id for s in included]
    correlations: list[PairCorrelations] = []
    zero: list[ConstantMap] = []
    timings = {"deconvolution": 0.0, "correlation": 0.0}
    bar = tqdm(total=len(wanted) * len(included), desc="deconvolving", unit="signal", disable=not progress)
    buffer: np.ndarray | None = None  # one [n, k, *map_shape] buffer, reused by every layer of the same shape
    try:
        for layer in wanted:
            bar.set_postfix(layer=layer)
            start = time.perf_counter()
            maps = _deconvolve_layer(deconvolver, included, layer=layer, batch_size=batch_size, on_batch=bar.update,
                                     out=buffer)
            buffer = maps
            timings["deconvolution"] += time.perf_counter() - start
            start = time.perf_counter()
            n, k = maps.shape[:2]
            z, constant = normalise_maps(maps, out=maps.reshape(n, k, -1))  # in place: one buffer per layer
            for i, f in zip(*np.nonzero(constant)):
                zero.append(ConstantMap(layer, int(f), ids[i]))
            for attribute in attributes:
                correlations.append(pairwise_correlations(z, constant, attrs, layer=layer, attribute=attribute,
                                                          signal_ids=ids, names=attributes))
            timings["correlation"] += time.perf_counter() - start
    finally:
        bar.close()
    return CorrelationResult(
        table=correlation_table(correlations),
        per_feature=per_feature_table(correlations),
        zero_features=tuple(sorted(zero, key=lambda c: (c.layer, c.feature, ids.index(c.signal_id)))),
        correlations=tuple(correlations) if keep_pairs else (),
        signal_ids=tuple(ids),
        excluded=excluded,
        timings=timings,
    )


# ---------------------------------------------------------------------------------------------
# Outputs


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def table_csv(table: Sequence[TableRow]) -> str:
    """``correlations.csv``: columns :data:`TABLE_COLUMNS`; undefined statistics are empty cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for row in table:
        writer.writerow([row.layer, row.attribute, _number(row.mean), _number(row.std), row.n_pairs, row.n_undefined])
    return buffer.getvalue()


def read_table_csv(text: str) -> tuple[TableRow, ...]:
    """Inverse of :func:`table_csv`."""
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        rows.append(TableRow(
            int(record["layer"]), record["attribute"],
            float(record["mean"]) if record["mean"] else None, float(record["std"]) if record["std"] else None,
            int(record["n_pairs"]), int(record["n_undefined"]),
        ))
    return tuple(rows)


def per_feature_parquet(rows: Sequence[FeatureRow]) -> bytes:
    """``per_feature.parquet`` (pyarrow): columns :data:`FEATURE_COLUMNS`; undefined statistics are null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "layer": pa.array([r.layer for r in rows], pa.int32()),
        "feature": pa.array([r.feature for r in rows], pa.int32()),
        "attribute": pa.array([r.attribute for r in rows], pa.string()),
        "mean": pa.array([r.mean for r in rows], pa.float64()),
        "std": pa.array([r.std for r in rows], pa.float64()),
        "n_pairs": pa.array([r.n_pairs for r in rows], pa.int64()),
        "n_undefined": pa.array([r.n_undefined for r in rows], pa.int64()),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def figure10_png(
    table: Sequence[TableRow], *, title: str | None = None, layer_names: Mapping[int, str] | None = None
) -> bytes:
    """The paper's Figure 10 as PNG bytes: mean ± std per layer, one line per attribute.

    Args:
        table: The rows of :func:`correlation_table` (rows without a mean are not drawn).
        title: Figure title (default: the paper's caption).
        layer_names: Level -> the model's layer name, shown under the level number (e.g. musicnn's
            ``pool1`` .. ``pool5``; the export's ``metadata.json`` ``layer_names``).

    Returns:
        PNG file bytes.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    attributes = sorted({row.attribute for row in table}, key=_attribute_rank)
    layers = sorted({row.layer for row in table})
    figure = Figure(figsize=(6.4, 4.6), dpi=120, layout="constrained")
    axes = figure.subplots()
    markers = {"key": "o", "chord": "s", "instrument": "^"}
    width = 0.08
    for index, attribute in enumerate(attributes):
        rows = [r for r in table if r.attribute == attribute and r.mean is not None]
        rows.sort(key=lambda r: r.layer)
        if not rows:
            continue
        offset = (index - (len(attributes) - 1) / 2) * width  # keep the error bars apart
        means = [float(r.mean or 0.0) for r in rows]  # rows without a mean were left out above
        axes.errorbar([r.layer + offset for r in rows], means, yerr=[r.std or 0.0 for r in rows],
                      marker=markers.get(attribute, "D"), capsize=4, linewidth=1.5, label=attribute)
    if layer_names:
        axes.set_xticks(layers, [f"{layer}\n{layer_names[layer]}" if layer in layer_names else str(layer)
                                 for layer in layers])
    else:
        axes.set_xticks(layers)
    axes.set_xlabel("layer number")
    axes.set_ylabel("avg. correlation of every pair")
    axes.set_title(title or "Average correlation of every pair in each layer\nby variations of key, chord and "
                   "instrument (error bars: ±1 std)", fontsize=10)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        figure.legend(loc="outside lower center", ncols=len(attributes), title="variation of")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_figure10(table: Sequence[TableRow], path: str | os.PathLike[str], *, title: str | None = None,
                  layer_names: Mapping[int, str] | None = None) -> str:
    """Writes :func:`figure10_png` to ``path`` (local file); returns the path."""
    path = os.fspath(path)
    with open(path, "wb") as handle:
        handle.write(figure10_png(table, title=title, layer_names=layer_names))
    return path


def save(
    result: CorrelationResult,
    output: str | os.PathLike[str],
    *,
    summary: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> dict[str, str]:
    """Writes ``correlations.csv``, ``per_feature.parquet``, ``summary.json`` and ``figure10.png``.

    Args:
        result: The analysis.
        output: Local folder (created).
        summary: Extra entries for ``summary.json`` (grid, model, timings, ...).
        title: Figure title.

    Returns:
        ``{file kind: path}``.
    """
    folder = os.fspath(output)
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, name) for name in
             ("correlations.csv", "per_feature.parquet", "summary.json", "figure10.png")}
    with open(paths["correlations.csv"], "w", encoding="utf-8", newline="") as handle:
        handle.write(table_csv(result.table))
    with open(paths["per_feature.parquet"], "wb") as handle:
        handle.write(per_feature_parquet(result.per_feature))
    plot_figure10(result.table, paths["figure10.png"], title=title)
    with open(paths["summary.json"], "w", encoding="utf-8") as handle:
        json.dump({**result.summary(), **dict(summary or {})}, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return paths
