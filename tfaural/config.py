"""Frozen configuration dataclasses with validation and a JSON round trip.

Every setting that changes what a model sees (sample rate, STFT, segmentation,
architecture) lives in one of these dataclasses. They are immutable, validate
themselves on construction (raising :class:`~tfaural.errors.ConfigError` with
the offending field and value), and serialise to plain JSON so that a model's
configuration travels inside its checkpoint and its export (``metadata.json``).

Example:
    >>> stft = STFTConfig(n_fft=512, hop_length=256)
    >>> STFTConfig.from_json(stft.to_json()) == stft
    True
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, ClassVar, TypeVar

from tfaural.errors import ConfigError

__all__ = [
    "Config",
    "AudioConfig",
    "STFTConfig",
    "SegmentConfig",
    "SUPPORTED_WINDOWS",
    "PAD_MODES",
    "DEFAULT_CLIP_SECONDS",
    "describe_differences",
]

SUPPORTED_WINDOWS = ("hann",)
PAD_MODES = ("constant", "wrap", "none")
#: Length of an excerpt to listen to when neither the user nor the model fixes it: the 4-s excerpts of Choi et
#: al. 2015 (``tfaural.listen``, and ``beam_jobs.auralise`` and ``beam_jobs.correlation`` where the export needs
#: no more).
DEFAULT_CLIP_SECONDS = 4.0

_C = TypeVar("_C", bound="Config")


def _require(condition: bool, cls: type, field: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{cls.__name__}.{field}={value!r} is invalid: expected {expected}")


def _convert(value: Any, annotation: Any) -> Any:
    """Converts a JSON value back to the annotated field type (tuples, nested configs)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0]) if len(non_none) == 1 else value
    if origin is tuple and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return tuple(_convert(v, inner) for v in value)
    if isinstance(annotation, type) and issubclass(annotation, Config) and isinstance(value, dict):
        return annotation.from_dict(value)
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: dict/JSON round trip and a ``kind`` tag for polymorphic loading."""

    kind: ClassVar[str] = "config"

    def validate(self) -> None:
        """Raises ConfigError if a field is out of range. Subclasses extend this."""

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict (tuples become lists, nested configs dicts)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Builds the config from :meth:`to_dict` output.

        Raises:
            ConfigError: On unknown fields, missing required fields or invalid values.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(names)}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _convert(v, hints[k]) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as err:  # a missing required field
            raise ConfigError(f"{cls.__name__}: {err}") from None

    def to_json(self, **kwargs: Any) -> str:
        """Returns the config as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        kwargs.setdefault("sort_keys", True)
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls: type[_C], text: str) -> _C:
        """Parses :meth:`to_json` output. Raises ConfigError on malformed JSON."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{cls.__name__}: not valid JSON ({err})") from None
        return cls.from_dict(data)

    def replace(self: _C, **changes: Any) -> _C:
        """Returns a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class AudioConfig(Config):
    """How audio is decoded before it reaches a model.

    Attributes:
        sample_rate: Target sample rate in Hz (audio is resampled to it).
        mono: Mix multi-channel audio down to one channel.
    """

    kind: ClassVar[str] = "audio"
    sample_rate: int = 22050
    mono: bool = True

    def validate(self) -> None:
        _require(
            isinstance(self.sample_rate, int) and self.sample_rate > 0,
            type(self), "sample_rate", self.sample_rate, "a positive integer number of Hz",
        )


@dataclasses.dataclass(frozen=True)
class STFTConfig(Config):
    """The one STFT convention (see :mod:`tfaural.spectral`).

    Frames are centred (``n_fft // 2`` reflect padding on both sides, like
    ``librosa.stft(center=True)``); the window is a periodic Hann of ``n_fft``
    samples. A spectrogram model's STFT is not configured on its own: it is
    :func:`stft_config_of` its model config (``ChoiConfig.stft``, ``MusicnnConfig.stft``).

    Attributes:
        n_fft: FFT size and window length in samples; the spectrum has ``n_fft // 2 + 1`` bins.
        hop_length: Hop between frames in samples.
        window: Window name; only ``"hann"`` (periodic) is supported.
    """

    kind: ClassVar[str] = "stft"
    n_fft: int = 512
    hop_length: int = 256
    window: str = "hann"

    @property
    def n_freq(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Number of centred frames for a signal of ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> STFTConfig:
        """Builds the config from :meth:`to_dict` output.

        Also reads the JSON of earlier versions, which had a ``win_length`` entry: it is
        accepted when it is ``null`` or ``n_fft`` (the window tfaural always used).

        Raises:
            ConfigError: On unknown fields, invalid values, or a ``win_length`` other than
                ``null`` / ``n_fft``.
        """
        if isinstance(data, dict) and "win_length" in data:
            data = dict(data)
            win_length = data.pop("win_length")
            n_fft = data.get("n_fft", cls.n_fft)
            if win_length is not None and not (_is_int(win_length) and win_length == n_fft):
                raise ConfigError(
                    f"{cls.__name__}.win_length={win_length!r} is not supported: the STFT window is always "
                    f"n_fft={n_fft!r} samples long (periodic Hann); expected null or {n_fft!r}"
                )
        return super().from_dict(data)

    def validate(self) -> None:
        cls = type(self)
        _require(_is_int(self.n_fft) and self.n_fft >= 2, cls, "n_fft", self.n_fft, "an integer >= 2")
        _require(
            _is_int(self.hop_length) and 0 < self.hop_length <= self.n_fft,
            cls, "hop_length", self.hop_length, f"an integer in [1, n_fft={self.n_fft}]",
        )
        _require(self.window in SUPPORTED_WINDOWS, cls, "window", self.window, f"one of {SUPPORTED_WINDOWS}")


@dataclasses.dataclass(frozen=True)
class SegmentConfig(Config):
    """How a clip is cut into fixed-length model inputs.

    Attributes:
        length: Segment length in samples (59,049 for the 3^9 SampleCNN at 22,050 Hz).
        hop: Hop between segment starts in samples (``None``: ``length``, contiguous).
        n_segments: Keep at most this many segments per clip (``None``: all). The
            SampleCNN recipe keeps the 10 contiguous segments of a 29.1 s clip.
        pad: What to do with a last partial segment or a clip shorter than one
            segment: ``"constant"`` zero-pads, ``"wrap"`` repeats the clip,
            ``"none"`` drops the partial segment (and rejects a too-short clip).
    """

    kind: ClassVar[str] = "segment"
    length: int = 59049
    hop: int | None = None
    n_segments: int | None = None
    pad: str = "none"

    @property
    def step(self) -> int:
        """The hop between segment starts in samples."""
        return self.length if self.hop is None else self.hop

    def validate(self) -> None:
        cls = type(self)
        _require(isinstance(self.length, int) and self.length > 0, cls, "length", self.length, "a positive integer")
        _require(
            self.hop is None or (isinstance(self.hop, int) and self.hop > 0),
            cls, "hop", self.hop, "None or a positive integer",
        )
        _require(
            self.n_segments is None or (isinstance(self.n_segments, int) and self.n_segments > 0),
            cls, "n_segments", self.n_segments, "None or a positive integer",
        )
        _require(self.pad in PAD_MODES, cls, "pad", self.pad, f"one of {PAD_MODES}")


# ---------------------------------------------------------------------------
# Model architectures (tfaural.models). Each config fully determines a network;
# ``tfaural.models.build(config)`` turns it into a keras.Model that carries it.
# ---------------------------------------------------------------------------

CHOI_INPUT_SCALINGS = ("linear", "log")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "linear")
SAMPLECNN_FAMILIES = ("samplecnn", "mel-frame", "raw-frame")

#: Channel widths of the nine 3-size modules of the 3^9-SampleCNN (Lee et al. 2018, Table 1).
SAMPLECNN_MODULE_CHANNELS = (128, 128, 256, 256, 256, 256, 256, 512, 512)


def _product(values: tuple[int, ...]) -> int:
    out = 1
    for value in values:
        out *= value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def default_module_channels(n_modules: int) -> tuple[int, ...]:
    """Channel widths of ``n_modules`` SampleCNN modules, bottom to top.

    The paper's nine-module schedule is (128, 128, 256, 256, 256, 256, 256, 512,
    512). Shallower models (the frame-level baselines with 4-6 modules) take its
    LAST ``n_modules`` entries, so the top layers keep the paper's widths; deeper
    models (e.g. the 2^13 model) prepend 128-channel modules.

    Args:
        n_modules: Number of intermediate conv/pool modules (>= 1).

    Returns:
        A tuple of ``n_modules`` channel counts.
    """
    if not _is_positive_int(n_modules):
        raise ConfigError(f"n_modules={n_modules!r} is invalid: expected a positive integer")
    table = SAMPLECNN_MODULE_CHANNELS
    if n_modules <= len(table):
        return table[len(table) - n_modules :]
    return (128,) * (n_modules - len(table)) + table


@dataclasses.dataclass(frozen=True)
class ChoiConfig(Config):
    """The 2D STFT CNN of Choi et al. (2015), ``tfaural.models.choi``.

    Attributes:
        n_outputs: Number of output units (classes or tags).
        n_freq: Frequency bins of the input, ``n_fft // 2 + 1`` (257).
        n_frames: STFT frames of the input (173 = 4 s at 11,025 Hz, hop 256).
        n_layers: Number of conv blocks (5 in the paper).
        n_filters: Feature maps per conv layer (64).
        kernel_size: Square conv kernel size (3).
        pool_size: Square max-pooling size and stride (2, floor: ``padding="valid"``).
        dropout: Dropout rate after every conv block and fully connected layer (0.5).
        fc_units: Widths of the fully connected layers ``fc1, fc2, ...`` (not given
            by the paper, whose Figure 2 is lost in the text; 256 each by default).
        output_activation: ``"softmax"`` (single-label genre), ``"sigmoid"``
            (multi-label tags) or ``"linear"`` (logits).
        input_scaling: ``"linear"`` feeds the STFT magnitude as is (as the reference
            code did); ``"log"`` applies ``log(1 + log_c * |x|)`` first.
        log_c: Compression constant of the ``"log"`` scaling.
        sample_rate: Sample rate of the audio in Hz (for receptive fields and export).
        n_fft: FFT size in samples.
        hop_length: STFT hop in samples.
    """

    kind: ClassVar[str] = "choi"
    n_outputs: int
    n_freq: int = 257
    n_frames: int = 173
    n_layers: int = 5
    n_filters: int = 64
    kernel_size: int = 3
    pool_size: int = 2
    dropout: float = 0.5
    fc_units: tuple[int, ...] = (256, 256)
    output_activation: str = "softmax"
    input_scaling: str = "linear"
    log_c: float = 10.0
    sample_rate: int = 11025
    n_fft: int = 512
    hop_length: int = 256

    @property
    def stft(self) -> STFTConfig:
        """The STFT of the model's input (this config is its one source)."""
        return STFTConfig(n_fft=self.n_fft, hop_length=self.hop_length)

    def validate(self) -> None:
        cls = type(self)
        for field in ("n_outputs", "n_layers", "n_filters", "kernel_size", "sample_rate", "hop_length"):
            value = getattr(self, field)
            _require(_is_positive_int(value), cls, field, value, "a positive integer")
        _require(_is_int(self.pool_size) and self.pool_size >= 2, cls, "pool_size", self.pool_size, "an integer >= 2")
        _require(_is_int(self.n_fft) and self.n_fft >= 2, cls, "n_fft", self.n_fft, "an integer >= 2")
        _require(
            self.n_freq == self.n_fft // 2 + 1, cls, "n_freq", self.n_freq,
            f"n_fft // 2 + 1 = {self.n_fft // 2 + 1} for n_fft={self.n_fft}",
        )
        smallest = self.pool_size**self.n_layers
        for field in ("n_freq", "n_frames"):
            value = getattr(self, field)
            _require(
                _is_int(value) and value >= smallest, cls, field, value,
                f"an integer >= pool_size ** n_layers = {smallest} (each block halves it)",
            )
        _require(_is_number(self.dropout) and 0 <= self.dropout < 1, cls, "dropout", self.dropout, "a rate in [0, 1)")
        _require(
            isinstance(self.fc_units, tuple) and len(self.fc_units) >= 1
            and all(_is_positive_int(u) for u in self.fc_units),
            cls, "fc_units", self.fc_units, "a non-empty tuple of positive integers",
        )
        _require(
            self.output_activation in OUTPUT_ACTIVATIONS, cls, "output_activation", self.output_activation,
            f"one of {OUTPUT_ACTIVATIONS}",
        )
        _require(
            self.input_scaling in CHOI_INPUT_SCALINGS, cls, "input_scaling", self.input_scaling,
            f"one of {CHOI_INPUT_SCALINGS}",
        )
        _require(_is_number(self.log_c) and self.log_c > 0, cls, "log_c", self.log_c, "a positive number")


@dataclasses.dataclass(frozen=True)
class SampleCNNConfig(Config):
    """A model of the SampleCNN family of Lee et al. (2018), ``tfaural.models.samplecnn``.

    Three families share the same module stack (Conv1D "same" -> BatchNorm ->
    ReLU -> MaxPool, then a 1x1 conv, dropout and a dense output):

    * ``"samplecnn"``: the m^n-SampleCNN; ``filter_sizes[0]`` is the filter size and
      stride of the first conv (``conv0``), ``filter_sizes[1:]`` the module sizes.
      The input length is ``prod(filter_sizes)``.
    * ``"raw-frame"``: a strided Conv1D with filter ``window`` and stride ``hop``
      (``conv0``), then modules of ``filter_sizes``. Input ``hop * prod(filter_sizes)``.
    * ``"mel-frame"``: an in-model log-mel spectrogram (window ``window``, hop
      ``hop``, ``n_fft``, ``n_mels``) and standardisation, then modules of
      ``filter_sizes``. Input ``hop * prod(filter_sizes)``.

    Attributes:
        family: One of ``"samplecnn"``, ``"mel-frame"``, ``"raw-frame"``.
        filter_sizes: See above; every entry is an integer >= 2.
        n_outputs: Number of output units (50 tags).
        window: Frame-level window (filter) size in samples; ``None`` for ``"samplecnn"``.
        hop: Frame-level hop (stride) size in samples; ``None`` for ``"samplecnn"``.
        channels: Channel count of every module (``None``:
            :func:`default_module_channels`).
        front_filters: Filters of the first conv ``conv0`` (128, also the number of
            mel bands it stands in for in the raw-frame model).
        top_filters: Filters of the final 1x1 conv (512).
        dropout: Dropout rate after the 1x1 conv (0.5).
        output_activation: ``"sigmoid"`` (multi-label tags), ``"softmax"`` or ``"linear"``.
        sample_rate: Sample rate of the input waveform in Hz.
        n_fft: FFT size of the mel-frame model (729 = 3^6 in the paper; windows
            shorter than it are zero-padded).
        n_mels: Mel bands of the mel-frame model (128).
        log_c: Compression constant C of ``log(1 + C |A|)`` (10).
    """

    kind: ClassVar[str] = "samplecnn"
    family: str = "samplecnn"
    filter_sizes: tuple[int, ...] = (3,) * 10
    n_outputs: int = 50
    window: int | None = None
    hop: int | None = None
    channels: tuple[int, ...] | None = None
    front_filters: int = 128
    top_filters: int = 512
    dropout: float = 0.5
    output_activation: str = "sigmoid"
    sample_rate: int = 22050
    n_fft: int = 729
    n_mels: int = 128
    log_c: float = 10.0

    @property
    def module_sizes(self) -> tuple[int, ...]:
        """Filter (= pooling) size of each intermediate module, bottom to top."""
        return self.filter_sizes[1:] if self.family == "samplecnn" else self.filter_sizes

    @property
    def n_modules(self) -> int:
        """Number of conv/BN/ReLU/pool modules (``conv1 .. conv<n_modules>``)."""
        return len(self.module_sizes)

    @property
    def module_channels(self) -> tuple[int, ...]:
        """Channel count of each module, bottom to top."""
        return self.channels if self.channels is not None else default_module_channels(self.n_modules)

    @property
    def front_stride(self) -> int:
        """Samples per time step after the front end (conv0 stride or mel hop)."""
        return self.filter_sizes[0] if self.family == "samplecnn" else int(self.hop or 0)

    @property
    def input_length(self) -> int:
        """Input length in samples: the front-end stride times the product of the module sizes."""
        return self.front_stride * _product(self.module_sizes)

    @property
    def input_seconds(self) -> float:
        """Input duration in seconds at ``sample_rate``."""
        return self.input_length / self.sample_rate

    def validate(self) -> None:
        cls = type(self)
        _require(self.family in SAMPLECNN_FAMILIES, cls, "family", self.family, f"one of {SAMPLECNN_FAMILIES}")
        minimum = 2 if self.family == "samplecnn" else 1
        _require(
            isinstance(self.filter_sizes, tuple) and len(self.filter_sizes) >= minimum
            and all(_is_int(m) and m >= 2 for m in self.filter_sizes),
            cls, "filter_sizes", self.filter_sizes,
            f"a tuple of at least {minimum} integer filter sizes, each >= 2",
        )
        if self.family == "samplecnn":
            for field in ("window", "hop"):
                value = getattr(self, field)
                _require(value is None, cls, field, value, "None for family 'samplecnn' (use filter_sizes[0])")
        else:
            _require(_is_positive_int(self.hop), cls, "hop", self.hop, f"a positive integer for family {self.family!r}")
            _require(
                isinstance(self.window, int) and _is_int(self.window) and self.window >= (self.hop or 1),
                cls, "window", self.window,
                f"an integer >= hop={self.hop} for family {self.family!r}",
            )
        if self.family == "mel-frame":
            _require(
                _is_int(self.n_fft) and self.n_fft >= (self.window or 2), cls, "n_fft", self.n_fft,
                f"an integer >= window={self.window}",
            )
            _require(_is_positive_int(self.n_mels), cls, "n_mels", self.n_mels, "a positive integer")
            _require(_is_number(self.log_c) and self.log_c > 0, cls, "log_c", self.log_c, "a positive number")
        _require(
            self.channels is None or (
                isinstance(self.channels, tuple) and len(self.channels) == self.n_modules
                and all(_is_positive_int(c) for c in self.channels)
            ),
            cls, "channels", self.channels, f"None or a tuple of {self.n_modules} positive integers (one per module)",
        )
        for field in ("n_outputs", "front_filters", "top_filters", "sample_rate"):
            value = getattr(self, field)
            _require(_is_positive_int(value), cls, field, value, "a positive integer")
        _require(_is_number(self.dropout) and 0 <= self.dropout < 1, cls, "dropout", self.dropout, "a rate in [0, 1)")
        _require(
            self.output_activation in OUTPUT_ACTIVATIONS, cls, "output_activation", self.output_activation,
            f"one of {OUTPUT_ACTIVATIONS}",
        )


@dataclasses.dataclass(frozen=True)
class AggregationConfig(Config):
    """Multi-level multi-scale feature aggregation (Lee et al. 2018, Sec. 4.1).

    Attributes:
        extractors: Configs of the SampleCNN-family feature extractors (one per scale).
        n_outputs: Units of the transfer classifier's output, or ``None`` for a
            features-only model (no classifier).
        hidden_units: Widths of the classifier's fully connected layers (4096, 4096).
        dropout: Dropout rate after each fully connected layer.
        output_activation: Activation of the classifier output.
        segment_hop: Hop between segment starts in samples (``None``: contiguous,
            non-overlapping segments, the paper's setting).
        trainable_extractors: Whether the extractors' weights are trainable (the
            paper trains only the classifier on the extracted features).
    """

    kind: ClassVar[str] = "aggregation"
    extractors: tuple[SampleCNNConfig, ...]
    n_outputs: int | None = 50
    hidden_units: tuple[int, ...] = (4096, 4096)
    dropout: float = 0.5
    output_activation: str = "sigmoid"
    segment_hop: int | None = None
    trainable_extractors: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["extractors"] = [c.to_dict() for c in self.extractors]
        return out

    def validate(self) -> None:
        cls = type(self)
        _require(
            isinstance(self.extractors, tuple) and len(self.extractors) >= 1
            and all(isinstance(c, SampleCNNConfig) for c in self.extractors),
            cls, "extractors", self.extractors, "a non-empty tuple of SampleCNNConfig",
        )
        _require(
            self.n_outputs is None or _is_positive_int(self.n_outputs), cls, "n_outputs", self.n_outputs,
            "None or a positive integer",
        )
        _require(
            isinstance(self.hidden_units, tuple) and all(_is_positive_int(u) for u in self.hidden_units),
            cls, "hidden_units", self.hidden_units, "a tuple of positive integers",
        )
        _require(_is_number(self.dropout) and 0 <= self.dropout < 1, cls, "dropout", self.dropout, "a rate in [0, 1)")
        _require(
            self.output_activation in OUTPUT_ACTIVATIONS, cls, "output_activation", self.output_activation,
            f"one of {OUTPUT_ACTIVATIONS}",
        )
        _require(
            self.segment_hop is None or _is_positive_int(self.segment_hop), cls, "segment_hop", self.segment_hop,
            "None or a positive integer",
        )
        _require(
            isinstance(self.trainable_extractors, bool), cls, "trainable_extractors", self.trainable_extractors,
            "a bool",
        )


MUSICNN_ARCHITECTURES = ("vgg", "musicnn")


@dataclasses.dataclass(frozen=True)
class MusicnnConfig(Config):
    """The log-mel taggers published with musicnn (Pons & Serra, 2019), ``tfaural.models.musicnn``.

    Both architectures take a mel *power* spectrogram ``[batch, n_mels, n_frames, 1]``
    (tfaural's ``[freq, frames]`` layout) and compress it in-model with
    ``log10(1 + log_c * x)``, as musicnn's front end does:

    * ``"vgg"``: input BatchNorm, then five blocks of 3x3 conv (``n_filters`` maps,
      ReLU) -> BatchNorm -> max-pool (first pool 4 frames x 1 band with stride 2 x 2,
      then 2x2, 2x2, 2x2, 4x4), flatten, dense output. Needs exactly 187 frames.
    * ``"musicnn"``: input BatchNorm; musically motivated front end of timbral
      (38 and 67 bands x 7 frames) and temporal (1 x 128/64/32 frames) filters, each
      max-pooled over frequency; a dense 1D mid-end (three 7-frame convs, residual
      adds); max- and mean-pooling over time, BatchNorm, a dense penultimate layer
      (``backend_units``, ReLU, BatchNorm) and the output.

    Attributes:
        architecture: ``"vgg"`` or ``"musicnn"``.
        n_outputs: Output units (50 tags).
        n_mels: Mel bands of the input (96).
        n_frames: Frames of one input patch (187 = 3 s at 16 kHz, hop 256).
        sample_rate: Sample rate in Hz (16,000).
        n_fft: FFT size in samples (512).
        hop_length: STFT hop in samples (256).
        log_c: Constant C of ``log10(1 + C x)`` (10,000).
        n_filters: Maps per conv layer of the vgg model (128).
        frontend_scale: Width factor of the musicnn front end (1.6: 204 timbral and 51
            temporal maps per branch).
        midend_filters: Maps of each mid-end conv (64).
        backend_units: Units of the penultimate dense layer (200).
        output_activation: ``"sigmoid"`` (tags), ``"softmax"`` or ``"linear"``.
        pools: The vgg model's five max-pools as ``(freq size, frames size, freq stride,
            frames stride)``. musicnn's MTT_vgg uses (1, 4, 2, 2), (2, 2, 2, 2) x 3, (4, 4, 4, 4);
            the shipped MSD_vgg graph was trained with (1, 4, 1, 4), (4, 1, 4, 1), (2, 2, 2, 2) x 2,
            (4, 4, 4, 4) (the importer reads them from the publisher's graph).
    """

    kind: ClassVar[str] = "musicnn"
    architecture: str = "vgg"
    n_outputs: int = 50
    n_mels: int = 96
    n_frames: int = 187
    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    log_c: float = 10000.0
    n_filters: int = 128
    frontend_scale: float = 1.6
    midend_filters: int = 64
    backend_units: int = 200
    output_activation: str = "sigmoid"
    pools: tuple[tuple[int, ...], ...] = ((1, 4, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (4, 4, 4, 4))

    def validate(self) -> None:
        cls = type(self)
        _require(
            isinstance(self.pools, tuple) and len(self.pools) == 5
            and all(isinstance(p, tuple) and len(p) == 4 and all(_is_positive_int(v) for v in p) for p in self.pools),
            cls, "pools", self.pools, "five (freq size, frames size, freq stride, frames stride) tuples",
        )
        _require(
            self.architecture in MUSICNN_ARCHITECTURES, cls, "architecture", self.architecture,
            f"one of {MUSICNN_ARCHITECTURES}",
        )
        for field in ("n_outputs", "n_mels", "n_frames", "sample_rate", "hop_length", "n_filters",
                      "midend_filters", "backend_units"):
            value = getattr(self, field)
            _require(_is_positive_int(value), cls, field, value, "a positive integer")
        _require(_is_int(self.n_fft) and self.n_fft >= 2, cls, "n_fft", self.n_fft, "an integer >= 2")
        _require(_is_number(self.log_c) and self.log_c > 0, cls, "log_c", self.log_c, "a positive number")
        _require(
            _is_number(self.frontend_scale) and self.frontend_scale > 0, cls, "frontend_scale",
            self.frontend_scale, "a positive number",
        )
        _require(
            self.output_activation in OUTPUT_ACTIVATIONS, cls, "output_activation", self.output_activation,
            f"one of {OUTPUT_ACTIVATIONS}",
        )
        if self.architecture == "vgg":
            _require(self.n_mels >= 64, cls, "n_mels", self.n_mels, "at least 64 for the vgg model (five pools)")
            _require(self.n_frames >= 64, cls, "n_frames", self.n_frames, "at least 64 for the vgg model")
        else:
            _require(self.n_mels >= 3, cls, "n_mels", self.n_mels, "at least 3 (timbral filters span 40% of it)")

    @property
    def n_freq(self) -> int:
        """STFT bins the mel filterbank reads, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def segment_length(self) -> int:
        """Samples whose centred STFT has exactly ``n_frames`` frames: ``(n_frames - 1) * hop_length``."""
        return (self.n_frames - 1) * self.hop_length

    @property
    def stft(self) -> STFTConfig:
        """The STFT of the model's input (this config is its one source)."""
        return STFTConfig(n_fft=self.n_fft, hop_length=self.hop_length)


#: The forms of a front end's ``compression`` (``C``, ``EPS``: positive numbers): ``db`` / ``db-max`` are
#: ``librosa.power_to_db`` (``amplitude_to_db`` for power 1) with ``ref=1`` / ``ref=np.max``; ``log10-1p:C`` is
#: ``log10(1 + C m)``; ``ln-offset:EPS`` is ``ln(m + EPS)`` (YAMNet, VGGish); ``linear`` is none.
COMPRESSIONS = ("db", "db-max", "log10-1p:C", "ln-1p:C", "ln-offset:EPS", "log10-offset:EPS", "linear")
MEL_LAYOUTS = ("auto", "mels_frames", "frames_mels")
MEL_NORMS = ("slaney", "none")


def parse_compression(spec: str) -> tuple[str, float | None]:
    """``(name, number)`` of a form of :data:`COMPRESSIONS` (``number``: ``None`` for ``db``, ``db-max``, ``linear``).

    Raises:
        ConfigError: Naming the form, for anything else.
    """
    text = spec.strip().lower() if isinstance(spec, str) else ""
    name, _, value = text.partition(":")
    if name in ("db", "db-max", "linear") and not value:
        return name, None
    if name in ("log10-1p", "ln-1p", "ln-offset", "log10-offset") and value:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number > 0 and number != float("inf"):
            return name, number
    raise ConfigError(f"compression {spec!r} is invalid: expected one of {', '.join(COMPRESSIONS)} "
                      "(C, EPS: positive numbers)")


@dataclasses.dataclass(frozen=True)
class FrontEndConfig(Config):
    """What a Keras model tfaural did not build takes, where its file does not say it.

    A model with its own ``keras.layers.MelSpectrogram`` needs only ``sample_rate`` (the rest is read
    from the layer); a model on the waveform needs only ``sample_rate``; a model on a spectrogram
    made outside it needs the STFT, the bands and the compression its own preprocessing used
    (:class:`tfaural.auralise.MelAuraliser` does the work; ``python -m tfaural.listen --help`` and
    ``docs/pretrained.md`` show each field as a flag).

    Attributes:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size in samples.
        hop_length: STFT hop in samples.
        n_mels: Mel bands.
        power: Exponent of the magnitude the spectrogram is made of (2: power, 1: magnitude;
            ``None``: 2).
        compression: A form of :data:`COMPRESSIONS` (``None``: the model's own, at ``input_layer``).
        top_db: Floor of the dB compressions below their top, in dB (``None``: none).
        amin: ``amin`` of the dB compressions (``None``: librosa's, by ``power``).
        input_layer: The model's own compression layer (the deconvolution ends at its input).
        layout: ``"auto"``, ``"mels_frames"`` or ``"frames_mels"``.
        linear_frequency: The model sees the STFT's own bins, not mel bands.
        fmin: The mel bands' lowest edge in Hz.
        fmax: Their highest edge in Hz (``None``: Nyquist).
        htk: HTK's mel scale instead of Slaney's.
        mel_norm: ``"slaney"`` (area-normalised triangles) or ``"none"`` (peaks of 1).
        center: Centred frames (tfaural's STFT, ``librosa.stft``'s default); ``False``: frames of
            ``tf.signal.stft`` (``librosa.stft(center=False)``), from the waveform's first sample on,
            no padding (``--no-center``).
        frame_length: Samples per frame of non-centred frames, zero-padded at the end to ``n_fft``
            (``tf.signal.stft``'s ``frame_length``; ``None``: ``n_fft``).
        n_mfcc: The model sees the first ``n_mfcc`` MFCCs of the compressed spectrogram
            (``librosa.feature.mfcc``: orthonormal DCT-II over the bands; ``None``: the bands).
    """

    kind: ClassVar[str] = "front_end"
    sample_rate: int | None = None
    n_fft: int | None = None
    hop_length: int | None = None
    n_mels: int | None = None
    power: float | None = None
    compression: str | None = None
    top_db: float | None = 80.0
    amin: float | None = None
    input_layer: str | None = None
    layout: str = "auto"
    linear_frequency: bool = False
    fmin: float = 0.0
    fmax: float | None = None
    htk: bool = False
    mel_norm: str = "slaney"
    center: bool = True
    frame_length: int | None = None
    n_mfcc: int | None = None

    def validate(self) -> None:
        cls = type(self)
        for field in ("sample_rate", "hop_length", "n_mels", "n_mfcc"):
            value = getattr(self, field)
            _require(value is None or _is_positive_int(value), cls, field, value, "None or a positive integer")
        _require(self.n_fft is None or (_is_int(self.n_fft) and self.n_fft >= 2), cls, "n_fft", self.n_fft,
                 "None or an integer >= 2")
        for field in ("power", "top_db", "amin"):
            value = getattr(self, field)
            _require(value is None or (_is_number(value) and 0 < value < float("inf")), cls, field, value,
                     "None or a positive number")
        if self.compression is not None:
            try:
                parse_compression(self.compression)
            except ConfigError as err:
                raise ConfigError(f"{cls.__name__}.{err}") from None
        _require(self.input_layer is None or (isinstance(self.input_layer, str) and bool(self.input_layer)), cls,
                 "input_layer", self.input_layer, "None or a layer name")
        _require(self.layout in MEL_LAYOUTS, cls, "layout", self.layout, f"one of {MEL_LAYOUTS}")
        _require(self.mel_norm in MEL_NORMS, cls, "mel_norm", self.mel_norm, f"one of {MEL_NORMS}")
        for field in ("linear_frequency", "htk", "center"):
            _require(isinstance(getattr(self, field), bool), cls, field, getattr(self, field), "a bool")
        _require(self.frame_length is None or (_is_int(self.frame_length) and self.frame_length >= 2), cls,
                 "frame_length", self.frame_length, "None or an integer >= 2")
        _require(self.frame_length is None or not self.center, cls, "frame_length", self.frame_length,
                 "None with centred frames (a frame shorter than the FFT is tf.signal.stft's: pass --no-center)")
        _require(self.frame_length is None or self.n_fft is None or self.frame_length <= self.n_fft, cls,
                 "frame_length", self.frame_length, f"at most n_fft={self.n_fft} (tf.signal.stft pads a frame to "
                 "the FFT size)")
        _require(_is_number(self.fmin) and self.fmin >= 0, cls, "fmin", self.fmin, "a number of Hz >= 0")
        _require(self.fmax is None or (_is_number(self.fmax) and self.fmax > self.fmin), cls, "fmax", self.fmax,
                 f"None or a number of Hz above fmin={self.fmin}")

    def given(self) -> list[str]:
        """The fields set to something other than their defaults, as command-line flags (``--n-fft``)."""
        defaults = FrontEndConfig()
        return ["--no-center" if f.name == "center" else "--" + f.name.replace("_", "-")
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(defaults, f.name)]

    @property
    def default_bands(self) -> bool:
        """Whether the mel bands are the library's default: Slaney, 0 Hz to Nyquist, area-normalised."""
        return (self.fmin, self.fmax, self.htk, self.mel_norm) == (0.0, None, False, "slaney")


#: What an imported Keras model takes (:class:`KerasConfig`).
KERAS_INPUTS = ("waveform", "keras mel", "keras stft", "spectrogram")


@dataclasses.dataclass(frozen=True)
class KerasConfig(Config):
    """Any Keras audio CNN imported as a run (``python -m tfaural.pretrained keras``, :mod:`tfaural.pretrained.keras`).

    The model's file holds its architecture and weights; this config holds what the file does
    not: how a waveform becomes the model's input, the length of one model input, and which
    layers the ``features`` signature pools.

    Attributes:
        front_end: What the model takes (its ``sample_rate`` is required).
        takes: ``"waveform"`` (the model takes samples ``[samples(, 1)]``), ``"keras mel"`` (through its own
            ``keras.layers.MelSpectrogram``), ``"keras stft"`` (through its own ``keras.layers.STFTSpectrogram``)
            or ``"spectrogram"`` (made outside it, by ``front_end``).
        n_fft: FFT size of the STFT the model sees (``None`` for ``"waveform"``).
        hop_length: Its hop in samples (``None`` for ``"waveform"``).
        n_outputs: Output units.
        segment_length: Samples of one model input (a patch: the model's own fixed length, or the one chosen
            at import for a model of any length).
        feature_layers: Layers whose maps the ``features`` signature max- and mean-pools (the top three
            deconvolvable levels by default).
        levels: ``(first, last)``: the deconvolvable levels an export deconvolves and auralises (``None``: all;
            each level's walk is traced into the export, so a deep model's export is smaller with fewer).
        trust_lambda: The model holds ``Lambda`` layers whose code the importer was told to trust.
        source: The file the model was imported from (for the record).
        extra_levels: Layers heard as levels after the conv blocks (``--extra-levels``: a transformer
            block's output, say; :class:`tfaural.deconv.DeconvNet`'s ``extra_levels``).
    """

    kind: ClassVar[str] = "keras"
    front_end: FrontEndConfig
    takes: str = "waveform"
    n_fft: int | None = None
    hop_length: int | None = None
    n_outputs: int = 1
    segment_length: int = 1
    feature_layers: tuple[str, ...] = ()
    levels: tuple[int, ...] | None = None
    trust_lambda: bool = False
    source: str = ""
    extra_levels: tuple[str, ...] = ()

    def validate(self) -> None:
        cls = type(self)
        _require(isinstance(self.front_end, FrontEndConfig) and self.front_end.sample_rate is not None, cls,
                 "front_end", self.front_end, "a FrontEndConfig with a sample_rate")
        _require(self.takes in KERAS_INPUTS, cls, "takes", self.takes, f"one of {KERAS_INPUTS}")
        if self.takes == "waveform":
            _require(self.n_fft is None and self.hop_length is None, cls, "n_fft", (self.n_fft, self.hop_length),
                     "None (with hop_length) for a model that takes the waveform")
        else:
            _require(self.n_fft is not None and _is_int(self.n_fft) and self.n_fft >= 2, cls, "n_fft", self.n_fft,
                     "an integer >= 2")
            _require(_is_positive_int(self.hop_length), cls, "hop_length", self.hop_length, "a positive integer")
        for field in ("n_outputs", "segment_length"):
            _require(_is_positive_int(getattr(self, field)), cls, field, getattr(self, field), "a positive integer")
        _require(isinstance(self.feature_layers, tuple) and all(
            isinstance(name, str) and name for name in self.feature_layers), cls, "feature_layers",
            self.feature_layers, "a tuple of layer names")
        _require(self.levels is None or (isinstance(self.levels, tuple) and len(self.levels) == 2 and all(
            _is_positive_int(v) for v in self.levels) and self.levels[0] <= self.levels[1]), cls, "levels",
            self.levels, "None or (first, last) levels, 1 <= first <= last")
        _require(isinstance(self.trust_lambda, bool), cls, "trust_lambda", self.trust_lambda, "a bool")
        _require(isinstance(self.extra_levels, tuple) and all(isinstance(n, str) and n for n in self.extra_levels)
                 and len(set(self.extra_levels)) == len(self.extra_levels), cls, "extra_levels", self.extra_levels,
                 "a tuple of distinct layer names")
        _require(isinstance(self.source, str), cls, "source", self.source, "a string")

    @property
    def sample_rate(self) -> int:
        """The model's sample rate in Hz."""
        assert self.front_end.sample_rate is not None  # validated
        return self.front_end.sample_rate

    @property
    def stft(self) -> STFTConfig | None:
        """The STFT the model sees (``None`` for a model on the waveform)."""
        if self.n_fft is None or self.hop_length is None:
            return None
        return STFTConfig(n_fft=self.n_fft, hop_length=self.hop_length)


MODEL_CONFIGS: dict[str, type[Config]] = {
    ChoiConfig.kind: ChoiConfig,
    SampleCNNConfig.kind: SampleCNNConfig,
    AggregationConfig.kind: AggregationConfig,
    MusicnnConfig.kind: MusicnnConfig,
    KerasConfig.kind: KerasConfig,
}


def stft_config_of(model_config: Config) -> STFTConfig | None:
    """The STFT of a model's input: the one source of a run's STFT settings.

    Args:
        model_config: Any model config (:data:`MODEL_CONFIGS`).

    Returns:
        ``ChoiConfig.stft`` / ``MusicnnConfig.stft`` / ``KerasConfig.stft`` for the spectrogram models; ``None`` for the
        waveform models (the SampleCNN family and its aggregations, whose mel-frame baseline
        computes its spectrogram inside the network).
    """
    if isinstance(model_config, (ChoiConfig, MusicnnConfig, KerasConfig)):
        return model_config.stft
    return None


def describe_differences(was: Any, now: Any, *, name: str = "", ignore: tuple[str, ...] = ()) -> str:
    """What differs between two JSON-like values, for people: ``"settings.top_k 5, now 3; model.path ..."``.

    The one wording of "what changed" in refusals (a resumed training run, a ``--skip-existing`` rerun).

    Args:
        was: The earlier value (dicts nest; any other value compares whole).
        now: The value now.
        name: Dotted name of the value, prefixed to the keys of nested dicts.
        ignore: Top-level keys left out of the comparison.

    Returns:
        ``"<name> <was>, now <now>"`` for each differing leaf, joined by ``"; "`` (sorted by key; long values
        shortened to 80 characters); ``""`` if nothing differs.
    """
    if isinstance(was, dict) and isinstance(now, dict):
        parts = [describe_differences(was.get(key), now.get(key), name=f"{name}.{key}" if name else str(key))
                 for key in sorted(set(was) | set(now), key=str)
                 if key not in ignore and was.get(key) != now.get(key)]
        return "; ".join(parts)
    if was == now:
        return ""

    def shown(value: Any) -> str:
        text = "none" if value is None else json.dumps(value, ensure_ascii=False, default=str)
        return text if len(text) <= 80 else text[:77] + "..."

    return f"{name} {shown(was)}, now {shown(now)}"


def model_config_to_dict(config: Config) -> dict[str, Any]:
    """Returns ``{"kind": ..., "config": {...}}`` for any model config (polymorphic JSON)."""
    if config.kind not in MODEL_CONFIGS:
        raise ConfigError(f"{type(config).__name__} is not a model config; expected one of {sorted(MODEL_CONFIGS)}")
    return {"kind": config.kind, "config": config.to_dict()}


def model_config_from_dict(data: dict[str, Any]) -> Config:
    """Inverse of :func:`model_config_to_dict`.

    Raises:
        ConfigError: If the kind is unknown or the config is invalid.
    """
    if not isinstance(data, dict) or "kind" not in data or "config" not in data:
        raise ConfigError(f"expected a dict with 'kind' and 'config', got {data!r}")
    kind = data["kind"]
    if kind not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model config kind {kind!r}; expected one of {sorted(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[kind].from_dict(data["config"])


__all__ += [
    "CHOI_INPUT_SCALINGS",
    "OUTPUT_ACTIVATIONS",
    "SAMPLECNN_FAMILIES",
    "SAMPLECNN_MODULE_CHANNELS",
    "default_module_channels",
    "ChoiConfig",
    "SampleCNNConfig",
    "AggregationConfig",
    "MUSICNN_ARCHITECTURES",
    "MusicnnConfig",
    "COMPRESSIONS",
    "MEL_LAYOUTS",
    "MEL_NORMS",
    "parse_compression",
    "FrontEndConfig",
    "KERAS_INPUTS",
    "KerasConfig",
    "MODEL_CONFIGS",
    "stft_config_of",
    "model_config_to_dict",
    "model_config_from_dict",
]
