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
]

SUPPORTED_WINDOWS = ("hann",)
PAD_MODES = ("constant", "wrap", "none")

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
    ``librosa.stft(center=True)``); the window is a periodic Hann of
    ``win_length`` samples zero-padded to ``n_fft``.

    Attributes:
        n_fft: FFT size in samples; the spectrum has ``n_fft // 2 + 1`` bins.
        hop_length: Hop between frames in samples.
        win_length: Window length in samples (``None``: ``n_fft``).
        window: Window name; only ``"hann"`` (periodic) is supported.
    """

    kind: ClassVar[str] = "stft"
    n_fft: int = 512
    hop_length: int = 256
    win_length: int | None = None
    window: str = "hann"

    @property
    def n_freq(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def window_length(self) -> int:
        """The effective window length in samples."""
        return self.n_fft if self.win_length is None else self.win_length

    def n_frames(self, n_samples: int) -> int:
        """Number of centred frames for a signal of ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length

    def validate(self) -> None:
        cls = type(self)
        _require(isinstance(self.n_fft, int) and self.n_fft >= 2, cls, "n_fft", self.n_fft, "an integer >= 2")
        _require(
            isinstance(self.hop_length, int) and 0 < self.hop_length <= self.window_length,
            cls, "hop_length", self.hop_length, f"an integer in [1, {self.window_length}] (the window length)",
        )
        _require(
            self.win_length is None or (isinstance(self.win_length, int) and 2 <= self.win_length <= self.n_fft),
            cls, "win_length", self.win_length, f"None or an integer in [2, n_fft={self.n_fft}]",
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


