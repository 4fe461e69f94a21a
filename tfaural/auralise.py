"""Auralisation: learnt features turned back into sound.

For the 2D STFT CNN (Choi et al. 2015, Listing 1): waveform → STFT (the one
convention of :mod:`tfaural.spectral`) → magnitude in the model's input scaling →
deconvolution of the chosen features (:mod:`tfaural.deconv`) → back to a linear
magnitude → inverse STFT with the phase of the original. Two modes:

``phase``  (the paper's Listing 1) ``istft(D * exp(i∠X))``: the deconvolved map
           ``D`` is used as the magnitude and the original phase is attached.
``mask``   (the authors' released code) ``istft(D * X)``: the deconvolved map
           multiplies the original complex STFT, i.e. it acts as a soft mask.

**Log-compressed inputs.** If the model saw ``log(1 + C|X|)``, the deconvolved
map lives in that compressed domain. It is brought back to a linear magnitude
with the inverse compression, ``(exp(max(D, 0)) − 1) / C`` (negative values,
which have no magnitude meaning there, are clipped to 0). For a linear-input
model the map is used as it is (negative values flip the phase, as in the paper).

For the raw-waveform SampleCNN family the 1D deconvolution already ends in the
waveform domain, so its output *is* the auralisation (no STFT involved) — a
capability the papers do not have.

Every output is peak-normalised per feature to 0.9 of full scale. **Silence in,
silence out**: a feature is flagged ``silent`` and returned as silence (zeros,
``peak`` 0), never amplified noise and never NaN, when its auralisation is all
zero, when its peak is at most :data:`SILENCE_RELATIVE` (−144 dB) of the input
waveform's peak, or when the input itself is digital silence (peak at most
:data:`INPUT_SILENCE_PEAK`, −120 dBFS). Without the last two rules the phase mode
turns the bias-driven deconvolution of an all-zero input (peaks around 1e-7, with
the phase of empty bins set to 1) into full-scale noise. The relative floor is
deliberately low: a deconvolution's gain is a product of the layers' weights, and
the genuine features of deep layers of a randomly initialised 3^9-SampleCNN
deconvolve to 1e-7..1e-6 of the input's level.

The features go through deconvolution *and* reconstruction in bounded chunks
(:func:`tfaural.deconv.map_feature_chunks`), so a request for many features of a
long clip holds one chunk's intermediate maps at a time, not all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfaural import spectral
from tfaural.config import ChoiConfig
from tfaural.deconv import DeconvNet
from tfaural.errors import ModelError, ParameterError
from tfaural.models import config_from_model

__all__ = [
    "MODES",
    "PEAK",
    "SILENCE_RELATIVE",
    "INPUT_SILENCE_PEAK",
    "Auralisation",
    "Auraliser",
    "auralise",
    "reconstruct",
    "normalise_peak",
]

MODES = ("phase", "mask")
PEAK = 0.9
#: A feature whose auralisation peaks at or below this fraction of the input's peak is silent (2**-24,
#: −144 dB: below float32's resolution next to the input's peak, and below the range of 24-bit audio).
SILENCE_RELATIVE = 2.0**-24
#: An input whose peak is at or below this is digital silence (2**-20, −120 dBFS: 24 dB under one step
#: of 16-bit audio); every feature of it is silent.
INPUT_SILENCE_PEAK = 2.0**-20


@dataclasses.dataclass(frozen=True)
class Auralisation:
    """The result of :func:`auralise`.

    Attributes:
        audio: float32 ``[batch, n_features, samples]``, peak-normalised to 0.9 (zeros if silent).
        silent: bool ``[batch, n_features]``: the auralisation is silence (see the module docstring).
        peak: float32 ``[batch, n_features]``: the peak before normalisation (the
            feature's output strength in audio units; 0 for silent features).
        deconvolved: The deconvolved maps (``[batch, k, freq, frames]`` for the
            Choi CNN, ``[batch, k, samples]`` for waveform models); ``None`` when not kept.
        spectrogram: float32 ``[batch, freq, frames]`` linear STFT magnitude of the
            input (``None`` for waveform models).
        activation: float32 ``[batch, n_features]``: each feature map's maximum
            activation on the input (how strongly the feature responded).
    """

    audio: tf.Tensor
    silent: tf.Tensor
    peak: tf.Tensor
    deconvolved: tf.Tensor | None
    spectrogram: tf.Tensor | None
    activation: tf.Tensor | None = None


def normalise_peak(
    audio: tf.Tensor, *, peak: float = PEAK, input_peak: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Scales each signal along the last axis to ``peak``; silent signals become zeros.

    Args:
        audio: float32 ``[batch, ..., samples]``.
        peak: Target peak amplitude.
        input_peak: float32 ``[batch]``: the peak of each input waveform. Given, a signal is
            also silent when its peak is at most ``SILENCE_RELATIVE * input_peak`` or the
            input's peak is at most :data:`INPUT_SILENCE_PEAK`; ``None``: only all-zero
            signals are silent.

    Returns:
        ``(normalised, silent, original_peak)``: ``silent`` bool ``[batch, ...]``,
        ``original_peak`` float32 ``[batch, ...]`` (0 where silent).
    """
    original = tf.reduce_max(tf.abs(audio), axis=-1)
    silent = tf.logical_not(original > 0)
    if input_peak is not None:
        level = tf.cast(input_peak, original.dtype)
        for _ in range(original.shape.rank - 1):
            level = level[..., tf.newaxis]
        quiet = tf.logical_or(level <= INPUT_SILENCE_PEAK, original <= SILENCE_RELATIVE * level)
        silent = tf.logical_or(silent, quiet)
    scale = tf.where(silent, tf.zeros_like(original), peak / tf.where(silent, tf.ones_like(original), original))
    return audio * scale[..., tf.newaxis], silent, tf.where(silent, tf.zeros_like(original), original)


def reconstruct(
    deconvolved: tf.Tensor,
    stft_matrix: tf.Tensor,
    *,
    mode: str | tf.Tensor,
    n_fft: int,
    hop_length: int,
    length: int | tf.Tensor,
    win_length: int | None = None,
) -> tf.Tensor:
    """Turns linear-magnitude maps into waveforms with the original STFT's phase.

    Args:
        deconvolved: float32 ``[batch, k, freq, frames]`` linear magnitudes.
        stft_matrix: complex64 ``[batch, freq, frames]``: the input's STFT.
        mode: ``"phase"`` (``D * exp(i∠X)``) or ``"mask"`` (``D * X``); a string scalar
            tensor picks the mode in-graph (anything but ``phase`` means ``mask``: validate first).
        n_fft: FFT size in samples.
        hop_length: Hop in samples.
        length: Output length in samples.
        win_length: Window length (``None``: ``n_fft``).

    Returns:
        float32 ``[batch, k, length]`` (not normalised).
    """
    if isinstance(mode, (tf.Tensor, tf.Variable)):
        return tf.cond(
            tf.equal(mode, "phase"),
            lambda: reconstruct(deconvolved, stft_matrix, mode="phase", n_fft=n_fft, hop_length=hop_length,
                                length=length, win_length=win_length),
            lambda: reconstruct(deconvolved, stft_matrix, mode="mask", n_fft=n_fft, hop_length=hop_length,
                                length=length, win_length=win_length),
        )
    _check_mode(mode)
    _, phase = spectral.magphase(stft_matrix)
    carrier = phase if mode == "phase" else tf.cast(stft_matrix, tf.complex64)
    complex_maps = tf.cast(deconvolved, tf.complex64) * carrier[:, tf.newaxis]
    return spectral.istft(complex_maps, n_fft=n_fft, hop_length=hop_length, win_length=win_length, length=length)


def _check_mode(mode: Any) -> None:
    if isinstance(mode, (tf.Tensor, tf.Variable)):
        return  # checked in-graph by the caller (the export's auralise signature)
    if mode not in MODES:
        raise ParameterError(f"mode={mode!r} is invalid: expected one of {MODES}")


class Auraliser:
    """Auralisation for one model (the deconvolution network is built once).

    Args:
        model: A Choi CNN or a SampleCNN-family waveform model.
        chunk_elements: Bound of the deconvolution's working set per chunk of features
            (see :meth:`tfaural.deconv.DeconvNet.__call__`; ``None``: the default).
        win_length: STFT window length of the Choi CNN's run (``None``: ``n_fft``).

    Raises:
        ModelError: For the mel-frame baseline (its mel front end has no phase to reuse).
    """

    def __init__(self, model: keras.Model, *, chunk_elements: int | None = None,
                 win_length: int | None = None) -> None:
        self.net = DeconvNet(model)
        self.config = config_from_model(model)
        self.chunk_elements = chunk_elements
        self.win_length = win_length
        self.is_spectral = isinstance(self.config, ChoiConfig)
        if not self.is_spectral and getattr(self.config, "family", "samplecnn") == "mel-frame":
            raise ModelError(
                "the mel-frame baseline cannot be auralised: its mel front end discards the STFT phase; "
                "deconvolve it to mel spectrograms with tfaural.deconv instead"
            )

    def _prepare(
        self, waveform: tf.Tensor | np.ndarray, mode: str | tf.Tensor, keep_deconvolved: bool
    ) -> tuple[tf.Tensor, tf.Tensor | None, Any, tuple[tf.DType, ...]]:
        """``(model input, spectrogram or None, per-chunk auralisation, its dtypes)`` for ``waveform``."""
        _check_mode(mode)
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        if waveform.shape.rank == 1:
            waveform = waveform[tf.newaxis]
        level = tf.reduce_max(tf.abs(waveform), axis=-1)  # [batch]: the input's peak
        dtypes: tuple[tf.DType, ...] = (tf.float32, tf.bool, tf.float32)
        if keep_deconvolved:
            dtypes = (tf.float32, *dtypes)
        if not self.is_spectral:  # waveform models: the deconvolution already is audio

            def finish_waveform(deconvolved: tf.Tensor) -> tuple[tf.Tensor, ...]:
                result = normalise_peak(deconvolved, input_peak=level)
                return (deconvolved, *result) if keep_deconvolved else result

            return waveform, None, finish_waveform, dtypes
        config = self.config
        assert isinstance(config, ChoiConfig)
        stft_matrix = spectral.stft(waveform, n_fft=config.n_fft, hop_length=config.hop_length,
                                    win_length=self.win_length)
        magnitude = tf.abs(stft_matrix)

        def finish_spectral(deconvolved: tf.Tensor) -> tuple[tf.Tensor, ...]:
            audio = reconstruct(
                to_linear_magnitude(deconvolved, config), stft_matrix, mode=mode, n_fft=config.n_fft,
                hop_length=config.hop_length, length=tf.shape(waveform)[-1], win_length=self.win_length,
            )
            result = normalise_peak(audio, input_peak=level)
            return (deconvolved, *result) if keep_deconvolved else result

        return magnitude, magnitude, finish_spectral, dtypes

    @staticmethod
    def _result(outputs: Sequence[tf.Tensor], spectrogram: tf.Tensor | None, activation: tf.Tensor | None,
                keep_deconvolved: bool) -> Auralisation:
        if keep_deconvolved:
            deconvolved, audio, silent, peak = outputs
        else:
            (audio, silent, peak), deconvolved = outputs, None
        return Auralisation(audio, silent, peak, deconvolved, spectrogram, activation)

    def __call__(
        self,
        waveform: tf.Tensor | np.ndarray,
        *,
        layer: int,
        features: Sequence[int] | tf.Tensor | None = None,
        mode: str | tf.Tensor = "phase",
        keep_deconvolved: bool = True,
    ) -> Auralisation:
        """Auralises features of one layer for a batch of waveforms.

        The features are deconvolved and reconstructed in bounded chunks (module docstring).

        Args:
            waveform: float32 ``[batch, samples]`` at the model's sample rate.
            layer: Block level (Choi: 1-5).
            features: Feature indices, each at most once; ``None``: all of the layer.
            mode: ``"phase"`` or ``"mask"`` (ignored for waveform models).
            keep_deconvolved: Also return the deconvolved maps (``False`` saves their memory).

        Returns:
            An :class:`Auralisation`.

        Raises:
            ParameterError: Invalid ``mode``, ``layer`` or ``features`` (out of range or repeated).
        """
        x, spectrogram, finish, dtypes = self._prepare(waveform, mode, keep_deconvolved)
        outputs, activation = self.net(
            x, layer=layer, features=features, return_activation=True, chunk_elements=self.chunk_elements,
            per_chunk=finish, per_chunk_dtypes=dtypes,
        )
        return self._result(outputs, spectrogram, activation, keep_deconvolved)

    def layers(
        self,
        waveform: tf.Tensor | np.ndarray,
        *,
        layers: Sequence[int] | None = None,
        features: Sequence[int] | tf.Tensor | None = None,
        mode: str = "phase",
        keep_deconvolved: bool = True,
    ) -> dict[int, Auralisation]:
        """Auralises several layers with one shared forward pass (``None``: every layer).

        Returns:
            ``{layer: Auralisation}``.
        """
        x, spectrogram, finish, dtypes = self._prepare(waveform, mode, keep_deconvolved)
        maps = self.net.deconvolve_layers(
            x, layers=layers, features=features, chunk_elements=self.chunk_elements, per_chunk=finish,
            per_chunk_dtypes=dtypes,
        )
        return {
            layer: self._result(outputs, spectrogram, self.net.last_activations[layer], keep_deconvolved)
            for layer, outputs in maps.items()
        }


def to_linear_magnitude(deconvolved: tf.Tensor, config: ChoiConfig) -> tf.Tensor:
    """Maps a deconvolution in the model's input scaling back to linear magnitude (module docstring)."""
    if config.input_scaling == "log":
        return spectral.log_decompress(tf.nn.relu(deconvolved), c=config.log_c)
    return deconvolved


def auralise(
    model: keras.Model,
    waveform: tf.Tensor | np.ndarray,
    *,
    layer: int,
    features: Sequence[int] | tf.Tensor | None = None,
    mode: str = "phase",
) -> Auralisation:
    """Auralises features of one layer (see :class:`Auraliser`)."""
    return Auraliser(model)(waveform, layer=layer, features=features, mode=mode)
