"""The one exception hierarchy of tfaural.

Every error a user can cause (a bad file, a bad parameter, a model that does not
fit its data) is a :class:`TfauralError`. Messages name the offending value or
path and say what was expected, so that the message alone is enough to act on.

Example:
    >>> try:
    ...     load("missing.wav", sample_rate=22050)
    ... except TfauralError as err:
    ...     print(err)
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "TfauralError",
    "ParameterError",
    "AudioError",
    "AudioDecodeError",
    "EmptyAudioError",
    "InvalidAudioError",
    "ConfigError",
    "ModelError",
    "ModelLoadError",
    "DataError",
    "ExportError",
    "SoundfontError",
]


class TfauralError(Exception):
    """Base class of every error raised on purpose by tfaural."""


class ParameterError(TfauralError, ValueError):
    """A function argument has a value outside what the function supports."""


class ConfigError(ParameterError):
    """A configuration dataclass or its JSON form is invalid."""


class ModelError(TfauralError):
    """A model, layer name, checkpoint or export is missing or does not fit."""


class ModelLoadError(ModelError):
    """A job's model could not be loaded where it runs (a Beam worker or a model process).

    The job lists each track that needed the model as failed with this error, and then stops
    with it: see :meth:`beam_jobs.job.CatalogueJob.finish`.
    """


class DataError(TfauralError):
    """A catalogue manifest, TFRecord shard or dataset description is invalid."""


class ExportError(TfauralError):
    """A SavedModel export could not be written or verified."""


class SoundfontError(TfauralError):
    """A General MIDI soundfont or the FluidSynth renderer is not available."""


class AudioError(TfauralError):
    """Base class of errors about one audio input.

    Attributes:
        source: The path (or a short description such as ``"<bytes>"``) of the
            audio that failed.
        reason: What was wrong, without the source.
    """

    def __init__(self, source: Any, reason: str) -> None:
        self.source = describe_source(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keeps the two fields through pickling (Beam workers)
        return (type(self), (self.source, self.reason))


class AudioDecodeError(AudioError):
    """The file is not audio, is corrupt or truncated, or is in an unsupported format."""


class EmptyAudioError(AudioError):
    """The file decodes but holds no samples (or fewer than the caller needs)."""


class InvalidAudioError(AudioError):
    """The decoded samples are unusable: NaN/Inf, silent where sound is required, bad rate."""


def describe_source(source: Any) -> str:
    """Returns a short human-readable name for an audio source.

    Args:
        source: A path (str or ``os.PathLike``), bytes, or a file object.

    Returns:
        The path as a string, ``"<N bytes>"`` for raw bytes, the file object's
        ``name`` if it has one, otherwise ``"<file object>"``.
    """
    if isinstance(source, str):
        return source
    if isinstance(source, os.PathLike):
        return os.fspath(source)  # type: ignore[return-value]
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    return "<file object>"


def failure_reason(err: BaseException) -> str:
    """What a manifest or failures file records of a failed input: an :class:`AudioError`'s reason (the file is
    recorded beside it), else the message, else the exception's ``repr``."""
    return err.reason if isinstance(err, AudioError) else str(err) or repr(err)


def describe_error(err: BaseException) -> str:
    """A library exception's message on one line, for an error reason.

    Uses ``strerror`` where the exception has one (OSError, PyAV's FFmpegError: the message without
    the errno and call site), else ``str(err)``, else the exception's type name.
    """
    strerror = getattr(err, "strerror", None)
    text = (strerror if isinstance(strerror, str) and strerror else str(err)).strip() or type(err).__name__
    return text.replace("\n", " ")
