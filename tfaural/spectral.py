"""The one STFT / ISTFT convention of tfaural, in TensorFlow.

Training, the exported SavedModel signatures and auralisation all call these
functions, so the spectrogram a model was trained on is exactly the one it is
served and auralised with.

The convention (identical to ``librosa.stft(center=True)`` with librosa's
default zero padding):

* frames are centred: the signal is zero-padded by ``n_fft // 2`` samples on
  both sides, so frame ``t`` is centred on sample ``t * hop_length`` and a
  signal of ``n`` samples has ``1 + n // hop_length`` frames (for even ``n_fft``);
* the window is a periodic Hann window of ``n_fft`` samples (the one window of
  every spectrogram model: :class:`tfaural.config.STFTConfig` has no other). The
  ``win_length`` argument, a shorter window zero-padded symmetrically to ``n_fft``
  as librosa does, exists for the mel-frame SampleCNN baseline's in-model front end;
* spectrograms are laid out ``[..., freq, frames]`` with ``n_fft // 2 + 1``
  frequency bins;
* :func:`istft` overlap-adds the inverse FFT frames weighted by the same window
  and divides by the summed squared window, so ``istft(stft(y), length=n)``
  returns ``y`` to float32 precision, including at the edges.

All functions accept tensors of any rank with unknown (``None``) batch and
length dimensions and contain only core TensorFlow ops, so they can run inside
``tf.function`` and exported graphs (TF Serving).

**Compressions** (what a model sees of a power or magnitude spectrogram, frozen dataclasses):
:class:`Log1p` (``log_b(1 + c x)``: musicnn, the Choi CNN), :class:`LogOffset`
(``log_b(x + offset)``: YAMNet, VGGish), :class:`Decibels` (``librosa.power_to_db`` /
``amplitude_to_db``, ``keras.layers.MelSpectrogram``) and :class:`Linear`. Each is a log with a
floor, so each has a *silence* (its value at x = 0) and ``expand``, the exact way back from a rise
above that silence to ``x``; :class:`tfaural.auralise.MelAuraliser` hears deconvolved maps by it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow as tf

from tfaural.errors import ParameterError

__all__ = [
    "stft",
    "istft",
    "magphase",
    "magnitude",
    "hann_window",
    "mel_filterbank",
    "dct_matrix",
    "melspectrogram",
    "log_compress",
    "log_decompress",
    "log10_compress",
    "log10_decompress",
    "MUSICNN_LOG_C",
    "Compression",
    "Log1p",
    "LogOffset",
    "Decibels",
    "Linear",
    "compression_from_spec",
    "compression_spec",
    "n_frames",
]


def _validate_arguments(n_fft: int, hop_length: int, win_length: int | None) -> int:
    """Checks STFT parameters and returns the effective window length."""
    if not isinstance(n_fft, (int, np.integer)) or n_fft < 2:
        raise ParameterError(f"n_fft={n_fft!r} is invalid: expected an integer >= 2")
    win = n_fft if win_length is None else win_length
    if not isinstance(win, (int, np.integer)) or not 2 <= win <= n_fft:
        raise ParameterError(f"win_length={win_length!r} is invalid: expected an integer in [2, n_fft={n_fft}]")
    if not isinstance(hop_length, (int, np.integer)) or not 0 < hop_length <= win:
        raise ParameterError(
            f"hop_length={hop_length!r} is invalid: expected an integer in [1, win_length={win}]"
        )
    return int(win)


def n_frames(n_samples: int, *, n_fft: int, hop_length: int, center: bool = True) -> int:
    """Number of STFT frames :func:`stft` returns for ``n_samples`` samples.

    Args:
        n_samples: Signal length in samples.
        n_fft: FFT size in samples.
        hop_length: Hop between frames in samples.
        center: Whether frames are centred (padded by ``n_fft // 2`` each side).

    Returns:
        The number of frames (0 if the signal is shorter than one frame when not centred).
    """
    padded = n_samples + (2 * (n_fft // 2) if center else 0)
    return max(0, 1 + (padded - n_fft) // hop_length)


def hann_window(n_fft: int, *, win_length: int | None = None, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Periodic Hann window of ``win_length`` samples centred in ``n_fft`` samples.

    Args:
        n_fft: Output length in samples.
        win_length: Length of the non-zero part (``None``: ``n_fft``).
        dtype: Floating dtype of the window.

    Returns:
        Tensor ``[n_fft]``, matching ``librosa.filters.get_window("hann", win_length)``
        padded with ``librosa.util.pad_center``.
    """
    win = n_fft if win_length is None else win_length
    # Built in NumPy rather than with tf.signal.hann_window: TensorFlow's "periodic"
    # flag only takes effect for even lengths, and odd sizes (729 = 3**6) matter here.
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    left = (n_fft - win) // 2
    return tf.constant(np.pad(window, (left, n_fft - win - left)), dtype=dtype)


def _pad_last_axis(y: tf.Tensor, left: int, right: int) -> tf.Tensor:
    rank = tf.rank(y)
    paddings = tf.concat([tf.zeros([rank - 1, 2], tf.int32), [[left, right]]], axis=0)
    return tf.pad(y, paddings)


def stft(
    y: tf.Tensor | np.ndarray,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    center: bool = True,
) -> tf.Tensor:
    """Short-time Fourier transform under tfaural's convention.

    Args:
        y: Waveform, float32 ``[..., samples]`` in [-1, 1].
        n_fft: FFT size in samples.
        hop_length: Hop between frames in samples.
        win_length: Window length in samples (``None``: ``n_fft``).
        center: Centre frames (zero-pad ``n_fft // 2`` samples on both sides).
            ``False`` frames the raw signal from sample 0 (used by frame-level models).

    Returns:
        complex64 ``[..., n_fft // 2 + 1, frames]``.

    Raises:
        ParameterError: If ``n_fft``, ``hop_length`` or ``win_length`` are invalid.
    """
    win = _validate_arguments(n_fft, hop_length, win_length)
    y = tf.convert_to_tensor(y, dtype=tf.float32)
    if center:
        y = _pad_last_axis(y, n_fft // 2, n_fft // 2)
    frames = tf.signal.frame(y, frame_length=n_fft, frame_step=hop_length, axis=-1)
    frames = frames * hann_window(n_fft, win_length=win)
    spectrum = tf.signal.rfft(frames, fft_length=[n_fft])  # [..., frames, freq]
    return tf.linalg.matrix_transpose(spectrum)


def istft(
    stft_matrix: tf.Tensor | np.ndarray,
    *,
    n_fft: int | None = None,
    hop_length: int,
    win_length: int | None = None,
    length: int | tf.Tensor | None = None,
) -> tf.Tensor:
    """Inverse of :func:`stft` (centred frames) by windowed overlap-add.

    Args:
        stft_matrix: complex64 ``[..., freq, frames]`` as returned by :func:`stft`.
        n_fft: FFT size (``None``: ``2 * (freq - 1)``, which assumes an even ``n_fft``;
            pass it explicitly for odd sizes).
        hop_length: Hop between frames in samples.
        win_length: Window length in samples (``None``: ``n_fft``).
        length: Output length in samples (``None``: ``hop_length * (frames - 1)``).
            The output is trimmed or zero-padded to it.

    Returns:
        float32 ``[..., samples]``.
    """
    stft_matrix = tf.convert_to_tensor(stft_matrix)
    if not stft_matrix.dtype.is_complex:
        raise ParameterError(f"istft expects a complex STFT matrix, got dtype {stft_matrix.dtype.name}")
    if n_fft is None:
        n_freq = stft_matrix.shape[-2]
        if n_freq is None:
            raise ParameterError("istft: n_fft must be given when the frequency axis is unknown")
        n_fft = 2 * (n_freq - 1)
    win = _validate_arguments(n_fft, hop_length, win_length)
    spectrum = tf.linalg.matrix_transpose(tf.cast(stft_matrix, tf.complex64))  # [..., frames, freq]
    window = hann_window(n_fft, win_length=win)
    frames = tf.signal.irfft(spectrum, fft_length=[n_fft]) * window
    signal = tf.signal.overlap_and_add(frames, hop_length)
    n_frames_t = tf.shape(spectrum)[-2]
    envelope = tf.signal.overlap_and_add(tf.tile(window[tf.newaxis, :] ** 2, [n_frames_t, 1]), hop_length)
    tiny = np.finfo(np.float32).tiny
    signal = signal / tf.where(envelope > tiny, envelope, tf.ones_like(envelope))
    start = n_fft // 2
    if length is None:
        length = hop_length * (n_frames_t - 1)
    signal = signal[..., start:]
    available = tf.shape(signal)[-1]
    signal = _pad_last_axis_dynamic(signal, tf.maximum(0, length - available))
    return signal[..., :length]


def _pad_last_axis_dynamic(y: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
    rank = tf.rank(y)
    paddings = tf.concat(
        [tf.zeros([rank - 1, 2], tf.int32), tf.reshape(tf.stack([0, tf.cast(right, tf.int32)]), [1, 2])], axis=0
    )
    return tf.pad(y, paddings)


def magphase(stft_matrix: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Splits a complex spectrogram into magnitude and unit-modulus phase.

    Args:
        stft_matrix: complex ``[..., freq, frames]``.

    Returns:
        ``(magnitude, phase)``: float32 ``|S|`` and complex64 ``exp(i * angle(S))``
        (phase 1 where ``S == 0``), so ``magnitude * phase == S`` (as ``librosa.magphase``).
    """
    stft_matrix = tf.cast(stft_matrix, tf.complex64)
    mag = tf.abs(stft_matrix)
    angle = tf.math.angle(stft_matrix)
    phase = tf.complex(tf.cos(angle), tf.sin(angle))
    return mag, phase


def magnitude(
    y: tf.Tensor | np.ndarray,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    center: bool = True,
) -> tf.Tensor:
    """``|stft(y)|``: float32 ``[..., freq, frames]`` (linear magnitude)."""
    return tf.abs(stft(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length, center=center))


def _hz_to_mel(freq: np.ndarray, htk: bool = False) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale (linear below 1 kHz, log above), or HTK's ``2595 log10(1 + f / 700)``."""
    freq = np.asarray(freq, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_region = freq >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(mels: np.ndarray, htk: bool = False) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(
    *, sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
    htk: bool = False, norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filterbank (Slaney scale, area-normalised by default), as ``librosa.filters.mel``.

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size in samples.
        n_mels: Number of mel bands.
        fmin: Lowest band edge in Hz.
        fmax: Highest band edge in Hz (``None``: ``sample_rate / 2``).
        htk: HTK's mel scale (YAMNet's, torchaudio's default) instead of Slaney's.
        norm: ``"slaney"``: each triangle's area is normalised; ``None``: peaks of 1.

    Returns:
        float32 ``[n_mels, n_fft // 2 + 1]`` weights.
    """
    if sample_rate <= 0:
        raise ParameterError(f"sample_rate={sample_rate!r} is invalid: expected a positive number of Hz")
    if n_mels < 1:
        raise ParameterError(f"n_mels={n_mels!r} is invalid: expected a positive integer")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sample_rate / 2.0:
        raise ParameterError(
            f"fmin={fmin!r}, fmax={fmax!r} are invalid: expected 0 <= fmin < fmax <= {sample_rate / 2} (Nyquist)"
        )
    if norm not in ("slaney", None):
        raise ParameterError(f"norm={norm!r} is invalid: expected 'slaney' or None")
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin), htk), _hz_to_mel(np.array(fmax), htk), n_mels + 2),
                           htk)
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]
    return weights.astype(np.float32)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II of ``n`` points as a matrix: float32 ``[n, n]``, row ``k`` the ``k``-th basis
    vector (``scipy.fft.dct(x, type=2, norm="ortho")`` is ``dct_matrix(n) @ x``; its transpose is the inverse).
    ``librosa.feature.mfcc`` takes the first ``n_mfcc`` rows over the bands of a dB mel spectrogram."""
    k, m = np.arange(n)[:, None], np.arange(n)[None, :]
    basis = np.cos(np.pi * k * (2 * m + 1) / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def melspectrogram(
    y: tf.Tensor | np.ndarray,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
    center: bool = True,
) -> tf.Tensor:
    """Mel spectrogram, as ``librosa.feature.melspectrogram`` with the same settings.

    Args:
        y: Waveform, float32 ``[..., samples]``.
        sample_rate: Sample rate of ``y`` in Hz (keyword-only).
        n_fft: FFT size in samples (windows shorter than it are zero-padded).
        hop_length: Hop between frames in samples.
        win_length: Window length in samples (``None``: ``n_fft``).
        n_mels: Number of mel bands.
        fmin: Lowest mel band edge in Hz.
        fmax: Highest mel band edge in Hz (``None``: Nyquist).
        power: Exponent of the magnitude (2: power, 1: magnitude).
        center: Centre frames (see :func:`stft`).

    Returns:
        float32 ``[..., n_mels, frames]``.
    """
    mag = magnitude(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length, center=center)
    if power != 1.0:
        mag = tf.pow(mag, power)
    weights = tf.constant(
        mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    )
    return tf.einsum("mf,...ft->...mt", weights, mag)


def log_compress(x: tf.Tensor | np.ndarray, c: float = 10.0) -> tf.Tensor:
    """Magnitude compression ``log(1 + c * |x|)`` (Lee et al. 2018, §5.3, C = 10).

    Args:
        x: Magnitudes, any shape.
        c: Compression constant (> 0).

    Returns:
        float32 tensor of the same shape, >= 0.
    """
    if c <= 0:
        raise ParameterError(f"c={c!r} is invalid: expected a positive compression constant")
    return tf.math.log1p(c * tf.abs(tf.convert_to_tensor(x, dtype=tf.float32)))


def log_decompress(x: tf.Tensor | np.ndarray, c: float = 10.0) -> tf.Tensor:
    """Inverse of :func:`log_compress` for non-negative inputs: ``(exp(x) - 1) / c``."""
    if c <= 0:
        raise ParameterError(f"c={c!r} is invalid: expected a positive compression constant")
    return tf.math.expm1(tf.convert_to_tensor(x, dtype=tf.float32)) / c


#: Constant of musicnn's front end, ``log10(1 + 10000 x)`` on mel power.
MUSICNN_LOG_C = 10000.0


def log10_compress(x: tf.Tensor | np.ndarray, c: float = MUSICNN_LOG_C) -> tf.Tensor:
    """Power compression ``log10(1 + c * x)`` of musicnn's front end, in float32.

    musicnn's own extractor casts the mel power to float16 before this step, which
    overflows to ``inf`` wherever the power exceeds 65504 / c (6.55 for c = 10^4):
    loud music. Here everything stays float32.

    Args:
        x: Non-negative powers (mel power spectrogram), any shape; negative values are clipped to 0.
        c: Compression constant (> 0).

    Returns:
        float32 tensor of the same shape, >= 0.
    """
    if c <= 0:
        raise ParameterError(f"c={c!r} is invalid: expected a positive compression constant")
    return Log1p(c)(x)


def log10_decompress(x: tf.Tensor | np.ndarray, c: float = MUSICNN_LOG_C) -> tf.Tensor:
    """Inverse of :func:`log10_compress`: ``(10^x - 1) / c`` (negative inputs give negative powers)."""
    if c <= 0:
        raise ParameterError(f"c={c!r} is invalid: expected a positive compression constant")
    return Log1p(c).expand(x, x)


# ---------------------------------------------------------------------------------------------
# Compressions: what a model sees of a power (or magnitude) spectrogram. Every one is a log with a
# floor, ``units * log10(x + floor) + constant``, so each has a *silence* (its value at x = 0) and
# an exact way back from a rise above that silence to the power: ``floor * (10^(rise / units) - 1)``.
# tfaural.auralise uses that to hear a deconvolved map in any of them (MelAuraliser).


def _per_spectrogram_max(x: tf.Tensor) -> tf.Tensor:
    """``[..., 1, 1]``: the maximum of each spectrogram ``[..., rows, cols]``."""
    return tf.reduce_max(x, axis=[-2, -1], keepdims=True)


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ParameterError(f"{name}={value!r} is invalid: expected a positive number")
    return float(value)


def _log_base(base: float) -> float:
    if not (isinstance(base, (int, float)) and math.isfinite(base) and base > 1):
        raise ParameterError(f"base={base!r} is invalid: expected a number > 1 (10, or math.e)")
    return math.log(base)


class _Logarithm:
    """What the compressions that are logarithms of a ``base`` share."""

    base: float

    @property
    def units(self) -> float:
        """Compressed units per decade of ``x`` (for ``x`` well above the floor)."""
        return math.log(10.0) / _log_base(self.base)


@dataclasses.dataclass(frozen=True)
class Log1p(_Logarithm):
    """``log_base(1 + c x)``: musicnn's ``log10(1 + 10000 m)`` on mel power, the Choi CNN's ``ln(1 + 10 |X|)``.

    Silence is 0; :meth:`expand` is ``(base^rise - 1) / c``.

    Attributes:
        c: Compression constant (> 0).
        base: Base of the logarithm (> 1): 10, or ``math.e`` for ``log1p``.
    """

    c: float = MUSICNN_LOG_C
    base: float = 10.0

    def __post_init__(self) -> None:
        _positive("c", self.c)
        _log_base(self.base)

    def __call__(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """Compresses ``x`` (float32 ``[..., rows, cols]`` >= 0; negative values count as 0)."""
        x = tf.maximum(tf.convert_to_tensor(x, tf.float32), 0.0)
        return tf.math.log1p(self.c * x) / _log_base(self.base)

    def silence(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """float32 ``[..., 1, 1]``: the compressed value of x = 0 for each spectrogram of ``x``."""
        return tf.zeros_like(_per_spectrogram_max(tf.convert_to_tensor(x, tf.float32)))

    def expand(self, rise: tf.Tensor, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """``x`` values of compressed values ``rise`` above :meth:`silence` (0 -> 0; ``x``: the spectrograms
        that fix the silence, broadcastable to ``rise`` on its last two axes)."""
        del x  # the silence is 0 whatever the spectrogram
        return tf.math.expm1(tf.convert_to_tensor(rise, tf.float32) * _log_base(self.base)) / self.c


@dataclasses.dataclass(frozen=True)
class LogOffset(_Logarithm):
    """``log_base(x + offset)``: YAMNet's ``ln(m + 0.001)`` and VGGish's ``ln(m + 0.01)`` on mel magnitude.

    Silence is ``log_base(offset)``; :meth:`expand` is ``offset (base^rise - 1)``.

    Attributes:
        offset: The offset added before the log (> 0).
        base: Base of the logarithm (> 1).
    """

    offset: float
    base: float = math.e

    def __post_init__(self) -> None:
        _positive("offset", self.offset)
        _log_base(self.base)

    def __call__(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """Compresses ``x`` (float32 ``[..., rows, cols]`` >= 0; negative values count as 0)."""
        x = tf.maximum(tf.convert_to_tensor(x, tf.float32), 0.0)
        return tf.math.log(x + self.offset) / _log_base(self.base)

    def silence(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """float32 ``[..., 1, 1]``: the compressed value of x = 0 for each spectrogram of ``x``."""
        floor = math.log(self.offset) / _log_base(self.base)
        return tf.fill(tf.shape(_per_spectrogram_max(tf.convert_to_tensor(x, tf.float32))), floor)

    def expand(self, rise: tf.Tensor, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """``x`` values of compressed values ``rise`` above :meth:`silence` (0 -> 0)."""
        del x
        return self.offset * tf.math.expm1(tf.convert_to_tensor(rise, tf.float32) * _log_base(self.base))


@dataclasses.dataclass(frozen=True)
class Decibels:
    """Decibels as ``librosa.power_to_db`` and ``keras.layers.MelSpectrogram`` compute them.

    ``multiplier * log10(max(x, amin)) - multiplier * log10(max(ref, amin))``, then, with ``top_db``,
    at least the spectrogram's maximum minus ``top_db``. The defaults are librosa's and Keras's for
    power; ``librosa.amplitude_to_db`` of a magnitude is ``Decibels(multiplier=20, amin=1e-5)``.

    Silence is the larger of ``multiplier * log10(amin / ref)`` and the ``top_db`` floor: the level
    of a power of ``amin`` (or of ``10^(-top_db / multiplier)`` times the maximum), ``p0``;
    :meth:`expand` is ``p0 (10^(rise / multiplier) - 1)``, which gives back ``max(x, p0) - p0``.

    Attributes:
        amin: The smallest value of ``x`` told apart (> 0).
        ref: The reference value (0 dB), or ``"max"``: each spectrogram's maximum (librosa's ``ref=np.max``).
        top_db: The dynamic range kept below each spectrogram's maximum, in dB (``None``: all of it).
        multiplier: 10 for power, 20 for magnitude.
    """

    amin: float = 1e-10
    ref: float | str = 1.0
    top_db: float | None = 80.0
    multiplier: float = 10.0

    def __post_init__(self) -> None:
        _positive("amin", self.amin)
        _positive("multiplier", self.multiplier)
        if self.ref != "max":
            _positive("ref", self.ref)  # type: ignore[arg-type]
        if self.top_db is not None:
            _positive("top_db", self.top_db)

    @property
    def units(self) -> float:
        """Decibels per decade of ``x``."""
        return float(self.multiplier)

    def _reference_db(self, x: tf.Tensor) -> tf.Tensor:
        ref = _per_spectrogram_max(x) if self.ref == "max" else tf.fill(tf.shape(_per_spectrogram_max(x)),
                                                                         float(self.ref))  # type: ignore[arg-type]
        return self.multiplier * _log10(tf.maximum(ref, self.amin))

    def __call__(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """Compresses ``x`` (float32 ``[..., rows, cols]``; the maxima are taken per spectrogram)."""
        x = tf.convert_to_tensor(x, tf.float32)
        db = self.multiplier * _log10(tf.maximum(x, self.amin)) - self._reference_db(x)
        if self.top_db is not None:
            db = tf.maximum(db, _per_spectrogram_max(db) - self.top_db)
        return db

    def silence(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """float32 ``[..., 1, 1]``: the compressed value of x = 0 for each spectrogram of ``x``."""
        x = tf.convert_to_tensor(x, tf.float32)
        reference = self._reference_db(x)
        floor = self.multiplier * math.log10(self.amin) - reference
        if self.top_db is not None:
            top = self.multiplier * _log10(tf.maximum(_per_spectrogram_max(x), self.amin)) - reference
            floor = tf.maximum(floor, top - self.top_db)
        return floor

    def expand(self, rise: tf.Tensor, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """``x`` values of compressed values ``rise`` above :meth:`silence` (0 -> 0; ``x``: the spectrograms
        that fix the silence, broadcastable to ``rise`` on its last two axes)."""
        x = tf.convert_to_tensor(x, tf.float32)
        floor_power = tf.pow(10.0, (self.silence(x) + self._reference_db(x)) / self.multiplier)
        return floor_power * tf.math.expm1(tf.convert_to_tensor(rise, tf.float32) * (math.log(10.0) / self.multiplier))


@dataclasses.dataclass(frozen=True)
class Linear:
    """No compression: the model sees ``x`` itself (``keras.layers.MelSpectrogram(power_to_db=False)``)."""

    @property
    def units(self) -> float:
        """Infinite: the way back never overflows."""
        return math.inf

    def __call__(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """``x`` as float32."""
        return tf.convert_to_tensor(x, tf.float32)

    def silence(self, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """float32 zeros ``[..., 1, 1]``."""
        return tf.zeros_like(_per_spectrogram_max(tf.convert_to_tensor(x, tf.float32)))

    def expand(self, rise: tf.Tensor, x: tf.Tensor | np.ndarray) -> tf.Tensor:
        """``rise`` itself."""
        del x
        return tf.convert_to_tensor(rise, tf.float32)


#: The compressions a model may see (see :class:`tfaural.auralise.MelAuraliser`).
Compression = Log1p | LogOffset | Decibels | Linear


def _log10(x: tf.Tensor) -> tf.Tensor:
    return tf.math.log(x) / math.log(10.0)


def compression_from_spec(spec: str, *, power: float = 2.0, top_db: float | None = 80.0,
                          amin: float | None = None) -> Compression:
    """The :data:`Compression` of a form of :data:`tfaural.config.COMPRESSIONS` (``"db-max"``, ``"ln-offset:0.001"``).

    ``db`` and ``db-max`` are ``librosa.power_to_db`` of power (``power`` 2) and
    ``librosa.amplitude_to_db`` of magnitude (``power`` 1), with ``ref=1`` and ``ref=np.max``,
    ``top_db`` and ``amin`` (``None``: librosa's, 1e-10 for power and 1e-5 for magnitude).

    Raises:
        ParameterError: Naming the form, for anything else (a ``ConfigError``).
    """
    from tfaural.config import parse_compression

    name, number = parse_compression(spec)
    if name in ("db", "db-max"):
        magnitude = power == 1.0
        return Decibels(amin=amin if amin is not None else (1e-5 if magnitude else 1e-10),
                        ref="max" if name == "db-max" else 1.0, top_db=top_db,
                        multiplier=20.0 if magnitude else 10.0)
    if name == "linear":
        return Linear()
    assert number is not None
    base = 10.0 if name.startswith("log10") else math.e
    return Log1p(number, base=base) if name.endswith("1p") else LogOffset(number, base=base)


def compression_spec(compression: Compression) -> dict[str, Any]:
    """What ``compression`` is, in the forms of :data:`tfaural.config.COMPRESSIONS` (what ``metadata.json`` says).

    Returns:
        ``{"compression": form}``, with ``top_db`` and ``amin`` for ``db``/``db-max`` (and ``ref`` or
        ``multiplier`` where they are not librosa's for power); a logarithm of a base other than 10 and e
        has ``"base"``. :func:`compression_from_spec` of the form (with ``top_db``, ``amin`` and the power)
        gives the compression back.
    """
    if isinstance(compression, Decibels):
        spec: dict[str, Any] = {"compression": "db-max" if compression.ref == "max" else "db",
                                "top_db": compression.top_db, "amin": compression.amin}
        if compression.ref not in ("max", 1.0):
            spec["ref"] = compression.ref
        if compression.multiplier != 10.0:
            spec["multiplier"] = compression.multiplier
        return spec
    if isinstance(compression, Linear):
        return {"compression": "linear"}
    kind = "1p" if isinstance(compression, Log1p) else "offset"
    number = float(compression.c if isinstance(compression, Log1p) else compression.offset)
    text = f"{number:g}" if float(f"{number:g}") == number else repr(number)
    names = {10.0: "log10", math.e: "ln"}
    if compression.base in names:
        return {"compression": f"{names[compression.base]}-{kind}:{text}"}
    return {"compression": f"log-{kind}:{text}", "base": compression.base}
