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

Every output is peak-normalised per feature to 0.9 of full scale; a feature
whose deconvolution is all zero gives silence and a ``silent`` flag, never NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfaural import spectral
from tfaural.config import ChoiConfig
from tfaural.deconv import DeconvNet
from tfaural.errors import ModelError, ParameterError
from tfaural.models import config_from_model

__all__ = ["MODES", "Auralisation", "Auraliser", "auralise", "reconstruct", "normalise_peak"]

MODES = ("phase", "mask")
PEAK = 0.9


@dataclasses.dataclass(frozen=True)
class Auralisation:
    """The result of :func:`auralise`.

    Attributes:
        audio: float32 ``[batch, n_features, samples]``, peak-normalised to 0.9.
        silent: bool ``[batch, n_features]``: the deconvolution was all zero.
        peak: float32 ``[batch, n_features]``: the peak before normalisation (the
            feature's output strength in audio units).
        deconvolved: The deconvolved maps (``[batch, k, freq, frames]`` for the
            Choi CNN, ``[batch, k, samples]`` for waveform models).
        spectrogram: float32 ``[batch, freq, frames]`` linear STFT magnitude of the
            input (``None`` for waveform models).
        activation: float32 ``[batch, n_features]``: each feature map's maximum
            activation on the input (how strongly the feature responded).
    """

    audio: tf.Tensor
    silent: tf.Tensor
    peak: tf.Tensor
    deconvolved: tf.Tensor
    spectrogram: tf.Tensor | None
    activation: tf.Tensor | None = None


def normalise_peak(audio: tf.Tensor, *, peak: float = PEAK) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Scales each signal along the last axis to ``peak``; all-zero signals stay zero.

    Args:
        audio: float32 ``[..., samples]``.
        peak: Target peak amplitude.

    Returns:
        ``(normalised, silent, original_peak)`` with ``silent`` bool ``[...]``.
    """
    original = tf.reduce_max(tf.abs(audio), axis=-1)
    silent = tf.logical_not(original > 0)
    scale = tf.where(silent, tf.zeros_like(original), peak / tf.where(silent, tf.ones_like(original), original))
    return audio * scale[..., tf.newaxis], silent, original


def reconstruct(
    deconvolved: tf.Tensor,
    stft_matrix: tf.Tensor,
    *,
    mode: str,
    n_fft: int,
    hop_length: int,
    length: int | tf.Tensor,
    win_length: int | None = None,
) -> tf.Tensor:
    """Turns linear-magnitude maps into waveforms with the original STFT's phase.

    Args:
        deconvolved: float32 ``[batch, k, freq, frames]`` linear magnitudes.
        stft_matrix: complex64 ``[batch, freq, frames]``: the input's STFT.
        mode: ``"phase"`` (``D * exp(i∠X)``) or ``"mask"`` (``D * X``).
        n_fft: FFT size in samples.
        hop_length: Hop in samples.
        length: Output length in samples.
        win_length: Window length (``None``: ``n_fft``).

    Returns:
        float32 ``[batch, k, length]`` (not normalised).
    """
    if mode not in MODES:
        raise ParameterError(f"mode={mode!r} is invalid: expected one of {MODES}")
    _, phase = spectral.magphase(stft_matrix)
    carrier = phase if mode == "phase" else tf.cast(stft_matrix, tf.complex64)
    complex_maps = tf.cast(deconvolved, tf.complex64) * carrier[:, tf.newaxis]
    return spectral.istft(complex_maps, n_fft=n_fft, hop_length=hop_length, win_length=win_length, length=length)


class Auraliser:
    """Auralisation for one model (the deconvolution network is built once).

    Args:
        model: A Choi CNN or a SampleCNN-family waveform model.

    Raises:
        ModelError: For the mel-frame baseline (its mel front end has no phase to reuse).
    """

    def __init__(self, model: keras.Model) -> None:
        self.net = DeconvNet(model)
        self.config = config_from_model(model)
        self.is_spectral = isinstance(self.config, ChoiConfig)
        if not self.is_spectral and getattr(self.config, "family", "samplecnn") == "mel-frame":
            raise ModelError(
                "the mel-frame baseline cannot be auralised: its mel front end discards the STFT phase; "
                "deconvolve it to mel spectrograms with tfaural.deconv instead"
            )

    def __call__(
        self,
        waveform: tf.Tensor | np.ndarray,
        *,
        layer: int,
        features: Sequence[int] | tf.Tensor | None = None,
        mode: str = "phase",
    ) -> Auralisation:
        """Auralises features of one layer for a batch of waveforms.

        Args:
            waveform: float32 ``[batch, samples]`` at the model's sample rate.
            layer: Block level (Choi: 1-5).
            features: Feature indices; ``None``: all of the layer.
            mode: ``"phase"`` or ``"mask"`` (ignored for waveform models).

        Returns:
            An :class:`Auralisation`.
        """
        if mode not in MODES:
            raise ParameterError(f"mode={mode!r} is invalid: expected one of {MODES}")
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        if waveform.shape.rank == 1:
            waveform = waveform[tf.newaxis]
        if not self.is_spectral:
            deconvolved, activation = self.net(waveform, layer=layer, features=features, return_activation=True)
            audio, silent, peak = normalise_peak(deconvolved)
            return Auralisation(audio, silent, peak, deconvolved, None, activation)
        config = self.config
        assert isinstance(config, ChoiConfig)
        stft_matrix = spectral.stft(waveform, n_fft=config.n_fft, hop_length=config.hop_length)
        magnitude = tf.abs(stft_matrix)
        deconvolved, activation = self.net(magnitude, layer=layer, features=features, return_activation=True)
        linear = to_linear_magnitude(deconvolved, config)
        audio = reconstruct(
            linear,
            stft_matrix,
            mode=mode,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            length=tf.shape(waveform)[-1],
        )
        audio, silent, peak = normalise_peak(audio)
        return Auralisation(audio, silent, peak, deconvolved, magnitude, activation)


    def layers(
        self,
        waveform: tf.Tensor | np.ndarray,
        *,
        layers: Sequence[int] | None = None,
        features: Sequence[int] | tf.Tensor | None = None,
        mode: str = "phase",
    ) -> dict[int, Auralisation]:
        """Auralises several layers with one shared forward pass (``None``: every layer).

        Returns:
            ``{layer: Auralisation}``.
        """
        if mode not in MODES:
            raise ParameterError(f"mode={mode!r} is invalid: expected one of {MODES}")
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        if waveform.shape.rank == 1:
            waveform = waveform[tf.newaxis]
        if not self.is_spectral:
            maps = self.net.deconvolve_layers(waveform, layers=layers, features=features)
            return {
                layer: Auralisation(*normalise_peak(d), deconvolved=d, spectrogram=None,
                                    activation=self.net.last_activations[layer])
                for layer, d in maps.items()
            }
        config = self.config
        assert isinstance(config, ChoiConfig)
        stft_matrix = spectral.stft(waveform, n_fft=config.n_fft, hop_length=config.hop_length)
        magnitude = tf.abs(stft_matrix)
        maps = self.net.deconvolve_layers(magnitude, layers=layers, features=features)
        out = {}
        for layer, deconvolved in maps.items():
            audio = reconstruct(
                to_linear_magnitude(deconvolved, config),
                stft_matrix,
                mode=mode,
                n_fft=config.n_fft,
                hop_length=config.hop_length,
                length=tf.shape(waveform)[-1],
            )
            out[layer] = Auralisation(*normalise_peak(audio), deconvolved=deconvolved, spectrogram=magnitude,
                                      activation=self.net.last_activations[layer])
        return out


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
